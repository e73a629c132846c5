//! The whole PostgreSQL server restarts under a running engine (each test
//! on a cluster of its own): during the snapshot and while streaming, with
//! `pg_ctl restart -m fast` (every session terminated, shutdown
//! checkpoint) and `-m immediate` (no checkpoint: crash recovery, the
//! slot's position on disk may be older than what was confirmed, so
//! changes may come twice, never not at all). A writer keeps inserting,
//! updating and deleting before, during and after the restart. The engine
//! must not exit: it finishes the snapshot, streams on, and the file
//! sink's output, applied by key, equals the table.

use std::path::PathBuf;
use std::time::Duration;

use cdc_core::Lsn;
use integration_tests::http::{free_port, status_json};
use integration_tests::pipelines::pipeline_yaml;
use integration_tests::replay::{wait_converged, Tail};
use integration_tests::snapshot_meta::job;
use integration_tests::{
    unique_suffix, wait_until, Cluster, Engine, Mix, TempDir, TestDb, Workload, Writers,
};

const TIMEOUT: Duration = Duration::from_secs(90);

/// One change of the writer every this long.
const WRITE_PAUSE: Duration = Duration::from_millis(20);

/// One writer, one change per transaction every [`WRITE_PAUSE`], through
/// server restarts, on a `public.t` of `rows` rows: half of them inserts
/// of new ids, a quarter updates, a quarter deletes.
async fn start_writer(url: &str, rows: u32) -> Writers {
    let workload = Workload {
        new_ids_from: Some(rows as i32 + 1),
        max_changes: 1,
        mix: Mix {
            insert: 2,
            update: 1,
            delete: 1,
            ..Mix::default()
        },
        pause: WRITE_PAUSE,
        timeout: Some(Duration::from_secs(5)),
        ..Workload::new(1)
    };
    Writers::start(url, workload).await
}

#[derive(Clone, Copy, Debug)]
enum Restart {
    Fast,
    Immediate,
}

async fn restart(cluster: &Cluster, how: Restart) {
    match how {
        Restart::Fast => cluster.restart_fast().await,
        Restart::Immediate => cluster.restart_immediate().await,
    }
}

/// A cluster of the test's own with a database holding `public.t (id int
/// primary key, v int, note text)` of `rows` rows, and a pipeline config for it:
/// one file sink, the HTTP endpoint on a free port with a fast lag poll,
/// heartbeats every second.
struct Setup {
    cluster: Cluster,
    db: TestDb,
    slot: String,
    out: PathBuf,
    port: u16,
    yaml: String,
    _dir: TempDir,
}

impl Setup {
    async fn new(prefix: &str, rows: u32, snapshot: &str) -> Setup {
        Setup::with_conf(prefix, rows, snapshot, "").await
    }

    /// [`Setup::new`] with `conf` appended to the cluster's `postgresql.conf`.
    async fn with_conf(prefix: &str, rows: u32, snapshot: &str, conf: &str) -> Setup {
        let cluster = Cluster::start(conf).await;
        let db = TestDb::create_on(&cluster.url("postgres"), prefix).await;
        db.exec(&format!(
            "CREATE TABLE public.t (id int PRIMARY KEY, v int, note text);\
             INSERT INTO public.t SELECT g, g, 'v' || g FROM generate_series(1, {rows}) g;\
             ANALYZE public.t"
        ))
        .await;
        let s = unique_suffix();
        let (slot, publication) = (format!("rs_{s}"), format!("rsp_{s}"));
        let dir = TempDir::new("server-restart-out");
        let out = dir.join("out.jsonl");
        let port = free_port();
        let mut yaml = pipeline_yaml(&db, &["public.t"], &slot, &publication, &out, snapshot);
        yaml.push_str(&format!(
            "heartbeat: {{ interval: 1s }}\n\
             pipeline: {{ max_batch_wait: 10ms }}\n\
             metrics: {{ listen: '127.0.0.1:{port}', lag_poll_interval: 500ms, hold_after_failure: 0s }}\n"
        ));
        Setup {
            cluster,
            db,
            slot,
            out,
            port,
            yaml,
            _dir: dir,
        }
    }

