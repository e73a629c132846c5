//! Planning the snapshot: every table's chunks, planned under the
//! exported snapshot and recorded in one transaction.

use std::sync::Arc;

use cdc_core::Lsn;
use sqlx::{Connection, PgConnection};

use super::export::import_snapshot;
use super::request::SnapshotRequest;
use super::settings::{ChunkRows, Chunking};
use crate::conn::for_role;
use crate::error::PgError;
use crate::snapshot::{
    describe_published_table, estimated_rows, has_rows, leaf_partitions, plan_chunks, ChunkBounds,
    ChunkPartition, ChunkStrategy, JobState, MetadataStore, PlannedChunk,
};

/// How a table is cut: the strategies allowed, the chunk size, and the
/// workers an automatic size is made for.
#[derive(Debug, Clone, Copy)]
struct Cutting {
    chunking: Chunking,
    chunk_rows: ChunkRows,
    workers: usize,
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
    cutting: Cutting,
) -> Result<Vec<PlannedChunk>, PgError> {
    let Some(leaves) = leaf_partitions(conn, &info.schema).await? else {
        let bounds = plan_relation(conn, info, cutting).await?;
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
            row_filter: info.row_filter.clone(),
            wire: None,
        };
        let bounds = plan_relation(conn, &leaf_info, cutting).await?;
        tracing::debug!(table = %info.schema.name, partition = %leaf.name, chunks = bounds.len(), "planned the chunks of a partition");
        out.extend(bounds.into_iter().map(|bounds| PlannedChunk {
            partition: Some(partition.clone()),
            bounds,
        }));
    }
    match out.last_mut().and_then(|c| c.partition.as_mut()) {
        Some(last) => last.last = true,
        None => {
            let ctid = Cutting {
                chunking: Chunking::Ctid,
                ..cutting
            };
            let bounds = plan_relation(conn, info, ctid).await?;
            out = bounds.into_iter().map(PlannedChunk::from).collect();
        }
    }
    Ok(out)
}

/// Plans one relation with the strategies `cutting` allows, in chunks of
/// the size it asks for (an automatic size from the relation's estimated
/// rows).
async fn plan_relation(
    conn: &mut PgConnection,
    info: &crate::catalog::RelationInfo,
    cutting: Cutting,
) -> Result<Vec<ChunkBounds>, PgError> {
    let chunk_rows = match cutting.chunk_rows {
        ChunkRows::Auto => {
            let rows = estimated_rows(conn, &info.schema).await?;
            let size = cutting.chunk_rows.for_table(rows, cutting.workers);
            tracing::debug!(table = %info.schema.name, estimated_rows = rows, chunk_rows = size, "sized the chunks");
            size
        }
        fixed => fixed.for_table(0.0, cutting.workers),
    };
    let candidates: &[ChunkStrategy] = match cutting.chunking {
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

/// Plans every table of `req` under snapshot `name` and records the job
/// (at `lsn`) and its chunks in one transaction, so a crash leaves either
/// a complete plan or none.
pub(super) async fn record_plan(
    store: &MetadataStore,
    meta: &mut PgConnection,
    req: &SnapshotRequest,
    name: &str,
    lsn: Lsn,
) -> Result<(), PgError> {
    let SnapshotRequest {
        options,
        slot,
        settings,
        tables,
        server,
        publication,
        local_subsets,
        ..
    } = req;
    let slot = slot.as_str();
    let mut reader = PgConnection::connect_with(&for_role(options, "plan"))
        .await
        .map_err(|e| PgError::sql("connecting to plan the snapshot", e))?;
    import_snapshot(&mut reader, name).await?;
    let mut plans = Vec::with_capacity(tables.len());
    for table in tables {
        let info = describe_published_table(
            &mut reader,
            &server.database,
            table,
            publication,
            local_subsets,
        )
        .await?;
        let cutting = Cutting {
            chunking: settings.chunking,
            chunk_rows: settings.chunk_rows,
            workers: settings.workers,
        };
        let bounds = plan_table(&mut reader, &info, cutting).await?;
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
