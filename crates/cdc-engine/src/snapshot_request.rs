//! Asking a pipeline for an incremental snapshot from outside the engine
//! that runs it: `cdc-engine snapshot` and `POST /snapshot`. Both check
//! the request against the configuration and the database, then write a
//! signal row, which the streaming engine reads through its slot wherever
//! it runs (see "Incremental snapshots" in `docs/snapshot.md`).

use cdc_core::{ErrorClass, TableName};
use cdc_postgres::conn::ConnParams;
use cdc_postgres::incremental::IncrementalRequest;
use serde_json::{json, Value};
use sqlx::Connection;

use crate::config::{Config, SnapshotMode};

/// Why a snapshot could not be asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The request itself is wrong (a table not captured, without a key,
    /// a filter the server does not accept) or the pipeline does not run
    /// incremental snapshots: asking again will not help.
    #[error("{0}")]
    Invalid(String),
    /// The database could not be asked (unreachable, refused): asking
    /// again later may work.
    #[error("{0}")]
    Unavailable(String),
}

/// A snapshot asked for: the signal row written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Queued {
    /// The signal row's id: the snapshot's id in
    /// `<metadata_schema>.incremental_snapshots`.
    pub signal: i64,
    /// The tables, in the order they are read.
    pub tables: Vec<TableName>,
    /// The filter on the chunk reads, if any.
    pub filter: Option<String>,
}

impl Queued {
    /// `{"signal": 7, "tables": ["public.t"], "where": "…"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "signal": self.signal,
            "tables": self.tables.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "where": self.filter,
        })
    }

    /// One line for a person.
    pub fn to_text(&self) -> String {
        let tables: Vec<String> = self.tables.iter().map(ToString::to_string).collect();
        let filter = self
            .filter
            .as_deref()
            .map(|f| format!(" where {f}"))
            .unwrap_or_default();
        format!(
            "incremental snapshot {} queued: {}{filter}",
            self.signal,
            tables.join(", ")
        )
    }
}

/// Asks the pipeline `config` describes for an incremental snapshot of
/// `tables` (rows matching `filter`, SQL text, when given): checks that it
/// runs incremental snapshots and captures every table, then connects with
/// its source settings and writes the signal row
/// ([`cdc_postgres::incremental::request_snapshot`], which checks the
/// tables and the filter against the database first).
pub async fn request_snapshot(
    config: &Config,
    tables: &[TableName],
    filter: Option<&str>,
) -> Result<Queued, RequestError> {
    let invalid = |m: String| Err(RequestError::Invalid(m));
    if config.snapshot.mode == SnapshotMode::SnapshotOnly {
        return invalid("the pipeline does not stream (snapshot.mode: snapshot_only): incremental snapshots run while streaming".into());
    }
    if !config.snapshot.incremental.enabled {
        return invalid(
            "incremental snapshots are not enabled for this pipeline (snapshot.incremental.enabled: false): the engine would not run one".into(),
        );
    }
    if tables.is_empty() {
        return invalid("name at least one table".into());
    }
    let uncaptured: Vec<String> = tables
        .iter()
        .filter(|t| !config.source.selects(t))
        .map(ToString::to_string)
        .collect();
    if !uncaptured.is_empty() {
        return invalid(format!(
            "not in source.tables (their changes are not captured, so they cannot be snapshotted while streaming): {}",
            uncaptured.join(", ")
        ));
    }
    let mut req = IncrementalRequest::new(tables.to_vec());
    req.filter = filter.map(str::to_owned);
    let params = ConnParams::parse(&config.source.url)
        .map_err(|e| classify(&e))?
        .pick_host()
        .await
        .map_err(|e| classify(&e))?;
    let mut conn = sqlx::PgConnection::connect_with(&params.sqlx_options_for("snapshot-request"))
        .await
        .map_err(|e| {
            RequestError::Unavailable(format!(
                "cannot connect to the source database: {}",
                cdc_core::error_chain(&e)
            ))
        })?;
    let signal = cdc_postgres::incremental::request_snapshot(
        &mut conn,
        &config.snapshot.metadata_schema,
        &config.source.publication.name,
        &req,
    )
    .await
    .map_err(|e| classify(&e))?;
    let _ = conn.close().await;
    Ok(Queued {
        signal,
        tables: req.tables,
        filter: req.filter,
    })
}

/// A setup problem (or any error retrying cannot fix) is the request's;
/// the rest is the database's.
fn classify(e: &cdc_postgres::PgError) -> RequestError {
    let text = cdc_core::error_chain(e).to_string();
    match e {
        cdc_postgres::PgError::Setup(_) => RequestError::Invalid(text),
        _ if e.class() == ErrorClass::Retryable => RequestError::Unavailable(text),
        _ => RequestError::Invalid(text),
    }
}
