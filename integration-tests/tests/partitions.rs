//! Partitioned tables (docs/snapshot.md, "Partitioned tables"), through the
//! real `cdc-engine` binary and its file sink against PostgreSQL 15:
//!
//! * a table partitioned by RANGE and one by LIST, each with a DEFAULT
//!   partition, are snapshotted chunk by chunk per partition and streamed
//!   under a concurrent writer that inserts, moves rows between partitions
//!   (updates of the partition key) and deletes; every event carries the
//!   root table's name and the rebuilt root tables equal the tables;
//! * a publication without `publish_via_partition_root` that lists a
//!   partitioned table is fixed at start, and the engine starts again on
//!   it; what `TRUNCATE` of one partition and of the root, `DETACH
//!   PARTITION` and `ATTACH PARTITION` produce;
//! * with `publication.create: false` such a publication is refused,
//!   naming the fix;
//! * changes of a relation the engine does not track are warned about once
//!   per relation and counted in `/status` and `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration_tests::http::{free_port, get, status_json};
use integration_tests::pipelines::pipeline_yaml;
use integration_tests::replay::{
    apply, diff, poll_merged, tables_of, wait_converged_tables, Change, Tail,
};
use integration_tests::snapshot_meta::{chunks, wait_job_done};
use integration_tests::{unique_suffix, wait_until, Engine, TempDir, TestDb};
use sqlx::{Connection, PgConnection};

const STOP_TIMEOUT: Duration = Duration::from_secs(45);
const TIMEOUT: Duration = Duration::from_secs(90);

fn slot_and_publication() -> (String, String) {
    let s = unique_suffix();
    (format!("part_{s}"), format!("part_pub_{s}"))
}

/// `public.r` by RANGE of `k` (`r_low`, `r_high`, `r_default`) and
/// `public.l` by LIST of `region` (`l_eu`, `l_us`, `l_default`), each
/// with `rows` rows spread over every partition.
async fn create_partitioned(db: &TestDb, rows: i64) {
    db.exec(&format!(
        "CREATE TABLE public.r (id bigint NOT NULL, k int NOT NULL, v text, PRIMARY KEY (id, k))
             PARTITION BY RANGE (k);
         CREATE TABLE public.r_low PARTITION OF public.r FOR VALUES FROM (0) TO (100);
         CREATE TABLE public.r_high PARTITION OF public.r FOR VALUES FROM (100) TO (200);
         CREATE TABLE public.r_default PARTITION OF public.r DEFAULT;
         INSERT INTO public.r SELECT g, (g * 7) % 300, 'r ' || g FROM generate_series(1, {rows}) g;
         CREATE TABLE public.l (id bigint NOT NULL, region text NOT NULL, n int,
                                PRIMARY KEY (id, region)) PARTITION BY LIST (region);
         CREATE TABLE public.l_eu PARTITION OF public.l FOR VALUES IN ('eu');
         CREATE TABLE public.l_us PARTITION OF public.l FOR VALUES IN ('us');
         CREATE TABLE public.l_default PARTITION OF public.l DEFAULT;
         INSERT INTO public.l
           SELECT g, (ARRAY['eu', 'us', 'asia', 'af'])[1 + g % 4], g FROM generate_series(1, {rows}) g;
         ANALYZE public.r; ANALYZE public.l;"
    ))
    .await;
}

const REGIONS: [&str; 4] = ["eu", "us", "asia", "af"];

/// One writer on both tables: inserts new ids, moves existing rows to
/// another partition (updates of `k` / `region`), deletes.
struct PartitionWriter {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    moved: Arc<AtomicU64>,
    handle: tokio::task::JoinHandle<()>,
}

