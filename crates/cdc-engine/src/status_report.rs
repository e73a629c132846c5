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
use serde_json::{json, Value};
use sqlx::Connection;

use crate::config::{Config, SnapshotMode};

mod incremental;

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
        Ok(found) => {
            report.problems = judge(config, &found, options);
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

async fn read(config: &Config) -> Result<SourceReport, String> {
    let params = ConnParams::parse(&config.source.url).map_err(|e| e.to_string())?;
    let mut conn = sqlx::PgConnection::connect_with(&params.sqlx_options_for("status"))
        .await
        .map_err(|e| format!("connecting to {}: {e}", config.source.redacted_url()))?;
    let report = inspect(
        &mut conn,
        &config.source.slot.name,
        &config.source.publication.name,
        &config.snapshot.metadata_schema,
    )
    .await
    .map_err(|e| cdc_core::error_chain(&e));
    let _ = conn.close().await;
    report
}

/// The problems of what was found, each with what to do.
fn judge(config: &Config, found: &SourceReport, options: StatusOptions) -> Vec<String> {
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
                let missing: Vec<String> = config
                    .source
                    .tables
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

impl StatusReport {
    /// The report as text, one fact per line, ending with the verdict.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!("pipeline {}  ({})", self.pipeline, self.source));
        let Some(found) = &self.found else {
            line(format!(
                "status: unknown: {}",
                self.error.as_deref().unwrap_or("no answer")
            ));
            return out;
        };
        line(format!(
            "server: PostgreSQL {}.{}, WAL at {}",
            found.server_version / 10000,
            found.server_version % 10000,
            lsn_text(found.wal_lsn)
        ));
        if self.streams {
            match &found.slot {
                None => line(format!("slot {}: missing", self.slot_name)),
                Some(s) => {
                    let activity = if s.active {
                        format!(
                            "active (pid {})",
                            s.active_pid.map_or_else(|| "?".into(), |p| p.to_string())
                        )
                    } else {
                        "inactive".to_owned()
                    };
                    line(format!(
                        "slot {}: {activity}, confirmed_flush_lsn {}, lag {}, wal_status {}, safe_wal_size {}",
                        s.name,
                        lsn_text(s.confirmed_flush_lsn),
                        s.lag_bytes.map_or_else(|| "-".into(), bytes_text),
                        s.wal_status.as_deref().unwrap_or("-"),
                        s.safe_wal_size.map_or_else(
                            || "unlimited".into(),
                            |b| bytes_text(u64::try_from(b).unwrap_or(0))
                        ),
                    ));
                }
            }
            match &found.publication {
                None => line(format!("publication {}: missing", self.publication_name)),
                Some(p) => {
                    let tables = if p.all_tables {
                        "all tables".to_owned()
                    } else if p.tables.is_empty() {
                        "no tables".to_owned()
                    } else {
                        p.tables
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    line(format!("publication {}: {tables}", p.name));
                }
            }
        }
        match &found.snapshot {
            None => line("snapshot: no job".to_owned()),
            Some(snap) => {
                let job = &snap.job;
                line(format!(
                    "snapshot: {}, {}/{} chunks, {} rows, snapshot LSN {}, coordinator {}",
                    job.state.as_str(),
                    job.chunks_done,
                    job.chunks_total,
                    job.rows_done,
                    lsn_text(job.snapshot_lsn),
                    job.coordinator.as_deref().unwrap_or("-"),
                ));
                for t in &snap.tables {
                    let holders: Vec<String> = snap
                        .claims
                        .iter()
                        .filter(|c| c.table == t.table)
                        .map(|c| format!("{} ({})", c.instance, c.chunks))
                        .collect();
                    line(format!(
                        "  {}: chunks {}/{}, rows {}{}",
                        t.table,
                        t.chunks_done,
                        t.chunks_total,
                        t.rows,
                        if holders.is_empty() {
                            String::new()
                        } else {
                            format!(", claimed by {}", holders.join(", "))
                        }
                    ));
                }
            }
        }
        for l in incremental::lines(&found.incremental) {
            line(l);
        }
        for p in &self.problems {
            line(format!("problem: {p}"));
        }
        line(format!("status: {}", self.health.as_str()));
        out
    }

    /// The report as one JSON document.
    pub fn to_json(&self) -> Value {
        let found = self.found.as_ref();
        let slot = found.and_then(|f| f.slot.as_ref()).map(|s| {
            json!({
                "name": s.name,
                "plugin": s.plugin,
                "database": s.database,
                "active": s.active,
                "active_pid": s.active_pid,
                "confirmed_flush_lsn": s.confirmed_flush_lsn.map(|l| l.to_string()),
                "restart_lsn": s.restart_lsn.map(|l| l.to_string()),
                "wal_status": s.wal_status,
                "safe_wal_size": s.safe_wal_size,
                "lag_bytes": s.lag_bytes,
            })
        });
        let publication = found.and_then(|f| f.publication.as_ref()).map(|p| {
            json!({
                "name": p.name,
                "all_tables": p.all_tables,
                "via_root": p.via_root,
                "tables": p.tables.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        });
        let snapshot = found.and_then(|f| f.snapshot.as_ref()).map(|s| {
            let tables: Vec<Value> = s
                .tables
                .iter()
                .map(|t| {
                    let claims: Vec<Value> = s
                        .claims
                        .iter()
                        .filter(|c| c.table == t.table)
                        .map(|c| {
                            json!({
                                "instance": c.instance,
                                "chunks": c.chunks,
                                "heartbeat_age_seconds": c.heartbeat_age.as_secs_f64(),
                            })
                        })
                        .collect();
                    json!({
                        "table": t.table.to_string(),
                        "chunks_done": t.chunks_done,
                        "chunks_total": t.chunks_total,
                        "rows": t.rows,
                        "claims": claims,
                    })
                })
                .collect();
            json!({
                "state": s.job.state.as_str(),
                "snapshot_lsn": s.job.snapshot_lsn.map(|l| l.to_string()),
                "coordinator": s.job.coordinator,
                "chunks_done": s.job.chunks_done,
                "chunks_total": s.job.chunks_total,
                "rows_done": s.job.rows_done,
                "created_at_ms": unix_ms(s.job.created_at),
                "finished_at_ms": s.job.finished_at.and_then(unix_ms),
                "tables": tables,
            })
        });
        json!({
            "pipeline": self.pipeline,
            "source": self.source,
            "health": self.health.as_str(),
            "problems": self.problems,
            "error": self.error,
            "server_version": found.map(|f| f.server_version),
            "wal_lsn": found.and_then(|f| f.wal_lsn).map(|l| l.to_string()),
            "slot_name": self.slot_name,
            "slot": slot,
            "publication_name": self.publication_name,
            "publication": publication,
            "tables": self.tables.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "snapshot": snapshot,
            "incremental_snapshots": found.map(|f| incremental::json(&f.incremental)),
        })
    }
}

#[cfg(test)]
mod tests;
