//! A publication that captures part of a table (PostgreSQL 15+: a column
//! list, a row filter), made by hand and used with `publication.create:
//! false`, or set by the engine from `source.columns` and
//! `source.row_filters` (columns alone also before 15, dropped by the
//! reader): the snapshot reads exactly the columns and rows
//! the stream sends, so the sink ends up with the source restricted to
//! them, under a writer that moves rows in and out of the filter during
//! the snapshot and while streaming; an `UPDATE` moving a row across the
//! filter arrives as a delete or an insert. A column list without the key
//! is refused.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration_tests::pipelines::{Pipeline, FAST_RETRY};
use integration_tests::replay::{merged, wait_converged_to, Tail};
use integration_tests::snapshot_meta::wait_job_done;
use integration_tests::{
    quote_ident, unique_suffix, wait_streaming, wait_until, Engine, TempDir, TestDb,
};
use sqlx::{Connection, PgConnection};

const ROWS: i64 = 3_000;
const TIMEOUT: Duration = Duration::from_secs(90);
/// What the sink must hold of `public.rows` under the row filter.
const FILTERED_ROWS: &str = "(SELECT * FROM public.rows WHERE region = 'eu')";

/// `public.cols`: published without `secret`. `public.rows`: only the
/// rows whose `region` is `eu` (REPLICA IDENTITY FULL, which a filter on
/// a column outside the key needs for updates and deletes).
async fn create_tables(db: &TestDb, publication: Option<&str>) {
    let publication = publication.map_or(String::new(), |p| {
        format!(
            "CREATE PUBLICATION {} FOR TABLE public.cols (id, a), public.rows WHERE (region = 'eu');",
            quote_ident(p)
        )
    });
    db.exec(&format!(
        "CREATE TABLE public.cols (id int PRIMARY KEY, a int NOT NULL, secret text);
         INSERT INTO public.cols SELECT n, n, 'secret ' || n FROM generate_series(1, {ROWS}) n;
         CREATE TABLE public.rows (id int PRIMARY KEY, region text NOT NULL, v int NOT NULL);
         ALTER TABLE public.rows REPLICA IDENTITY FULL;
         INSERT INTO public.rows
           SELECT n, CASE WHEN n % 2 = 0 THEN 'eu' ELSE 'us' END, 0
           FROM generate_series(1, {ROWS}) n;
         {publication}"
    ))
    .await;
}

