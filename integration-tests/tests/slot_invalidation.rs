//! A replication slot the server invalidates (`max_slot_wal_keep_size`
//! exceeded) while the engine lags behind or is stopped, on a cluster of
//! the test's own with `max_slot_wal_keep_size = 1MB`: the engine says what
//! happened, that a new snapshot is needed and the one command for it, shows
//! `cdc_slot_invalidated 1`, and never carries on from a new slot by
//! itself. `cdc-engine resnapshot` then drops the slot, and the next start
//! copies the tables anew.

use std::path::Path;
use std::time::Duration;

use integration_tests::http::{free_port, get, status};
use integration_tests::pipelines::Pipeline;
use integration_tests::{
    read_jsonl, run_engine, unique_suffix, wait_until, Cluster, Engine, TempDir,
};

const TABLE_DDL: &str = "CREATE TABLE public.t (id int PRIMARY KEY, v int NOT NULL);
     INSERT INTO public.t SELECT g, g FROM generate_series(1, 3) AS g;
     CREATE TABLE public.u (id bigserial PRIMARY KEY, pad text);";

const TIMEOUT: Duration = Duration::from_secs(90);

/// A pipeline of `public.t` into `out` with heartbeats off (so that the
/// slot stays behind while only `public.u` is written) and the
/// `snapshot` given (`{ mode: never }`, `{ mode: initial }`).
fn pipeline(url: &str, s: &str, out: &Path, snapshot: &str) -> Pipeline {
    Pipeline::streaming(
        "inv",
        url,
        "public.t",
        &format!("p_{s}"),
        &format!("s_{s}"),
        64,
    )
    .file_sink(out)
    .snapshot(snapshot)
    .set("heartbeat", "{ enabled: false }")
}

/// The slot's `wal_status`, `None` when it does not exist.
async fn wal_status(cluster: &Cluster, slot: &str) -> Option<String> {
    let mut c = cluster.connect("postgres").await;
    let status: Option<String> = sqlx::query_scalar(
        "SELECT wal_status::text FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&mut c)
    .await
    .unwrap_or(None);
    let _ = sqlx::Connection::close(c).await;
    status
}

/// Writes WAL past `max_slot_wal_keep_size` until the slot is lost.
async fn invalidate(cluster: &Cluster, slot: &str) {
    let lost = wait_until(TIMEOUT, async || {
        cluster
            .exec(
                "postgres",
                "INSERT INTO public.u (pad) SELECT repeat('x', 500) FROM generate_series(1, 5000);
                 SELECT pg_switch_wal(); CHECKPOINT;",
            )
            .await;
        wal_status(cluster, slot).await.as_deref() == Some("lost")
    })
    .await;
    assert!(lost, "the slot was not invalidated");
}

/// The engine's failure output names the slot, the cause, that a new
/// snapshot is needed, and the command to run with this config file.
fn assert_explained(engine: &Engine, slot: &str) {
    let err = engine.stderr_text();
    let config = engine.config_path().display().to_string();
    for expected in [
        format!("replication slot `{slot}` was invalidated"),
        "max_slot_wal_keep_size".to_owned(),
        "a new snapshot is needed".to_owned(),
        format!("to re-snapshot: cdc-engine resnapshot --config {config}"),
    ] {
        assert!(
            err.contains(&expected),
            "missing {expected:?}\n{}",
            engine.output_report()
        );
    }
}

/// `cdc-engine resnapshot` drops the lost slot; a start with
/// `snapshot.mode: initial` then creates a new slot and copies the rows.
async fn resnapshot_and_copy_again(cluster: &Cluster, s: &str) {
    let slot = format!("s_{s}");
    let dir = TempDir::new("inv-again");
    let out = dir.join("again.jsonl");
    let yaml = pipeline(&cluster.url("postgres"), s, &out, "{ mode: initial }").yaml();
    let (code, stdout, stderr) = run_engine(&["resnapshot"], &yaml);
    assert_eq!(code, 0, "resnapshot failed\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "dropped replication slot `{slot}` (invalidated: wal_removed)"
        )),
        "{stdout}\n{stderr}"
    );
    assert_eq!(
        wal_status(cluster, &slot).await,
        None,
        "the slot is still there"
    );
    let mut engine = Engine::start(&yaml);
    let copied = wait_until(TIMEOUT, async || {
        read_jsonl(&out).iter().filter(|e| e["op"] == "r").count() == 3
    })
    .await;
    assert!(
        copied,
        "the tables were not copied again\n{}",
        engine.output_report()
    );
    assert_eq!(
        wal_status(cluster, &slot).await.as_deref(),
        Some("reserved")
    );
    engine
        .stop_clean(TIMEOUT, "stop after the new snapshot")
        .await;
}

