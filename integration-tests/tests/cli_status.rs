//! `cdc-engine status --config <file> [--json]` against a real PostgreSQL
//! 15 and real engines: healthy while an engine streams, degraded once the
//! slot is inactive, and mid-snapshot the job and the claims of two
//! instances sharing it; exit status 2 when the database cannot be asked.

use std::time::Duration;

use integration_tests::pipelines::{yaml_str, Pipeline, FAST_RETRY};
use integration_tests::{
    read_jsonl, run_engine, unique_suffix, wait_until, Engine, TempDir, TestDb,
};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(45);

/// The `pipeline` section of most tests here.
const PIPELINE: &str = "{ max_batch_wait: 10ms, shutdown_timeout: 20s }";

/// A pipeline on `public.t` with the given sink, snapshot and pipeline
/// settings.
fn pipeline(
    url: &str,
    slot: &str,
    publication: &str,
    sink: &str,
    snapshot: &str,
    pipeline: &str,
) -> String {
    Pipeline::new("status_test", url)
        .table("public.t")
        .publication(publication)
        .slot(slot)
        .sink(sink)
        .snapshot(snapshot)
        .batching(pipeline)
        .retry(FAST_RETRY)
        .yaml()
}

/// Runs `status --json`: the exit code and the document. For polling,
/// while the state may change from one call to the next.
fn status_json(yaml: &str) -> (i32, Value) {
    let (code, out, err) = run_engine(&["status", "--json"], yaml);
    let doc: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{out}{err}"));
    (code, doc)
}

/// Runs `status` (text) and `status --json` on a state that holds still;
/// returns the exit code (the same for both, checked), the text and the
/// JSON document.
fn status(yaml: &str) -> (i32, String, Value) {
    let (code, text, err) = run_engine(&["status"], yaml);
    let (json_code, json_out, json_err) = run_engine(&["status", "--json"], yaml);
    assert_eq!(
        code, json_code,
        "text and JSON disagree:\n{text}{err}\n{json_out}{json_err}"
    );
    let doc: Value = serde_json::from_str(json_out.trim())
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{json_out}{json_err}"));
    (code, text, doc)
}

