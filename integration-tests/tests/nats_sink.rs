//! The NATS sink through `cdc-engine` (built with the `nats` feature)
//! against a real nats-server with JetStream (`CDC_TEST_NATS_URL`, started
//! by `scripts/servers/nats.sh`).
//!
//! Every test uses subjects and a stream of its own (`it_<suffix>`), so the
//! tests share the server without seeing each other's messages. The
//! server-restart test starts a server of its own from
//! `CDC_TEST_NATS_SERVER_BIN`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream::StorageType};
use integration_tests::http::free_port;
use integration_tests::incremental::{
    self, assert_each_chunk_read_once, assert_resumed_after_durable, chunk_reads,
    incremental_snapshots, kill_midway_and_resume, request_snapshot, wait_snapshot_done,
    writers_own, Chaser,
};
use integration_tests::nats::{server_bin, stream_messages};
use integration_tests::pipelines::Pipeline;
use integration_tests::replay::{self, apply, Change};
use integration_tests::{
    run_engine_validate, unique_suffix, wait_streaming, wait_until, CutProxy, Engine, Mix, TempDir,
    TestDb, Workload, Writers,
};
use serde_json::Value as Json;

fn nats_url() -> String {
    match std::env::var("CDC_TEST_NATS_URL") {
        Ok(u) if !u.trim().is_empty() => u.trim().to_owned(),
        _ => panic!(
            "CDC_TEST_NATS_URL is not set: run ./scripts/test.sh (it starts nats-server \
             with JetStream via scripts/servers/nats.sh)"
        ),
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// One message read back from a stream.
#[derive(Debug, Clone)]
struct Msg {
    subject: String,
    msg_id: String,
    op_header: String,
    table_header: String,
    body: Json,
    /// The body as a change event.
    change: Change,
}

/// Reads a stream from sequence 1 on, remembering where it stopped.
struct StreamReader {
    js: jetstream::Context,
    name: String,
    next_seq: u64,
    messages: Vec<Msg>,
}

impl StreamReader {
    async fn new(url: &str, name: &str) -> StreamReader {
        let client = async_nats::connect(url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
        StreamReader {
            js: jetstream::new(client),
            name: name.to_owned(),
            next_seq: 1,
            messages: Vec::new(),
        }
    }

    /// Reads what was added since the last call; errors (stream not there
    /// yet, server restarting) leave the reader where it was.
    async fn poll(&mut self) -> &[Msg] {
        let Ok(mut stream) = self.js.get_stream(&self.name).await else {
            return &self.messages;
        };
        let Ok(info) = stream.info().await else {
            return &self.messages;
        };
        let last = info.state.last_sequence;
        while self.next_seq <= last {
            let Ok(m) = stream.get_raw_message(self.next_seq).await else {
                break;
            };
            let header = |name: &str| {
                m.headers
                    .get(name)
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default()
            };
            let body: Json = serde_json::from_slice(&m.payload).unwrap_or_else(|e| {
                panic!("message {} is not JSON ({e}): {:?}", m.sequence, m.payload)
            });
            let change = Change::from_json(0, m.sequence as usize, body.clone())
                .unwrap_or_else(|e| panic!("message {} is not a change ({e}): {body}", m.sequence));
            self.messages.push(Msg {
                subject: m.subject.to_string(),
                msg_id: header("Nats-Msg-Id"),
                op_header: header("Cdc-Op"),
                table_header: header("Cdc-Table"),
                body,
                change,
            });
            self.next_seq += 1;
        }
        &self.messages
    }

    /// Deletes the stream (tests clean up the shared server).
    async fn delete(&self) {
        let _ = self.js.delete_stream(&self.name).await;
    }

    async fn message_count(&self) -> u64 {
        let mut stream = self.js.get_stream(&self.name).await.expect("stream");
        stream.info().await.expect("stream info").state.messages
    }
}

/// `n` writers of up to two changes per transaction on ids 1..=60 (80 %
/// upserts, 20 % deletes).
async fn start_writers(db: &TestDb, n: usize) -> Writers {
    let workload = Workload {
        keys: 60,
        max_changes: 2,
        mix: Mix {
            upsert: 4,
            delete: 1,
            ..Mix::default()
        },
        ..Workload::new(n)
    };
    Writers::start(db.url(), workload).await
}

/// A pipeline of `table` (as written in YAML) with one nats sink entry
/// (`sink`: the block lines of the entry's keys after `type: nats`);
/// stream-only unless the caller sets `snapshot`.
fn pipeline(db: &TestDb, s: &str, table: &str, sink: &str) -> Pipeline {
    let (publication, slot) = (format!("p_{s}"), format!("s_{s}"));
    Pipeline::streaming(
        &format!("it_{s}"),
        db.url(),
        table,
        &publication,
        &slot,
        200,
    )
    .sink(&format!("type: nats\n{sink}"))
}

/// How long an engine may take to start streaming.
const STREAMING: Duration = Duration::from_secs(90);

/// `public.t` of most tests here.
const TABLE_T: &str = "CREATE TABLE public.t (id int PRIMARY KEY, v int NOT NULL, note text)";

/// A test's database with `public.t` ([`TABLE_T`]), and a unique suffix
/// `s` for its names (publication `p_<s>`, slot `s_<s>`, subjects
/// `it_<s>.…`, stream `IT_<s>`).
async fn db_with_t(name: &str) -> (TestDb, String) {
    let db = TestDb::create(name).await;
    db.exec(TABLE_T).await;
    (db, unique_suffix())
}

/// The engine of `yaml` (a [`pipeline`] with suffix `s`), once it
/// streams.
async fn start_streaming(db: &TestDb, s: &str, yaml: &str) -> Engine {
    let mut engine = Engine::start(yaml);
    wait_streaming(db, &mut engine, &format!("s_{s}"), STREAMING).await;
    engine
}

/// Waits until the stream rebuilds `public.t`, applying the messages in
/// stream order, or (`by_position`) in `(commit_lsn, ordinal)` order;
/// returns the messages in stream order.
async fn converge(
    db: &TestDb,
    reader: &mut StreamReader,
    engine: &mut Engine,
    by_position: bool,
) -> Vec<Msg> {
    let want = db.to_jsonb_rows("public.t", "id").await;
    let result = replay::converge(Duration::from_secs(90), Duration::ZERO, &want, async || {
        let mut changes: Vec<&Change> = reader.poll().await.iter().map(|m| &m.change).collect();
        if by_position {
            changes.sort_by_key(|c| c.position());
        }
        apply(&changes, "public.t")
    })
    .await;
    if let Err(d) = result {
        panic!(
            "the stream did not converge to the table: {d}\n{}",
            engine.output_report()
        );
    }
    reader.messages.clone()
}

/// Snapshot of existing rows, then streaming while four writers change the
/// table (also during the snapshot): the stream rebuilds the table exactly
/// (`to_jsonb`), snapshot reads come first, streamed changes follow in
/// commit order, and no change is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_then_stream_under_concurrent_writes() {
    let db = TestDb::create("nats_e2e").await;
    db.exec(
        "CREATE TABLE public.t (id int PRIMARY KEY, v int NOT NULL, note text);
         INSERT INTO public.t SELECT g, -g, 'seed ' || g FROM generate_series(1, 400) g;",
    )
    .await;
    let s = unique_suffix();
    let stream = format!("IT_{s}");
    let sink = format!(
        "url: {url}\nsubject: \"it_{s}.{{schema}}.{{table}}\"\n\
         stream: {{ name: {stream}, create: true, storage: memory }}\n",
        url = json_str(&nats_url()),
    );
    let yaml = pipeline(&db, &s, "public.t", &sink)
        .snapshot("{ mode: initial, chunk_rows: 50, workers: 2 }")
        .yaml();
    let started = Instant::now();
    let mut engine = Engine::start(&yaml);
    let writers = start_writers(&db, 4).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let written = writers.finish().await;
    assert!(
        written.committed > 50,
        "writers committed only {}",
        written.committed
    );

    let mut reader = StreamReader::new(&nats_url(), &stream).await;
    let messages = converge(&db, &mut reader, &mut engine, false).await;

    let subject = format!("it_{s}.public.t");
    assert!(messages.iter().all(|m| m.subject == subject));
    let reads = messages.iter().filter(|m| m.body["op"] == "r").count();
    // The writers touch ids 1..=60 only (and start before the snapshot).
    assert!(reads >= 340, "only {reads} snapshot reads");
    let first_streamed = messages
        .iter()
        .position(|m| m.body["op"] != "r")
        .unwrap_or(messages.len());
    assert!(
        messages[first_streamed..]
            .iter()
            .all(|m| m.body["op"] != "r"),
        "a snapshot read after a streamed change"
    );
    let streamed: Vec<(u64, u64)> = messages[first_streamed..]
        .iter()
        .map(|m| m.change.position())
        .collect();
    assert!(
        streamed.windows(2).all(|w| w[0] < w[1]),
        "streamed changes are not in commit order"
    );
    let ids: HashSet<&str> = messages.iter().map(|m| m.msg_id.as_str()).collect();
    assert_eq!(ids.len(), messages.len(), "a Nats-Msg-Id was stored twice");
    // Nothing failed and nothing was replayed: a message the server dropped
    // as a duplicate would be a different change with a colliding id.
    assert!(
        !engine.stderr_text().contains("dropped replayed messages"),
        "the server dropped a message as a duplicate without a replay\n{}",
        engine.output_report()
    );
    assert!(messages
        .iter()
        .all(|m| m.op_header == m.body["op"].as_str().unwrap_or("")));

    engine.stop_clean(Duration::from_secs(90), "stop").await;
    eprintln!(
        "{} messages ({reads} snapshot reads, {} streamed changes) in {:?}",
        messages.len(),
        messages.len() - reads,
        started.elapsed()
    );
    reader.delete().await;
    db.cleanup().await;
}

/// SIGKILL twice while writing, restart each time: the restarted runs send
/// again what the slot had not yet acknowledged, and the server drops it by
/// `Nats-Msg-Id`: the stream holds exactly one message per committed change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_replay_is_deduplicated() {
    let (db, s) = db_with_t("nats_dedup").await;
    let stream = format!("IT_{s}");
    let sink = format!(
        "url: {url}\nsubject: \"it_{s}.{{table}}\"\n\
         stream: {{ name: {stream}, create: true, duplicate_window: 2m }}\n",
        url = json_str(&nats_url()),
    );
    let yaml = pipeline(&db, &s, "public.t", &sink).yaml();
    let mut runs = vec![start_streaming(&db, &s, &yaml).await];
    let writers = start_writers(&db, 4).await;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let engine = runs.last_mut().unwrap();
        engine.kill9().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        runs.push(Engine::start(&yaml));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let written = writers.finish().await;

    let mut reader = StreamReader::new(&nats_url(), &stream).await;
    let last = runs.last_mut().unwrap();
    let messages = converge(&db, &mut reader, last, false).await;
    last.stop_clean(Duration::from_secs(90), "stop").await;

    let stored = reader.message_count().await;
    let ids: HashSet<&str> = messages.iter().map(|m| m.msg_id.as_str()).collect();
    let dropped: usize = runs
        .iter()
        .map(|r| r.stderr_text().matches("dropped replayed messages").count())
        .sum();
    eprintln!(
        "{} changes committed, {stored} messages stored, {} distinct ids; {dropped} batches had replays dropped",
        written.changes.len(),
        ids.len()
    );
    if stored as usize != written.changes.len() {
        // Where are the missing changes? Values of `v` are handed out in
        // order; a long run of missing values locates the gap.
        let mut vs: Vec<(i64, (u64, u64))> = messages
            .iter()
            .filter_map(|m| Some((m.body["after"]["v"].as_i64()?, m.change.position())))
            .collect();
        vs.sort_unstable();
        let gaps: Vec<String> = vs
            .windows(2)
            .filter(|w| w[1].0 - w[0].0 > 20)
            .map(|w| {
                format!(
                    "v {}..{} between positions {:?} and {:?}",
                    w[0].0, w[1].0, w[0].1, w[1].1
                )
            })
            .collect();
        let starts: Vec<String> = runs
            .iter()
            .flat_map(|r| {
                r.stderr_text()
                    .lines()
                    .filter(|l| l.contains("streaming started"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        panic!(
            "messages in the stream ({stored}) != committed changes ({}); gaps: {gaps:#?}\nstarts: {starts:#?}\nlast run:\n{}",
            written.changes.len(),
            runs.last().map(|r| r.output_report()).unwrap_or_default()
        );
    }
    assert_eq!(ids.len(), messages.len(), "a Nats-Msg-Id is stored twice");
    assert!(
        dropped > 0,
        "no restarted run replayed anything: the test did not exercise de-duplication"
    );
    reader.delete().await;
    db.cleanup().await;
}

/// Rows of `public.t` when the incremental snapshot test starts.
const INCREMENTAL_ROWS: i32 = 8000;
/// Rows per chunk of that snapshot.
const INCREMENTAL_CHUNK: u64 = 250;

/// A test's database with a `public.t` of [`INCREMENTAL_ROWS`] rows, its
/// suffix `s`, its JetStream stream (in memory) and a stream-only pipeline
/// with incremental snapshots on.
async fn incremental_setup(name: &str) -> (TestDb, String, String, String) {
    let (db, s) = db_with_t(name).await;
    db.exec(&format!(
        "INSERT INTO public.t SELECT g, -g, 'row ' || g FROM generate_series(1, {INCREMENTAL_ROWS}) g"
    ))
    .await;
    let stream = format!("IT_{s}");
    let sink = format!(
        "url: {url}\nsubject: \"it_{s}.{{table}}\"\n\
         stream: {{ name: {stream}, create: true, storage: memory }}\n",
        url = json_str(&nats_url()),
    );
    let yaml = pipeline(&db, &s, "public.t", &sink)
        .snapshot(&incremental_snapshots(INCREMENTAL_CHUNK))
        .yaml();
    (db, s, stream, yaml)
}

/// An incremental snapshot asked for by a signal while writers change the
/// table all over (and just ahead of the snapshot): the stream, read in
/// order, gives the table exactly (no read overwrote a newer change of its
/// row), every committed change is there, no `Nats-Msg-Id` is stored
/// twice (a read's id names its chunk and key), and each chunk was read
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incremental_snapshot_under_writes() {
    let started = Instant::now();
    let (db, s, stream, yaml) = incremental_setup("nats_incr").await;
    let mut engine = Engine::start(&yaml);
    wait_streaming(&db, &mut engine, &format!("s_{s}"), STREAMING).await;
    let writers = Writers::start(db.url(), incremental::workload(INCREMENTAL_ROWS)).await;
    request_snapshot(&db, &["public.t"]).await;
    let chaser = Chaser::start(&db, "public.t", 4 * INCREMENTAL_CHUNK as i64).await;
    wait_snapshot_done(&db, &["public.t"], &[&engine], Duration::from_secs(120)).await;
    let chased = chaser.finish().await;
    let written = writers.finish().await;

    let mut reader = StreamReader::new(&nats_url(), &stream).await;
    let messages = converge(&db, &mut reader, &mut engine, false).await;
    let changes: Vec<&Change> = messages.iter().map(|m| &m.change).collect();
    writers_own(&written).assert_no_loss(&changes);
    let ids: HashSet<&str> = messages.iter().map(|m| m.msg_id.as_str()).collect();
    assert_eq!(ids.len(), messages.len(), "a Nats-Msg-Id is stored twice");
    assert!(
        !engine.stderr_text().contains("dropped replayed messages"),
        "the server dropped a message as a duplicate without a replay\n{}",
        engine.output_report()
    );
    assert_in_commit_order(&messages, &engine);
    let (reads, chunks) = assert_each_chunk_read_once(changes.iter().copied(), INCREMENTAL_ROWS);
    engine.stop_clean(Duration::from_secs(90), "stop").await;
    eprintln!(
        "{reads} reads in {chunks} chunks, {} messages, {} commits and {chased} updates just \
         ahead of the snapshot in {:?}",
        messages.len(),
        written.committed,
        started.elapsed()
    );
    reader.delete().await;
    db.cleanup().await;
}

/// SIGKILL in the middle of an incremental snapshot, under writes: the
/// restarted engine resumes after the last chunk JetStream had
/// acknowledged (the chunks read after it are read again, at new
/// watermarks, so under new `Nats-Msg-Id`s, and counted), and the stream,
/// read in order, still gives the table exactly with every committed
/// change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incremental_snapshot_resumes_after_sigkill() {
    let (db, s, stream, yaml) = incremental_setup("nats_incr_kill").await;
    let mut resumed = kill_midway_and_resume(
        &db,
        &yaml,
        &format!("s_{s}"),
        incremental::workload(INCREMENTAL_ROWS),
        4 * INCREMENTAL_CHUNK as i64,
        Duration::from_secs(120),
    )
    .await;
    let mut reader = StreamReader::new(&nats_url(), &stream).await;
    let messages = converge(&db, &mut reader, &mut resumed.engine, false).await;
    let changes: Vec<&Change> = messages.iter().map(|m| &m.change).collect();
    writers_own(&resumed.written).assert_no_loss(&changes);
    let ids: HashSet<&str> = messages.iter().map(|m| m.msg_id.as_str()).collect();
    assert_eq!(ids.len(), messages.len(), "a Nats-Msg-Id is stored twice");
    let chunks = chunk_reads(changes.iter().copied(), "public.t");
    assert_resumed_after_durable("nats", &resumed, &chunks, INCREMENTAL_CHUNK);
    let mut engine = resumed.engine;
    engine.stop_clean(Duration::from_secs(90), "stop").await;
    reader.delete().await;
    db.cleanup().await;
}

/// A nats-server of the test's own, on a free port, with file storage.
struct OwnServer {
    bin: String,
    port: u16,
    store: TempDir,
    token: Option<String>,
    /// The nkey seed the readiness check connects with.
    nkey_seed: Option<String>,
    /// Extra command-line arguments of the server.
    args: Vec<String>,
    /// `(ca, cert, key)` the readiness check connects with.
    client_tls: Option<(PathBuf, PathBuf, PathBuf)>,
    child: Option<Child>,
}

impl OwnServer {
    fn start() -> OwnServer {
        OwnServer::start_with_token(None)
    }

    /// Started with `--auth <token>` when `token` is given.
    fn start_with_token(token: Option<&str>) -> OwnServer {
        OwnServer::start_with(token, Vec::new(), None)
    }

    fn start_with(
        token: Option<&str>,
        args: Vec<String>,
        client_tls: Option<(PathBuf, PathBuf, PathBuf)>,
    ) -> OwnServer {
        let (bin, port) = (server_bin(), free_port());
        let mut s = OwnServer {
            bin,
            port,
            store: TempDir::new("nats_store"),
            token: token.map(str::to_owned),
            nkey_seed: None,
            args,
            client_tls,
            child: None,
        };
        s.spawn();
        s
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.store.join("server.log"))
            .expect("server log");
        let child = Command::new(&self.bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.join("js"))
            .args(self.token.iter().flat_map(|t| ["--auth", t.as_str()]))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin));
        self.child = Some(child);
    }

    async fn wait_ready(&self) {
        let url = self.url();
        let ok = wait_until(Duration::from_secs(20), async || {
            let mut options = match &self.nkey_seed {
                Some(seed) => async_nats::ConnectOptions::with_nkey(seed.clone()),
                None => {
                    async_nats::ConnectOptions::new().token(self.token.clone().unwrap_or_default())
                }
            };
            if let Some((ca, cert, key)) = &self.client_tls {
                options = options
                    .require_tls(true)
                    .add_root_certificates(ca.clone())
                    .add_client_certificate(cert.clone(), key.clone());
            }
            match options.connect(&url).await {
                Ok(c) => jetstream::new(c).query_account().await.is_ok(),
                Err(_) => false,
            }
        })
        .await;
        assert!(ok, "own nats-server on {url} not ready");
    }

    /// SIGTERM (a clean shutdown) and wait for the exit.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The server restarts (file storage) while the engine publishes: the
/// engine keeps running, reconnects, and every committed change ends up in
/// the stream exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_restart_with_file_storage_loses_nothing() {
    let mut server = OwnServer::start();
    server.wait_ready().await;
    let (db, s) = db_with_t("nats_restart").await;
    let stream = format!("IT_{s}");
    let sink = format!(
        "url: {url}\nsubject: \"it_{s}.{{schema}}.{{table}}\"\nack_timeout: 2s\n\
         stream: {{ name: {stream}, create: true, storage: file }}\n",
        url = json_str(&server.url()),
    );
    let yaml = pipeline(&db, &s, "public.t", &sink).yaml();
    let mut engine = start_streaming(&db, &s, &yaml).await;
    let writers = start_writers(&db, 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.spawn();
    server.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let written = writers.finish().await;

    let mut reader = StreamReader::new(&server.url(), &stream).await;
    // Applied in stream order: chaining (`exclusive_stream`, the default)
    // keeps the stream in commit order across the restart.
    let messages = converge(&db, &mut reader, &mut engine, false).await;
    assert_in_commit_order(&messages, &engine);
    assert!(
        engine.is_running(),
        "the engine stopped\n{}",
        engine.output_report()
    );
    let stored = reader.message_count().await;
    eprintln!(
        "{} changes committed, {stored} stored",
        written.changes.len()
    );
    assert_eq!(
        stored as usize,
        written.changes.len(),
        "\n{}",
        engine.output_report()
    );
    let ids: HashSet<&str> = messages.iter().map(|m| m.msg_id.as_str()).collect();
    assert_eq!(ids.len(), messages.len());
    assert!(
        engine.stderr_text().contains("disconnected"),
        "the engine never saw the server go away\n{}",
        engine.output_report()
    );
    engine.stop_clean(Duration::from_secs(90), "stop").await;
    db.cleanup().await;
}

/// Fails unless the messages' positions strictly increase in stream order.
fn assert_in_commit_order(messages: &[Msg], engine: &Engine) {
    let positions: Vec<(u64, u64)> = messages.iter().map(|m| m.change.position()).collect();
    let late: Vec<_> = positions.windows(2).filter(|w| w[0] >= w[1]).collect();
    assert!(
        late.is_empty(),
        "{} message(s) stored after a later change (first: {:?})\n{}",
        late.len(),
        late.first(),
        engine.output_report()
    );
}

/// The connection to the server is cut again and again while the engine
/// publishes: messages async-nats still had queued are sent after each
/// reconnect, behind ones the cut connection lost. With chaining
/// (`Nats-Expected-Last-Msg-Id`, on by default) JetStream refuses them and
/// the retried batch stores everything in commit order: the stream, read
/// in order, holds each change once, in commit order, and rebuilds the
/// table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_connections_never_reorder_the_stream() {
    let upstream: std::net::SocketAddr = nats_url()
        .trim_start_matches("nats://")
        .parse()
        .expect("CDC_TEST_NATS_URL is nats://127.0.0.1:PORT");
    let proxy = CutProxy::start(upstream).await;
    let (db, s) = db_with_t("nats_cut").await;
    let stream = format!("IT_{s}");
    let sink = format!(
        "url: nats://{addr}\nsubject: \"it_{s}.{{schema}}.{{table}}\"\nack_timeout: 2s\n\
         stream: {{ name: {stream}, create: true, storage: memory }}\n",
        addr = proxy.addr(),
    );
    let yaml = pipeline(&db, &s, "public.t", &sink).yaml();
    let mut engine = start_streaming(&db, &s, &yaml).await;
    let writers = start_writers(&db, 3).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        proxy.cut();
    }
    let written = writers.finish().await;

    let mut reader = StreamReader::new(&nats_url(), &stream).await;
    let messages = converge(&db, &mut reader, &mut engine, false).await;
    assert_in_commit_order(&messages, &engine);
    let ids: HashSet<&str> = messages.iter().map(|m| m.msg_id.as_str()).collect();
    assert_eq!(ids.len(), messages.len(), "a Nats-Msg-Id was stored twice");
    assert_eq!(
        messages.len(),
        written.changes.len(),
        "\n{}",
        engine.output_report()
    );
    let refused = engine
        .stderr_text()
        .matches("an earlier one of the batch was lost")
        .count();
    eprintln!(
        "{} changes, {refused} batch(es) refused by the chain and sent again",
        written.changes.len()
    );
    assert!(
        engine.stderr_text().contains("disconnected"),
        "the engine never saw a connection drop\n{}",
        engine.output_report()
    );
    engine.stop_clean(Duration::from_secs(90), "stop").await;
    reader.delete().await;
    db.cleanup().await;
}

