//! Acceptance tests of the initial snapshot (`docs/snapshot.md`) against a
//! real PostgreSQL 15 (`CDC_TEST_PG_URL`), through the real `cdc-engine`
//! binary (`CDC_ENGINE_BIN`) and its file sink.
//!
//! Every test has its own database, slot, publication and output files; the
//! coordination tables stay in the default schema `cdc` of that database.
//!
//! Correctness across files is judged the way a keyed consumer would see
//! it: the events of every instance's file are merged, sorted stably by
//! (`source.commit_lsn`, `source.ordinal`) — snapshot reads carry the
//! snapshot LSN, streamed changes later LSNs — and applied by key
//! (`r`/`c`/`u`: the row becomes `after`, `d`: removed, `t`: cleared). The
//! result must equal the table's `to_jsonb` rows exactly (serde_json with
//! `arbitrary_precision`: numbers compare as their text).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration_tests::multiset::{multiset, multiset_diff};
use integration_tests::pipelines::pipeline_yaml;
use integration_tests::replay::{apply, diff, merged, wait_converged, Change, Tail};
use integration_tests::snapshot_meta::{chunks, job, parse_lsn, wait_job_done, Chunk};
use integration_tests::{
    unique_suffix, wait_until, Engine, Mix, TempDir, TestDb, Workload, Writers, Written,
};
use serde_json::Value as Json;

/// How long a SIGTERMed engine may take to drain and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(45);
/// How long a snapshot job may take to reach `done`.
const JOB_TIMEOUT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------- config

/// A fresh slot name and publication name.
fn slot_and_publication() -> (String, String) {
    let s = unique_suffix();
    (format!("snap_{s}"), format!("snap_pub_{s}"))
}

/// What a test here starts from: a database of its own (named from
/// `name`), a fresh slot and publication, a temporary directory (`name`
/// with dashes) with the path of an output file in it, and the moment it
/// started.
struct Case {
    started: Instant,
    db: TestDb,
    slot: String,
    publication: String,
    dir: TempDir,
    out: PathBuf,
}

impl Case {
    async fn new(name: &str) -> Case {
        let started = Instant::now();
        let db = TestDb::create(name).await;
        let (slot, publication) = slot_and_publication();
        let dir = TempDir::new(&name.replace('_', "-"));
        let out = dir.join("out.jsonl");
        Case {
            started,
            db,
            slot,
            publication,
            dir,
            out,
        }
    }

    /// The pipeline config of this case: `tables` into its output file,
    /// `snapshot` as a YAML flow mapping.
    fn yaml(&self, tables: &[&str], snapshot: &str) -> String {
        self.yaml_into(&self.out, tables, snapshot)
    }

    /// [`Case::yaml`] into the file `out` (one of several instances').
    fn yaml_into(&self, out: &Path, tables: &[&str], snapshot: &str) -> String {
        pipeline_yaml(
            &self.db,
            tables,
            &self.slot,
            &self.publication,
            out,
            snapshot,
        )
    }

    /// Drops the database and reports that the test `name` passed.
    async fn passed(self, name: &str) {
        self.db.cleanup().await;
        println!(
            "{name}: passed in {:.1}s",
            self.started.elapsed().as_secs_f64()
        );
    }
}

// ---------------------------------------------------------------- events

/// Complete lines in a file (cheap: no parsing).
fn line_count(path: &Path) -> usize {
    match std::fs::File::open(path) {
        Ok(mut f) => {
            let mut n = 0;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let k = f.read(&mut buf).expect("read");
                if k == 0 {
                    return n;
                }
                n += buf[..k].iter().filter(|&&b| b == b'\n').count();
            }
        }
        Err(_) => 0,
    }
}

/// Polls the file `out` until its events, applied in the order of the
/// file, rebuild `public.t` as it is now; `false` after 60 s.
async fn rebuilds_t(db: &TestDb, out: &Path) -> bool {
    let want = db.to_jsonb_rows("public.t", "id").await;
    let mut tail = Tail::new(0, out.to_owned());
    wait_until(Duration::from_secs(60), async || {
        tail.poll();
        let events: Vec<&Change> = tail.events.iter().collect();
        diff(&apply(&events, "public.t"), &want).is_none()
    })
    .await
}

// ---------------------------------------------------------------- writers

/// `n` writers changing `public.t (id int primary key, v int, note text)`
/// in transactions of 1 to 3 changes: inserts of new ids (from
/// `first_new_id` on), upserts of old ones (re-inserting deleted keys),
/// updates and deletes; a pause of 3 ms after each.
async fn start_writers(db: &TestDb, n: usize, first_new_id: i32) -> Writers {
    let workload = Workload {
        new_ids_from: Some(first_new_id),
        mix: Mix {
            insert: 3,
            upsert: 2,
            update: 3,
            delete: 2,
        },
        pause: Duration::from_millis(3),
        ..Workload::new(n)
    };
    Writers::start(db.url(), workload).await
}

/// Creates `public.t (id int primary key, v int, note text)` with ids
/// `1..=n` (notes with tabs, newlines, quotes, backslashes, NULLs) and
/// analyzes it.
async fn create_t(db: &TestDb, n: i32) {
    db.exec(&format!(
        "CREATE TABLE public.t (id int PRIMARY KEY, v int, note text);
         INSERT INTO public.t
           SELECT g, g * 7 % 1000,
                  CASE WHEN g % 13 = 0 THEN NULL
                       WHEN g % 10 = 0 THEN E'tab\\there nl\\n \"q\" \\\\ ü ' || g
                       ELSE 'note ' || g END
           FROM generate_series(1, {n}) g;"
    ))
    .await;
    db.exec("ANALYZE public.t").await;
}

// ---------------------------------------------------------------- tests

