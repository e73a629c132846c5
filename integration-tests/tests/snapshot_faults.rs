//! Faults under a running snapshot, against a real PostgreSQL 15 and the
//! engine's test build: each test brings the snapshot to a precise state
//! with a failpoint (`FAILPOINTS`, see cdc-postgres's `failpoint` module),
//! changes the world under it, and checks that the file sinks' merged
//! output, applied by key, equals the table.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::Connection;

use integration_tests::http::{free_port, status};
use integration_tests::pipelines::pipeline_yaml;
use integration_tests::replay::{wait_converged, Tail};
use integration_tests::snapshot_meta::{chunks, job, job_reaches};
use integration_tests::{quote_literal, unique_suffix, wait_until, Engine, TempDir, TestDb};

const TIMEOUT: Duration = Duration::from_secs(90);

/// A table of `rows` rows of `public.t (id int primary key, v text)`.
async fn table(db: &TestDb, rows: u32) {
    db.exec(&format!(
        "CREATE TABLE public.t (id int PRIMARY KEY, v text);\
         INSERT INTO public.t SELECT g, 'v' || g FROM generate_series(1, {rows}) g;\
         ANALYZE public.t"
    ))
    .await;
}

/// A test's database (named from `name`), a fresh slot and publication,
/// and a temporary directory (`name` with dashes) for the output files.
struct Case {
    db: TestDb,
    slot: String,
    publication: String,
    dir: TempDir,
}

impl Case {
    async fn new(name: &str) -> Case {
        let db = TestDb::create(name).await;
        let s = unique_suffix();
        Case {
            db,
            slot: format!("sf_{s}"),
            publication: format!("sfp_{s}"),
            dir: TempDir::new(&name.replace('_', "-")),
        }
    }

    /// The pipeline config: `public.t` into the file `out`, `snapshot` as
    /// a YAML flow mapping.
    fn yaml(&self, out: &Path, snapshot: &str) -> String {
        pipeline_yaml(
            &self.db,
            &["public.t"],
            &self.slot,
            &self.publication,
            out,
            snapshot,
        )
    }

    /// Whether the job reaches `state` within [`TIMEOUT`].
    async fn job_reaches(&self, state: &str) -> bool {
        job_reaches(&self.db, &self.slot, state, TIMEOUT).await
    }

    /// Checks that the files `outs` of `engines` converge to the table,
    /// then drops the engines and the database.
    async fn finish(self, outs: &[PathBuf], engines: Vec<Engine>) {
        let mut tails = Tail::of_files(outs);
        let refs: Vec<&Engine> = engines.iter().collect();
        wait_converged(&self.db, &mut tails, &refs).await;
        drop(engines);
        self.db.cleanup().await;
    }
}

/// Chunks of `slot`'s job marked done (0 before there is a job).
async fn chunks_done(db: &TestDb, slot: &str) -> usize {
    if job(db, slot).await.is_none() {
        return 0;
    }
    chunks(db, slot)
        .await
        .iter()
        .filter(|c| c.status == "done")
        .count()
}

