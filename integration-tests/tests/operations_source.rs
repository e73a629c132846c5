//! The source in operation: heartbeats, standby takeover, reconnection
//! after a server restart, acknowledgement on SIGTERM, and the definite
//! errors that stop the engine. Each test runs the real `cdc-engine` binary
//! with a file sink against a real PostgreSQL (the shared test cluster, or a
//! [`Cluster`] of its own when the server is restarted or reconfigured).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc_core::Lsn;
use integration_tests::pipelines::Pipeline;
use integration_tests::replay::{self, apply, read_changes, Change};
use integration_tests::{
    read_jsonl, unique_suffix, wait_for, wait_streaming, wait_until, Cluster, Engine, Mix,
    RowChange, TempDir, TestDb, Workload, Writers,
};
use serde_json::Value as Json;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

const TABLE_DDL: &str = "CREATE TABLE public.t (id int PRIMARY KEY, v int NOT NULL, note text);
     ALTER TABLE public.t REPLICA IDENTITY FULL;
     CREATE TABLE public.u (id bigserial PRIMARY KEY, pad text);";

/// A stream-only pipeline capturing `public.t` of `url` into the file `out`.
fn pipeline(url: &str, s: &str, out: &Path) -> Pipeline {
    let (publication, slot) = (format!("p_{s}"), format!("s_{s}"));
    Pipeline::streaming("ops", url, "public.t", &publication, &slot, 64).file_sink(out)
}

/// What a test captures with: a unique suffix `s` (publication `p_<s>`,
/// slot `s_<s>`) and the file `changes.jsonl` in a temporary directory.
struct Capture {
    s: String,
    slot: String,
    out: PathBuf,
    _dir: TempDir,
}

impl Capture {
    fn new(name: &str) -> Capture {
        let dir = TempDir::new(name);
        let s = unique_suffix();
        Capture {
            slot: format!("s_{s}"),
            out: dir.join("changes.jsonl"),
            s,
            _dir: dir,
        }
    }

    /// [`pipeline`] of `url` into this capture's file.
    fn pipeline(&self, url: &str) -> Pipeline {
        pipeline(url, &self.s, &self.out)
    }
}

/// Whether something reaches the file `out` within 60 s.
async fn written(out: &Path) -> bool {
    wait_until(Duration::from_secs(60), async || {
        !read_jsonl(out).is_empty()
    })
    .await
}

// ---------------------------------------------------------------- writers

/// `n` writers of 1 to 3 changes per transaction on ids 1..=30 (70 %
/// upserts, 30 % deletes) of `url`.
async fn start_writers(url: &str, n: usize) -> Writers {
    let workload = Workload {
        keys: 30,
        mix: Mix {
            upsert: 7,
            delete: 3,
            ..Mix::default()
        },
        ..Workload::new(n)
    };
    Writers::start(url, workload).await
}

// ---------------------------------------------------------------- sink files

/// Polls until the events of `files` (de-duplicated by position, in
/// commit order) replay to `public.t`; returns the merged events.
async fn converge(
    db_rows: impl AsyncFn() -> BTreeMap<String, Json>,
    files: &[&Path],
) -> Result<Vec<Change>, String> {
    let expected = db_rows().await;
    let mut merged = Vec::new();
    replay::converge(
        Duration::from_secs(90),
        Duration::ZERO,
        &expected,
        async || {
            merged = merge(files);
            apply(&merged.iter().collect::<Vec<_>>(), "public.t")
        },
    )
    .await?;
    Ok(merged)
}

/// The row events of `files`, de-duplicated by `(commit_lsn, ordinal)` and
/// sorted by it (commit order).
fn merge(files: &[&Path]) -> Vec<Change> {
    let mut by_pos = BTreeMap::new();
    for f in files {
        for ev in read_changes(f) {
            by_pos.entry(ev.position()).or_insert(ev);
        }
    }
    by_pos.into_values().collect()
}