/// The sink creates the stream as configured; identifiers with dots,
/// spaces and wildcards are sanitised into single subject tokens; headers
/// carry op, table and the message id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_stream_and_sanitises_subjects() {
    let db = TestDb::create("nats_subjects").await;
    db.exec(
        r#"CREATE SCHEMA "My Schema";
           CREATE TABLE "My Schema"."odd.name*x>" (id int PRIMARY KEY, v text);"#,
    )
    .await;
    let s = unique_suffix();
    let stream = format!("IT_{s}");
    let sink = format!(
        "url: {url}\nsubject: \"it_{s}.{{schema}}.{{table}}.{{op}}\"\n\
         stream: {{ name: {stream}, create: true, storage: memory, duplicate_window: 30s }}\n",
        url = json_str(&nats_url()),
    );
    let yaml = pipeline(&db, &s, r#""My Schema"."odd.name*x>""#, &sink).yaml();
    let mut engine = start_streaming(&db, &s, &yaml).await;
    db.exec(r#"INSERT INTO "My Schema"."odd.name*x>" VALUES (1, 'a'); DELETE FROM "My Schema"."odd.name*x>";"#)
        .await;

    let mut reader = StreamReader::new(&nats_url(), &stream).await;
    let ok = wait_until(Duration::from_secs(90), async || {
        reader.poll().await.len() >= 2
    })
    .await;
    assert!(ok, "no messages\n{}", engine.output_report());
    let m = &reader.messages;
    assert_eq!(m[0].subject, format!("it_{s}.My_Schema.odd_name_x_.c"));
    assert_eq!(m[1].subject, format!("it_{s}.My_Schema.odd_name_x_.d"));
    assert_eq!(m[0].op_header, "c");
    assert_eq!(m[0].table_header, "My Schema.odd.name*x>");
    assert!(
        m[0].msg_id.starts_with(&format!("it_{s}:{}:", db.name())),
        "message id {}",
        m[0].msg_id
    );
    assert_eq!(m[0].body["after"]["v"], "a");

    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let mut st = js.get_stream(&stream).await.unwrap();
    let config = st.info().await.unwrap().config.clone();
    assert_eq!(config.subjects, vec![format!("it_{s}.*.*.*")]);
    assert_eq!(config.storage, StorageType::Memory);
    assert_eq!(config.duplicate_window, Duration::from_secs(30));
    engine.stop_clean(Duration::from_secs(90), "stop").await;
    reader.delete().await;
    db.cleanup().await;
}

/// A configured stream that does not exist, with `create: false`, stops the
/// engine at start with a message naming the stream and the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_stream_is_a_clear_fatal_error() {
    let (db, s) = db_with_t("nats_missing").await;
    let sink = format!(
        "url: {url}\nsubject: \"it_{s}.{{table}}\"\nstream: {{ name: NOPE_{s} }}\n",
        url = json_str(&nats_url()),
    );
    let mut engine = Engine::start(&pipeline(&db, &s, "public.t", &sink).yaml());
    let err = engine.wait_failure(Duration::from_secs(90)).await;
    assert!(
        err.contains(&format!("stream `NOPE_{s}` does not exist")) && err.contains("stream.create"),
        "{}",
        engine.output_report()
    );
    db.cleanup().await;
}

