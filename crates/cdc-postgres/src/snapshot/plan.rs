//! Splitting a table into chunks that can be read independently (the
//! `COPY` statement that reads one is built in [`super::query`]). Never
//! `LIMIT/OFFSET`: every chunk is a range of physical blocks or of key
//! values, so reading it costs the same wherever it lies in the table.

use cdc_core::{TableName, TableSchema};
use sqlx::{PgConnection, Row};

use crate::catalog::RelationInfo;
use crate::error::PgError;
use crate::ident::{quote_ident, quote_table};
use super::stats::table_stats;
use crate::value::ScalarKind;

/// At most this many chunks per table from integer-key planning, however
/// sparse the keys are compared with the row estimate.
pub const MAX_INT_KEY_CHUNKS: u64 = 100_000;

/// The rows of one chunk of a table.
///
/// Every planned set of chunks covers the whole table with no overlap: each
/// row falls in exactly one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChunkBounds {
    /// Rows stored in heap blocks `[start_block, end_block)`; `end_block`
    /// `None` for the last, open-ended range (so rows in blocks added after
    /// planning are not missed).
    Ctid {
        /// First block, inclusive.
        start_block: u32,
        /// Block after the last one, exclusive; `None` = to the end.
        end_block: Option<u32>,
    },
    /// Rows whose single integer key is in `[start, end)`; `None` =
    /// unbounded on that side.
    IntKey {
        /// The key column.
        column: String,
        /// Inclusive lower bound.
        start: Option<i64>,
        /// Exclusive upper bound.
        end: Option<i64>,
    },
    /// Rows whose key, compared as a row value in the key's index order, is
    /// in `[start, end)`. Bounds are the key values' text output; each is
    /// read back as the type of the column it is compared with.
    Keyset {
        /// The key columns, in index order.
        columns: Vec<String>,
        /// Inclusive lower bound, one text value per column.
        start: Option<Vec<String>>,
        /// Exclusive upper bound, one text value per column.
        end: Option<Vec<String>>,
    },
}

impl ChunkBounds {
    /// The strategy's name as stored in the metadata tables: `ctid`,
    /// `int_key` or `keyset`.
    pub fn strategy_name(&self) -> &'static str {
        match self {
            ChunkBounds::Ctid { .. } => "ctid",
            ChunkBounds::IntKey { .. } => "int_key",
            ChunkBounds::Keyset { .. } => "keyset",
        }
    }

    /// The bounds as a JSON object, e.g.
    /// `{"kind":"ctid","start_block":0,"end_block":128}`,
    /// `{"kind":"int_key","column":"id","start":null,"end":1000}`,
    /// `{"kind":"keyset","columns":["a","b"],"start":["1","x"],"end":null}`.
    pub fn to_json(&self) -> String {
        use cdc_core::encode::write_json_string;
        fn opt_num(out: &mut Vec<u8>, v: Option<impl ToString>) {
            match v {
                Some(n) => out.extend_from_slice(n.to_string().as_bytes()),
                None => out.extend_from_slice(b"null"),
            }
        }
        fn strings(out: &mut Vec<u8>, v: &[String]) {
            out.push(b'[');
            for (i, s) in v.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_string(out, s);
            }
            out.push(b']');
        }
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(b"{\"kind\":");
        write_json_string(&mut out, self.strategy_name());
        match self {
            ChunkBounds::Ctid {
                start_block,
                end_block,
            } => {
                out.extend_from_slice(b",\"start_block\":");
                opt_num(&mut out, Some(start_block));
                out.extend_from_slice(b",\"end_block\":");
                opt_num(&mut out, end_block.as_ref());
            }
            ChunkBounds::IntKey { column, start, end } => {
                out.extend_from_slice(b",\"column\":");
                write_json_string(&mut out, column);
                out.extend_from_slice(b",\"start\":");
                opt_num(&mut out, start.as_ref());
                out.extend_from_slice(b",\"end\":");
                opt_num(&mut out, end.as_ref());
            }
            ChunkBounds::Keyset {
                columns,
                start,
                end,
            } => {
                out.extend_from_slice(b",\"columns\":");
                strings(&mut out, columns);
                for (name, bound) in [(&b",\"start\":"[..], start), (&b",\"end\":"[..], end)] {
                    out.extend_from_slice(name);
                    match bound {
                        Some(values) => strings(&mut out, values),
                        None => out.extend_from_slice(b"null"),
                    }
                }
            }
        }
        out.push(b'}');
        // Only valid UTF-8 went in.
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The partition a chunk of a partitioned table reads (a partitioned
/// table has no rows of its own: its chunks are planned on each leaf
/// partition, and their rows are events of the partitioned table).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChunkPartition {
    /// The leaf partition read.
    pub table: TableName,
    /// The chunk is the last of its partitioned table's plan (the table's
    /// last row is marked in it; chunks of other partitions are
    /// open-ended too).
    pub last: bool,
}