/// The process id of the walsender streaming from `slot`, if any. (A slot
/// is also `active` for a moment in the session that creates it: that one
/// does not count.)
async fn slot_active_pid(db: &TestDb, slot: &str) -> Option<i32> {
    let pid = db
        .query_text(&format!(
            "SELECT s.active_pid::text FROM pg_replication_slots s \
             JOIN pg_stat_activity a ON a.pid = s.active_pid \
             WHERE s.slot_name = '{slot}' AND a.backend_type = 'walsender'"
        ))
        .await?;
    pid.parse().ok()
}

// ---------------------------------------------------------------- heartbeat

/// Writes to the untracked table `public.u` of `url` until `stop`.
async fn churn(url: String, stop: Arc<AtomicBool>) {
    let mut conn = PgConnection::connect(&url).await.expect("churn connect");
    while !stop.load(Ordering::Relaxed) {
        sqlx::raw_sql(
            "INSERT INTO public.u (pad) SELECT repeat('x', 200) FROM generate_series(1, 50)",
        )
        .execute(&mut conn)
        .await
        .expect("churn insert");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One pipeline per database (logical messages are per database, so a
/// heartbeat of one pipeline would otherwise advance the other): the
/// captured table stays idle while another table is written. With
/// heartbeats the slot advances past the WAL position where the idle time
/// began; without, it stays behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeat_advances_the_slot_while_captured_tables_are_idle() {
    let on = TestDb::create("hb_on").await;
    let off = TestDb::create("hb_off").await;
    let dir = TempDir::new("heartbeat");
    let mut runs = Vec::new();
    for (db, hb) in [
        (&on, "heartbeat: { interval: 1s }\n"),
        (&off, "heartbeat: { enabled: false }\n"),
    ] {
        db.exec(TABLE_DDL).await;
        let s = unique_suffix();
        let out = dir.join(format!("{}.jsonl", db.name()));
        let engine = Engine::start(&pipeline(db.url(), &s, &out).extra(hb).yaml());
        runs.push((db, format!("s_{s}"), out, engine));
    }
    // Each pipeline streams and has acknowledged a first change.
    let mut idle_from = Vec::new();
    for (db, slot, out, engine) in &mut runs {
        wait_streaming(db, engine, slot, Duration::from_secs(60)).await;
        db.exec("INSERT INTO public.t VALUES (1, 1, 'first')").await;
        // Acknowledged: the slot is past the commit of that insert (other
        // tests write WAL too, so the current WAL position is no measure).
        let acked = wait_until(Duration::from_secs(60), async || {
            let Some(commit) = read_changes(out).first().map(|c| c.commit_lsn) else {
                return false;
            };
            db.slot_confirmed_flush_lsn(slot)
                .await
                .is_some_and(|l| l.0 > commit)
        })
        .await;
        assert!(
            acked,
            "the first change was not acknowledged\n{}",
            engine.output_report()
        );
    }
    // The idle time starts now; only the untracked table is written.
    let stop = Arc::new(AtomicBool::new(false));
    let mut churners = Vec::new();
    for (db, _, _, _) in &runs {
        idle_from.push(db.current_wal_lsn().await);
        churners.push(tokio::spawn(churn(db.url().to_owned(), stop.clone())));
    }
    let (db, slot, _, engine) = &mut runs[0];
    let from = idle_from[0];
    let advanced = wait_for(Duration::from_secs(60), async || {
        db.slot_confirmed_flush_lsn(slot)
            .await
            .filter(|l| *l > from)
    })
    .await;
    assert!(
        advanced.is_some(),
        "with heartbeats the slot did not advance past {from} within 60s\n{}",
        engine.output_report()
    );
    // Give the pipeline without heartbeats the same time and more.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    for c in churners {
        c.await.expect("churn panicked");
    }
    let (db, slot, _, engine) = &mut runs[1];
    let stuck = db.slot_confirmed_flush_lsn(slot).await.unwrap_or(Lsn::ZERO);
    assert!(
        stuck <= idle_from[1],
        "without heartbeats the slot moved to {stuck}, past {} where the idle time began \
         (then this test cannot tell heartbeats apart)\n{}",
        idle_from[1],
        engine.output_report()
    );
    let hb_log = runs[0].3.stderr_text();
    assert!(!hb_log.contains("cannot write a heartbeat"), "{hb_log}");
    // Heartbeats are not user data.
    for (_, _, out, _) in &runs {
        for ev in read_jsonl(out) {
            assert!(
                !ev.to_string().contains("cdc_heartbeat"),
                "a heartbeat reached the sink: {ev}"
            );
        }
    }
    for (_, _, _, engine) in &mut runs {
        engine.stop_clean(Duration::from_secs(30), "stop").await;
    }
    drop(runs);
    on.cleanup().await;
    off.cleanup().await;
}

// ---------------------------------------------------------------- standby

/// Two instances share one slot with `standby: true`, each with its own
/// file. The active one is killed under concurrent writes; the standby
/// takes over within `activity_check_interval` plus a few seconds, and the
/// two files together hold every change: de-duplicated by position and
/// replayed in commit order they give the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standby_takes_over_when_the_active_instance_dies() {
    const CHECK: Duration = Duration::from_secs(2);
    let db = TestDb::create("standby").await;
    db.exec(TABLE_DDL).await;
    let dir = TempDir::new("standby");
    let s = unique_suffix();
    let slot = format!("s_{s}");
    let outs = [dir.join("a.jsonl"), dir.join("b.jsonl")];
    let yaml = |out: &Path| {
        pipeline(db.url(), &s, out)
            .slot_options("standby: true, activity_check_interval: 2s")
            .yaml()
    };
    let mut a = Engine::start(&yaml(&outs[0]));
    let a_pid = wait_for(Duration::from_secs(60), async || {
        slot_active_pid(&db, &slot).await
    })
    .await;
    assert!(
        a_pid.is_some(),
        "instance A did not start streaming\n{}",
        a.output_report()
    );
    let mut b = Engine::start(&yaml(&outs[1]));
    let standing_by = b
        .logs_within("standing by: slot", Duration::from_secs(60))
        .await;
    assert!(
        standing_by,
        "instance B did not stand by\n{}",
        b.output_report()
    );
    assert!(a.is_running() && b.is_running());

    let writers = start_writers(db.url(), 3).await;
    let settled = wait_until(Duration::from_secs(60), async || writers.committed() > 100).await;
    assert!(settled, "the writers made no progress");
    // (Written once its first batch is flushed, which may come after the
    // writers' first hundred commits.)
    assert!(
        written(&outs[0]).await,
        "A wrote nothing\n{}",
        a.output_report()
    );
    a.sigkill();
    let killed_at = Instant::now();
    assert_eq!(a.wait_exit(Duration::from_secs(10)).await, 128 + 9);
    let took_over = wait_until(
        Duration::from_secs(60),
        async || matches!(slot_active_pid(&db, &slot).await, Some(p) if Some(p) != a_pid),
    )
    .await;
    let takeover = killed_at.elapsed();
    assert!(
        took_over,
        "B did not take over within 60s\n{}",
        b.output_report()
    );
    eprintln!("takeover after {takeover:?}");
    assert!(
        takeover <= CHECK + Duration::from_secs(8),
        "B took {takeover:?} to take over (activity_check_interval {CHECK:?})\n{}",
        b.output_report()
    );
    assert!(
        b.stderr_text().contains("is free: taking over from LSN"),
        "{}",
        b.output_report()
    );
    // Writes go on for a while after the takeover.
    let more = writers.committed() + 100;
    assert!(wait_until(Duration::from_secs(60), async || writers.committed() > more).await);
    let log = writers.finish().await;

    let files = [outs[0].as_path(), outs[1].as_path()];
    let merged = converge(async || db.to_jsonb_rows("public.t", "id").await, &files)
        .await
        .unwrap_or_else(|d| {
            panic!(
                "the union of both files does not give the table: {d}\n{}",
                b.output_report()
            )
        });
    assert!(!read_jsonl(&outs[1]).is_empty(), "B wrote nothing");
    let seen: HashSet<RowChange> = merged.iter().filter_map(RowChange::of).collect();
    log.assert_all_in(&seen);
    eprintln!(
        "{} transactions committed; A wrote {} events, B {}",
        log.committed,
        read_jsonl(&outs[0]).len(),
        read_jsonl(&outs[1]).len()
    );
    b.stop_clean(Duration::from_secs(30), "stop").await;
    db.cleanup().await;
}