/// Without a configured stream, a subject no stream captures fails the
/// first batch with a fatal error; the slot does not move past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_without_stream_is_fatal() {
    let (db, s) = db_with_t("nats_nostream").await;
    let sink = format!(
        "url: {url}\nsubject: \"it_{s}.{{table}}\"\n",
        url = json_str(&nats_url()),
    );
    let yaml = pipeline(&db, &s, "public.t", &sink).yaml();
    let mut engine = start_streaming(&db, &s, &yaml).await;
    db.exec("INSERT INTO public.t VALUES (1, 1, 'x')").await;
    let err = engine.wait_failure(Duration::from_secs(90)).await;
    assert!(
        err.contains(&format!("no JetStream stream captures subject `it_{s}.t`")),
        "{}",
        engine.output_report()
    );
    // The insert is still in the slot: nothing acknowledged it.
    let slot = format!("s_{s}");
    let released = wait_until(Duration::from_secs(90), async || {
        !db.slot_active(&slot).await
    })
    .await;
    assert!(released, "the slot is still in use");
    let pending = db
        .query_text(&format!(
            "SELECT count(*)::text FROM pg_logical_slot_peek_binary_changes('{slot}', NULL, NULL, \
             'proto_version', '1', 'publication_names', 'p_{s}')"
        ))
        .await;
    assert_ne!(
        pending.as_deref(),
        Some("0"),
        "the slot moved past the failed batch"
    );
    db.cleanup().await;
}

