//! What the runner does with a signal row read from the stream (a
//! snapshot asked for, stopped, paused or resumed), and with the tables
//! that are new to the slot when the source starts.

use cdc_core::{IncrementalState, TableName};
use sqlx::PgConnection;

use super::progress::{Control, TableJob};
use super::request::{parse_signal, Signal};
use super::runner::{report, Incremental};
use crate::error::PgError;
use crate::snapshot::MetadataStore;

impl Incremental {
    /// A row inserted into the signal table: `id`, `kind` and `payload`
    /// (JSON text). A request is recorded, then applied to the queue; a
    /// malformed signal is logged and ignored. Fails only when it cannot be
    /// recorded (then the stream is started over and the signal read
    /// again).
    pub async fn on_signal(
        &mut self,
        id: i64,
        kind: &str,
        payload: Option<&str>,
    ) -> Result<(), PgError> {
        match parse_signal(kind, payload) {
            Ok(Signal::Snapshot { tables, filter }) => self.enqueue(id, &tables, filter).await,
            Ok(Signal::Control { control, tables }) => self.control(id, control, &tables).await,
            Err(reason) => {
                tracing::warn!(signal = id, "ignoring signal {id}: {reason}");
                Ok(())
            }
        }
    }

    async fn enqueue(
        &mut self,
        id: i64,
        tables: &[TableName],
        filter: Option<String>,
    ) -> Result<(), PgError> {
        let (store, slot) = (self.store.clone(), self.slot.clone());
        let conn = self.connection().await?;
        let added = store
            .enqueue(conn, &slot, id, tables, filter.as_deref())
            .await?;
        for table in added {
            tracing::info!(table = %table, snapshot = id, filter = filter.as_deref().unwrap_or(""),
                "incremental snapshot requested");
            let job = TableJob::new(id, table, filter.clone());
            report(&self.status, &job);
            self.queue.push_back(job);
        }
        Ok(())
    }

    /// Stops, pauses or resumes the snapshots asked for before signal
    /// `id`: recorded first, then applied to the queue. A chunk open for a
    /// stopped or paused table is dropped (its high watermark then
    /// releases nothing; a resumed table reads it again).
    async fn control(
        &mut self,
        id: i64,
        control: Control,
        tables: &[TableName],
    ) -> Result<(), PgError> {
        let (store, slot) = (self.store.clone(), self.slot.clone());
        let conn = self.connection().await?;
        let changed = store.control(conn, &slot, id, tables, control).await?;
        if changed.is_empty() {
            tracing::info!(
                signal = id,
                ?control,
                "no incremental snapshot to {control:?}"
            );
        }
        for (snapshot, table) in changed {
            tracing::info!(signal = id, table = %table, snapshot, "incremental snapshot: {control:?}");
            if control != Control::Resume
                && self
                    .open
                    .as_ref()
                    .is_some_and(|o| o.snapshot == snapshot && o.table.name == table)
            {
                self.open = None;
            }
            match control {
                Control::Stop => {
                    self.queue.retain(|j| !j.is(snapshot, &table));
                    self.status.incremental_state(
                        &table,
                        snapshot,
                        IncrementalState::Stopped,
                        None,
                    );
                }
                Control::Pause | Control::Resume => {
                    for job in self.queue.iter_mut().filter(|j| j.is(snapshot, &table)) {
                        job.paused = control == Control::Pause;
                        report(&self.status, job);
                    }
                }
            }
        }
        Ok(())
    }

    /// Queues an incremental snapshot of the tables of `candidates` that
    /// are new to the slot: neither copied by its initial snapshot nor
    /// ever snapshotted incrementally (see
    /// [`ProgressStore::add_new_tables`](super::progress::ProgressStore::add_new_tables)).
    /// Called when the source starts, once the initial snapshot is known
    /// to be planned or done.
    pub async fn add_new_tables(
        &mut self,
        conn: &mut PgConnection,
        metadata: &MetadataStore,
        candidates: &[TableName],
    ) -> Result<(), PgError> {
        let added = self
            .store
            .add_new_tables(
                conn,
                &self.slot,
                &metadata.jobs(),
                &metadata.chunks(),
                candidates,
            )
            .await?;
        if let Some((id, tables)) = added {
            for table in tables {
                tracing::info!(table = %table, snapshot = id,
                    "table new to the slot: snapshotting it incrementally while streaming");
            }
        }
        // Read again: another instance may have recorded them first.
        self.queue = self.store.unfinished(conn, &self.slot).await?.into();
        for job in &self.queue {
            report(&self.status, job);
        }
        Ok(())
    }

    /// Chunks of `table` may be read from now on (a table created while
    /// the source runs, whose changes are captured from now on).
    pub fn track(&mut self, table: &TableName) {
        self.tracked.insert(table.clone());
    }

    /// `table` was dropped: its unfinished snapshots are forgotten (the
    /// open chunk dropped, the stored ones recorded as failed, so that they
    /// do not resume after a restart).
    pub async fn table_dropped(&mut self, table: &TableName) {
        self.tracked.remove(table);
        if self.open.as_ref().is_some_and(|o| o.table.name == *table) {
            self.open = None;
        }
        let jobs: Vec<i64> = self
            .queue
            .iter()
            .filter(|j| j.table == *table)
            .map(|j| j.snapshot)
            .collect();
        self.queue.retain(|j| j.table != *table);
        let (store, slot) = (self.store.clone(), self.slot.clone());
        for snapshot in jobs {
            tracing::info!(table = %table, snapshot, "incremental snapshot given up: the table was dropped");
            let recorded = match self.connection().await {
                Ok(conn) => {
                    store
                        .fail(conn, &slot, snapshot, table, "the table was dropped")
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = recorded {
                tracing::warn!(error = %cdc_core::error_chain(&e), "cannot record the end of the incremental snapshot of a dropped table");
            }
        }
    }

    /// Asks, on `conn` (inside the transaction that added `tables` to the
    /// publication), for an incremental snapshot of `tables`, created while
    /// the source runs: a signal row, read from the stream after every
    /// change the publication sends of them, so the snapshot holds the
    /// rows written before they were published. Returns the signal's id.
    pub async fn request_created_tables(
        &self,
        conn: &mut PgConnection,
        tables: &[TableName],
    ) -> Result<i64, PgError> {
        let payload = serde_json::json!({
            "tables": tables.iter().map(|t| serde_json::json!({"schema": t.schema, "table": t.name})).collect::<Vec<_>>(),
            "reason": "created while streaming",
        });
        self.store.insert_signal(conn, &payload).await
    }
}
