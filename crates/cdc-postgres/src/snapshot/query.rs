//! The `COPY` statement that reads one chunk of a table: every
//! identifier quoted, every bound a literal.

use cdc_core::{TableName, TableSchema};

use super::format::ReadFormat;
use super::plan::ChunkBounds;
use crate::ident::{quote_ident, quote_literal, quote_table};

/// The `COPY (SELECT …) TO STDOUT` statement that reads the rows of
/// `bounds` (COPY takes no bind parameters, so bounds are literals):
///
/// * every identifier quoted ([`quote_ident`], [`quote_table`]);
/// * CTID bounds as `ctid >= '(N,0)'::pg_catalog.tid` (a TID range scan);
/// * integer bounds as `'N'::pg_catalog.int8` (comparable with any integer
///   key through its btree operator family, so the index is used);
/// * keyset bounds as a row comparison with quoted string literals,
///   `ROW("a", "b") >= ROW('1', 'x')`: an untyped literal takes the type of
///   the key column it is compared with and is read by that type's input
///   function, exactly as a cast to the column type would be, without
///   needing the type's schema-qualified name (which [`TableSchema`] does
///   not carry). A value holding a backslash is written `E'…'` with the
///   backslashes doubled, so it reads the same whatever
///   `standard_conforming_strings` is.
///
/// Columns are those of `table`, in order; a key column that is not
/// selected (a generated column) may still appear in the condition.
pub fn chunk_query(table: &TableSchema, bounds: &ChunkBounds) -> String {
    chunk_query_from(table, &table.name, bounds, None, ReadFormat::Text)
}

/// [`chunk_query`] reading `table`'s columns from relation `from`: a
/// partition of it (whose columns have the same names and types, in any
/// order), or the table itself; only rows matching `row_filter` (a
/// publication's row filter as the server deparsed it, never text from
/// configuration) when given; in `format`.
pub fn chunk_query_from(
    table: &TableSchema,
    from: &TableName,
    bounds: &ChunkBounds,
    row_filter: Option<&str>,
    format: ReadFormat,
) -> String {
    let mut sql = String::from("COPY (SELECT ");
    for (i, c) in table.columns.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&quote_ident(&c.name));
    }
    sql.push_str(" FROM ");
    sql.push_str(&quote_table(from));
    let mut conditions = conditions(bounds);
    if let Some(filter) = row_filter {
        conditions.push(format!("({filter})"));
    }
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(") ");
    sql.push_str(format.to_stdout());
    sql
}

fn conditions(bounds: &ChunkBounds) -> Vec<String> {
    let mut out = Vec::with_capacity(2);
    match bounds {
        ChunkBounds::Ctid {
            start_block,
            end_block,
        } => {
            // Block 0 is the first: no lower bound needed (and the open
            // range [0, ∞) needs no condition at all).
            if *start_block > 0 {
                out.push(format!("ctid >= '({start_block},0)'::pg_catalog.tid"));
            }
            if let Some(end) = end_block {
                out.push(format!("ctid < '({end},0)'::pg_catalog.tid"));
            }
        }
        ChunkBounds::IntKey { column, start, end } => {
            let c = quote_ident(column);
            if let Some(s) = start {
                out.push(format!("{c} >= '{s}'::pg_catalog.int8"));
            }
            if let Some(e) = end {
                out.push(format!("{c} < '{e}'::pg_catalog.int8"));
            }
        }
        ChunkBounds::Keyset {
            columns,
            start,
            end,
        } => {
            let key = row_value(columns.iter().map(|c| quote_ident(c)));
            if let Some(s) = start {
                out.push(format!(
                    "{key} >= {}",
                    row_value(s.iter().map(|v| string_literal(v)))
                ));
            }
            if let Some(e) = end {
                out.push(format!(
                    "{key} < {}",
                    row_value(e.iter().map(|v| string_literal(v)))
                ));
            }
        }
    }
    out
}

/// `text` as a string literal that means the same whatever
/// `standard_conforming_strings` is: `'…'`, or `E'…'` with backslashes
/// doubled when it holds one.
pub(crate) fn string_literal(text: &str) -> String {
    if !text.contains('\\') {
        return quote_literal(text);
    }
    let mut out = String::with_capacity(text.len() + 4);
    out.push_str("E'");
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `a` for one item, `ROW(a, b)` for several.
pub(crate) fn row_value(items: impl ExactSizeIterator<Item = String>) -> String {
    if items.len() == 1 {
        return items.collect();
    }
    let mut out = String::from("ROW(");
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&item);
    }
    out.push(')');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use cdc_core::{Column, ReplicaIdentity};

    fn schema() -> TableSchema {
        let col = |name: &str| Column {
            name: name.to_owned(),
            type_oid: 23,
            type_name: "int4".into(),
            type_modifier: -1,
            nullable: false,
            is_key: false,
        };
        TableSchema {
            database: "db".into(),
            oid: 1,
            name: TableName::new("Odd Schema", "Mixed \"Case\""),
            columns: vec![col("id"), col("a b")],
            replica_identity: ReplicaIdentity::Default,
        }
    }

    #[test]
    fn queries_quote_everything() {
        let t = schema();
        let q = |b: &ChunkBounds| chunk_query(&t, b);
        let head = r#"COPY (SELECT "id", "a b" FROM "Odd Schema"."Mixed ""Case""""#;
        assert_eq!(
            q(&ChunkBounds::Ctid {
                start_block: 0,
                end_block: None
            }),
            format!("{head}) TO STDOUT")
        );
        assert_eq!(
            q(&ChunkBounds::Ctid {
                start_block: 4,
                end_block: Some(8)
            }),
            format!("{head} WHERE ctid >= '(4,0)'::pg_catalog.tid AND ctid < '(8,0)'::pg_catalog.tid) TO STDOUT")
        );
        assert_eq!(
            q(&ChunkBounds::IntKey {
                column: "id".into(),
                start: Some(-5),
                end: None
            }),
            format!("{head} WHERE \"id\" >= '-5'::pg_catalog.int8) TO STDOUT")
        );
        assert_eq!(
            q(&ChunkBounds::Keyset {
                columns: vec!["a\"".into(), "b".into()],
                start: Some(vec!["1".into(), "it's".into()]),
                end: Some(vec!["2".into(), "x".into()]),
            }),
            format!(
                "{head} WHERE ROW(\"a\"\"\", \"b\") >= ROW('1', 'it''s') \
                 AND ROW(\"a\"\"\", \"b\") < ROW('2', 'x')) TO STDOUT"
            )
        );
        assert_eq!(
            q(&ChunkBounds::Keyset {
                columns: vec!["u".into()],
                start: None,
                end: Some(vec!["k".into()]),
            }),
            format!("{head} WHERE \"u\" < 'k') TO STDOUT")
        );
        assert_eq!(
            q(&ChunkBounds::Keyset {
                columns: vec!["u".into()],
                start: Some(vec!["a\\'b".into()]),
                end: None,
            }),
            format!("{head} WHERE \"u\" >= E'a\\\\''b') TO STDOUT")
        );
    }
}