/// `jetstream: false` publishes with core NATS (fire-and-forget, no
/// PubAck awaited): a stream the test creates over the subjects captures
/// every change with its headers; `{prefix}` comes from the config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_mode_publishes() {
    let (db, s) = db_with_t("nats_core").await;
    let stream = format!("IT_{s}");
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("it_{s}.>")],
        storage: StorageType::Memory,
        ..Default::default()
    })
    .await
    .unwrap();
    let sink = format!(
        "url: {url}\njetstream: false\nsubject: \"it_{s}.{{prefix}}.{{table}}\"\nprefix: pfx\n",
        url = json_str(&nats_url()),
    );
    let yaml = pipeline(&db, &s, "public.t", &sink).yaml();
    let mut engine = start_streaming(&db, &s, &yaml).await;
    db.exec("INSERT INTO public.t SELECT g, g, 'c' FROM generate_series(1, 20) g")
        .await;
    let mut reader = StreamReader::new(&nats_url(), &stream).await;
    let ok = wait_until(Duration::from_secs(90), async || {
        reader.poll().await.len() >= 20
    })
    .await;
    assert!(ok, "{}", engine.output_report());
    let m = &reader.messages;
    assert_eq!(m.len(), 20);
    assert!(m.iter().all(|m| m.subject == format!("it_{s}.pfx.t")));
    assert!(m
        .iter()
        .all(|m| m.body["op"] == "c" && !m.msg_id.is_empty()));
    assert!(
        engine.stderr_text().contains("not durable"),
        "core mode must warn\n{}",
        engine.output_report()
    );
    engine.stop_clean(Duration::from_secs(90), "stop").await;
    js.delete_stream(&stream).await.unwrap();
    db.cleanup().await;
}

