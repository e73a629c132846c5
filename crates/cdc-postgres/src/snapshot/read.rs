//! Reading one chunk: `COPY (SELECT …) TO STDOUT`, in binary or text
//! format ([`ReadFormat`]), each value decoded into the value the
//! replication stream gives for it, rows sent on in batches.

use cdc_core::{Row, RowsBuilder};
use futures::TryStreamExt;
use sqlx::PgConnection;
use tokio::sync::mpsc;

use super::copy_conn::{ConnectError, CopyConn, CopyTarget};
use super::decode::RowDecoder;
use super::format::{CopyFormat, ReadFormat};
use super::plan::ChunkBounds;
use super::query::chunk_query_from;
use crate::catalog::RelationInfo;
use crate::error::PgError;
use crate::ident::quote_table;

/// Takes `ACCESS SHARE` on `table` (and, as `LOCK TABLE` does, on its
/// partitions and inheritance children) for the rest of the caller's
/// snapshot transaction, and tells whether any of them was rewritten after
/// the transaction's snapshot was taken: one round trip, to be run right
/// before [`read_chunk`] on the same transaction. Also returns the files
/// read ([`HeapFiles::files`]), for the chunks of one table to be checked
/// against each other once they are done.
///
/// `ALTER TABLE … TYPE`, `VACUUM FULL`, `CLUSTER`, pg_repack and
/// `TRUNCATE` give a table a new file (`relfilenode`) and hold `ACCESS
/// EXCLUSIVE` until they commit. A scan always reads the current file, so
/// under a snapshot taken before such a rewrite it finds the rows with the
/// rewriting transaction's id (invisible: the table looks empty), or rows
/// at other block numbers (`VACUUM FULL`, `CLUSTER`). The check compares,
/// for the table and every table below it, `pg_class.relfilenode` as the
/// snapshot sees it (an ordinary query on the catalog reads it under the
/// transaction snapshot) with `pg_relation_filenode()` (the current
/// catalog, read after the lock made this session process the rewrite's
/// invalidations). Once the lock is held no rewrite can commit before the
/// transaction ends: a rewrite that committed earlier is seen here; one
/// that comes later waits for this transaction, whose read of the old
/// file is then complete.
pub async fn rewritten_since_snapshot(
    conn: &mut PgConnection,
    table: &cdc_core::TableSchema,
) -> Result<HeapFiles, PgError> {
    let sql = rewrite_check_sql(table);
    let row = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| PgError::sql(rewrite_check_context(table), e))?;
    heap_files(row.as_ref(), table)
}

/// The statements of [`rewritten_since_snapshot`] (`LOCK TABLE …;` and a
/// query returning one row), for sending after others in one message.
pub(crate) fn rewrite_check_sql(table: &cdc_core::TableSchema) -> String {
    // The OID is a number from the catalog, the name is quoted.
    format!(
        "LOCK TABLE {name} IN ACCESS SHARE MODE;
         WITH RECURSIVE tree(oid) AS (
             SELECT {oid}::pg_catalog.oid
             UNION
             SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.oid)
         SELECT (pg_catalog.count(*) FILTER (
                    WHERE c.relfilenode IS DISTINCT FROM pg_catalog.pg_relation_filenode(c.oid)
                ))::pg_catalog.int8 AS rewritten,
                COALESCE(pg_catalog.string_agg(
                    c.oid::pg_catalog.text || ':'
                        || COALESCE(pg_catalog.pg_relation_filenode(c.oid)::pg_catalog.text, '-'),
                    ',' ORDER BY c.oid), '') AS files
         FROM tree JOIN pg_catalog.pg_class c ON c.oid = tree.oid
         WHERE c.relkind = 'r'",
        name = quote_table(&table.name),
        oid = table.oid
    )
}

/// Names the rewrite check of `table` in errors.
pub(crate) fn rewrite_check_context(table: &cdc_core::TableSchema) -> String {
    format!("checking {} for a rewrite", table.name)
}