#[tokio::test]
async fn healthy_while_streaming_then_degraded_when_the_slot_is_inactive() {
    let db = TestDb::create("status_health").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
        .await;
    let s = unique_suffix();
    let (slot, publication) = (format!("st_{s}"), format!("stp_{s}"));
    let out_dir = TempDir::new("status-out");
    let out = out_dir.join("changes.jsonl");
    let sink = format!(
        "{{ type: file, path: {} }}",
        yaml_str(&out.to_string_lossy())
    );
    let yaml = pipeline(
        db.url(),
        &slot,
        &publication,
        &sink,
        "{ mode: never }",
        PIPELINE,
    );

    // Before any engine ran: no slot, no publication.
    let (code, text, doc) = status(&yaml);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&format!("slot {slot}: missing")), "{text}");
    assert!(text.contains("status: degraded"), "{text}");
    assert_eq!(doc["health"], "degraded");
    assert!(doc["slot"].is_null());

    let mut engine = Engine::start(&yaml);
    let active = wait_until(TIMEOUT, async || db.slot_active(&slot).await).await;
    assert!(active, "{}", engine.output_report());
    db.exec("INSERT INTO public.t VALUES (1, 'a'), (2, 'b')")
        .await;
    let written = wait_until(TIMEOUT, async || read_jsonl(&out).len() == 2).await;
    assert!(written, "{}", engine.output_report());
    // The slot is acknowledged up to the inserts once they are durable.
    let confirmed = db.current_wal_lsn().await;
    let caught_up = wait_until(TIMEOUT, async || {
        db.slot_confirmed_flush_lsn(&slot)
            .await
            .is_some_and(|l| l >= confirmed)
            || status_json(&yaml).1["slot"]["lag_bytes"].as_u64() == Some(0)
    })
    .await;
    assert!(caught_up, "{}", engine.output_report());

    let (code, text, doc) = status(&yaml);
    assert_eq!(code, 0, "{text}\n{}", engine.output_report());
    assert!(
        text.contains(&format!("slot {slot}: active (pid ")),
        "{text}"
    );
    assert!(text.contains("wal_status reserved"), "{text}");
    assert!(
        text.contains(&format!("publication {publication}: public.t")),
        "{text}"
    );
    assert!(text.contains("status: healthy"), "{text}");
    assert!(
        !text.contains("postgres:postgres@"),
        "password shown:\n{text}"
    );
    assert_eq!(doc["health"], "healthy");
    assert_eq!(doc["slot"]["active"], true);
    assert!(doc["slot"]["active_pid"].as_i64().is_some(), "{doc}");
    assert!(doc["slot"]["confirmed_flush_lsn"].is_string(), "{doc}");
    assert!(doc["slot"]["lag_bytes"].as_u64().is_some(), "{doc}");
    assert_eq!(doc["slot"]["wal_status"], "reserved");
    assert_eq!(
        doc["publication"]["tables"],
        serde_json::json!(["public.t"])
    );
    assert_eq!(doc["problems"], serde_json::json!([]));

    engine.stop_clean(STOP_TIMEOUT, "stop").await;
    let inactive = wait_until(TIMEOUT, async || !db.slot_active(&slot).await).await;
    assert!(inactive);
    let (code, text, doc) = status(&yaml);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&format!("slot {slot}: inactive")), "{text}");
    assert!(
        text.contains(&format!("problem: slot {slot} is inactive")),
        "{text}"
    );
    assert!(text.contains("status: degraded"), "{text}");
    assert_eq!(doc["health"], "degraded");
    assert_eq!(doc["slot"]["active"], false);
    assert!(
        doc["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("inactive")),
        "{doc}"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn mid_snapshot_shows_the_job_and_the_claims_of_two_instances() {
    let db = TestDb::create("status_snap").await;
    // About 25 MB in 50 chunks: far more than two stalled engines can hold.
    db.exec(
        "CREATE TABLE public.t (id int PRIMARY KEY, v text);\
         INSERT INTO public.t SELECT g, repeat('x', 500) FROM generate_series(1, 50000) g;\
         ANALYZE public.t",
    )
    .await;
    let s = unique_suffix();
    let (slot, publication) = (format!("ss_{s}"), format!("ssp_{s}"));
    let snapshot = |instance: &str| {
        format!(
            "{{ mode: initial, chunking: key, chunk_rows: 1000, workers: 2, \
             instance_id: {instance}, claim_timeout: 60s, heartbeat_interval: 1s }}"
        )
    };
    // One batch in flight at a time, so a stalled sink stops the readers
    // early.
    let stalled = |instance: &str| {
        pipeline(
            db.url(),
            &slot,
            &publication,
            "{ type: stdout }",
            &snapshot(instance),
            "{ max_batch_wait: 10ms, channel_capacity: 1, max_batch_events: 100 }",
        )
    };
    let (a, b) = (format!("inst-a-{s}"), format!("inst-b-{s}"));
    let engine_a = Engine::start_stalled(&stalled(&a));
    let yaml = stalled(&a);
    // Wait until A coordinates a running job, then start B.
    let running = wait_until(TIMEOUT, async || {
        status_json(&yaml).1["snapshot"]["state"] == "running"
    })
    .await;
    assert!(running, "{}", engine_a.output_report());
    let engine_b = Engine::start_stalled(&stalled(&b));

    let claimants = |doc: &Value| -> Vec<String> {
        doc["snapshot"]["tables"][0]["claims"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["instance"].as_str().map(str::to_owned))
            .collect()
    };
    let both = wait_until(TIMEOUT, async || {
        let claims = claimants(&status_json(&yaml).1);
        claims.contains(&a) && claims.contains(&b)
    })
    .await;
    // Both engines are stalled now: what status shows holds still.
    let (code, text, doc) = status(&yaml);
    if !both || !claimants(&doc).contains(&b) {
        panic!(
            "two instances never held claims at once\n{text}\n{}\n{}",
            engine_a.output_report(),
            engine_b.output_report()
        );
    }
    // A snapshot in progress is not a fault: the slot waits for it.
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("snapshot: running"), "{text}");
    assert!(text.contains(&format!("coordinator {a}")), "{text}");
    assert!(text.contains("  public.t: chunks "), "{text}");
    assert!(text.contains(&format!("{a} (")), "{text}");
    assert!(text.contains(&format!("{b} (")), "{text}");
    assert!(text.contains("status: healthy"), "{text}");
    let snap = &doc["snapshot"];
    assert_eq!(snap["state"], "running");
    assert!(snap["snapshot_lsn"].is_string(), "{doc}");
    let table = &snap["tables"][0];
    assert_eq!(table["table"], "public.t");
    let total = table["chunks_total"].as_u64().expect("chunks_total");
    let done = table["chunks_done"].as_u64().expect("chunks_done");
    assert!(total >= 40, "{doc}");
    assert!(done < total, "{doc}");
    for claim in table["claims"].as_array().expect("claims") {
        assert!(claim["chunks"].as_u64().is_some_and(|n| n >= 1), "{doc}");
        assert!(claim["heartbeat_age_seconds"].as_f64().is_some(), "{doc}");
    }
    drop(engine_a);
    drop(engine_b);
    db.cleanup().await;
}

#[tokio::test]
async fn cannot_tell_when_the_database_does_not_answer() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let url = format!(
        "postgres://u:secret-pw-{}@127.0.0.1:{port}/db",
        unique_suffix()
    );
    let yaml = pipeline(
        &url,
        "s",
        "p",
        "{ type: stdout }",
        "{ mode: never }",
        PIPELINE,
    );
    let (code, text, doc) = status(&yaml);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("status: unknown"), "{text}");
    assert!(!text.contains("secret-pw"), "{text}");
    assert_eq!(doc["health"], "unknown");
    assert!(doc["error"].is_string(), "{doc}");
    // An invalid configuration cannot be judged either.
    let (code, _, err) = run_engine(&["status"], "source: {}\n");
    assert_eq!(code, 2, "{err}");
}