/// `cdc-engine validate` reports the sink's own findings under
/// `sinks[0].<field>`.
#[test]
fn validate_names_the_field() {
    let yaml = "name: v\nsource:\n  url: postgres://u@127.0.0.1/db\n  tables: [public.t]\n\
                sinks:\n  - type: nats\n    subject: \"cdc.{tabel}\"\n    \
                stream: { name: \"a.b\" }\n";
    let (code, out, err) = run_engine_validate(yaml);
    assert_ne!(code, 0, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(text.contains("sinks[0].subject"), "{text}");
    assert!(text.contains("sinks[0].stream.name"), "{text}");
}

/// The two runs of an authentication test on `db`: with the sink entry
/// `bad` the engine stops at start with a connection error; with `good` it
/// streams, one inserted row arrives in the stream `IT_{s}` (read through
/// `js`), and it stops cleanly. Returns both runs' stderr.
async fn refused_then_published(
    db: &TestDb,
    s: &str,
    bad: &str,
    good: &str,
    js: &jetstream::Context,
) -> (String, String) {
    let mut refused = Engine::start(&pipeline(db, s, "public.t", bad).yaml());
    let err = refused.wait_failure(Duration::from_secs(90)).await;
    assert!(
        err.contains("cannot connect to NATS"),
        "{}",
        refused.output_report()
    );

    let mut engine = start_streaming(db, s, &pipeline(db, s, "public.t", good).yaml()).await;
    db.exec("INSERT INTO public.t VALUES (1, 1, 'a')").await;
    let stream = format!("IT_{s}");
    let ok = wait_until(Duration::from_secs(90), async || {
        stream_messages(js, &stream).await == Some(1)
    })
    .await;
    assert!(ok, "{}", engine.output_report());
    engine.stop_clean(Duration::from_secs(90), "stop").await;
    (refused.stderr_text(), engine.stderr_text())
}

/// Token authentication: a wrong token stops the engine at start with a
/// message naming the server; the right one publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth() {
    let server = OwnServer::start_with_token(Some("s3cret"));
    server.wait_ready().await;
    let (db, s) = db_with_t("nats_auth").await;
    let sink = |token: &str| {
        format!(
            "url: {url}\nsubject: \"it_{s}.{{table}}\"\nauth: {{ token: {token} }}\n\
             stream: {{ name: IT_{s}, create: true, storage: memory }}\n",
            url = json_str(&server.url()),
        )
    };
    let client = async_nats::ConnectOptions::with_token("s3cret".into())
        .connect(server.url())
        .await
        .unwrap();
    let js = jetstream::new(client);
    let (refused, _) = refused_then_published(&db, &s, &sink("wrong"), &sink("s3cret"), &js).await;
    assert!(
        refused.contains(&format!("cannot connect to NATS at {}", server.url())),
        "{refused}"
    );
    db.cleanup().await;
}

