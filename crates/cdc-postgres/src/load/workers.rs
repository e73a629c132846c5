//! Chunk readers: claim a chunk, read it under the exported snapshot, hand
//! its rows over; and the heartbeat that keeps this instance's chunks
//! claimed until their rows are durable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc_core::{Row, SourceStatus, TableName};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::chunk_conn::ChunkConn;
use super::claims::Claims;
use super::export::import_snapshot;
use super::item::{ChunkInfo, LoadItem};
use super::settings::SnapshotSettings;
use crate::catalog::RelationInfo;
use crate::conn::{for_role, Reconnects};
use crate::error::PgError;
use crate::snapshot::{
    describe_published_table, rewritten_since_snapshot, ClaimedChunk, ConnectError, CopyConn,
    CopyTarget, HeapFiles, MetadataStore, PlannedChunk,
};

/// The last chunk of its table's plan (whose last row is marked `last`).
fn is_last(chunk: &ClaimedChunk) -> bool {
    PlannedChunk {
        partition: chunk.partition.clone(),
        bounds: chunk.bounds.clone(),
    }
    .is_last()
}

/// Everything a reader task needs.
#[derive(Clone)]
pub(crate) struct ReaderContext {
    pub options: PgConnectOptions,
    pub database: String,
    /// Whose column lists and row filters the reads apply.
    pub publication: String,
    /// The configured column selections, applied after the publication's.
    pub local_subsets: crate::local_subsets::LocalSubsets,
    pub slot: String,
    pub store: MetadataStore,
    pub settings: SnapshotSettings,
    pub claims: Claims,
    /// Changes whenever this instance marks chunks done.
    pub chunks_done: watch::Receiver<u64>,
    pub out: mpsc::Sender<Result<LoadItem, PgError>>,
    pub stop: CancellationToken,
    /// Counts imports that failed because the exported snapshot is gone
    /// (or none is recorded: a table was found rewritten), for the
    /// coordinator to check its export.
    pub snapshot_gone: Arc<AtomicU64>,
    /// Where tables read again after a rewrite are counted.
    pub status: SourceStatus,
    /// Where the reader's own COPY connection connects; `None`: chunks
    /// are read on the driver's connection.
    pub copy_target: Option<CopyTarget>,
}

/// The tables a reader has described, under the exported snapshot they
/// were described under: a new export (after a rewrite, `ALTER TABLE …
/// TYPE` among them) may see other columns or types.
#[derive(Default)]
struct Schemas {
    snapshot: String,
    tables: HashMap<TableName, RelationInfo>,
}

/// Runs one reader until every chunk is done or `stop` fires. Fatal
/// errors are sent to the source; after a retryable one (the server
/// restarting, a terminated connection) the reader connects again with
/// backoff ([`Reconnects`]); a lost snapshot makes the reader wait and
/// retry with the snapshot the (new) coordinator records.
pub(crate) async fn run_reader(mut ctx: ReaderContext) {
    let mut schemas = Schemas::default();
    let mut conn: Option<PgConnection> = None;
    let mut own: Option<CopyConn> = None;
    let mut own_target = ctx.copy_target.take();
    let mut reconnects = Reconnects::new("reader", Duration::from_secs(5));
    let idle = Duration::from_millis(500);
    loop {
        if ctx.stop.is_cancelled() {
            return;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match PgConnection::connect_with(&for_role(&ctx.options, "reader")).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    let e = PgError::sql("snapshot reader connecting", e);
                    let delay = reader_failed(&ctx, &mut reconnects, e, idle * 2).await;
                    tokio::select! { _ = ctx.stop.cancelled() => return, _ = tokio::time::sleep(delay) => {} }
                    continue;
                }
            },
        };
        if let (None, Some(target)) = (&own, &own_target) {
            match CopyConn::connect(target).await {
                Ok(o) => own = Some(o),
                Err(ConnectError::Unsupported(what)) => {
                    tracing::info!(
                        "snapshot reader: the server asks for {what}, which only the driver's \
                         connection speaks; chunks are read on it"
                    );
                    own_target = None;
                }
                Err(ConnectError::Failed(e)) => {
                    let delay = reader_failed(&ctx, &mut reconnects, e, idle * 2).await;
                    tokio::select! { _ = ctx.stop.cancelled() => return, _ = tokio::time::sleep(delay) => {} }
                    continue;
                }
            }
        }
        let read = read_one(&ctx, c, own.as_mut(), &mut schemas).await;
        if read.is_err() {
            // Whatever failed, the next chunk starts on a new COPY
            // connection.
            if let Some(o) = own.take() {
                o.close().await;
            }
        }
        match read {
            Ok(true) => reconnects.restored(),
            Ok(false) => {
                // Nothing claimable now: finished, or chunks are still being
                // read or made durable (here or by other instances). Look
                // again when this instance marks chunks done, or after a
                // while (other instances, claims that time out).
                ctx.chunks_done.borrow_and_update();
                match ctx.store.all_done(c, &ctx.slot).await {
                    Ok(true) => {
                        if let Some(o) = own.take() {
                            o.close().await;
                        }
                        return;
                    }
                    Ok(false) => reconnects.restored(),
                    Err(e) => {
                        conn = None;
                        let delay = reader_failed(&ctx, &mut reconnects, e, idle).await;
                        tokio::select! { _ = ctx.stop.cancelled() => return, _ = tokio::time::sleep(delay) => {} }
                        continue;
                    }
                }
                tokio::select! {
                    _ = ctx.stop.cancelled() => return,
                    _ = tokio::time::sleep(idle) => {}
                    changed = ctx.chunks_done.changed() => if changed.is_err() {
                        // The source is gone; `stop` follows.
                        tokio::select! { _ = ctx.stop.cancelled() => return, _ = tokio::time::sleep(idle) => {} }
                    },
                }
            }
            Err(PgError::TableRewritten { .. }) => {
                // Logged, and the table started over, by `read_one`. Its
                // chunks wait for the new export; the connection is fine.
            }
            Err(e @ (PgError::SnapshotGone(_) | PgError::ClaimLost(_))) => {
                if matches!(e, PgError::SnapshotGone(_)) {
                    ctx.snapshot_gone.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(error = %cdc_core::error_chain(&e), "snapshot reader");
                conn = None;
                tokio::select! { _ = ctx.stop.cancelled() => return, _ = tokio::time::sleep(idle * 2) => {} }
            }
            Err(e) => {
                conn = None;
                let delay = reader_failed(&ctx, &mut reconnects, e, idle * 2).await;
                tokio::select! { _ = ctx.stop.cancelled() => return, _ = tokio::time::sleep(delay) => {} }
            }
        }
    }
}

