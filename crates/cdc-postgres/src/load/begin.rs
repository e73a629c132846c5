//! Starting the snapshot phase, in three steps: **reconcile** the job
//! recorded for the slot with the slot as it stands, **elect** the
//! coordinator (who exports the snapshot and plans the chunks) or join the
//! one elected elsewhere, and **spawn** the readers.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc_core::Lsn;
use sqlx::{Connection, PgConnection};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::claims::Claims;
use super::emitter::Emitter;
use super::export::{
    create_slot_with_export, export_from_transaction, try_coordinator_lock, Export,
};
use super::phase::{now_us, SnapshotPhase};
use super::planner::record_plan;
use super::request::SnapshotRequest;
use super::settings::SnapshotMode;
use super::workers::{run_heartbeat, run_reader, HeartbeatContext, ReaderContext};
use crate::conn::for_role;
use crate::error::PgError;
use crate::setup;
use crate::snapshot::{CopyTarget, Job, JobState, MetadataStore};

/// What [`Start::reconcile`] decided.
enum Reconciled {
    /// A completed snapshot stands for this slot: streaming only.
    Complete,
    /// Go on, with the job recorded for the slot (`None`: there is none,
    /// or it was deleted to start over).
    Proceed(Option<Job>),
}

/// What [`Start::elect`] ended with.
enum Election {
    /// This instance coordinates, and holds the exported snapshot.
    Coordinate { export: Export, snapshot_lsn: Lsn },
    /// Another instance coordinates; this one reads chunks too.
    Join { snapshot_lsn: Lsn },
    /// Another instance completed the snapshot meanwhile.
    Complete,
}

/// The context the three steps share: the request and the connections
/// opened for it.
struct Start {
    req: SnapshotRequest,
    store: MetadataStore,
    /// Metadata reads and writes.
    meta: PgConnection,
    /// Holds the coordinator lock once this instance wins it.
    lock: PgConnection,
}

impl SnapshotPhase {
    /// Prepares the snapshot: `Ok(None)` when none is needed (`initial`
    /// with a completed snapshot for this slot).
    pub async fn begin(req: SnapshotRequest) -> Result<Option<Self>, PgError> {
        let mut start = Start::connect(req).await?;
        let job = match start.reconcile().await? {
            Reconciled::Complete => return Ok(None),
            Reconciled::Proceed(job) => job,
        };
        let (export, snapshot_lsn) = match start.elect(job).await? {
            Election::Coordinate {
                export,
                snapshot_lsn,
            } => (Some(export), snapshot_lsn),
            Election::Join { snapshot_lsn } => (None, snapshot_lsn),
            Election::Complete => return Ok(None),
        };
        start.spawn(export, snapshot_lsn).await.map(Some)
    }
}

impl Start {
    /// Opens the metadata and lock connections, creating the metadata
    /// tables when missing.
    async fn connect(req: SnapshotRequest) -> Result<Self, PgError> {
        let connect = |role: &'static str, what: &'static str| {
            let options = for_role(&req.options, role);
            async move {
                PgConnection::connect_with(&options)
                    .await
                    .map_err(|e| PgError::sql(what, e))
            }
        };
        let store = MetadataStore::new(req.settings.metadata_schema.clone());
        let mut meta = connect("metadata", "connecting for snapshot metadata").await?;
        store.ensure_schema(&mut meta).await?;
        let lock = connect("lock", "connecting for the coordinator lock").await?;
        Ok(Self {
            req,
            store,
            meta,
            lock,
        })
    }