    /// Everything written so far (after a restart) is confirmed
    /// eventually: the slot's `confirmed_flush_lsn` reaches the WAL
    /// position of now.
    async fn confirms_what_was_written(&self, engine: &Engine) {
        let written = self.db.current_wal_lsn().await;
        self.confirms(engine, written, "written after the restart")
            .await;
    }

    /// The slot's `confirmed_flush_lsn` reaches `lsn` (`what`: what it is
    /// the position of) within [`TIMEOUT`].
    async fn confirms(&self, engine: &Engine, lsn: Lsn, what: &str) {
        let advanced = wait_until(TIMEOUT, async || {
            self.db
                .slot_confirmed_flush_lsn(&self.slot)
                .await
                .is_some_and(|at| at >= lsn)
        })
        .await;
        assert!(
            advanced,
            "confirmed_flush_lsn stayed at {:?}, before {lsn} {what}\n{}",
            self.db.slot_confirmed_flush_lsn(&self.slot).await,
            engine.output_report()
        );
    }

    /// Stops `writer`, checks that the engine still runs and that its
    /// output converges to the table, and that its warnings stayed few
    /// (one line per failed attempt, with growing delays).
    async fn converge(self, writer: Writers, engine: Engine) {
        let written = writer.finish().await;
        assert!(written.committed > 0, "{written:?}");
        self.converge_stopped(engine).await;
    }

    /// [`Setup::converge`] once the writes have stopped.
    async fn converge_stopped(self, mut engine: Engine) {
        assert!(
            engine.is_running(),
            "the engine exited after the restart\n{}",
            engine.output_report()
        );
        let mut tails = [Tail::new(0, self.out.clone())];
        wait_converged(&self.db, &mut tails, &[&engine]).await;
        assert!(
            engine.is_running(),
            "the engine exited\n{}",
            engine.output_report()
        );
        let stderr = engine.stderr_text();
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("WARN") && !l.contains("failpoint"))
            .collect();
        assert!(
            warnings.len() <= 60,
            "{} warnings: a log storm\n{}",
            warnings.len(),
            warnings.join("\n")
        );
        drop(engine);
        self.db.cleanup().await;
    }
}

/// Where the snapshot is when the server restarts.
#[derive(Clone, Copy, Debug)]
enum Pause {
    /// Every reader waits 1 s before each claim after the first four.
    BeforeClaims,
    /// A reader handed over the first rows of its second chunk and waits
    /// 3 s with the chunk's read (its transaction, its COPY) still open.
    MidChunk,
}