// ---------------------------------------------------------------- restart

/// The server is restarted (`pg_ctl restart -m fast`, on a cluster of the
/// test's own) under concurrent writes: the engine reconnects by itself and
/// loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconnects_after_a_server_restart_and_loses_nothing() {
    let cluster = Cluster::start("").await;
    cluster.exec("postgres", TABLE_DDL).await;
    let url = cluster.url("postgres");
    let capture = Capture::new("restart");
    let Capture { slot, out, .. } = &capture;
    let mut engine = Engine::start(&capture.pipeline(&url).yaml());
    // A walsender streams from it (not just the session creating it).
    let slot_active = async || cluster.slot_streaming(slot).await;
    assert!(
        wait_until(Duration::from_secs(60), slot_active).await,
        "not streaming\n{}",
        engine.output_report()
    );
    let writers = start_writers(&url, 3).await;
    assert!(wait_until(Duration::from_secs(60), async || writers.committed() > 100).await);
    cluster.restart_fast().await;
    assert!(
        engine.is_running(),
        "the engine exited on the restart\n{}",
        engine.output_report()
    );
    let before = writers.committed();
    assert!(
        wait_until(Duration::from_secs(60), async || writers.committed()
            > before + 100)
        .await,
        "the writers made no progress after the restart"
    );
    let log = writers.finish().await;
    let merged = converge(
        async || {
            let mut c = cluster.connect("postgres").await;
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT (to_jsonb(t) -> 'id')::text, to_jsonb(t)::text FROM public.t AS t",
            )
            .fetch_all(&mut c)
            .await
            .expect("reading public.t");
            rows.into_iter()
                .map(|(k, v)| (k, serde_json::from_str(&v).unwrap()))
                .collect()
        },
        &[out.as_path()],
    )
    .await
    .unwrap_or_else(|d| {
        panic!(
            "the file does not give the table: {d}\n{}",
            engine.output_report()
        )
    });
    let seen: HashSet<RowChange> = merged.iter().filter_map(RowChange::of).collect();
    log.assert_all_in(&seen);
    let err = engine.stderr_text();
    assert!(
        err.contains("replication stream reconnected"),
        "no reconnection logged\n{}",
        engine.output_report()
    );
    eprintln!(
        "{} committed, {} failed around the restart",
        log.committed, log.failed
    );
    engine.stop_clean(Duration::from_secs(30), "stop").await;
}