/// A chunk as planned: its bounds and, for a partitioned table, the
/// partition they apply to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlannedChunk {
    /// `None` for a chunk of the table itself.
    pub partition: Option<ChunkPartition>,
    /// Which rows of the table (or of the partition) to read.
    pub bounds: ChunkBounds,
}

impl From<ChunkBounds> for PlannedChunk {
    fn from(bounds: ChunkBounds) -> Self {
        PlannedChunk {
            partition: None,
            bounds,
        }
    }
}

impl PlannedChunk {
    /// [`ChunkBounds::to_json`], with a `partition` member
    /// `{"schema":…,"name":…,"last":…}` for a chunk of a partition.
    pub fn to_json(&self) -> String {
        let mut json = self.bounds.to_json();
        if let Some(p) = &self.partition {
            use cdc_core::encode::write_json_string;
            let mut out = Vec::with_capacity(64);
            out.extend_from_slice(b",\"partition\":{\"schema\":");
            write_json_string(&mut out, &p.table.schema);
            out.extend_from_slice(b",\"name\":");
            write_json_string(&mut out, &p.table.name);
            out.extend_from_slice(if p.last {
                b",\"last\":true}}"
            } else {
                b",\"last\":false}}"
            });
            json.pop();
            json.push_str(&String::from_utf8_lossy(&out));
        }
        json
    }

    /// The last chunk of its table's plan: open-ended, and of the last
    /// partition read for a partitioned table.
    pub fn is_last(&self) -> bool {
        let open = match &self.bounds {
            ChunkBounds::Ctid { end_block, .. } => end_block.is_none(),
            ChunkBounds::IntKey { end, .. } => end.is_none(),
            ChunkBounds::Keyset { end, .. } => end.is_none(),
        };
        open && self.partition.as_ref().is_none_or(|p| p.last)
    }
}

/// A leaf partition of a partitioned table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafPartition {
    /// Its name.
    pub name: TableName,
    /// Its OID.
    pub oid: u32,
    /// An ordinary table (`false`: a foreign table, which has no blocks
    /// and no statistics to plan by).
    pub ordinary: bool,
}