/// Nkey authentication: the server knows one user's public nkey; a
/// different seed stops the engine at start, the user's seed publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_auth() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().expect("seed");
    let conf_dir = TempDir::new("nats_nkey");
    let conf = conf_dir.join("server.conf");
    std::fs::write(
        &conf,
        format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
            user.public_key()
        ),
    )
    .expect("server config");
    let mut server = OwnServer::start_with(
        None,
        vec!["-c".to_owned(), conf.display().to_string()],
        None,
    );
    server.nkey_seed = Some(seed.clone());
    server.wait_ready().await;
    let (db, s) = db_with_t("nats_nkey").await;
    let sink = |seed: &str| {
        format!(
            "url: {url}\nsubject: \"it_{s}.{{table}}\"\nauth: {{ nkey_seed: {seed} }}\n\
             stream: {{ name: IT_{s}, create: true, storage: memory }}\n",
            url = json_str(&server.url()),
        )
    };
    let stranger = nkeys::KeyPair::new_user().seed().expect("seed");
    let client = async_nats::ConnectOptions::with_nkey(seed.clone())
        .connect(server.url())
        .await
        .unwrap();
    let js = jetstream::new(client);
    let (refused, accepted) =
        refused_then_published(&db, &s, &sink(&stranger), &sink(&seed), &js).await;
    assert!(
        refused.contains(&format!("cannot connect to NATS at {}", server.url())),
        "{refused}"
    );
    assert!(!refused.contains(&stranger), "the seed appears in the log");
    assert!(!accepted.contains(&seed), "the seed appears in the log");
    db.cleanup().await;
}

