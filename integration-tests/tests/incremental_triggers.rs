//! What starts, stops, pauses and resumes incremental snapshots of a
//! running engine: a table added to `source.tables`, `cdc-engine
//! snapshot`, `POST /snapshot`, and the stop, pause and resume signals.

use std::time::Duration;

use integration_tests::incremental::{
    converged_reading_each_row_once, database_with_t, read_ids, wait_progress, workload,
};
use integration_tests::pipelines::{Pipeline, FAST_RETRY};
use integration_tests::replay::Tail;
use integration_tests::{
    unique_suffix, wait_streaming, wait_until, Engine, TempDir, TestDb, Writers,
};

const TIMEOUT: Duration = Duration::from_secs(90);

/// Rows of `public.t` before the engine starts.
const ROWS: i32 = 20_000;
/// Rows per chunk.
const CHUNK: u64 = 200;

/// A database with `public.t` (`ROWS` rows, as [`Writers`] write them)
/// and `public.other` (100 rows).
async fn database(prefix: &str) -> TestDb {
    let db = database_with_t(prefix, ROWS).await;
    db.exec(
        "CREATE TABLE public.other (id int PRIMARY KEY, v int);\
         INSERT INTO public.other SELECT g, g FROM generate_series(1, 100) g",
    )
    .await;
    db
}

/// The names a test's pipeline uses.
struct Names {
    publication: String,
    slot: String,
}

impl Names {
    fn new() -> Names {
        let s = unique_suffix();
        Names {
            publication: format!("p_{s}"),
            slot: format!("s_{s}"),
        }
    }

    /// A pipeline of `tables` into `out`, with incremental snapshots on and
    /// the initial snapshot in `mode`.
    fn pipeline(
        &self,
        db: &TestDb,
        tables: &[&str],
        out: &std::path::Path,
        mode: &str,
    ) -> Pipeline {
        Pipeline::new("incr", db.url())
            .tables(tables)
            .publication(&self.publication)
            .slot(&self.slot)
            .file_sink(out)
            .snapshot(&format!(
                "{{ mode: {mode}, incremental: {{ enabled: true, chunk_rows: {CHUNK} }} }}"
            ))
            .batching("{ max_batch_events: 256, max_batch_wait: 10ms }")
            .retry(FAST_RETRY)
    }
}

/// `state chunks_done rows_done` of the progress rows of `table`, one line
/// each, in snapshot order.
async fn progress_of(db: &TestDb, table: &str) -> Vec<String> {
    let (schema, name) = table.split_once('.').expect("schema.table");
    db.query_json(&format!(
        "SELECT state, chunks_done, rows_done FROM cdc.incremental_snapshots \
         WHERE table_schema = '{schema}' AND table_name = '{name}' ORDER BY snapshot_id"
    ))
    .await
    .into_iter()
    .map(|j| {
        format!(
            "{} {} {}",
            j["state"].as_str().unwrap_or("?"),
            j["chunks_done"],
            j["rows_done"]
        )
    })
    .collect()
}

