//! What starts, stops, pauses and resumes incremental snapshots of a
//! running engine: a table added to `source.tables`, `cdc-engine
//! snapshot`, `POST /snapshot`, and the stop, pause and resume signals.

use std::time::Duration;

use integration_tests::pipelines::{Pipeline, FAST_RETRY};
use integration_tests::replay::{wait_converged_tables, Change, Tail};
use integration_tests::{
    unique_suffix, wait_streaming, wait_until, Engine, Mix, TempDir, TestDb, Workload, Writers,
};

const TIMEOUT: Duration = Duration::from_secs(90);

/// Rows of `public.t` before the engine starts.
const ROWS: i32 = 20_000;
/// Rows per chunk.
const CHUNK: u64 = 200;

/// Writers changing `public.t` while it is snapshotted.
fn writers() -> Workload {
    Workload {
        keys: ROWS,
        new_ids_from: Some(ROWS + 1),
        mix: Mix {
            insert: 2,
            upsert: 2,
            update: 4,
            delete: 2,
        },
        pause: Duration::from_millis(2),
        ..Workload::new(3)
    }
}

/// A database with `public.t` (`ROWS` rows, as [`Writers`] write them)
/// and `public.other` (100 rows).
async fn database(prefix: &str) -> TestDb {
    let db = TestDb::create(prefix).await;
    db.exec(&format!(
        "CREATE TABLE public.t (id int PRIMARY KEY, v int, note text);\
         INSERT INTO public.t SELECT g, -g, 'row ' || g FROM generate_series(1, {ROWS}) g;\
         CREATE TABLE public.other (id int PRIMARY KEY, v int);\
         INSERT INTO public.other SELECT g, g FROM generate_series(1, 100) g"
    ))
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
    let reached = wait_until(TIMEOUT, async || {
        db.exec("UPDATE public.other SET v = v + 1 WHERE id = 1")
            .await;
        progress_of(db, table)
            .await
            .last()
            .is_some_and(|p| p.starts_with(&format!("{state} ")))
    })
    .await;
    assert!(
        reached,
        "the snapshot of {table} did not get {state}: {:?}\n{}",
        progress_of(db, table).await,
        engine.output_report()
    );
}

/// The incremental reads of `table` in the file: (all, distinct ids).
fn reads_of(tail: &Tail, table: &str) -> (usize, usize) {
    let reads: Vec<&Change> = tail
        .events
        .iter()
        .filter(|c| c.op == "r" && c.table == table)
        .collect();
    assert!(
        reads.iter().all(|r| r.snapshot == "incremental"),
        "a read of {table} is not an incremental read"
    );
    let ids: std::collections::HashSet<i64> = reads
        .iter()
        .map(|c| c.after["id"].as_i64().expect("an integer id"))
        .collect();
    (reads.len(), ids.len())
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
    let writers = Writers::start(db.url(), writers()).await;
    let mut second = Engine::start(&after);
    wait_streaming(&db, &mut second, &names.slot, TIMEOUT).await;
    assert_eq!(db.query_text(&published).await.as_deref(), Some("1"));
    wait_state(&db, &second, "public.t", "done").await;
    let written = writers.finish().await;
    assert!(
        written.committed > 50,
        "the writers committed only {}",
        written.committed
    );
    let mut tails = [Tail::new(0, out.clone())];
    wait_converged_tables(&db, &mut tails, &[&second], &["public.t", "public.other"]).await;
    let (reads, distinct) = reads_of(&tails[0], "public.t");
    eprintln!(
        "{reads} reads of {distinct} rows of public.t; writers: {} transactions",
        written.committed
    );
    assert_eq!(reads, distinct, "a row was read twice without a restart");
    assert!(reads > ROWS as usize / 2, "only {reads} reads");
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