/// A reader's step failed with `e`: a retryable error is logged (one line,
/// see [`Reconnects`]) and the backoff delay returned; a fatal one goes to
/// the source, which ends the snapshot, and `fatal_wait` is returned.
async fn reader_failed(
    ctx: &ReaderContext,
    reconnects: &mut Reconnects,
    e: PgError,
    fatal_wait: Duration,
) -> Duration {
    if e.class() == cdc_core::ErrorClass::Retryable {
        reconnects.failed(&e)
    } else {
        let _ = ctx.out.send(Err(e)).await;
        fatal_wait
    }
}

/// Claims and reads one chunk. `Ok(false)`: nothing to claim.
async fn read_one(
    ctx: &ReaderContext,
    conn: &mut PgConnection,
    own: Option<&mut CopyConn>,
    schemas: &mut Schemas,
) -> Result<bool, PgError> {
    crate::failpoint::failpoint!("snapshot::reader_before_claim");
    let claimed_at = Instant::now();
    let Some((chunk, snapshot)) = ctx
        .store
        .claim_chunk_with_snapshot(
            conn,
            &ctx.slot,
            &ctx.settings.instance_id,
            ctx.settings.claim_timeout,
        )
        .await?
    else {
        return Ok(false);
    };
    ctx.claims.hold(chunk.id, chunk.attempts, claimed_at);
    let mut started: Option<Arc<ChunkInfo>> = None;
    let result = async {
        let name = snapshot.ok_or_else(|| {
            PgError::SnapshotGone("no snapshot recorded (or the job disappeared)".into())
        })?;
        // A table already described under this snapshot: the import and
        // the rewrite check go in one round trip. Otherwise the driver's
        // connection describes it; with an own COPY connection, the
        // chunk's transaction is then begun there.
        let described = (schemas.snapshot == name)
            .then(|| schemas.tables.get(&chunk.table).cloned())
            .flatten();
        let prepared: Result<(Option<HeapFiles>, RelationInfo), PgError> = match described {
            Some(info) => Ok((None, info)),
            None => {
                import_snapshot(conn, &name).await?;
                if schemas.snapshot != name {
                    schemas.tables.clear();
                    schemas.snapshot = name.clone();
                }
                let described = describe_and_check(ctx, conn, schemas, &chunk.table).await;
                if own.is_some() {
                    // The describing transaction ends here, failed or not.
                    let _ = sqlx::raw_sql("COMMIT").execute(&mut *conn).await;
                }
                described.map(|(heap, info)| (own.is_none().then_some(heap), info))
            }
        };
        let mut on = match own {
            Some(own) => ChunkConn::Own(own),
            None => ChunkConn::Driver(conn),
        };
        let prepared = match prepared {
            Ok((Some(heap), info)) => Ok((heap, info)),
            // No transaction is left open when this fails.
            Ok((None, info)) => Ok((on.import_and_check(&name, &info.schema).await?, info)),
            Err(e) => Err(e),
        };
        let read = async {
            // Before any row is handed on: a table rewritten after the
            // snapshot was exported cannot be read under it.
            let (heap, info) = prepared?;
            if heap.rewritten {
                return Err(PgError::TableRewritten {
                    table: chunk.table.to_string(),
                });
            }
            let meta = Arc::new(ChunkInfo {
                id: chunk.id,
                attempt: chunk.attempts,
                table: info.schema.clone(),
                chunk_no: chunk.chunk_no,
                is_last: is_last(&chunk),
                files: heap.files,
            });
            started = Some(meta.clone());
            send(ctx, LoadItem::Start(meta.clone())).await?;
            let (tx, mut rx) = mpsc::channel::<Vec<Row>>(2);
            let forward_meta = meta.clone();
            // Owns the receiver: when forwarding stops early (an error, a
            // lost claim), the receiver goes with it and the COPY reader
            // stops at its next send instead of waiting for ever.
            let forward = async move {
                let meta = forward_meta;
                let mut first = true;
                while let Some(rows) = rx.recv().await {
                    send_held(ctx, LoadItem::Rows(meta.clone(), rows), &meta).await?;
                    if first {
                        first = false;
                        crate::failpoint::failpoint_err!("snapshot::reader_after_first_rows");
                        crate::failpoint::failpoint!("snapshot::reader_mid_chunk");
                    }
                }
                Ok::<(), PgError>(())
            };
            let reading = async {
                // A chunk of a partitioned table reads one partition,
                // its rows are rows of the partitioned table.
                let from = chunk.partition.as_ref().map_or(&chunk.table, |p| &p.table);
                let n = on
                    .read(
                        &info,
                        from,
                        &chunk.bounds,
                        ctx.settings.copy_format.for_table(&info.schema),
                        ctx.settings.rows_per_batch,
                        &tx,
                    )
                    .await;
                drop(tx);
                n
            };
            let (n, forwarded) = tokio::join!(reading, forward);
            forwarded?;
            let n = n?;
            send_held(ctx, LoadItem::End(meta.clone(), n), &meta).await?;
            Ok::<(), PgError>(())
        }
        .await;
        let _ = on.commit().await;
        read
    }
    .await;
    if let Err(PgError::TableRewritten { .. }) = &result {
        if let Some(meta) = started {
            let _ = ctx.out.send(Ok(LoadItem::Abort(meta))).await;
        }
        ctx.claims.forget(chunk.id, chunk.attempts);
        reread_table(ctx, conn, &chunk.table).await;
    } else if result.is_err() {
        // What was handed over of this read must not count (the source
        // would otherwise wait for its end forever), and another reader
        // (or a later attempt) may take the chunk at once.
        if let Some(meta) = started {
            let _ = ctx.out.send(Ok(LoadItem::Abort(meta))).await;
        }
        ctx.claims.forget(chunk.id, chunk.attempts);
        let released = ctx
            .store
            .release_chunk(conn, chunk.id, &ctx.settings.instance_id, chunk.attempts)
            .await;
        if released.is_err() {
            // The reader's connection is what failed: give the chunk back
            // on a new one rather than leave it to time out.
            if let Ok(mut fresh) =
                PgConnection::connect_with(&for_role(&ctx.options, "reader")).await
            {
                let _ = ctx
                    .store
                    .release_chunk(
                        &mut fresh,
                        chunk.id,
                        &ctx.settings.instance_id,
                        chunk.attempts,
                    )
                    .await;
                let _ = fresh.close().await;
            }
        }
    }
    result.map(|()| true)
}