/// Until stopped: moves rows of `public.rows` between regions (in and out
/// of the filter), updates both tables' columns (the excluded one too),
/// inserts and deletes. Returns the number of transactions.
fn start_writer(
    db: &TestDb,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let url = db.url().to_owned();
    tokio::spawn(async move {
        let mut conn = PgConnection::connect(&url).await.expect("writer connects");
        let mut n: i64 = 0;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let id = n * 37 % ROWS + 1;
            let sql = format!(
                "BEGIN;
                 UPDATE public.rows SET region = CASE region WHEN 'eu' THEN 'us' ELSE 'eu' END, v = v + 1
                   WHERE id = {id};
                 UPDATE public.rows SET v = v + 1 WHERE id = {other};
                 UPDATE public.cols SET a = a + 1, secret = 'changed {n}' WHERE id = {id};
                 UPDATE public.cols SET secret = 'only the secret {n}' WHERE id = {other};
                 INSERT INTO public.rows VALUES ({new}, CASE WHEN {n} % 3 = 0 THEN 'us' ELSE 'eu' END, 0);
                 INSERT INTO public.cols VALUES ({new}, {n}, 'new');
                 DELETE FROM public.rows WHERE id = {gone};
                 DELETE FROM public.cols WHERE id = {gone};
                 COMMIT;",
                other = (n * 53 + 11) % ROWS + 1,
                new = ROWS + n,
                gone = ROWS + n - 5,
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("writer transaction");
            done.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_made_column_list_and_row_filter_hold_in_snapshot_and_stream() {
    let db = TestDb::create("pub_subset").await;
    let s = unique_suffix();
    let (slot, publication) = (format!("subset_{s}"), format!("subset_pub_{s}"));
    create_tables(&db, Some(&publication)).await;
    let yaml = |out: &std::path::Path| {
        subset_pipeline(&db, &slot, &publication, out)
            .create(false, true)
            .yaml()
    };
    snapshot_and_stream_agree(&db, &slot, yaml, FILTERED_ROWS).await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_columns_and_row_filters_hold_in_snapshot_and_stream() {
    let db = TestDb::create("cfg_subset").await;
    let s = unique_suffix();
    let (slot, publication) = (format!("cfgsub_{s}"), format!("cfgsub_pub_{s}"));
    create_tables(&db, None).await;
    let yaml = |out: &std::path::Path| {
        subset_pipeline(&db, &slot, &publication, out)
            .create(true, true)
            .source_lines(
                "  columns: { public.cols: { exclude: [secret] } }\n  \
                 row_filters: { public.rows: \"region = 'eu'\" }\n",
            )
            .yaml()
    };
    snapshot_and_stream_agree(&db, &slot, yaml, FILTERED_ROWS).await;
    db.cleanup().await;
}

/// `source.columns` alone works on every server version: from
/// PostgreSQL 15 as the publication's column list, before that by the
/// reader, which drops the excluded column from each change as it is
/// decoded (old key images included) and from the snapshot's reads. Either
/// way no event carries it and the sink holds the source without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_columns_hold_on_every_server_version() {
    let db = TestDb::create("cfg_columns").await;
    let s = unique_suffix();
    let (slot, publication) = (format!("cfgcol_{s}"), format!("cfgcol_pub_{s}"));
    create_tables(&db, None).await;
    let yaml = |out: &std::path::Path| {
        subset_pipeline(&db, &slot, &publication, out)
            .create(true, true)
            .source_lines("  columns: { public.cols: { exclude: [secret] } }\n")
            .yaml()
    };
    snapshot_and_stream_agree(&db, &slot, yaml, "public.rows").await;
    db.cleanup().await;
}

/// `snapshot_only` sets up no publication: the reads take `columns` and
/// `row_filters` from the configuration, so the file holds exactly the
/// source restricted to them, and no read carries the excluded column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_only_reads_apply_the_configured_columns_and_row_filters() {
    let db = TestDb::create("only_subset").await;
    let s = unique_suffix();
    create_tables(&db, None).await;
    let filters = db.server_version_num().await >= 150_000;
    let dir = TempDir::new("only-subset");
    let out = dir.join("out.jsonl");
    let source_lines = if filters {
        "  columns: { public.cols: { exclude: [secret] } }\n  \
         row_filters: { public.rows: \"region = 'eu' -- a comment\" }\n"
    } else {
        // Row filters need PostgreSQL 15 in every mode.
        "  columns: { public.cols: { exclude: [secret] } }\n"
    };
    let yaml = subset_pipeline(&db, &format!("only_{s}"), &format!("only_pub_{s}"), &out)
        .create(true, true)
        .snapshot(
            "{ mode: snapshot_only, tables: [public.cols, public.rows], chunk_rows: 500, workers: 2 }",
        )
        .source_lines(source_lines)
        .yaml();
    let mut engine = Engine::start(&yaml);
    let code = engine.wait_exit(TIMEOUT).await;
    assert_eq!(code, 0, "snapshot_only failed\n{}", engine.output_report());
    let mut tails = vec![Tail::new(0, out.clone())];
    let rows_oracle = if filters {
        FILTERED_ROWS
    } else {
        "public.rows"
    };
    wait_converged_to(
        &db,
        &mut tails,
        &[&engine],
        &[
            ("public.cols", "(SELECT id, a FROM public.cols)"),
            ("public.rows", rows_oracle),
        ],
    )
    .await;
    let refs: Vec<&Tail> = tails.iter().collect();
    for e in merged(&refs) {
        assert_eq!(e.op, "r", "not a snapshot read: {e:?}");
        assert!(
            e.table != "public.cols" || e.after.get("secret").is_none(),
            "the excluded column was read: {}",
            e.after
        );
    }
    db.cleanup().await;
}

/// The server's rules for an `UPDATE` under a row filter, per event kind:
/// a row moving out of the filter arrives as a delete (of its old image),
/// one moving in as an insert (of its new image), one staying in as an
/// update, and one staying out not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_moving_rows_across_the_filter_arrive_as_deletes_and_inserts() {
    let db = TestDb::create("filter_moves").await;
    if db.server_version_num().await < 150_000 {
        eprintln!("row filters need PostgreSQL 15");
        db.cleanup().await;
        return;
    }
    let s = unique_suffix();
    let (slot, publication) = (format!("moves_{s}"), format!("moves_pub_{s}"));
    create_tables(&db, None).await;
    let dir = TempDir::new("filter-moves");
    let out = dir.join("out.jsonl");
    let yaml = subset_pipeline(&db, &slot, &publication, &out)
        .create(true, true)
        .snapshot("{ mode: never }")
        .source_lines("  row_filters: { public.rows: \"region = 'eu'\" }\n")
        .yaml();
    let mut engine = Engine::start(&yaml);
    wait_streaming(&db, &mut engine, &slot, TIMEOUT).await;
    // Even ids are in `eu`, odd ones in `us`; one transaction each, the
    // last one a marker: once it arrived, every earlier change did.
    for sql in [
        "UPDATE public.rows SET region = 'us', v = 10 WHERE id = 2",
        "UPDATE public.rows SET region = 'eu', v = 11 WHERE id = 1",
        "UPDATE public.rows SET v = 12 WHERE id = 4",
        "UPDATE public.rows SET v = 13 WHERE id = 3",
        "UPDATE public.rows SET v = 14 WHERE id = 6",
    ] {
        db.exec(sql).await;
    }
    let mut tail = Tail::new(0, out.clone());
    let marker = wait_until(TIMEOUT, async || {
        tail.poll();
        tail.events
            .iter()
            .any(|e| e.table == "public.rows" && e.row()["id"].as_i64() == Some(6))
    })
    .await;
    assert!(
        marker,
        "the marker did not arrive\n{}",
        engine.output_report()
    );
    let of = |id: i64| -> Vec<(String, String, String)> {
        tail.events
            .iter()
            .filter(|e| e.table == "public.rows" && e.row()["id"].as_i64() == Some(id))
            .map(|e| {
                let region =
                    |image: &serde_json::Value| image["region"].as_str().unwrap_or("-").to_owned();
                (e.op.clone(), region(&e.before), region(&e.after))
            })
            .collect()
    };
    let t = |op: &str, before: &str, after: &str| (op.into(), before.into(), after.into());
    assert_eq!(
        of(2),
        [t("d", "eu", "-")],
        "a row moving out arrives as a delete"
    );
    assert_eq!(
        of(1),
        [t("c", "-", "eu")],
        "a row moving in arrives as an insert"
    );
    assert_eq!(
        of(4),
        [t("u", "eu", "eu")],
        "a row staying in arrives as an update"
    );
    assert_eq!(of(3), [], "a row staying out does not arrive");
    engine
        .stop_clean(Duration::from_secs(45), "filter moves")
        .await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_column_list_without_the_key_is_refused() {
    let db = TestDb::create("cfg_nokey").await;
    let s = unique_suffix();
    create_tables(&db, None).await;
    let dir = TempDir::new("cfg-nokey");
    let yaml = subset_pipeline(
        &db,
        &format!("nokey_{s}"),
        &format!("nokey_pub_{s}"),
        &dir.join("out.jsonl"),
    )
    .create(true, true)
    .source_lines("  columns: { public.cols: { include: [a, secret] } }\n")
    .yaml();
    let mut engine = Engine::start(&yaml);
    let code = engine.try_wait_exit(Duration::from_secs(30)).await;
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit {code:?}\n{}",
        engine.output_report()
    );
    let stderr = engine.stderr_text();
    assert!(
        stderr.contains("public.cols") && stderr.contains("leaves out its key column(s) id"),
        "unclear message\n{}",
        engine.output_report()
    );
    db.cleanup().await;
}

/// The pipeline of these tests: both tables, file sink at `out`, an
/// initial snapshot in several chunks.
fn subset_pipeline(db: &TestDb, slot: &str, publication: &str, out: &std::path::Path) -> Pipeline {
    Pipeline::new("subset", db.url())
        .tables(&["public.cols", "public.rows"])
        .publication(publication)
        .slot(slot)
        .file_sink(out)
        .snapshot("{ mode: initial, chunk_rows: 500, workers: 2 }")
        .retry(FAST_RETRY)
        .log("{ level: info }")
}

/// Runs the engine on `yaml(out)` under the writer through the snapshot
/// and beyond, then checks that the file holds the source restricted to
/// the published columns and rows, and that no event ever carried more.
async fn snapshot_and_stream_agree(
    db: &TestDb,
    slot: &str,
    yaml: impl Fn(&std::path::Path) -> String,
    rows_oracle: &str,
) {
    let dir = TempDir::new("pub-subset");
    let out = dir.join("out.jsonl");
    let yaml = yaml(&out);

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writer = start_writer(db, stop.clone(), done.clone());
    let mut engine = Engine::start(&yaml);
    wait_job_done(db, slot, &mut [&mut engine], TIMEOUT).await;
    let at_done = done.load(Ordering::Relaxed);
    // Keep writing while streaming.
    let more = integration_tests::wait_until(TIMEOUT, async || {
        done.load(Ordering::Relaxed) > at_done + 100
    })
    .await;
    assert!(more, "the writer stalled\n{}", engine.output_report());
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    eprintln!(
        "writer: {} transactions, {at_done} by the end of the snapshot",
        done.load(Ordering::Relaxed)
    );

    let mut tails = vec![Tail::new(0, out.clone())];
    wait_converged_to(
        db,
        &mut tails,
        &[&engine],
        &[
            ("public.cols", "(SELECT id, a FROM public.cols)"),
            ("public.rows", rows_oracle),
        ],
    )
    .await;
    engine.stop_clean(Duration::from_secs(45), "subset").await;

    // No event, read or change, ever carried the excluded column or a row
    // outside the filter.
    tails[0].poll();
    let refs: Vec<&Tail> = tails.iter().collect();
    let events = merged(&refs);
    let reads = events.iter().filter(|e| e.op == "r").count();
    assert!(reads > 0, "no snapshot reads");
    for e in &events {
        for image in [&e.before, &e.after] {
            if e.table == "public.cols" && image.get("secret").is_some() {
                panic!("the excluded column left the server: {image}");
            }
            if e.table == "public.rows"
                && rows_oracle == FILTERED_ROWS
                && e.op == "r"
                && !image.is_null()
                && image["region"] != "eu"
            {
                panic!("a snapshot row outside the filter: {image}");
            }
        }
    }
}
