//! No loss on crash: the `cdc-engine` binary with a file sink is killed
//! (SIGKILL) twice while concurrent writers change the table, and restarted
//! each time with the same configuration. Afterwards the file must hold
//! every committed change (at least once), replaying it must give exactly the
//! table's contents, and no line may be torn.

use std::time::{Duration, Instant};

use integration_tests::pipelines::Pipeline;
use integration_tests::replay::{apply, converge, diff, Change, Tail};
use integration_tests::{
    read_jsonl, unique_suffix, wait_streaming, Engine, RowChange, TempDir, TestDb, Workload,
    Writers,
};

/// Concurrent writer connections.
const WRITERS: usize = 4;
/// Ids the writers pick from (few, so rows are updated and deleted often).
const KEYS: i32 = 40;
/// How long the writers run.
const WRITE_FOR: Duration = Duration::from_secs(10);
/// When the engine is killed, counted from the writers' start.
const KILLS_AT: [Duration; 2] = [Duration::from_secs(3), Duration::from_secs(6)];
/// Pause between a kill and the restart.
const RESTART_AFTER: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_twice_while_writing_loses_nothing() {
    let db = TestDb::create("crash_recovery").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY, v int NOT NULL, note text)")
        .await;
    let out_dir = TempDir::new("crash_recovery");
    let out = out_dir.join("changes.jsonl");
    let s = unique_suffix();
    let slot = format!("s_{s}");
    let yaml = Pipeline::streaming("crash", db.url(), "public.t", &format!("p_{s}"), &slot, 64)
        .file_sink(&out)
        .yaml();

    let mut runs = vec![Engine::start(&yaml)];
    wait_streaming(&db, &mut runs[0], &slot, Duration::from_secs(30)).await;

    // The writers start once the slot exists: everything they commit is in
    // the slot's stream.
    let writers = Writers::start(
        db.url(),
        Workload {
            keys: KEYS,
            ..Workload::new(WRITERS)
        },
    )
    .await;
    let started = Instant::now();

    let mut lines_at_kill = Vec::new();
    for at in KILLS_AT {
        tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        let streaming = db.slot_active(&slot).await;
        let engine = runs.last_mut().unwrap();
        engine.sigkill();
        let code = engine.wait_exit(Duration::from_secs(10)).await;
        assert_eq!(
            code,
            128 + 9,
            "not ended by SIGKILL\n{}",
            engine.output_report()
        );
        lines_at_kill.push((started.elapsed(), read_jsonl(&out).len(), streaming));
        tokio::time::sleep(RESTART_AFTER).await;
        runs.push(Engine::start(&yaml));
    }

    tokio::time::sleep(WRITE_FOR.saturating_sub(started.elapsed())).await;
    let log = writers.finish().await;
    let (committed, aborted) = (log.committed, log.failed);
    let n_rows = log
        .changes
        .iter()
        .filter(|c| matches!(c, RowChange::Write(..)))
        .count();
    let n_deletes = log.changes.len() - n_rows;
    eprintln!(
        "writers: {committed} transactions committed ({n_rows} row writes, {n_deletes} deletes), \
         {aborted} failed; engine killed at (elapsed, lines in the file, was streaming): \
         {lines_at_kill:?}"
    );
    assert!(
        committed > 100,
        "the writers committed only {committed} transactions"
    );
    for (when, _, streaming) in &lines_at_kill[1..] {
        if !streaming {
            eprintln!("note: the run killed at {when:?} was not streaming yet");
        }
    }

    // The last run catches up: poll until the file replays to the table.
    let expected = db.to_jsonb_rows("public.t", "id").await;
    let mut tail = Tail::new(0, out.clone());
    let caught_up = converge(
        Duration::from_secs(60),
        Duration::ZERO,
        &expected,
        async || {
            tail.poll();
            apply(&tail.events.iter().collect::<Vec<_>>(), "public.t")
        },
    )
    .await;
    let last = runs.last_mut().unwrap();
    if let Err(d) = caught_up {
        panic!(
            "the file did not converge to the table within 60s: {d}\n{}",
            last.output_report()
        );
    }
    last.stop_clean(Duration::from_secs(30), "the last run")
        .await;

    // No torn lines: every line is complete JSON.
    let text = std::fs::read_to_string(&out).expect("the output file");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the file ends with a partial line: {:?}",
        &text[text.rfind('\n').map_or(0, |i| i + 1)..]
    );
    tail.poll();
    let events: Vec<&Change> = tail.events.iter().collect();
    assert_eq!(
        events.len(),
        text.lines().filter(|l| !l.trim().is_empty()).count()
    );

    // (a) Replaying the file in order gives exactly the table.
    if let Some(d) = diff(&apply(&events, "public.t"), &expected) {
        panic!("replaying the file does not give the table: {d}");
    }

    // (b) Every committed change is in the file, at least once.
    log.assert_no_loss(&events);
    eprintln!(
        "file: {} events for {} committed row writes and {} deletes ({} duplicates from replays)",
        events.len(),
        n_rows,
        n_deletes,
        events.len().saturating_sub(log.changes.len())
    );
    drop(runs);
    db.cleanup().await;
}