/// What the row of [`rewrite_check_sql`] says (`None`: no row came).
pub(crate) fn heap_files(
    row: Option<&sqlx::postgres::PgRow>,
    table: &cdc_core::TableSchema,
) -> Result<HeapFiles, PgError> {
    let ctx = || rewrite_check_context(table);
    let row = row.ok_or_else(|| {
        PgError::Protocol(format!("{}: the rewrite check returned no row", ctx()))
    })?;
    let rewritten: i64 =
        sqlx::Row::try_get(row, "rewritten").map_err(|e| PgError::sql(ctx(), e))?;
    let files: String = sqlx::Row::try_get(row, "files").map_err(|e| PgError::sql(ctx(), e))?;
    Ok(HeapFiles {
        rewritten: rewritten > 0,
        files,
    })
}

/// What the row of [`rewrite_check_sql`] says, read as text (by the
/// reader's own COPY connection; `None`: no row came).
pub(crate) fn heap_files_text(
    row: Option<&[Option<String>]>,
    table: &cdc_core::TableSchema,
) -> Result<HeapFiles, PgError> {
    let bad = |what: &str| {
        PgError::Protocol(format!(
            "{}: the rewrite check returned {what}",
            rewrite_check_context(table)
        ))
    };
    let Some([Some(rewritten), Some(files)]) = row else {
        return Err(bad("no row, or not the two values expected"));
    };
    let rewritten: i64 = rewritten
        .parse()
        .map_err(|_| bad(&format!("the count {rewritten:?}")))?;
    Ok(HeapFiles {
        rewritten: rewritten > 0,
        files: files.clone(),
    })
}

/// What [`rewritten_since_snapshot`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeapFiles {
    /// The table, or one below it, has another file now than the one the
    /// snapshot sees.
    pub rewritten: bool,
    /// The files read, `oid:relfilenode` of the table and each table below
    /// it, in OID order. Two reads of the table that name other files
    /// read different generations of it (a rewrite came between them,
    /// even when each read was consistent with its own snapshot).
    pub files: String,
}

/// Reads the rows of `bounds` from `table` and sends them through `tx` in
/// batches of `rows_per_batch` rows (the last one smaller; at least 1 row
/// per batch). Returns how many rows were read. Reads in binary when every
/// column has a binary decoder ([`CopyFormat::Auto`]).
///
/// Runs on the caller's transaction: to read under an exported snapshot,
/// begin `ISOLATION LEVEL REPEATABLE READ, READ ONLY` and `SET TRANSACTION
/// SNAPSHOT` on `conn` first. The connection must have the pinned session
/// settings ([`crate::conn::PINNED_SETTINGS`]) so values render as the
/// stream renders them.
///
/// Memory stays bounded: rows are parsed as the server sends them and at
/// most one batch (plus the rows of one network chunk) is held; a full
/// channel slows the COPY down.
///
/// Errors: a value that does not parse, malformed COPY output, or a
/// dropped receiver stop the read; the rest of the chunk's COPY output is
/// then read and discarded, so `conn` (and its transaction) stays usable.
/// Cancel safety: dropping the future while the COPY runs leaves `conn`
/// unusable (the driver cannot skip unread COPY data); close it.
pub async fn read_chunk(
    conn: &mut PgConnection,
    table: &RelationInfo,
    bounds: &ChunkBounds,
    rows_per_batch: usize,
    tx: &mpsc::Sender<Vec<Row>>,
) -> Result<u64, PgError> {
    let format = CopyFormat::Auto.for_table(&table.schema);
    read_chunk_from(
        conn,
        table,
        &table.schema.name,
        bounds,
        format,
        rows_per_batch,
        tx,
    )
    .await
}

