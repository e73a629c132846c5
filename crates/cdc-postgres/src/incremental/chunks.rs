//! The chunks of an incremental snapshot: the key a table is walked by,
//! and the read of the next chunk after a given key
//! (`WHERE (key) > (last) ORDER BY key LIMIT n`), parsed by the snapshot's
//! COPY reader so a read renders exactly like a streamed row.

use std::sync::Arc;

use cdc_core::{Column, Row, TableSchema, Value};
use sqlx::{PgConnection, Row as _};
use tokio::sync::mpsc;

use super::filter::filter_condition;
use crate::catalog::RelationInfo;
use crate::error::PgError;
use crate::ident::{quote_ident, quote_table};
use crate::snapshot::{read_copy, row_value, string_literal, ReadFormat};
use crate::value::{ScalarKind, ValueType};

/// The unique indexes of a table usable as a chunk key: valid, not
/// partial, no expressions; with their key columns in index order and
/// whether every one is `NOT NULL`. The primary key first, then the
/// replica identity index, then the narrowest.
const KEY_QUERY: &str = "\
SELECT pg_catalog.array_agg(a.attname::pg_catalog.text ORDER BY k.ord) AS columns,
       pg_catalog.bool_and(a.attnotnull) AS not_null
FROM pg_catalog.pg_index i
CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::pg_catalog.int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = $1::pg_catalog.oid AND i.indisunique AND i.indisvalid
  AND i.indpred IS NULL AND i.indexprs IS NULL AND k.ord <= i.indnkeyatts
GROUP BY i.indexrelid, i.indisprimary, i.indisreplident
ORDER BY i.indisprimary DESC, i.indisreplident DESC, pg_catalog.count(*), i.indexrelid";

/// The columns a table's chunks are walked by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkKey {
    /// Column names, in index order.
    pub columns: Vec<String>,
    /// Their positions among the table's (streamed) columns.
    pub positions: Vec<usize>,
}

/// The key of `table`: its primary key, else a unique index on `NOT NULL`
/// columns (the replica identity index first). A table with neither is
/// refused, naming it.
pub(crate) async fn choose_key(
    conn: &mut PgConnection,
    table: &TableSchema,
) -> Result<ChunkKey, PgError> {
    let ctx = |e| PgError::sql(format!("looking up the key of {}", table.name), e);
    let rows = sqlx::query(KEY_QUERY)
        .bind(i64::from(table.oid))
        .fetch_all(&mut *conn)
        .await
        .map_err(ctx)?;
    for row in rows {
        let columns: Vec<String> = row.try_get("columns").map_err(ctx)?;
        let not_null: bool = row.try_get("not_null").map_err(ctx)?;
        if !not_null {
            continue;
        }
        let positions: Option<Vec<usize>> = columns.iter().map(|c| table.column_index(c)).collect();
        // A key column that is not streamed (generated) cannot be matched
        // with the stream's rows.
        if let Some(positions) = positions {
            return Ok(ChunkKey { columns, positions });
        }
    }
    Err(PgError::Setup(format!(
        "table {} cannot be snapshotted incrementally: it has neither a primary key nor a \
         unique index on NOT NULL columns (its chunks are walked by such a key); add one, \
         or take a full snapshot of it",
        table.name
    )))
}

/// The rows of one chunk, in key order, and the key of its last row as
/// text (the lower bound of the next chunk; `None` when the chunk is
/// empty).
#[derive(Debug)]
pub(crate) struct ChunkRows {
    pub rows: Vec<Row>,
    pub last_key: Option<Vec<String>>,
}

/// `COPY (SELECT <columns>, <key>::text … FROM t WHERE (key) > (after)
/// ORDER BY key LIMIT limit) TO STDOUT`: identifiers quoted, the bound as
/// untyped literals (each read by its key column's input function); only
/// rows matching `row_filter` (a publication's row filter as the server
/// deparsed it) and `filter` (the snapshot's, checked by
/// [`check_filter_text`](super::filter::check_filter_text)) when given.
pub(crate) fn chunk_sql(
    table: &TableSchema,
    key: &ChunkKey,
    after: Option<&[String]>,
    row_filter: Option<&str>,
    filter: Option<&str>,
    limit: u64,
) -> String {
    // Every column is qualified by the table's alias `c`: the key's text
    // columns carry the key columns' names too, and a bare name in ORDER BY
    // would be ambiguous between them.
    let column = |name: &str| format!("c.{}", quote_ident(name));
    let mut sql = String::from("COPY (SELECT ");
    for (i, c) in table.columns.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&column(&c.name));
    }
    for c in &key.columns {
        sql.push_str(", ");
        sql.push_str(&column(c));
        sql.push_str("::pg_catalog.text");
    }
    sql.push_str(" FROM ");
    sql.push_str(&quote_table(&table.name));
    sql.push_str(" AS c");
    let mut conditions = Vec::new();
    if let Some(after) = after {
        conditions.push(format!(
            "{} > {}",
            row_value(key.columns.iter().map(|c| column(c))),
            row_value(after.iter().map(|v| string_literal(v)))
        ));
    }
    if let Some(row_filter) = row_filter {
        conditions.push(format!("({row_filter})"));
    }
    if let Some(filter) = filter {
        conditions.push(filter_condition(filter));
    }
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(" ORDER BY ");
    for (i, c) in key.columns.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&column(c));
    }
    sql.push_str(&format!(" LIMIT {limit}) TO STDOUT"));
    sql
}

