//! A read-only look at what a pipeline keeps in its database: the
//! replication slot, the publication and the snapshot job. Behind
//! `cdc-engine status`; usable on its own with any connection that may
//! read `pg_replication_slots` and the coordination tables.
//!
//! ```no_run
//! # async fn example() -> Result<(), cdc_postgres::PgError> {
//! use cdc_postgres::conn::ConnParams;
//! use cdc_postgres::inspect::inspect;
//! use sqlx::Connection;
//!
//! let params = ConnParams::parse("postgres://cdc:secret@127.0.0.1/app")?;
//! let mut conn = sqlx::PgConnection::connect_with(&params.sqlx_options())
//!     .await
//!     .map_err(|e| cdc_postgres::PgError::sql("connecting", e))?;
//! let report = inspect(&mut conn, "cdc_slot", "cdc_pub", "cdc").await?;
//! if let Some(slot) = &report.slot {
//!     println!("active: {}, lag: {:?} bytes", slot.active, slot.lag_bytes);
//! }
//! # Ok(())
//! # }
//! ```

use cdc_core::{Lsn, TableName};
use sqlx::{PgConnection, Row};

use crate::error::PgError;
use crate::incremental::ProgressStore;
pub use crate::incremental::StoredIncremental;
use crate::snapshot::MetadataStore;
pub use crate::snapshot::{Claim, Job, JobState, TableProgress, DEFAULT_METADATA_SCHEMA};

/// A replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// The slot's name.
    pub name: String,
    /// Its output plugin (`pgoutput` for this toolkit's slots).
    pub plugin: Option<String>,
    /// The database it belongs to.
    pub database: Option<String>,
    /// Whether a walsender streams from it now.
    pub active: bool,
    /// The backend that streams from it, when active.
    pub active_pid: Option<i32>,
    /// How far its consumer has confirmed.
    pub confirmed_flush_lsn: Option<Lsn>,
    /// The oldest WAL it keeps.
    pub restart_lsn: Option<Lsn>,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// Bytes of WAL that can still be written before the slot is in danger
    /// of losing WAL it needs (`None`: unlimited, `max_slot_wal_keep_size`
    /// is -1).
    pub safe_wal_size: Option<i64>,
    /// The server's WAL position minus `confirmed_flush_lsn`.
    pub lag_bytes: Option<u64>,
}

/// A publication and the tables it publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationInfo {
    /// Its name.
    pub name: String,
    /// `FOR ALL TABLES`.
    pub all_tables: bool,
    /// `publish_via_partition_root`.
    pub via_root: bool,
    /// The tables it publishes (for a partitioned table published through
    /// its root, the root), ordered by schema and name.
    pub tables: Vec<TableName>,
}

/// A snapshot job and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    /// The job row.
    pub job: Job,
    /// Chunks and rows done per table.
    pub tables: Vec<TableProgress>,
    /// Who holds which chunks now.
    pub claims: Vec<Claim>,
}

/// What [`inspect`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceReport {
    /// `server_version_num`, e.g. 150018.
    pub server_version: i32,
    /// The server's current WAL position (on a standby: the last replayed).
    pub wal_lsn: Option<Lsn>,
    /// The slot, if it exists.
    pub slot: Option<SlotInfo>,
    /// The publication, if it exists.
    pub publication: Option<PublicationInfo>,
    /// The snapshot job of the slot, if there is one.
    pub snapshot: Option<SnapshotInfo>,
    /// The slot's incremental snapshots: every unfinished one and the
    /// [`RECENT_INCREMENTAL`] most recently finished tables.
    pub incremental: Vec<StoredIncremental>,
}

/// Finished incremental snapshot tables [`inspect`] reports.
pub const RECENT_INCREMENTAL: i64 = 20;