/// The server restarts while the engine is in the middle of its snapshot
/// (held there by a failpoint, see [`Pause`]); the writer goes on
/// throughout. The engine reconnects every connection (metadata, lock,
/// readers, export), finishes the snapshot, streams, and the output
/// converges.
async fn server_restart_during_the_snapshot(how: Restart, pause: Pause) {
    let (rows, snapshot, failpoints, marker) = match pause {
        Pause::BeforeClaims => (
            4000,
            "{ mode: initial, chunking: key, chunk_rows: 400, workers: 2, claim_timeout: 6s, heartbeat_interval: 1s }",
            "snapshot::reader_before_claim=4*off->return(1000)",
            "failpoint=\"snapshot::reader_before_claim\"",
        ),
        Pause::MidChunk => (
            8000,
            "{ mode: initial, chunking: key, chunk_rows: 2000, workers: 2, claim_timeout: 6s, heartbeat_interval: 1s }",
            "snapshot::reader_mid_chunk=1*off->1*return(3000)",
            "failpoint=\"snapshot::reader_mid_chunk\"",
        ),
    };
    let s = Setup::new("restart_snapshot", rows, snapshot).await;
    let engine = Engine::start_with(&s.yaml, &["run"], &[("FAILPOINTS", failpoints)]);
    let paused = wait_until(TIMEOUT, async || engine.stderr_text().contains(marker)).await;
    assert!(paused, "{}", engine.output_report());
    let writer = start_writer(s.db.url(), rows).await;
    assert!(
        writer.wait_more(10, TIMEOUT).await,
        "{:?}",
        writer.progress()
    );
    let running = job(&s.db, &s.slot).await.expect("a snapshot job");
    assert_eq!(
        running.state,
        "running",
        "{running:?}\n{}",
        engine.output_report()
    );
    restart(&s.cluster, how).await;
    assert!(
        writer.wait_more(20, TIMEOUT).await,
        "the writer did not get going again: {:?}",
        writer.progress()
    );
    let done = wait_until(TIMEOUT, async || {
        job(&s.db, &s.slot).await.is_some_and(|j| j.state == "done")
    })
    .await;
    assert!(
        done,
        "the snapshot did not finish after the restart\n{}",
        engine.output_report()
    );
    let streaming = wait_until(TIMEOUT, async || s.cluster.slot_streaming(&s.slot).await).await;
    assert!(streaming, "{}", engine.output_report());
    assert!(
        writer.wait_more(20, TIMEOUT).await,
        "{:?}",
        writer.progress()
    );
    s.converge(writer, engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_restart_during_the_snapshot() {
    server_restart_during_the_snapshot(Restart::Fast, Pause::BeforeClaims).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_restart_during_a_chunk_read() {
    server_restart_during_the_snapshot(Restart::Fast, Pause::MidChunk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_restart_during_the_snapshot() {
    server_restart_during_the_snapshot(Restart::Immediate, Pause::BeforeClaims).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_restart_during_a_chunk_read() {
    server_restart_during_the_snapshot(Restart::Immediate, Pause::MidChunk).await;
}

/// The server restarts while the engine streams; the writer goes on
/// before, during and after. The engine reconnects; the slot's
/// `confirmed_flush_lsn` moves past WAL written after the restart;
/// `/status` shows the reconnect and a working lag poll; the output
/// converges.
async fn server_restart_while_streaming(how: Restart) {
    let rows = 200;
    let s = Setup::new("restart_stream", rows, "{ mode: initial }").await;
    let engine = Engine::start(&s.yaml);
    let streaming = wait_until(TIMEOUT, async || s.cluster.slot_streaming(&s.slot).await).await;
    assert!(streaming, "{}", engine.output_report());
    let writer = start_writer(s.db.url(), rows).await;
    assert!(
        writer.wait_more(20, TIMEOUT).await,
        "{:?}",
        writer.progress()
    );
    restart(&s.cluster, how).await;
    assert!(
        writer.wait_more(30, TIMEOUT).await,
        "the writer did not get going again: {:?}",
        writer.progress()
    );
    s.confirms_what_was_written(&engine).await;
    let status_ok = wait_until(TIMEOUT, async || {
        status_json(s.port).await.is_some_and(|st| {
            st["source_phase"] == "streaming"
                && st["reconnects"].as_u64().is_some_and(|n| n >= 1)
                && st["lag_poll_error"].is_null()
                && !st["confirmed_flush_lsn"].is_null()
        })
    })
    .await;
    assert!(
        status_ok,
        "/status: {:#}\n{}",
        status_json(s.port).await.unwrap_or_default(),
        engine.output_report()
    );
    s.converge(writer, engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_restart_while_streaming() {
    server_restart_while_streaming(Restart::Fast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_restart_while_streaming() {
    server_restart_while_streaming(Restart::Immediate).await;
}

/// While the engine streams, an administrator terminates each of its
/// ordinary connections (the catalog connection that also writes the
/// heartbeats, and the lag poll's), and the table's description changes,
/// so the next change needs the catalog. The engine connects again: the
/// change is described, heartbeats move the slot past WAL of a table it
/// does not capture (with `wal_sender_timeout = 0` nothing else would),
/// the lag poll works again, and the output converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_while_streaming_are_replaced() {
    let rows = 100;
    let s = Setup::with_conf(
        "restart_terminated",
        rows,
        "{ mode: initial }",
        "wal_sender_timeout = 0",
    )
    .await;
    s.db.exec("CREATE TABLE public.other (id serial PRIMARY KEY)")
        .await;
    let engine = Engine::start(&s.yaml);
    let streaming = wait_until(TIMEOUT, async || s.cluster.slot_streaming(&s.slot).await).await;
    assert!(streaming, "{}", engine.output_report());
    // Once the snapshot's connections are closed, the engine holds two
    // ordinary ones, each named by its role.
    let sessions = "SELECT string_agg(application_name, ',' ORDER BY application_name) \
         FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name LIKE 'cdc-engine/%' AND backend_type = 'client backend'";
    let expected = "cdc-engine/catalog,cdc-engine/lag-poll";
    let two = wait_until(TIMEOUT, async || {
        s.db.query_text(sessions).await.as_deref() == Some(expected)
    })
    .await;
    assert!(
        two,
        "sessions: {:?}\n{}",
        s.db.query_text(sessions).await,
        engine.output_report()
    );
    let terminated =
        s.db.query_text(
            "SELECT string_agg(application_name, ',' ORDER BY application_name) FROM \
             (SELECT application_name, pg_terminate_backend(pid) FROM pg_stat_activity \
              WHERE datname = current_database() AND application_name LIKE 'cdc-engine/%' \
              AND backend_type = 'client backend') AS k",
        )
        .await
        .unwrap_or_default();
    assert_eq!(terminated, expected, "{}", engine.output_report());
    // The next change of public.t comes with a new Relation message.
    s.db.exec("ALTER TABLE public.t ALTER COLUMN v SET STATISTICS 200")
        .await;
    let writer = start_writer(s.db.url(), rows).await;
    assert!(
        writer.wait_more(20, TIMEOUT).await,
        "{:?}",
        writer.progress()
    );
    let written = writer.finish().await;
    assert!(written.committed > 0, "{written:?}");
    let other: String =
        s.db.query_text(
            "INSERT INTO public.other DEFAULT VALUES RETURNING pg_current_wal_insert_lsn()::text",
        )
        .await
        .expect("an LSN");
    let other: Lsn = other.parse().expect("an LSN");
    s.confirms(&engine, other, "(heartbeats stopped?)").await;
    let lag_polled_again = wait_until(TIMEOUT, async || {
        status_json(s.port).await.is_some_and(|st| {
            st["lag_poll_error"].is_null()
                && st["confirmed_flush_lsn"]
                    .as_str()
                    .and_then(|l| l.parse::<cdc_core::Lsn>().ok())
                    .is_some_and(|l| l >= other)
        })
    })
    .await;
    assert!(
        lag_polled_again,
        "/status: {:#}\n{}",
        status_json(s.port).await.unwrap_or_default(),
        engine.output_report()
    );
    s.converge_stopped(engine).await;
}

/// A Relation message arrived while streaming (the first change of
/// `public.t`), and before the engine has described the table on its
/// catalog connection the server shuts down (fast: the catalog connection
/// is terminated at once, new connections are refused; the walsender waits
/// for the engine) and starts again. Describing the table fails, and so
/// does connecting again right then: the engine must start the stream
/// over with backoff rather than exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_restart_while_a_table_is_described() {
    let rows = 100;
    let s = Setup::new("restart_describe", rows, "{ mode: initial }").await;
    let engine = Engine::start_with(
        &s.yaml,
        &["run"],
        &[("FAILPOINTS", "stream::before_describe=1*return(3000)")],
    );
    let streaming = wait_until(TIMEOUT, async || s.cluster.slot_streaming(&s.slot).await).await;
    assert!(streaming, "{}", engine.output_report());
    let writer = start_writer(s.db.url(), rows).await;
    let paused = engine
        .logs_within("failpoint=\"stream::before_describe\"", TIMEOUT)
        .await;
    assert!(paused, "{}", engine.output_report());
    restart(&s.cluster, Restart::Fast).await;
    assert!(
        writer.wait_more(30, TIMEOUT).await,
        "the writer did not get going again: {:?}",
        writer.progress()
    );
    s.confirms_what_was_written(&engine).await;
    s.converge(writer, engine).await;
}