// ---------------------------------------------------------------- SIGTERM

/// Parses `(id, v)` from a test_decoding row like
/// `table public.t: INSERT: id[integer]:3 v[integer]:17 note[text]:'w0'`
/// (of an update: from its new tuple).
fn decoded_change(data: &str) -> Option<RowChange> {
    let rest = data.strip_prefix("table public.t: ")?;
    let (kind, cols) = rest.split_once(": ")?;
    // An update shows the old row first (`old-key: …`), then `new-tuple: …`.
    let cols = cols.split_once("new-tuple: ").map_or(cols, |(_, new)| new);
    let field = |name: &str| -> Option<i32> {
        let at = cols.find(&format!("{name}[integer]:"))? + name.len() + "[integer]:".len();
        let end = cols[at..].find(' ').map_or(cols.len(), |e| at + e);
        cols[at..end].parse().ok()
    };
    let (id, v) = (field("id")?, field("v")?);
    match kind {
        "INSERT" | "UPDATE" => Some(RowChange::Write(id, v)),
        "DELETE" => Some(RowChange::Delete(id, v)),
        _ => None,
    }
}

/// SIGTERM under writes: the engine exits 0, and the slot's confirmed
/// position is exactly the end of what the sink holds. Checked by decoding
/// what the slot still has to deliver (a copy of it with `test_decoding`):
/// the sink and those pending changes together are every committed change,
/// with no change in both and none in neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_acknowledges_exactly_what_the_sink_holds() {
    let db = TestDb::create("sigterm_ack").await;
    db.exec(TABLE_DDL).await;
    let capture = Capture::new("sigterm_ack");
    let Capture { s, slot, out, .. } = &capture;
    // Batches large enough never to end inside one of the writers' small
    // transactions: a batch cut inside a transaction is acknowledged only
    // up to the previous commit, so its rows would legitimately be both in
    // the sink and pending (at-least-once).
    let yaml = capture
        .pipeline(db.url())
        .batching("{ max_batch_events: 100000, max_batch_wait: 10ms }")
        .yaml();
    let mut engine = Engine::start(&yaml);
    wait_streaming(&db, &mut engine, slot, Duration::from_secs(60)).await;
    let writers = start_writers(db.url(), 3).await;
    assert!(wait_until(Duration::from_secs(60), async || writers.committed() > 200).await);
    engine.sigterm();
    let code = engine.wait_exit(Duration::from_secs(60)).await;
    // Writes continue after the engine stopped: they must all be pending.
    let after = writers.committed() + 50;
    assert!(
        wait_until(Duration::from_secs(60), async || writers.committed()
            > after)
        .await
    );
    let log = writers.finish().await;
    assert_eq!(
        code,
        0,
        "SIGTERM did not stop the engine cleanly\n{}",
        engine.output_report()
    );
    let text = std::fs::read_to_string(out).unwrap_or_default();
    assert!(text.is_empty() || text.ends_with('\n'), "torn last line");

    let sink: Vec<RowChange> = read_changes(out).iter().filter_map(RowChange::of).collect();
    let sink_set: HashSet<RowChange> = sink.iter().copied().collect();
    assert_eq!(
        sink.len(),
        sink_set.len(),
        "a single run delivered a change twice"
    );

    // The walsender has processed the final acknowledgement once it let
    // the slot go.
    assert!(
        wait_until(Duration::from_secs(30), async || !db
            .slot_active(slot)
            .await)
        .await,
        "the slot stayed active after the engine exited"
    );
    let confirmed = db.slot_confirmed_flush_lsn(slot).await;
    eprintln!("slot confirmed_flush_lsn after exit: {confirmed:?}");
    let copy = format!("c_{s}");
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    // The copy is temporary: it lives only as long as this session.
    let copy_row: (String, String) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT slot_name::text, lsn::text FROM pg_copy_logical_replication_slot('{slot}', '{copy}', true, 'test_decoding')"
    )))
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT lsn::text, data FROM pg_logical_slot_peek_changes('{copy}', NULL, NULL)"
    )))
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    let pending: Vec<RowChange> = rows.iter().filter_map(|(_, d)| decoded_change(d)).collect();
    let pending_set: HashSet<RowChange> = pending.iter().copied().collect();

    let overlap: Vec<_> = sink_set.intersection(&pending_set).collect();
    if !overlap.is_empty() {
        eprintln!("copy: {copy_row:?}; first pending rows:");
        for (lsn, data) in rows.iter().take(12) {
            eprintln!("  {lsn} {data}");
        }
    }
    assert!(
        overlap.is_empty(),
        "{} changes are both in the sink and still pending in the slot (acknowledged too little), e.g. {:?}",
        overlap.len(),
        &overlap[..overlap.len().min(10)]
    );
    let all: BTreeSet<RowChange> = log.changes.iter().copied().collect();
    let union: BTreeSet<RowChange> = sink_set.union(&pending_set).copied().collect();
    let gap: Vec<_> = all.difference(&union).collect();
    assert!(
        gap.is_empty(),
        "{} committed changes are neither in the sink nor pending in the slot (acknowledged too much), e.g. {:?}",
        gap.len(),
        &gap[..gap.len().min(10)]
    );
    let extra: Vec<_> = union.difference(&all).collect();
    assert!(extra.is_empty(), "changes nobody committed: {extra:?}");
    assert!(
        !sink.is_empty() && !pending.is_empty(),
        "sink {} pending {}",
        sink.len(),
        pending.len()
    );
    eprintln!(
        "{} committed changes: {} in the sink, {} pending in the slot",
        all.len(),
        sink.len(),
        pending.len()
    );
    db.cleanup().await;
}

