//! No loss on crash: the `cdc-engine` binary with a file sink is killed
//! (SIGKILL) twice while concurrent writers change the table, and restarted
//! each time with the same configuration. Afterwards the file must hold
//! every committed change (at least once), replaying it must give exactly the
//! table's contents, and no line may be torn.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::pipelines::Pipeline;
use integration_tests::{read_jsonl, unique_suffix, wait_until, Engine, TempDir, TestDb};
use serde_json::Value as Json;
use sqlx::{Connection, PgConnection};

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

/// What committed transactions wrote, in no particular order.
#[derive(Debug, Default)]
struct Written {
    /// `(id, v)` of every row version written (insert or update).
    rows: Vec<(i32, i32)>,
    /// `(id, v)` of every row deleted: `v` is the value it had.
    deletes: Vec<(i32, i32)>,
    committed: usize,
    aborted: usize,
}

/// A small xorshift generator: the tests need no statistical quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    let s = unique_suffix();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h | 1
}

enum Op {
    Upsert(i32),
    Update(i32),
    Delete(i32),
}

impl Op {
    fn id(&self) -> i32 {
        match self {
            Op::Upsert(id) | Op::Update(id) | Op::Delete(id) => *id,
        }
    }
}

/// One writer: small random transactions until `stop`; what committed goes
/// to `log`. `v` values come from `counter`, so each is written once.
async fn writer(
    url: String,
    index: usize,
    seed: u64,
    counter: Arc<AtomicI32>,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Written>>,
) {
    let mut conn = PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("writer {index}: cannot connect: {e}"));
    let mut rng = Rng(seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut ops: Vec<Op> = (0..=rng.below(3))
            .map(|_| {
                let id = rng.below(KEYS as u64) as i32 + 1;
                match rng.below(10) {
                    0..=4 => Op::Upsert(id),
                    5..=7 => Op::Update(id),
                    _ => Op::Delete(id),
                }
            })
            .collect();
        // Same lock order in every transaction: no deadlocks.
        ops.sort_by_key(Op::id);
        let mut rows = Vec::new();
        let mut deletes = Vec::new();
        let result: Result<(), sqlx::Error> = async {
            let mut tx = conn.begin().await?;
            for op in &ops {
                n += 1;
                let note = match rng.below(4) {
                    0 => None,
                    1 => Some(format!("w{index} \"quoted\" \\ ünï {n}")),
                    _ => Some(format!("w{index}-{n}")),
                };
                match op {
                    Op::Upsert(id) => {
                        let v = counter.fetch_add(1, Ordering::Relaxed);
                        sqlx::query(
                            "INSERT INTO public.t (id, v, note) VALUES ($1, $2, $3) \
                             ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v, note = EXCLUDED.note",
                        )
                        .bind(id)
                        .bind(v)
                        .bind(&note)
                        .execute(&mut *tx)
                        .await?;
                        rows.push((*id, v));
                    }
                    Op::Update(id) => {
                        let v = counter.fetch_add(1, Ordering::Relaxed);
                        let hit: Option<i32> = sqlx::query_scalar(
                            "UPDATE public.t SET v = $2, note = $3 WHERE id = $1 RETURNING id",
                        )
                        .bind(id)
                        .bind(v)
                        .bind(&note)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if hit.is_some() {
                            rows.push((*id, v));
                        }
                    }
                    Op::Delete(id) => {
                        let old: Option<i32> =
                            sqlx::query_scalar("DELETE FROM public.t WHERE id = $1 RETURNING v")
                                .bind(id)
                                .fetch_optional(&mut *tx)
                                .await?;
                        if let Some(v) = old {
                            deletes.push((*id, v));
                        }
                    }
                }
            }
            tx.commit().await
        }
        .await;
        let mut log = log.lock().unwrap();
        match result {
            Ok(()) => {
                log.rows.extend(rows);
                log.deletes.extend(deletes);
                log.committed += 1;
            }
            Err(e) => {
                // Only a commit that returned Ok counts; a failed one rolled back.
                log.aborted += 1;
                if log.aborted <= 3 {
                    eprintln!("writer {index}: transaction failed (not counted): {e}");
                }
            }
        }
    }
    let _ = conn.close().await;
}

/// The table as the file's events rebuild it: keyed by the JSON text of
/// `id`, as [`TestDb::to_jsonb_rows`] keys it.
fn apply(events: &[Json]) -> BTreeMap<String, Json> {
    let mut rows = BTreeMap::new();
    for (i, ev) in events.iter().enumerate() {
        let op = ev["op"]
            .as_str()
            .unwrap_or_else(|| panic!("event {i} has no op: {ev}"));
        match op {
            "c" | "u" | "r" => {
                let after = &ev["after"];
                assert!(after.is_object(), "event {i} ({op}) has no after: {ev}");
                rows.insert(after["id"].to_string(), after.clone());
            }
            "d" => {
                let before = &ev["before"];
                assert!(before.is_object(), "delete event {i} has no before: {ev}");
                rows.remove(&before["id"].to_string());
            }
            "t" => rows.clear(),
            other => panic!("event {i}: unknown op {other:?}: {ev}"),
        }
    }
    rows
}

