//! The connection a reader reads a chunk's rows on: its own COPY
//! connection ([`CopyConn`]) when it has one, else the driver's.
//!
//! The chunk's transaction (the snapshot import, the lock and rewrite
//! check, the COPY, the commit) runs on that one connection. Describing a
//! table and the chunk claims stay on the driver's connection.

use cdc_core::{Row, TableName};
use sqlx::PgConnection;
use tokio::sync::mpsc;

use super::export::{import_and_check_sql, import_snapshot_and_check, snapshot_gone};
use crate::catalog::RelationInfo;
use crate::error::PgError;
use crate::snapshot::{
    heap_files_text, read_chunk_from, read_chunk_own, rewrite_check_context, ChunkBounds, CopyConn,
    HeapFiles, ReadFormat,
};

/// Where a chunk is read.
pub(crate) enum ChunkConn<'a> {
    /// The driver's connection (also the one claims are made on).
    Driver(&'a mut PgConnection),
    /// The reader's own COPY connection.
    Own(&'a mut CopyConn),
}

impl ChunkConn<'_> {
    /// Begins the chunk's transaction under the exported snapshot `name`
    /// and runs the rewrite check of `table` in it, in one round trip (as
    /// [`import_snapshot_and_check`]). On an error no transaction is left
    /// open.
    pub(crate) async fn import_and_check(
        &mut self,
        name: &str,
        table: &cdc_core::TableSchema,
    ) -> Result<HeapFiles, PgError> {
        let conn = match self {
            ChunkConn::Driver(conn) => return import_snapshot_and_check(conn, name, table).await,
            ChunkConn::Own(conn) => conn,
        };
        let sql = import_and_check_sql(name, table);
        let context = rewrite_check_context(table);
        let result = conn.simple_query(&sql, &context).await?;
        let Some(e) = result.error else {
            return heap_files_text(result.first_row.as_deref(), table);
        };
        if result.completed > 0 {
            conn.simple_query("ROLLBACK", "rolling back a snapshot transaction")
                .await?;
        }
        // Statements completed: BEGIN, SET TRANSACTION SNAPSHOT, LOCK, the check.
        Err(if result.completed == 1 {
            snapshot_gone(name, cdc_core::error_chain(&e))
        } else {
            e
        })
    }

    /// Reads the rows of `bounds` from `from` (`table` or one of its
    /// partitions) in `format` and sends them through `tx`, as
    /// [`read_chunk_from`].
    pub(crate) async fn read(
        &mut self,
        table: &RelationInfo,
        from: &TableName,
        bounds: &ChunkBounds,
        format: ReadFormat,
        rows_per_batch: usize,
        tx: &mpsc::Sender<Vec<Row>>,
    ) -> Result<u64, PgError> {
        match self {
            ChunkConn::Driver(conn) => {
                read_chunk_from(conn, table, from, bounds, format, rows_per_batch, tx).await
            }
            ChunkConn::Own(conn) => {
                read_chunk_own(conn, table, from, bounds, format, rows_per_batch, tx).await
            }
        }
    }

    /// Ends the chunk's transaction (it only read).
    pub(crate) async fn commit(&mut self) -> Result<(), PgError> {
        match self {
            ChunkConn::Driver(conn) => sqlx::raw_sql("COMMIT")
                .execute(&mut **conn)
                .await
                .map(drop)
                .map_err(|e| PgError::sql("ending a snapshot transaction", e)),
            ChunkConn::Own(conn) => {
                let result = conn
                    .simple_query("COMMIT", "ending a snapshot transaction")
                    .await?;
                result.error.map_or(Ok(()), Err)
            }
        }
    }
}