/// Reads the chunk after `after` (at most `limit` rows) of `table` on
/// `conn`, in the caller's transaction.
pub(crate) async fn read_chunk(
    conn: &mut PgConnection,
    table: &RelationInfo,
    key: &ChunkKey,
    after: Option<&[String]>,
    filter: Option<&str>,
    limit: u64,
) -> Result<ChunkRows, PgError> {
    // The table's columns, then the key's text: parsed by one COPY reader.
    let mut columns = table.schema.columns.clone();
    let mut types = table.types.clone();
    for c in &key.columns {
        columns.push(Column {
            name: format!("{c} (key text)"),
            type_oid: 25,
            type_name: "text".into(),
            type_modifier: -1,
            nullable: false,
            is_key: false,
        });
        types.push(ValueType::scalar(ScalarKind::Text));
    }
    let wide = RelationInfo {
        schema: Arc::new(TableSchema {
            columns,
            ..(*table.schema).clone()
        }),
        types,
        row_filter: None,
        wire: None,
    };
    let sql = chunk_sql(
        &table.schema,
        key,
        after,
        table.row_filter.as_deref(),
        filter,
        limit,
    );
    let what = format!(
        "reading an incremental snapshot chunk of {}",
        table.schema.name
    );
    // One batch holds the whole chunk (`LIMIT limit`): the channel never
    // fills, and the rows are collected once the COPY is done.
    let per_batch = usize::try_from(limit).unwrap_or(usize::MAX).max(1);
    let (tx, mut rx) = mpsc::channel(2);
    read_copy(conn, &wide, ReadFormat::Text, &sql, &what, per_batch, &tx).await?;
    drop(tx);
    let mut wide_rows = Vec::new();
    while let Some(rows) = rx.recv().await {
        wide_rows.extend(rows);
    }
    let width = table.schema.columns.len();
    let mut last_key = None;
    let mut rows = Vec::with_capacity(wide_rows.len());
    for row in wide_rows {
        let mut values = row.into_values();
        let key_text = values.split_off(width.min(values.len()));
        let texts: Option<Vec<String>> = key_text
            .into_iter()
            .map(|v| match v {
                Value::Text(t) => Some(t.into()),
                _ => None,
            })
            .collect();
        last_key = Some(texts.ok_or_else(|| {
            PgError::Protocol(format!("{what}: a key value is NULL or not text"))
        })?);
        rows.push(Row::new(values));
    }
    Ok(ChunkRows { rows, last_key })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use cdc_core::{ReplicaIdentity, TableName};

    use super::*;

    #[test]
    fn the_chunk_query_walks_the_key_with_quoted_names_and_literals() {
        let col = |name: &str| Column {
            name: name.into(),
            type_oid: 23,
            type_name: "int4".into(),
            type_modifier: -1,
            nullable: false,
            is_key: true,
        };
        let t = TableSchema {
            database: "db".into(),
            oid: 1,
            name: TableName::new("S", "t\"x"),
            columns: vec![col("a"), col("b c")],
            replica_identity: ReplicaIdentity::Default,
        };
        let one = ChunkKey {
            columns: vec!["a".into()],
            positions: vec![0],
        };
        assert_eq!(
            chunk_sql(&t, &one, None, None, None, 100),
            "COPY (SELECT c.\"a\", c.\"b c\", c.\"a\"::pg_catalog.text FROM \"S\".\"t\"\"x\" AS c \
             ORDER BY c.\"a\" LIMIT 100) TO STDOUT"
        );
        let two = ChunkKey {
            columns: vec!["a".into(), "b c".into()],
            positions: vec![0, 1],
        };
        assert_eq!(
            chunk_sql(
                &t,
                &two,
                Some(&["1".into(), "it's".into()]),
                Some("(b > 1)"),
                Some("a < 9 -- note"),
                5
            ),
            "COPY (SELECT c.\"a\", c.\"b c\", c.\"a\"::pg_catalog.text, c.\"b c\"::pg_catalog.text \
             FROM \"S\".\"t\"\"x\" AS c WHERE ROW(c.\"a\", c.\"b c\") > ROW('1', 'it''s') \
             AND ((b > 1)) AND (a < 9 -- note\n) ORDER BY c.\"a\", c.\"b c\" LIMIT 5) TO STDOUT"
        );
    }
}
