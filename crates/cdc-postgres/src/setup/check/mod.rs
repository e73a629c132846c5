//! The preflight check: everything a pipeline needs from the server,
//! looked at without changing anything, every problem reported at once with
//! its fix.
//!
//! [`run_check`] is what `cdc-engine check` prints and what
//! [`PgSource::connect`](crate::PgSource::connect) runs first (it refuses
//! to start while a finding is [`Severity::Blocking`]).

mod objects;
mod report;
mod server;
mod tables;

use cdc_core::{ReplicaIdentity, TableName};
use sqlx::{Connection, PgConnection};

pub use objects::{MetadataState, PublicationState, SlotInfo};
pub use report::{CheckReport, Finding, Severity};
pub use server::{ServerState, MIN_SERVER_VERSION_NUM, MIN_VERSION_REASON};
pub use tables::TableState;

use crate::conn::ConnParams;
use crate::error::PgError;
use crate::load::SnapshotMode;
use crate::stream::PgSourceConfig;

/// What the pipeline needs from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRequest {
    /// Tables to stream.
    pub tables: Vec<TableName>,
    /// Publication name.
    pub publication: String,
    /// The engine may create or extend the publication.
    pub create_publication: bool,
    /// Replication slot name.
    pub slot: String,
    /// The engine may create the slot.
    pub create_slot: bool,
    /// Several instances share the slot (`source.slot.standby`).
    pub standby: bool,
    /// Replica identities the engine sets before streaming.
    pub replica_identity: Vec<(TableName, ReplicaIdentity)>,
    /// The pipeline streams (anything but `snapshot_only`): needs
    /// `wal_level`, REPLICATION, the publication and the slot.
    pub streams: bool,
    /// A snapshot runs: the tables it copies and its metadata schema.
    pub snapshot: Option<SnapshotNeeds>,
    /// Tables captured in part (column lists, row filters).
    pub subsets: Vec<(TableName, crate::selection::TableSubset)>,
}

/// What a snapshot needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotNeeds {
    /// Tables it copies.
    pub tables: Vec<TableName>,
    /// Schema of its coordination tables.
    pub metadata_schema: String,
}

impl CheckRequest {
    /// A streaming pipeline without snapshot that may create its publication and slot.
    pub fn new(
        tables: Vec<TableName>,
        publication: impl Into<String>,
        slot: impl Into<String>,
    ) -> Self {
        CheckRequest {
            tables,
            publication: publication.into(),
            create_publication: true,
            slot: slot.into(),
            create_slot: true,
            standby: false,
            replica_identity: Vec::new(),
            streams: true,
            snapshot: None,
            subsets: Vec::new(),
        }
    }

    fn configured_identity(&self, table: &TableName) -> Option<ReplicaIdentity> {
        self.replica_identity
            .iter()
            .find(|(t, _)| t == table)
            .map(|(_, r)| *r)
    }
}

impl From<&PgSourceConfig> for CheckRequest {
    fn from(cfg: &PgSourceConfig) -> Self {
        let mode = cfg.snapshot.mode;
        CheckRequest {
            tables: cfg.tables.clone(),
            publication: cfg.publication.clone(),
            create_publication: cfg.create_publication,
            slot: cfg.slot.clone(),
            create_slot: cfg.create_slot,
            standby: cfg.standby,
            replica_identity: cfg.replica_identity.clone(),
            streams: mode != SnapshotMode::SnapshotOnly,
            subsets: cfg.subsets.clone(),
            snapshot: (mode != SnapshotMode::Never).then(|| SnapshotNeeds {
                tables: cfg
                    .snapshot
                    .tables
                    .clone()
                    .unwrap_or_else(|| cfg.tables.clone()),
                metadata_schema: cfg.snapshot.metadata_schema.clone(),
            }),
        }
    }
}

/// Connects with `cfg.url` and runs [`run_check`] for `cfg`.
pub async fn check_source(cfg: &PgSourceConfig) -> Result<CheckReport, PgError> {
    let params = ConnParams::parse(&cfg.url)?.pick_host().await?;
    let mut conn = PgConnection::connect_with(&params.sqlx_options_for("check"))
        .await
        .map_err(|e| PgError::sql("connecting to PostgreSQL", e))?;
    let mut unmatched = Vec::new();
    let mut resolved;
    let cfg = if cfg.selection.is_empty() {
        cfg
    } else {
        let found = crate::selection::resolve(
            &mut conn,
            &cfg.tables,
            &cfg.selection,
            &cfg.snapshot.metadata_schema,
        )
        .await?;
        unmatched = found.unmatched;
        resolved = cfg.clone();
        resolved.tables = found.tables;
        &resolved
    };
    let report = run_check(&mut conn, &CheckRequest::from(cfg)).await;
    let standby = super::standby_findings(&mut conn, cfg).await;
    let _ = conn.close().await;
    let mut report = report?;
    for finding in standby? {
        report.push(finding);
    }
    for pattern in unmatched {
        report.push(Finding::warning(
            format!("table pattern {pattern}"),
            "matches no table",
            "check the pattern in source.tables (unquoted parts are lower-cased), or create a matching table",
        ));
    }
    if !cfg.selection.include.is_empty()
        && cfg.discovery_interval.is_some()
        && cfg.snapshot.mode != SnapshotMode::SnapshotOnly
        && !cfg.incremental.enabled
    {
        report.push(Finding::warning(
            "source.discovery",
            "a table created while the engine runs that matches a pattern of source.tables is \
             captured from when it is noticed: the rows written to it before are not copied",
            "set snapshot.incremental.enabled: true (they are then copied by an incremental snapshot)",
        ));
    }
    if cfg.tables.is_empty() {
        report.push(Finding::blocking(
            "source.tables",
            "the table selection (source.tables minus source.exclude_tables) matches no table",
            "check the patterns and exclusions",
        ));
    }
    Ok(report)
}