/// A running job with exactly three chunks done loses its slot (dropped by
/// an operator, and in the second variant created again by hand later);
/// rows of the done chunks change meanwhile. On restart the job must start
/// over against the slot as it is now: rows of done chunks must not stay
/// as they were read under the old slot's snapshot. (Before the fix the
/// done chunks were kept, and their rows stayed stale.)
async fn slot_lost_under_a_running_job(recreate: bool) {
    let case = Case::new(if recreate {
        "snapfault_recreated"
    } else {
        "snapfault_dropped"
    })
    .await;
    let Case { db, slot, dir, .. } = &case;
    table(db, 20_000).await;
    let (out1, out2) = (dir.join("first.jsonl"), dir.join("second.jsonl"));
    let snapshot = "{ mode: initial, chunking: key, chunk_rows: 2000, workers: 1 }";
    let yaml = |out| case.yaml(out, snapshot);

    // The first engine stops for good right after its third chunk is done.
    let mut first = Engine::start_with(
        &yaml(&out1),
        &["run"],
        &[("FAILPOINTS", "snapshot::after_mark_done=2*off->return")],
    );
    let three = wait_until(TIMEOUT, async || chunks_done(db, slot).await == 3).await;
    assert!(three, "{}", first.output_report());
    first.sigkill();
    first.wait_exit(TIMEOUT).await;
    let j = job(db, slot).await.expect("a job");
    assert_eq!(j.state, "running", "{j:?}");
    assert_eq!(chunks_done(db, slot).await, 3);

    // The operator drops the slot; the rows change.
    let quoted_slot = quote_literal(slot);
    let inactive = wait_until(TIMEOUT, async || !db.slot_active(slot).await).await;
    assert!(inactive);
    db.exec(&format!("SELECT pg_drop_replication_slot({quoted_slot})"))
        .await;
    // While no slot exists nothing records a change: rows updated or
    // inserted now reach the sinks only through a new snapshot. (A row
    // deleted now cannot be told to the sinks at all: see docs/snapshot.md.)
    db.exec("UPDATE public.t SET v = 'changed ' || id WHERE id % 3 = 0; INSERT INTO public.t VALUES (30001, 'new')")
        .await;
    if recreate {
        db.exec(&format!(
            "SELECT pg_create_logical_replication_slot({quoted_slot}, 'pgoutput')"
        ))
        .await;
        db.exec("UPDATE public.t SET v = 'again ' || id WHERE id % 5 = 0; DELETE FROM public.t WHERE id % 7 = 0")
            .await;
    }

    let second = Engine::start(&yaml(&out2));
    assert!(case.job_reaches("done").await, "{}", second.output_report());
    db.exec(
        "UPDATE public.t SET v = 'streamed' WHERE id = 1; DELETE FROM public.t WHERE id % 11 = 0",
    )
    .await;
    case.finish(&[out1, out2], vec![first, second]).await;
}

#[tokio::test]
async fn running_job_whose_slot_was_dropped_starts_over() {
    slot_lost_under_a_running_job(false).await;
}

#[tokio::test]
async fn running_job_whose_slot_was_recreated_starts_over() {
    slot_lost_under_a_running_job(true).await;
}

/// Instance A's read of a chunk fails after it handed over the chunk's
/// first rows; before A claims again, instance B reads that chunk. A must
/// still finish its part of the snapshot (it used to wait for the end of
/// its failed read for ever), and the merged output must equal the table.
#[tokio::test]
async fn a_read_that_fails_midway_does_not_leave_its_instance_waiting() {
    let case = Case::new("snapfault_failed_read").await;
    let Case { db, dir, .. } = &case;
    table(db, 40_000).await;
    let (out_a, out_b) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
    let snapshot = "{ mode: initial, chunking: key, chunk_rows: 2000, workers: 1 }";
    let yaml = |out| case.yaml(out, snapshot);

    // B coordinates and reads slowly: every claim waits 300 ms.
    let b = Engine::start_with(
        &yaml(&out_b),
        &["run"],
        &[("FAILPOINTS", "snapshot::reader_before_claim=return(300)")],
    );
    assert!(case.job_reaches("running").await, "{}", b.output_report());
    // A's first read fails after its first rows; its next claim waits 10 s,
    // long enough for B to read that chunk and every other one.
    let a = Engine::start_with(
        &yaml(&out_a),
        &["run"],
        &[(
            "FAILPOINTS",
            "snapshot::reader_after_first_rows=1*return;snapshot::reader_before_claim=1*off->1*return(10000)",
        )],
    );
    let failed = a
        .logs_within("failpoint snapshot::reader_after_first_rows", TIMEOUT)
        .await;
    assert!(failed, "{}", a.output_report());
    let done = case.job_reaches("done").await;
    assert!(done, "{}\n{}", b.output_report(), a.output_report());
    let finished = wait_until(TIMEOUT, async || {
        a.stderr_text()
            .contains("snapshot done; starting to stream")
    })
    .await;
    assert!(
        finished,
        "A never finished its part of the snapshot\n{}",
        a.output_report()
    );
    db.exec("UPDATE public.t SET v = 'streamed' WHERE id % 1000 = 1")
        .await;
    case.finish(&[out_a, out_b], vec![a, b]).await;
}

/// Where [`PausedSnapshot`] pauses the engine for 3 s.
#[derive(Clone, Copy)]
enum Pause {
    /// The source, right after its third chunk is marked done.
    AfterThirdChunkDone,
    /// Every reader, before each claim after the first three.
    BeforeLaterClaims,
}

