//! Choosing tables by pattern (`schema.*`, globs, `/regex/`) with
//! exclusions, through the `cdc-engine` binary and its file sink: exactly
//! the selected tables are snapshotted and streamed (a partition never on
//! its own: its rows arrive through its root), the resolved list is logged
//! and shown by `cdc-engine status`, and a pattern that matches nothing is
//! reported.

use std::collections::BTreeSet;
use std::time::Duration;

use integration_tests::pipelines::{Pipeline, FAST_RETRY};
use integration_tests::replay::{poll_merged, tables_of, wait_converged_tables, Tail};
use integration_tests::snapshot_meta::wait_job_done;
use integration_tests::{run_engine, unique_suffix, Engine, TempDir, TestDb};

const TIMEOUT: Duration = Duration::from_secs(90);

/// The selected tables, as the events name them.
const SELECTED: [&str; 6] = [
    "audit.a",
    "audit.b",
    "public.log_1",
    "shop.items",
    "shop.orders",
    "shop.part",
];

async fn create_tables(db: &TestDb) {
    let mut sql = String::from(
        "CREATE SCHEMA shop; CREATE SCHEMA audit;
         CREATE TABLE shop.part (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
         CREATE TABLE shop.part_low PARTITION OF shop.part FOR VALUES FROM (MINVALUE) TO (1000);
         CREATE TABLE shop.part_high PARTITION OF shop.part FOR VALUES FROM (1000) TO (MAXVALUE);",
    );
    for t in [
        "shop.orders",
        "shop.items",
        "shop.tmp",
        "public.log_1",
        "public.log_old1",
        "public.other",
        "audit.a",
        "audit.b",
        "audit.c",
    ] {
        sql.push_str(&format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, v text);
             INSERT INTO {t} SELECT n, 'first ' || n FROM generate_series(1, 50) n;"
        ));
    }
    sql.push_str(
        "INSERT INTO shop.part SELECT n, 'first ' || n FROM generate_series(990, 1010) n;",
    );
    db.exec(&sql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_and_exclusions_select_exactly_the_matching_tables() {
    let db = TestDb::create("selection").await;
    create_tables(&db).await;
    let s = unique_suffix();
    let slot = format!("sel_{s}");
    let dir = TempDir::new("selection");
    let out = dir.join("out.jsonl");
    let yaml = Pipeline::new("selection", db.url())
        .tables(&["shop.*", "public.log_*", "/^audit\\.(a|b)$/", "nowhere.*"])
        .source_lines("  exclude_tables: [shop.tmp, 'public.log_old*']\n")
        .publication(&format!("sel_pub_{s}"))
        .slot(&slot)
        .create(true, true)
        .file_sink(&out)
        .snapshot("{ mode: initial }")
        .retry(FAST_RETRY)
        .log("{ level: info }")
        .yaml();

    let mut engine = Engine::start(&yaml);
    wait_job_done(&db, &slot, &mut [&mut engine], TIMEOUT).await;
    let stderr = engine.stderr_text();
    assert!(
        stderr.contains(&format!("capturing {} table(s)", SELECTED.len()))
            && stderr.contains("table pattern nowhere.* matches no table"),
        "the resolved list and the unmatched pattern are logged\n{}",
        engine.output_report()
    );
    // Changes after the snapshot, to selected and unselected tables.
    let mut writes = String::new();
    for t in SELECTED
        .iter()
        .chain(["shop.tmp", "public.log_old1", "public.other", "audit.c"].iter())
    {
        writes.push_str(&format!(
            "UPDATE {t} SET v = 'changed' WHERE id = 7; DELETE FROM {t} WHERE id = 8;
             INSERT INTO {t} VALUES (5000, 'new');"
        ));
    }
    db.exec(&writes).await;

    let mut tails = vec![Tail::new(0, out.clone())];
    wait_converged_tables(&db, &mut tails, &[&engine], &SELECTED).await;

    let (code, status_out, status_err) = run_engine(&["status", "--json"], &yaml);
    let status: serde_json::Value = serde_json::from_str(&status_out)
        .unwrap_or_else(|e| panic!("status --json: {e}\n{status_out}\n{status_err}"));
    let listed: BTreeSet<String> = status["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| t.as_str().expect("a name").to_owned())
        .collect();
    assert_eq!(
        listed,
        SELECTED.iter().map(|t| t.to_string()).collect(),
        "status lists the resolved tables (exit {code})"
    );
    assert!(
        status_out.contains("nowhere.*") && status_out.contains("matches no table"),
        "status reports the unmatched pattern: {status_out}"
    );

    engine
        .stop_clean(Duration::from_secs(45), "selection")
        .await;
    let events = poll_merged(&mut tails);
    assert_eq!(
        tables_of(&events),
        SELECTED.iter().copied().collect(),
        "events name exactly the selected tables"
    );
    db.cleanup().await;
}