/// [`read_chunk`] of the rows of relation `from` (a partition of `table`,
/// its rows read with `table`'s columns, as rows of `table`; or `table`
/// itself), in `format`.
pub async fn read_chunk_from(
    conn: &mut PgConnection,
    table: &RelationInfo,
    from: &cdc_core::TableName,
    bounds: &ChunkBounds,
    format: ReadFormat,
    rows_per_batch: usize,
    tx: &mpsc::Sender<Vec<Row>>,
) -> Result<u64, PgError> {
    let (sql, what) = chunk_copy(table, from, bounds, format);
    read_copy(conn, table, format, &sql, &what, rows_per_batch, tx).await
}

/// The `COPY` of the rows of `bounds` from `from` in `format`, and how
/// errors name the read.
fn chunk_copy(
    table: &RelationInfo,
    from: &cdc_core::TableName,
    bounds: &ChunkBounds,
    format: ReadFormat,
) -> (String, String) {
    let sql = chunk_query_from(
        &table.schema,
        from,
        bounds,
        table.row_filter.as_deref(),
        format,
    );
    let what = format!("reading a {} chunk of {}", bounds.strategy_name(), from);
    (sql, what)
}

/// Runs `sql`, a `COPY (SELECT …) TO STDOUT` of `table`'s columns in
/// `format`, and sends its rows as [`read_chunk_from`] does; `what` names
/// the read in errors.
pub(crate) async fn read_copy(
    conn: &mut PgConnection,
    table: &RelationInfo,
    format: ReadFormat,
    sql: &str,
    what: &str,
    rows_per_batch: usize,
    tx: &mpsc::Sender<Vec<Row>>,
) -> Result<u64, PgError> {
    // Before the COPY starts: an error here leaves `conn` as it was.
    let mut rows = Batcher::new(table, format, conn.server_version_num(), rows_per_batch, tx)?;
    let ctx = || what.to_owned();
    let mut stream = conn
        .copy_out_raw(sql)
        .await
        .map_err(|e| PgError::sql(ctx(), e))?;
    let read = async {
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| PgError::sql(ctx(), e))?
        {
            rows.push(&chunk).await?;
        }
        rows.finish().await
    }
    .await;
    if read.is_err() {
        // The driver cannot resume a connection whose COPY output was left
        // unread: read the rest (without parsing it) so `conn` stays usable.
        while let Ok(Some(_)) = stream.try_next().await {}
    }
    read
}

/// [`read_chunk_from`] on the reader's own COPY connection
/// ([`CopyConn`]): each `CopyData` message is decoded where it was read.
/// After an error the rest of the COPY is read and discarded when the
/// connection still works; the caller should close it all the same.
pub(crate) async fn read_chunk_own(
    conn: &mut CopyConn,
    table: &RelationInfo,
    from: &cdc_core::TableName,
    bounds: &ChunkBounds,
    format: ReadFormat,
    rows_per_batch: usize,
    tx: &mpsc::Sender<Vec<Row>>,
) -> Result<u64, PgError> {
    let (sql, what) = chunk_copy(table, from, bounds, format);
    let version = conn.server_version_num();
    let mut rows = Batcher::new(table, format, version, rows_per_batch, tx)?;
    conn.copy_out(&sql, &what).await?;
    let read = async {
        while let Some(chunk) = conn.copy_data(&what).await? {
            rows.push(chunk).await?;
        }
        rows.finish().await
    }
    .await;
    if read.is_err() {
        while let Ok(Some(_)) = conn.copy_data(&what).await {}
    }
    read
}

/// A connection of its own for reading chunks, as the snapshot's readers
/// do by default: it speaks the protocol directly, reads the server's
/// output in large reads and decodes each row where it was read. Connects
/// over TCP (optionally TLS) with a password or SCRAM-SHA-256, or to a
/// server that trusts the client; for other setups use [`read_chunk_from`]
/// on a driver connection.
pub struct ChunkConnection(CopyConn);