/// 1. One instance, a concurrent writer from before the start until well
///    after the snapshot: the handoff from snapshot reads to the stream is
///    exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handoff_is_exact_under_concurrent_writes() {
    let case = Case::new("snap_handoff").await;
    let Case { db, slot, out, .. } = &case;
    const ROWS: i32 = 200_000;
    create_t(db, ROWS).await;
    let yaml = case.yaml(
        &["public.t"],
        "{ mode: initial, chunk_rows: 10000, workers: 3 }",
    );

    let writers = start_writers(db, 3, ROWS + 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_engine = writers.committed();
    let mut engine = Engine::start(&yaml);
    let job_done = wait_job_done(db, slot, &mut [&mut engine], JOB_TIMEOUT).await;
    let at_done = writers.committed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let Written {
        committed, failed, ..
    } = writers.finish().await;
    eprintln!(
        "handoff: writers committed {committed} transactions ({before_engine} before the engine \
         started, {at_done} when the job was done), {failed} failed; job {job_done:?}"
    );
    assert!(
        before_engine > 0,
        "no write committed before the engine started"
    );
    assert!(
        committed > at_done + 50,
        "too few writes after the snapshot ({at_done} -> {committed})"
    );

    let mut tails = vec![Tail::new(0, out.clone())];
    wait_converged(db, &mut tails, &[&engine]).await;
    engine.stop_clean(STOP_TIMEOUT, "handoff").await;
    tails[0].poll();
    let events = &tails[0].events;

    // (a) is wait_converged, checked again on the final file.
    let want = db.to_jsonb_rows("public.t", "id").await;
    let refs: Vec<&Tail> = tails.iter().collect();
    if let Some(d) = diff(&apply(&merged(&refs), "public.t"), &want) {
        panic!("final state differs from the table: {d}");
    }

    let snapshot_lsn = parse_lsn(
        job_done
            .snapshot_lsn
            .as_deref()
            .expect("the done job has a snapshot LSN"),
    );
    let reads: Vec<&Change> = events.iter().filter(|e| e.op == "r").collect();
    let stream: Vec<&Change> = events.iter().filter(|e| e.op != "r").collect();
    eprintln!(
        "handoff: {} snapshot reads, {} stream events, snapshot LSN {snapshot_lsn}",
        reads.len(),
        stream.len()
    );
    assert!(
        !stream.is_empty(),
        "no stream events: the writers' changes after the snapshot are missing"
    );

    // (b) No key read twice; every read at the snapshot LSN.
    let mut seen = HashSet::new();
    for e in &reads {
        assert!(
            seen.insert(e.after["id"].to_string()),
            "id {} read twice (line {})",
            e.after["id"],
            e.seq
        );
        assert_eq!(
            (e.commit_lsn, e.lsn),
            (snapshot_lsn - 1, snapshot_lsn - 1),
            "snapshot read not just below the snapshot LSN (line {}): {e:?}",
            e.seq
        );
    }
    let chunk_list = chunks(db, slot).await;
    let chunk_rows: i64 = chunk_list.iter().map(|c| c.rows.unwrap_or(-1)).sum();
    assert_eq!(
        reads.len() as i64,
        chunk_rows,
        "snapshot reads in the file vs rows of the done chunks"
    );
    assert_eq!(job_done.rows_done, chunk_rows, "job rows_done");
    // (c) Every stream event at or after the snapshot LSN, none twice. A
    // commit record that starts exactly at the snapshot LSN (the slot's
    // consistent point) is streamed: PostgreSQL skips only commits that
    // start before it.
    let at_snapshot_lsn: HashSet<u64> = stream
        .iter()
        .filter(|e| e.commit_lsn == snapshot_lsn)
        .map(|e| e.commit_lsn)
        .collect();
    eprintln!(
        "handoff: {} streamed commit(s) at exactly the snapshot LSN ({} events)",
        at_snapshot_lsn.len(),
        stream
            .iter()
            .filter(|e| e.commit_lsn == snapshot_lsn)
            .count()
    );
    let mut positions = HashSet::new();
    for e in &stream {
        assert!(
            e.commit_lsn >= snapshot_lsn,
            "stream event before the snapshot LSN {snapshot_lsn} (line {}): {e:?}",
            e.seq
        );
        assert!(
            positions.insert((e.commit_lsn, e.ordinal)),
            "stream event delivered twice (line {}): {e:?}",
            e.seq
        );
    }

    // (d) Snapshot markers.
    let count = |m: &str| reads.iter().filter(|e| e.snapshot == m).count();
    // `first` / `last` mark the first row of chunk 0 and the last row of
    // the open-ended last chunk; when such a chunk holds no row at the
    // snapshot (the concurrent writers emptied its pages), no read carries
    // the marker (docs/snapshot.md).
    let has_rows = |c: Option<&Chunk>| c.is_some_and(|c| c.rows != Some(0));
    let want_first = usize::from(has_rows(chunk_list.iter().min_by_key(|c| c.chunk_no)));
    let want_last = usize::from(has_rows(chunk_list.iter().max_by_key(|c| c.chunk_no)));
    assert_eq!(count("first"), want_first, "reads marked first");
    assert_eq!(count("last"), want_last, "reads marked last");
    assert_eq!(
        count("true"),
        reads.len() - want_first - want_last,
        "reads marked true (every other read)"
    );
    let bad: Vec<&&Change> = stream.iter().filter(|e| e.snapshot != "false").collect();
    assert!(
        bad.is_empty(),
        "{} stream events not marked snapshot=false, e.g. {:?}",
        bad.len(),
        bad.first()
    );
    // One instance: every read is written before the first stream event.
    let last_read_line = reads.iter().map(|e| e.seq).max().unwrap_or(0);
    let first_stream_line = stream.iter().map(|e| e.seq).min().unwrap_or(usize::MAX);
    assert!(
        last_read_line < first_stream_line,
        "snapshot reads (last at line {last_read_line}) and stream events (first at line \
         {first_stream_line}) interleave in the file"
    );

    // (e) Every chunk done, read once.
    assert!(
        chunk_list.len() > 1,
        "expected several chunks: {chunk_list:?}"
    );
    assert_eq!(chunk_list.len() as i32, job_done.chunks_total);
    for c in &chunk_list {
        assert!(
            c.status == "done" && c.reads == 1,
            "chunk not done exactly once: {c:?}"
        );
    }
    case.passed("handoff_is_exact_under_concurrent_writes")
        .await;
}

