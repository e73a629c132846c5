//! What the coordinator keeps checking while the snapshot runs: its
//! lock's session, its exported snapshot, and whether to take over from a
//! coordinator that is gone.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

use super::export::{export_from_transaction, import_snapshot, try_coordinator_lock, Export};
use super::phase::SnapshotPhase;
use crate::conn::for_role;
use crate::error::PgError;
use crate::snapshot::JobState;
#[cfg(doc)]
use crate::snapshot::MetadataStore;

impl SnapshotPhase {
    /// While this instance coordinates: checks every 2 s that the session
    /// holding the coordinator lock is still there (which also keeps it
    /// from going idle long enough for `idle_session_timeout`). If it is
    /// gone, so is the lock: this instance takes it again on a new
    /// connection, or, when another instance has taken it meanwhile (and
    /// exported a snapshot of its own), steps down and carries on as a
    /// reader.
    pub(super) async fn check_lock(&mut self) -> Result<(), PgError> {
        if self.export.is_none() || self.last_election.elapsed() < Duration::from_secs(2) {
            return Ok(());
        }
        self.last_election = Instant::now();
        if self.lock.ping().await.is_ok() {
            return Ok(());
        }
        self.lock = PgConnection::connect_with(&for_role(&self.options, "lock"))
            .await
            .map_err(|e| PgError::sql("connecting again for the coordinator lock", e))?;
        if try_coordinator_lock(&mut self.lock, &self.slot).await? {
            tracing::warn!(slot = %self.slot, "the coordinator lock's session was lost; this instance took the lock again and still coordinates");
        } else {
            tracing::warn!(slot = %self.slot, "lost the coordinator lock (its session ended) and another instance coordinates now: stepping down; this instance reads on under the snapshot that one exported");
            self.export = None;
            self.reexport = None;
            self.status.snapshot_coordination_lost();
        }
        Ok(())
    }

    /// Takes over coordination when the coordinator is gone: a new
    /// exported snapshot for the remaining chunks.
    pub(super) async fn maybe_take_over(&mut self) -> Result<(), PgError> {
        if self.export.is_some() || self.last_election.elapsed() < Duration::from_secs(2) {
            return Ok(());
        }
        self.last_election = Instant::now();
        match try_coordinator_lock(&mut self.lock, &self.slot).await {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) if e.class() == cdc_core::ErrorClass::Retryable => {
                // The lock's connection is gone (this instance held no lock
                // on it: it is not the coordinator); the next election
                // uses a new one.
                tracing::warn!(error = %cdc_core::error_chain(&e), "snapshot: the coordinator election connection failed; connecting again");
                self.lock = PgConnection::connect_with(&for_role(&self.options, "lock"))
                    .await
                    .map_err(|e| PgError::sql("connecting again for the coordinator lock", e))?;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        let (conn, name) = self.export_and_record().await?;
        tracing::warn!(slot = %self.slot, snapshot = %name, "the snapshot coordinator is gone; this instance exported a new snapshot for the remaining chunks");
        self.export = Some(Export::Transaction(conn));
        Ok(())
    }

    /// While this instance coordinates: looks at the job's recorded
    /// snapshot when readers could not import it, and every 2 s anyway.
    ///
    /// * None recorded: a reader (of any instance) found a table rewritten
    ///   after the snapshot was exported and started that table over
    ///   ([`MetadataStore::reread_table`]); a new snapshot is exported now,
    ///   after the rewrite, for it and the remaining chunks.
    /// * Gone (its session was terminated, timed out or dropped while this
    ///   instance kept the coordinator lock): checked by importing it; a
    ///   new snapshot is exported for the remaining chunks, as a new
    ///   coordinator would.
    pub(super) async fn check_export(&mut self) -> Result<(), PgError> {
        if self.export.is_none() {
            return Ok(());
        }
        let gone = self.snapshot_gone.swap(0, Ordering::Relaxed) > 0;
        if !gone && self.last_export_check.elapsed() < Duration::from_secs(2) {
            return Ok(());
        }
        self.last_export_check = Instant::now();
        let Some(job) = self.store.job(&mut self.meta, &self.slot).await? else {
            return Ok(());
        };
        if job.state != JobState::Running {
            return Ok(());
        }
        let Some(name) = job.snapshot_name else {
            let (conn, new_name) = self.export_and_record().await?;
            tracing::warn!(slot = %self.slot, snapshot = %new_name,
                "a table was rewritten while the snapshot was running: exported a new snapshot; it is \
                 read again under it, and the remaining chunks too");
            match self.export {
                // The slot's session still holds the first export and
                // starts the stream at the end: keep it.
                Some(Export::Slot(_)) => self.reexport = Some(conn),
                _ => self.export = Some(Export::Transaction(conn)),
            }
            return Ok(());
        };
        if !gone {
            return Ok(());
        }
        match import_snapshot(&mut self.meta, &name).await {
            Ok(()) => {
                let _ = sqlx::raw_sql("ROLLBACK").execute(&mut self.meta).await;
                return Ok(());
            }
            Err(PgError::SnapshotGone(_)) => {}
            Err(e) => return Err(e),
        }
        let (conn, new_name) = self.export_and_record().await?;
        tracing::warn!(slot = %self.slot, old = %name, snapshot = %new_name,
            "the exported snapshot is gone (its session ended) while this instance coordinates: \
             exported a new one for the remaining chunks; changes since the slot's consistent point are \
             replayed over the rows read under it");
        // The old export's session is gone; streaming will start from the
        // slot's confirmed position like after a coordinator change.
        self.export = Some(Export::Transaction(conn));
        self.reexport = None;
        self.status.snapshot_export_replaced();
        Ok(())
    }

    /// Exports a new snapshot from an ordinary transaction and records it
    /// as the job's; returns the connection that keeps it alive and its name.
    async fn export_and_record(&mut self) -> Result<(PgConnection, String), PgError> {
        let (conn, name) = export_from_transaction(&self.options).await?;
        self.store
            .set_snapshot(
                &mut self.meta,
                &self.slot,
                &name,
                &self.settings.instance_id,
            )
            .await?;
        Ok((conn, name))
    }
}