/// The engine of `yaml`, once it streams from `slot`.
async fn streaming_engine(cluster: &Cluster, yaml: &str, slot: &str) -> Engine {
    let engine = Engine::start(yaml);
    let streaming = wait_until(TIMEOUT, async || cluster.slot_streaming(slot).await).await;
    assert!(
        streaming,
        "the engine did not stream\n{}",
        engine.output_report()
    );
    engine
}

/// A cluster of its own keeping at most 1 MB of WAL for a slot, with
/// the test table; the suffix of the test's names, its slot, its directory.
async fn small_wal_cluster(prefix: &str) -> (Cluster, String, String, TempDir) {
    let cluster = Cluster::start("max_slot_wal_keep_size = 1MB").await;
    cluster.exec("postgres", TABLE_DDL).await;
    let s = unique_suffix();
    let slot = format!("s_{s}");
    (cluster, s, slot, TempDir::new(prefix))
}

/// Invalidated while the engine streams but lags behind: the lag poll
/// and the failure report it (`cdc_slot_invalidated 1`, `/status`), the
/// engine stops with the explanation, and the slot is left as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalidated_while_streaming_is_reported_with_the_way_out() {
    let (cluster, s, slot, dir) = small_wal_cluster("inv-stream").await;
    let port = free_port();
    let yaml = pipeline(&cluster.url("postgres"), &s, &dir.join("out.jsonl"), "{ mode: never }")
        .extra(&format!(
            "metrics:\n  listen: '127.0.0.1:{port}'\n  lag_poll_interval: 1s\n  hold_after_failure: 120s\n"
        ))
        .yaml();
    let mut engine = streaming_engine(&cluster, &yaml, &slot).await;
    invalidate(&cluster, &slot).await;

    let reported = wait_until(TIMEOUT, async || {
        matches!(get(port, "/metrics").await, Some((200, body))
            if body.lines().any(|l| l == "cdc_slot_invalidated 1"))
    })
    .await;
    assert!(
        reported,
        "no cdc_slot_invalidated 1\n{}",
        engine.output_report()
    );
    let failed = wait_until(TIMEOUT, async || {
        matches!(get(port, "/healthz").await, Some((503, _)))
    })
    .await;
    assert!(
        failed,
        "/healthz did not turn 503\n{}",
        engine.output_report()
    );
    let st = status(port).await;
    assert_eq!(st["slot_invalidation"], "wal_removed", "{st:#}");
    assert!(
        st["error"]
            .as_str()
            .unwrap_or_default()
            .contains("a new snapshot is needed"),
        "{st:#}"
    );
    // SIGTERM ends the hold; the exit is still a failure.
    engine.sigterm();
    ends_explained_and_resnapshots(&cluster, &mut engine, &slot, &s).await;
}

/// Invalidated while the engine is stopped: the next start refuses with
/// the explanation instead of creating a new slot; `resnapshot` refuses
/// a healthy slot and drops the lost one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalidated_while_stopped_is_refused_at_start() {
    let (cluster, s, slot, dir) = small_wal_cluster("inv-stopped").await;
    let yaml = pipeline(
        &cluster.url("postgres"),
        &s,
        &dir.join("out.jsonl"),
        "{ mode: never }",
    )
    .yaml();
    let mut engine = streaming_engine(&cluster, &yaml, &slot).await;
    engine
        .stop_clean(TIMEOUT, "stop before the invalidation")
        .await;

    // A healthy slot is not dropped.
    let (code, stdout, stderr) = run_engine(&["resnapshot"], &yaml);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stderr.contains("is healthy"), "{stderr}");
    assert_eq!(
        wal_status(&cluster, &slot).await.as_deref(),
        Some("reserved")
    );

    invalidate(&cluster, &slot).await;
    let mut engine = Engine::start(&yaml);
    ends_explained_and_resnapshots(&cluster, &mut engine, &slot, &s).await;
}

/// The engine exits with a failure that explains the invalidation; the
/// lost slot is not replaced by a new one; `cdc-engine resnapshot` then
/// lets a new run copy the table again.
async fn ends_explained_and_resnapshots(
    cluster: &Cluster,
    engine: &mut Engine,
    slot: &str,
    s: &str,
) {
    let code = engine.try_wait_exit(TIMEOUT).await;
    assert!(
        code.is_some_and(|c| c != 0),
        "exit {code:?}\n{}",
        engine.output_report()
    );
    assert_explained(engine, slot);
    assert_eq!(wal_status(cluster, slot).await.as_deref(), Some("lost"));
    resnapshot_and_copy_again(cluster, s).await;
}
