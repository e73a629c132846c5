//! Incremental snapshots while streaming: a signal row asks for a table,
//! its chunks are read between watermarks while writers change it, and
//! what a keyed consumer rebuilds from the events equals the table.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cdc_core::encode::DebeziumJson;
use cdc_core::{ControlEvent, Event, Source, TableName};
use cdc_postgres::{PgSource, PgSourceConfig};
use integration_tests::incremental::{
    chunk_reads, converged_reading_each_row_once, database_with_t, incremental_snapshots, progress,
    reads_of, request_snapshot, reread_chunks, wait_progress, wait_snapshot_done, workload,
};
use integration_tests::pipelines::Pipeline;
use integration_tests::replay::{apply_keyed, diff, wait_converged_tables, Change, Tail};
use integration_tests::{
    unique_suffix, wait_streaming, wait_until, Cluster, Engine, Mix, TempDir, TestDb, Workload,
    Writers,
};
use sqlx::{Connection, PgConnection};

const TIMEOUT: Duration = Duration::from_secs(90);

/// What a library consumer of the source saw.
#[derive(Default)]
struct Seen {
    changes: Vec<Change>,
    begins: usize,
    ends: Vec<u64>,
}

impl Seen {
    fn take(&mut self, events: &[Event]) {
        let enc = DebeziumJson::default();
        for event in events {
            match event {
                Event::Change(c) => {
                    let mut out = Vec::new();
                    enc.encode(c, 0, &mut out);
                    let json = serde_json::from_slice(&out).expect("the envelope is JSON");
                    let n = self.changes.len() + 1;
                    self.changes
                        .push(Change::from_json(0, n, json).expect("a complete envelope"));
                }
                Event::Control(ControlEvent::IncrementalSnapshotBegin { .. }) => self.begins += 1,
                Event::Control(ControlEvent::IncrementalSnapshotEnd { rows, .. }) => {
                    self.ends.push(*rows)
                }
                _ => {}
            }
        }
    }

    fn reads(&self) -> Vec<&Change> {
        self.changes.iter().filter(|c| c.op == "r").collect()
    }

    fn rebuilt(&self) -> BTreeMap<String, serde_json::Value> {
        let all: Vec<&Change> = self.changes.iter().collect();
        apply_keyed(&all, "public.t", &["id"])
    }
}

fn config(db: &TestDb, chunk_rows: u64) -> PgSourceConfig {
    config_named(db, chunk_rows, &unique_suffix())
}

fn config_named(db: &TestDb, chunk_rows: u64, s: &str) -> PgSourceConfig {
    let mut cfg = PgSourceConfig::new(
        db.url(),
        vec![TableName::new("public", "t")],
        format!("ip_{s}"),
        format!("is_{s}"),
    );
    cfg.incremental.enabled = true;
    cfg.incremental.chunk_rows = chunk_rows;
    cfg.max_batch_wait = Duration::from_millis(5);
    cfg
}

/// Takes batches (acknowledging each) until `done` holds, at most
/// [`TIMEOUT`].
async fn drive(source: &mut PgSource, seen: &mut Seen, done: impl FnMut(&Seen) -> bool) {
    drive_acking(source, seen, true, done).await
}

/// [`drive`], acknowledging the batches only when `acknowledge` is set.
async fn drive_acking(
    source: &mut PgSource,
    seen: &mut Seen,
    acknowledge: bool,
    mut done: impl FnMut(&Seen) -> bool,
) {
    let ack = source.ack_handle();
    let deadline = Instant::now() + TIMEOUT;
    // A call that has not returned yet is polled again, never dropped
    // midway (as the engine's pipeline does): a signal or a chunk read cut
    // off in the middle would be lost.
    while !done(seen) {
        let mut next = Box::pin(source.next_batch());
        let batch = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no progress within {TIMEOUT:?}: {} events, {} reads, ends {:?}",
                seen.changes.len(),
                seen.reads().len(),
                seen.ends
            );
            if let Ok(b) =
                tokio::time::timeout(Duration::from_millis(300).min(left), &mut next).await
            {
                break b.expect("next_batch").expect("the source does not end");
            }
        };
        seen.take(&batch.events);
        if acknowledge {
            ack.durable(&batch);
        }
    }
}

