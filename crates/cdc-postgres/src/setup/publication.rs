//! The publication that selects the captured tables.

use cdc_core::TableName;
use sqlx::{PgConnection, Row};

use super::check::PublicationState;
use crate::error::PgError;
use crate::ident::{quote_ident, quote_table};
use crate::selection::{ColumnSelection, TableSubset};
use crate::snapshot::published_row;

/// Makes sure publication `name` exists and publishes every table in
/// `tables`: created (or extended with `ADD TABLE`) when `create` is true,
/// otherwise a missing piece is an error naming the SQL to run. Created
/// with `publish_via_partition_root`; an existing publication without it
/// gets it when a table of `tables` is partitioned (with `create` true;
/// otherwise that is an error naming the `ALTER PUBLICATION` to run).
/// A table of `subsets` is published with its column list and row filter
/// (PostgreSQL 15+); one already published otherwise is changed to them
/// (with `create` true).
pub async fn ensure_publication(
    conn: &mut PgConnection,
    name: &str,
    tables: &[TableName],
    subsets: &[(TableName, TableSubset)],
    create: bool,
) -> Result<(), PgError> {
    let (specs, lists) = table_specs(conn, tables, subsets).await?;
    // Another instance may create or extend the publication at the same
    // moment: losing that race means looking again, not failing.
    for _ in 0..3 {
        if ensure_once(conn, name, tables, &specs, create).await? {
            let server_subsets = subsets
                .iter()
                .filter(|(t, s)| tables.contains(t) && (lists || s.row_filter.is_some()));
            for (table, _) in server_subsets {
                if let Some(spec) = tables.iter().position(|t| t == table).map(|i| &specs[i]) {
                    apply_subset(conn, name, table, spec).await?;
                }
            }
            return Ok(());
        }
        tracing::info!(
            publication = name,
            "publication changed concurrently; checking again"
        );
    }
    ensure_once(conn, name, tables, &specs, false)
        .await
        .map(|_| ())
}

/// Adds `tables` (new to publication `name`, which exists) to it, each
/// with its column list and row filter from `subsets`, on `conn` as it is:
/// inside the caller's transaction, which commits or rolls back with it
/// (no retry: a concurrent change of the publication is an error, and the
/// caller tries again later).
pub async fn add_tables_in_transaction(
    conn: &mut PgConnection,
    name: &str,
    tables: &[TableName],
    subsets: &[(TableName, TableSubset)],
) -> Result<(), PgError> {
    let (specs, _) = table_specs(conn, tables, subsets).await?;
    if ensure_once(conn, name, tables, &specs, true).await? {
        Ok(())
    } else {
        Err(PgError::Setup(format!(
            "publication `{name}` changed concurrently while tables were added to it"
        )))
    }
}

/// Each table of `tables` as the publication DDL names it, with its
/// column list and row filter from `subsets`; and whether the server took
/// column lists ([`column_lists`]).
async fn table_specs(
    conn: &mut PgConnection,
    tables: &[TableName],
    subsets: &[(TableName, TableSubset)],
) -> Result<(Vec<String>, bool), PgError> {
    let lists = column_lists(conn, subsets).await?;
    let mut specs = Vec::with_capacity(tables.len());
    for t in tables {
        let subset = subsets.iter().find(|(s, _)| s == t).map(|(_, s)| s);
        specs.push(table_spec(conn, t, subset, lists).await?);
    }
    Ok((specs, lists))
}

/// Whether the server takes publication column lists (PostgreSQL 15+);
/// asked only when `subsets` has a column selection.
async fn column_lists(
    conn: &mut PgConnection,
    subsets: &[(TableName, TableSubset)],
) -> Result<bool, PgError> {
    if subsets.iter().all(|(_, s)| s.columns.is_none()) {
        return Ok(true);
    }
    let version = crate::snapshot::server_version(conn)
        .await
        .map_err(|e| PgError::sql("reading the server version", e))?;
    Ok(version >= 150_000)
}