/// Runs `openssl <args>` in `dir`; panics with its output on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all
/// signed by the CA, in `dir`: `ca.pem`, `server.{pem,key}`, `client.{pem,key}`.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=cdc-test-ca",
        ],
    );
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        let key = format!("{who}.key");
        let csr = format!("{who}.csr");
        let pem = format!("{who}.pem");
        let ext = format!("{who}.ext");
        let subj = format!("/CN=cdc-test-{who}");
        openssl(
            dir,
            &[
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                &subj,
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

/// Mutual TLS: the server verifies client certificates. With the CA and a
/// client certificate the sink publishes; without the client certificate
/// the engine stops at start with a connection error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls() {
    // The test process links both rustls providers: pick one for the
    // readiness check's TLS connection.
    let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
    let certs = TempDir::new("nats_certs");
    make_certs(certs.path());
    let p = |f: &str| certs.join(f);
    let args: Vec<String> = vec![
        "--tlsverify".into(),
        "--tlscert".into(),
        p("server.pem").display().to_string(),
        "--tlskey".into(),
        p("server.key").display().to_string(),
        "--tlscacert".into(),
        p("ca.pem").display().to_string(),
    ];
    let server = OwnServer::start_with(
        None,
        args,
        Some((p("ca.pem"), p("client.pem"), p("client.key"))),
    );
    server.wait_ready().await;
    let (db, s) = db_with_t("nats_tls").await;
    let sink = |client_cert: bool| {
        let mut tls = format!("ca: {}", json_str(&p("ca.pem").display().to_string()));
        if client_cert {
            tls.push_str(&format!(
                ", cert: {}, key: {}",
                json_str(&p("client.pem").display().to_string()),
                json_str(&p("client.key").display().to_string())
            ));
        }
        format!(
            "url: {url}\nsubject: \"it_{s}.{{table}}\"\ntls: {{ {tls} }}\n\
             stream: {{ name: IT_{s}, create: true, storage: memory }}\n",
            url = json_str(&server.url()),
        )
    };
    let client = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(p("ca.pem"))
        .add_client_certificate(p("client.pem"), p("client.key"))
        .connect(server.url())
        .await
        .unwrap();
    let js = jetstream::new(client);
    refused_then_published(&db, &s, &sink(false), &sink(true), &js).await;
    db.cleanup().await;
}
