//! What a publication publishes of a table: its column list and row
//! filter (PostgreSQL 15+), so that the snapshot reads exactly the columns
//! and rows the stream sends for it, whoever made the publication.

use std::sync::Arc;

use cdc_core::{TableName, TableSchema};
use sqlx::{PgConnection, Row};

use super::table::describe_table;
use crate::catalog::RelationInfo;
use crate::error::PgError;

/// The column list and row filter of `table` in `publication`, as
/// `pg_publication_tables` shows them under the transaction's snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// The columns published; `None`: every column (no column list, the
    /// table not in the publication, the publication missing, or a server
    /// before 15).
    pub columns: Option<Vec<String>>,
    /// The row filter as the server deparses it (`pg_get_expr`), a valid
    /// SQL boolean expression on the table's columns; `None`: every row.
    pub row_filter: Option<String>,
}

/// Reads what `publication` publishes of `table`. Servers before 15 have
/// neither column lists nor row filters: everything.
pub async fn published(
    conn: &mut PgConnection,
    publication: &str,
    table: &TableName,
) -> Result<Published, PgError> {
    let ctx = || format!("reading what publication {publication} publishes of {table}");
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int4")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| PgError::sql(ctx(), e))?;
    if version < 150_000 {
        return Ok(Published::default());
    }
    let row = sqlx::query(
        "SELECT attnames::pg_catalog.text[] AS columns, rowfilter
         FROM pg_catalog.pg_publication_tables
         WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
    )
    .bind(publication)
    .bind(&table.schema)
    .bind(&table.name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| PgError::sql(ctx(), e))?;
    let Some(row) = row else {
        return Ok(Published::default());
    };
    Ok(Published {
        columns: row.try_get("columns").map_err(|e| PgError::sql(ctx(), e))?,
        row_filter: row
            .try_get("rowfilter")
            .map_err(|e| PgError::sql(ctx(), e))?,
    })
}

/// [`describe_table`] narrowed to what `publication` publishes of the
/// table: only the listed columns (in table order), and the row filter
/// the snapshot's reads apply ([`RelationInfo::row_filter`]). A column
/// list that leaves out a key column is refused: without it neither the
/// snapshot's rows nor the stream's changes could be keyed.
pub async fn describe_published_table(
    conn: &mut PgConnection,
    database: &str,
    table: &TableName,
    publication: &str,
) -> Result<RelationInfo, PgError> {
    let info = describe_table(conn, database, table).await?;
    let published = published(conn, publication, table).await?;
    narrow(info, published, publication)
}

/// Applies `published` to `info` (see [`describe_published_table`]).
fn narrow(
    info: RelationInfo,
    published: Published,
    publication: &str,
) -> Result<RelationInfo, PgError> {
    let RelationInfo { schema, types, .. } = info;
    let Some(list) = published.columns else {
        return Ok(RelationInfo {
            schema,
            types,
            row_filter: published.row_filter,
        });
    };
    let missing_keys: Vec<&str> = schema
        .columns
        .iter()
        .filter(|c| c.is_key && !list.contains(&c.name))
        .map(|c| c.name.as_str())
        .collect();
    if !missing_keys.is_empty() {
        return Err(PgError::Setup(format!(
            "the column list of publication {publication} for {} leaves out its key column(s) {}: \
             changes could not be keyed; add them to the column list",
            schema.name,
            missing_keys.join(", ")
        )));
    }
    let (columns, types): (Vec<_>, Vec<_>) = schema
        .columns
        .iter()
        .zip(types)
        .filter(|(c, _)| list.contains(&c.name))
        .map(|(c, t)| (c.clone(), t))
        .unzip();
    Ok(RelationInfo {
        schema: Arc::new(TableSchema {
            columns,
            ..(*schema).clone()
        }),
        types,
        row_filter: published.row_filter,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::value::ValueType;
    use cdc_core::{Column, ReplicaIdentity};

    fn info() -> RelationInfo {
        let column = |name: &str, key: bool| Column {
            name: name.into(),
            type_oid: 23,
            type_name: "int4".into(),
            type_modifier: -1,
            nullable: !key,
            is_key: key,
        };
        RelationInfo {
            schema: Arc::new(TableSchema {
                database: "db".into(),
                oid: 1,
                name: TableName::new("public", "t"),
                columns: vec![column("id", true), column("a", false), column("b", false)],
                replica_identity: ReplicaIdentity::Default,
            }),
            types: vec![ValueType::builtin(23).unwrap(); 3],
            row_filter: None,
        }
    }

    #[test]
    fn keeps_the_listed_columns_in_table_order_with_their_parsers() {
        let narrowed = narrow(
            info(),
            Published {
                columns: Some(vec!["b".into(), "id".into()]),
                row_filter: Some("(b > 1)".into()),
            },
            "p",
        )
        .unwrap();
        let names: Vec<_> = narrowed.schema.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "b"]);
        assert_eq!(narrowed.types.len(), 2);
        assert_eq!(narrowed.row_filter.as_deref(), Some("(b > 1)"));
    }

    #[test]
    fn everything_without_a_column_list() {
        let narrowed = narrow(info(), Published::default(), "p").unwrap();
        assert_eq!(narrowed.schema.columns.len(), 3);
        assert_eq!(narrowed.row_filter, None);
    }

    #[test]
    fn refuses_a_list_without_the_key() {
        let err = narrow(
            info(),
            Published {
                columns: Some(vec!["a".into()]),
                row_filter: None,
            },
            "p",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("publication p") && text.contains("key column(s) id"), "{text}");
    }
}