/// Describes `table` under the snapshot just imported (remembered in
/// `schemas` for later chunks) and runs the rewrite check on it.
async fn describe_and_check(
    ctx: &ReaderContext,
    conn: &mut PgConnection,
    schemas: &mut Schemas,
    table: &TableName,
) -> Result<(HeapFiles, RelationInfo), PgError> {
    let info = describe_published_table(
        conn,
        &ctx.database,
        table,
        &ctx.publication,
        &ctx.local_subsets,
    )
    .await?;
    schemas.tables.insert(table.clone(), info.clone());
    let heap = rewritten_since_snapshot(conn, &info.schema).await?;
    Ok((heap, info))
}

/// Starts `table` over after this reader found it rewritten under the
/// exported snapshot (no row of the chunk was handed on): every chunk of
/// it back to pending and the job's snapshot cleared, so the coordinator
/// (on whichever instance) exports a new one, taken after the rewrite.
/// When that fails, the claim on the chunk runs out and the next reader
/// to claim it finds the rewrite again.
async fn reread_table(ctx: &ReaderContext, conn: &mut PgConnection, table: &TableName) {
    let mut reset = ctx.store.reread_table(conn, &ctx.slot, table).await;
    if reset.is_err() {
        // The reader's connection may be what failed: once more on a new one.
        if let Ok(mut fresh) = PgConnection::connect_with(&ctx.options).await {
            reset = ctx.store.reread_table(&mut fresh, &ctx.slot, table).await;
            let _ = fresh.close().await;
        }
    }
    match reset {
        Ok(None) => {
            tracing::info!(table = %table, "table {table} was rewritten while the snapshot was running; \
                the snapshot is already waiting for a new export, under which it is read again");
        }
        Ok(Some(chunks)) => {
            ctx.status.snapshot_table_reread(table, chunks);
            tracing::warn!(table = %table, chunks,
                "table {table} was rewritten while the snapshot was running (ALTER TABLE … TYPE, VACUUM FULL, \
                 CLUSTER, pg_repack or TRUNCATE): the rows read of it under the exported snapshot may be \
                 incomplete, so all {chunks} of its chunks are read again under a new exported snapshot \
                 (rows of it already delivered are delivered again)");
        }
        Err(e) => {
            tracing::warn!(table = %table, error = %cdc_core::error_chain(&e),
                "table {table} was rewritten while the snapshot was running, but starting it over failed; \
                 the next reader to claim the chunk finds the rewrite again");
        }
    }
}

