//! [`StatusReport`] as text for a person and as JSON for a script.

use serde_json::{json, Value};

use super::{bytes_text, lsn_text, unix_ms, StatusReport};

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
        line(format!(
            "tables: {}",
            self.tables
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
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
        for l in super::incremental::lines(&found.incremental) {
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
            "incremental_snapshots": found.map(|f| super::incremental::json(&f.incremental)),
        })
    }
}
