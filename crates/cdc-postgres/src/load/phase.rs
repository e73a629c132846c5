//! The snapshot phase of a [`PgSource`](crate::PgSource): election,
//! export, planning, reading, completion, handoff.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cdc_core::{AckHandle, Batch, ControlEvent, Event, Lsn, ReadFence, SourceStatus, TableName};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::emitter::Emitter;
use super::export::{
    create_slot_with_export, export_from_transaction, import_snapshot, try_coordinator_lock, Export,
};
use super::settings::{Chunking, SnapshotMode, SnapshotSettings};
use super::workers::{
    run_heartbeat, run_reader, ClaimFence, Claims, HeartbeatContext, LoadItem, ReaderContext,
};
use crate::conn::{for_role, Reconnects};
use crate::error::PgError;
use crate::replication::PgWireTransport;
use crate::setup::{self, ServerInfo};
use crate::snapshot::{
    describe_table, has_rows, leaf_partitions, plan_chunks, ChunkBounds, ChunkPartition,
    ChunkStrategy, JobState, MetadataStore, PlannedChunk,
};

/// What the source does when the snapshot is complete.
pub(crate) enum Transition {
    /// Stream on this transport (the session that exported the snapshot).
    Stream(PgWireTransport),
    /// Start streaming from the slot's confirmed position (waiting as a
    /// standby while another instance holds the slot).
    Connect,
    /// `snapshot_only`: the source ends.
    End,
}

/// How the stream should be started after the snapshot, for the export
/// kinds that need it.
pub(crate) struct StreamStart {
    pub replication: pgwire_replication::ReplicationConfig,
}

/// A snapshot in progress.
pub(crate) struct SnapshotPhase {
    mode: SnapshotMode,
    slot: String,
    settings: SnapshotSettings,
    options: PgConnectOptions,
    store: MetadataStore,
    meta: PgConnection,
    /// Holds the advisory lock while this instance coordinates.
    lock: PgConnection,
    export: Option<Export>,
    snapshot_lsn: Lsn,
    emitter: Emitter,
    items: mpsc::Receiver<Result<LoadItem, PgError>>,
    readers_done: bool,
    claims: Claims,
    /// Bumped whenever chunks are marked done: wakes the readers that wait
    /// for the snapshot to finish.
    chunks_done: watch::Sender<u64>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    announce_begin: bool,
    last_election: Instant,
    status: SourceStatus,
    /// Readers' failed imports of the exported snapshot since last checked.
    snapshot_gone: Arc<AtomicU64>,
    /// When the coordinator last looked at the job's recorded snapshot.
    last_export_check: Instant,
    /// While the slot's session still holds the first export (and will
    /// start the stream): the transaction holding the snapshot exported
    /// since, because a table was rewritten.
    reexport: Option<PgConnection>,
}

