//! Tables created and dropped while the engine streams, with a selection
//! by schema (`shop.*`) and glob (`public.log_*`): a new match is added to
//! the publication and captured from its first row (the rows written
//! before it was noticed by an incremental snapshot, the later ones by the
//! stream), under writers that start right after its `CREATE TABLE`; a
//! dropped table is noted in `/status` and the stream goes on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration_tests::http::{free_port, status};
use integration_tests::incremental::wait_snapshot_done;
use integration_tests::pipelines::{Pipeline, FAST_RETRY};
use integration_tests::replay::{wait_converged_tables, Tail};
use integration_tests::{
    unique_suffix, wait_streaming, wait_until, Engine, Mix, TempDir, TestDb, Workload, Writers,
};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

const TIMEOUT: Duration = Duration::from_secs(90);

/// Writers of `public.t`, a table captured from the start.
fn old_table_writers() -> Workload {
    Workload {
        keys: 200,
        new_ids_from: Some(201),
        mix: Mix {
            insert: 2,
            upsert: 2,
            update: 4,
            delete: 2,
        },
        pause: Duration::from_millis(5),
        ..Workload::new(2)
    }
}

/// A database with `public.t` (200 rows), `shop.orders` and `shop.items`
/// (50 rows each) and `public.other` (not selected).
async fn database(prefix: &str) -> TestDb {
    let db = TestDb::create(prefix).await;
    let mut sql = String::from(
        "CREATE SCHEMA shop;
         CREATE TABLE public.t (id int PRIMARY KEY, v int, note text);
         INSERT INTO public.t SELECT g, -g, 'row ' || g FROM generate_series(1, 200) g;",
    );
    for t in ["shop.orders", "shop.items", "public.other"] {
        sql.push_str(&format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, v int, note text);
             INSERT INTO {t} SELECT g, g, 'first ' || g FROM generate_series(1, 50) g;"
        ));
    }
    db.exec(&sql).await;
    db
}

/// A pipeline of `shop.*`, `public.log_*` and `public.t` into `out`,
/// checking for new tables every second, with incremental snapshots and
/// `/status` on `port`.
fn pipeline(db: &TestDb, out: &std::path::Path, port: u16) -> (Pipeline, String) {
    pipeline_checking(db, out, port, "1s")
}

/// [`pipeline`], checking the catalog every `interval`.
fn pipeline_checking(
    db: &TestDb,
    out: &std::path::Path,
    port: u16,
    interval: &str,
) -> (Pipeline, String) {
    let s = unique_suffix();
    let slot = format!("disc_{s}");
    let pipeline = Pipeline::new("discovery", db.url())
        .tables(&["shop.*", "public.log_*", "public.t"])
        .source_lines(&format!("  discovery: {{ interval: {interval} }}\n"))
        .publication(&format!("disc_pub_{s}"))
        .slot(&slot)
        .create(true, true)
        .file_sink(out)
        .snapshot("{ mode: initial, incremental: { enabled: true, chunk_rows: 50 } }")
        .batching("{ max_batch_events: 256, max_batch_wait: 10ms }")
        .retry(FAST_RETRY)
        .log("{ level: info }")
        .set("metrics", &format!("{{ listen: '127.0.0.1:{port}' }}"));
    (pipeline, slot)
}