/// One check-and-fix pass; `Ok(false)` when a concurrent change got in the
/// way. `specs`: each table of `tables` as the DDL names it.
async fn ensure_once(
    conn: &mut PgConnection,
    name: &str,
    tables: &[TableName],
    specs: &[String],
    create: bool,
) -> Result<bool, PgError> {
    let Some(publication) = PublicationState::read(conn, name).await? else {
        let sql = create_publication_sql_of(name, &specs.join(", "));
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
    let missing_specs: Vec<&str> = tables
        .iter()
        .zip(specs)
        .filter(|(t, _)| missing.contains(t))
        .map(|(_, s)| s.as_str())
        .collect();
    let sql = format!(
        "ALTER PUBLICATION {} ADD TABLE {}",
        quote_ident(name),
        missing_specs.join(", ")
    );
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
    create_publication_sql_of(name, &table_list(tables))
}

/// [`create_publication_sql`] of a table list already written.
fn create_publication_sql_of(name: &str, table_list: &str) -> String {
    format!(
        "CREATE PUBLICATION {} FOR TABLE {table_list} WITH (publish_via_partition_root = true)",
        quote_ident(name),
    )
}

/// `table` as a publication's DDL names it: `"s"."t"`, with `subset`'s
/// column list (every name quoted; an exclusion turned into the list of
/// the other columns) and row filter. Columns that do not exist, and a
/// column list without the table's key columns, are refused naming them.
async fn table_spec(
    conn: &mut PgConnection,
    table: &TableName,
    subset: Option<&TableSubset>,
    column_lists: bool,
) -> Result<String, PgError> {
    let mut spec = quote_table(table);
    let Some(subset) = subset else {
        return Ok(spec);
    };
    if let Some(selection) = &subset.columns {
        let kept = subset_columns(conn, table, selection)
            .await?
            .map_err(PgError::Setup)?;
        // Before PostgreSQL 15 a publication has no column lists: the
        // reader leaves the other columns out itself
        // ([`crate::local_subsets::LocalSubsets`]).
        if column_lists {
            let kept: Vec<String> = kept.iter().map(|c| quote_ident(c)).collect();
            spec.push_str(&format!(" ({})", kept.join(", ")));
        }
    }
    if let Some(filter) = &subset.row_filter {
        // SQL text from the configuration: it must stay inside its
        // parentheses.
        crate::incremental::check_filter_text(filter)
            .map_err(|e| PgError::Setup(format!("source.row_filters of {table}: {e}")))?;
        spec.push_str(&format!(" WHERE ({filter}\n)"));
    }
    Ok(spec)
}

/// The columns of `table` that `selection` keeps, in table order; the
/// inner `Err` says what is wrong with the selection (a column that does
/// not exist, a key column left out).
pub(crate) async fn subset_columns(
    conn: &mut PgConnection,
    table: &TableName,
    selection: &ColumnSelection,
) -> Result<Result<Vec<String>, String>, PgError> {
    let ctx = || format!("reading the columns of {table}");
    let rows = sqlx::query(
        "SELECT a.attname::text AS name,
                EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                        WHERE i.indrelid = a.attrelid AND (i.indisprimary OR i.indisreplident)
                          AND a.attnum = ANY (i.indkey)) AS key
         FROM pg_catalog.pg_attribute a
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = $2
           AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
         ORDER BY a.attnum",
    )
    .bind(&table.schema)
    .bind(&table.name)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| PgError::sql(ctx(), e))?;
    let mut columns: Vec<(String, bool)> = Vec::with_capacity(rows.len());
    for r in rows {
        columns.push((
            r.try_get("name").map_err(|e| PgError::sql(ctx(), e))?,
            r.try_get("key").map_err(|e| PgError::sql(ctx(), e))?,
        ));
    }
    let listed = match selection {
        ColumnSelection::Include(c) | ColumnSelection::Exclude(c) => c,
    };
    let unknown: Vec<&str> = listed
        .iter()
        .filter(|c| !columns.iter().any(|(n, _)| n == *c))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Ok(Err(format!(
            "source.columns of {table} names column(s) {} that {table} does not have",
            unknown.join(", ")
        )));
    }
    let keep = |c: &str| match selection {
        ColumnSelection::Include(list) => list.iter().any(|l| l == c),
        ColumnSelection::Exclude(list) => !list.iter().any(|l| l == c),
    };
    let dropped_keys: Vec<&str> = columns
        .iter()
        .filter(|(n, key)| *key && !keep(n))
        .map(|(n, _)| n.as_str())
        .collect();
    if !dropped_keys.is_empty() {
        return Ok(Err(format!(
            "source.columns of {table} leaves out its key column(s) {}: changes could not be keyed \
             (and PostgreSQL refuses updates and deletes of a table whose published columns \
             miss its replica identity)",
            dropped_keys.join(", ")
        )));
    }
    Ok(Ok(columns
        .into_iter()
        .filter(|(n, _)| keep(n))
        .map(|(n, _)| n)
        .collect()))
}

/// Makes `table`'s column list and row filter in publication `name` those
/// of `spec` (PostgreSQL 15+): drops and adds the table again in one
/// transaction, and keeps the change only when it changed what
/// `pg_publication_tables` shows.
async fn apply_subset(
    conn: &mut PgConnection,
    name: &str,
    table: &TableName,
    spec: &str,
) -> Result<(), PgError> {
    let ctx = || format!("setting the column list and row filter of {table} in publication {name}");
    sqlx::raw_sql("BEGIN")
        .execute(&mut *conn)
        .await
        .map_err(|e| PgError::sql(ctx(), e))?;
    let result = async {
        let before = published_row(conn, name, table).await?;
        let sql = format!(
            "ALTER PUBLICATION {pubname} DROP TABLE {t}; ALTER PUBLICATION {pubname} ADD TABLE {spec}",
            pubname = quote_ident(name),
            t = quote_table(table),
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map_err(|e| subset_refused(table, e))?;
        let after = published_row(conn, name, table).await?;
        Ok::<bool, PgError>(before != after)
    }
    .await;
    match result {
        Ok(true) => {
            sqlx::raw_sql("COMMIT")
                .execute(&mut *conn)
                .await
                .map_err(|e| PgError::sql(ctx(), e))?;
            tracing::info!(publication = name, table = %table,
                "set the column list and row filter of {table} in the publication; they apply to \
                 changes committed from now on (re-snapshot the table to bring a sink in line)");
            Ok(())
        }
        Ok(false) => {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
            Ok(())
        }
        Err(e) => {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
            Err(e)
        }
    }
}

/// A column list or row filter the server refused, with its reason.
fn subset_refused(table: &TableName, e: sqlx::Error) -> PgError {
    match &e {
        sqlx::Error::Database(db) => PgError::Setup(format!(
            "PostgreSQL refused the column list or row filter of {table} (source.columns, \
             source.row_filters): {}{}",
            db.message(),
            db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|d| d.detail())
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        )),
        _ => PgError::sql(format!("changing the publication for {table}"), e),
    }
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
