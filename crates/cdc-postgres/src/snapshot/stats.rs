//! A table's size as the planner sees it (statistics and file size), and
//! the chunk size chosen from it when `chunk_rows` is automatic.

use cdc_core::TableSchema;
use sqlx::{PgConnection, Row};

use crate::error::PgError;

/// Rows per block assumed when the table has never been analyzed
/// (`pg_class.reltuples = -1`) or the statistics say it is empty.
pub const DEFAULT_ROWS_PER_BLOCK: u64 = 50;

/// Automatic chunks hold at least this many rows: a table smaller than
/// [`AUTO_CHUNKS_PER_WORKER`] chunks of it per worker is chunked as with
/// a fixed `chunk_rows` of this size.
pub const AUTO_MIN_CHUNK_ROWS: u64 = 10_000;

/// Automatic chunks hold at most this many rows, so a chunk read again
/// after a failure stays cheap (a fraction of a second to a few seconds).
pub const AUTO_MAX_CHUNK_ROWS: u64 = 250_000;

/// Automatic chunking gives a table at least this many chunks per worker
/// (when its chunks can be [`AUTO_MIN_CHUNK_ROWS`] or larger), so the
/// workers share it evenly to the end.
pub const AUTO_CHUNKS_PER_WORKER: u64 = 8;

/// Rows per chunk for a table of `estimated_rows` rows read by `workers`
/// readers: `estimated_rows / (workers × AUTO_CHUNKS_PER_WORKER)`, kept
/// between [`AUTO_MIN_CHUNK_ROWS`] and [`AUTO_MAX_CHUNK_ROWS`]. Each chunk
/// costs a few round trips (claim, snapshot import, lock and rewrite
/// check, `COPY`, commit, marking it done), so large tables get large
/// chunks; never so few that a worker would wait idle while another reads
/// the table's last chunks.
pub fn auto_chunk_rows(estimated_rows: f64, workers: usize) -> u64 {
    let workers = u64::try_from(workers.max(1)).unwrap_or(u64::MAX);
    let chunks = workers.saturating_mul(AUTO_CHUNKS_PER_WORKER) as f64;
    let rows = if estimated_rows.is_finite() && estimated_rows > 0.0 {
        estimated_rows
    } else {
        0.0
    };
    // Saturating float-to-int conversion.
    let per_chunk = (rows / chunks).ceil() as u64;
    per_chunk.clamp(AUTO_MIN_CHUNK_ROWS, AUTO_MAX_CHUNK_ROWS)
}

/// Size statistics of a table.
pub(super) struct TableStats {
    /// `pg_class.relpages` (as of the last VACUUM/ANALYZE).
    pub(super) relpages: f64,
    /// `pg_class.reltuples`, `-1` when never analyzed.
    pub(super) reltuples: f64,
    /// The current number of blocks, from the relation's file size.
    pub(super) blocks: u64,
}

impl TableStats {
    /// Live rows per block, from the statistics when they are usable.
    pub(super) fn rows_per_block(&self) -> f64 {
        if self.reltuples > 0.0 && self.relpages > 0.0 {
            (self.reltuples / self.relpages).max(1.0)
        } else {
            DEFAULT_ROWS_PER_BLOCK as f64
        }
    }

    /// Estimated rows now: statistics' density times the current size.
    pub(super) fn estimated_rows(&self) -> f64 {
        self.rows_per_block() * self.blocks as f64
    }
}

pub(super) async fn table_stats(conn: &mut PgConnection, table: &TableSchema) -> Result<TableStats, PgError> {
    let row = sqlx::query(
        "SELECT c.relpages::pg_catalog.float8 AS relpages,
                c.reltuples::pg_catalog.float8 AS reltuples,
                (pg_catalog.pg_relation_size(c.oid)
                 / pg_catalog.current_setting('block_size')::pg_catalog.int8) AS blocks
         FROM pg_catalog.pg_class c WHERE c.oid = $1",
    )
    .bind(i64::from(table.oid))
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| PgError::sql(format!("reading the size of {}", table.name), e))?
    .ok_or_else(|| {
        PgError::Setup(format!(
            "table {} (oid {}) no longer exists",
            table.name, table.oid
        ))
    })?;
    let get = |name: &str| -> Result<f64, PgError> {
        row.try_get(name)
            .map_err(|e| PgError::sql(format!("reading the size of {}", table.name), e))
    };
    let blocks: i64 = row
        .try_get("blocks")
        .map_err(|e| PgError::sql(format!("reading the size of {}", table.name), e))?;
    Ok(TableStats {
        relpages: get("relpages")?,
        reltuples: get("reltuples")?,
        blocks: u64::try_from(blocks).unwrap_or(0),
    })
}

/// The estimated number of rows of `table` (not of its partitions) now:
/// the statistics' rows per block (or [`DEFAULT_ROWS_PER_BLOCK`]) times
/// its current number of blocks. Reads the catalog under the caller's
/// snapshot.
pub async fn estimated_rows(conn: &mut PgConnection, table: &TableSchema) -> Result<f64, PgError> {
    Ok(table_stats(conn, table).await?.estimated_rows())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_chunks_grow_with_the_table_within_bounds() {
        // Small tables: chunks as with the former fixed default.
        assert_eq!(auto_chunk_rows(0.0, 4), AUTO_MIN_CHUNK_ROWS);
        assert_eq!(auto_chunk_rows(-1.0, 4), AUTO_MIN_CHUNK_ROWS);
        assert_eq!(auto_chunk_rows(f64::NAN, 4), AUTO_MIN_CHUNK_ROWS);
        assert_eq!(auto_chunk_rows(300_000.0, 4), AUTO_MIN_CHUNK_ROWS);
        // 1M rows: 8 chunks per worker.
        assert_eq!(auto_chunk_rows(1_000_000.0, 1), 125_000);
        assert_eq!(auto_chunk_rows(1_000_000.0, 2), 62_500);
        assert_eq!(auto_chunk_rows(1_000_000.0, 4), 31_250);
        // Huge tables: bounded, so a chunk read again stays cheap.
        assert_eq!(auto_chunk_rows(1e12, 1), AUTO_MAX_CHUNK_ROWS);
        assert_eq!(auto_chunk_rows(f64::INFINITY, 1), AUTO_MIN_CHUNK_ROWS);
        // No workers counts as one.
        assert_eq!(auto_chunk_rows(1_000_000.0, 0), 125_000);
    }

    #[test]
    fn a_large_table_has_at_least_eight_chunks_per_worker() {
        for workers in 1..=64usize {
            for rows in [2e5, 1e6, 5e6, 2e7, 1e8] {
                let per_chunk = auto_chunk_rows(rows, workers) as f64;
                let chunks = (rows / per_chunk).ceil() as u64;
                let enough = (rows / AUTO_MIN_CHUNK_ROWS as f64) as u64;
                let want = (workers as u64 * AUTO_CHUNKS_PER_WORKER).min(enough);
                assert!(
                    chunks >= want,
                    "{rows} rows, {workers} workers: {chunks} chunks of {per_chunk}"
                );
            }
        }
    }
}
