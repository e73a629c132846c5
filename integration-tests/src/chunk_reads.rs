//! Reading one chunk with the snapshot reader
//! (`cdc_postgres::snapshot::read_chunk_from`) and collecting its rows,
//! for the tests of the reader itself.

use cdc_core::Row;
use cdc_postgres::catalog::RelationInfo;
use cdc_postgres::snapshot::{read_chunk_from, ChunkBounds, ReadFormat};
use sqlx::PgConnection;
use tokio::sync::mpsc;

/// The rows of `bounds` of `info`'s table read in `format`, in batches of
/// at most `rows_per_batch` (checked, as is the count the reader returns).
pub async fn read_chunk_rows(
    conn: &mut PgConnection,
    info: &RelationInfo,
    bounds: &ChunkBounds,
    format: ReadFormat,
    rows_per_batch: usize,
) -> Vec<Row> {
    let (tx, mut rx) = mpsc::channel::<Vec<Row>>(2);
    let collect = tokio::spawn(async move {
        let mut rows = Vec::new();
        while let Some(batch) = rx.recv().await {
            assert!(!batch.is_empty() && batch.len() <= rows_per_batch);
            rows.extend(batch);
        }
        rows
    });
    let name = info.schema.name.clone();
    let n = read_chunk_from(conn, info, &name, bounds, format, rows_per_batch, &tx)
        .await
        .unwrap_or_else(|e| panic!("reading {bounds:?} of {name} as {format:?}: {e}"));
    drop(tx);
    let rows = collect.await.expect("the row collector panicked");
    assert_eq!(n as usize, rows.len(), "{bounds:?} of {name}");
    rows
}