/// `(id, v)` of an event's `after`, if it has one.
fn after_id_v(ev: &Json) -> Option<(i32, i32)> {
    let after = ev.get("after").filter(|a| a.is_object())?;
    let id = after["id"].to_string().parse().ok()?;
    let v = after["v"].to_string().parse().ok()?;
    Some((id, v))
}

fn describe_diff(file: &BTreeMap<String, Json>, table: &BTreeMap<String, Json>) -> String {
    let mut out = Vec::new();
    for (k, v) in table {
        match file.get(k) {
            None => out.push(format!("id {k}: missing from the file, table has {v}")),
            Some(f) if f != v => out.push(format!("id {k}: file has {f}, table has {v}")),
            Some(_) => {}
        }
    }
    for (k, f) in file {
        if !table.contains_key(k) {
            out.push(format!("id {k}: in the file ({f}) but not in the table"));
        }
    }
    let n = out.len();
    out.truncate(20);
    format!("{n} difference(s):\n  {}", out.join("\n  "))
}

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
    // Streaming has begun once the slot exists and a connection holds it.
    let streaming = wait_until(Duration::from_secs(30), async || {
        db.slot_active(&slot).await
    })
    .await;
    assert!(
        streaming,
        "the engine did not start streaming within 30s\n{}",
        runs[0].output_report()
    );

    // The writers start once the slot exists: everything they commit is in
    // the slot's stream.
    let seed = seed();
    eprintln!("writer seed: {seed:#x}");
    let counter = Arc::new(AtomicI32::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Written::default()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            tokio::spawn(writer(
                db.url().to_owned(),
                i,
                seed,
                counter.clone(),
                stop.clone(),
                log.clone(),
            ))
        })
        .collect();
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
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("a writer panicked");
    }
    let (committed, aborted, n_rows, n_deletes) = {
        let log = log.lock().unwrap();
        (
            log.committed,
            log.aborted,
            log.rows.len(),
            log.deletes.len(),
        )
    };
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
    let mut last_diff = String::new();
    let caught_up = wait_until(Duration::from_secs(60), async || {
        let replayed = apply(&read_jsonl(&out));
        if replayed == expected {
            true
        } else {
            last_diff = describe_diff(&replayed, &expected);
            false
        }
    })
    .await;
    let last = runs.last_mut().unwrap();
    assert!(
        caught_up,
        "the file did not converge to the table within 60s: {last_diff}\n{}",
        last.output_report()
    );
    let code = last.stop(Duration::from_secs(30)).await;
    assert_eq!(
        code,
        0,
        "SIGTERM did not stop the engine cleanly\n{}",
        last.output_report()
    );

    // No torn lines: every line is complete JSON.
    let text = std::fs::read_to_string(&out).expect("the output file");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the file ends with a partial line: {:?}",
        &text[text.rfind('\n').map_or(0, |i| i + 1)..]
    );
    let events = read_jsonl(&out);
    assert_eq!(
        events.len(),
        text.lines().filter(|l| !l.trim().is_empty()).count()
    );

    // (a) Replaying the file in order gives exactly the table.
    let replayed = apply(&events);
    assert!(
        replayed == expected,
        "replaying the file does not give the table: {}",
        describe_diff(&replayed, &expected)
    );

    // (b) Every committed change is in the file, at least once.
    let mut first_with: HashMap<(i32, i32), usize> = HashMap::new();
    let mut deletes_of: HashMap<i32, Vec<usize>> = HashMap::new();
    for (i, ev) in events.iter().enumerate() {
        if let Some(key) = after_id_v(ev) {
            first_with.entry(key).or_insert(i);
        }
        if ev["op"] == "d" {
            let id: i32 = ev["before"]["id"].to_string().parse().unwrap_or_else(|e| {
                panic!(
                    "line {}: delete without an integer before.id ({e}): {ev}",
                    i + 1
                )
            });
            deletes_of.entry(id).or_default().push(i);
        }
    }
    // The writers are done: take their log out of the mutex.
    let log = std::mem::take(&mut *log.lock().unwrap());
    let missing: Vec<_> = log
        .rows
        .iter()
        .filter(|k| !first_with.contains_key(k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} committed row writes (id, v) are not in the file, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    let mut lost_deletes = Vec::new();
    for (id, v) in &log.deletes {
        let written_at = *first_with.get(&(*id, *v)).unwrap_or_else(|| {
            panic!("the deleted row version (id {id}, v {v}) was never written to the file")
        });
        let deleted_later = deletes_of
            .get(id)
            .is_some_and(|ds| ds.iter().any(|&d| d > written_at));
        if !deleted_later {
            lost_deletes.push((*id, *v));
        }
    }
    assert!(
        lost_deletes.is_empty(),
        "{} committed deletes have no delete event after the row version they removed, e.g. {:?}",
        lost_deletes.len(),
        &lost_deletes[..lost_deletes.len().min(20)]
    );
    eprintln!(
        "file: {} events for {} committed row writes and {} deletes ({} duplicates from replays)",
        events.len(),
        log.rows.len(),
        log.deletes.len(),
        events
            .len()
            .saturating_sub(log.rows.len() + log.deletes.len())
    );
    drop(runs);
    db.cleanup().await;
}