#[tokio::test]
async fn a_signal_snapshots_a_table_chunk_by_chunk_while_writers_change_it() {
    let db = database_with_t("incr_lib", 3000).await;
    let cfg = config(&db, 250);
    let mut source = PgSource::connect(cfg).await.expect("connect");
    let mut seen = Seen::default();
    let writers = Writers::start(
        db.url(),
        Workload {
            keys: 3000,
            new_ids_from: Some(3001),
            mix: Mix {
                insert: 2,
                upsert: 2,
                update: 4,
                delete: 2,
            },
            ..Workload::new(3)
        },
    )
    .await;
    request_snapshot(&db, &["public.t"]).await;
    drive(&mut source, &mut seen, |s| !s.ends.is_empty()).await;
    let written = writers.finish().await;
    assert!(written.committed > 0, "the writers committed nothing");

    // Every read is marked, and sits at a high watermark: above the
    // changes before it in the stream.
    let reads = seen.reads();
    assert!(reads.len() > 2000, "only {} reads", reads.len());
    assert!(
        reads.iter().all(|r| r.snapshot == "incremental"),
        "reads not marked incremental"
    );
    assert_eq!(seen.begins, 1);
    assert_eq!(seen.ends, vec![reads.len() as u64]);
    let mut last = (0, 0);
    for c in &seen.changes {
        assert!(c.position() > last, "events out of position order at {c:?}");
        last = c.position();
    }

    // A keyed consumer converges on the table.
    let want = db.to_jsonb_rows("public.t", "id").await;
    drive(&mut source, &mut seen, |s| {
        diff(&s.rebuilt(), &want).is_none()
    })
    .await;
    if let Some(d) = diff(&seen.rebuilt(), &want) {
        panic!("the rebuilt table differs from the source: {d}");
    }

    // Progress is stored once the reads are acknowledged.
    let ok = wait_until(TIMEOUT, async || {
        // Batches keep coming (heartbeats, nothing else): the source stores
        // progress between them.
        let _ = tokio::time::timeout(Duration::from_millis(200), source.next_batch()).await;
        db.query_text(
            "SELECT state || ' ' || chunks_done || ' ' || rows_done FROM cdc.incremental_snapshots",
        )
        .await
        .is_some_and(|s| s.starts_with("done "))
    })
    .await;
    assert!(
        ok,
        "progress: {:?}",
        db.query_text("SELECT to_jsonb(i)::text FROM cdc.incremental_snapshots i")
            .await
    );
    drop(source);
    db.cleanup().await;
}

fn id(c: &Change) -> i64 {
    c.after["id"].as_i64().expect("an integer id")
}

/// `(chunks_done, last key)` stored for the table.
async fn stored(db: &TestDb) -> (i64, Option<i64>) {
    let text = db
        .query_text("SELECT chunks_done || ' ' || COALESCE(last_key[1], '-') FROM cdc.incremental_snapshots")
        .await
        .expect("a progress row");
    let (chunks, key) = text.split_once(' ').expect("two fields");
    (chunks.parse().expect("a count"), key.parse().ok())
}

#[tokio::test]
async fn progress_waits_for_acknowledgements_and_a_restart_resumes_after_the_last_durable_chunk() {
    let db = database_with_t("incr_resume", 2000).await;
    let names = unique_suffix();
    let mut source = PgSource::connect(config_named(&db, 200, &names))
        .await
        .expect("connect");
    request_snapshot(&db, &["public.t"]).await;
    // Acknowledged: progress follows the reads.
    let mut first = Seen::default();
    drive(&mut source, &mut first, |s| s.reads().len() >= 600).await;
    let ok = wait_until(TIMEOUT, async || {
        let _ = tokio::time::timeout(Duration::from_millis(100), source.next_batch()).await;
        stored(&db).await.0 >= 3
    })
    .await;
    assert!(
        ok,
        "progress did not reach 3 chunks: {:?}",
        stored(&db).await
    );
    // Not acknowledged: every chunk is read and released, none is stored.
    let (chunks, last_key) = stored(&db).await;
    // (The restart below shows that none was: it resumes right after the
    // key stored before these chunks.)
    drive_acking(&mut source, &mut first, false, |s| !s.ends.is_empty()).await;
    let last_key = last_key.expect("a stored key");
    assert_eq!(
        last_key,
        chunks * 200,
        "the stored key ends the stored chunks"
    );
    source.shutdown().await.expect("shutdown");
    drop(source);

    // The restart reads the table from the chunk after the stored key.
    let mut source = wait_for_connect(config_named(&db, 200, &names)).await;
    let mut second = Seen::default();
    drive(&mut source, &mut second, |s| !s.ends.is_empty()).await;
    let ids: Vec<i64> = second.reads().iter().map(|c| id(c)).collect();
    assert_eq!(
        ids.first(),
        Some(&(last_key + 1)),
        "resumed at the wrong key"
    );
    assert_eq!(
        ids.len() as i64,
        2000 - last_key,
        "rows read again or skipped"
    );
    assert_eq!(second.begins, 0, "a resumed snapshot does not begin again");
    let ok = wait_until(TIMEOUT, async || {
        let _ = tokio::time::timeout(Duration::from_millis(100), source.next_batch()).await;
        db.query_text("SELECT state FROM cdc.incremental_snapshots")
            .await
            .as_deref()
            == Some("done")
    })
    .await;
    assert!(ok, "the snapshot is not done: {:?}", stored(&db).await);
    drop(source);
    db.cleanup().await;
}

