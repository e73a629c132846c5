//! `cdc-engine resnapshot --config <file>`: the way out of an invalidated
//! replication slot. It drops the pipeline's slot when the server has
//! invalidated it (refusing a healthy slot unless `--force`, and a slot in
//! use), so that the next `cdc-engine run` creates a new slot and, with
//! `snapshot.mode: initial`, copies the tables anew (a completed snapshot
//! job whose slot is gone is never reused).

use std::path::Path;
use std::time::Duration;

use cdc_postgres::conn::ConnParams;
use cdc_postgres::invalidation::INVALIDATION_SQL;
use sqlx::{Connection, PgConnection, Row};

use crate::config::{Config, SnapshotMode};
use crate::secrets::Secrets;

/// The longest connecting and each query may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Exit status: the slot was dropped (or there was none).
const EXIT_OK: u8 = 0;
/// Exit status: refused (a healthy slot without `--force`, a slot in use).
const EXIT_REFUSED: u8 = 1;
/// Exit status: invalid configuration, unreachable server.
const EXIT_ERROR: u8 = 2;

/// Runs the command; prints what it did on stdout, problems on stderr, and
/// returns the exit status.
pub fn main(path: &Path, force: bool) -> u8 {
    let (cfg, runtime) = match crate::one_shot::prepare(path) {
        Ok(prepared) => prepared,
        Err(message) => {
            eprintln!("{message}");
            return EXIT_ERROR;
        }
    };
    let secrets = Secrets::from_config(&cfg);
    let (code, lines) = match runtime.block_on(resnapshot(&cfg, force)) {
        Ok(outcome) => outcome,
        Err(e) => (EXIT_ERROR, vec![format!("error: {e}")]),
    };
    for line in lines {
        let line = secrets.scrub(&line);
        if code == EXIT_OK {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    }
    if code == EXIT_OK {
        for warning in config_warnings(&cfg) {
            eprintln!("warning: {warning}");
        }
    }
    code
}

/// What the configuration must say for the next start to copy the tables
/// into a new slot.
fn config_warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.snapshot.mode != SnapshotMode::Initial {
        out.push(
            "snapshot.mode is not `initial`: set it, or the next start does not copy the tables \
             (it only streams from the new slot)"
                .to_owned(),
        );
    }
    if !cfg.source.slot.create {
        out.push(
            "source.slot.create is false: set it to true for the next start, which must create \
             the slot itself (to export its snapshot)"
                .to_owned(),
        );
    }
    out
}

async fn resnapshot(cfg: &Config, force: bool) -> Result<(u8, Vec<String>), String> {
    let slot = &cfg.source.slot.name;
    let options = ConnParams::parse(&cfg.source.url)
        .map_err(|e| format!("source.url: {e}"))?
        .pick_host()
        .await
        .map_err(|e| format!("connecting to the source: {e}"))?
        .sqlx_options_for("resnapshot");
    let mut conn = tokio::time::timeout(TIMEOUT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| format!("could not connect within {TIMEOUT:?}"))?
        .map_err(|e| format!("connecting to the source: {e}"))?;
    let sql = format!(
        "SELECT s.active, s.active_pid, ({INVALIDATION_SQL}) AS invalidation \
         FROM pg_catalog.pg_replication_slots AS s WHERE s.slot_name = $1"
    );
    let row = tokio::time::timeout(
        TIMEOUT,
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(slot)
            .fetch_optional(&mut conn),
    )
    .await
    .map_err(|_| format!("reading slot {slot} took over {TIMEOUT:?}"))?
    .map_err(|e| format!("reading slot {slot}: {e}"))?;
    let next_start = "the next `cdc-engine run` creates a new slot and copies the tables anew";
    let Some(row) = row else {
        let _ = conn.close().await;
        return Ok((
            EXIT_OK,
            vec![format!(
                "replication slot `{slot}` does not exist: nothing to drop; {next_start}"
            )],
        ));
    };
    let get_err = |e: sqlx::Error| format!("reading slot {slot}: {e}");
    let active: bool = row.try_get("active").map_err(get_err)?;
    let pid: Option<i32> = row.try_get("active_pid").map_err(get_err)?;
    let invalidation: Option<String> = row.try_get("invalidation").map_err(get_err)?;
    if active {
        let _ = conn.close().await;
        let pid = pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        return Ok((
            EXIT_REFUSED,
            vec![format!(
                "replication slot `{slot}` is in use (walsender pid {pid}): stop the engine first"
            )],
        ));
    }
    if invalidation.is_none() && !force {
        let _ = conn.close().await;
        return Ok((
            EXIT_REFUSED,
            vec![format!(
                "replication slot `{slot}` is healthy (not invalidated): no re-snapshot is needed, \
                 nothing dropped. To drop it and copy the tables anew anyway, pass --force"
            )],
        ));
    }
    tokio::time::timeout(
        TIMEOUT,
        sqlx::query("SELECT pg_catalog.pg_drop_replication_slot($1)")
            .bind(slot)
            .execute(&mut conn),
    )
    .await
    .map_err(|_| format!("dropping slot {slot} took over {TIMEOUT:?}"))?
    .map_err(|e| format!("dropping slot {slot}: {e}"))?;
    let _ = conn.close().await;
    let why = invalidation.map_or_else(
        || "healthy, --force".to_owned(),
        |r| format!("invalidated: {r}"),
    );
    Ok((
        EXIT_OK,
        vec![format!(
            "dropped replication slot `{slot}` ({why}); {next_start}"
        )],
    ))
}