impl PartitionWriter {
    async fn start(db: &TestDb, first_new_id: i64) -> PartitionWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let moved = Arc::new(AtomicU64::new(0));
        let mut conn = PgConnection::connect(db.url())
            .await
            .unwrap_or_else(|e| panic!("writer: cannot connect: {e}"));
        let (s, c, m) = (stop.clone(), committed.clone(), moved.clone());
        let handle = tokio::spawn(async move {
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ first_new_id as u64;
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let mut next_id = first_new_id;
            while !s.load(Ordering::Relaxed) {
                let pick = 1 + (next() % (next_id as u64 - 1)) as i64;
                let k = (next() % 300) as i32;
                let region = REGIONS[(next() % 4) as usize];
                let (sql_r, sql_l, moves) = match next() % 10 {
                    0..=3 => {
                        next_id += 1;
                        (
                            format!("INSERT INTO public.r VALUES ({next_id}, {k}, 'w {next_id}')"),
                            format!("INSERT INTO public.l VALUES ({next_id}, '{region}', {k})"),
                            false,
                        )
                    }
                    4..=7 => (
                        format!("UPDATE public.r SET k = {k}, v = 'moved {k}' WHERE id = {pick}"),
                        format!(
                            "UPDATE public.l SET region = '{region}', n = n + 1 WHERE id = {pick}"
                        ),
                        true,
                    ),
                    _ => (
                        format!("DELETE FROM public.r WHERE id = {pick}"),
                        format!("DELETE FROM public.l WHERE id = {pick}"),
                        false,
                    ),
                };
                let result: Result<(), sqlx::Error> = async {
                    let mut tx = conn.begin().await?;
                    let a = sqlx::raw_sql(sqlx::AssertSqlSafe(sql_r))
                        .execute(&mut *tx)
                        .await?;
                    let b = sqlx::raw_sql(sqlx::AssertSqlSafe(sql_l))
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    if moves {
                        m.fetch_add(a.rows_affected() + b.rows_affected(), Ordering::Relaxed);
                    }
                    Ok(())
                }
                .await;
                result.unwrap_or_else(|e| panic!("writer: {e}"));
                c.fetch_add(1, Ordering::Relaxed);
            }
        });
        PartitionWriter {
            stop,
            committed,
            moved,
            handle,
        }
    }

    fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.expect("writer task");
        (
            self.committed.load(Ordering::Relaxed),
            self.moved.load(Ordering::Relaxed),
        )
    }
}

/// Polls `tail` until an event of `table` satisfies `found`.
async fn wait_event(tail: &mut Tail, engine: &Engine, what: &str, found: impl Fn(&Change) -> bool) {
    let seen = wait_until(TIMEOUT, async || {
        tail.poll();
        tail.events.iter().any(&found)
    })
    .await;
    assert!(
        seen,
        "{what}: not in the output\n{}",
        engine.output_report()
    );
}

/// 1. Snapshot then stream of a RANGE- and a LIST-partitioned table under a
///    concurrent writer that moves rows between partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_roots_are_snapshotted_per_partition_and_streamed_by_root() {
    let db = TestDb::create("part_roots").await;
    const ROWS: i64 = 30_000;
    create_partitioned(&db, ROWS).await;
    let (slot, publication) = slot_and_publication();
    let dir = TempDir::new("part-roots");
    let out = dir.join("out.jsonl");
    let yaml = pipeline_yaml(
        &db,
        &["public.r", "public.l"],
        &slot,
        &publication,
        &out,
        "{ mode: initial, chunk_rows: 2000, workers: 2 }",
    );

    let writer = PartitionWriter::start(&db, ROWS + 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut engine = Engine::start(&yaml);
    wait_job_done(&db, &slot, &mut [&mut engine], TIMEOUT).await;
    let at_done = writer.committed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (committed, moved) = writer.finish().await;
    eprintln!("writer: {committed} transactions ({at_done} at the end of the snapshot), {moved} rows moved");
    assert!(
        committed > at_done + 20,
        "too few writes after the snapshot"
    );
    assert!(moved > 0, "no row moved between partitions");

    let mut tails = vec![Tail::new(0, out.clone())];
    wait_converged_tables(&db, &mut tails, &[&engine], &["public.r", "public.l"]).await;
    engine.stop_clean(STOP_TIMEOUT, "partitioned roots").await;
    let events = poll_merged(&mut tails);

    // Only the roots' names, never a partition's.
    assert_eq!(
        tables_of(&events),
        BTreeSet::from(["public.l", "public.r"]),
        "tables named by the events"
    );
    // A move between partitions (an UPDATE of the partition key) is
    // decoded as what PostgreSQL does: a delete from the old partition
    // and an insert into the new one, both published as changes of the
    // root, in one transaction, the delete first.
    let mut moves = 0;
    for (i, d) in events.iter().enumerate() {
        if d.op != "d" || d.table != "public.r" {
            continue;
        }
        let id = &d.before["id"];
        let insert = events[i + 1..]
            .iter()
            .take_while(|e| e.commit_lsn == d.commit_lsn)
            .find(|e| e.op == "c" && e.table == "public.r" && &e.after["id"] == id);
        if let Some(c) = insert {
            if range_partition(&d.before["k"]) != range_partition(&c.after["k"]) {
                moves += 1;
            }
        }
    }
    let updates_across = events
        .iter()
        .filter(|e| {
            e.op == "u"
                && e.table == "public.r"
                && e.before.is_object()
                && range_partition(&e.before["k"]) != range_partition(&e.after["k"])
        })
        .count();
    eprintln!(
        "public.r: {moves} moves between partitions as a delete and an insert of the root, \
         {updates_across} as an update"
    );
    assert!(
        moves > 0,
        "no move between partitions of public.r in the stream"
    );

    for root in ["public.r", "public.l"] {
        let want = db.to_jsonb_rows(root, "id").await;
        if let Some(d) = diff(&apply(&events, root), &want) {
            panic!("{root}: final state differs from the table: {d}");
        }
        // Chunked per partition: several chunks, every one read once.
        let planned: Vec<_> = chunks(&db, &slot)
            .await
            .into_iter()
            .filter(|c| c.table == root)
            .collect();
        assert!(
            planned.len() >= 3,
            "{root}: expected chunks on each of its 3 partitions, got {planned:?}"
        );
        let reads: Vec<&&Change> = events
            .iter()
            .filter(|e| e.op == "r" && e.table == root)
            .collect();
        let count = |m: &str| reads.iter().filter(|e| e.snapshot == m).count();
        let first_rows = planned
            .iter()
            .min_by_key(|c| c.chunk_no)
            .and_then(|c| c.rows);
        let last_rows = planned
            .iter()
            .max_by_key(|c| c.chunk_no)
            .and_then(|c| c.rows);
        assert_eq!(
            count("first"),
            usize::from(first_rows != Some(0)),
            "{root}: reads marked first"
        );
        assert_eq!(
            count("last"),
            usize::from(last_rows != Some(0)),
            "{root}: reads marked last"
        );
        let read_ids: BTreeSet<String> = reads.iter().map(|e| e.after["id"].to_string()).collect();
        assert_eq!(read_ids.len(), reads.len(), "{root}: an id read twice");
        let chunk_rows: i64 = planned.iter().map(|c| c.rows.unwrap_or(-1)).sum();
        assert_eq!(
            reads.len() as i64,
            chunk_rows,
            "{root}: reads vs chunk rows"
        );
    }
    db.cleanup().await;
}

