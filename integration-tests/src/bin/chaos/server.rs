//! Queries of the server that tolerate its restarts: the snapshot job's
//! state, WAL positions, and the engine sessions to terminate.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use sqlx::{Connection, PgConnection};

use integration_tests::Cluster;

use crate::rng::Rng;

/// A connection to `database`, or `None` (the server may be restarting).
pub(crate) async fn try_connect(cluster: &Cluster, database: &str) -> Option<PgConnection> {
    let url = format!("{}?application_name=chaos-monitor", cluster.url(database));
    match tokio::time::timeout(Duration::from_secs(3), PgConnection::connect(&url)).await {
        Ok(Ok(c)) => Some(c),
        _ => None,
    }
}

pub(crate) async fn job_state(cluster: &Cluster, database: &str, slot: &str) -> Option<String> {
    let mut c = try_connect(cluster, database).await?;
    let exists: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('cdc.snapshot_jobs')::text")
            .fetch_one(&mut c)
            .await
            .ok()?;
    exists.as_ref()?;
    let state: Option<String> =
        sqlx::query_scalar("SELECT state::text FROM cdc.snapshot_jobs WHERE slot_name = $1")
            .bind(slot)
            .fetch_optional(&mut c)
            .await
            .ok()?;
    let _ = c.close().await;
    state
}

/// `(snapshot, state (error))` of every table of the slot's incremental
/// snapshots.
pub(crate) async fn incremental_states(
    cluster: &Cluster,
    database: &str,
    slot: &str,
) -> Option<Vec<(i64, String)>> {
    let mut c = try_connect(cluster, database).await?;
    let states = sqlx::query_as(
        "SELECT snapshot_id, state || coalesce(' (' || error || ')', '') \
         FROM cdc.incremental_snapshots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_all(&mut c)
    .await
    .ok();
    let _ = c.close().await;
    states
}

pub(crate) async fn current_wal_lsn(cluster: &Cluster, database: &str) -> anyhow::Result<u64> {
    let mut c = try_connect(cluster, database)
        .await
        .context("connecting to read the WAL position")?;
    let lsn: i64 = sqlx::query_scalar("SELECT (pg_current_wal_lsn() - '0/0')::bigint")
        .fetch_one(&mut c)
        .await?;
    let _ = c.close().await;
    Ok(lsn as u64)
}

pub(crate) async fn slot_confirmed(cluster: &Cluster, database: &str, slot: &str) -> Option<u64> {
    let mut c = try_connect(cluster, database).await?;
    let v: Option<i64> = sqlx::query_scalar(
        "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&mut c)
    .await
    .ok()
    .flatten();
    let _ = c.close().await;
    v.map(|l| l as u64)
}

/// A session of `pg_stat_activity`: pid, application_name, backend_type,
/// state, the start of its query.
type Session = (i32, String, String, String, String);

/// Terminates up to `count` sessions of the engines in `database`: picks a
/// kind at random (snapshot reader, walsender, idle in transaction, other
/// client sessions), then a session of that kind. Returns what it
/// terminated.
pub(crate) async fn terminate_backends(
    cluster: &Cluster,
    database: &str,
    count: u64,
    r: &mut Rng,
) -> anyhow::Result<Vec<String>> {
    let mut c = try_connect(cluster, database)
        .await
        .context("connecting to pick sessions")?;
    let rows: Vec<Session> = sqlx::query_as(
        "SELECT pid, application_name::text, coalesce(backend_type, '')::text, \
         coalesce(state, '')::text, left(regexp_replace(coalesce(query, ''), '\\s+', ' ', 'g'), 70) \
         FROM pg_stat_activity \
         WHERE datname = $1 AND application_name LIKE 'chaos-inst-%' AND pid <> pg_backend_pid()",
    )
    .bind(database)
    .fetch_all(&mut c)
    .await?;
    let kind = |row: &Session| -> &'static str {
        if row.2 == "walsender" {
            "walsender"
        } else if row.4.starts_with("COPY") && row.3 == "active" {
            "reader"
        } else if row.3.starts_with("idle in transaction") {
            "idle-in-transaction"
        } else {
            "session"
        }
    };
    let mut by_kind: BTreeMap<&str, Vec<&Session>> = BTreeMap::new();
    for row in &rows {
        by_kind.entry(kind(row)).or_default().push(row);
    }
    let mut done = Vec::new();
    for _ in 0..count {
        let kinds: Vec<&str> = by_kind
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if kinds.is_empty() {
            break;
        }
        let k = *r.pick(&kinds);
        let list = by_kind.get_mut(k).expect("kind listed");
        let row = list.remove(r.below(list.len() as u64) as usize);
        let ok: Option<bool> = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(row.0)
            .fetch_one(&mut c)
            .await
            .ok();
        done.push(format!(
            "{k} pid {} of {} ({}, {}): {} -> {ok:?}",
            row.0, row.1, row.2, row.3, row.4
        ));
    }
    let _ = c.close().await;
    Ok(done)
}
