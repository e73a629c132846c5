//! The publication that selects the captured tables.

use cdc_core::TableName;
use sqlx::{PgConnection, Row};

use super::check::PublicationState;
use crate::error::PgError;
use crate::ident::{quote_ident, quote_table};

/// Makes sure publication `name` exists and publishes every table in
/// `tables`: created (or extended with `ADD TABLE`) when `create` is true,
/// otherwise a missing piece is an error naming the SQL to run. Created
/// with `publish_via_partition_root`; an existing publication without it
/// gets it when a table of `tables` is partitioned (with `create` true;
/// otherwise that is an error naming the `ALTER PUBLICATION` to run).
pub async fn ensure_publication(
    conn: &mut PgConnection,
    name: &str,
    tables: &[TableName],
    create: bool,
) -> Result<(), PgError> {
    // Another instance may create or extend the publication at the same
    // moment: losing that race means looking again, not failing.
    for _ in 0..3 {
        if ensure_once(conn, name, tables, create).await? {
            return Ok(());
        }
        tracing::info!(
            publication = name,
            "publication changed concurrently; checking again"
        );
    }
    ensure_once(conn, name, tables, false).await.map(|_| ())
}

/// One check-and-fix pass; `Ok(false)` when a concurrent change got in the way.
async fn ensure_once(
    conn: &mut PgConnection,
    name: &str,
    tables: &[TableName],
    create: bool,
) -> Result<bool, PgError> {
    let Some(publication) = PublicationState::read(conn, name).await? else {
        let all: Vec<&TableName> = tables.iter().collect();
        let sql = create_publication_sql(name, &all);
        if !create {
            return Err(PgError::Setup(format!(
                "publication `{name}` does not exist: run {sql}; or set source.publication.create: true"
            )));
        }
        tracing::info!(publication = name, "creating publication");
        return run_ddl(conn, sql, name).await;
    };

    for op in &publication.unpublished_ops {
        tracing::warn!(
            publication = name,
            "publication does not publish {op}: those changes will not be captured"
        );
    }

    // A partitioned table published without publish_via_partition_root
    // has its changes sent under each partition's name, which the engine
    // does not track.
    if !publication.via_root {
        let partitioned = partitioned_tables(conn, tables).await?;
        if !partitioned.is_empty() {
            let sql = via_root_sql(name);
            let names: Vec<String> = partitioned.iter().map(|t| t.to_string()).collect();
            if !create {
                return Err(PgError::Setup(format!(
                    "publication `{name}` does not set publish_via_partition_root, so the changes of \
                     partitioned table(s) {} are sent under their partitions' names: run {sql}; or set \
                     source.publication.create: true",
                    names.join(", ")
                )));
            }
            tracing::warn!(
                publication = name,
                "setting publish_via_partition_root on the publication, for partitioned table(s) {}: \
                 changes of their partitions are published under the partitioned table's name from \
                 now on (for every subscriber of this publication)",
                names.join(", ")
            );
            if !run_ddl(conn, sql, name).await? {
                return Ok(false);
            }
        }
    }
    if publication.all_tables {
        return Ok(true);
    }

    // `publication.tables` holds the tables as added (pg_publication_rel)
    // as well as what pg_publication_tables lists: a partitioned table
    // added without publish_via_partition_root is listed there only by
    // its partitions, and adding it again fails (42710).
    let missing: Vec<&TableName> = tables
        .iter()
        .filter(|t| !publication.tables.contains(t))
        .collect();
    if missing.is_empty() {
        return Ok(true);
    }
    let sql = add_tables_sql(name, &missing);
    if !create {
        let names: Vec<String> = missing.iter().map(|t| t.to_string()).collect();
        return Err(PgError::Setup(format!(
            "publication `{name}` does not include {}: run {sql}; or set source.publication.create: true",
            names.join(", ")
        )));
    }
    tracing::info!(publication = name, "adding tables to publication");
    run_ddl(conn, sql, name).await
}

/// The tables of `tables` that are partitioned (`relkind` `p`).
async fn partitioned_tables(
    conn: &mut PgConnection,
    tables: &[TableName],
) -> Result<Vec<TableName>, PgError> {
    let schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let rows = sqlx::query(
        "SELECT n.nspname::text AS s, c.relname::text AS t
         FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[])) AS w(s, t)
         JOIN pg_catalog.pg_namespace n ON n.nspname = w.s
         JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.t
         WHERE c.relkind = 'p'",
    )
    .bind(schemas)
    .bind(names)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| PgError::sql("looking for partitioned tables", e))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(TableName::new(
            r.try_get::<String, _>("s")
                .map_err(|e| PgError::sql("looking for partitioned tables", e))?,
            r.try_get::<String, _>("t")
                .map_err(|e| PgError::sql("looking for partitioned tables", e))?,
        ));
    }
    Ok(out)
}

/// Runs the DDL; `Ok(false)` when it lost a race with a concurrent
/// creation (unique violation, duplicate object).
async fn run_ddl(conn: &mut PgConnection, sql: String, name: &str) -> Result<bool, PgError> {
    let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
        .execute(&mut *conn)
        .await;
    if let Err(sqlx::Error::Database(db)) = &result {
        if matches!(db.code().as_deref(), Some("23505" | "42710")) {
            return Ok(false);
        }
    }
    result
        .map(|_| true)
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("42501") => PgError::Setup(
                format!(
                    "not allowed to create or change publication `{name}` ({}): the role needs CREATE on \
                     the database and ownership of the tables; or have an administrator run {sql};",
                    db.message()
                ),
            ),
            _ => PgError::sql(format!("creating publication {name}"), e),
        })
}

/// `CREATE PUBLICATION "name" FOR TABLE "s"."a", … WITH
/// (publish_via_partition_root = true)`, every name quoted: the changes of
/// a partitioned table's partitions are published as changes of the
/// partitioned table, the name the engine is configured with (PostgreSQL
/// 13 and later; the option changes nothing for other tables).
pub(crate) fn create_publication_sql(name: &str, tables: &[&TableName]) -> String {
    format!(
        "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)",
        quote_ident(name),
        table_list(tables)
    )
}

/// `ALTER PUBLICATION "name" SET (publish_via_partition_root = true)`.
pub(crate) fn via_root_sql(name: &str) -> String {
    format!(
        "ALTER PUBLICATION {} SET (publish_via_partition_root = true)",
        quote_ident(name)
    )
}

/// `ALTER PUBLICATION "name" ADD TABLE "s"."a", …`, every name quoted.
pub(crate) fn add_tables_sql(name: &str, tables: &[&TableName]) -> String {
    format!(
        "ALTER PUBLICATION {} ADD TABLE {}",
        quote_ident(name),
        table_list(tables)
    )
}

fn table_list(tables: &[&TableName]) -> String {
    tables
        .iter()
        .map(|t| quote_table(t))
        .collect::<Vec<_>>()
        .join(", ")
}