/// Connects once the previous session released the slot.
async fn wait_for_connect(cfg: PgSourceConfig) -> PgSource {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match PgSource::connect(cfg.clone()).await {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
}

/// Rows of `public.t` before the engine starts.
const ENGINE_ROWS: i32 = 20_000;
/// Rows per chunk in the engine tests.
const ENGINE_CHUNK: u64 = 200;

/// A database with `public.t` (`ENGINE_ROWS` rows, written by
/// [`Writers`]) and `public.other`, and a pipeline that streams both to a
/// file, without an initial snapshot, with incremental snapshots on.
async fn engine_setup(prefix: &str) -> (TestDb, TempDir, String, String) {
    let db = database_with_t(prefix, ENGINE_ROWS).await;
    db.exec("CREATE TABLE public.other (id int PRIMARY KEY, v int)")
        .await;
    let dir = TempDir::new(prefix);
    let s = unique_suffix();
    let slot = format!("s_{s}");
    let yaml = Pipeline::streaming("incr", db.url(), "public.t", &format!("p_{s}"), &slot, 256)
        .table("public.other")
        .file_sink(&dir.join("out.jsonl"))
        .snapshot(&incremental_snapshots(ENGINE_CHUNK))
        .yaml();
    (db, dir, slot, yaml)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_engine_snapshots_a_table_on_a_signal_while_writers_change_it() {
    let (db, dir, slot, yaml) = engine_setup("incr_engine").await;
    let mut engine = Engine::start(&yaml);
    wait_streaming(&db, &mut engine, &slot, TIMEOUT).await;
    let writers = Writers::start(db.url(), workload(ENGINE_ROWS)).await;
    request_snapshot(&db, &["public.t"]).await;
    // Done: every chunk's reads are durable in the file.
    wait_progress(
        &db,
        &engine,
        "public.t",
        "done",
        Some(
            "INSERT INTO public.other VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET v = other.v + 1",
        ),
        TIMEOUT,
        |p| p.state == "done",
    )
    .await;
    let written = writers.finish().await;
    converged_reading_each_row_once(
        &db,
        &engine,
        &dir.join("out.jsonl"),
        &["public.t", "public.other"],
        ENGINE_ROWS,
        &written,
    )
    .await;
    engine
        .stop_clean(Duration::from_secs(30), "the engine")
        .await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_engine_resumes_the_snapshot_from_the_last_durable_chunk() {
    let (db, dir, slot, yaml) = engine_setup("incr_kill").await;
    let mut first = Engine::start(&yaml);
    wait_streaming(&db, &mut first, &slot, TIMEOUT).await;
    let writers = Writers::start(db.url(), workload(ENGINE_ROWS)).await;
    request_snapshot(&db, &["public.t"]).await;
    wait_progress(&db, &first, "public.t", "5 chunks in", None, TIMEOUT, |p| {
        p.chunks_done >= 5
    })
    .await;
    first.sigkill();
    first.wait_exit(Duration::from_secs(10)).await;
    let at_kill = progress(&db, "public.t").await.expect("a progress row");
    let (state, chunks_at_kill) = (at_kill.state, at_kill.chunks_done);
    eprintln!("killed at {chunks_at_kill} durable chunks ({state})");

    let mut second = Engine::start(&yaml);
    wait_progress(&db, &second, "public.t", "done", None, TIMEOUT, |p| {
        p.state == "done"
    })
    .await;
    let written = writers.finish().await;
    let mut tails = [Tail::new(0, dir.join("out.jsonl"))];
    wait_converged_tables(&db, &mut tails, &[&second], &["public.t"]).await;
    let (reads, distinct) = reads_of(&tails[0], "public.t");
    let reread = reads - distinct;
    eprintln!(
        "{reads} reads of {distinct} rows: {reread} read again after the kill; writers: {} transactions",
        written.committed
    );
    if state == "running" {
        // The chunks read again are those written after the last stored
        // one: a few at most, never the table from the start.
        assert!(
            reread <= 10 * ENGINE_CHUNK as usize,
            "{reread} rows read again: the snapshot did not resume from its last durable chunk"
        );
    }
    second
        .stop_clean(Duration::from_secs(30), "the second run")
        .await;
    db.cleanup().await;
}

/// Rows of the table added to a running pipeline in the acceptance test.
const BIG_ROWS: i32 = 200_000;
/// Rows per chunk there (the default).
const BIG_CHUNK: u64 = 1024;

/// When the events of a file sink's output arrived.
struct Arrivals {
    /// `(commit time, written time)` in ms (`source.ts_ms`, `ts_ms`) of
    /// each change of the watched table.
    changes: Vec<(i64, i64)>,
    /// When the first and the last incremental read were written.
    reads: Option<(i64, i64)>,
}

/// The [`Arrivals`] of the changes of table `table` (its name alone) and
/// of the reads in the file at `path`. Only those lines are parsed.
fn arrivals(path: &std::path::Path, table: &str) -> Arrivals {
    let text = std::fs::read_to_string(path).expect("the output file");
    let of_table = format!("\"table\":\"{table}\"");
    let json = |line: &str| -> serde_json::Value { serde_json::from_str(line).expect("JSON") };
    let ms = |v: &serde_json::Value| v.to_string().parse::<i64>().expect("a time in ms");
    let (mut changes, mut first_read, mut last_read) = (Vec::new(), None, None);
    for line in text.lines() {
        if line.contains("\"op\":\"r\"") {
            first_read.get_or_insert(line);
            last_read = Some(line);
        } else if line.contains(&of_table) {
            let v = json(line);
            changes.push((ms(&v["source"]["ts_ms"]), ms(&v["ts_ms"])));
        }
    }
    let written = |line: &str| ms(&json(line)["ts_ms"]);
    Arrivals {
        changes,
        reads: first_read
            .zip(last_read)
            .map(|(f, l)| (written(f), written(l))),
    }
}

/// `p50 / p99 / max (n)` of `values` (ms).
fn summary(mut values: Vec<f64>) -> String {
    if values.is_empty() {
        return "none".into();
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
        at(0.5),
        at(0.99),
        at(1.0),
        values.len()
    )
}

/// How long each chunk read held the stream up, from the engine's debug
/// log (`read_ms` of "incremental snapshot chunk read").
fn chunk_read_ms(stderr: &str) -> Vec<f64> {
    stderr
        .lines()
        .filter(|l| l.contains("incremental snapshot chunk read"))
        .filter_map(|l| {
            let rest = &l[l.find("read_ms=")? + "read_ms=".len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as i64
}

/// A client changing `public.other` (50 rows), a transaction every 5 ms.
struct Ticker {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Ticker {
    async fn start(db: &TestDb) -> Ticker {
        use sqlx::Connection;
        use std::sync::atomic::Ordering;
        let mut conn = sqlx::PgConnection::connect(db.url())
            .await
            .expect("the ticker connects");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stopped, counted) = (stop.clone(), count.clone());
        let task = tokio::spawn(async move {
            let mut n: i32 = 0;
            while !stopped.load(Ordering::Relaxed) {
                n += 1;
                sqlx::query(
                    "INSERT INTO public.other VALUES ($1 % 50, $1, 'tick') \
                     ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v",
                )
                .bind(n)
                .execute(&mut conn)
                .await
                .expect("the ticker's change");
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Ticker { stop, count, task }
    }

    /// Waits until it committed `n` more changes.
    async fn wait_more(&self, n: usize) {
        let count = || self.count.load(std::sync::atomic::Ordering::Relaxed);
        let target = count() + n;
        assert!(
            wait_until(TIMEOUT, async || count() >= target).await,
            "the ticker is stuck"
        );
    }

    async fn finish(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("the ticker panicked");
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The acceptance scenario: a pipeline streams `public.other`; a table of
/// 200 000 rows is added to its configuration and the engine restarted
/// (the publication gains it), and a signal asks for its incremental
/// snapshot, while writers change it and `public.other`. Each table's
/// rebuilt rows equal its `to_jsonb` rows; `public.other` keeps streaming
/// during the backfill; its latency (commit to the file) is printed
/// against the time one chunk read holds the stream up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_200k_row_table_added_to_a_running_pipeline_is_backfilled_while_the_other_table_streams()
{
    let started = Instant::now();
    let db = TestDb::create("incr_big").await;
    db.exec(&format!(
        "CREATE TABLE public.other (id int PRIMARY KEY, v int, note text);\
         CREATE TABLE public.t (id int PRIMARY KEY, v int, note text);\
         INSERT INTO public.t SELECT g, -g, 'row ' || g FROM generate_series(1, {BIG_ROWS}) g"
    ))
    .await;
    let dir = TempDir::new("incr_big");
    let out = dir.join("out.jsonl");
    let s = unique_suffix();
    let slot = format!("s_{s}");
    let yaml = |with_t: bool| {
        let p = Pipeline::streaming(
            "incr_big",
            db.url(),
            "public.other",
            &format!("p_{s}"),
            &slot,
            1024,
        );
        let p = if with_t { p.table("public.t") } else { p };
        p.file_sink(&out)
            .snapshot(&incremental_snapshots(BIG_CHUNK))
            .yaml()
    };
    let mut first = Engine::start(&yaml(false));
    wait_streaming(&db, &mut first, &slot, TIMEOUT).await;
    let ticker = Ticker::start(&db).await;
    ticker.wait_more(20).await;
    first
        .stop_clean(Duration::from_secs(30), "the first run")
        .await;

    // public.t joins the configuration.
    let mut second = Engine::start_with(
        &yaml(true),
        &["run"],
        &[("CDC_LOG", "info,cdc_postgres::incremental=debug")],
    );
    wait_streaming(&db, &mut second, &slot, TIMEOUT).await;
    let streaming_since = now_ms();
    let writers = Writers::start(db.url(), workload(BIG_ROWS)).await;
    // Latency before the backfill.
    ticker.wait_more(100).await;
    let signalled = Instant::now();
    request_snapshot(&db, &["public.t"]).await;
    wait_snapshot_done(&db, &["public.t"], &[&second], Duration::from_secs(120)).await;
    let backfill = signalled.elapsed();
    let written = writers.finish().await;
    let ticks = ticker.finish().await;
    let mut tails = [Tail::new(0, out.clone())];
    wait_converged_tables(&db, &mut tails, &[&second], &["public.t", "public.other"]).await;
    second
        .stop_clean(Duration::from_secs(30), "the second run")
        .await;

    let chunks = chunk_reads(&tails[0].events, "public.t");
    let reads: usize = chunks.iter().map(|c| c.reads).sum();
    assert!(
        reread_chunks(&chunks).is_empty(),
        "a chunk was read twice without a restart"
    );
    assert!(
        reads > BIG_ROWS as usize * 9 / 10,
        "only {reads} reads of {BIG_ROWS} rows"
    );
    let arrived = arrivals(&out, "other");
    let (first_read, last_read) = arrived.reads.expect("reads in the file");
    let latency = |from: i64, to: i64| -> Vec<f64> {
        arrived
            .changes
            .iter()
            .filter(|(commit, _)| (from..=to).contains(commit))
            .map(|(commit, at)| (at - commit) as f64)
            .collect()
    };
    let before = latency(streaming_since, first_read - 1);
    let during = latency(first_read, last_read);
    // The other table streams during the backfill: its changes committed
    // while the reads were written arrive among them, not after them.
    let interleaved = arrived
        .changes
        .iter()
        .filter(|(commit, at)| *commit >= first_read && *at < last_read)
        .count();
    assert!(
        interleaved > 0,
        "no change of public.other arrived during the backfill ({} ms)",
        last_read - first_read
    );
    let chunk_ms = chunk_read_ms(&second.stderr_text());
    assert!(
        chunk_ms.len() >= chunks.len(),
        "{} chunk read times logged for {} chunks",
        chunk_ms.len(),
        chunks.len()
    );
    eprintln!(
        "backfill of {BIG_ROWS} rows: {reads} reads in {} chunks of {BIG_CHUNK}, {:?} from the \
         signal to done ({} ms from the first read written to the last); writers: {} transactions \
         on public.t, {ticks} on public.other\n\
         one chunk read (low watermark, read, high watermark): {}\n\
         public.other, commit to file, before the backfill: {}\n\
         public.other, commit to file, during the backfill: {}\n\
         ({interleaved} changes of public.other committed during the backfill arrived before its \
         last read); whole test {:?}",
        chunks.len(),
        backfill,
        last_read - first_read,
        written.committed,
        summary(chunk_ms.clone()),
        summary(before),
        summary(during.clone()),
        started.elapsed()
    );
    // A sanity bound only (timings on a shared machine vary): the stream
    // waits for one chunk at a time, never for the table.
    let mut sorted = during;
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    assert!(
        median < 5_000.0,
        "public.other's median latency during the backfill is {median} ms"
    );
    db.cleanup().await;
}

/// Two engines share the slot (`standby: true`), each writing a file of
/// its own; the standby starts before the signal. The streaming one is
/// killed in the middle of the incremental snapshot: the standby takes the
/// slot over and the snapshot with it, from the last durable chunk, and
/// finishes it; the two files together give the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_takes_over_an_unfinished_incremental_snapshot() {
    let db = database_with_t("incr_standby", ENGINE_ROWS).await;
    let dir = TempDir::new("incr_standby");
    let outs = [dir.join("a.jsonl"), dir.join("b.jsonl")];
    let s = unique_suffix();
    let slot = format!("s_{s}");
    let yaml = |out: &std::path::Path| {
        Pipeline::streaming("incr", db.url(), "public.t", &format!("p_{s}"), &slot, 256)
            .slot_options("standby: true, activity_check_interval: 1s")
            .file_sink(out)
            .snapshot(&incremental_snapshots(ENGINE_CHUNK))
            .yaml()
    };
    let mut a = Engine::start(&yaml(&outs[0]));
    wait_streaming(&db, &mut a, &slot, TIMEOUT).await;
    let mut b = Engine::start(&yaml(&outs[1]));
    let standing_by = wait_until(TIMEOUT, async || {
        b.stderr_text().contains("standing by: slot")
    })
    .await;
    assert!(standing_by, "B does not stand by\n{}", b.output_report());

    let writers = Writers::start(db.url(), workload(ENGINE_ROWS)).await;
    request_snapshot(&db, &["public.t"]).await;
    wait_progress(&db, &a, "public.t", "5 chunks in", None, TIMEOUT, |p| {
        p.chunks_done >= 5
    })
    .await;
    a.sigkill();
    assert_eq!(a.wait_exit(Duration::from_secs(10)).await, 128 + 9);
    let at_kill = progress(&db, "public.t").await.expect("a progress row");
    let killed_at = db.current_wal_lsn().await;
    wait_snapshot_done(&db, &["public.t"], &[&b], TIMEOUT).await;
    let written = writers.finish().await;
    let mut tails = [Tail::new(0, outs[0].clone()), Tail::new(1, outs[1].clone())];
    wait_converged_tables(&db, &mut tails, &[&b], &["public.t"]).await;
    assert!(
        b.stderr_text().contains("is free: taking over from LSN"),
        "B did not take over\n{}",
        b.output_report()
    );
    let chunks = chunk_reads(tails.iter().flat_map(|t| &t.events), "public.t");
    let by_b: Vec<_> = chunks
        .iter()
        .filter(|c| c.commit_lsn > killed_at.0)
        .collect();
    eprintln!(
        "killed A at {at_kill:?}; B read {} chunks, {} read again: {:?}; writers: {} transactions",
        by_b.len(),
        reread_chunks(&chunks).len(),
        reread_chunks(&chunks),
        written.committed
    );
    if at_kill.state == "running" {
        let durable: i64 = at_kill
            .last_key
            .as_deref()
            .and_then(|k| k.parse().ok())
            .expect("a durable key");
        let resumed = by_b.first().expect("B read the rest of the table");
        assert!(
            resumed.first > durable && resumed.first <= durable + ENGINE_CHUNK as i64,
            "B did not resume right after the durable key {durable}: {resumed:?}"
        );
        assert!(
            by_b.iter().all(|c| c.first > durable),
            "B read keys of a durable chunk again: {by_b:?}"
        );
    }
    b.stop_clean(Duration::from_secs(30), "B").await;
    db.cleanup().await;
}

/// Low watermarks of incremental snapshots committed so far, read through
/// the test_decoding slot `slot` (peeked, never consumed).
async fn low_watermarks(db: &TestDb, slot: &str) -> i64 {
    db.query_text(&format!(
        "SELECT count(*)::text FROM pg_catalog.pg_logical_slot_peek_changes('{slot}', NULL, NULL) \
         WHERE data LIKE 'message:%prefix: cdc_incremental,%' AND data LIKE '%\"mark\":\"low\"%'"
    ))
    .await
    .and_then(|n| n.parse().ok())
    .unwrap_or_default()
}

/// A transaction whose commit record is in the WAL (and streamed) but that
/// is not yet visible to other sessions, as when its backend waits for a
/// synchronous standby (on a cluster of the test's own, with a standby
/// that never comes, and `synchronous_commit = local` for every session
/// but the writer's): a chunk read meanwhile does not see its update, and
/// its stale row must not be emitted after the update (the stream already
/// delivered the update, so the window never drops the row). The chunk is
/// read again once the transaction is visible; the consumer ends with the
/// table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_streamed_before_it_is_visible_is_not_overwritten_by_a_chunk() {
    let cluster = Cluster::start(
        "synchronous_standby_names = 'cdc_never_connects'\nsynchronous_commit = local",
    )
    .await;
    let db = TestDb::create_on(&cluster.url("postgres"), "incr_sync").await;
    db.exec(
        "CREATE TABLE public.t (id int PRIMARY KEY, v int, note text);\
         INSERT INTO public.t SELECT g, -g, 'row ' || g FROM generate_series(1, 50) g",
    )
    .await;
    let watch = format!("w_{}", unique_suffix());
    db.exec(&format!(
        "SELECT pg_catalog.pg_create_logical_replication_slot('{watch}', 'test_decoding')"
    ))
    .await;
    // The source runs on a task of its own, never cancelled midway.
    let mut source = PgSource::connect(config(&db, 100)).await.expect("connect");
    let (tx, mut batches) = tokio::sync::mpsc::unbounded_channel();
    let pump = tokio::spawn(async move {
        let ack = source.ack_handle();
        loop {
            let batch = source
                .next_batch()
                .await
                .expect("next_batch")
                .expect("the source does not end");
            ack.durable(&batch);
            if tx.send(batch).is_err() {
                return;
            }
        }
    });
    let mut seen = Seen::default();
    let deadline = Instant::now() + TIMEOUT;
    let mut take = async |seen: &mut Seen| {
        assert!(Instant::now() < deadline, "no progress within {TIMEOUT:?}");
        if let Ok(Some(batch)) =
            tokio::time::timeout(Duration::from_millis(100), batches.recv()).await
        {
            seen.take(&batch.events);
        }
    };

    // The writer's commit record is flushed and streamed; its backend then
    // waits for the standby, still in the proc array: invisible.
    let mut writer = PgConnection::connect(db.url()).await.expect("connect");
    let pid: i32 = sqlx::query_scalar("SELECT pg_catalog.pg_backend_pid()")
        .fetch_one(&mut writer)
        .await
        .expect("pid");
    let commit = tokio::spawn(async move {
        sqlx::raw_sql(
            "SET synchronous_commit = on; UPDATE public.t SET note = 'updated' WHERE id = 5",
        )
        .execute(&mut writer)
        .await
        .map(|_| ())
    });
    while !seen.changes.iter().any(|c| c.op == "u" && id(c) == 5) {
        take(&mut seen).await;
    }
    assert_eq!(
        db.query_text("SELECT note FROM public.t WHERE id = 5")
            .await
            .as_deref(),
        Some("row 5"),
        "the update is visible already: the test does not exercise anything"
    );

    // A snapshot of the table: its chunk is read while the update is
    // invisible. Either the chunk comes out (the stale row of id 5 with
    // it), or the source holds it back and reads it again (a second low
    // watermark).
    request_snapshot(&db, &["public.t"]).await;
    while seen.ends.is_empty() && low_watermarks(&db, &watch).await < 2 {
        take(&mut seen).await;
    }
    // The standby wait is cancelled: the transaction (committed locally
    // long ago) becomes visible.
    db.exec(&format!("SELECT pg_catalog.pg_cancel_backend({pid})"))
        .await;
    commit
        .await
        .expect("the writer panicked")
        .expect("the update commits");
    while seen.ends.is_empty() {
        take(&mut seen).await;
    }
    let want = db.to_jsonb_rows("public.t", "id").await;
    if let Some(d) = diff(&seen.rebuilt(), &want) {
        panic!(
            "the consumer does not end with the table: {d}\nreads of id 5 at {:?}, its update at {:?}",
            seen.reads()
                .iter()
                .filter(|c| id(c) == 5)
                .map(|c| c.position())
                .collect::<Vec<_>>(),
            seen.changes
                .iter()
                .filter(|c| c.op == "u")
                .map(|c| c.position())
                .collect::<Vec<_>>()
        );
    }
    pump.abort();
    let _ = pump.await;
    db.exec(&format!(
        "SELECT pg_catalog.pg_drop_replication_slot('{watch}')"
    ))
    .await;
    db.cleanup().await;
    drop(cluster);
}

/// An update that leaves a TOASTed column unchanged (`REPLICA IDENTITY
/// DEFAULT`: the stream does not carry the value, the event names it in
/// `source.unchanged_toast`) of a row whose chunk is between its read and
/// its high watermark (the failpoint holds every chunk there for 3 s): the
/// window drops the chunk's row for that key, and a consumer that never had
/// the row (no initial snapshot) must still end with its large value.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_leaving_a_toasted_value_unchanged_inside_a_window_keeps_the_value() {
    let (db, dir, slot, yaml) = engine_setup("incr_toast").await;
    // Values of 6400 hex digits: pglz cannot shrink them under the TOAST
    // threshold, so they are stored out of line.
    db.exec(
        "DELETE FROM public.t WHERE id > 20;\
         ALTER TABLE public.t ADD COLUMN doc text;\
         UPDATE public.t SET doc = (SELECT string_agg(md5(id::text || '-' || i::text), '') \
           FROM generate_series(1, 200) i)",
    )
    .await;
    assert_eq!(
        db.query_text(
            "SELECT count(*)::text FROM public.t \
             WHERE pg_catalog.pg_column_size(doc) < pg_catalog.octet_length(doc)"
        )
        .await
        .as_deref(),
        Some("0"),
        "a doc value was compressed: the test would not exercise an out-of-line value"
    );
    let mut engine = Engine::start_with(
        &yaml,
        &["run"],
        &[("FAILPOINTS", "incremental::before_high_mark=return(3000)")],
    );
    wait_streaming(&db, &mut engine, &slot, TIMEOUT).await;
    request_snapshot(&db, &["public.t"]).await;
    let held = wait_until(TIMEOUT, async || {
        engine.stderr_text().contains("failpoint reached")
    })
    .await;
    assert!(held, "the chunk was not read\n{}", engine.output_report());
    // Inside the window: `doc` is left alone.
    db.exec("UPDATE public.t SET v = v + 1000 WHERE id = 7")
        .await;
    wait_progress(&db, &engine, "public.t", "done", None, TIMEOUT, |p| {
        p.state == "done"
    })
    .await;
    let mut tails = [Tail::new(0, dir.join("out.jsonl"))];
    tails[0].poll();
    let update = tails[0]
        .events
        .iter()
        .find(|c| c.op == "u" && id(c) == 7)
        .expect("the update is in the file");
    assert_eq!(
        update.unchanged_toast,
        ["doc"],
        "the update carried the value: the test does not exercise an unchanged TOAST value"
    );
    wait_converged_tables(&db, &mut tails, &[&engine], &["public.t"]).await;
    engine
        .stop_clean(Duration::from_secs(30), "the engine")
        .await;
    db.cleanup().await;
}
