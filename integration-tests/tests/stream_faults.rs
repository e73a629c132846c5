//! Faults while streaming, against a real PostgreSQL 15 cluster of each
//! test's own and the engine's test build (failpoints through
//! `FAILPOINTS`).

use std::time::Duration;

use integration_tests::pipelines::{pipeline_yaml, yaml_str};
use integration_tests::replay::{wait_converged, Tail};
use integration_tests::{unique_suffix, wait_until, Cluster, Engine, TempDir, TestDb};
use sqlx::Connection;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A non-transactional logical message that a sink has written but not yet
/// acknowledged must not be confirmed to the server, not even at a server
/// shutdown, when the walsender asks for the client's final position: if
/// the engine died then, the message would be gone from the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_message_is_not_confirmed_at_shutdown() {
    let cluster = std::sync::Arc::new(Cluster::start("").await);
    cluster
        .exec(
            "postgres",
            "CREATE TABLE public.t (id int PRIMARY KEY, v text)",
        )
        .await;
    let url = cluster.url("postgres");
    let s = unique_suffix();
    let (slot, publication) = (format!("mf_{s}"), format!("mfp_{s}"));
    let dir = TempDir::new("msgfault");
    let out = dir.join("changes.jsonl");
    let yaml = format!(
        "name: msg_fault\nsource:\n  url: {}\n  tables: [public.t]\n  \
         publication: {{ name: {publication} }}\n  slot: {{ name: {slot} }}\n\
         snapshot: {{ mode: never }}\nheartbeat: {{ enabled: false }}\n\
         sinks:\n  - {{ type: file, path: {} }}\n\
         pipeline: {{ max_batch_wait: 10ms }}\n\
         retry: {{ initial_backoff: 100ms, max_backoff: 1s }}\n",
        yaml_str(&url),
        yaml_str(&out.to_string_lossy())
    );
    // The first group of batches with events is acknowledged; the second
    // is written and then never acknowledged.
    let mut engine = Engine::start_with(
        &yaml,
        &["run"],
        &[
            ("FAILPOINTS", "sink::before_ack=1*off->return"),
            ("CDC_LOG", "info,cdc_postgres::stream=debug"),
        ],
    );
    let confirmed = async || -> Option<String> {
        let mut c = cluster.connect("postgres").await;
        let v: Option<Option<String>> = sqlx::query_scalar(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&slot)
        .fetch_optional(&mut c)
        .await
        .expect("reading the slot");
        let _ = c.close().await;
        v.flatten()
    };
    let lsn_le = async |a: &str, b: &str| -> bool {
        let mut c = cluster.connect("postgres").await;
        let le: bool = sqlx::query_scalar("SELECT $1::text::pg_lsn <= $2::text::pg_lsn")
            .bind(a)
            .bind(b)
            .fetch_one(&mut c)
            .await
            .expect("comparing LSNs");
        let _ = c.close().await;
        le
    };
    let streaming = wait_until(TIMEOUT, async || cluster.slot_streaming(&slot).await).await;
    assert!(streaming, "{}", engine.output_report());

    // A committed row, acknowledged.
    let mut c = cluster.connect("postgres").await;
    let commit_end: String = sqlx::query_scalar(
        "INSERT INTO public.t VALUES (1, 'a') RETURNING pg_current_wal_insert_lsn()::text",
    )
    .fetch_one(&mut c)
    .await
    .expect("insert");
    let acked = wait_until(TIMEOUT, async || match confirmed().await {
        Some(at) => lsn_le(&commit_end, &at).await,
        None => false,
    })
    .await;
    assert!(acked, "{}", engine.output_report());
    // A message outside any transaction: written by the sink, never
    // acknowledged.
    let message: String = sqlx::query_scalar(
        "SELECT pg_logical_emit_message(false, 'cdc-test', 'not yet durable')::text",
    )
    .fetch_one(&mut c)
    .await
    .expect("emit message");
    let _ = c.close().await;
    let held = engine.logs_within("failpoint reached", TIMEOUT).await;
    assert!(held, "{}", engine.output_report());

    // The server stops (fast) and starts again: on the way down its
    // walsender asks the engine for its final position, again and again,
    // and waits for it. The engine must not confirm a position past the
    // message (the server would keep such a late position only in memory,
    // so the engine's own log of what it confirmed is what shows it). Once
    // it has answered two requests without confirming, it dies, as in the
    // fault this is about, and the server can finish stopping.
    let asked_before = engine
        .stderr_text()
        .matches("the server asked for a reply")
        .count();
    let restart = tokio::spawn({
        let cluster = cluster.clone();
        async move { cluster.restart_fast().await }
    });
    let asked = wait_until(TIMEOUT, async || {
        engine
            .stderr_text()
            .matches("the server asked for a reply")
            .count()
            >= asked_before + 2
    })
    .await;
    assert!(asked, "{}", engine.output_report());
    let confirmed_quietly: Vec<String> = engine
        .stderr_text()
        .lines()
        .filter(|l| l.contains("confirming the server's quiet WAL end"))
        .map(str::to_owned)
        .collect();
    engine.sigkill();
    let _ = engine.wait_exit(TIMEOUT).await;
    restart.await.expect("the restart");
    assert!(
        confirmed_quietly.is_empty(),
        "confirmed past the unacknowledged message at {message}:\n{}\n{}",
        confirmed_quietly.join("\n"),
        engine.output_report()
    );
    let at = confirmed().await.expect("the slot survives the restart");
    assert!(
        lsn_le(&at, &message).await,
        "the slot was confirmed to {at}, past the unacknowledged message at {message}\n{}",
        engine.output_report()
    );
}

/// The file sink's write fails after half the batch reached the file (a
/// full disk, an I/O error); the engine retries the batch. The file must
/// hold each line whole, once: the retry used to follow the half line,
/// gluing it to the retried data.
#[tokio::test]
async fn a_file_write_that_fails_midway_leaves_no_half_line() {
    let db = TestDb::create("file_partial").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
        .await;
    let s = unique_suffix();
    let dir = TempDir::new("file-partial-out");
    let out = dir.join("out.jsonl");
    let yaml = pipeline_yaml(
        &db,
        &["public.t"],
        &format!("fp_{s}"),
        &format!("fpp_{s}"),
        &out,
        "{ mode: never }",
    );
    let engine = Engine::start_with(
        &yaml,
        &["run"],
        &[("FAILPOINTS", "sink::file_partial_write=1*return")],
    );
    let streaming = wait_until(TIMEOUT, async || db.slot_active(&format!("fp_{s}")).await).await;
    assert!(streaming, "{}", engine.output_report());
    db.exec("INSERT INTO public.t SELECT g, repeat('x', 50) || g FROM generate_series(1, 200) g")
        .await;
    let retried = engine
        .logs_within("sink::file_partial_write", TIMEOUT)
        .await;
    assert!(
        retried,
        "the failpoint never fired\n{}",
        engine.output_report()
    );
    db.exec("UPDATE public.t SET v = 'after' WHERE id % 10 = 0")
        .await;
    // Every line parses (a glued line does not) and the rows converge.
    let mut tails = [Tail::new(0, out)];
    wait_converged(&db, &mut tails, &[&engine]).await;
    let lines = tails[0].events.len();
    assert_eq!(lines, 220, "each change once: {lines} lines");
    drop(engine);
    db.cleanup().await;
}