impl ChunkConnection {
    /// Connects to `url` (`postgres://user:password@host:port/database`,
    /// with `sslmode` and `sslrootcert` as for the source) with the pinned
    /// session settings, as `application_name`.
    pub async fn connect(url: &str, application_name: &str) -> Result<Self, PgError> {
        let params = crate::conn::ConnParams::parse(url)?;
        let cfg = crate::replication::PgWireTransport::replication_config(&params, "", "");
        let target = CopyTarget::of_replication(&cfg, application_name.to_owned()).ok_or_else(
            || PgError::InvalidUrl("a Unix-domain socket: use a driver connection".into()),
        )?;
        match CopyConn::connect(&target).await {
            Ok(conn) => Ok(Self(conn)),
            Err(ConnectError::Failed(e)) => Err(e),
            Err(ConnectError::Unsupported(what)) => Err(PgError::Setup(format!(
                "the server asks for {what}, which this connection does not speak"
            ))),
        }
    }

    /// [`read_chunk_from`] on this connection (outside any transaction, or
    /// inside the one begun by a statement sent before).
    pub async fn read_chunk_from(
        &mut self,
        table: &RelationInfo,
        from: &cdc_core::TableName,
        bounds: &ChunkBounds,
        format: ReadFormat,
        rows_per_batch: usize,
        tx: &mpsc::Sender<Vec<Row>>,
    ) -> Result<u64, PgError> {
        read_chunk_own(&mut self.0, table, from, bounds, format, rows_per_batch, tx).await
    }

    /// Ends the session.
    pub async fn close(self) {
        self.0.close().await;
    }
}

/// Decodes COPY data into rows and sends them on in batches of
/// `rows_per_batch` (the last one smaller).
struct Batcher<'a> {
    decoder: RowDecoder<'a>,
    /// Rows decoded and not yet in `batch`: moved there together, they
    /// share their memory in blocks.
    decoded: RowsBuilder,
    batch: Vec<Row>,
    rows_per_batch: usize,
    total: u64,
    tx: &'a mpsc::Sender<Vec<Row>>,
    table: &'a RelationInfo,
}

impl<'a> Batcher<'a> {
    fn new(
        table: &'a RelationInfo,
        format: ReadFormat,
        server_version_num: Option<u32>,
        rows_per_batch: usize,
        tx: &'a mpsc::Sender<Vec<Row>>,
    ) -> Result<Self, PgError> {
        let rows_per_batch = rows_per_batch.max(1);
        Ok(Self {
            decoder: RowDecoder::new(table, format, server_version_num)?,
            decoded: RowsBuilder::new(),
            batch: Vec::with_capacity(rows_per_batch),
            rows_per_batch,
            total: 0,
            tx,
            table,
        })
    }

    /// Decodes `chunk` (COPY data cut anywhere) and sends full batches.
    async fn push(&mut self, chunk: &[u8]) -> Result<(), PgError> {
        self.decoder.push(chunk, &mut self.decoded)?;
        if self.batch.len() + self.decoded.rows() < self.rows_per_batch {
            return Ok(());
        }
        self.decoded.finish_into(&mut self.batch);
        while self.batch.len() >= self.rows_per_batch {
            let rest = self.batch.split_off(self.rows_per_batch);
            let full = std::mem::replace(&mut self.batch, rest);
            self.send(full).await?;
            self.batch
                .reserve(self.rows_per_batch.saturating_sub(self.batch.len()));
        }
        Ok(())
    }

    /// Checks that the COPY data ended at a row's end, sends the last
    /// batch and returns how many rows were sent.
    async fn finish(&mut self) -> Result<u64, PgError> {
        self.decoder.finish()?;
        self.decoded.finish_into(&mut self.batch);
        if !self.batch.is_empty() {
            let last = std::mem::take(&mut self.batch);
            self.send(last).await?;
        }
        Ok(self.total)
    }

    async fn send(&mut self, rows: Vec<Row>) -> Result<(), PgError> {
        let n = rows.len() as u64;
        self.tx.send(rows).await.map_err(|_| {
            PgError::Protocol(format!(
                "snapshot of {}: the receiver of the rows has gone away",
                self.table.schema.name
            ))
        })?;
        self.total += n;
        Ok(())
    }
}