/// The leaf partitions of `table` (at every level below it), by schema and
/// name; `None` when it is not a partitioned table. Reads the catalog
/// under the caller's snapshot.
pub async fn leaf_partitions(
    conn: &mut PgConnection,
    table: &TableSchema,
) -> Result<Option<Vec<LeafPartition>>, PgError> {
    let ctx = || format!("listing the partitions of {}", table.name);
    let partitioned: Option<bool> = sqlx::query_scalar(
        "SELECT c.relkind = 'p' FROM pg_catalog.pg_class c WHERE c.oid = $1::pg_catalog.oid",
    )
    .bind(i64::from(table.oid))
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| PgError::sql(ctx(), e))?;
    if partitioned != Some(true) {
        return Ok(None);
    }
    let rows = sqlx::query(
        "SELECT c.oid::pg_catalog.int8 AS oid, n.nspname::pg_catalog.text AS s,
                c.relname::pg_catalog.text AS t, c.relkind = 'r' AS ordinary
         FROM pg_catalog.pg_partition_tree($1::pg_catalog.oid::pg_catalog.regclass) p
         JOIN pg_catalog.pg_class c ON c.oid = p.relid
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE p.isleaf AND c.relkind IN ('r', 'f')
         ORDER BY n.nspname, c.relname",
    )
    .bind(i64::from(table.oid))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| PgError::sql(ctx(), e))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let oid: i64 = r.try_get("oid").map_err(|e| PgError::sql(ctx(), e))?;
        out.push(LeafPartition {
            name: TableName::new(
                r.try_get::<String, _>("s")
                    .map_err(|e| PgError::sql(ctx(), e))?,
                r.try_get::<String, _>("t")
                    .map_err(|e| PgError::sql(ctx(), e))?,
            ),
            oid: u32::try_from(oid)
                .map_err(|_| PgError::Protocol(format!("{}: OID {oid} out of range", ctx())))?,
            ordinary: r.try_get("ordinary").map_err(|e| PgError::sql(ctx(), e))?,
        });
    }
    Ok(Some(out))
}

/// `true` when `table` (itself, not its children) holds a row visible to
/// the caller's snapshot.
pub async fn has_rows(conn: &mut PgConnection, table: &TableName) -> Result<bool, PgError> {
    let sql = format!("SELECT EXISTS (SELECT 1 FROM ONLY {})", quote_table(table));
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| PgError::sql(format!("looking for rows in {table}"), e))
}

/// How to split a table into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChunkStrategy {
    /// The default: [`ChunkStrategy::Ctid`], which works for every table.
    #[default]
    Auto,
    /// Ranges of heap blocks, sized from `pg_class` statistics.
    Ctid,
    /// Ranges of a single `int2`/`int4`/`int8` primary key (or replica
    /// identity index) column.
    IntKey,
    /// Ranges of a composite or non-integer primary key (or replica
    /// identity index), boundaries taken from one ordered pass over the key.
    Keyset,
}

/// Plans the chunks of `table`, about `chunk_rows` rows each (at least 1).
///
/// Runs inside the caller's snapshot transaction and only reads: catalog
/// statistics for CTID ranges, `min`/`max` of the key for integer ranges,
/// one ordered pass over the key for keyset ranges. Always returns at least
/// one chunk; the first range is unbounded below and the last unbounded
/// above, so the chunks cover every row visible to the transaction.
///
/// Asking for [`ChunkStrategy::IntKey`] or [`ChunkStrategy::Keyset`] on a
/// table without a fitting key is an error naming the table.
pub async fn plan_chunks(
    conn: &mut PgConnection,
    table: &RelationInfo,
    strategy: ChunkStrategy,
    chunk_rows: u64,
) -> Result<Vec<ChunkBounds>, PgError> {
    let chunk_rows = chunk_rows.max(1);
    match strategy {
        ChunkStrategy::Auto | ChunkStrategy::Ctid => plan_ctid(conn, table, chunk_rows).await,
        ChunkStrategy::IntKey => plan_int_key(conn, table, chunk_rows).await,
        ChunkStrategy::Keyset => plan_keyset(conn, table, chunk_rows).await,
    }
}

/// CTID block ranges of about `chunk_rows` rows each.
async fn plan_ctid(
    conn: &mut PgConnection,
    table: &RelationInfo,
    chunk_rows: u64,
) -> Result<Vec<ChunkBounds>, PgError> {
    let stats = table_stats(conn, &table.schema).await?;
    Ok(ctid_ranges(
        stats.blocks,
        stats.rows_per_block(),
        chunk_rows,
    ))
}

