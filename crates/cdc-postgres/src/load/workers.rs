//! Chunk readers: claim a chunk, read it under the exported snapshot, hand
//! its rows over; and the heartbeat that keeps this instance's chunks
//! claimed until their rows are durable.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cdc_core::{Row, TableName, TableSchema};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::export::import_snapshot;
use super::settings::SnapshotSettings;
use crate::catalog::RelationInfo;
use crate::error::PgError;
use crate::snapshot::{describe_table, read_chunk, ChunkBounds, MetadataStore};

/// A chunk this instance is reading.
#[derive(Debug)]
pub(crate) struct ChunkInfo {
    pub id: i64,
    pub table: Arc<TableSchema>,
    pub chunk_no: u32,
    /// The table's open-ended last chunk.
    pub is_last: bool,
}

/// What readers hand to the source, in order per chunk.
pub(crate) enum LoadItem {
    Start(Arc<ChunkInfo>),
    Rows(Arc<ChunkInfo>, Vec<Row>),
    End(Arc<ChunkInfo>, u64),
}

/// Chunk ids this instance holds (reading, or read and waiting for the
/// sinks), heartbeated until marked done.
pub(crate) type HeldChunks = Arc<Mutex<HashSet<i64>>>;

pub(crate) fn hold(held: &HeldChunks, id: i64, on: bool) {
    if let Ok(mut set) = held.lock() {
        if on {
            set.insert(id);
        } else {
            set.remove(&id);
        }
    }
}

fn is_held(held: &HeldChunks, id: i64) -> bool {
    held.lock().map(|set| set.contains(&id)).unwrap_or(false)
}

fn is_last(bounds: &ChunkBounds) -> bool {
    match bounds {
        ChunkBounds::Ctid { end_block, .. } => end_block.is_none(),
        ChunkBounds::IntKey { end, .. } => end.is_none(),
        ChunkBounds::Keyset { end, .. } => end.is_none(),
    }
}

/// Everything a reader task needs.
#[derive(Clone)]
pub(crate) struct ReaderContext {
    pub options: PgConnectOptions,
    pub database: String,
    pub slot: String,
    pub store: MetadataStore,
    pub settings: SnapshotSettings,
    pub held: HeldChunks,
    /// Changes whenever this instance marks chunks done.
    pub chunks_done: watch::Receiver<u64>,
    pub out: mpsc::Sender<Result<LoadItem, PgError>>,
    pub stop: CancellationToken,
}