// ---------------------------------------------------------------- definite errors

/// Waits for the engine to exit non-zero and returns its stderr.
async fn expect_failure(engine: &mut Engine, what: &str) -> String {
    let code = engine.try_wait_exit(Duration::from_secs(90)).await;
    assert!(
        code.is_some_and(|c| c != 0),
        "{what}: the engine did not fail (exit {code:?})\n{}",
        engine.output_report()
    );
    engine.stderr_text()
}

/// The publication is dropped while the engine streams: the engine stops
/// with a line saying so and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_the_publication_stops_the_engine_with_a_clear_error() {
    let db = TestDb::create("pub_dropped").await;
    db.exec(TABLE_DDL).await;
    let capture = Capture::new("pub_dropped");
    let Capture { s, slot, out, .. } = &capture;
    let mut engine = Engine::start(&capture.pipeline(db.url()).yaml());
    wait_streaming(&db, &mut engine, slot, Duration::from_secs(60)).await;
    db.exec("INSERT INTO public.t VALUES (1, 1, 'a')").await;
    assert!(written(out).await);
    db.exec(&format!("DROP PUBLICATION p_{s}")).await;
    db.exec("INSERT INTO public.t VALUES (2, 2, 'b')").await;
    let err = expect_failure(&mut engine, "publication dropped").await;
    assert!(
        err.contains(&format!(
            "publication `p_{s}` was dropped while the pipeline ran"
        )),
        "{}",
        engine.output_report()
    );
    db.cleanup().await;
}