async fn send(ctx: &ReaderContext, item: LoadItem) -> Result<(), PgError> {
    ctx.out
        .send(Ok(item))
        .await
        .map_err(|_| PgError::Protocol("the source stopped reading the snapshot".into()))
}

/// Sends `item` of chunk `meta` only while this instance still holds its
/// claim (and the claim's lease has not run out): rows of a chunk that
/// may have been taken over never leave the reader.
async fn send_held(ctx: &ReaderContext, item: LoadItem, meta: &ChunkInfo) -> Result<(), PgError> {
    if !ctx
        .claims
        .valid(meta.id, meta.attempt, ctx.settings.claim_timeout)
    {
        return Err(PgError::ClaimLost(format!(
            "the claim on chunk {} of {} (attempt {}) was not renewed in time or was taken over: \
             dropping what was read of it; it is read again",
            meta.chunk_no, meta.table.name, meta.attempt
        )));
    }
    send(ctx, item).await
}

/// What the heartbeat task needs (not the readers' sender: the source
/// learns that reading is over when every reader has dropped its sender).
pub(crate) struct HeartbeatContext {
    pub options: PgConnectOptions,
    pub store: MetadataStore,
    pub settings: SnapshotSettings,
    pub claims: Claims,
    pub stop: CancellationToken,
}

/// Heartbeats every held claim each `interval` until `stop`. After a
/// failure it connects again with backoff ([`Reconnects`]), never waiting
/// longer than `interval`.
pub(crate) async fn run_heartbeat(ctx: HeartbeatContext) {
    let interval = ctx.settings.heartbeat_interval;
    let mut conn: Option<PgConnection> = None;
    let mut reconnects = Reconnects::new("claims", interval);
    let mut wait = interval;
    loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = interval;
        let held = ctx.claims.all();
        if held.is_empty() {
            continue;
        }
        crate::failpoint::failpoint!("snapshot::heartbeat");
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match PgConnection::connect_with(&for_role(&ctx.options, "claims")).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    let e = PgError::sql("connecting to renew snapshot claims", e);
                    wait = reconnects.failed(&e).min(interval);
                    continue;
                }
            },
        };
        let mut renewed_all = true;
        for (id, attempt) in held {
            let sent = Instant::now();
            match ctx
                .store
                .heartbeat(c, id, &ctx.settings.instance_id, attempt)
                .await
            {
                Ok(true) => ctx.claims.renewed(id, attempt, sent),
                Ok(false) if !ctx.claims.holds(id, attempt) => {} // finished meanwhile
                Ok(false) => {
                    tracing::warn!(chunk = id, attempt, "snapshot chunk was claimed again (its heartbeat came too late): what this claim read is dropped; the chunk is read again under the new claim");
                    ctx.claims.forget(id, attempt);
                }
                Err(e) => {
                    wait = reconnects.failed(&e).min(interval);
                    conn = None;
                    renewed_all = false;
                    break;
                }
            }
        }
        if renewed_all {
            reconnects.restored();
        }
    }
}
