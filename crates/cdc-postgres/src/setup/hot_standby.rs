//! Streaming from a hot standby (logical decoding in recovery, PostgreSQL
//! 16 and later): what a standby can do, and a clear refusal of what it
//! cannot. A standby is read-only, so everything that writes needs the
//! primary: the heartbeat (`pg_logical_emit_message`) is written there when
//! `primary_url` is set, and comes back through the standby's slot like any
//! change; the initial snapshot (its coordination tables, the exported
//! snapshot) and incremental snapshots (the signal table) are refused.

use sqlx::{PgConnection, Row};

use super::check::Finding;
use crate::error::PgError;
use crate::load::SnapshotMode;
use crate::stream::PgSourceConfig;

/// Whether the server of `conn` is in recovery (a standby), and its
/// `server_version_num`.
async fn recovery(conn: &mut PgConnection) -> Result<(bool, i32), PgError> {
    let row = sqlx::query(
        "SELECT pg_catalog.pg_is_in_recovery() AS recovery, \
         current_setting('server_version_num')::int4 AS version",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| PgError::sql("checking whether the server is a standby", e))?;
    let get = |e| PgError::sql("checking whether the server is a standby", e);
    Ok((
        row.try_get("recovery").map_err(get)?,
        row.try_get("version").map_err(get)?,
    ))
}

/// Refuses what a standby cannot do for `cfg` (every problem in one
/// message); `Ok(true)` on a standby that can stream, `Ok(false)` on a
/// primary.
pub(crate) async fn check_hot_standby(
    conn: &mut PgConnection,
    cfg: &PgSourceConfig,
) -> Result<bool, PgError> {
    let (standby, version) = recovery(conn).await?;
    if !standby {
        return Ok(false);
    }
    let problems: Vec<String> = problems(version, cfg)
        .into_iter()
        .map(|(what, fix)| format!("{what}: {fix}"))
        .collect();
    if problems.is_empty() {
        tracing::info!(
            "source.url is a hot standby: decoding there, heartbeats on source.primary_url"
        );
        return Ok(true);
    }
    Err(PgError::Setup(format!(
        "source.url is a hot standby (pg_is_in_recovery()), which is read-only: {}",
        problems.join("; ")
    )))
}

/// What `cfg` asks of a standby of `version` that it cannot do: (the
/// problem, its fix).
fn problems(version: i32, cfg: &PgSourceConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if version < 160_000 {
        out.push((
            format!(
                "logical decoding on a standby needs PostgreSQL 16 or later (this server is {version})"
            ),
            "point source.url at the primary".to_owned(),
        ));
        return out;
    }
    if cfg.snapshot.mode != SnapshotMode::Never {
        out.push((
            "the initial snapshot needs the primary (it writes its coordination tables and exports \
             a snapshot with the slot)"
                .to_owned(),
            "set snapshot.mode: never, or take the snapshot with source.url on the primary"
                .to_owned(),
        ));
    }
    if cfg.incremental.enabled {
        out.push((
            "incremental snapshots write their signal table".to_owned(),
            "turn them off, or point source.url at the primary".to_owned(),
        ));
    }
    if cfg.heartbeat_interval.is_some() && cfg.primary_url.is_none() {
        out.push((
            "heartbeats are written with pg_logical_emit_message, which a standby refuses"
                .to_owned(),
            "set source.primary_url to the primary's URL of the same database (heartbeats are \
             written there and come back through the standby's slot), or heartbeat: { enabled: \
             false }"
                .to_owned(),
        ));
    }
    if cfg.slot_failover {
        out.push((
            "a slot on a standby cannot be a failover slot".to_owned(),
            "leave source.slot.failover out".to_owned(),
        ));
    }
    out
}

/// What `cdc-engine check` says about a hot standby: nothing on a primary;
/// on a standby, one line saying decoding happens there, each thing `cfg`
/// asks that a standby cannot do (blocking), and `hot_standby_feedback`
/// off (a warning: the primary may then vacuum away catalog rows the slot
/// still needs, and the standby invalidates the slot).
pub(crate) async fn standby_findings(
    conn: &mut PgConnection,
    cfg: &PgSourceConfig,
) -> Result<Vec<Finding>, PgError> {
    let (standby, version) = recovery(conn).await?;
    if !standby {
        return Ok(Vec::new());
    }
    let feedback: String = sqlx::query_scalar("SELECT current_setting('hot_standby_feedback')")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| PgError::sql("reading hot_standby_feedback", e))?;
    Ok(findings(version, cfg, feedback == "on"))
}

fn findings(version: i32, cfg: &PgSourceConfig, feedback: bool) -> Vec<Finding> {
    const SUBJECT: &str = "hot standby";
    let problems = problems(version, cfg);
    let mut out = Vec::new();
    if problems.is_empty() {
        out.push(Finding::ok(
            SUBJECT,
            "source.url is a hot standby: changes are decoded there, heartbeats written on \
             source.primary_url",
        ));
    }
    out.extend(
        problems
            .into_iter()
            .map(|(what, fix)| Finding::blocking(SUBJECT, what, fix)),
    );
    if version >= 160_000 && !feedback {
        out.push(Finding::warning(
            "hot_standby_feedback",
            "off on the standby: the primary may remove catalog rows the slot still needs, and \
             the standby then invalidates the slot (a new snapshot is needed)",
            "ALTER SYSTEM SET hot_standby_feedback = on; SELECT pg_reload_conf(); (on the \
             standby, which should stream through a physical slot: primary_slot_name)",
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg() -> PgSourceConfig {
        let mut c = PgSourceConfig::new("postgres://u@h/db", Vec::new(), "p", "s");
        c.snapshot.mode = SnapshotMode::Never;
        c.heartbeat_interval = None;
        c
    }

    #[test]
    fn a_standby_streams_without_writes() {
        assert!(problems(160_000, &cfg()).is_empty());
        let mut with_primary = cfg();
        with_primary.heartbeat_interval = Some(std::time::Duration::from_secs(10));
        with_primary.primary_url = Some("postgres://u@primary/db".into());
        assert!(problems(170_000, &with_primary).is_empty());
    }

    #[test]
    fn what_needs_the_primary_is_named() {
        let mut c = cfg();
        c.snapshot.mode = SnapshotMode::Initial;
        c.heartbeat_interval = Some(std::time::Duration::from_secs(10));
        let p = problems(160_000, &c);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].1.contains("snapshot.mode: never"), "{p:?}");
        assert!(p[1].1.contains("source.primary_url"), "{p:?}");
        let old = problems(150_000, &cfg());
        assert!(old[0].0.contains("PostgreSQL 16 or later"), "{old:?}");
    }

    #[test]
    fn check_names_each_problem_and_missing_feedback() {
        use crate::setup::check::Severity;
        let ok = findings(160_000, &cfg(), true);
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].severity, Severity::Ok);
        let mut c = cfg();
        c.heartbeat_interval = Some(std::time::Duration::from_secs(10));
        let f = findings(170_000, &c, false);
        let severities: Vec<Severity> = f.iter().map(|f| f.severity).collect();
        assert_eq!(severities, [Severity::Blocking, Severity::Warning], "{f:?}");
        assert!(f[0]
            .fix
            .as_deref()
            .unwrap_or_default()
            .contains("source.primary_url"));
        assert_eq!(f[1].subject, "hot_standby_feedback");
    }
}
