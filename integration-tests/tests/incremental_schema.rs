//! Schema changes during an incremental snapshot: a column added and one
//! dropped while the table is read chunk by chunk and writers change it.
//! A consumer that applies each schema change where it happened in the
//! stream (marked by a row written in the same transaction) must end with
//! exactly the table's rows.

use std::collections::BTreeMap;
use std::time::Duration;

use integration_tests::incremental::{incremental_snapshots, progress, wait_progress, workload};
use integration_tests::pipelines::{Pipeline, FAST_RETRY};
use integration_tests::replay::{converge, merged, Change, Tail, CATCH_UP_TIMEOUT};
use integration_tests::{
    unique_suffix, wait_streaming, Engine, TempDir, TestDb, Workload, Writers,
};
use serde_json::Value as Json;

const TIMEOUT: Duration = Duration::from_secs(120);
const ROWS: i32 = 4000;
const CHUNK: u64 = 100;

/// The rows a keyed consumer rebuilds from `events` (in stream order),
/// applying `ALTER TABLE public.t ADD COLUMN added int DEFAULT 7` and
/// `DROP COLUMN spare` to the rows it holds where the stream says they
/// happened (the row `add` or `drop` of `public.ddl`).
fn rebuild(events: &[&Change]) -> BTreeMap<String, Json> {
    let mut rows: BTreeMap<String, Json> = BTreeMap::new();
    for ev in events {
        match (ev.table.as_str(), ev.op.as_str()) {
            ("public.ddl", "c") => {
                let what = ev.after["what"].as_str().unwrap_or_default().to_owned();
                for row in rows.values_mut() {
                    let Some(obj) = row.as_object_mut() else {
                        continue;
                    };
                    match what.as_str() {
                        "add" => {
                            obj.insert("added".into(), Json::from(7));
                        }
                        "drop" => {
                            obj.remove("spare");
                        }
                        other => panic!("unknown schema change {other}"),
                    }
                }
            }
            ("public.t", "r" | "c" | "u") => {
                rows.insert(ev.after["id"].to_string(), ev.after.clone());
            }
            ("public.t", "d") => {
                rows.remove(&ev.before["id"].to_string());
            }
            _ => {}
        }
    }
    rows
}

/// Waits until `chunks` chunks of `public.t` are durable.
async fn wait_chunks(db: &TestDb, engine: &Engine, chunks: i64) {
    wait_progress(
        db,
        engine,
        "public.t",
        &format!("{chunks} chunks in"),
        None,
        TIMEOUT,
        |p| p.chunks_done >= chunks,
    )
    .await;
}

/// Returns just after the engine began a chunk's wait between its read
/// and its high watermark (the failpoint's line appears once more), so a
/// change made now lands inside that window.
async fn inside_a_chunk_wait(engine: &Engine) {
    const LINE: &str = "failpoint reached: waiting";
    let before = engine.stderr_text().matches(LINE).count();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while engine.stderr_text().matches(LINE).count() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no chunk began its wait\n{}",
            engine.output_report()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn columns_added_and_dropped_while_a_table_is_snapshotted_reach_the_consumer_in_order() {
    let db = TestDb::create("incr_schema").await;
    db.exec(&format!(
        "CREATE TABLE public.t (id int PRIMARY KEY, spare text DEFAULT 'spare', v int, note text);\
         INSERT INTO public.t (id, v, note) SELECT g, -g, 'row ' || g FROM generate_series(1, {ROWS}) g;\
         CREATE TABLE public.ddl (what text PRIMARY KEY)"
    ))
    .await;
    let dir = TempDir::new("incr_schema");
    let out = dir.join("out.jsonl");
    let s = unique_suffix();
    let slot = format!("s_{s}");
    let yaml = Pipeline::new("incr", db.url())
        .tables(&["public.t", "public.ddl"])
        .publication(&format!("p_{s}"))
        .slot(&slot)
        .file_sink(&out)
        .snapshot(&incremental_snapshots(CHUNK))
        .batching("{ max_batch_events: 256, max_batch_wait: 10ms }")
        .retry(FAST_RETRY)
        .yaml();
    // Every chunk waits between its read and its high watermark: a schema
    // change made meanwhile lands between the two.
    let mut engine = Engine::start_with(
        &yaml,
        &["run"],
        &[("FAILPOINTS", "incremental::before_high_mark=return(300)")],
    );
    wait_streaming(&db, &mut engine, &slot, TIMEOUT).await;
    let writers = Writers::start(
        db.url(),
        Workload {
            writers: 2,
            pause: Duration::from_millis(5),
            ..workload(ROWS)
        },
    )
    .await;
    db.exec(
        r#"INSERT INTO cdc.signals (kind, payload) VALUES ('snapshot', '{"tables": ["public.t"]}')"#,
    )
    .await;

    wait_chunks(&db, &engine, 3).await;
    inside_a_chunk_wait(&engine).await;
    db.exec(
        "BEGIN; ALTER TABLE public.t ADD COLUMN added int DEFAULT 7; \
         INSERT INTO public.ddl VALUES ('add'); COMMIT",
    )
    .await;
    let after_add = progress(&db, "public.t").await.map_or(0, |p| p.chunks_done);
    wait_chunks(&db, &engine, after_add + 3).await;
    inside_a_chunk_wait(&engine).await;
    db.exec(
        "BEGIN; ALTER TABLE public.t DROP COLUMN spare; \
         INSERT INTO public.ddl VALUES ('drop'); COMMIT",
    )
    .await;
    wait_progress(&db, &engine, "public.t", "done", None, TIMEOUT, |p| {
        p.state == "done"
    })
    .await;
    let written = writers.finish().await;

    let want = db.to_jsonb_rows("public.t", "id").await;
    let mut tail = Tail::new(0, out.clone());
    let result = converge(
        CATCH_UP_TIMEOUT,
        Duration::from_millis(400),
        &want,
        async || {
            tail.poll();
            rebuild(&merged(&[&tail]))
        },
    )
    .await;
    if let Err(d) = result {
        panic!(
            "the consumer did not end with the table's rows: {d}\n{}",
            engine.output_report()
        );
    }
    let reads = tail.events.iter().filter(|c| c.op == "r").count();
    let reread = engine
        .stderr_text()
        .matches("the table changed between the chunk's read and its high watermark")
        .count();
    eprintln!(
        "{reads} reads; {reread} chunk(s) read again after a schema change; writers: {} transactions",
        written.committed
    );
    assert!(reads > ROWS as usize / 2, "only {reads} reads");
    // Both changes were made just after a chunk began its 300 ms wait:
    // at least one chunk was read again.
    assert!(
        reread >= 1,
        "no chunk was read again\n{}",
        engine.output_report()
    );
    engine
        .stop_clean(Duration::from_secs(30), "the engine")
        .await;
    db.cleanup().await;
}