/// 2. Three instances with the same slot share one snapshot: every chunk
///    read once, by more than one instance; afterwards exactly one streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_share_one_snapshot() {
    let case = Case::new("snap_three").await;
    let Case { db, slot, dir, .. } = &case;
    const ROWS: i32 = 100_000;
    create_t(db, ROWS).await;
    let ids = ["inst-a", "inst-b", "inst-c"];
    let outs: Vec<PathBuf> = ids.iter().map(|i| dir.join(format!("{i}.jsonl"))).collect();
    let mut engines: Vec<Engine> = ids
        .iter()
        .zip(&outs)
        .map(|(id, out)| {
            Engine::start(&case.yaml_into(
                out,
                &["public.t"],
                &format!("{{ mode: initial, chunk_rows: 1000, workers: 2, instance_id: {id} }}"),
            ))
        })
        .collect();
    let mut tails = Tail::of_files(&outs);

    let job_done = {
        let mut refs: Vec<&mut Engine> = engines.iter_mut().collect();
        wait_job_done(db, slot, &mut refs, JOB_TIMEOUT).await
    };
    // Instances that share a slot may start together: none may fail.
    for (i, e) in engines.iter_mut().enumerate() {
        if let Some(code) = e.poll_exit() {
            panic!(
                "{} exited with code {code} while the instances shared the snapshot (every \
                 instance must keep running; those that do not stream wait as standbys)\n{}",
                ids[i],
                e.output_report()
            );
        }
    }
    // Every row read (the job is done only once every chunk is durable, so
    // this holds at once).
    let reads_of = |tails: &[Tail]| -> usize {
        tails
            .iter()
            .map(|t| t.events.iter().filter(|e| e.op == "r").count())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while reads_of(&tails) < ROWS as usize && Instant::now() < deadline {
        for t in tails.iter_mut() {
            t.poll();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every chunk read once; more than one instance read chunks.
    let chunk_list = chunks(db, slot).await;
    assert_eq!(chunk_list.len() as i32, job_done.chunks_total);
    assert!(
        chunk_list.len() >= 20,
        "expected many chunks: {}",
        chunk_list.len()
    );
    for c in &chunk_list {
        assert!(
            c.status == "done" && c.reads == 1,
            "chunk not done exactly once: {c:?}"
        );
    }
    let mut per_instance: BTreeMap<String, usize> = BTreeMap::new();
    for c in &chunk_list {
        *per_instance
            .entry(c.claimed_by.clone().unwrap_or_default())
            .or_default() += 1;
    }
    eprintln!("three instances: chunks read per instance {per_instance:?}; job {job_done:?}");
    assert!(
        per_instance.len() >= 2,
        "only one instance read chunks: {per_instance:?}"
    );
    for k in per_instance.keys() {
        assert!(ids.contains(&k.as_str()), "chunk claimed by unknown {k:?}");
    }

    // The union of the reads is the table, no key twice, each instance's
    // reads matching the chunks it marked done.
    let want = db.to_jsonb_rows("public.t", "id").await;
    let mut union: BTreeMap<String, &Json> = BTreeMap::new();
    for t in &tails {
        let mine: Vec<&Change> = t.events.iter().filter(|e| e.op == "r").collect();
        let rows_marked: i64 = chunk_list
            .iter()
            .filter(|c| c.claimed_by.as_deref() == Some(ids[t.file]))
            .map(|c| c.rows.unwrap_or(0))
            .sum();
        assert_eq!(
            mine.len() as i64,
            rows_marked,
            "{}: reads in its file vs rows of the chunks it marked done",
            ids[t.file]
        );
        for e in mine {
            let k = e.after["id"].to_string();
            if let Some(prev) = union.insert(k.clone(), &e.after) {
                panic!(
                    "id {k} read twice ({prev} and, in {}'s file line {}, {})",
                    ids[t.file], e.seq, e.after
                );
            }
        }
    }
    if let Some(d) = diff(&union, &want) {
        panic!("the union of the snapshot reads is not the table: {d}");
    }

    // A few changes: exactly one instance streams them, the coordinator
    // (it holds the slot's session); the others wait as standbys.
    db.exec("INSERT INTO public.t VALUES (100001, 1, 'new a'), (100002, 2, NULL)")
        .await;
    db.exec("UPDATE public.t SET v = -v, note = 'upd' WHERE id IN (1, 50000, 100000)")
        .await;
    db.exec("DELETE FROM public.t WHERE id IN (2, 99999)").await;
    db.exec("INSERT INTO public.t VALUES (2, 22, 'back')").await;
    const CHANGES: usize = 2 + 3 + 2 + 1;
    {
        let refs: Vec<&Engine> = engines.iter().collect();
        wait_converged(db, &mut tails, &refs).await;
    }
    // Every instance that did not stream must have tried the slot and
    // found it taken (a standby from then on): only then can the count of
    // streamers be trusted.
    let stood_by = wait_until(Duration::from_secs(60), async || {
        for t in tails.iter_mut() {
            t.poll();
        }
        tails.iter().zip(&engines).all(|(t, e)| {
            t.events.iter().any(|e| e.op != "r") || e.stderr_text().contains("standing by")
        })
    })
    .await;
    let streamed: Vec<usize> = tails
        .iter()
        .map(|t| t.events.iter().filter(|e| e.op != "r").count())
        .collect();
    let reports = || {
        engines
            .iter()
            .map(|e| e.output_report())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        stood_by,
        "stream events per instance {streamed:?}: an instance neither streamed nor stood by\n{}",
        reports()
    );
    assert_eq!(
        streamed.iter().filter(|&&n| n > 0).count(),
        1,
        "stream events per instance {streamed:?}: exactly one instance must stream\n{}",
        reports()
    );
    assert_eq!(
        streamed.iter().sum::<usize>(),
        CHANGES,
        "stream events per instance {streamed:?}: each change exactly once"
    );
    let streamer = streamed.iter().position(|&n| n > 0).unwrap();
    assert_eq!(
        job_done.coordinator.as_deref(),
        Some(ids[streamer]),
        "the streaming instance is not the coordinator"
    );
    for (i, e) in engines.iter_mut().enumerate() {
        assert!(
            e.is_running(),
            "{} exited (standbys must wait)\n{}",
            ids[i],
            e.output_report()
        );
    }
    for (i, e) in engines.iter_mut().enumerate() {
        e.stop_clean(STOP_TIMEOUT, ids[i]).await;
    }
    case.passed("three_instances_share_one_snapshot").await;
}

/// 3. Two instances; the one that is not the coordinator is killed while it
///    holds a chunk: the survivor claims it again after `claim_timeout`,
///    the job completes and the merged files equal the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_worker_chunk_is_claimed_again() {
    let case = Case::new("snap_worker_crash").await;
    let Case { db, slot, dir, .. } = &case;
    const ROWS: i32 = 300_000;
    create_t(db, ROWS).await;
    let ids = ["inst-a", "inst-b"];
    let outs: Vec<PathBuf> = ids.iter().map(|i| dir.join(format!("{i}.jsonl"))).collect();
    let yaml = |i: usize| {
        case.yaml_into(
            &outs[i],
            &["public.t"],
            &format!(
                "{{ mode: initial, chunk_rows: 10000, workers: 1, claim_timeout: 4s, \
                 heartbeat_interval: 1s, instance_id: {} }}",
                ids[i]
            ),
        )
    };

    let writers = start_writers(db, 2, ROWS + 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The second instance starts once the first coordinates the snapshot
    // (instances started at the same moment race on creating the
    // publication; three_instances_share_one_snapshot covers that start).
    let mut first = Engine::start(&yaml(0));
    let coordinating = {
        let deadline = Instant::now() + JOB_TIMEOUT;
        loop {
            let j = job(db, slot).await;
            if j.as_ref().is_some_and(|j| j.state == "running") {
                break true;
            }
            if Instant::now() >= deadline || !first.is_running() {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert!(
        coordinating,
        "the first instance did not start the snapshot\n{}",
        first.output_report()
    );
    let mut engines = [first, Engine::start(&yaml(1))];

    // Find the coordinator, then kill the other one while it holds a chunk.
    // Should the chunk complete in the moment between the check and the
    // kill, the killed instance is started again and killed again.
    let mut tries = 0;
    let (victim, orphaned) = loop {
        tries += 1;
        let deadline = Instant::now() + JOB_TIMEOUT;
        let victim = loop {
            if let Some(j) = job(db, slot).await {
                assert_ne!(
                    j.state, "done",
                    "the snapshot finished before the second instance held a chunk: make it slower"
                );
                if let Some(coord) = &j.coordinator {
                    let victim = if coord == ids[0] { 1 } else { 0 };
                    let holds = chunks(db, slot).await.iter().any(|c| {
                        c.status == "in_progress" && c.claimed_by.as_deref() == Some(ids[victim])
                    });
                    // Mid-work: it holds a chunk and has already delivered rows.
                    if holds && line_count(&outs[victim]) > 0 {
                        break victim;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no chunk in progress under the non-coordinator\n{}\n{}",
                engines[0].output_report(),
                engines[1].output_report()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        engines[victim].sigkill();
        let code = engines[victim].wait_exit(Duration::from_secs(10)).await;
        assert_eq!(code, 128 + 9, "not ended by SIGKILL");
        // Statements it had already sent have finished by now.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let orphaned: Vec<Chunk> = chunks(db, slot)
            .await
            .into_iter()
            .filter(|c| c.status == "in_progress" && c.claimed_by.as_deref() == Some(ids[victim]))
            .collect();
        if !orphaned.is_empty() {
            break (victim, orphaned);
        }
        assert!(
            tries < 3,
            "{} was killed {tries} times while holding a chunk, but each time the chunk was \
             done right after the check",
            ids[victim]
        );
        eprintln!(
            "worker crash: {}'s chunk was done just before the kill; starting it again",
            ids[victim]
        );
        engines[victim] = Engine::start(&yaml(victim));
    };
    let survivor = 1 - victim;
    eprintln!(
        "worker crash: killed {} holding chunks {:?}",
        ids[victim],
        orphaned.iter().map(|c| c.id).collect::<Vec<_>>()
    );

    let job_done = wait_job_done(db, slot, &mut [&mut engines[survivor]], JOB_TIMEOUT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let Written {
        committed, failed, ..
    } = writers.finish().await;
    eprintln!("worker crash: writers committed {committed}, {failed} failed; job {job_done:?}");

    let mut tails = Tail::of_files(&outs);
    wait_converged(db, &mut tails, &[&engines[survivor]]).await;

    let chunk_list = chunks(db, slot).await;
    for c in &chunk_list {
        assert_eq!(c.status, "done", "chunk not done: {c:?}");
    }
    for o in &orphaned {
        let c = chunk_list
            .iter()
            .find(|c| c.id == o.id)
            .expect("the orphaned chunk still exists");
        assert!(
            c.reads >= 2 && c.attempts >= 2 && c.claimed_by.as_deref() == Some(ids[survivor]),
            "the chunk {} held by the killed instance was not read again by the survivor: {c:?}",
            o.id
        );
    }
    // Rows of a reclaimed chunk that the killed instance had delivered
    // arrive again from the survivor, at the same positions (same snapshot).
    let survivor_reads: HashMap<u64, &Change> = tails[survivor]
        .events
        .iter()
        .filter(|e| e.op == "r")
        .map(|e| (e.ordinal, e))
        .collect();
    let mut twice = 0;
    for o in &orphaned {
        for e in tails[victim]
            .events
            .iter()
            .filter(|e| e.op == "r" && e.ordinal >> 32 == o.chunk_no as u64)
        {
            let again = survivor_reads.get(&e.ordinal).unwrap_or_else(|| {
                panic!(
                    "a row of reclaimed chunk {} delivered by the killed instance (line {}) was \
                     not read again at the same position: {e:?}",
                    o.id, e.seq
                )
            });
            assert_eq!(
                again.after, e.after,
                "chunk {}: the re-read row at ordinal {} differs",
                o.id, e.ordinal
            );
            twice += 1;
        }
    }
    let reads_per_instance: Vec<usize> = tails
        .iter()
        .map(|t| t.events.iter().filter(|e| e.op == "r").count())
        .collect();
    eprintln!(
        "worker crash: snapshot reads per file {reads_per_instance:?}; {twice} rows of the \
         reclaimed chunk(s) delivered twice"
    );
    assert!(
        tails[victim].events.iter().all(|e| e.op == "r"),
        "the killed instance streamed"
    );
    engines[survivor]
        .stop_clean(STOP_TIMEOUT, ids[survivor])
        .await;
    case.passed("a_killed_worker_chunk_is_claimed_again").await;
}

/// 4. One instance, killed when some but not all chunks are done, then
///    restarted: a new exported snapshot, the done chunks are never read
///    again, and the file converges to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_coordinator_resumes_under_a_new_snapshot() {
    let case = Case::new("snap_coord_crash").await;
    let Case { db, slot, out, .. } = &case;
    const ROWS: i32 = 200_000;
    create_t(db, ROWS).await;
    let yaml = case.yaml(
        &["public.t"],
        "{ mode: initial, chunk_rows: 2000, workers: 2, claim_timeout: 4s, \
         heartbeat_interval: 1s, instance_id: only-one }",
    );

    let writers = start_writers(db, 2, ROWS + 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut first = Engine::start(&yaml);
    let deadline = Instant::now() + JOB_TIMEOUT;
    let before = loop {
        if let Some(j) = job(db, slot).await {
            if j.state == "running" && j.chunks_done >= 3 {
                break j;
            }
            assert_ne!(j.state, "done", "the snapshot finished before the kill");
        }
        assert!(
            Instant::now() < deadline && first.is_running(),
            "the snapshot did not get going\n{}",
            first.output_report()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    first.kill9().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_kill = chunks(db, slot).await;
    let done_before: BTreeSet<i64> = at_kill
        .iter()
        .filter(|c| c.status == "done")
        .map(|c| c.id)
        .collect();
    eprintln!(
        "coordinator crash: killed with {} of {} chunks done; job {before:?}",
        done_before.len(),
        at_kill.len()
    );
    assert!(
        !done_before.is_empty() && done_before.len() < at_kill.len(),
        "some but not all chunks must be done at the kill"
    );
    for c in at_kill.iter().filter(|c| c.status == "done") {
        assert_eq!(
            c.reads, 1,
            "chunk read more than once before the kill: {c:?}"
        );
    }

    // Writes go on while it is down.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut second = Engine::start(&yaml);
    let job_done = wait_job_done(db, slot, &mut [&mut second], JOB_TIMEOUT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let Written {
        committed, failed, ..
    } = writers.finish().await;
    eprintln!(
        "coordinator crash: writers committed {committed}, {failed} failed; job {job_done:?}"
    );
    assert_ne!(
        job_done.snapshot_name, before.snapshot_name,
        "the restarted instance did not export a new snapshot"
    );
    assert_eq!(
        job_done.snapshot_lsn, before.snapshot_lsn,
        "the snapshot LSN (the slot's consistent point) changed"
    );

    let mut tails = vec![Tail::new(0, out.clone())];
    wait_converged(db, &mut tails, &[&second]).await;

    let chunk_list = chunks(db, slot).await;
    for c in &chunk_list {
        assert_eq!(c.status, "done", "chunk not done: {c:?}");
        if done_before.contains(&c.id) {
            assert_eq!(
                c.reads, 1,
                "a chunk done before the crash was read again: {c:?}"
            );
        }
    }
    let snapshot_lsn = parse_lsn(job_done.snapshot_lsn.as_deref().unwrap());
    for e in &tails[0].events {
        if e.op == "r" {
            assert_eq!(
                e.commit_lsn,
                snapshot_lsn - 1,
                "read not just below the snapshot LSN: {e:?}"
            );
        } else {
            assert!(
                e.commit_lsn > snapshot_lsn,
                "stream event before the snapshot LSN: {e:?}"
            );
        }
    }
    assert!(
        second.stderr_text().contains("new exported snapshot"),
        "the restarted instance did not log the resumption\n{}",
        second.output_report()
    );
    second
        .stop_clean(STOP_TIMEOUT, "restarted coordinator")
        .await;
    case.passed("a_killed_coordinator_resumes_under_a_new_snapshot")
        .await;
}

/// The tables of [`table_shapes`]: (YAML name, SQL name, `schema.table` as
/// events name it, expected chunk strategy with `chunking: key`).
const SHAPES: [(&str, &str, &str, &str); 8] = [
    ("public.nokey", "public.nokey", "public.nokey", "ctid"),
    ("public.intkey", "public.intkey", "public.intkey", "int_key"),
    (
        "public.compkey",
        "public.compkey",
        "public.compkey",
        "keyset",
    ),
    (
        "public.textkey",
        "public.textkey",
        "public.textkey",
        "keyset",
    ),
    (
        "public.uuidkey",
        "public.uuidkey",
        "public.uuidkey",
        "keyset",
    ),
    ("public.empty", "public.empty", "public.empty", "*"),
    (
        r#""Snap Schema"."Odd ""T""""#,
        r#""Snap Schema"."Odd ""T""""#,
        r#"Snap Schema.Odd "T""#,
        "int_key",
    ),
    (
        "public.toasted",
        "public.toasted",
        "public.toasted",
        "int_key",
    ),
];

/// Creates the tables of [`SHAPES`].
async fn create_shapes(db: &TestDb) {
    db.exec(
        r#"
        CREATE TABLE public.nokey (a int, b text);
        INSERT INTO public.nokey
          SELECT g % 500, CASE WHEN g % 7 = 0 THEN NULL ELSE 'b' || (g % 300) END
          FROM generate_series(1, 3000) g;
        CREATE TABLE public.intkey (id bigint PRIMARY KEY, v text);
        INSERT INTO public.intkey SELECT g * 37 - 50000, md5(g::text) FROM generate_series(1, 3000) g;
        CREATE TABLE public.compkey (a int, b text, v numeric, PRIMARY KEY (a, b));
        INSERT INTO public.compkey
          SELECT g % 11, 'b' || g || CASE WHEN g % 5 = 0 THEN ' ünï' ELSE '' END, g / 7.0
          FROM generate_series(1, 3000) g;
        CREATE TABLE public.textkey (k text PRIMARY KEY, v int);
        INSERT INTO public.textkey
          SELECT (ARRAY['Alpha', 'alpha', 'Émile', 'zeta', 'Zeta', ' space', 'quote''s',
                        E'back\\slash', E'tab\tx', 'ü', '', '"dq"'])[g % 12 + 1] || g, g
          FROM generate_series(1, 3000) g;
        CREATE TABLE public.uuidkey (u uuid PRIMARY KEY, v text);
        INSERT INTO public.uuidkey SELECT md5(g::text)::uuid, 'v' || g FROM generate_series(1, 3000) g;
        CREATE TABLE public.empty (id int PRIMARY KEY, v text);
        CREATE SCHEMA "Snap Schema";
        CREATE TABLE "Snap Schema"."Odd ""T""" ("Id" int PRIMARY KEY, "Weird ""Col""" text);
        INSERT INTO "Snap Schema"."Odd ""T""" SELECT g, 'w ' || g FROM generate_series(1, 1000) g;
        CREATE TABLE public.toasted (id int PRIMARY KEY, body text);
        ALTER TABLE public.toasted ALTER COLUMN body SET STORAGE EXTERNAL;
        INSERT INTO public.toasted
          VALUES (1, (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 163840) g)),
                 (2, 'small'), (3, NULL);
        "#,
    )
    .await;
    // The no-key table stays unanalyzed (planning falls back to a default
    // row density); the others have statistics.
    db.exec(
        r#"ANALYZE public.intkey, public.compkey, public.textkey, public.uuidkey, public.empty,
           "Snap Schema"."Odd ""T""", public.toasted"#,
    )
    .await;
    let toasted = db
        .query_text("SELECT length(body)::text FROM public.toasted WHERE id = 1")
        .await;
    assert_eq!(toasted.as_deref(), Some("5242880"));
}

/// 5. Every table shape is copied exactly, with `chunking: key` and with
///    the default (`auto`: CTID ranges).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_table_shape_is_copied_exactly() {
    let started = Instant::now();
    let dir = TempDir::new("snap-shapes");
    let yaml_names: Vec<&str> = SHAPES.iter().map(|s| s.0).collect();
    let mut runs = Vec::new();
    for chunking in ["key", "auto"] {
        let db = TestDb::create(&format!("snap_shapes_{chunking}")).await;
        create_shapes(&db).await;
        let (slot, publication) = slot_and_publication();
        let out = dir.join(format!("{chunking}.jsonl"));
        let snapshot = if chunking == "auto" {
            "{ mode: initial, chunk_rows: 500 }".to_owned()
        } else {
            format!("{{ mode: initial, chunk_rows: 500, chunking: {chunking} }}")
        };
        // public.nokey has no key: updates and deletes would fail once it is
        // published, which the preflight check blocks unless the identity is
        // chosen in the config (this test only inserts).
        let yaml = pipeline_yaml(&db, &yaml_names, &slot, &publication, &out, &snapshot).replacen(
            "  publication:",
            "  replica_identity: { public.nokey: default }\n  publication:",
            1,
        );
        let engine = Engine::start(&yaml);
        runs.push((chunking, db, slot, out, engine));
    }

    // Strategy mismatches are reported after every row has been checked.
    let mut wrong_strategy = Vec::new();
    for (chunking, db, slot, out, engine) in runs.iter_mut() {
        wait_job_done(db, slot, &mut [engine], JOB_TIMEOUT).await;
        let mut want_total = 0;
        let mut wants = Vec::new();
        for (_, sql_name, event_name, _) in SHAPES {
            let rows = db.query_json(&format!("SELECT * FROM {sql_name}")).await;
            want_total += rows.len();
            wants.push((event_name, multiset(&rows)));
        }
        let reached = {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let n = line_count(out);
                if n >= want_total || Instant::now() >= deadline {
                    break n;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let mut tail = Tail::new(0, out.clone());
        tail.poll();
        assert_eq!(
            reached, want_total,
            "chunking {chunking}: lines in the file vs rows in the tables"
        );
        for e in &tail.events {
            assert_eq!(e.op, "r", "chunking {chunking}: not a snapshot read: {e:?}");
        }
        for (event_name, want) in &wants {
            let got = multiset(
                tail.events
                    .iter()
                    .filter(|e| e.table == **event_name)
                    .map(|e| &e.after),
            );
            if let Some(d) = multiset_diff(&got, want) {
                panic!("chunking {chunking}, table {event_name}: {d}");
            }
        }
        let chunk_list = chunks(db, slot).await;
        let mut per_table: BTreeMap<String, Vec<&Chunk>> = BTreeMap::new();
        for c in &chunk_list {
            assert!(c.status == "done" && c.reads == 1, "chunk {c:?}");
            per_table.entry(c.table.clone()).or_default().push(c);
        }
        let summary: Vec<String> = per_table
            .iter()
            .map(|(t, cs)| format!("{t}: {} {}", cs.len(), cs[0].strategy))
            .collect();
        eprintln!("chunking {chunking}: chunks {summary:?}");
        for (_, _, event_name, key_strategy) in SHAPES {
            let cs = per_table
                .get(event_name)
                .unwrap_or_else(|| panic!("chunking {chunking}: no chunk of {event_name}"));
            let expected = if *chunking == "key" {
                key_strategy
            } else {
                "ctid"
            };
            if expected == "*" {
                continue;
            }
            for c in cs.iter().filter(|c| c.strategy != expected) {
                wrong_strategy.push(format!(
                    "chunking {chunking}, table {event_name}: chunk {} planned as {}, expected {expected}",
                    c.chunk_no, c.strategy
                ));
            }
        }
        for t in ["public.nokey", "public.intkey", "public.textkey"] {
            assert!(
                per_table[t].len() > 1,
                "chunking {chunking}: {t} should be split into several chunks"
            );
        }
    }
    for (chunking, db, _, _, mut engine) in runs {
        engine.stop_clean(STOP_TIMEOUT, chunking).await;
        db.cleanup().await;
    }
    wrong_strategy.truncate(30);
    assert!(
        wrong_strategy.is_empty(),
        "the rows are exact, but the chunks were not planned as configured \
         (docs/snapshot.md: `chunking: key` uses integer ranges of a single integer key, \
         keyset ranges otherwise, CTID ranges without a primary key):\n  {}",
        wrong_strategy.join("\n  ")
    );
    println!(
        "every_table_shape_is_copied_exactly: passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// 6. `snapshot_only` copies the tables and exits 0, leaving no slot and
///    no publication; a second run copies everything again. The first run
///    reads on the readers' own COPY connections (the default), the
///    second on their driver connections (`copy_connection: driver`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_only_copies_and_exits() {
    let case = Case::new("snap_only").await;
    let Case { db, slot, out, .. } = &case;
    db.exec(
        "CREATE TABLE public.a (id int PRIMARY KEY, v text, n numeric);
         INSERT INTO public.a SELECT g, 'a' || g, g * 1.5 FROM generate_series(1, 5000) g;
         CREATE TABLE public.b (x int, y text);
         INSERT INTO public.b SELECT g % 10, 'y' FROM generate_series(1, 700) g;",
    )
    .await;
    db.exec("ANALYZE public.a, public.b").await;
    let yaml = |connection: &str| {
        case.yaml(
            &["public.a", "public.b"],
            &format!(
                "{{ mode: snapshot_only, tables: [public.a, public.b], chunk_rows: 1000, \
                 copy_connection: {connection} }}"
            ),
        )
    };
    let mut want = Vec::new();
    for t in ["public.a", "public.b"] {
        want.push((
            t,
            multiset(&db.query_json(&format!("SELECT * FROM {t}")).await),
        ));
    }
    let per_run: usize = want.iter().map(|(_, w)| w.len()).sum();

    let mut tail = Tail::new(0, out.clone());
    for (run, connection) in [(1, "own"), (2, "driver")] {
        let mut engine = Engine::start(&yaml(connection));
        let code = engine.wait_exit(Duration::from_secs(60)).await;
        assert_eq!(
            code,
            0,
            "run {run}: snapshot_only did not exit 0\n{}",
            engine.output_report()
        );
        let before = tail.events.len();
        tail.poll();
        let this_run = &tail.events[before..];
        assert_eq!(
            tail.events.len(),
            per_run * run,
            "run {run}: the file must hold {run} full set(s) of rows\n{}",
            engine.output_report()
        );
        for (t, w) in &want {
            let got = multiset(this_run.iter().filter(|e| e.table == *t).map(|e| &e.after));
            if let Some(d) = multiset_diff(&got, w) {
                panic!("run {run}, {t}: {d}");
            }
        }
        for e in this_run {
            assert_eq!(e.op, "r", "run {run}: not a snapshot read: {e:?}");
        }
        assert_eq!(
            db.slot_names().await,
            Vec::<String>::new(),
            "run {run}: snapshot_only created a replication slot"
        );
        assert_eq!(
            db.query_text("SELECT count(*)::text FROM pg_publication")
                .await
                .as_deref(),
            Some("0"),
            "run {run}: snapshot_only created a publication"
        );
        let j = job(db, slot).await.expect("the job row");
        assert_eq!(j.state, "done", "run {run}: job {j:?}");
    }
    case.passed("snapshot_only_copies_and_exits").await;
}

/// A table whose middle pages hold no rows (deleted and vacuumed): many
/// CTID chunks are empty. An empty chunk that ends while the source's next
/// batch is still empty must not wait for that batch (it is never handed
/// out): the snapshot completes, streaming starts, and the rows read plus
/// the streamed insert equal the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn empty_chunks_do_not_stall_the_handoff() {
    let case = Case::new("snap_holes").await;
    let Case { db, slot, out, .. } = &case;
    db.exec(
        "CREATE TABLE public.t (id int PRIMARY KEY, pad text);
         INSERT INTO public.t SELECT g, repeat('x', 200) FROM generate_series(1, 4000) g;
         DELETE FROM public.t WHERE id BETWEEN 300 AND 3700;",
    )
    .await;
    // VACUUM cannot run in a transaction block: one statement each.
    db.exec("VACUUM public.t").await;
    db.exec("ANALYZE public.t").await;
    let yaml = case.yaml(
        &["public.t"],
        "{ mode: initial, chunk_rows: 20, workers: 2 }",
    );
    // One event per batch: a chunk's last row ends a batch, so an empty
    // chunk whose end comes next (the readers race; the unit test in
    // load/emitter.rs pins the case down) ends while the batch is empty.
    let yaml = format!("{yaml}pipeline: {{ max_batch_events: 1 }}\n");
    let mut engine = Engine::start(&yaml);
    let j = wait_job_done(db, slot, &mut [&mut engine], JOB_TIMEOUT).await;
    let empty = chunks(db, slot)
        .await
        .iter()
        .filter(|c| c.rows == Some(0))
        .count();
    assert!(
        empty >= 3,
        "only {empty} empty chunks: the test needs holes ({j:?})"
    );
    db.exec("INSERT INTO public.t VALUES (5000, 'after')").await;
    assert!(
        rebuilds_t(db, out).await,
        "the file does not rebuild the table\n{}",
        engine.output_report()
    );
    engine
        .stop_clean(STOP_TIMEOUT, "empty_chunks_do_not_stall_the_handoff")
        .await;
    case.passed("empty_chunks_do_not_stall_the_handoff").await;
}

/// The snapshot is done and the engine stopped; then the slot is dropped
/// (as after an invalidation) and rows change while no slot exists. The
/// next start must not stream from the new slot as if nothing happened: it
/// takes a new snapshot, so the file rebuilds the table, gap included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_slot_gets_a_new_snapshot() {
    let case = Case::new("snap_reslot").await;
    let Case { db, slot, out, .. } = &case;
    create_t(db, 300).await;
    let yaml = case.yaml(
        &["public.t"],
        "{ mode: initial, chunk_rows: 100, workers: 2 }",
    );
    let mut engine = Engine::start(&yaml);
    wait_job_done(db, slot, &mut [&mut engine], JOB_TIMEOUT).await;
    engine.stop_clean(STOP_TIMEOUT, "first run").await;

    db.exec(&format!(
        "SELECT pg_drop_replication_slot({})",
        integration_tests::quote_literal(slot)
    ))
    .await;
    db.exec(
        "UPDATE public.t SET v = -v WHERE id <= 50;
         INSERT INTO public.t VALUES (1000, 1, 'while no slot existed');",
    )
    .await;

    let mut engine = Engine::start(&yaml);
    assert!(
        rebuilds_t(db, out).await,
        "the file does not rebuild the table after the slot was recreated\n{}",
        engine.output_report()
    );
    assert!(
        engine
            .stderr_text()
            .contains("taking a new snapshot under a new slot"),
        "{}",
        engine.output_report()
    );
    wait_job_done(db, slot, &mut [&mut engine], JOB_TIMEOUT).await;
    engine.stop_clean(STOP_TIMEOUT, "second run").await;
    case.passed("a_dropped_slot_gets_a_new_snapshot").await;
}

/// `VmRSS` of a process, in KiB.
fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// 7. Memory while snapshotting a million narrow rows with `snapshot_only`
///    and the file sink: the peak RSS is reported (and sanity-bounded).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_while_snapshotting_a_million_rows() {
    let case = Case::new("snap_memory").await;
    let Case { db, slot, out, .. } = &case;
    const ROWS: usize = 1_000_000;
    db.exec(&format!(
        "CREATE TABLE public.m (id int PRIMARY KEY, v int);
         INSERT INTO public.m SELECT g, g % 1000 FROM generate_series(1, {ROWS}) g;"
    ))
    .await;
    db.exec("ANALYZE public.m").await;
    let yaml = case.yaml(&["public.m"], "{ mode: snapshot_only, tables: [public.m] }");
    let load_started = Instant::now();
    let mut engine = Engine::start(&yaml);
    let pid = engine.pid();
    let mut peak_kib = 0u64;
    let mut samples = 0usize;
    let deadline = Instant::now() + Duration::from_secs(150);
    let code = loop {
        if let Some(kib) = vm_rss_kib(pid) {
            peak_kib = peak_kib.max(kib);
            samples += 1;
        }
        if let Some(code) = engine.poll_exit() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "the snapshot of {ROWS} rows did not finish within 150s\n{}",
            engine.output_report()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = load_started.elapsed();
    assert_eq!(
        code,
        0,
        "snapshot_only did not exit 0\n{}",
        engine.output_report()
    );

    // Complete: every id exactly once (found by text, not parsed: a million
    // lines).
    let text = std::fs::read_to_string(out).expect("the output file");
    let mut seen = vec![false; ROWS + 1];
    let mut lines = 0;
    for l in text.lines() {
        lines += 1;
        let at = l
            .find("\"after\":{\"id\":")
            .unwrap_or_else(|| panic!("line {lines}: {l}"))
            + 14;
        let end = at + l[at..].find(',').expect("id ends");
        let id: usize = l[at..end].parse().expect("integer id");
        assert!(
            (1..=ROWS).contains(&id) && !seen[id],
            "id {id} unexpected or twice"
        );
        seen[id] = true;
    }
    assert_eq!(lines, ROWS, "lines in the file");
    assert!(seen[1..].iter().all(|&s| s), "some id missing");
    let first: Json = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["op"], "r");
    drop(text);
    let j = job(db, slot).await.expect("the job row");
    assert_eq!((j.state.as_str(), j.rows_done), ("done", ROWS as i64));

    let peak_mib = peak_kib as f64 / 1024.0;
    println!(
        "peak RSS while snapshotting 1M rows: {peak_mib:.0} MiB ({samples} samples over {:.1}s)",
        took.as_secs_f64()
    );
    assert!(samples >= 3, "too few RSS samples: {samples}");
    assert!(
        peak_mib < 512.0,
        "peak RSS {peak_mib:.0} MiB is above the 512 MiB sanity bound"
    );
    case.passed("memory_while_snapshotting_a_million_rows")
        .await;
}

/// Generated columns render the same in the snapshot and in the stream:
/// left out where the stream leaves them out (before PostgreSQL 18, and
/// with its default `publish_generated_columns = none`), and with their
/// values in both when the publication publishes them (PostgreSQL 18,
/// `publish_generated_columns = stored`). Virtual generated columns (18)
/// are never published.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_columns_render_the_same_in_snapshot_and_stream() {
    let case = Case::new("snap_gen").await;
    let Case {
        db,
        publication,
        out,
        ..
    } = &case;
    let published = db.server_version_num().await >= 180_000;
    let virtual_column = if published {
        ", w int GENERATED ALWAYS AS (a * 3) VIRTUAL"
    } else {
        ""
    };
    db.exec(&format!(
        "CREATE TABLE public.g (id int PRIMARY KEY, a int, \
         s int GENERATED ALWAYS AS (a * 2) STORED{virtual_column});
         INSERT INTO public.g (id, a) SELECT x, x FROM generate_series(1, 3) AS x;"
    ))
    .await;
    if published {
        db.exec(&format!(
            "CREATE PUBLICATION {publication} FOR TABLE public.g \
             WITH (publish_generated_columns = stored)"
        ))
        .await;
    }
    let mut engine = Engine::start(&case.yaml(&["public.g"], "{ mode: initial }"));
    let mut tail = Tail::new(0, out.clone());
    let copied = wait_until(Duration::from_secs(60), async || {
        tail.poll();
        tail.events.iter().filter(|e| e.op == "r").count() == 3
    })
    .await;
    assert!(copied, "no snapshot\n{}", engine.output_report());
    db.exec("INSERT INTO public.g (id, a) VALUES (4, 4); UPDATE public.g SET a = 10 WHERE id = 1")
        .await;
    let streamed = wait_until(Duration::from_secs(60), async || {
        tail.poll();
        tail.events.iter().any(|e| e.op == "u")
    })
    .await;
    assert!(streamed, "no stream\n{}", engine.output_report());
    engine.stop_clean(STOP_TIMEOUT, "generated columns").await;

    let want_keys: &[&str] = if published {
        &["a", "id", "s"]
    } else {
        &["a", "id"]
    };
    for e in &tail.events {
        let after = e.after.as_object().expect("after is an object");
        let keys: Vec<&str> = after.keys().map(String::as_str).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, want_keys, "{} event: {after:?}", e.op);
        if published {
            assert_eq!(
                after["s"].as_i64(),
                after["a"].as_i64().map(|a| a * 2),
                "{after:?}"
            );
        }
    }
    case.passed("generated_columns_render_the_same_in_snapshot_and_stream")
        .await;
}