/// What [`PausedSnapshot`] snapshots, and how.
struct Setup {
    /// Creates and fills `public.t` (an `id` column identifies rows).
    table: &'static str,
    /// The `snapshot:` section, a YAML flow mapping.
    snapshot: &'static str,
}

/// `public.t (id int primary key, v text)` with 20,000 rows, in 10 chunks
/// of its integer key, read by 2 workers.
const KEYED: Setup = Setup {
    table: "CREATE TABLE public.t (id int PRIMARY KEY, v text);\
            INSERT INTO public.t SELECT g, 'v' || g FROM generate_series(1, 20000) g;\
            ANALYZE public.t",
    snapshot: "{ mode: initial, chunking: key, chunk_rows: 2000, workers: 2 }",
};

/// One engine snapshotting `public.t` (by default [`KEYED`]) into a file,
/// paused by a failpoint, with its HTTP endpoint on `port`;
/// [`PausedSnapshot::start`] returns during the pause.
struct PausedSnapshot {
    case: Case,
    out: PathBuf,
    engine: Engine,
    port: u16,
}

impl PausedSnapshot {
    async fn start(prefix: &str, pause: Pause) -> PausedSnapshot {
        Self::start_with(prefix, pause, KEYED).await
    }

    async fn start_with(prefix: &str, pause: Pause, setup: Setup) -> PausedSnapshot {
        let case = Case::new(prefix).await;
        let Case { db, slot, dir, .. } = &case;
        db.exec(setup.table).await;
        let out = dir.join("out.jsonl");
        let port = free_port();
        let yaml = format!(
            "{}metrics: {{ listen: '127.0.0.1:{port}' }}\n",
            case.yaml(&out, setup.snapshot)
        );
        let failpoints = match pause {
            Pause::AfterThirdChunkDone => "snapshot::after_mark_done=2*off->1*return(3000)",
            Pause::BeforeLaterClaims => "snapshot::reader_before_claim=3*off->return(3000)",
        };
        let engine = Engine::start_with(&yaml, &["run"], &[("FAILPOINTS", failpoints)]);
        let paused = wait_until(TIMEOUT, async || match pause {
            Pause::AfterThirdChunkDone => chunks_done(db, slot).await >= 3,
            Pause::BeforeLaterClaims => engine
                .stderr_text()
                .contains("failpoint=\"snapshot::reader_before_claim\""),
        })
        .await;
        assert!(paused, "{}", engine.output_report());
        PausedSnapshot {
            case,
            out,
            engine,
            port,
        }
    }

    /// Waits for the job to be done, changes some rows, and checks that
    /// the output converges to the table.
    async fn converge(&self) {
        let db = &self.case.db;
        let done = self.case.job_reaches("done").await;
        assert!(done, "{}", self.engine.output_report());
        db.exec("UPDATE public.t SET v = 'streamed' WHERE id % 100 IN (7, 8)")
            .await;
        let mut tails = [Tail::new(0, self.out.clone())];
        wait_converged(db, &mut tails, &[&self.engine]).await;
    }

    /// [`converge`](Self::converge), then stops the engine and drops the
    /// database.
    async fn finish_and_converge(self) {
        self.converge().await;
        self.stop().await;
    }

    /// Stops the engine and drops the database.
    async fn stop(self) {
        let PausedSnapshot { case, engine, .. } = self;
        drop(engine);
        case.db.cleanup().await;
    }

    /// Terminates the session that exported the snapshot: the walsender
    /// that created the slot (idle since; it holds the slot no longer,
    /// only the snapshot).
    async fn terminate_export(&self) {
        let terminated = self
            .case
            .db
            .query_text(
                "SELECT count(pg_terminate_backend(pid))::text FROM pg_stat_activity \
                 WHERE backend_type = 'walsender' AND datname = current_database()",
            )
            .await;
        assert_eq!(
            terminated.as_deref(),
            Some("1"),
            "{}",
            self.engine.output_report()
        );
    }
}