/// Runs one reader until every chunk is done or `stop` fires. Errors are
/// sent to the source; a lost snapshot makes the reader wait and retry
/// with the snapshot the (new) coordinator records.
pub(crate) async fn run_reader(mut ctx: ReaderContext) {
    let mut schemas: HashMap<TableName, RelationInfo> = HashMap::new();
    let mut conn: Option<PgConnection> = None;
    let idle = Duration::from_millis(500);
    loop {
        if ctx.stop.is_cancelled() {
            return;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match PgConnection::connect_with(&ctx.options).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    let _ = ctx
                        .out
                        .send(Err(PgError::sql("snapshot reader connecting", e)))
                        .await;
                    tokio::select! { _ = ctx.stop.cancelled() => return, _ = tokio::time::sleep(idle * 4) => {} }
                    continue;
                }
            },
        };
        match read_one(&ctx, c, &mut schemas).await {
            Ok(true) => {}
            Ok(false) => {
                // Nothing claimable now: finished, or chunks are still being
                // read or made durable (here or by other instances). Look
                // again when this instance marks chunks done, or after a
                // while (other instances, claims that time out).
                ctx.chunks_done.borrow_and_update();
                match ctx.store.all_done(c, &ctx.slot).await {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(e) => {
                        let _ = ctx.out.send(Err(e)).await;
                        conn = None;
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
            Err(e) => {
                let retry = matches!(e, PgError::SnapshotGone(_));
                tracing::warn!(error = %cdc_core::error_chain(&e), "snapshot reader");
                if !retry {
                    let _ = ctx.out.send(Err(e)).await;
                }
                conn = None;
                tokio::select! { _ = ctx.stop.cancelled() => return, _ = tokio::time::sleep(idle * 2) => {} }
            }
        }
    }
}

/// Claims and reads one chunk. `Ok(false)`: nothing to claim.
async fn read_one(
    ctx: &ReaderContext,
    conn: &mut PgConnection,
    schemas: &mut HashMap<TableName, RelationInfo>,
) -> Result<bool, PgError> {
    let Some(chunk) = ctx
        .store
        .claim_chunk(
            conn,
            &ctx.slot,
            &ctx.settings.instance_id,
            ctx.settings.claim_timeout,
        )
        .await?
    else {
        return Ok(false);
    };
    hold(&ctx.held, chunk.id, true);
    let result = async {
        let job = ctx
            .store
            .job(conn, &ctx.slot)
            .await?
            .ok_or_else(|| PgError::SnapshotGone("the snapshot job disappeared".into()))?;
        let name = job
            .snapshot_name
            .ok_or_else(|| PgError::SnapshotGone("no snapshot recorded yet".into()))?;
        import_snapshot(conn, &name).await?;
        let read = async {
            let info = match schemas.get(&chunk.table) {
                Some(i) => i.clone(),
                None => {
                    let i = describe_table(conn, &ctx.database, &chunk.table).await?;
                    schemas.insert(chunk.table.clone(), i.clone());
                    i
                }
            };
            let meta = Arc::new(ChunkInfo {
                id: chunk.id,
                table: info.schema.clone(),
                chunk_no: chunk.chunk_no,
                is_last: is_last(&chunk.bounds),
            });
            send(ctx, LoadItem::Start(meta.clone())).await?;
            let (tx, mut rx) = mpsc::channel::<Vec<Row>>(2);
            let forward = async {
                while let Some(rows) = rx.recv().await {
                    send(ctx, LoadItem::Rows(meta.clone(), rows)).await?;
                }
                Ok::<(), PgError>(())
            };
            let reading = async {
                let n =
                    read_chunk(conn, &info, &chunk.bounds, ctx.settings.rows_per_batch, &tx).await;
                drop(tx);
                n
            };
            let (n, forwarded) = tokio::join!(reading, forward);
            forwarded?;
            let n = n?;
            send(ctx, LoadItem::End(meta, n)).await?;
            Ok::<(), PgError>(())
        }
        .await;
        let _ = sqlx::raw_sql("COMMIT").execute(&mut *conn).await;
        read
    }
    .await;
    if result.is_err() {
        // Let another reader (or a later attempt) take it at once.
        hold(&ctx.held, chunk.id, false);
        let _ = ctx
            .store
            .release_chunk(conn, chunk.id, &ctx.settings.instance_id)
            .await;
    }
    result.map(|()| true)
}

async fn send(ctx: &ReaderContext, item: LoadItem) -> Result<(), PgError> {
    ctx.out
        .send(Ok(item))
        .await
        .map_err(|_| PgError::Protocol("the source stopped reading the snapshot".into()))
}

/// What the heartbeat task needs (not the readers' sender: the source
/// learns that reading is over when every reader has dropped its sender).
pub(crate) struct HeartbeatContext {
    pub options: PgConnectOptions,
    pub store: MetadataStore,
    pub settings: SnapshotSettings,
    pub held: HeldChunks,
    pub stop: CancellationToken,
}

/// Heartbeats every held chunk each `interval` until `stop`.
pub(crate) async fn run_heartbeat(ctx: HeartbeatContext) {
    let mut conn: Option<PgConnection> = None;
    loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tokio::time::sleep(ctx.settings.heartbeat_interval) => {}
        }
        let ids: Vec<i64> = match ctx.held.lock() {
            Ok(set) => set.iter().copied().collect(),
            Err(_) => return,
        };
        if ids.is_empty() {
            continue;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match PgConnection::connect_with(&ctx.options).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    tracing::warn!(error = %e, "snapshot heartbeat: cannot connect");
                    continue;
                }
            },
        };
        for id in ids {
            match ctx.store.heartbeat(c, id, &ctx.settings.instance_id).await {
                Ok(true) => {}
                Ok(false) if !is_held(&ctx.held, id) => {} // finished meanwhile
                Ok(false) => {
                    tracing::warn!(chunk = id, "snapshot chunk was claimed by another instance (heartbeat too late); it will be read again there");
                    hold(&ctx.held, id, false);
                }
                Err(e) => {
                    tracing::warn!(error = %cdc_core::error_chain(&e), "snapshot heartbeat failed");
                    conn = None;
                    break;
                }
            }
        }
    }
}