/// Reads the state of `slot`, `publication` and the snapshot job of `slot`
/// in the coordination tables of `metadata_schema` (the pipeline's
/// `snapshot.metadata_schema`, [`DEFAULT_METADATA_SCHEMA`] unless set).
/// Changes nothing.
pub async fn inspect(
    conn: &mut PgConnection,
    slot: &str,
    publication: &str,
    metadata_schema: &str,
) -> Result<SourceReport, PgError> {
    let metadata = &MetadataStore::new(metadata_schema);
    let ctx = |what: &'static str| move |e| PgError::sql(what, e);
    let server = sqlx::query(
        "SELECT current_setting('server_version_num')::int4 AS version,
                (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                      ELSE pg_current_wal_lsn() END)::text AS wal_lsn",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(ctx("reading the server's position"))?;
    let server_version: i32 = server
        .try_get("version")
        .map_err(ctx("reading the server's position"))?;
    let wal_lsn = parse_lsn(
        server
            .try_get("wal_lsn")
            .map_err(ctx("reading the server's position"))?,
    )?;

    let slot_row = sqlx::query(
        "SELECT plugin::text, database::text, active, active_pid,
                confirmed_flush_lsn::text AS confirmed, restart_lsn::text AS restart,
                wal_status, safe_wal_size,
                (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                      ELSE pg_current_wal_lsn() END - confirmed_flush_lsn)::int8 AS lag
         FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&mut *conn)
    .await
    .map_err(ctx("reading the replication slot"))?;
    let slot_name = slot;
    let slot = match slot_row {
        None => None,
        Some(r) => {
            let get = ctx("reading the replication slot");
            let lag: Option<i64> = r.try_get("lag").map_err(get)?;
            Some(SlotInfo {
                name: slot_name.to_owned(),
                plugin: r.try_get("plugin").map_err(get)?,
                database: r.try_get("database").map_err(get)?,
                active: r.try_get("active").map_err(get)?,
                active_pid: r.try_get("active_pid").map_err(get)?,
                confirmed_flush_lsn: parse_lsn(r.try_get("confirmed").map_err(get)?)?,
                restart_lsn: parse_lsn(r.try_get("restart").map_err(get)?)?,
                wal_status: r.try_get("wal_status").map_err(get)?,
                safe_wal_size: r.try_get("safe_wal_size").map_err(get)?,
                lag_bytes: lag.map(|l| u64::try_from(l).unwrap_or(0)),
            })
        }
    };

    let pub_row = sqlx::query(
        "SELECT puballtables, pubviaroot FROM pg_catalog.pg_publication WHERE pubname = $1",
    )
    .bind(publication)
    .fetch_optional(&mut *conn)
    .await
    .map_err(ctx("reading the publication"))?;
    let publication = match pub_row {
        None => None,
        Some(r) => {
            let get = ctx("reading the publication");
            let tables = sqlx::query(
                "SELECT schemaname::text AS s, tablename::text AS t
                 FROM pg_catalog.pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2",
            )
            .bind(publication)
            .fetch_all(&mut *conn)
            .await
            .map_err(get)?
            .into_iter()
            .map(|t| {
                Ok(TableName::new(
                    t.try_get::<String, _>("s").map_err(get)?,
                    t.try_get::<String, _>("t").map_err(get)?,
                ))
            })
            .collect::<Result<Vec<_>, PgError>>()?;
            Some(PublicationInfo {
                name: publication.to_owned(),
                all_tables: r.try_get("puballtables").map_err(get)?,
                via_root: r.try_get("pubviaroot").map_err(get)?,
                tables,
            })
        }
    };

    let snapshot = if metadata.exists(conn).await? {
        match metadata.job(conn, slot_name).await? {
            None => None,
            Some(job) => Some(SnapshotInfo {
                tables: metadata.progress(conn, &job.slot_name).await?.tables,
                claims: metadata.claims(conn, &job.slot_name).await?,
                job,
            }),
        }
    } else {
        None
    };
    let incremental = ProgressStore::new(metadata_schema)
        .recent(conn, slot_name, RECENT_INCREMENTAL)
        .await?;
    Ok(SourceReport {
        server_version,
        wal_lsn,
        slot,
        publication,
        snapshot,
        incremental,
    })
}

fn parse_lsn(text: Option<String>) -> Result<Option<Lsn>, PgError> {
    text.map(|t| {
        t.parse::<Lsn>()
            .map_err(|_| PgError::Protocol(format!("the server sent an unreadable LSN {t:?}")))
    })
    .transpose()
}