fn range_partition(k: &serde_json::Value) -> u8 {
    match k.as_i64() {
        Some(k) if k < 100 => 0,
        Some(k) if k < 200 => 1,
        _ => 2,
    }
}

/// 2. A publication that lists a partitioned table without
///    `publish_via_partition_root` (as one created before the engine set
///    it): fixed at start; the engine starts again on it; `TRUNCATE` of one
///    partition publishes nothing, of the root a truncate of the root.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_existing_publication_is_fixed_and_the_engine_restarts_on_it() {
    let db = TestDb::create("part_restart").await;
    create_partitioned(&db, 100).await;
    // A partitioned table without rows: planned as one empty chunk.
    db.exec(
        "CREATE TABLE public.e (id int NOT NULL, at date NOT NULL, PRIMARY KEY (id, at))
             PARTITION BY RANGE (at);
         CREATE TABLE public.e_2026 PARTITION OF public.e
             FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');",
    )
    .await;
    let (slot, publication) = slot_and_publication();
    db.exec(&format!(
        "CREATE PUBLICATION {publication} FOR TABLE public.r"
    ))
    .await;
    let dir = TempDir::new("part-restart");
    let out = dir.join("out.jsonl");
    let yaml = pipeline_yaml(
        &db,
        &["public.r", "public.e"],
        &slot,
        &publication,
        &out,
        "{ mode: initial, chunking: key, chunk_rows: 10 }",
    );
    let mut tail = Tail::new(0, out.clone());

    let mut engine = Engine::start(&yaml);
    wait_job_done(&db, &slot, &mut [&mut engine], TIMEOUT).await;
    let e_chunks: Vec<_> = chunks(&db, &slot)
        .await
        .into_iter()
        .filter(|c| c.table == "public.e")
        .collect();
    assert!(
        e_chunks.len() == 1 && e_chunks[0].rows == Some(0),
        "public.e: {e_chunks:?}"
    );
    db.exec("INSERT INTO public.e VALUES (1, '2026-06-01')")
        .await;
    wait_event(&mut tail, &engine, "the insert into public.e", |e| {
        e.op == "c" && e.table == "public.e" && e.after["id"] == 1
    })
    .await;
    db.exec("INSERT INTO public.r VALUES (1001, 5, 'first run')")
        .await;
    wait_event(&mut tail, &engine, "the insert of the first run", |e| {
        e.op == "c" && e.table == "public.r" && e.after["id"] == 1001
    })
    .await;
    // Keyset chunks on each partition (the key is (id, k)).
    let r_chunks = chunks(&db, &slot)
        .await
        .into_iter()
        .filter(|c| c.table == "public.r")
        .collect::<Vec<_>>();
    assert!(
        r_chunks.len() >= 10 && r_chunks.iter().all(|c| c.strategy == "keyset"),
        "public.r: {r_chunks:?}"
    );
    let want = db.to_jsonb_rows("public.r", "id").await;
    let events: Vec<&Change> = tail.events.iter().collect();
    if let Some(d) = diff(&apply(&events, "public.r"), &want) {
        panic!("public.r after the snapshot: {d}");
    }
    let via_root = db
        .query_text(&format!(
            "SELECT pubviaroot::text FROM pg_publication WHERE pubname = '{publication}'"
        ))
        .await;
    assert_eq!(
        via_root.as_deref(),
        Some("true"),
        "publish_via_partition_root"
    );
    engine.stop_clean(STOP_TIMEOUT, "first run").await;

    let mut engine = Engine::start(&yaml);
    db.exec("INSERT INTO public.r VALUES (1002, 150, 'second run')")
        .await;
    wait_event(&mut tail, &engine, "the insert of the second run", |e| {
        e.op == "c" && e.table == "public.r" && e.after["id"] == 1002
    })
    .await;

    // TRUNCATE of one partition: nothing is published for it.
    db.exec("TRUNCATE public.r_low").await;
    db.exec("INSERT INTO public.r VALUES (1003, 250, 'after truncating r_low')")
        .await;
    wait_event(&mut tail, &engine, "the insert after TRUNCATE r_low", |e| {
        e.after["id"] == 1003
    })
    .await;
    assert!(
        !tail.events.iter().any(|e| e.op == "t"),
        "TRUNCATE of a partition produced a truncate event"
    );
    // DETACH PARTITION publishes nothing, and the detached table's changes
    // are no longer published.
    let events_before = tail.events.len();
    db.exec(
        "ALTER TABLE public.r DETACH PARTITION public.r_high;
         UPDATE public.r_high SET v = 'detached';",
    )
    .await;
    db.exec("INSERT INTO public.r VALUES (1004, 7, 'after detaching r_high')")
        .await;
    wait_event(&mut tail, &engine, "the insert after DETACH r_high", |e| {
        e.after["id"] == 1004
    })
    .await;
    let since: Vec<&Change> = tail.events[events_before..].iter().collect();
    assert_eq!(
        since.len(),
        1,
        "DETACH PARTITION and changes of the detached table published something: {since:?}"
    );
    // ATTACH PARTITION: the rows the table holds publish nothing; its
    // later changes are changes of the root.
    let events_before = tail.events.len();
    db.exec(
        "CREATE TABLE public.r_top (LIKE public.r INCLUDING ALL);
         INSERT INTO public.r_top VALUES (1005, 350, 'before attaching');
         ALTER TABLE public.r ATTACH PARTITION public.r_top FOR VALUES FROM (300) TO (400);",
    )
    .await;
    db.exec("INSERT INTO public.r VALUES (1006, 360, 'into the attached partition')")
        .await;
    wait_event(
        &mut tail,
        &engine,
        "the insert into the attached partition",
        |e| e.after["id"] == 1006,
    )
    .await;
    let since: Vec<&Change> = tail.events[events_before..].iter().collect();
    assert!(
        since.len() == 1 && since[0].table == "public.r" && since[0].op == "c",
        "ATTACH PARTITION: {since:?}"
    );
    // TRUNCATE of the root: a truncate of the root.
    db.exec("TRUNCATE public.r").await;
    wait_event(&mut tail, &engine, "the truncate of the root", |e| {
        e.op == "t" && e.table == "public.r"
    })
    .await;
    engine.stop_clean(STOP_TIMEOUT, "second run").await;
    assert!(
        !engine.stderr_text().contains("42710"),
        "{}",
        engine.output_report()
    );
    db.cleanup().await;
}

