//! Reading one chunk: `COPY (SELECT …) TO STDOUT`, each line split by the
//! COPY text parser and each value parsed by the column's [`ValueType`]
//! (the parser the replication stream uses), rows sent on in batches.

use std::borrow::Cow;

use cdc_core::{Row, Value};
use futures::TryStreamExt;
use sqlx::PgConnection;
use tokio::sync::mpsc;

use super::copy_text::{split_line, CopyField, LineAssembler};
use super::plan::ChunkBounds;
use super::query::chunk_query_from;
use crate::catalog::RelationInfo;
use crate::error::PgError;
use crate::ident::quote_table;
use crate::value::ValueType;

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
/// per batch). Returns how many rows were read.
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
    read_chunk_from(conn, table, &table.schema.name, bounds, rows_per_batch, tx).await
}

/// [`read_chunk`] of the rows of relation `from`: a partition of `table`
/// (its rows are read with `table`'s columns, as rows of `table`), or
/// `table` itself.
pub async fn read_chunk_from(
    conn: &mut PgConnection,
    table: &RelationInfo,
    from: &cdc_core::TableName,
    bounds: &ChunkBounds,
    rows_per_batch: usize,
    tx: &mpsc::Sender<Vec<Row>>,
) -> Result<u64, PgError> {
    let sql = chunk_query_from(&table.schema, from, bounds, table.row_filter.as_deref());
    let what = format!("reading a {} chunk of {}", bounds.strategy_name(), from);
    read_copy(conn, table, &sql, &what, rows_per_batch, tx).await
}

/// Runs `sql`, a `COPY (SELECT …) TO STDOUT` of `table`'s columns, and
/// sends its rows as [`read_chunk_from`] does; `what` names the read in
/// errors.
pub(crate) async fn read_copy(
    conn: &mut PgConnection,
    table: &RelationInfo,
    sql: &str,
    what: &str,
    rows_per_batch: usize,
    tx: &mpsc::Sender<Vec<Row>>,
) -> Result<u64, PgError> {
    let schema = &table.schema;
    if table.types.len() != schema.columns.len() {
        return Err(PgError::Protocol(format!(
            "{}: {} parsers for {} columns",
            schema.name,
            table.types.len(),
            schema.columns.len()
        )));
    }
    let rows_per_batch = rows_per_batch.max(1);
    let ctx = || what.to_owned();
    let mut stream = conn
        .copy_out_raw(sql)
        .await
        .map_err(|e| PgError::sql(ctx(), e))?;

    let mut lines = LineAssembler::new();
    let mut parser = LineParser::new(table);
    let mut batch: Vec<Row> = Vec::with_capacity(rows_per_batch);
    let mut total = 0u64;
    let read = async {
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| PgError::sql(ctx(), e))?
        {
            lines.push(&chunk, |line| {
                batch.push(parser.parse(line)?);
                Ok::<_, PgError>(())
            })?;
            while batch.len() >= rows_per_batch {
                let rest = batch.split_off(rows_per_batch);
                let full = std::mem::replace(&mut batch, rest);
                total += full.len() as u64;
                send(tx, full, schema).await?;
                batch.reserve(rows_per_batch.saturating_sub(batch.len()));
            }
        }
        lines
            .finish()
            .map_err(|e| PgError::Protocol(format!("COPY output of {}: {e}", schema.name)))?;
        if !batch.is_empty() {
            total += batch.len() as u64;
            send(tx, std::mem::take(&mut batch), schema).await?;
        }
        Ok::<_, PgError>(())
    }
    .await;
    if let Err(e) = read {
        // The driver cannot resume a connection whose COPY output was left
        // unread: read the rest (without parsing it) so `conn` stays usable.
        while let Ok(Some(_)) = stream.try_next().await {}
        return Err(e);
    }
    Ok(total)
}

async fn send(
    tx: &mpsc::Sender<Vec<Row>>,
    rows: Vec<Row>,
    table: &cdc_core::TableSchema,
) -> Result<(), PgError> {
    tx.send(rows).await.map_err(|_| {
        PgError::Protocol(format!(
            "snapshot of {}: the receiver of the rows has gone away",
            table.name
        ))
    })
}

/// Turns lines of COPY text output into rows, reusing its field buffer.
struct LineParser<'t> {
    table: &'t RelationInfo,
    /// Always empty between lines; kept for its allocation.
    fields: Vec<CopyField<'static>>,
}

impl<'t> LineParser<'t> {
    fn new(table: &'t RelationInfo) -> Self {
        Self {
            table,
            fields: Vec::with_capacity(table.schema.columns.len()),
        }
    }

    fn parse(&mut self, line: &[u8]) -> Result<Row, PgError> {
        let schema = &self.table.schema;
        let columns = schema.columns.len();
        if columns == 0 {
            // A row of a table without columns is an empty line.
            return if line.is_empty() {
                Ok(Row::new(Vec::new()))
            } else {
                Err(self.shape_error(1))
            };
        }
        let mut fields = recycle(std::mem::take(&mut self.fields));
        split_line(line, &mut fields)
            .map_err(|e| PgError::Protocol(format!("COPY output of {}: {e}", schema.name)))?;
        if fields.len() != columns {
            return Err(self.shape_error(fields.len()));
        }
        let mut values = Vec::with_capacity(columns);
        for ((field, column), ty) in fields.drain(..).zip(&schema.columns).zip(&self.table.types) {
            values.push(parse_field(field, ty).map_err(|source| PgError::Value {
                table: schema.name.to_string(),
                column: column.name.clone(),
                source,
            })?);
        }
        self.fields = recycle(fields);
        Ok(Row::new(values))
    }

    fn shape_error(&self, found: usize) -> PgError {
        let schema = &self.table.schema;
        PgError::Protocol(format!(
            "COPY output of {}: a line has {found} values, the table has {} columns",
            schema.name,
            schema.columns.len()
        ))
    }
}

fn parse_field(field: CopyField<'_>, ty: &ValueType) -> Result<Value, crate::value::ValueError> {
    match field {
        None => Ok(Value::Null),
        Some(bytes) => ty.parse(&bytes),
    }
}

/// An empty vector of fields of any lifetime, reusing `v`'s allocation
/// (the element types have the same layout, so collecting in place keeps
/// the buffer).
fn recycle<'a, 'b>(mut v: Vec<CopyField<'a>>) -> Vec<CopyField<'b>> {
    v.clear();
    v.into_iter().map(|_| None::<Cow<'b, [u8]>>).collect()
}