/// Every ordinary connection the engine holds during a snapshot (metadata,
/// election, readers, heartbeat) is terminated by an administrator while
/// chunks are being completed. The engine connects again and finishes;
/// the merged output equals the table. (It used to exit with `snapshot
/// metadata (cdc): ...: terminating connection due to administrator
/// command`.)
#[tokio::test]
async fn terminated_connections_during_the_snapshot_are_replaced() {
    let run = PausedSnapshot::start("snapfault_terminated", Pause::AfterThirdChunkDone).await;
    let terminated = run
        .case
        .db
        .query_text(
            "SELECT count(pg_terminate_backend(pid))::text FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name LIKE 'cdc-engine/%' \
             AND backend_type = 'client backend'",
        )
        .await
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(terminated >= 2, "terminated {terminated} connections");
    run.finish_and_converge().await;
}

/// The session holding the exported snapshot (here the replication
/// connection that created the slot) is terminated while its instance
/// keeps the coordinator lock. Readers can no longer import the snapshot;
/// the coordinator must notice, export a new one, and the snapshot must
/// finish and converge. (Readers used to retry the dead snapshot for ever.)
#[tokio::test]
async fn a_lost_export_is_replaced_while_the_coordinator_keeps_its_lock() {
    // The readers stop before their later claims: those chunks are read
    // after the export is gone.
    let run = PausedSnapshot::start("snapfault_export", Pause::BeforeLaterClaims).await;
    run.terminate_export().await;
    run.case
        .db
        .exec("UPDATE public.t SET v = 'between' WHERE id % 10 = 3")
        .await;
    let replaced = wait_until(TIMEOUT, async || {
        run.engine
            .stderr_text()
            .contains("the exported snapshot is gone")
    })
    .await;
    assert!(replaced, "{}", run.engine.output_report());
    run.finish_and_converge().await;
}

