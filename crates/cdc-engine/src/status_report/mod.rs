//! `cdc-engine status`: what the pipeline's slot, publication and snapshot
//! job look like in the database right now, judged healthy or degraded,
//! as text for a person or JSON for a script.
//!
//! It connects with the pipeline's own source settings and only reads.
//! Exit status: [`Health::exit_code`].

use std::time::SystemTime;

use cdc_core::{Lsn, TableName};
use cdc_postgres::conn::ConnParams;
use cdc_postgres::inspect::{inspect, JobState, SlotInfo, SourceReport};
use cdc_postgres::selection::Resolved;
use sqlx::Connection;

use crate::config::{Config, SnapshotMode};

mod incremental;
mod render;

/// Default `--max-lag`: a slot further behind than this is degraded.
const DEFAULT_MAX_LAG_BYTES: u64 = 1 << 30;

/// The verdict of `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// Everything the pipeline needs is there and moving.
    Healthy,
    /// Something needs attention; the problems say what.
    Degraded,
    /// The database could not be asked.
    Unknown,
}

impl Health {
    /// `healthy`, `degraded` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unknown => "unknown",
        }
    }

    /// 0 healthy, 1 degraded, 2 cannot tell.
    pub fn exit_code(self) -> u8 {
        match self {
            Health::Healthy => 0,
            Health::Degraded => 1,
            Health::Unknown => 2,
        }
    }
}

/// A status report: what was found and what is wrong with it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StatusReport {
    /// The pipeline's name.
    pub pipeline: String,
    /// The source URL with its password masked.
    pub source: String,
    /// The slot's configured name.
    pub slot_name: String,
    /// The publication's configured name.
    pub publication_name: String,
    /// Whether the pipeline streams (every mode but `snapshot_only`).
    pub streams: bool,
    /// The configured tables.
    pub tables: Vec<TableName>,
    /// What the database holds; `None` when it could not be read.
    pub found: Option<SourceReport>,
    /// Why the database could not be read.
    pub error: Option<String>,
    /// One line per problem, each saying what to do.
    pub problems: Vec<String>,
    /// The verdict.
    pub health: Health,
}

/// Options of `cdc-engine status`. Start from [`StatusOptions::default`]
/// (a lag of 1 GiB is degraded, as `--max-lag` defaults to) and set the
/// fields to change.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct StatusOptions {
    /// A slot further behind than this many bytes is degraded.
    pub max_lag_bytes: u64,
}

impl Default for StatusOptions {
    fn default() -> Self {
        Self {
            max_lag_bytes: DEFAULT_MAX_LAG_BYTES,
        }
    }
}

/// Connects with `config`'s source settings and reports.
pub async fn status(config: &Config, options: StatusOptions) -> StatusReport {
    let found = read(config).await;
    let mut report = StatusReport {
        pipeline: config.name.clone(),
        source: config.source.redacted_url(),
        slot_name: config.source.slot.name.clone(),
        publication_name: config.source.publication.name.clone(),
        streams: config.snapshot.mode != SnapshotMode::SnapshotOnly,
        tables: config.source.tables.clone(),
        found: None,
        error: None,
        problems: Vec::new(),
        health: Health::Unknown,
    };
    match found {
        Ok((found, selected)) => {
            for pattern in &selected.unmatched {
                report.problems.push(format!(
                    "table pattern {pattern} in source.tables matches no table"
                ));
            }
            report.tables = selected.tables;
            let tables = report.tables.clone();
            report
                .problems
                .extend(judge(config, &found, &tables, options));
            report.health = if report.problems.is_empty() {
                Health::Healthy
            } else {
                Health::Degraded
            };
            report.found = Some(found);
        }
        Err(e) => report.error = Some(e),
    }
    report
}

/// What `status` reads: the slot, publication and snapshot job, and the
/// tables the selection resolves to now.
async fn read(config: &Config) -> Result<(SourceReport, Resolved), String> {
    let params = ConnParams::parse(&config.source.url)
        .map_err(|e| e.to_string())?
        .pick_host()
        .await
        .map_err(|e| format!("connecting to {}: {e}", config.source.redacted_url()))?;
    let mut conn = sqlx::PgConnection::connect_with(&params.sqlx_options_for("status"))
        .await
        .map_err(|e| format!("connecting to {}: {e}", config.source.redacted_url()))?;
    let selected = cdc_postgres::selection::resolve(
        &mut conn,
        &config.source.tables,
        &config.source.selection(),
        &config.snapshot.metadata_schema,
    )
    .await
    .map_err(|e| cdc_core::error_chain(&e))?;
    let report = inspect(
        &mut conn,
        &config.source.slot.name,
        &config.source.publication.name,
        &config.snapshot.metadata_schema,
    )
    .await
    .map_err(|e| cdc_core::error_chain(&e));
    let _ = conn.close().await;
    report.map(|r| (r, selected))
}