    /// Holds the job recorded for the slot against the mode and the slot:
    /// a completed snapshot is kept (`initial`) or taken anew
    /// (`snapshot_only`, or its slot is gone); a running one is resumed
    /// only while its slot still waits at the job's consistent point.
    async fn reconcile(&mut self) -> Result<Reconciled, PgError> {
        let Self {
            req, store, meta, ..
        } = self;
        let slot = req.slot.as_str();
        let job = store.job(meta, slot).await?;
        match (req.mode, job.as_ref().map(|j| j.state)) {
            (SnapshotMode::Initial, Some(JobState::Done))
                if !req.create_slot || setup::slot_exists(meta, slot).await? =>
            {
                tracing::info!(
                    slot,
                    "a completed snapshot exists for this slot; streaming only"
                );
                Ok(Reconciled::Complete)
            }
            (SnapshotMode::Initial, Some(JobState::Done)) => {
                // The slot that streamed on from that snapshot is gone
                // (dropped, or invalidated and dropped): the changes since
                // are lost to a new slot. Copy the tables again under the
                // new slot's snapshot rather than stream from a gap.
                tracing::warn!(
                    slot,
                    "a completed snapshot is recorded for slot `{slot}`, but the slot no longer exists: \
                     taking a new snapshot under a new slot (rows deleted meanwhile stay in the sinks)"
                );
                store.delete_job(meta, slot).await?;
                Ok(Reconciled::Proceed(None))
            }
            (SnapshotMode::SnapshotOnly, Some(JobState::Done)) => {
                // Each snapshot_only run copies the tables anew.
                store.delete_job(meta, slot).await?;
                Ok(Reconciled::Proceed(None))
            }
            (SnapshotMode::Initial, Some(JobState::Running)) => {
                // A running job belongs to the slot it was planned for: the
                // slot stays at the job's consistent point until streaming
                // starts. A slot that is gone, or stands elsewhere (dropped
                // and created again), would stream from a point the rows of
                // the done chunks were not read at: start over.
                let planned_at = job.as_ref().and_then(|j| j.snapshot_lsn);
                let slot_at = setup::slot_confirmed_flush(meta, slot).await?;
                if slot_at.is_none() || slot_at != planned_at {
                    tracing::warn!(
                        slot,
                        planned_at = %planned_at.map_or_else(|| "-".into(), |l| l.to_string()),
                        slot_at = %slot_at.map_or_else(|| "missing".into(), |l| l.to_string()),
                        "the snapshot in progress was planned for a replication slot that no longer exists \
                         as it was (dropped, or created again): starting the snapshot over"
                    );
                    store.delete_job(meta, slot).await?;
                    return Ok(Reconciled::Proceed(None));
                }
                Ok(Reconciled::Proceed(job))
            }
            _ => Ok(Reconciled::Proceed(job)),
        }
    }