/// Looks at everything `req` needs and reports each finding. Changes
/// nothing. `Err` only when the catalog could not be read.
pub async fn run_check(
    conn: &mut PgConnection,
    req: &CheckRequest,
) -> Result<CheckReport, PgError> {
    let mut report = CheckReport::default();
    let server = ServerState::read(conn).await?;
    server::server_findings(&server, req, &mut report);

    let streamed: &[TableName] = if req.streams { &req.tables } else { &[] };
    let snapshot_tables: &[TableName] = req.snapshot.as_ref().map_or(&[], |s| &s.tables);
    let mut all: Vec<&TableName> = streamed.iter().collect();
    all.extend(snapshot_tables.iter().filter(|t| !streamed.contains(t)));

    let publication = if req.streams {
        PublicationState::read(conn, &req.publication).await?
    } else {
        None
    };
    let mut found_streamed = Vec::new();
    for name in all {
        let Some(t) = TableState::read(conn, name).await? else {
            report.push(tables::missing_table(name, &server.database));
            continue;
        };
        if !t.is_table() {
            report.push(tables::not_a_table(&t));
            continue;
        }
        let before = report.findings.len();
        if streamed.contains(name) {
            let configured = req.configured_identity(name);
            report
                .findings
                .extend(tables::identity_finding(&t, configured));
            report
                .findings
                .extend(tables::toast_finding(&t, configured));
            if t.kind == 'p' {
                report.push(tables::partition_finding(
                    &t,
                    &req.publication,
                    publication.as_ref(),
                    req.create_publication,
                ));
            }
        }
        if snapshot_tables.contains(name) {
            report
                .findings
                .extend(tables::select_finding(&t, &server.user));
        }
        if report.findings.len() == before {
            report.push(Finding::ok(format!("table {name}"), "ready"));
        }
        if streamed.contains(name) {
            found_streamed.push(t);
        }
    }

    if req.streams {
        subset_findings(conn, req, &server, &mut report).await?;
        objects::publication_findings(
            &server,
            &req.publication,
            req.create_publication,
            &req.tables,
            &found_streamed,
            publication.as_ref(),
            &mut report,
        );
        let slot = SlotInfo::read(conn, &req.slot).await?;
        report.push(objects::slot_finding(
            &server,
            &req.slot,
            req.create_slot,
            req.standby,
            slot.as_ref(),
        ));
    }
    if let Some(snapshot) = &req.snapshot {
        let m = MetadataState::read(conn, &snapshot.metadata_schema).await?;
        report.push(objects::metadata_finding(
            &server,
            &snapshot.metadata_schema,
            &m,
        ));
    }
    Ok(report)
}

/// Column lists and row filters: columns that exist and keep the key
/// (on every version), a server that has row filters (15+) and filters it
/// can parse.
async fn subset_findings(
    conn: &mut PgConnection,
    req: &CheckRequest,
    server: &ServerState,
    report: &mut CheckReport,
) -> Result<(), PgError> {
    if req.subsets.is_empty() {
        return Ok(());
    }
    // Before PostgreSQL 15 the reader drops excluded columns itself; a
    // row filter needs the server.
    let filters = server.version_num >= 150_000;
    if !filters && req.subsets.iter().any(|(_, s)| s.row_filter.is_some()) {
        report.push(Finding::blocking(
            "source.row_filters",
            format!(
                "row filters need PostgreSQL 15 or later; this server is {}",
                server.version_num
            ),
            "leave them out, or upgrade the server (source.columns works on every version)",
        ));
    }
    for (table, subset) in &req.subsets {
        if !req.tables.contains(table) {
            continue;
        }
        if let Some(selection) = &subset.columns {
            match super::publication::subset_columns(conn, table, selection).await? {
                Ok(_) => {}
                Err(problem) => report.push(Finding::blocking(
                    format!("columns of {table}"),
                    problem,
                    "fix source.columns (names are case-sensitive; keep the key columns)",
                )),
            }
        }
        if let Some(filter) = subset.row_filter.as_ref().filter(|_| filters) {
            if let Err(problem) = filter_parses(conn, table, filter).await? {
                report.push(Finding::blocking(
                    format!("row filter of {table}"),
                    format!("PostgreSQL cannot use `{filter}`: {problem}"),
                    "fix source.row_filters",
                ));
            }
        }
    }
    Ok(())
}

/// Whether the server parses and plans `filter` on `table`: `EXPLAIN`
/// in a read-only transaction that is rolled back. The inner `Err` is the
/// server's message.
async fn filter_parses(
    conn: &mut PgConnection,
    table: &TableName,
    filter: &str,
) -> Result<Result<(), String>, PgError> {
    let ctx = || format!("checking the row filter of {table}");
    if let Err(problem) = crate::incremental::check_filter_text(filter) {
        return Ok(Err(problem));
    }
    sqlx::raw_sql("BEGIN READ ONLY")
        .execute(&mut *conn)
        .await
        .map_err(|e| PgError::sql(ctx(), e))?;
    let sql = format!(
        "EXPLAIN SELECT 1 FROM {} WHERE ({filter}\n)",
        crate::ident::quote_table(table)
    );
    let result = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await;
    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
    match result {
        Ok(_) => Ok(Ok(())),
        Err(sqlx::Error::Database(db)) => Ok(Err(db.message().to_owned())),
        Err(e) => Err(PgError::sql(ctx(), e)),
    }
}