/// A writer that creates `table` and changes it from its first row on:
/// the row inserted by the creating transaction, then small transactions
/// (an insert of a new id, an update of an earlier one, now and then a
/// delete), every few milliseconds until stopped.
struct NewTableWriter {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl NewTableWriter {
    async fn start(db: &TestDb, table: &str) -> NewTableWriter {
        let mut conn = PgConnection::connect(db.url()).await.expect("connect");
        sqlx::raw_sql(AssertSqlSafe(format!(
            "BEGIN; CREATE TABLE {table} (id int PRIMARY KEY, v int, note text);
             INSERT INTO {table} VALUES (1, 1, 'created with the table'); COMMIT"
        )))
        .execute(&mut conn)
        .await
        .expect("create the table");
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(1));
        let (s, c, table) = (stop.clone(), committed.clone(), table.to_owned());
        let task = tokio::spawn(async move {
            let mut id: i64 = 1;
            while !s.load(Ordering::Relaxed) {
                id += 1;
                let mut sql = format!(
                    "BEGIN; INSERT INTO {table} VALUES ({id}, {id}, 'new {id}');
                     UPDATE {table} SET v = v + 1000, note = 'updated' WHERE id = {};",
                    id / 2
                );
                if id % 7 == 0 {
                    sql.push_str(&format!("DELETE FROM {table} WHERE id = {};", id / 3));
                }
                sql.push_str("COMMIT");
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .expect("a write of the new table");
                c.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        });
        NewTableWriter {
            stop,
            committed,
            task,
        }
    }

    fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Waits until `n` more transactions committed.
    async fn wait_more(&self, n: u64) {
        let target = self.committed() + n;
        assert!(
            wait_until(TIMEOUT, async || self.committed() >= target).await,
            "the writer of the new table stalled"
        );
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the writer of the new table");
        self.committed.load(Ordering::Relaxed)
    }
}

/// The names `/status` lists under `key`, as strings.
fn listed(doc: &serde_json::Value, key: &str) -> Vec<String> {
    doc[key]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| match t {
                    serde_json::Value::String(s) => s.clone(),
                    other => other["table"].as_str().unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `/status` on `port` satisfies `check`.
async fn wait_status(
    port: u16,
    engine: &Engine,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) {
    let reached = wait_until(TIMEOUT, async || check(&status(port).await)).await;
    assert!(
        reached,
        "/status never showed {what}: {}\n{}",
        status(port).await,
        engine.output_report()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tables_created_while_streaming_are_captured_from_their_first_row() {
    let db = database("disc_new").await;
    let dir = TempDir::new("disc_new");
    let out = dir.join("out.jsonl");
    let port = free_port();
    let (pipeline, slot) = pipeline(&db, &out, port);
    let mut engine = Engine::start(&pipeline.yaml());
    wait_streaming(&db, &mut engine, &slot, TIMEOUT).await;
    let before = listed(&status(port).await, "tables");
    assert_eq!(before, ["public.t", "shop.items", "shop.orders"]);

    let writers = Writers::start(db.url(), old_table_writers()).await;
    // Created while streaming and written to at once and continuously: the
    // rows written before the engine notices them are not in the stream.
    let fresh = NewTableWriter::start(&db, "shop.fresh").await;
    let log = NewTableWriter::start(&db, "public.log_2").await;
    // Not selected: never captured.
    let skipped = NewTableWriter::start(&db, "public.unrelated").await;

    wait_status(port, &engine, "the new tables", |doc| {
        let tables = listed(doc, "tables");
        tables.contains(&"shop.fresh".to_owned()) && tables.contains(&"public.log_2".to_owned())
    })
    .await;
    wait_snapshot_done(&db, &["shop.fresh", "public.log_2"], &[&engine], TIMEOUT).await;
    // More changes after the snapshots, from the stream.
    fresh.wait_more(50).await;
    log.wait_more(50).await;
    let written = writers.finish().await;
    let fresh_count = fresh.finish().await;
    let log_count = log.finish().await;
    skipped.finish().await;
    eprintln!(
        "public.t: {} transactions; shop.fresh: {fresh_count}; public.log_2: {log_count}",
        written.committed
    );

    let mut tails = [Tail::new(0, out.clone())];
    wait_converged_tables(
        &db,
        &mut tails,
        &[&engine],
        &[
            "public.t",
            "shop.orders",
            "shop.items",
            "shop.fresh",
            "public.log_2",
        ],
    )
    .await;
    let fresh_reads = tails[0]
        .events
        .iter()
        .filter(|e| e.table == "shop.fresh" && e.op == "r")
        .count();
    assert!(
        fresh_reads > 0,
        "the rows written before shop.fresh was noticed come from a snapshot"
    );
    assert!(
        !tails[0]
            .events
            .iter()
            .any(|e| e.table == "public.unrelated"),
        "a table the selection does not match is not captured"
    );
    let published = db
        .query_text(&format!(
            "SELECT string_agg(n, ',' ORDER BY n) FROM (SELECT schemaname || '.' || tablename AS n \
             FROM pg_publication_tables WHERE pubname = 'disc_pub_{}') p",
            slot.trim_start_matches("disc_")
        ))
        .await;
    assert_eq!(
        published.as_deref(),
        Some("cdc.signals,public.log_2,public.t,shop.fresh,shop.items,shop.orders")
    );
    let stderr = engine.stderr_text();
    assert!(
        stderr.contains("table shop.fresh created while streaming matches the selection"),
        "{}",
        engine.output_report()
    );
    engine
        .stop_clean(Duration::from_secs(45), "discovery")
        .await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_dropped_while_streaming_is_noted_and_the_stream_goes_on() {
    let db = database("disc_drop").await;
    let dir = TempDir::new("disc_drop");
    let out = dir.join("out.jsonl");
    let port = free_port();
    let (pipeline, slot) = pipeline(&db, &out, port);
    let mut engine = Engine::start(&pipeline.yaml());
    wait_streaming(&db, &mut engine, &slot, TIMEOUT).await;

    let writers = Writers::start(db.url(), old_table_writers()).await;
    db.exec("UPDATE shop.items SET v = v + 1 WHERE id < 10; DROP TABLE shop.items")
        .await;
    wait_status(port, &engine, "shop.items dropped", |doc| {
        listed(doc, "tables_dropped") == ["shop.items"]
            && !listed(doc, "tables").contains(&"shop.items".to_owned())
    })
    .await;
    // The stream goes on: later changes of the other tables arrive.
    db.exec("UPDATE shop.orders SET note = 'after the drop' WHERE id <= 25")
        .await;
    let written = writers.finish().await;
    assert!(
        written.committed > 20,
        "the writers committed only {}",
        written.committed
    );
    let mut tails = [Tail::new(0, out.clone())];
    wait_converged_tables(&db, &mut tails, &[&engine], &["public.t", "shop.orders"]).await;
    assert!(
        engine
            .stderr_text()
            .contains("table shop.items was dropped"),
        "{}",
        engine.output_report()
    );

    // Created again under the same name: a new table, captured again.
    let again = NewTableWriter::start(&db, "shop.items").await;
    wait_status(port, &engine, "shop.items captured again", |doc| {
        listed(doc, "tables").contains(&"shop.items".to_owned())
            && listed(doc, "tables_dropped").is_empty()
    })
    .await;
    again.wait_more(20).await;
    again.finish().await;
    let last_id = db
        .query_text("SELECT max(id)::text FROM shop.items")
        .await
        .and_then(|n| n.parse::<i64>().ok())
        .expect("rows");
    let arrived = wait_until(TIMEOUT, async || {
        tails[0].poll();
        tails[0]
            .events
            .iter()
            .any(|e| e.table == "shop.items" && e.row()["id"].as_i64() == Some(last_id))
    })
    .await;
    assert!(
        arrived,
        "the last row of the new shop.items did not arrive\n{}",
        engine.output_report()
    );
    assert!(engine.is_running(), "{}", engine.output_report());
    engine
        .stop_clean(Duration::from_secs(45), "discovery drop")
        .await;
    db.cleanup().await;
}

/// A table created while streaming that `source.columns` and
/// `source.row_filters` name (PostgreSQL 15+): it enters the publication
/// with its column list and row filter, and the snapshot of its first rows
/// and its stream both keep to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_table_is_published_with_its_configured_columns_and_rows() {
    let db = database("disc_subset").await;
    if db.server_version_num().await < 150_000 {
        eprintln!("column lists and row filters need PostgreSQL 15");
        db.cleanup().await;
        return;
    }
    let dir = TempDir::new("disc_subset");
    let out = dir.join("out.jsonl");
    let port = free_port();
    let (pipeline, slot) = pipeline(&db, &out, port);
    let pipeline = pipeline.source_lines(
        "  columns: { shop.fresh: { exclude: [note] } }\n  \
         row_filters: { shop.fresh: \"id % 3 <> 0\" }\n",
    );
    let mut engine = Engine::start(&pipeline.yaml());
    wait_streaming(&db, &mut engine, &slot, TIMEOUT).await;
    let fresh = NewTableWriter::start(&db, "shop.fresh").await;
    wait_snapshot_done(&db, &["shop.fresh"], &[&engine], TIMEOUT).await;
    fresh.wait_more(50).await;
    fresh.finish().await;
    let mut tails = [Tail::new(0, out.clone())];
    integration_tests::replay::wait_converged_to(
        &db,
        &mut tails,
        &[&engine],
        &[(
            "shop.fresh",
            "(SELECT id, v FROM shop.fresh WHERE id % 3 <> 0)",
        )],
    )
    .await;
    for e in tails[0].events.iter().filter(|e| e.table == "shop.fresh") {
        for image in [&e.before, &e.after] {
            assert!(image.get("note").is_none(), "an excluded column: {image}");
        }
        if e.op != "d" {
            let id = e.after["id"].as_i64().expect("an id");
            assert_ne!(id % 3, 0, "a row outside the filter: {}", e.after);
        }
    }
    engine
        .stop_clean(Duration::from_secs(45), "discovery subset")
        .await;
    db.cleanup().await;
}

/// A publication made by hand `FOR TABLES IN SCHEMA` (PostgreSQL 15+,
/// `publication.create: false`) sends a new table's changes from its
/// creation: the first of them makes the engine check at once (the
/// catalog check is an hour away here), and the changes it skipped before
/// come from the incremental snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_new_in_a_schema_publication_is_noticed_from_the_stream() {
    let db = database("disc_schema").await;
    if db.server_version_num().await < 150_000 {
        eprintln!("FOR TABLES IN SCHEMA needs PostgreSQL 15");
        db.cleanup().await;
        return;
    }
    let dir = TempDir::new("disc_schema");
    let out = dir.join("out.jsonl");
    let port = free_port();
    let (pipeline, slot) = pipeline_checking(&db, &out, port, "1h");
    let publication = slot.replacen("disc_", "disc_pub_", 1);
    // The metadata schema is published too: it holds the signal table.
    db.exec(&format!(
        "CREATE SCHEMA cdc; CREATE PUBLICATION {publication} \
         FOR TABLES IN SCHEMA shop, cdc, TABLE public.t \
         WITH (publish_via_partition_root = true)"
    ))
    .await;
    let mut engine = Engine::start(&pipeline.create(false, true).yaml());
    wait_streaming(&db, &mut engine, &slot, TIMEOUT).await;
    let fresh = NewTableWriter::start(&db, "shop.fresh").await;
    wait_status(port, &engine, "shop.fresh", |doc| {
        listed(doc, "tables").contains(&"shop.fresh".to_owned())
    })
    .await;
    wait_snapshot_done(&db, &["shop.fresh"], &[&engine], TIMEOUT).await;
    fresh.wait_more(50).await;
    fresh.finish().await;
    let mut tails = [Tail::new(0, out.clone())];
    wait_converged_tables(&db, &mut tails, &[&engine], &["shop.fresh", "shop.orders"]).await;
    assert!(
        engine
            .stderr_text()
            .contains("was created after the last check for new tables"),
        "{}",
        engine.output_report()
    );
    engine
        .stop_clean(Duration::from_secs(45), "discovery schema")
        .await;
    db.cleanup().await;
}
