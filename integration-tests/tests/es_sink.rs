//! The Elasticsearch sink end to end: PostgreSQL → `cdc-engine` (built with
//! the `elasticsearch` feature) → a search server, read back over REST.
//!
//! Every test body runs against both API-compatible servers that
//! `scripts/test.sh` starts: noida-db (Elasticsearch 8 API,
//! `CDC_TEST_ES_URL`) and osmem-server (OpenSearch API,
//! `CDC_TEST_OPENSEARCH_URL`). Each test uses its own database and its own
//! index prefix, so tests run in parallel on one server.
//!
//! Documents are compared with PostgreSQL's own `to_jsonb` of the rows
//! (serde_json with `arbitrary_precision`: numbers compare as their text).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdc_sink_conformance::CutProxy;
use es_fault_proxy::{BulkFault, BulkItem, BulkSeen, FaultProxy, ForbidRule};
use integration_tests::incremental::{
    assert_resumed_after_durable, incremental_snapshots, kill_midway_and_resume, request_snapshot,
    wait_snapshot_done, workload, Chaser, ChunkRead,
};
use integration_tests::pipelines::{Pipeline, FAST_RETRY};
use integration_tests::replay::converge;
use integration_tests::value_columns::{create_value_table, insert_value_rows, Col};
use integration_tests::{
    unique_suffix, wait_for, wait_streaming, wait_until, Engine, TempDir, TestDb, Workload, Writers,
};
use serde_json::{json, Value as Json};
use sqlx::{Connection, PgConnection};

/// How long the index may take to match the table.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(45);
/// Updates of row 1 in the replay test.
const WRITES: i32 = 800;

// ---------------------------------------------------------------- servers

/// The search server's base URL from `var`; panics when the variable is unset.
fn server_url(var: &str) -> String {
    match std::env::var(var) {
        Ok(u) if !u.trim().is_empty() => u.trim().trim_end_matches('/').to_owned(),
        _ => panic!(
            "{var} is not set: run ./scripts/test.sh (it starts noida-db and osmem-server, \
             see scripts/servers/)"
        ),
    }
}