/// The problems of what was found, each with what to do.
fn judge(
    config: &Config,
    found: &SourceReport,
    tables: &[TableName],
    options: StatusOptions,
) -> Vec<String> {
    let mut problems = Vec::new();
    let streams = config.snapshot.mode != SnapshotMode::SnapshotOnly;
    let slot_name = &config.source.slot.name;
    let pub_name = &config.source.publication.name;
    if streams {
        match &found.slot {
            None => problems.push(format!(
                "slot {slot_name} does not exist: nothing is retaining changes for this pipeline \
                 (`cdc-engine run` creates it when source.slot.create is true)"
            )),
            Some(slot) => {
                // While a snapshot is being read the slot waits, held by
                // no walsender: streaming starts when the copy is done.
                let snapshot_running = found
                    .snapshot
                    .as_ref()
                    .is_some_and(|s| matches!(s.job.state, JobState::Planning | JobState::Running));
                judge_slot(slot, snapshot_running, options, &mut problems);
            }
        }
        match &found.publication {
            None => problems.push(format!(
                "publication {pub_name} does not exist \
                 (`cdc-engine run` creates it when source.publication.create is true)"
            )),
            Some(p) if !p.all_tables => {
                let missing: Vec<String> = tables
                    .iter()
                    .filter(|t| !p.tables.contains(t))
                    .map(ToString::to_string)
                    .collect();
                if !missing.is_empty() {
                    problems.push(format!(
                        "publication {pub_name} does not publish {}: changes to it are not captured \
                         (`cdc-engine run` adds it when source.publication.create is true)",
                        missing.join(", ")
                    ));
                }
            }
            Some(_) => {}
        }
    }
    problems.extend(incremental::problems(&found.incremental));
    if let Some(snap) = &found.snapshot {
        if snap.job.state == JobState::Failed {
            problems.push(format!(
                "the snapshot job of slot {slot_name} failed: the coordinator's log says why"
            ));
        }
        if matches!(snap.job.state, JobState::Planning | JobState::Running) {
            let timeout = config.snapshot.claim_timeout;
            for claim in &snap.claims {
                if claim.heartbeat_age > timeout {
                    problems.push(format!(
                        "instance {} has not confirmed its {} chunk(s) of {} for {}s \
                         (claim_timeout {}s): another instance will take them over",
                        claim.instance,
                        claim.chunks,
                        claim.table,
                        claim.heartbeat_age.as_secs(),
                        timeout.as_secs()
                    ));
                }
            }
        }
    }
    problems
}

fn judge_slot(
    slot: &SlotInfo,
    snapshot_running: bool,
    options: StatusOptions,
    problems: &mut Vec<String>,
) {
    let name = &slot.name;
    if slot.plugin.as_deref() != Some("pgoutput") {
        problems.push(format!(
            "slot {name} uses the plugin {} instead of pgoutput: drop it \
             (SELECT pg_drop_replication_slot('{name}');) and let the engine create it",
            slot.plugin.as_deref().unwrap_or("(none: a physical slot)")
        ));
    }
    match slot.wal_status.as_deref() {
        Some("lost") => problems.push(format!(
            "slot {name} has lost WAL it needs (wal_status lost): changes are missing; \
             drop it and start again with a snapshot"
        )),
        Some("unreserved") => problems.push(format!(
            "slot {name} is about to lose WAL it needs (wal_status unreserved, \
             max_slot_wal_keep_size exceeded): start the engine or raise max_slot_wal_keep_size"
        )),
        _ => {}
    }
    if !slot.active && !snapshot_running {
        problems.push(format!(
            "slot {name} is inactive: no engine streams from it, and the server keeps WAL \
             from {} on for it (start `cdc-engine run`)",
            lsn_text(slot.restart_lsn)
        ));
    }
    if let Some(lag) = slot.lag_bytes.filter(|l| *l > options.max_lag_bytes) {
        problems.push(format!(
            "slot {name} is {} behind the server (more than --max-lag {})",
            bytes_text(lag),
            bytes_text(options.max_lag_bytes)
        ));
    }
}

fn lsn_text(lsn: Option<Lsn>) -> String {
    lsn.map_or_else(|| "-".to_owned(), |l| l.to_string())
}

/// `1234 bytes`, `1.2 KiB`, `3.4 MiB`, `5.6 GiB`.
fn bytes_text(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Parses a byte count: `1048576`, `512KiB`, `64MiB`, `1GiB`, `1GB`, `2G`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 1048576, 512MiB, 1GiB)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?} (KiB, MiB, GiB, TiB)")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn unix_ms(t: SystemTime) -> Option<u64> {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
