//! Asking for an incremental snapshot from outside the engine (its CLI,
//! its HTTP endpoint, any program): the request is checked against the
//! database, then written as a signal row, which the streaming engine
//! reads through its slot wherever it runs.

use cdc_core::TableName;
use sqlx::{AssertSqlSafe, PgConnection};

use super::chunks::choose_key;
use super::filter::validate_filter;
use super::progress::SIGNAL_TABLE;
use super::request::snapshot_payload;
use crate::error::PgError;
use crate::ident::quote_ident;
use crate::snapshot::describe_published_table;

/// An incremental snapshot to ask for ([`request_snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct IncrementalRequest {
    /// The tables, read one after the other in this order.
    pub tables: Vec<TableName>,
    /// Only rows matching this SQL condition on the table's columns
    /// (`updated_at > '2024-01-01'`); `None`: every row.
    pub filter: Option<String>,
}

impl IncrementalRequest {
    /// A snapshot of every row of `tables`.
    pub fn new(tables: Vec<TableName>) -> Self {
        Self {
            tables,
            filter: None,
        }
    }

    /// Only rows matching `filter` (SQL text).
    pub fn with_filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }
}

/// Checks `req` against the database and writes its signal row into
/// `<metadata_schema>.signals`; returns the row's id, which numbers the
/// snapshot in `<metadata_schema>.incremental_snapshots` once an engine
/// streaming from a slot of this database read it.
///
/// Checked first, each failure a [`PgError::Setup`] naming the problem:
/// the request names a table; the signal table exists (an engine with
/// incremental snapshots enabled created it); each table exists, has a key
/// to walk its chunks by (a primary key or a unique index on `NOT NULL`
/// columns, among the columns `publication` publishes), and `filter` is a
/// condition on it the server parses and plans
/// ([`validate_filter`](super::validate_filter)). Whether the tables are
/// captured (in the engine's `source.tables`) is for the caller to check.
pub async fn request_snapshot(
    conn: &mut PgConnection,
    metadata_schema: &str,
    publication: &str,
    req: &IncrementalRequest,
) -> Result<i64, PgError> {
    if req.tables.is_empty() {
        return Err(PgError::Setup("the request names no table".into()));
    }
    let signals = format!(
        "{}.{}",
        quote_ident(metadata_schema),
        quote_ident(SIGNAL_TABLE)
    );
    let ctx = |what: &'static str| move |e| PgError::sql(what, e);
    let exists: bool = sqlx::query_scalar("SELECT pg_catalog.to_regclass($1) IS NOT NULL")
        .bind(&signals)
        .fetch_one(&mut *conn)
        .await
        .map_err(ctx("looking for the signal table"))?;
    if !exists {
        return Err(PgError::Setup(format!(
            "the signal table {signals} does not exist: enable snapshot.incremental and start \
             the engine once (it creates the table)"
        )));
    }
    let database: String = sqlx::query_scalar("SELECT pg_catalog.current_database()::text")
        .fetch_one(&mut *conn)
        .await
        .map_err(ctx("reading the database name"))?;
    for table in &req.tables {
        let info = describe_published_table(
            conn,
            &database,
            table,
            publication,
            &crate::local_subsets::LocalSubsets::default(),
        )
        .await?;
        choose_key(conn, &info.schema).await?;
        if let Some(filter) = &req.filter {
            validate_filter(conn, table, filter).await?;
        }
    }
    let payload = snapshot_payload(&req.tables, req.filter.as_deref()).to_string();
    let sql = format!(
        "INSERT INTO {signals} (kind, payload) VALUES ('snapshot', $1::pg_catalog.jsonb) RETURNING id"
    );
    sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(payload)
        .fetch_one(&mut *conn)
        .await
        .map_err(ctx("writing the signal row"))
}
