//! The publication that selects the captured tables.

use cdc_core::TableName;
use sqlx::{PgConnection, Row};

use crate::error::PgError;
use crate::ident::{quote_ident, quote_table};

/// Makes sure publication `name` exists and publishes every table in
/// `tables`: created (or extended with `ADD TABLE`) when `create` is true,
/// otherwise a missing piece is an error naming the SQL to run.
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
    let ctx = || format!("checking publication {name}");
    let row = sqlx::query(
        "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate
         FROM pg_publication WHERE pubname = $1",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| PgError::sql(ctx(), e))?;

    let Some(row) = row else {
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

    for flag in ["pubinsert", "pubupdate", "pubdelete", "pubtruncate"] {
        if !row
            .try_get::<bool, _>(flag)
            .map_err(|e| PgError::sql(ctx(), e))?
        {
            tracing::warn!(
                publication = name,
                "publication does not publish {}: those changes will not be captured",
                flag.trim_start_matches("pub")
            );
        }
    }
    if row
        .try_get::<bool, _>("puballtables")
        .map_err(|e| PgError::sql(ctx(), e))?
    {
        return Ok(true);
    }

    let rows = sqlx::query(
        "SELECT schemaname::text AS s, tablename::text AS t FROM pg_publication_tables WHERE pubname = $1",
    )
    .bind(name)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| PgError::sql(ctx(), e))?;
    let published: Vec<TableName> = rows
        .iter()
        .filter_map(|r| {
            Some(TableName::new(
                r.try_get::<String, _>("s").ok()?,
                r.try_get::<String, _>("t").ok()?,
            ))
        })
        .collect();
    let missing: Vec<&TableName> = tables.iter().filter(|t| !published.contains(t)).collect();
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

/// `CREATE PUBLICATION "name" FOR TABLE "s"."a", …`, every name quoted.
pub(crate) fn create_publication_sql(name: &str, tables: &[&TableName]) -> String {
    format!(
        "CREATE PUBLICATION {} FOR TABLE {}",
        quote_ident(name),
        table_list(tables)
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