    /// Tries for the coordinator lock until this instance wins it (and
    /// exports the snapshot, planning the chunks unless a plan is recorded)
    /// or another instance has recorded its exported snapshot to join.
    async fn elect(&mut self, mut job: Option<Job>) -> Result<Election, PgError> {
        let slot = self.req.slot.clone();
        let slot = slot.as_str();
        loop {
            if try_coordinator_lock(&mut self.lock, slot).await? {
                tracing::info!(slot, instance = %self.req.settings.instance_id, "coordinating the snapshot");
                let (export, name, lsn) = self.export().await?;
                let planned = job.as_ref().is_some_and(|j| j.state != JobState::Planning);
                let snapshot_lsn = if planned {
                    self.store
                        .set_snapshot(&mut self.meta, slot, &name, &self.req.settings.instance_id)
                        .await?;
                    job.as_ref().and_then(|j| j.snapshot_lsn).unwrap_or(lsn)
                } else {
                    record_plan(&self.store, &mut self.meta, &self.req, &name, lsn).await?;
                    lsn
                };
                return Ok(Election::Coordinate {
                    export,
                    snapshot_lsn,
                });
            }
            job = self.store.job(&mut self.meta, slot).await?;
            if let Some(j) = &job {
                if j.state == JobState::Running && j.snapshot_name.is_some() {
                    tracing::info!(slot, "joining the snapshot coordinated by another instance");
                    return Ok(Election::Join {
                        snapshot_lsn: j.snapshot_lsn.unwrap_or(Lsn::ZERO),
                    });
                }
                if self.req.mode == SnapshotMode::Initial && j.state == JobState::Done {
                    return Ok(Election::Complete);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The coordinator's export: with `initial` and no slot yet, the slot
    /// is created with an exported snapshot (its consistent point is where
    /// streaming starts); otherwise a snapshot is exported from an
    /// ordinary transaction. Returns what keeps the snapshot alive, its
    /// name and the slot's position (`0/0` for `snapshot_only`).
    async fn export(&mut self) -> Result<(Export, String, Lsn), PgError> {
        let req = &self.req;
        let slot = req.slot.as_str();
        let server = &req.server;
        let slot_exists = setup::slot_exists(&mut self.meta, slot).await?;
        if req.mode == SnapshotMode::Initial && !slot_exists {
            if !req.create_slot {
                return Err(PgError::Setup(format!(
                    "replication slot `{slot}` does not exist and source.slot.create is false; \
                     an initial snapshot needs to create it (to export its snapshot)"
                )));
            }
            if i64::from(server.max_replication_slots) <= server.slots_in_use {
                return Err(PgError::Setup(format!(
                    "all {n} replication slots are in use (max_replication_slots = {n}): raise \
                     max_replication_slots and restart PostgreSQL, or drop unused slots",
                    n = server.max_replication_slots
                )));
            }
            let created = create_slot_with_export(
                req.replication.clone(),
                slot,
                server.version_num,
                req.slot_failover,
            )
            .await?;
            tracing::info!(slot, consistent_point = %created.consistent_point, snapshot = %created.snapshot_name, "created the slot with an exported snapshot");
            return Ok((
                Export::Slot(created.client),
                created.snapshot_name,
                created.consistent_point,
            ));
        }
        let lsn = if req.mode == SnapshotMode::Initial {
            setup::ensure_slot(&mut self.meta, server, slot, setup::SlotCreation::default())
                .await?
                .confirmed_flush_lsn
        } else {
            Lsn::ZERO
        };
        let (conn, name) = export_from_transaction(&req.options).await?;
        if req.mode == SnapshotMode::Initial {
            tracing::warn!(slot, snapshot = %name, "resuming a snapshot under a new exported snapshot: \
                 changes since the slot's consistent point are replayed over the rows read now");
        }
        Ok((Export::Transaction(conn), name, lsn))
    }

    /// Reports the recorded progress, starts the readers and the claims'
    /// heartbeat, and hands everything to the phase.
    async fn spawn(
        mut self,
        export: Option<Export>,
        snapshot_lsn: Lsn,
    ) -> Result<SnapshotPhase, PgError> {
        let req = self.req;
        let status = req.status;
        status.snapshot_started();
        for t in self.store.progress(&mut self.meta, &req.slot).await?.tables {
            status.snapshot_table(&t.table, t.chunks_total, t.chunks_done);
        }
        let (tx, items) = mpsc::channel(req.settings.workers * 4);
        let claims = Claims::default();
        let stop = CancellationToken::new();
        let (chunks_done, chunks_done_rx) = watch::channel(0u64);
        let snapshot_gone = Arc::new(AtomicU64::new(0));
        let ctx = ReaderContext {
            options: req.options.clone(),
            database: req.server.database.clone(),
            publication: req.publication.clone(),
            local_subsets: req.local_subsets.clone(),
            slot: req.slot.clone(),
            store: self.store.clone(),
            settings: req.settings.clone(),
            claims: claims.clone(),
            chunks_done: chunks_done_rx,
            out: tx,
            stop: stop.clone(),
            snapshot_gone: snapshot_gone.clone(),
            status: status.clone(),
            copy_target: req
                .settings
                .own_copy_connection
                .then(|| {
                    let reader = for_role(&req.options, "reader");
                    let name = reader.get_application_name().unwrap_or("cdc-engine/reader");
                    CopyTarget::of_replication(&req.replication, name.to_owned())
                })
                .flatten(),
        };
        let heartbeat = HeartbeatContext {
            options: req.options.clone(),
            store: self.store.clone(),
            settings: req.settings.clone(),
            claims: claims.clone(),
            stop: stop.clone(),
        };
        let mut tasks: Vec<JoinHandle<()>> = (0..req.settings.workers)
            .map(|_| tokio::spawn(run_reader(ctx.clone())))
            .collect();
        drop(ctx);
        tasks.push(tokio::spawn(run_heartbeat(heartbeat)));
        Ok(SnapshotPhase {
            mode: req.mode,
            slot: req.slot,
            settings: req.settings,
            options: req.options,
            store: self.store,
            meta: self.meta,
            lock: self.lock,
            export,
            snapshot_lsn,
            emitter: Emitter::new(snapshot_lsn, now_us()),
            items,
            readers_done: false,
            claims,
            chunks_done,
            stop,
            tasks,
            announce_begin: true,
            last_election: Instant::now(),
            status,
            snapshot_gone,
            last_export_check: Instant::now(),
            reexport: None,
        })
    }
}
