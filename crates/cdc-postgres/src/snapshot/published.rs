//! What a publication publishes of a table: its column list and row
//! filter (PostgreSQL 15+), so that the snapshot reads exactly the columns
//! and rows the stream sends for it, whoever made the publication.

use std::sync::Arc;

use cdc_core::{TableName, TableSchema};
use sqlx::{PgConnection, Row};

use super::table::{describe_table_with_generated, without_columns};
use crate::catalog::RelationInfo;
use crate::error::PgError;
use crate::local_subsets::LocalSubsets;

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
    if server_version(conn).await.map_err(|e| PgError::sql(ctx(), e))? < 150_000 {
        return Ok(Published::default());
    }
    Ok(published_row(conn, publication, table)
        .await?
        .unwrap_or_default())
}

/// The row of `table` in `pg_publication_tables` for `publication` as
/// [`Published`]; `None` when the publication does not hold the table.
/// PostgreSQL 15+ (the columns do not exist before).
pub(crate) async fn published_row(
    conn: &mut PgConnection,
    publication: &str,
    table: &TableName,
) -> Result<Option<Published>, PgError> {
    let ctx = || format!("reading what publication {publication} publishes of {table}");
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
    row.map(|row| {
        Ok(Published {
            columns: row.try_get("columns").map_err(|e| PgError::sql(ctx(), e))?,
            row_filter: row
                .try_get("rowfilter")
                .map_err(|e| PgError::sql(ctx(), e))?,
        })
    })
    .transpose()
}

/// The server's `server_version_num`.
pub(crate) async fn server_version(conn: &mut PgConnection) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT current_setting('server_version_num')::int4")
        .fetch_one(&mut *conn)
        .await
}

/// [`super::describe_table`] narrowed to what `publication` publishes of
/// the table: only the published columns (in table order), and the row
/// filter the snapshot's reads apply ([`RelationInfo::row_filter`]). A
/// column list that leaves out a key column is refused: without it neither
/// the snapshot's rows nor the stream's changes could be keyed.
///
/// Stored generated columns are read when the stream sends them
/// (PostgreSQL 18: `publish_generated_columns = stored`, or a column list
/// naming them; `pg_publication_tables.attnames` then lists them), and
/// left out otherwise (before 18 pgoutput never sends them, although
/// PostgreSQL 15's `attnames` lists them), so a generated column renders
/// the same in the snapshot and in the stream whatever the publication
/// says.
///
/// `local`: the configured column selections, applied after the
/// publication's (before PostgreSQL 15 the publication has none), as the
/// stream applies them to its Relation messages; and the configured row
/// filter when the publication has none (`snapshot_only` mode sets up no
/// publication).
pub async fn describe_published_table(
    conn: &mut PgConnection,
    database: &str,
    table: &TableName,
    publication: &str,
    local: &LocalSubsets,
) -> Result<RelationInfo, PgError> {
    let (mut info, generated) = describe_table_with_generated(conn, database, table).await?;
    let version = server_version(conn)
        .await
        .map_err(|e| PgError::sql(format!("describing table {table} for the snapshot"), e))?;
    if version < 180_000 {
        info = without_columns(info, &generated);
    }
    let mut published = published(conn, publication, table).await?;
    if published.row_filter.is_none() {
        // No publication (snapshot_only) or one without the filter.
        if let Some(filter) = local.row_filter(table) {
            // SQL text from the configuration: it must stay inside its
            // parentheses.
            crate::incremental::check_filter_text(filter).map_err(|e| {
                PgError::Setup(format!("source.row_filters of {table}: {e}"))
            })?;
            published.row_filter = Some(format!("({filter}\n)"));
        }
    }
    local.narrow(narrow(info, &generated, published, publication)?)
}

/// Applies `published` to `info` (see [`describe_published_table`]);
/// `generated`: the stored generated columns of `info`, kept only when
/// the published column list names them.
fn narrow(
    info: RelationInfo,
    generated: &[String],
    published: Published,
    publication: &str,
) -> Result<RelationInfo, PgError> {
    let Some(list) = published.columns else {
        let RelationInfo { schema, types, .. } = without_columns(info, generated);
        return Ok(RelationInfo {
            schema,
            types,
            row_filter: published.row_filter,
            wire: None,
        });
    };
    let RelationInfo { schema, types, .. } = info;
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
        wire: None,
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
            wire: None,
        }
    }

    #[test]
    fn keeps_the_listed_columns_in_table_order_with_their_parsers() {
        let narrowed = narrow(
            info(),
            &[],
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
        let narrowed = narrow(info(), &[], Published::default(), "p").unwrap();
        assert_eq!(narrowed.schema.columns.len(), 3);
        assert_eq!(narrowed.row_filter, None);
    }

    #[test]
    fn a_generated_column_only_when_the_list_names_it() {
        let generated = ["b".to_owned()];
        let names = |info: RelationInfo| -> Vec<String> {
            info.schema.columns.iter().map(|c| c.name.clone()).collect()
        };
        // Before PostgreSQL 15 (no attnames): pgoutput never sends it.
        let unlisted = narrow(info(), &generated, Published::default(), "p").unwrap();
        assert_eq!(names(unlisted.clone()), ["id", "a"]);
        assert_eq!(unlisted.types.len(), 2);
        // publish_generated_columns = none: attnames leaves it out.
        let none = Published {
            columns: Some(vec!["id".into(), "a".into()]),
            row_filter: None,
        };
        assert_eq!(names(narrow(info(), &generated, none, "p").unwrap()), ["id", "a"]);
        // publish_generated_columns = stored, or a column list naming it.
        let stored = Published {
            columns: Some(vec!["id".into(), "a".into(), "b".into()]),
            row_filter: None,
        };
        assert_eq!(
            names(narrow(info(), &generated, stored, "p").unwrap()),
            ["id", "a", "b"]
        );
    }

    #[test]
    fn refuses_a_list_without_the_key() {
        let err = narrow(
            info(),
            &[],
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