/// Runs one test body against noida-db and against osmem-server.
macro_rules! on_both_servers {
    ($body:ident: $noida:ident, $osmem:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $noida() {
            $body(&server_url("CDC_TEST_ES_URL")).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $osmem() {
            $body(&server_url("CDC_TEST_OPENSEARCH_URL")).await;
        }
    };
}

on_both_servers!(snapshot_then_stream: snapshot_then_stream_noida, snapshot_then_stream_osmem);
on_both_servers!(replay_converges: replay_converges_noida, replay_converges_osmem);
on_both_servers!(toast_and_truncate: toast_and_truncate_noida, toast_and_truncate_osmem);
on_both_servers!(retries_only_failed_items: retries_noida, retries_osmem);
on_both_servers!(superseded_item_past_65535_changes: superseded_past_65535_noida, superseded_past_65535_osmem);
on_both_servers!(mapping_error_is_fatal: mapping_error_is_fatal_noida, mapping_error_is_fatal_osmem);
on_both_servers!(dead_letter_file: dead_letter_noida, dead_letter_osmem);
on_both_servers!(every_type: every_type_noida, every_type_osmem);
on_both_servers!(mappings_none: mappings_none_noida, mappings_none_osmem);
on_both_servers!(mappings_denied: mappings_denied_noida, mappings_denied_osmem);
on_both_servers!(gives_up_after_the_retry_bound: gives_up_noida, gives_up_osmem);
on_both_servers!(incremental_snapshot_under_writes: incremental_snapshot_noida, incremental_snapshot_osmem);
on_both_servers!(incremental_snapshot_resumes_after_sigkill: incremental_kill_noida, incremental_kill_osmem);

// ---------------------------------------------------------------- helpers

/// A fresh index prefix (lower case, valid in index names).
fn prefix() -> String {
    format!("it-{}", unique_suffix())
}

/// A pipeline for `tables` with an initial snapshot and one elasticsearch
/// sink whose entry gets `extra` (YAML flow-mapping items, e.g.
/// `, dead_letter: '/x'`).
fn pipeline(db: &TestDb, tables: &[&str], es_url: &str, prefix: &str, extra: &str) -> Pipeline {
    let s = unique_suffix();
    Pipeline::new("es_test", db.url())
        .tables(tables)
        .publication(&format!("es_pub_{s}"))
        .slot(&format!("es_slot_{s}"))
        .create(true, true)
        .sink(&format!(
            "{{ type: elasticsearch, urls: ['{es_url}'], index: '{prefix}-{{schema}}.{{table}}', \
             batch_max_docs: 200, max_retries: 8, retry_backoff: 50ms{extra} }}"
        ))
        .snapshot("{ mode: initial }")
        .retry(FAST_RETRY)
        .log("{ level: info }")
}

/// Every document of `index` by `_id` (`_source`), after a refresh; empty
/// when the index does not exist. Pages through a scroll, so indices of
/// any size are read whole.
async fn index_docs(es: &str, index: &str) -> BTreeMap<String, Json> {
    let http = reqwest::Client::new();
    let _ = http.post(format!("{es}/{index}/_refresh")).send().await;
    let response = http
        .post(format!("{es}/{index}/_search?scroll=1m"))
        .json(&json!({"size": 10000, "sort": ["_doc"], "query": {"match_all": {}}}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("search {index}: {e}"));
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return BTreeMap::new();
    }
    assert!(
        response.status().is_success(),
        "search {index}: {}",
        response.status()
    );
    let mut page: Json = response.json().await.unwrap();
    let mut docs = BTreeMap::new();
    loop {
        let hits = page["hits"]["hits"].as_array().cloned().unwrap_or_default();
        if hits.is_empty() {
            break;
        }
        docs.extend(
            hits.into_iter()
                .map(|h| (h["_id"].as_str().unwrap().to_owned(), h["_source"].clone())),
        );
        let scroll_id = page["_scroll_id"]
            .as_str()
            .unwrap_or_else(|| panic!("search {index}: no _scroll_id"))
            .to_owned();
        page = http
            .post(format!("{es}/_search/scroll"))
            .json(&json!({"scroll": "1m", "scroll_id": scroll_id}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("scroll {index}: {e}"))
            .json()
            .await
            .unwrap();
    }
    if let Some(scroll_id) = page["_scroll_id"].as_str() {
        let _ = http
            .delete(format!("{es}/_search/scroll"))
            .json(&json!({ "scroll_id": scroll_id }))
            .send()
            .await;
    }
    docs
}

/// One document's `_source`, or `None`.
async fn get_doc(es: &str, index: &str, id: &str) -> Option<Json> {
    let response = reqwest::get(format!("{es}/{index}/_doc/{id}")).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body: Json = response.json().await.ok()?;
    (body["found"] == json!(true)).then(|| body["_source"].clone())
}

/// `true` when `es` is noida-db, which returns documents re-serialised:
/// `1.50` comes back as `1.5`, and floats can change in their last digits
/// (`90.66666666666667` as `90.66666666666669`). osmem-server returns
/// `_source` as sent, like Elasticsearch.
fn reserialises_numbers(es: &str) -> bool {
    std::env::var("CDC_TEST_ES_URL").is_ok_and(|u| u.trim().trim_end_matches('/') == es)
}

/// `value` with every number replaced by its value to 12 significant
/// digits, for comparing with noida-db's answers.
fn numbers_by_value(value: &Json) -> Json {
    match value {
        Json::Number(n) => {
            let f: f64 = n.to_string().parse().unwrap();
            Json::String(format!("{f:.11e}"))
        }
        Json::Array(items) => Json::Array(items.iter().map(numbers_by_value).collect()),
        Json::Object(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), numbers_by_value(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Waits until `index` holds exactly `expected` (with numbers compared by
/// value on noida-db); panics with the difference.
async fn assert_converges(
    es: &str,
    index: &str,
    expected: &BTreeMap<String, Json>,
    engine: &Engine,
) {
    let loose = reserialises_numbers(es);
    let comparable = |docs: &BTreeMap<String, Json>| -> BTreeMap<String, Json> {
        docs.iter()
            .map(|(k, v)| {
                let v = if loose {
                    numbers_by_value(v)
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    };
    let want = comparable(expected);
    let result = converge(CONVERGE_TIMEOUT, Duration::ZERO, &want, async || {
        comparable(&index_docs(es, index).await)
    })
    .await;
    if let Err(d) = result {
        panic!(
            "index {index} did not converge: {d}\n{}",
            engine.output_report()
        );
    }
}

// ---------------------------------------------------------------- tests

/// Snapshot, then streaming under two concurrent writers: each index ends
/// up holding exactly the table's rows as `to_jsonb` renders them (types
/// included), deleted rows absent; a quoted mixed-case table with a
/// composite key gets a sanitised index name and `[a,"b"]` ids.
async fn snapshot_then_stream(es: &str) {
    let db = TestDb::create("es_stream").await;
    db.exec(
        r#"CREATE TABLE public.items (
             id int PRIMARY KEY, name text, price numeric(12,3), ratio float8, flag bool,
             tags text[], meta jsonb, at timestamptz, raw bytea, uid uuid, day date);
           CREATE TABLE public."Mixed Case" (a int, b text, v int, PRIMARY KEY (a, b));
           INSERT INTO public.items
             SELECT g, 'item ' || g, g * 1.5, g / 3.0, g % 2 = 0, ARRAY['x', 'y "' || g || '"'],
                    jsonb_build_object('g', g, 'nested', jsonb_build_array(1.25, 2.50)),
                    '2024-05-01 12:00:00.5+00'::timestamptz + g * interval '1 hour',
                    '\xdeadbeef'::bytea, gen_random_uuid(), DATE '2024-01-01' + g
             FROM generate_series(1, 150) g;
           INSERT INTO public."Mixed Case" SELECT g % 7, 'k' || g, g FROM generate_series(1, 40) g;"#,
    )
    .await;
    let prefix = prefix();
    let mut engine = Engine::start(
        &pipeline(
            &db,
            &["public.items", "public.\"Mixed Case\""],
            es,
            &prefix,
            "",
        )
        .yaml(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2i32 {
        let url = db.url().to_owned();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut conn = PgConnection::connect(&url).await.unwrap();
            let mut n = 0i32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = (n * 7 + w * 13) % 220 + 1;
                let sql = match n % 4 {
                    0 => format!("DELETE FROM public.items WHERE id = {id}"),
                    1 => format!(
                        "INSERT INTO public.items (id, name, price, tags) VALUES ({id}, 'w{w} {n}', {n}.25, '{{a,b}}') \
                         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, price = EXCLUDED.price"
                    ),
                    2 => format!(
                        "UPDATE public.items SET ratio = ratio * 2, meta = '{{\"w\": {w}, \"n\": {n}}}' WHERE id = {id}"
                    ),
                    _ => format!(
                        "BEGIN; UPDATE public.\"Mixed Case\" SET v = v + 1 WHERE a = {}; \
                         DELETE FROM public.\"Mixed Case\" WHERE a = {} AND b = 'k{n}'; \
                         INSERT INTO public.\"Mixed Case\" VALUES ({}, 'n{w}_{n}', {n}); COMMIT",
                        id % 7,
                        id % 7,
                        id % 5
                    ),
                };
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    let expected = db.to_jsonb_rows("public.items", "id").await;
    assert_converges(es, &format!("{prefix}-public.items"), &expected, &engine).await;

    let mixed: BTreeMap<String, Json> = db
        .query_json(r#"SELECT * FROM public."Mixed Case""#)
        .await
        .into_iter()
        .map(|row| {
            (
                serde_json::to_string(&json!([row["a"], row["b"]])).unwrap(),
                row,
            )
        })
        .collect();
    assert!(!mixed.is_empty());
    assert_converges(es, &format!("{prefix}-public.mixed_case"), &mixed, &engine).await;

    engine.stop_clean(Duration::from_secs(30), "stop").await;
    db.cleanup().await;
}

/// Rows of `public.t` when the incremental snapshot test starts (osmem-server
/// indexes ever more slowly as an index grows: a few thousand documents
/// keep it quick).
const INCREMENTAL_ROWS: i32 = 3000;
/// Rows per chunk of that snapshot.
const INCREMENTAL_CHUNK: u64 = 100;

/// A test's database with a `public.t` of [`INCREMENTAL_ROWS`] rows, an
/// index prefix, a slot, and a stream-only pipeline into `es` with
/// incremental snapshots on.
async fn incremental_setup(name: &str, es: &str) -> (TestDb, String, String, String) {
    let db = TestDb::create(name).await;
    db.exec(&format!(
        "CREATE TABLE public.t (id int PRIMARY KEY, v int NOT NULL, note text);
         INSERT INTO public.t SELECT g, -g, 'row ' || g FROM generate_series(1, {INCREMENTAL_ROWS}) g;"
    ))
    .await;
    let prefix = prefix();
    let slot = format!("es_incr_{}", unique_suffix());
    let yaml = pipeline(&db, &["public.t"], es, &prefix, "")
        .slot(&slot)
        .snapshot(&incremental_snapshots(INCREMENTAL_CHUNK))
        .yaml();
    (db, prefix, slot, yaml)
}

/// The writers of the incremental snapshot tests: [`workload`], a little
/// slower (osmem-server indexes more slowly than the others take in).
fn incremental_writers() -> Workload {
    Workload {
        pause: Duration::from_millis(10),
        ..workload(INCREMENTAL_ROWS)
    }
}

/// An incremental snapshot asked for by a signal while writers change the
/// table all over (and just ahead of the snapshot): the index ends up
/// holding exactly the table's rows. A read carries its chunk's high
/// watermark as its version: it must be refused where the document holds
/// a newer change, and lose to every change after it.
async fn incremental_snapshot_under_writes(es: &str) {
    let started = Instant::now();
    let (db, prefix, slot, yaml) = incremental_setup("es_incr", es).await;
    let mut engine = Engine::start(&yaml);
    wait_streaming(&db, &mut engine, &slot, Duration::from_secs(60)).await;
    let writers = Writers::start(db.url(), incremental_writers()).await;
    request_snapshot(&db, &["public.t"]).await;
    let chaser = Chaser::start(&db, "public.t", 4 * INCREMENTAL_CHUNK as i64).await;
    wait_snapshot_done(&db, &["public.t"], &[&engine], Duration::from_secs(120)).await;
    let chased = chaser.finish().await;
    let written = writers.finish().await;
    let expected = db.to_jsonb_rows("public.t", "id").await;
    assert_converges(es, &format!("{prefix}-public.t"), &expected, &engine).await;
    engine.stop_clean(Duration::from_secs(30), "stop").await;
    eprintln!(
        "{es}: {} rows, {} commits and {chased} updates just ahead of the snapshot in {:?}",
        expected.len(),
        written.committed,
        started.elapsed()
    );
    db.cleanup().await;
}

/// SIGKILL in the middle of an incremental snapshot, under writes, with a
/// proxy recording every `_bulk` item: the restarted engine resumes after
/// the last chunk the index had acknowledged (the chunks read after it are
/// read again, at new watermarks, and counted), and the index ends up
/// holding exactly the table's rows.
async fn incremental_snapshot_resumes_after_sigkill(es: &str) {
    let proxy = FaultProxy::start(es, Box::new(|_: &[BulkItem]| BulkFault::Pass)).await;
    let (db, prefix, slot, yaml) = incremental_setup("es_incr_kill", &proxy.url()).await;
    let resumed = kill_midway_and_resume(
        &db,
        &yaml,
        &slot,
        incremental_writers(),
        4 * INCREMENTAL_CHUNK as i64,
        Duration::from_secs(120),
    )
    .await;
    let expected = db.to_jsonb_rows("public.t", "id").await;
    assert_converges(
        es,
        &format!("{prefix}-public.t"),
        &expected,
        &resumed.engine,
    )
    .await;
    let chunks = bulk_chunk_reads(&proxy.bulk_log());
    assert_resumed_after_durable(es, &resumed, &chunks, INCREMENTAL_CHUNK);
    let mut engine = resumed.engine;
    engine.stop_clean(Duration::from_secs(30), "stop").await;
    db.cleanup().await;
}

/// The chunk reads among the `_bulk` items in `log` (an integer `_id`),
/// in commit order: the documents written at one commit LSN (their
/// version over 2^16), when they are more than a quarter of a chunk (a
/// writer's transaction changes three rows at most; the reads of a chunk
/// share its high watermark's commit LSN). An item sent again (a retried
/// request) counts once. The table's last chunk, smaller, may be missed.
fn bulk_chunk_reads(log: &[BulkSeen]) -> Vec<ChunkRead> {
    let mut by_commit: BTreeMap<u64, BTreeSet<i64>> = BTreeMap::new();
    for item in log.iter().flat_map(|b| &b.items) {
        let (Some(version), Ok(id)) = (item.version, item.id.parse::<i64>()) else {
            continue;
        };
        if item.action == "index" {
            by_commit
                .entry((version as u64) >> 16)
                .or_default()
                .insert(id);
        }
    }
    by_commit
        .into_iter()
        .filter(|(_, ids)| ids.len() as u64 > INCREMENTAL_CHUNK / 4)
        .map(|(commit_lsn, ids)| ChunkRead {
            commit_lsn,
            first: ids.first().copied().unwrap_or_default(),
            last: ids.last().copied().unwrap_or_default(),
            reads: ids.len(),
        })
        .collect()
}

/// SIGKILL mid-stream and restart: the replayed changes are older than
/// the stored documents and refused by version; a row updated hundreds of
/// times is never seen going back to an older value, and ends with its
/// latest one.
async fn replay_converges(es: &str) {
    let db = TestDb::create("es_replay").await;
    db.exec(
        "CREATE TABLE public.counter (id int PRIMARY KEY, v int NOT NULL, note text);
         INSERT INTO public.counter SELECT g, 0, 'start' FROM generate_series(1, 20) g;",
    )
    .await;
    let prefix = prefix();
    let index = format!("{prefix}-public.counter");
    let yaml = pipeline(&db, &["public.counter"], es, &prefix, "").yaml();
    let mut engine = Engine::start(&yaml);

    // Watches document 1: its `v` must never decrease.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<i64>::new()));
    let watcher = {
        let (es, index, stop, seen) = (es.to_owned(), index.clone(), stop.clone(), seen.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(doc) = get_doc(&es, &index, "1").await {
                    let v = doc["v"].to_string().parse::<i64>().unwrap();
                    seen.lock().unwrap().push(v);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let writer = {
        let url = db.url().to_owned();
        tokio::spawn(async move {
            let mut conn = PgConnection::connect(&url).await.unwrap();
            for n in 1..=WRITES {
                let sql = format!(
                    "UPDATE public.counter SET v = {n}, note = 'n{n}' WHERE id = 1; \
                     UPDATE public.counter SET v = v + 1 WHERE id = {}",
                    n % 19 + 2
                );
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Kill in the middle of streaming: after the snapshot handed over
    // (killing a snapshot is the snapshot's own tests' business), once
    // streamed updates of row 1 arrive.
    let streaming = engine
        .logs_within("snapshot done", Duration::from_secs(30))
        .await;
    assert!(
        streaming,
        "the snapshot did not finish\n{}",
        engine.output_report()
    );
    let v_of = async |es: &str, index: &str| {
        get_doc(es, index, "1")
            .await
            .map_or(0, |d| d["v"].to_string().parse::<i64>().unwrap_or(0))
    };
    let at_handover = v_of(es, &index).await;
    let flowing = wait_until(Duration::from_secs(30), async || {
        v_of(es, &index).await > at_handover + 30
    })
    .await;
    assert!(
        flowing,
        "no streamed updates arrived\n{}",
        engine.output_report()
    );
    assert!(
        !writer.is_finished(),
        "the writes ended before the kill: make them longer"
    );
    engine.sigkill();
    engine.wait_exit(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut engine = Engine::start(&yaml);
    writer.await.unwrap();

    let expected = db.to_jsonb_rows("public.counter", "id").await;
    assert_eq!(expected["1"]["v"], json!(WRITES));
    assert_converges(es, &index, &expected, &engine).await;
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > 10, "too few observations: {seen:?}");
    for pair in seen.windows(2) {
        assert!(
            pair[0] <= pair[1],
            "document 1 went back from v={} to v={}",
            pair[0],
            pair[1]
        );
    }
    engine.stop_clean(Duration::from_secs(30), "stop").await;
    db.cleanup().await;
}

/// An update that leaves a TOASTed column alone (pgoutput does not resend
/// it) keeps the stored value, also when the row was written earlier in
/// the same batch; TRUNCATE empties the index, and rows inserted after it
/// arrive.
async fn toast_and_truncate(es: &str) {
    let db = TestDb::create("es_toast").await;
    db.exec(
        "CREATE TABLE public.docs (id int PRIMARY KEY, v int, body text);
         ALTER TABLE public.docs ALTER COLUMN body SET STORAGE EXTERNAL;
         INSERT INTO public.docs
           SELECT g, 0, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 200) i)
           FROM generate_series(1, 3) g;",
    )
    .await;
    let prefix = prefix();
    let index = format!("{prefix}-public.docs");
    let mut engine = Engine::start(&pipeline(&db, &["public.docs"], es, &prefix, "").yaml());
    let expected = db.to_jsonb_rows("public.docs", "id").await;
    assert_converges(es, &index, &expected, &engine).await;

    // Stored document as base (the snapshot wrote it).
    db.exec("UPDATE public.docs SET v = 1 WHERE id = 1").await;
    // Base written earlier in the same transaction, so in the same batch.
    db.exec(
        "BEGIN;
         INSERT INTO public.docs SELECT 10, 0, (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 200) i);
         UPDATE public.docs SET v = 2 WHERE id = 10;
         UPDATE public.docs SET v = 3 WHERE id = 10;
         COMMIT;",
    )
    .await;
    let expected = db.to_jsonb_rows("public.docs", "id").await;
    assert_eq!(expected["1"]["body"].as_str().unwrap().len(), 6400);
    assert_converges(es, &index, &expected, &engine).await;

    db.exec("TRUNCATE public.docs").await;
    assert_converges(es, &index, &BTreeMap::new(), &engine).await;
    db.exec("INSERT INTO public.docs VALUES (7, 7, 'after truncate')")
        .await;
    let expected = db.to_jsonb_rows("public.docs", "id").await;
    assert_converges(es, &index, &expected, &engine).await;
    engine.stop_clean(Duration::from_secs(30), "stop").await;
    db.cleanup().await;
}

/// A proxy in front of the server fails the first `_bulk` request with
/// 503, then answers the next two with 429 for every other item (only the
/// others reach the server). The sink must send exactly the failed items
/// again, and the index must still end up exact.
async fn retries_only_failed_items(es: &str) {
    let mut requests = 0;
    let rule = Box::new(move |items: &[BulkItem]| {
        requests += 1;
        match requests {
            1 => BulkFault::Status(503),
            2 | 3 if items.len() > 1 => BulkFault::Reject((1..items.len()).step_by(2).collect()),
            _ => BulkFault::Pass,
        }
    });
    let proxy = FaultProxy::start(es, rule).await;
    let db = TestDb::create("es_retry").await;
    db.exec(
        "CREATE TABLE public.r (id int PRIMARY KEY, v text);
         INSERT INTO public.r SELECT g, 'v' || g FROM generate_series(1, 30) g;",
    )
    .await;
    let prefix = prefix();
    let index = format!("{prefix}-public.r");
    let mut engine = Engine::start(&pipeline(&db, &["public.r"], &proxy.url(), &prefix, "").yaml());
    let expected = db.to_jsonb_rows("public.r", "id").await;
    assert_converges(es, &index, &expected, &engine).await;
    db.exec("UPDATE public.r SET v = v || '!' WHERE id <= 10; DELETE FROM public.r WHERE id > 25")
        .await;
    let expected = db.to_jsonb_rows("public.r", "id").await;
    assert_converges(es, &index, &expected, &engine).await;

    let log = proxy.bulk_log();
    let ids = |seen: &BulkSeen, positions: &[usize]| -> Vec<String> {
        positions
            .iter()
            .map(|&p| seen.items[p].id.clone())
            .collect()
    };
    let all = |seen: &BulkSeen| (0..seen.items.len()).collect::<Vec<_>>();
    assert!(log.len() >= 4, "expected at least 4 bulk requests: {log:?}");
    assert_eq!(log[0].fault, BulkFault::Status(503), "{log:?}");
    // After each injected failure the next request holds exactly the
    // failed items.
    for k in 0..3 {
        assert!(
            !log[k].failed().is_empty(),
            "request {k} had no injected failures: {log:?}"
        );
        assert_eq!(
            ids(&log[k + 1], &all(&log[k + 1])),
            ids(&log[k], &log[k].failed()),
            "request {} retried other items: {log:?}",
            k + 1
        );
    }
    engine.stop_clean(Duration::from_secs(30), "stop").await;
    db.cleanup().await;
}

/// Changes past the 65 535th of one transaction share one version
/// (`commit_lsn × 2^16 + 65535`, `external_gte`). One transaction updates
/// rows 2..=257 256 times each (65 536 changes), then row 1 to `old`
/// (change 65 536) and to `new` (65 537); both updates go in one `_bulk`
/// request, and the proxy refuses `old` with 429 while the server writes
/// `new`. The sink must not send `old` again (with the
/// version it shares with `new` it would be accepted and win): the index
/// ends equal to the table.
async fn superseded_item_past_65535_changes(es: &str) {
    let is_old = |item: &BulkItem| item.id == "1" && item.source_str("v") == Some("old");
    let proxy = FaultProxy::start(es, es_fault_proxy::reject_once(is_old)).await;
    let db = TestDb::create("es_big_tx").await;
    db.exec(
        "CREATE TABLE public.b (id int PRIMARY KEY, v text);
         INSERT INTO public.b SELECT g, 'before' FROM generate_series(1, 257) g;",
    )
    .await;
    let prefix = prefix();
    let index = format!("{prefix}-public.b");
    // The whole transaction in one batch (inside a transaction a batch ends
    // only at a size limit), so the `_bulk` requests of 200 actions are cut
    // where this test expects: changes 65 536 and 65 537 share one (checked
    // below). Few rows, many changes: the servers index a transaction of
    // 65 536 changes of 256 documents faster than one of 65 536 documents.
    let yaml = pipeline(&db, &["public.b"], &proxy.url(), &prefix, "")
        .batching("{ max_batch_events: 100000, max_batch_bytes: 256MiB }")
        .yaml();
    let mut engine = Engine::start(&yaml);
    let expected = db.to_jsonb_rows("public.b", "id").await;
    assert_converges(es, &index, &expected, &engine).await;
    db.exec(
        "BEGIN;
         DO $$ BEGIN
           FOR r IN 1..256 LOOP UPDATE public.b SET v = 'x' || r WHERE id > 1; END LOOP;
         END $$;
         UPDATE public.b SET v = 'old' WHERE id = 1;
         UPDATE public.b SET v = 'new' WHERE id = 1;
         COMMIT;",
    )
    .await;
    // Batches are written in order, each whole: once the next
    // transaction's row is in the index, the big one is written.
    db.exec("INSERT INTO public.b VALUES (-1, 'after')").await;
    let after = wait_until(CONVERGE_TIMEOUT, async || {
        get_doc(es, &index, "-1").await.is_some()
    })
    .await;
    assert!(
        after,
        "the transaction after the big one did not arrive\n{}",
        engine.output_report()
    );
    let expected = db.to_jsonb_rows("public.b", "id").await;
    assert_eq!(expected.len(), 258);
    assert_converges(es, &index, &expected, &engine).await;

    // The fault happened as intended: `old` and `new`, with one version,
    // in one request, `old` refused, and never sent again.
    let log = proxy.bulk_log();
    let sent: Vec<&BulkSeen> = log.iter().filter(|s| s.items.iter().any(is_old)).collect();
    assert_eq!(sent.len(), 1, "`old` was sent {} times", sent.len());
    let at = sent[0].items.iter().position(is_old).unwrap();
    assert_eq!(sent[0].fault, BulkFault::Reject(vec![at]));
    let new = sent[0].items[at + 1..]
        .iter()
        .find(|i| i.id == "1" && i.source_str("v") == Some("new"))
        .expect("`new` in the request that carried `old`");
    assert_eq!(new.version, sent[0].items[at].version);
    engine.stop_clean(Duration::from_secs(30), "stop").await;
    db.cleanup().await;
}

/// A document the index's mapping refuses (a text where the mapping says
/// integer) stops the pipeline with a message naming the document and the
/// server's reason.
async fn mapping_error_is_fatal(es: &str) {
    let db = TestDb::create("es_fatal").await;
    db.exec(
        "CREATE TABLE public.m (id int PRIMARY KEY, v text);
         INSERT INTO public.m VALUES (1, '10'), (2, 'not a number');",
    )
    .await;
    let prefix = prefix();
    let index = format!("{prefix}-public.m");
    create_integer_mapping(es, &index).await;
    let mut engine = Engine::start(&pipeline(&db, &["public.m"], es, &prefix, "").yaml());
    let stderr = engine.wait_failure(Duration::from_secs(60)).await;
    assert!(
        stderr.contains(&format!("elasticsearch refused document {index}/2"))
            && stderr.contains("status 400")
            && stderr.contains("dead_letter"),
        "unclear message:\n{}",
        engine.output_report()
    );
    db.cleanup().await;
}

/// With `retry.give_up_after`, a search server that stays unreachable
/// ends the engine with an error naming the sink and the bound, no sooner
/// than the bound; nothing unwritten was acknowledged, so a restart once
/// the server is back delivers everything.
async fn gives_up_after_the_retry_bound(es: &str) {
    let db = TestDb::create("es_give_up").await;
    db.exec(
        "CREATE TABLE public.g (id int PRIMARY KEY, v text);
         INSERT INTO public.g SELECT n, 'start' FROM generate_series(1, 3) n;",
    )
    .await;
    let upstream: std::net::SocketAddr = es
        .trim_start_matches("http://")
        .parse()
        .expect("the search server's URL is http://127.0.0.1:port");
    let proxy = CutProxy::start(upstream).await;
    let prefix = prefix();
    let index = format!("{prefix}-public.g");
    let bound = Duration::from_secs(3);
    let yaml = pipeline(
        &db,
        &["public.g"],
        &format!("http://{}", proxy.addr()),
        &prefix,
        "",
    )
    .retry("{ initial_backoff: 100ms, max_backoff: 500ms, give_up_after: 3s }")
    .yaml();
    let mut engine = Engine::start(&yaml);
    let copied = wait_until(Duration::from_secs(30), async || {
        index_docs(es, &index).await.len() == 3
    })
    .await;
    assert!(
        copied,
        "the snapshot did not arrive\n{}",
        engine.output_report()
    );

    proxy.refuse(true);
    proxy.cut();
    let down_at = std::time::Instant::now();
    db.exec(
        "UPDATE public.g SET v = 'changed' WHERE id = 1; INSERT INTO public.g VALUES (4, 'new');",
    )
    .await;
    let code = engine.try_wait_exit(Duration::from_secs(60)).await;
    let elapsed = down_at.elapsed();
    let stderr = engine.stderr_text();
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit {code:?}: the engine should give up\n{}",
        engine.output_report()
    );
    assert!(
        elapsed >= bound,
        "gave up after {elapsed:?}, before the bound of {bound:?}\n{}",
        engine.output_report()
    );
    assert!(
        stderr.contains("sinks[0] (elasticsearch)")
            && stderr.contains("still failing after")
            && stderr.contains("the retry bound is 3s"),
        "unclear message:\n{}",
        engine.output_report()
    );

    proxy.refuse(false);
    let mut engine = Engine::start(&yaml);
    let expected = db.to_jsonb_rows("public.g", "id").await;
    assert_eq!(expected.len(), 4);
    assert_converges(es, &index, &expected, &engine).await;
    engine.stop_clean(Duration::from_secs(30), "stop").await;
    db.cleanup().await;
}

/// With `dead_letter` set, the refused document goes to that file (with
/// the server's reason) and everything else is indexed.
async fn dead_letter_file(es: &str) {
    let db = TestDb::create("es_dlq").await;
    db.exec(
        "CREATE TABLE public.m (id int PRIMARY KEY, v text);
         INSERT INTO public.m VALUES (1, '10'), (2, 'not a number'), (3, '30');",
    )
    .await;
    let prefix = prefix();
    let index = format!("{prefix}-public.m");
    create_integer_mapping(es, &index).await;
    let dir = TempDir::new("es-dlq");
    let dlq = dir.join("dead.jsonl");
    let extra = format!(", dead_letter: '{}'", dlq.display());
    let mut engine = Engine::start(&pipeline(&db, &["public.m"], es, &prefix, &extra).yaml());
    db.exec("INSERT INTO public.m VALUES (4, '40'), (5, 'five')")
        .await;
    let lines = wait_for(Duration::from_secs(45), async || {
        let lines = integration_tests::read_jsonl(&dlq);
        (lines.len() >= 2).then_some(lines)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no dead letters in {}\n{}",
            dlq.display(),
            engine.output_report()
        )
    });
    let mut ids: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["2", "5"]);
    assert_eq!(lines[0]["index"], json!(index));
    assert_eq!(lines[0]["status"], json!(400));
    assert!(
        lines[0]["error"].as_str().unwrap().contains("parsing"),
        "{lines:?}"
    );
    assert_eq!(lines[0]["document"]["v"], json!("not a number"));
    let docs = wait_for(Duration::from_secs(30), async || {
        let d = index_docs(es, &index).await;
        (d.len() >= 3).then_some(d)
    })
    .await
    .unwrap_or_else(|| panic!("good rows missing\n{}", engine.output_report()));
    assert_eq!(docs.keys().collect::<Vec<_>>(), ["1", "3", "4"]);
    engine.stop_clean(Duration::from_secs(30), "stop").await;
    db.cleanup().await;
}

/// A table with a column of every type the value parser handles and the
/// awkward values of each (NaN and infinities in float and numeric columns,
/// infinite and BC dates and timestamps, numerics beyond the double range,
/// JSON with mixed-type arrays and duplicate keys, text that looks like a
/// date, ...), indexed by the snapshot and again by streaming: no document
/// is refused, and each equals the row's `to_jsonb` apart from the
/// documented renderings ([`es_rendering`]). The derived mapping makes
/// dates range-searchable and text searchable by its exact value.
async fn every_type(es: &str) {
    let db = TestDb::create("es_types").await;
    let columns = create_value_table(&db, "public.vt").await;
    let prefix = prefix();
    let index = format!("{prefix}-public.vt");
    let mut engine = Engine::start(&pipeline(&db, &["public.vt"], es, &prefix, "").yaml());
    let expected = es_rendering(&columns, db.to_jsonb_rows("public.vt", "id").await);
    assert!(expected.len() > 10);
    assert_converges(es, &index, &expected, &engine).await;

    insert_value_rows(&db, "public.vt", &columns, 1000).await;
    db.exec("UPDATE public.vt SET c_text = '2024-01-01', c_json = '{\"a\": \"x\"}' WHERE id = 1")
        .await;
    let expected = es_rendering(&columns, db.to_jsonb_rows("public.vt", "id").await);
    assert_converges(es, &index, &expected, &engine).await;

    // Row 0 and its streamed copy hold 2024-02-29 and "hello" only in
    // row 1 and 1001 (1 was updated to a date-like text).
    let range = json!({"range": {"c_date": {"gte": "2024-02-28", "lte": "2024-03-01"}}});
    assert_eq!(
        count(es, &index, range).await,
        2,
        "c_date is not a date field"
    );
    let term = json!({"term": {"c_text.keyword": "hello"}});
    assert_eq!(
        count(es, &index, term).await,
        1,
        "c_text has no keyword sub-field"
    );
    let term = json!({"term": {"c_text.keyword": "2024-01-01"}});
    assert_eq!(
        count(es, &index, term).await,
        1,
        "c_text is not a text field"
    );
    engine.stop_clean(Duration::from_secs(30), "stop").await;
    db.cleanup().await;
}

/// The documents the sink writes for rows whose `to_jsonb` is `rows` (the
/// renderings of the sink's docs, outside `json`/`jsonb` values, which are
/// sent as they are but for duplicate keys, which `to_jsonb` already
/// drops):
/// * a numeric beyond the double range (a JSON number that does not fit
///   an `f64`), also in arrays, is a JSON string of its exact text;
/// * a `float4`/`float8` of magnitude 1e21 or more is in exponent notation.
fn es_rendering(columns: &[&Col], rows: BTreeMap<String, Json>) -> BTreeMap<String, Json> {
    /// `float`: `Some(true)` for float4, `Some(false)` for float8 columns.
    fn render(value: &mut Json, float: Option<bool>) {
        match value {
            Json::Number(n) => {
                let text = n.to_string();
                let Ok(f) = text.parse::<f64>() else {
                    return;
                };
                if f.is_infinite() {
                    *value = Json::String(text);
                } else if let Some(float4) = float.filter(|_| f.abs() >= 1e21) {
                    #[allow(clippy::cast_possible_truncation)]
                    let e = if float4 {
                        format!("{:e}", f as f32)
                    } else {
                        format!("{f:e}")
                    };
                    *value = serde_json::from_str(&e).unwrap();
                }
            }
            Json::Array(items) => items.iter_mut().for_each(|v| render(v, float)),
            _ => {}
        }
    }
    let plain: Vec<(&str, Option<bool>)> = columns
        .iter()
        .filter(|c| !c.ty.contains("json"))
        .map(|c| {
            let float =
                c.ty.starts_with("float")
                    .then(|| c.ty.starts_with("float4"));
            (c.name, float)
        })
        .collect();
    rows.into_iter()
        .map(|(id, mut row)| {
            for (name, float) in &plain {
                if let Some(v) = row.get_mut(*name) {
                    render(v, *float);
                }
            }
            (id, row)
        })
        .collect()
}

/// The `mappings` of `index`.
async fn index_mapping(es: &str, index: &str) -> Json {
    let response = reqwest::get(format!("{es}/{index}/_mapping"))
        .await
        .unwrap_or_else(|e| panic!("mapping of {index}: {e}"));
    let body: Json = response.json().await.unwrap();
    body.as_object()
        .and_then(|o| o.values().next())
        .map(|v| v["mappings"].clone())
        .unwrap_or_else(|| panic!("mapping of {index}: {body}"))
}

/// `mappings: none` for a table: the sink creates no index, the server
/// creates it from the first document with its own (dynamic) mapping.
async fn mappings_none(es: &str) {
    let db = TestDb::create("es_nomap").await;
    db.exec(
        "CREATE TABLE public.a (id int PRIMARY KEY, v text);
         CREATE TABLE public.b (id int PRIMARY KEY, v text);
         INSERT INTO public.a VALUES (1, 'x'); INSERT INTO public.b VALUES (1, 'x');",
    )
    .await;
    let prefix = prefix();
    let extra = ", mappings: none, table_mappings: { public.b: auto }";
    let mut engine =
        Engine::start(&pipeline(&db, &["public.a", "public.b"], es, &prefix, extra).yaml());
    for table in ["a", "b"] {
        let expected = db.to_jsonb_rows(&format!("public.{table}"), "id").await;
        assert_converges(es, &format!("{prefix}-public.{table}"), &expected, &engine).await;
    }
    let a = index_mapping(es, &format!("{prefix}-public.a")).await;
    assert!(a.get("_meta").is_none(), "{a}");
    assert_ne!(a["dynamic"].to_string().trim_matches('"'), "false", "{a}");
    let b = index_mapping(es, &format!("{prefix}-public.b")).await;
    assert!(b["_meta"]["cdc_es"].is_object(), "{b}");
    engine.stop_clean(Duration::from_secs(30), "stop").await;
    db.cleanup().await;
}

/// A user who may write documents but not read mappings or create
/// indices (403): the sink warns and leaves the index to the server,
/// instead of stopping.
async fn mappings_denied(es: &str) {
    // As for credentials that may write documents but not read mappings or
    // create indices.
    let forbid: ForbidRule = Box::new(|method: &str, path: &str| {
        path.ends_with("/_mapping") || (method == "PUT" && path.matches('/').count() == 1)
    });
    let proxy =
        FaultProxy::start_with(es, Box::new(|_: &[BulkItem]| BulkFault::Pass), Some(forbid)).await;
    let db = TestDb::create("es_denied").await;
    db.exec(
        "CREATE TABLE public.d (id int PRIMARY KEY, v text);
         INSERT INTO public.d SELECT g, 'v' || g FROM generate_series(1, 5) g;",
    )
    .await;
    let prefix = prefix();
    let index = format!("{prefix}-public.d");
    let mut engine = Engine::start(&pipeline(&db, &["public.d"], &proxy.url(), &prefix, "").yaml());
    let expected = db.to_jsonb_rows("public.d", "id").await;
    assert_converges(es, &index, &expected, &engine).await;
    let mapping = index_mapping(es, &index).await;
    assert!(mapping.get("_meta").is_none(), "{mapping}");
    assert!(
        engine
            .stderr_text()
            .contains("not allowed to read the mapping"),
        "no warning\n{}",
        engine.output_report()
    );
    engine.stop_clean(Duration::from_secs(30), "stop").await;
    db.cleanup().await;
}

/// How many documents of `index` match `query`, after a refresh.
async fn count(es: &str, index: &str, query: Json) -> u64 {
    let http = reqwest::Client::new();
    let _ = http.post(format!("{es}/{index}/_refresh")).send().await;
    let response = http
        .post(format!("{es}/{index}/_count"))
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("count {index}: {e}"));
    let status = response.status();
    let body: Json = response.json().await.unwrap();
    assert!(status.is_success(), "count {index}: {status} {body}");
    body["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("count {index}: {body}"))
}

/// Creates `index` with `v` mapped as an integer.
async fn create_integer_mapping(es: &str, index: &str) {
    let response = reqwest::Client::new()
        .put(format!("{es}/{index}"))
        .json(&json!({"mappings": {"properties": {"id": {"type": "integer"}, "v": {"type": "integer"}}}}))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "create {index}: {}",
        response.text().await.unwrap()
    );
}