/// 3. `publication.create: false` and a publication without
///    `publish_via_partition_root`: refused, naming the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_false_without_partition_root_is_refused() {
    let db = TestDb::create("part_refused").await;
    create_partitioned(&db, 10).await;
    let (slot, publication) = slot_and_publication();
    db.exec(&format!(
        "CREATE PUBLICATION {publication} FOR TABLE public.r"
    ))
    .await;
    let dir = TempDir::new("part-refused");
    let yaml = pipeline_yaml(
        &db,
        &["public.r"],
        &slot,
        &publication,
        &dir.join("out.jsonl"),
        "{ mode: never }",
    )
    .replace(
        &format!("publication: {{ name: {publication}, create: true }}"),
        &format!("publication: {{ name: {publication}, create: false }}"),
    );
    let mut engine = Engine::start(&yaml);
    let err = engine.wait_failure(TIMEOUT).await;
    let fix =
        format!("ALTER PUBLICATION \"{publication}\" SET (publish_via_partition_root = true)");
    assert!(
        err.contains(&fix),
        "the refusal does not name {fix}\n{}",
        engine.output_report()
    );
    db.cleanup().await;
}

/// 4. A publication made by hand that publishes more than the engine
///    tracks: an ordinary table not in `source.tables`, and a partitioned
///    one without `publish_via_partition_root` (changes under its
///    partition's name). Each relation is warned about once, naming it and
///    why, and its changes are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_of_untracked_relations_are_warned_about_and_counted() {
    let db = TestDb::create("part_untracked").await;
    create_partitioned(&db, 10).await;
    db.exec(
        "CREATE TABLE public.a (id int PRIMARY KEY, v text);
         CREATE TABLE public.b (id int PRIMARY KEY, v text);",
    )
    .await;
    let (slot, publication) = slot_and_publication();
    db.exec(&format!(
        "CREATE PUBLICATION {publication} FOR TABLE public.a, public.b, public.r"
    ))
    .await;
    let dir = TempDir::new("part-untracked");
    let out = dir.join("out.jsonl");
    let port = free_port();
    let mut yaml = pipeline_yaml(
        &db,
        &["public.a"],
        &slot,
        &publication,
        &out,
        "{ mode: initial }",
    )
    .replace(
        &format!("publication: {{ name: {publication}, create: true }}"),
        &format!("publication: {{ name: {publication}, create: false }}"),
    );
    yaml.push_str(&format!("metrics:\n  listen: '127.0.0.1:{port}'\n"));
    let mut tail = Tail::new(0, out.clone());

    let mut engine = Engine::start(&yaml);
    wait_job_done(&db, &slot, &mut [&mut engine], TIMEOUT).await;
    for i in 1..=3 {
        db.exec(&format!("INSERT INTO public.b VALUES ({i}, 'untracked')"))
            .await;
    }
    db.exec("UPDATE public.b SET v = 'changed' WHERE id = 1")
        .await;
    db.exec("INSERT INTO public.r VALUES (2001, 5, 'leaf'), (2002, 6, 'leaf')")
        .await;
    db.exec("INSERT INTO public.a VALUES (1, 'tracked')").await;
    wait_event(&mut tail, &engine, "the insert into public.a", |e| {
        e.table == "public.a" && e.after["id"] == 1
    })
    .await;
    assert!(
        tail.events.iter().all(|e| e.table == "public.a"),
        "only public.a is in the output: {:?}",
        tail.events
            .iter()
            .map(|e| &e.table)
            .collect::<BTreeSet<_>>()
    );

    let status = status_json(port).await.expect("/status answers");
    let counted: BTreeMap<String, u64> = status["untracked_changes"]
        .as_object()
        .unwrap_or_else(|| panic!("no untracked_changes in /status: {status}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(
        counted,
        BTreeMap::from([("public.b".to_owned(), 4), ("public.r_low".to_owned(), 2)]),
        "/status untracked_changes"
    );
    let (code, metrics) = get(port, "/metrics").await.expect("/metrics answers");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("cdc_source_untracked_changes_total{relation=\"public.b\"} 4"),
        "{metrics}"
    );

    // More changes: counted, not warned about again.
    db.exec("DELETE FROM public.b WHERE id = 2").await;
    db.exec("INSERT INTO public.a VALUES (2, 'tracked')").await;
    wait_event(&mut tail, &engine, "the second insert into public.a", |e| {
        e.table == "public.a" && e.after["id"] == 2
    })
    .await;
    let status = status_json(port).await.expect("/status answers");
    assert_eq!(status["untracked_changes"]["public.b"], 5, "{status}");
    engine.stop_clean(STOP_TIMEOUT, "untracked").await;

    let stderr = engine.stderr_text();
    let warned = |needle: &str| stderr.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        warned("public.b is not in source.tables"),
        1,
        "one warning for public.b\n{stderr}"
    );
    assert_eq!(
        warned("public.r_low is a partition of public.r"),
        1,
        "one warning for public.r_low\n{stderr}"
    );
    db.cleanup().await;
}