/// Waits until the last snapshot of `table` is in `state`, touching
/// `public.other` meanwhile (so the stream keeps moving).
async fn wait_state(db: &TestDb, engine: &Engine, table: &str, state: &str) {
    let touch = Some("UPDATE public.other SET v = v + 1 WHERE id = 1");
    wait_progress(db, engine, table, state, touch, TIMEOUT, |p| {
        p.state == state
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_added_to_source_tables_is_snapshotted_incrementally_after_a_restart() {
    let db = database("incr_added").await;
    let dir = TempDir::new("incr_added");
    let out = dir.join("out.jsonl");
    let names = Names::new();
    let before = names
        .pipeline(&db, &["public.other"], &out, "initial")
        .yaml();
    let after = names
        .pipeline(&db, &["public.other", "public.t"], &out, "initial")
        .yaml();

    // The initial snapshot copies public.other; public.t is not captured.
    let mut first = Engine::start(&before);
    wait_streaming(&db, &mut first, &names.slot, TIMEOUT).await;
    first
        .stop_clean(Duration::from_secs(30), "the first run")
        .await;
    let published = format!(
        "SELECT count(*)::text FROM pg_publication_tables WHERE pubname = '{}' AND tablename = 't'",
        names.publication
    );
    assert_eq!(db.query_text(&published).await.as_deref(), Some("0"));

    // Restarted with public.t added: the slot exists, so no initial
    // snapshot runs; public.t is published and read chunk by chunk while
    // writers change it and the other table streams.
    let writers = Writers::start(db.url(), workload(ROWS)).await;
    let mut second = Engine::start(&after);
    wait_streaming(&db, &mut second, &names.slot, TIMEOUT).await;
    assert_eq!(db.query_text(&published).await.as_deref(), Some("1"));
    wait_state(&db, &second, "public.t", "done").await;
    let written = writers.finish().await;
    converged_reading_each_row_once(
        &db,
        &second,
        &out,
        &["public.t", "public.other"],
        ROWS,
        &written,
    )
    .await;
    let reason = db
        .query_text("SELECT payload->>'reason' FROM cdc.signals ORDER BY id DESC LIMIT 1")
        .await;
    assert_eq!(reason.as_deref(), Some("added to source.tables"));
    second
        .stop_clean(Duration::from_secs(30), "the second run")
        .await;

    // Once snapshotted, the table is not new any more.
    let mut third = Engine::start(&after);
    wait_streaming(&db, &mut third, &names.slot, TIMEOUT).await;
    assert_eq!(
        progress_of(&db, "public.t").await.len(),
        1,
        "snapshotted again"
    );
    assert_eq!(progress_of(&db, "public.other").await.len(), 0);
    third
        .stop_clean(Duration::from_secs(30), "the third run")
        .await;
    db.cleanup().await;
}

/// A stream-only pipeline of `public.t` and `public.other` into a file,
/// running and streaming; with `metrics`, its HTTP endpoint on that port.
async fn streaming_engine(
    db: &TestDb,
    dir: &TempDir,
    metrics: Option<u16>,
) -> (Names, String, Engine) {
    let names = Names::new();
    let mut pipeline = names.pipeline(
        db,
        &["public.t", "public.other"],
        &dir.join("out.jsonl"),
        "never",
    );
    if let Some(port) = metrics {
        pipeline = pipeline.set(
            "metrics",
            &format!("{{ listen: '127.0.0.1:{port}', snapshot_requests: true }}"),
        );
    }
    let yaml = pipeline.yaml();
    let mut engine = Engine::start(&yaml);
    wait_streaming(db, &mut engine, &names.slot, TIMEOUT).await;
    (names, yaml, engine)
}

/// `cdc-engine snapshot --config <yaml> <args>`: (exit code, stdout, stderr).
async fn cli_snapshot(yaml: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["snapshot"];
    all.extend_from_slice(args);
    let all: Vec<String> = all.into_iter().map(str::to_owned).collect();
    let yaml = yaml.to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        integration_tests::run_engine(&args, &yaml)
    })
    .await
    .expect("the CLI runs")
}

async fn signal_count(db: &TestDb) -> i64 {
    db.query_text("SELECT count(*)::text FROM cdc.signals")
        .await
        .and_then(|n| n.parse().ok())
        .expect("a count")
}

/// Waits until the file's events rebuild the rows of `public.t` matching
/// `condition` (SQL) exactly as the table holds them, looking only at the
/// rebuilt rows whose `id` satisfies `matches`. Returns the file's events.
async fn wait_converged_where(
    db: &TestDb,
    engine: &Engine,
    path: &std::path::Path,
    condition: &str,
    matches: impl Fn(i64) -> bool,
) -> Tail {
    let want = db
        .to_jsonb_rows(&format!("(SELECT * FROM public.t WHERE {condition})"), "id")
        .await;
    let mut tail = Tail::new(0, path.to_owned());
    let result = integration_tests::replay::converge(
        integration_tests::replay::CATCH_UP_TIMEOUT,
        Duration::from_millis(400),
        &want,
        async || {
            tail.poll();
            let events = integration_tests::replay::merged(&[&tail]);
            integration_tests::replay::apply(&events, "public.t")
                .into_iter()
                .filter(|(k, _)| k.parse::<i64>().is_ok_and(&matches))
                .collect::<std::collections::BTreeMap<_, _>>()
        },
    )
    .await;
    if let Err(d) = result {
        panic!(
            "the rows of public.t where {condition} did not converge: {d}\n{}",
            engine.output_report()
        );
    }
    tail
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_asks_a_running_engine_for_a_filtered_snapshot_and_refuses_bad_requests() {
    let db = database("incr_cli").await;
    let dir = TempDir::new("incr_cli");
    let (_names, yaml, engine) = streaming_engine(&db, &dir, None).await;

    // Refused before anything is written: a table not captured, a column
    // the table lacks, text that would escape its parentheses.
    for (args, says) in [
        (&["--table", "public.nope"][..], "not in source.tables"),
        (
            &["--table", "public.t", "--where", "nope > 1"][..],
            "is not a valid condition on it",
        ),
        (
            &["--table", "public.t", "--where", "true) OR (true"][..],
            "closes a parenthesis it did not open",
        ),
    ] {
        let (code, out, err) = cli_snapshot(&yaml, args).await;
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(
        signal_count(&db).await,
        0,
        "a refused request wrote a signal"
    );

    let writers = Writers::start(db.url(), workload(ROWS)).await;
    let (code, out, err) =
        cli_snapshot(&yaml, &["--table", "public.t", "--where", "id % 3 = 0"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("queued: public.t where id % 3 = 0"), "{out}");
    wait_state(&db, &engine, "public.t", "done").await;
    let written = writers.finish().await;
    let filter = db
        .query_text("SELECT filter FROM cdc.incremental_snapshots")
        .await;
    assert_eq!(filter.as_deref(), Some("id % 3 = 0"));

    let tail = wait_converged_where(&db, &engine, &dir.join("out.jsonl"), "id % 3 = 0", |id| {
        id % 3 == 0
    })
    .await;
    let reads = read_ids(&tail, "public.t");
    eprintln!(
        "{} reads; writers: {} transactions",
        reads.len(),
        written.committed
    );
    assert!(
        reads.iter().all(|id| id % 3 == 0),
        "a read outside the filter"
    );
    assert!(
        reads.len() > ROWS as usize / 6,
        "only {} reads",
        reads.len()
    );
    let mut engine = engine;
    engine
        .stop_clean(Duration::from_secs(30), "the engine")
        .await;
    db.cleanup().await;
}

/// `POST /snapshot` with `body`: status and JSON answer.
async fn post_snapshot(port: u16, body: &str) -> (u16, serde_json::Value) {
    let r = integration_tests::http::client()
        .post(format!("http://127.0.0.1:{port}/snapshot"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("the endpoint answers");
    let status = r.status().as_u16();
    let text = r.text().await.expect("a body");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn post_snapshot_and_a_signal_row_ask_for_filtered_snapshots() {
    let db = database("incr_http").await;
    let dir = TempDir::new("incr_http");
    let port = integration_tests::http::free_port();
    let (_names, _yaml, engine) = streaming_engine(&db, &dir, Some(port)).await;

    let (status, answer) =
        post_snapshot(port, r#"{"tables": ["public.t"], "where": "nope"}"#).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().is_some_and(|e| e.contains("nope")),
        "{answer}"
    );
    assert_eq!(
        signal_count(&db).await,
        0,
        "a refused request wrote a signal"
    );

    let writers = Writers::start(db.url(), workload(ROWS)).await;
    let (status, answer) =
        post_snapshot(port, r#"{"tables": ["public.t"], "where": "id <= 5000"}"#).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["tables"], serde_json::json!(["public.t"]));
    assert_eq!(answer["where"], "id <= 5000");
    assert!(answer["signal"].as_i64().is_some(), "{answer}");
    wait_state(&db, &engine, "public.t", "done").await;

    // The same by a signal row, with another filter: a second snapshot.
    db.exec(
        r#"INSERT INTO cdc.signals (kind, payload)
           VALUES ('snapshot', '{"tables": ["public.t"], "where": "id > 15000 AND id <= 17000"}')"#,
    )
    .await;
    let second = wait_until(TIMEOUT, async || {
        progress_of(&db, "public.t").await.len() == 2
    })
    .await;
    assert!(second, "{:?}", progress_of(&db, "public.t").await);
    wait_state(&db, &engine, "public.t", "done").await;
    writers.finish().await;

    let in_filters = |id: i64| id <= 5000 || (15000 < id && id <= 17000);
    let tail = wait_converged_where(
        &db,
        &engine,
        &dir.join("out.jsonl"),
        "id <= 5000 OR (id > 15000 AND id <= 17000)",
        in_filters,
    )
    .await;
    let reads = read_ids(&tail, "public.t");
    assert!(
        reads.iter().all(|id| in_filters(*id)),
        "a read outside the filters"
    );
    assert!(reads.len() > 3500, "only {} reads", reads.len());

    // Progress as /status, /metrics and `cdc-engine status` show it: the
    // table's latest snapshot, done, with the stored numbers.
    let stored = db
        .query_json(
            "SELECT snapshot_id, chunks_done, rows_done FROM cdc.incremental_snapshots \
             ORDER BY snapshot_id DESC LIMIT 1",
        )
        .await
        .remove(0);
    let status = integration_tests::http::status(port).await;
    let shown = &status["incremental_snapshots"][0];
    assert_eq!(shown["table"], "public.t", "{status}");
    assert_eq!(shown["state"], "done", "{status}");
    assert_eq!(shown["snapshot"], stored["snapshot_id"], "{status}");
    assert_eq!(shown["chunks"], stored["chunks_done"], "{status}");
    assert_eq!(shown["rows"], stored["rows_done"], "{status}");
    assert_eq!(shown["where"], "id > 15000 AND id <= 17000", "{status}");
    let (_, metrics) = integration_tests::http::get(port, "/metrics")
        .await
        .expect("/metrics answers");
    let rows_total: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cdc_incremental_snapshot_rows_total{table=\"public.t\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no rows counter in\n{metrics}"));
    assert_eq!(
        rows_total as usize,
        reads.len(),
        "rows counted != rows read"
    );
    assert!(
        metrics.contains("cdc_incremental_snapshot_state{table=\"public.t\",state=\"done\"} 1"),
        "{metrics}"
    );
    let yaml = std::fs::read_to_string(engine.config_path()).expect("the config");
    let (code, out, err) =
        tokio::task::spawn_blocking(move || integration_tests::run_engine(&["status"], &yaml))
            .await
            .expect("the CLI runs");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "incremental snapshot {} public.t: done, {} chunks, {} rows",
            stored["snapshot_id"], stored["chunks_done"], stored["rows_done"]
        )),
        "{out}"
    );
    let mut engine = engine;
    engine
        .stop_clean(Duration::from_secs(30), "the engine")
        .await;
    db.cleanup().await;
}

/// What a library consumer saw, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// An incremental read of `public.t`, by id.
    Read(i64),
    /// A change of `public.other`, by id.
    Other(i64),
    /// A logical message of prefix `test`.
    Mark(String),
    /// The end of a table's incremental snapshot.
    End,
}

/// A library source of `public.t` and `public.other` with its consumer's
/// view.
struct Library {
    cfg: cdc_postgres::PgSourceConfig,
    source: cdc_postgres::PgSource,
    seen: Vec<Seen>,
}

impl Library {
    async fn connect(db: &TestDb) -> Library {
        let s = unique_suffix();
        let mut cfg = cdc_postgres::PgSourceConfig::new(
            db.url(),
            vec![
                cdc_core::TableName::new("public", "t"),
                cdc_core::TableName::new("public", "other"),
            ],
            format!("lp_{s}"),
            format!("ls_{s}"),
        );
        cfg.incremental.enabled = true;
        cfg.incremental.chunk_rows = 100;
        cfg.max_batch_wait = Duration::from_millis(5);
        let source = cdc_postgres::PgSource::connect(cfg.clone())
            .await
            .expect("connect");
        Library {
            cfg,
            source,
            seen: Vec::new(),
        }
    }

    /// Takes batches, acknowledging each, until `done` holds.
    async fn drive(&mut self, what: &str, mut done: impl FnMut(&[Seen]) -> bool) {
        use cdc_core::{ControlEvent, Event, Source};
        let ack = self.source.ack_handle();
        let deadline = std::time::Instant::now() + TIMEOUT;
        while !done(&self.seen) {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not within {TIMEOUT:?}; last seen: {:?}",
                &self.seen[self.seen.len().saturating_sub(5)..]
            );
            // Never cancelled midway (a batch being filled would be lost):
            // only at the deadline, which fails the test anyway.
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(batch) = tokio::time::timeout(left, self.source.next_batch()).await else {
                continue;
            };
            let batch = batch.expect("next_batch").expect("the source does not end");
            for event in &batch.events {
                let id = |row: &Option<cdc_core::Row>| match row.as_ref().map(|r| &r.values()[0]) {
                    Some(cdc_core::Value::Int4(i)) => i64::from(*i),
                    other => panic!("an int4 id, not {other:?}"),
                };
                match event {
                    Event::Change(c) if c.table.name.name == "t" && c.op == cdc_core::Op::Read => {
                        self.seen.push(Seen::Read(id(&c.after)))
                    }
                    Event::Change(c) if c.table.name.name == "other" => {
                        self.seen.push(Seen::Other(id(&c.after)))
                    }
                    Event::Control(ControlEvent::Message {
                        prefix, content, ..
                    }) if prefix == "test" => self
                        .seen
                        .push(Seen::Mark(String::from_utf8_lossy(content).into_owned())),
                    Event::Control(ControlEvent::IncrementalSnapshotEnd { .. }) => {
                        self.seen.push(Seen::End)
                    }
                    _ => {}
                }
            }
            ack.durable(&batch);
        }
    }

    /// Commits `sql` with a message `mark` (prefix `test`) in the same
    /// transaction, and takes batches until the message came through.
    async fn signal(&mut self, db: &TestDb, sql: &str, mark: &str) {
        db.exec(&format!(
            "BEGIN; {sql}; SELECT pg_logical_emit_message(true, 'test', '{mark}'); COMMIT"
        ))
        .await;
        let want = Seen::Mark(mark.to_owned());
        self.drive(mark, |s| s.contains(&want)).await;
    }

    /// `n` transactions on `public.other`, each taken from the stream
    /// before the next: at least `n` batches, each a chance to read a
    /// chunk.
    async fn activity(&mut self, db: &TestDb, n: i64) {
        for _ in 0..n {
            let id: i64 = db
                .query_text("INSERT INTO public.other (v) VALUES (0) RETURNING id::text")
                .await
                .and_then(|t| t.parse().ok())
                .expect("an id");
            self.drive("activity", |s| s.contains(&Seen::Other(id)))
                .await;
        }
    }

    fn reads_between(&self, from: &str, to: Option<&str>) -> usize {
        let at = |m: &str| {
            self.seen
                .iter()
                .position(|s| *s == Seen::Mark(m.to_owned()))
                .unwrap_or_else(|| panic!("no mark {m}"))
        };
        let end = to.map_or(self.seen.len(), at);
        self.seen[at(from)..end]
            .iter()
            .filter(|s| matches!(s, Seen::Read(_)))
            .count()
    }
}

async fn state_of_t(db: &TestDb) -> Vec<String> {
    progress_of(db, "public.t")
        .await
        .into_iter()
        .map(|p| p.split(' ').next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signals_pause_resume_and_stop_a_snapshot_and_the_state_survives_a_restart() {
    let db = TestDb::create("incr_control").await;
    db.exec(
        "CREATE TABLE public.t (id int PRIMARY KEY, v int);\
         INSERT INTO public.t SELECT g, g FROM generate_series(1, 3000) g;\
         CREATE TABLE public.other (id serial PRIMARY KEY, v int)",
    )
    .await;
    let mut lib = Library::connect(&db).await;
    let snapshot = r#"INSERT INTO cdc.signals (kind, payload) VALUES ('snapshot', '{"tables": ["public.t"]}')"#;
    lib.signal(&db, snapshot, "asked").await;
    lib.drive("500 reads", |s| {
        s.iter().filter(|e| matches!(e, Seen::Read(_))).count() >= 500
    })
    .await;

    // Paused (all snapshots: no payload): the state is stored at once, no
    // chunk is read however many batches go by, and a restart keeps it.
    lib.signal(
        &db,
        "INSERT INTO cdc.signals (kind) VALUES ('pause-snapshot')",
        "paused",
    )
    .await;
    assert_eq!(state_of_t(&db).await, ["paused"]);
    lib.activity(&db, 30).await;
    cdc_core::Source::shutdown(&mut lib.source)
        .await
        .expect("shutdown");
    let cfg = lib.cfg.clone();
    let seen = std::mem::take(&mut lib.seen);
    drop(lib);
    let mut lib = loop {
        match cdc_postgres::PgSource::connect(cfg.clone()).await {
            Ok(source) => break Library { cfg, source, seen },
            Err(e) => {
                eprintln!("connect: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    lib.activity(&db, 10).await;
    assert_eq!(state_of_t(&db).await, ["paused"]);
    lib.signal(
        &db,
        r#"INSERT INTO cdc.signals (kind, payload) VALUES ('resume-snapshot', '{"tables": ["public.t"]}')"#,
        "resumed",
    )
    .await;
    assert_eq!(
        lib.reads_between("paused", Some("resumed")),
        0,
        "read while paused"
    );
    lib.drive("the end", |s| s.contains(&Seen::End)).await;
    let ids: std::collections::BTreeSet<i64> = lib
        .seen
        .iter()
        .filter_map(|s| match s {
            Seen::Read(id) => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, (1..=3000).collect(), "rows missing after the pause");

    // A second snapshot, stopped midway: nothing more is read, the state
    // says so, and a restart does not take it up again.
    lib.signal(&db, snapshot, "asked again").await;
    lib.drive("reads of the second snapshot", |s| {
        let asked = s
            .iter()
            .position(|e| *e == Seen::Mark("asked again".into()))
            .unwrap_or(s.len());
        s[asked..]
            .iter()
            .filter(|e| matches!(e, Seen::Read(_)))
            .count()
            >= 300
    })
    .await;
    lib.signal(
        &db,
        r#"INSERT INTO cdc.signals (kind, payload) VALUES ('stop-snapshot', '{"tables": ["public.t"]}')"#,
        "stopped",
    )
    .await;
    assert_eq!(state_of_t(&db).await, ["done", "stopped"]);
    lib.activity(&db, 30).await;
    assert_eq!(lib.reads_between("stopped", None), 0, "read after the stop");
    assert_eq!(
        lib.seen.iter().filter(|s| **s == Seen::End).count(),
        1,
        "the stopped snapshot ended"
    );
    drop(lib);
    db.cleanup().await;
}