/// Splits `blocks` blocks into ranges of `ceil(chunk_rows / rows_per_block)`
/// blocks (at least one); the last range is open-ended. No blocks gives the
/// single range `[0, ∞)`.
fn ctid_ranges(blocks: u64, rows_per_block: f64, chunk_rows: u64) -> Vec<ChunkBounds> {
    let per_chunk = (chunk_rows as f64 / rows_per_block.max(1.0)).ceil();
    // Saturating float-to-int conversion; a block number fits in u32.
    let per_chunk = (per_chunk as u64).clamp(1, u64::from(u32::MAX));
    let blocks = blocks.min(u64::from(u32::MAX));
    let mut out = Vec::new();
    let mut start = 0u64;
    loop {
        let end = start + per_chunk;
        let start_block = u32::try_from(start).unwrap_or(u32::MAX);
        if end >= blocks {
            out.push(ChunkBounds::Ctid {
                start_block,
                end_block: None,
            });
            return out;
        }
        out.push(ChunkBounds::Ctid {
            start_block,
            end_block: Some(u32::try_from(end).unwrap_or(u32::MAX)),
        });
        start = end;
    }
}

/// The key the table is chunked by: the primary key, or else the replica
/// identity index; column names in index order, each with its parser kind
/// when the column is in the snapshot's column set.
async fn chunk_key(
    conn: &mut PgConnection,
    table: &RelationInfo,
) -> Result<Vec<(String, Option<ScalarKind>)>, PgError> {
    let rows = sqlx::query(
        "SELECT a.attname::pg_catalog.text AS name
         FROM pg_catalog.pg_index i
         CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::pg_catalog.int2[]) WITH ORDINALITY AS k(attnum, ord)
         JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indexrelid = (
                 SELECT i2.indexrelid
                 FROM pg_catalog.pg_index i2
                 JOIN pg_catalog.pg_class c ON c.oid = i2.indrelid
                 WHERE i2.indrelid = $1
                   AND (i2.indisprimary OR (c.relreplident = 'i' AND i2.indisreplident))
                 ORDER BY i2.indisprimary DESC
                 LIMIT 1)
           AND k.ord <= i.indnkeyatts
         ORDER BY k.ord",
    )
    .bind(i64::from(table.schema.oid))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| PgError::sql(format!("reading the key of {}", table.schema.name), e))?;
    let mut key = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row
            .try_get("name")
            .map_err(|e| PgError::sql(format!("reading the key of {}", table.schema.name), e))?;
        let kind = table
            .schema
            .column_index(&name)
            .and_then(|i| table.types.get(i))
            .filter(|t| !t.array)
            .map(|t| t.scalar);
        key.push((name, kind));
    }
    Ok(key)
}

/// Ranges of a single integer key column.
async fn plan_int_key(
    conn: &mut PgConnection,
    table: &RelationInfo,
    chunk_rows: u64,
) -> Result<Vec<ChunkBounds>, PgError> {
    let name = &table.schema.name;
    let key = chunk_key(conn, table).await?;
    let column = match key.as_slice() {
        [(column, Some(ScalarKind::Int2 | ScalarKind::Int4 | ScalarKind::Int8))] => column.clone(),
        _ => {
            return Err(PgError::Setup(format!(
                "cannot chunk {name} by integer key: it needs a primary key (or replica identity \
                 index) of exactly one int2, int4 or int8 column; use the ctid or keyset strategy"
            )))
        }
    };
    let sql = format!(
        "SELECT pg_catalog.min({c})::pg_catalog.int8 AS lo, pg_catalog.max({c})::pg_catalog.int8 AS hi FROM {t}",
        c = quote_ident(&column),
        t = quote_table(name)
    );
    let ctx = || format!("reading the key range of {name}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| PgError::sql(ctx(), e))?;
    let lo: Option<i64> = row.try_get("lo").map_err(|e| PgError::sql(ctx(), e))?;
    let hi: Option<i64> = row.try_get("hi").map_err(|e| PgError::sql(ctx(), e))?;
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(vec![ChunkBounds::IntKey {
            column,
            start: None,
            end: None,
        }]);
    };
    let stats = table_stats(conn, &table.schema).await?;
    Ok(int_ranges(
        &column,
        lo,
        hi,
        stats.estimated_rows(),
        chunk_rows,
    ))
}