impl Drop for SnapshotPhase {
    fn drop(&mut self) {
        self.stop.cancel();
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Plans one table. `chunking: key` uses integer ranges for a single
/// integer key, keyset ranges for any other key, and CTID ranges for a
/// table without one (the key planners refuse unfit tables with a
/// `Setup` error before running any query, so the transaction stays usable).
///
/// A partitioned table has no rows of its own: each leaf partition that
/// holds rows under the snapshot is planned as a table of its own (a leaf
/// empty now gets its rows after the snapshot, which the stream carries),
/// its chunks numbered on after the previous leaf's. The table's last
/// chunk is the last of the last leaf. Without any such leaf, the table
/// itself is planned (one empty chunk).
async fn plan_table(
    conn: &mut PgConnection,
    info: &crate::catalog::RelationInfo,
    chunking: Chunking,
    chunk_rows: u64,
) -> Result<Vec<PlannedChunk>, PgError> {
    let Some(leaves) = leaf_partitions(conn, &info.schema).await? else {
        let bounds = plan_relation(conn, info, chunking, chunk_rows).await?;
        return Ok(bounds.into_iter().map(PlannedChunk::from).collect());
    };
    let mut out: Vec<PlannedChunk> = Vec::new();
    for leaf in leaves {
        let partition = ChunkPartition {
            table: leaf.name.clone(),
            last: false,
        };
        if !leaf.ordinary {
            // A foreign table: no blocks and no statistics; read at once.
            out.push(PlannedChunk {
                partition: Some(partition),
                bounds: ChunkBounds::Ctid {
                    start_block: 0,
                    end_block: None,
                },
            });
            continue;
        }
        if !has_rows(conn, &leaf.name).await? {
            continue;
        }
        let leaf_info = crate::catalog::RelationInfo {
            schema: Arc::new(cdc_core::TableSchema {
                oid: leaf.oid,
                name: leaf.name.clone(),
                ..(*info.schema).clone()
            }),
            types: info.types.clone(),
        };
        let bounds = plan_relation(conn, &leaf_info, chunking, chunk_rows).await?;
        tracing::debug!(table = %info.schema.name, partition = %leaf.name, chunks = bounds.len(), "planned the chunks of a partition");
        out.extend(bounds.into_iter().map(|bounds| PlannedChunk {
            partition: Some(partition.clone()),
            bounds,
        }));
    }
    match out.last_mut().and_then(|c| c.partition.as_mut()) {
        Some(last) => last.last = true,
        None => {
            let bounds = plan_relation(conn, info, Chunking::Ctid, chunk_rows).await?;
            out = bounds.into_iter().map(PlannedChunk::from).collect();
        }
    }
    Ok(out)
}

/// Plans one relation with the strategies `chunking` allows.
async fn plan_relation(
    conn: &mut PgConnection,
    info: &crate::catalog::RelationInfo,
    chunking: Chunking,
    chunk_rows: u64,
) -> Result<Vec<ChunkBounds>, PgError> {
    let candidates: &[ChunkStrategy] = match chunking {
        Chunking::Auto | Chunking::Ctid => &[ChunkStrategy::Ctid],
        Chunking::Key => &[
            ChunkStrategy::IntKey,
            ChunkStrategy::Keyset,
            ChunkStrategy::Ctid,
        ],
    };
    let mut last = None;
    for strategy in candidates {
        match plan_chunks(conn, info, *strategy, chunk_rows).await {
            Err(PgError::Setup(why)) => {
                tracing::debug!(table = %info.schema.name, reason = %why, "trying the next chunking strategy");
                last = Some(PgError::Setup(why));
            }
            other => return other,
        }
    }
    Err(last.unwrap_or_else(|| PgError::Protocol("no chunking strategy".into())))
}

impl SnapshotPhase {
    /// Prepares the snapshot: `Ok(None)` when none is needed (`initial`
    /// with a completed snapshot for this slot).
    #[allow(clippy::too_many_arguments)]
    pub async fn begin(
        mode: SnapshotMode,
        settings: SnapshotSettings,
        tables: Vec<TableName>,
        options: PgConnectOptions,
        server: &ServerInfo,
        slot: &str,
        create_slot: bool,
        stream_start: StreamStart,
        status: SourceStatus,
    ) -> Result<Option<Self>, PgError> {
        let connect = |role: &'static str, what: &'static str| {
            let options = for_role(&options, role);
            async move {
                PgConnection::connect_with(&options)
                    .await
                    .map_err(|e| PgError::sql(what, e))
            }
        };
        let store = MetadataStore::new(settings.metadata_schema.clone());
        let mut meta = connect("metadata", "connecting for snapshot metadata").await?;
        store.ensure_schema(&mut meta).await?;
        let mut lock = connect("lock", "connecting for the coordinator lock").await?;

        let mut job = store.job(&mut meta, slot).await?;
        match (mode, job.as_ref().map(|j| j.state)) {
            (SnapshotMode::Initial, Some(JobState::Done))
                if !create_slot || setup::slot_exists(&mut meta, slot).await? =>
            {
                tracing::info!(
                    slot,
                    "a completed snapshot exists for this slot; streaming only"
                );
                return Ok(None);
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
                store.delete_job(&mut meta, slot).await?;
                job = None;
            }
            (SnapshotMode::SnapshotOnly, Some(JobState::Done)) => {
                // Each snapshot_only run copies the tables anew.
                store.delete_job(&mut meta, slot).await?;
                job = None;
            }
            (SnapshotMode::Initial, Some(JobState::Running)) => {
                // A running job belongs to the slot it was planned for: the
                // slot stays at the job's consistent point until streaming
                // starts. A slot that is gone, or stands elsewhere (dropped
                // and created again), would stream from a point the rows of
                // the done chunks were not read at: start over.
                let planned_at = job.as_ref().and_then(|j| j.snapshot_lsn);
                let slot_at = setup::slot_confirmed_flush(&mut meta, slot).await?;
                if slot_at.is_none() || slot_at != planned_at {
                    tracing::warn!(
                        slot,
                        planned_at = %planned_at.map_or_else(|| "-".into(), |l| l.to_string()),
                        slot_at = %slot_at.map_or_else(|| "missing".into(), |l| l.to_string()),
                        "the snapshot in progress was planned for a replication slot that no longer exists \
                         as it was (dropped, or created again): starting the snapshot over"
                    );
                    store.delete_job(&mut meta, slot).await?;
                    job = None;
                }
            }
            _ => {}
        }

        let mut export = None;
        let snapshot_lsn;
        loop {
            if try_coordinator_lock(&mut lock, slot).await? {
                tracing::info!(slot, instance = %settings.instance_id, "coordinating the snapshot");
                let slot_exists = setup::slot_exists(&mut meta, slot).await?;
                let (ex, name, lsn) = if mode == SnapshotMode::Initial && !slot_exists {
                    if !create_slot {
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
                    let created =
                        create_slot_with_export(stream_start.replication, slot, server.version_num)
                            .await?;
                    tracing::info!(slot, consistent_point = %created.consistent_point, snapshot = %created.snapshot_name, "created the slot with an exported snapshot");
                    (
                        Export::Slot(created.client),
                        created.snapshot_name,
                        created.consistent_point,
                    )
                } else {
                    let lsn = if mode == SnapshotMode::Initial {
                        setup::ensure_slot(&mut meta, server, slot, false)
                            .await?
                            .confirmed_flush_lsn
                    } else {
                        Lsn::ZERO
                    };
                    let (conn, name) = export_from_transaction(&options).await?;
                    if mode == SnapshotMode::Initial {
                        tracing::warn!(slot, snapshot = %name, "resuming a snapshot under a new exported snapshot: \
                             changes since the slot's consistent point are replayed over the rows read now");
                    }
                    (Export::Transaction(conn), name, lsn)
                };
                let planned = job.as_ref().is_some_and(|j| j.state != JobState::Planning);
                if planned {
                    store
                        .set_snapshot(&mut meta, slot, &name, &settings.instance_id)
                        .await?;
                    snapshot_lsn = job.as_ref().and_then(|j| j.snapshot_lsn).unwrap_or(lsn);
                } else {
                    plan(
                        &store,
                        &mut meta,
                        &options,
                        slot,
                        &name,
                        lsn,
                        &settings,
                        &tables,
                        &server.database,
                    )
                    .await?;
                    snapshot_lsn = lsn;
                }
                export = Some(ex);
                break;
            }
            job = store.job(&mut meta, slot).await?;
            if let Some(j) = &job {
                if j.state == JobState::Running && j.snapshot_name.is_some() {
                    snapshot_lsn = j.snapshot_lsn.unwrap_or(Lsn::ZERO);
                    tracing::info!(slot, "joining the snapshot coordinated by another instance");
                    break;
                }
                if mode == SnapshotMode::Initial && j.state == JobState::Done {
                    return Ok(None);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }

        status.snapshot_started();
        for t in store.progress(&mut meta, slot).await?.tables {
            status.snapshot_table(&t.table, t.chunks_total, t.chunks_done);
        }
        let (tx, items) = mpsc::channel(settings.workers * 4);
        let claims = Claims::default();
        let stop = CancellationToken::new();
        let (chunks_done, chunks_done_rx) = watch::channel(0u64);
        let snapshot_gone = Arc::new(AtomicU64::new(0));
        let ctx = ReaderContext {
            options: options.clone(),
            database: server.database.clone(),
            slot: slot.to_owned(),
            store: store.clone(),
            settings: settings.clone(),
            claims: claims.clone(),
            chunks_done: chunks_done_rx,
            out: tx,
            stop: stop.clone(),
            snapshot_gone: snapshot_gone.clone(),
            status: status.clone(),
        };
        let heartbeat = HeartbeatContext {
            options: options.clone(),
            store: store.clone(),
            settings: settings.clone(),
            claims: claims.clone(),
            stop: stop.clone(),
        };
        let mut tasks: Vec<JoinHandle<()>> = (0..settings.workers)
            .map(|_| tokio::spawn(run_reader(ctx.clone())))
            .collect();
        drop(ctx);
        tasks.push(tokio::spawn(run_heartbeat(heartbeat)));
        Ok(Some(Self {
            mode,
            slot: slot.to_owned(),
            settings,
            options,
            store,
            meta,
            lock,
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
        }))
    }

    /// The consistent point rows are read at.
    pub fn snapshot_lsn(&self) -> Lsn {
        self.snapshot_lsn
    }

    /// Marks done the chunks whose rows are durable. On an error the
    /// chunks not yet marked wait for the next call.
    async fn complete_durable(&mut self, ack: &AckHandle) -> Result<(), PgError> {
        let mut completed = self.emitter.take_completed(ack.durable_batches());
        if completed.is_empty() {
            return Ok(());
        }
        let mut marked_any = false;
        while !completed.is_empty() {
            let c = completed.remove(0);
            if !self.claims.holds(c.chunk_id, c.attempt) {
                // Its claim was given up before its rows were written (a
                // sink found it lost and dropped them) or taken over: the
                // chunk is read again, never marked done from here.
                let released = self
                    .store
                    .release_chunk(
                        &mut self.meta,
                        c.chunk_id,
                        &self.settings.instance_id,
                        c.attempt,
                    )
                    .await;
                if let Err(e) = released {
                    completed.insert(0, c);
                    self.emitter.requeue(completed);
                    if marked_any {
                        self.chunks_done.send_modify(|n| *n += 1);
                    }
                    return Err(e);
                }
                continue;
            }
            let marked = self
                .store
                .mark_done(
                    &mut self.meta,
                    c.chunk_id,
                    &self.settings.instance_id,
                    c.attempt,
                    c.rows,
                    Some(&c.files),
                )
                .await;
            // `restarted`: its table was started over just now.
            let marked = match marked {
                Ok(true) => self
                    .check_read_from(&c)
                    .await
                    .map(|restarted| (true, restarted)),
                Ok(false) => Ok((false, false)),
                Err(e) => Err(e),
            };
            let (mine, restarted) = match marked {
                Ok(m) => m,
                // Marked, but not checked: marked again (which changes
                // nothing) and checked in the next round.
                Err(e) => {
                    completed.insert(0, c);
                    self.emitter.requeue(completed);
                    if marked_any {
                        self.chunks_done.send_modify(|n| *n += 1);
                    }
                    return Err(e);
                }
            };
            marked_any = true;
            // Stop heartbeating (a heartbeat racing the update would find
            // the chunk done and report a takeover that did not happen).
            self.claims.forget(c.chunk_id, c.attempt);
            if mine {
                if !restarted {
                    self.status.snapshot_chunk_done(&c.table);
                }
                crate::failpoint::failpoint!("snapshot::after_mark_done");
            } else {
                tracing::warn!(chunk = c.chunk_id, attempt = c.attempt, "chunk was claimed again before its rows were durable here; it is read again under the new claim");
            }
        }
        self.chunks_done.send_modify(|n| *n += 1);
        Ok(())
    }

    /// After chunk `c` was marked done: when the done chunks of its table
    /// were read from different files of it, a rewrite came between their
    /// reads unseen (each read under a snapshot that saw the file it read:
    /// a new export came between them, after the rewrite), so rows moved
    /// by it may be missing; the table is started over, as a reader does
    /// when it sees a rewrite. `true` when it was started over.
    async fn check_read_from(&mut self, c: &super::emitter::Completion) -> Result<bool, PgError> {
        if !self
            .store
            .read_from_differs(&mut self.meta, c.chunk_id)
            .await?
        {
            return Ok(false);
        }
        let table = &c.table;
        match self
            .store
            .reread_table(&mut self.meta, &self.slot, table)
            .await?
        {
            Some(chunks) => {
                self.status.snapshot_table_reread(table, chunks);
                tracing::warn!(table = %table, chunks,
                    "table {table} was rewritten while the snapshot was running (ALTER TABLE … TYPE, VACUUM FULL, \
                     CLUSTER, pg_repack or TRUNCATE): its chunks were read from different files of it, under \
                     snapshots exported before and after, so rows may be missing; all {chunks} of its chunks are \
                     read again under a new exported snapshot (rows of it already delivered are delivered again)");
            }
            None => {
                tracing::info!(table = %table, "table {table} was rewritten while the snapshot was running; \
                    it is already being read again");
            }
        }
        Ok(true)
    }

    /// After a retryable error on the metadata connection (terminated by
    /// an administrator, a dropped TCP connection, a server restart):
    /// connects again, with backoff, until it works or fails for good. Logs
    /// one line per attempt ([`Reconnects`]).
    async fn reconnect_meta(&mut self, error: PgError) -> Result<(), PgError> {
        let mut reconnects = Reconnects::new("metadata", Duration::from_secs(5));
        let mut delay = reconnects.failed(&error);
        loop {
            tokio::time::sleep(delay).await;
            match PgConnection::connect_with(&for_role(&self.options, "metadata")).await {
                Ok(conn) => {
                    self.meta = conn;
                    reconnects.restored();
                    return Ok(());
                }
                Err(e) => {
                    let e = PgError::sql("connecting again for snapshot metadata", e);
                    if e.class() != cdc_core::ErrorClass::Retryable {
                        return Err(e);
                    }
                    delay = reconnects.failed(&e);
                }
            }
        }
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
    async fn check_export(&mut self) -> Result<(), PgError> {
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

    /// Runs the metadata steps of one round of [`fill`](Self::fill),
    /// connecting again after a retryable error (the round is repeated).
    async fn metadata_round(&mut self, ack: &AckHandle) -> Result<(), PgError> {
        let result = match self.complete_durable(ack).await {
            Ok(()) => match self.check_lock().await {
                Ok(()) => match self.maybe_take_over().await {
                    Ok(()) => self.check_export().await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match result {
            Err(e) if e.class() == cdc_core::ErrorClass::Retryable => self.reconnect_meta(e).await,
            other => other,
        }
    }

    /// While this instance coordinates: checks every 2 s that the session
    /// holding the coordinator lock is still there (which also keeps it
    /// from going idle long enough for `idle_session_timeout`). If it is
    /// gone, so is the lock: this instance takes it again on a new
    /// connection, or, when another instance has taken it meanwhile (and
    /// exported a snapshot of its own), steps down and carries on as a
    /// reader.
    async fn check_lock(&mut self) -> Result<(), PgError> {
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
    async fn maybe_take_over(&mut self) -> Result<(), PgError> {
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

    /// Fills `batch` (to be batch number `batch_seq`) with snapshot events.
    /// Returns a transition once the whole snapshot is complete. A batch
    /// with snapshot reads carries a fence on the claims they were read
    /// under ([`Batch::without_lost_reads`]).
    pub async fn fill(
        &mut self,
        batch: &mut Batch,
        batch_seq: u64,
        ack: &AckHandle,
        max_events: usize,
        max_wait: Duration,
    ) -> Result<Option<Transition>, PgError> {
        let mut read_under = Vec::new();
        let result = self
            .fill_reads(batch, batch_seq, ack, max_events, max_wait, &mut read_under)
            .await;
        if !read_under.is_empty() {
            batch.fence = Some(ReadFence::new(ClaimFence::new(
                self.claims.clone(),
                self.settings.claim_timeout,
                read_under,
            )));
        }
        result
    }

    /// [`fill`](Self::fill), adding to `read_under` the claim of every
    /// chunk whose rows it put in `batch`.
    async fn fill_reads(
        &mut self,
        batch: &mut Batch,
        batch_seq: u64,
        ack: &AckHandle,
        max_events: usize,
        max_wait: Duration,
        read_under: &mut Vec<(i64, u32)>,
    ) -> Result<Option<Transition>, PgError> {
        if self.announce_begin {
            self.announce_begin = false;
            batch
                .events
                .push(Event::Control(ControlEvent::SnapshotBegin {
                    table: None,
                    snapshot_lsn: self.snapshot_lsn,
                }));
        }
        let mut first_at: Option<Instant> = None;
        loop {
            self.metadata_round(ack).await?;
            if self.readers_done {
                if self.emitter.is_idle() {
                    return self.finish(batch).await.map(Some);
                }
                if !batch.events.is_empty() {
                    return Ok(None);
                }
                // Waiting for the sinks to make the last chunks durable.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let wait = match first_at {
                Some(t) => max_wait.saturating_sub(t.elapsed()),
                // Chunks wait for their rows to become durable: look again
                // soon, so they are marked done (and the readers, waiting
                // for the last ones, can finish) without a long pause.
                None if self.emitter.awaits_durability() => Duration::from_millis(10),
                None => Duration::from_millis(200),
            };
            match tokio::time::timeout(wait, self.items.recv()).await {
                Err(_) => {
                    if !batch.events.is_empty() {
                        return Ok(None);
                    }
                }
                Ok(None) => self.readers_done = true,
                Ok(Some(Err(e))) if e.class() == cdc_core::ErrorClass::Retryable => {
                    tracing::warn!(error = %cdc_core::error_chain(&e), "snapshot reader error; retrying");
                }
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(item))) => {
                    // Rows that waited in the channel while the claim ran
                    // out (a paused process) must not reach a sink either.
                    let item = match item {
                        LoadItem::Rows(chunk, _) | LoadItem::End(chunk, _)
                            if !self.claims.valid(
                                chunk.id,
                                chunk.attempt,
                                self.settings.claim_timeout,
                            ) =>
                        {
                            tracing::warn!(chunk = chunk.id, attempt = chunk.attempt, table = %chunk.table.name,
                                "the claim on a snapshot chunk ran out before its rows were handed on: dropping them; it is read again");
                            // Stop renewing it and give it back, so it is
                            // read again at once (here or elsewhere).
                            self.claims.forget(chunk.id, chunk.attempt);
                            let released = self
                                .store
                                .release_chunk(
                                    &mut self.meta,
                                    chunk.id,
                                    &self.settings.instance_id,
                                    chunk.attempt,
                                )
                                .await;
                            match released {
                                // Not released: it is claimed again once
                                // its heartbeat is older than claim_timeout.
                                Err(e) if e.class() == cdc_core::ErrorClass::Retryable => {
                                    self.reconnect_meta(e).await?;
                                }
                                other => {
                                    other?;
                                }
                            }
                            LoadItem::Abort(chunk)
                        }
                        item => item,
                    };
                    if let LoadItem::Rows(chunk, rows) = &item {
                        self.status
                            .snapshot_rows(&chunk.table.name, rows.len() as u64);
                    }
                    let claim = match &item {
                        LoadItem::Rows(chunk, _) | LoadItem::End(chunk, _) => {
                            Some((chunk.id, chunk.attempt))
                        }
                        _ => None,
                    };
                    let before = batch.events.len();
                    self.emitter.push(item, batch, batch_seq);
                    // Only a chunk with rows in this batch: an empty chunk
                    // may be marked done before this batch is written.
                    let read_here = batch.events[before..]
                        .iter()
                        .any(|e| matches!(e, Event::Change(_)));
                    if let Some(claim) = claim.filter(|c| read_here && !read_under.contains(c)) {
                        read_under.push(claim);
                    }
                    if first_at.is_none() && !batch.events.is_empty() {
                        first_at = Some(Instant::now());
                    }
                    if batch.events.len() >= max_events {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// One step of finishing: the coordinator marks the job done; another
    /// instance waits for that (or takes over). `true` once the job is done.
    async fn finish_job(&mut self) -> Result<bool, PgError> {
        if self.export.is_none() {
            let done = self
                .store
                .job(&mut self.meta, &self.slot)
                .await?
                .is_some_and(|j| j.state == JobState::Done);
            if done {
                return Ok(true);
            }
            self.maybe_take_over().await?;
            if self.export.is_none() {
                return Ok(false);
            }
        }
        self.store
            .set_job_state(&mut self.meta, &self.slot, JobState::Done)
            .await?;
        tracing::info!(slot = %self.slot, "snapshot complete");
        Ok(true)
    }

    async fn finish(&mut self, batch: &mut Batch) -> Result<Transition, PgError> {
        // Every reader has stopped because every chunk is done; wait for
        // the job to say so too if another instance is coordinating.
        loop {
            match self.finish_job().await {
                Ok(true) => break,
                Ok(false) => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(e) if e.class() == cdc_core::ErrorClass::Retryable => {
                    self.reconnect_meta(e).await?;
                }
                Err(e) => return Err(e),
            }
        }
        batch.events.push(Event::Control(ControlEvent::SnapshotEnd {
            table: None,
            snapshot_lsn: self.snapshot_lsn,
        }));
        self.stop.cancel();
        self.reexport = None;
        self.status.snapshot_finished();
        if self.mode == SnapshotMode::SnapshotOnly {
            return Ok(Transition::End);
        }
        match self.export.take() {
            Some(Export::Slot(client)) => {
                match PgWireTransport::start_gated(client, self.snapshot_lsn).await {
                    Ok(t) => Ok(Transition::Stream(t)),
                    // The session that created the slot is gone (terminated
                    // after the last chunk was read): the slot itself still
                    // waits at its consistent point; stream from it.
                    Err(e) if e.class() == cdc_core::ErrorClass::Retryable => {
                        tracing::warn!(slot = %self.slot, error = %cdc_core::error_chain(&e),
                            "the session that created the slot is gone; streaming from the slot instead");
                        Ok(Transition::Connect)
                    }
                    Err(e) => Err(e),
                }
            }
            Some(Export::Transaction(conn)) => {
                drop(conn);
                Ok(Transition::Connect)
            }
            None => Ok(Transition::Connect),
        }
    }
}

/// Plans every table under snapshot `name` and records the job and its
/// chunks in one transaction, so a crash leaves either a complete plan or none.
#[allow(clippy::too_many_arguments)]
async fn plan(
    store: &MetadataStore,
    meta: &mut PgConnection,
    options: &PgConnectOptions,
    slot: &str,
    name: &str,
    lsn: Lsn,
    settings: &SnapshotSettings,
    tables: &[TableName],
    database: &str,
) -> Result<(), PgError> {
    let mut reader = PgConnection::connect_with(&for_role(options, "plan"))
        .await
        .map_err(|e| PgError::sql("connecting to plan the snapshot", e))?;
    import_snapshot(&mut reader, name).await?;
    let mut plans = Vec::with_capacity(tables.len());
    for table in tables {
        let info = describe_table(&mut reader, database, table).await?;
        let bounds = plan_table(&mut reader, &info, settings.chunking, settings.chunk_rows).await?;
        tracing::info!(table = %table, chunks = bounds.len(), "planned snapshot chunks");
        plans.push((table.clone(), bounds));
    }
    let _ = sqlx::raw_sql("COMMIT").execute(&mut reader).await;

    let tx_err = |e| PgError::sql("recording the snapshot plan", e);
    sqlx::raw_sql("BEGIN")
        .execute(&mut *meta)
        .await
        .map_err(tx_err)?;
    let recorded = async {
        store.delete_job(meta, slot).await?;
        store
            .create_job(meta, slot, name, lsn, &settings.instance_id)
            .await?;
        for (table, bounds) in &plans {
            store
                .insert_planned_chunks(meta, slot, table, bounds)
                .await?;
        }
        store.set_job_state(meta, slot, JobState::Running).await?;
        Ok::<(), PgError>(())
    }
    .await;
    match recorded {
        Ok(()) => {
            sqlx::raw_sql("COMMIT")
                .execute(&mut *meta)
                .await
                .map_err(tx_err)?;
            Ok(())
        }
        Err(e) => {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *meta).await;
            Err(e)
        }
    }
}