/// The coordinator's lock session ends (terminated; `idle_session_timeout`
/// or a dropped connection do the same) and, before it can take the lock
/// again, someone else holds it. The old coordinator must notice and step
/// down (it used to go on acting as coordinator), another instance takes
/// over, and the snapshot finishes and converges.
#[tokio::test]
async fn a_coordinator_that_lost_its_lock_steps_down() {
    let case = Case::new("snapfault_lock").await;
    let Case { db, slot, dir, .. } = &case;
    table(db, 20_000).await;
    let (out_a, out_b) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
    let snapshot = "{ mode: initial, chunking: key, chunk_rows: 2000, workers: 1 }";
    let yaml = |out| case.yaml(out, snapshot);
    // Both read slowly (every claim after the first two waits 2.5 s), so
    // the snapshot is still running when the lock goes.
    let slow = [(
        "FAILPOINTS",
        "snapshot::reader_before_claim=2*off->return(2500)",
    )];
    let a = Engine::start_with(&yaml(&out_a), &["run"], &slow);
    assert!(case.job_reaches("running").await, "{}", a.output_report());
    let b = Engine::start_with(&yaml(&out_b), &["run"], &slow);
    let joined = b.logs_within("joining the snapshot", TIMEOUT).await;
    assert!(joined, "{}", b.output_report());

    // A's lock session ends, and the test holds the lock for a moment so
    // that A cannot simply take it again.
    let key = format!("cdc-snapshot:{slot}");
    let mut holder = sqlx::PgConnection::connect(db.url())
        .await
        .expect("connect");
    let terminated: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&mut holder)
    .await
    .expect("terminate the lock session");
    assert_eq!(terminated, 1, "{}", a.output_report());
    let took: bool = {
        let mut got = false;
        for _ in 0..100 {
            got = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(&key)
                .fetch_one(&mut holder)
                .await
                .expect("lock");
            if got {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        got
    };
    assert!(took, "the test could not take the freed lock");
    let stepped_down = a.logs_within("lost the coordinator lock", TIMEOUT).await;
    assert!(stepped_down, "{}", a.output_report());
    let _: bool = sqlx::query_scalar("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(&key)
        .fetch_one(&mut holder)
        .await
        .expect("unlock");
    let _ = holder.close().await;

    let done = case.job_reaches("done").await;
    assert!(done, "{}\n{}", a.output_report(), b.output_report());
    db.exec("UPDATE public.t SET v = 'streamed' WHERE id % 100 = 5")
        .await;
    case.finish(&[out_a, out_b], vec![a, b]).await;
}

/// Instance B has read rows of a chunk and its sink is about to write
/// them when the whole process stops (SIGSTOP: a long GC pause, a frozen
/// VM) for longer than `claim_timeout`. A takes the chunk over, the job
/// finishes, streaming starts and every row changes. When B resumes, the
/// rows it read under its lost claim must not reach its sink: written
/// after the newer streamed changes, they would leave a keyed consumer
/// (Kafka compaction, a file replayed in arrival order) with stale rows.
/// (B used to write them.)
#[tokio::test]
async fn rows_read_under_a_claim_lost_while_paused_never_reach_the_sink() {
    let case = Case::new("snapfault_paused_holder").await;
    let Case { db, dir, .. } = &case;
    table(db, 20_000).await;
    let (out_a, out_b) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
    let snapshot = "{ mode: initial, chunking: key, chunk_rows: 2000, workers: 1, \
                    claim_timeout: 3s, heartbeat_interval: 500ms }";
    let yaml = |out| case.yaml(out, snapshot);

    // A coordinates and reads slowly, so that B gets chunks too.
    let a = Engine::start_with(
        &yaml(&out_a),
        &["run"],
        &[("FAILPOINTS", "snapshot::reader_before_claim=return(700)")],
    );
    assert!(case.job_reaches("running").await, "{}", a.output_report());
    // B's sink waits before its first write of snapshot rows; the test
    // freezes the whole process there.
    let mut b = Engine::start_with(
        &yaml(&out_b),
        &["run"],
        &[("FAILPOINTS", "sink::before_write_reads=1*return(1000)")],
    );
    let at_write = b
        .logs_within("failpoint=\"sink::before_write_reads\"", TIMEOUT)
        .await;
    assert!(at_write, "{}", b.output_report());
    b.sigstop();

    // A takes B's chunks over and finishes; then every row changes, and A
    // streams that.
    assert!(case.job_reaches("done").await, "{}", a.output_report());
    db.exec("UPDATE public.t SET v = 'streamed ' || id; DELETE FROM public.t WHERE id % 10 = 0")
        .await;
    let mut tail_a = Tail::new(0, out_a.clone());
    let streamed = wait_until(TIMEOUT, async || {
        tail_a.poll();
        tail_a.events.iter().filter(|e| e.op == "d").count() == 2_000
    })
    .await;
    assert!(streamed, "{}", a.output_report());

    // B resumes: it must drop what it read under the lost claim.
    b.sigcont();
    let mut tail_b = Tail::new(1, out_b.clone());
    let decided = wait_until(TIMEOUT, async || {
        tail_b.poll();
        tail_b.events.iter().any(|e| e.op == "r")
            || b.stderr_text().contains("before the sink wrote them")
    })
    .await;
    assert!(decided, "{}", b.output_report());
    let stale: Vec<_> = tail_b.events.iter().filter(|e| e.op == "r").collect();
    assert!(
        stale.is_empty(),
        "B wrote {} rows read under a claim it had lost, after the newer streamed changes \
         (first: {:?})\n{}",
        stale.len(),
        stale.first(),
        b.output_report()
    );
    case.finish(&[out_a, out_b], vec![a, b]).await;
}

/// The warning a reader logs when it finds a table rewritten under the
/// snapshot.
const REWRITTEN: &str = "was rewritten while the snapshot was running";

/// A snapshot that found `public.t` rewritten under it: the warning was
/// logged, `/status` counts the re-read, and the output converges.
async fn reread_and_converge(run: PausedSnapshot) {
    run.converge().await;
    assert!(
        run.engine.stderr_text().contains(REWRITTEN),
        "no rewrite warning\n{}",
        run.engine.output_report()
    );
    let st = status(run.port).await;
    let reread = st["snapshot"]["tables_reread"].as_u64().unwrap_or(0);
    assert!(reread >= 1, "/status: {st:#}");
    run.stop().await;
}

/// `ALTER TABLE … ALTER COLUMN … TYPE` rewrites the table (every row gets
/// the ALTER's transaction id) after three chunks were read; the chunks
/// read later under the old exported snapshot found the table empty, and
/// nothing was streamed for the rewrite, so their rows were lost. The
/// table must be read again under a new export.
#[tokio::test]
async fn a_table_rewritten_by_alter_type_during_the_snapshot_is_read_again() {
    let run = PausedSnapshot::start("snapfault_alter", Pause::BeforeLaterClaims).await;
    run.case
        .db
        .exec("ALTER TABLE public.t ALTER COLUMN id TYPE bigint")
        .await;
    reread_and_converge(run).await;
}

/// A keyless table (`REPLICA IDENTITY FULL`) of which three quarters of the
/// rows were deleted, in about 10 CTID chunks: `VACUUM FULL` packs the live
/// rows into the first blocks.
const HOLLOW: Setup = Setup {
    table: "CREATE TABLE public.t (id int NOT NULL, v text);\
            ALTER TABLE public.t REPLICA IDENTITY FULL;\
            INSERT INTO public.t SELECT g, 'v' || g FROM generate_series(1, 20000) g;\
            DELETE FROM public.t WHERE id % 4 <> 0;\
            ANALYZE public.t",
    snapshot: "{ mode: initial, chunking: ctid, chunk_rows: 500, workers: 2 }",
};

/// A keyless table (`REPLICA IDENTITY FULL`, so chunked by CTID block
/// ranges) of which three quarters of the rows were deleted before the
/// snapshot; `VACUUM FULL` after three chunks were read packs the live
/// rows into the first blocks, below the ranges still to be read. The
/// table must be read again under a new export.
#[tokio::test]
async fn a_table_rewritten_by_vacuum_full_during_a_ctid_snapshot_is_read_again() {
    let run =
        PausedSnapshot::start_with("snapfault_vacfull", Pause::BeforeLaterClaims, HOLLOW).await;
    let strategies = chunks(&run.case.db, &run.case.slot).await;
    assert!(
        strategies.len() >= 6 && strategies.iter().all(|c| c.strategy == "ctid"),
        "{strategies:?}"
    );
    run.case.db.exec("VACUUM FULL public.t").await;
    reread_and_converge(run).await;
}

/// As above, but before any chunk is read under the old snapshot again,
/// that snapshot dies (its session is terminated) and the coordinator
/// exports a new one, which already sees the rewritten table: the chunks
/// read under it find nothing amiss, while the chunks done before were
/// read from the old file. The table must still be read again, whole,
/// under one file.
#[tokio::test]
async fn a_table_rewritten_before_a_new_export_for_another_reason_is_read_again() {
    let run =
        PausedSnapshot::start_with("snapfault_vacfull_export", Pause::BeforeLaterClaims, HOLLOW)
            .await;
    run.case.db.exec("VACUUM FULL public.t").await;
    run.terminate_export().await;
    reread_and_converge(run).await;
}

/// The claims' heartbeat stops for longer than `claim_timeout` (its
/// connection refused, say, while the readers' connections work) while a
/// reader is in the middle of chunk 0. Readers of the *same* instance then
/// claim its chunks again (the first reader's lease runs out, so it stops
/// handing rows over and aborts its read); every chunk must still be
/// completed once, under its newest claim, and the output converge. (The
/// emitter's part, a first reader's late end cutting a second read of the
/// same chunk short, is reproduced exactly by the unit test
/// `a_second_reader_of_the_same_chunk_is_not_cut_short_by_the_first`.)
#[tokio::test]
async fn two_readers_of_one_instance_on_one_chunk_lose_nothing() {
    let case = Case::new("snapfault_two_readers").await;
    let Case { db, slot, dir, .. } = &case;
    table(db, 8_000).await;
    let out = dir.join("out.jsonl");
    let snapshot = "{ mode: initial, chunking: key, chunk_rows: 1000, workers: 2, \
                    claim_timeout: 2s, heartbeat_interval: 500ms }";
    let yaml = case.yaml(&out, snapshot);
    // The first read stops after its first rows for 4 s; meanwhile the
    // heartbeat stops for 5 s.
    let engine = Engine::start_with(
        &yaml,
        &["run"],
        &[(
            "FAILPOINTS",
            "snapshot::reader_mid_chunk=1*return(4000);snapshot::heartbeat=1*return(5000)",
        )],
    );
    assert!(case.job_reaches("done").await, "{}", engine.output_report());
    let reclaimed: Vec<_> = chunks(db, slot)
        .await
        .into_iter()
        .filter(|c| c.attempts > 1)
        .collect();
    assert!(
        !reclaimed.is_empty(),
        "no chunk was claimed again: the test did not make two claims of one chunk\n{}",
        engine.output_report()
    );
    db.exec("UPDATE public.t SET v = 'streamed' WHERE id % 100 = 3")
        .await;
    case.finish(&[out], vec![engine]).await;
}