/// Ranges `(-∞, lo+w), [lo+w, lo+2w), …, [lo+kw, ∞)` with `w` chosen so a
/// range holds about `chunk_rows` of the `rows` estimated rows spread over
/// `[lo, hi]` (a missing estimate counts the keys as dense).
fn int_ranges(column: &str, lo: i64, hi: i64, rows: f64, chunk_rows: u64) -> Vec<ChunkBounds> {
    let span = i128::from(hi) - i128::from(lo) + 1;
    let rows = if rows >= 1.0 { rows } else { span as f64 };
    let width = ((chunk_rows as f64) * (span as f64) / rows).ceil();
    let min_width = (span + i128::from(MAX_INT_KEY_CHUNKS) - 1) / i128::from(MAX_INT_KEY_CHUNKS);
    // Saturating float-to-int conversion.
    let width = (width as i128).max(min_width).max(1);
    let mut out = Vec::new();
    let mut start: Option<i64> = None;
    let mut boundary = i128::from(lo) + width;
    while boundary <= i128::from(hi) {
        // `boundary <= hi` fits in i64.
        let end = i64::try_from(boundary).unwrap_or(i64::MAX);
        out.push(ChunkBounds::IntKey {
            column: column.to_owned(),
            start,
            end: Some(end),
        });
        start = Some(end);
        boundary += width;
    }
    out.push(ChunkBounds::IntKey {
        column: column.to_owned(),
        start,
        end: None,
    });
    out
}

/// Keyset ranges with boundaries at every `chunk_rows`-th key in order.
async fn plan_keyset(
    conn: &mut PgConnection,
    table: &RelationInfo,
    chunk_rows: u64,
) -> Result<Vec<ChunkBounds>, PgError> {
    let name = &table.schema.name;
    let key = chunk_key(conn, table).await?;
    if key.is_empty() {
        return Err(PgError::Setup(format!(
            "cannot chunk {name} by keyset: it has no primary key (or replica identity index); \
             use the ctid strategy"
        )));
    }
    let columns: Vec<String> = key.into_iter().map(|(c, _)| c).collect();
    let quoted: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    let list = quoted.join(", ");
    let as_text = quoted
        .iter()
        .map(|c| format!("{c}::pg_catalog.text"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT ARRAY[{as_text}] AS k FROM (
             SELECT {list}, pg_catalog.row_number() OVER (ORDER BY {list}) AS rn FROM {t}
         ) s WHERE s.rn % {chunk_rows} = 0 ORDER BY s.rn",
        t = quote_table(name)
    );
    let ctx = || format!("reading the key boundaries of {name}");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| PgError::sql(ctx(), e))?;
    let mut out = Vec::with_capacity(rows.len() + 1);
    let mut start: Option<Vec<String>> = None;
    for row in rows {
        let values: Vec<Option<String>> = row.try_get("k").map_err(|e| PgError::sql(ctx(), e))?;
        let values: Option<Vec<String>> = values.into_iter().collect();
        let Some(end) = values else {
            return Err(PgError::Setup(format!(
                "cannot chunk {name} by keyset: a key column holds NULL"
            )));
        };
        out.push(ChunkBounds::Keyset {
            columns: columns.clone(),
            start: start.take(),
            end: Some(end.clone()),
        });
        start = Some(end);
    }
    out.push(ChunkBounds::Keyset {
        columns,
        start,
        end: None,
    });
    Ok(out)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