/// The slot is dropped while the engine runs (its walsender terminated
/// first, as an operator would): the engine stops with a clear line
/// instead of recreating the slot and silently skipping changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_the_slot_stops_the_engine_with_a_clear_error() {
    let db = TestDb::create("slot_dropped").await;
    db.exec(TABLE_DDL).await;
    let capture = Capture::new("slot_dropped");
    let Capture { slot, out, .. } = &capture;
    let yaml = capture
        .pipeline(db.url())
        .retry("{ initial_backoff: 2s, max_backoff: 2s }")
        .yaml();
    let mut engine = Engine::start(&yaml);
    wait_streaming(&db, &mut engine, slot, Duration::from_secs(60)).await;
    db.exec("INSERT INTO public.t VALUES (1, 1, 'a')").await;
    assert!(written(out).await);
    let dropped = wait_until(Duration::from_secs(60), async || {
        db.try_exec(&format!(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
             WHERE slot_name = '{slot}' AND active_pid IS NOT NULL"
        ))
        .await
        .is_ok()
            && db
                .try_exec(&format!("SELECT pg_drop_replication_slot('{slot}')"))
                .await
                .is_ok()
    })
    .await;
    assert!(dropped, "could not drop the slot");
    let err = expect_failure(&mut engine, "slot dropped").await;
    assert!(
        err.contains(&format!("replication slot `{slot}` no longer exists")),
        "{}",
        engine.output_report()
    );
    db.cleanup().await;
}
