//! The one invariant, at library level against a real PostgreSQL 15: the
//! slot's `confirmed_flush_lsn` never passes a change that the sink has not
//! durably accepted.
//!
//! A real [`PgSource`] runs under [`run_pipeline`] into a test sink that
//! records every batch it accepts (events and checkpoint) and fails in a
//! controlled way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cdc_core::{Batch, Event, Lsn, Op, Sink, SinkError, TableName, Value};
use cdc_pipeline::{run_pipeline, NamedSink, Outcome, PipelineError, PipelineOptions};
use cdc_postgres::{PgSource, PgSourceConfig};
use integration_tests::{unique_suffix, wait_until, TestDb};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One row change as the sink saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Change {
    id: i32,
    commit_lsn: Lsn,
    ordinal: u64,
}

/// A batch the sink accepted (returned `Ok` for).
#[derive(Debug, Clone)]
struct Accepted {
    changes: Vec<Change>,
    checkpoint: Option<Lsn>,
}

/// Everything the sink saw.
#[derive(Debug, Default)]
struct Log {
    accepted: Vec<Accepted>,
    /// Batches (or groups of batches, their changes together) it returned
    /// an error for, in call order, with the last checkpoint and the
    /// error's class.
    failed: Vec<(Vec<Change>, Option<Lsn>, &'static str)>,
}

impl Log {
    fn accepted_changes(&self) -> Vec<Change> {
        self.accepted
            .iter()
            .flat_map(|b| b.changes.iter().copied())
            .collect()
    }

    /// The checkpoint of the last accepted batch that had one.
    fn last_durable_checkpoint(&self) -> Option<Lsn> {
        self.accepted
            .iter()
            .filter_map(|b| b.checkpoint)
            .next_back()
    }
}

/// How the test sink behaves.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Accepts every batch.
    AcceptAll,
    /// Accepts batches while the total of row changes stays <= `n`, then
    /// fails fatally on the batch (or group of batches) that would cross
    /// it, and on every later one.
    FatalAfter(usize),
    /// Fails retryably on the first `n` calls, then accepts everything.
    RetryableFirst(usize),
}

struct TestSink {
    log: Arc<Mutex<Log>>,
    behaviour: Behaviour,
    calls: usize,
    accepted_changes: usize,
}

impl TestSink {
    fn named(behaviour: Behaviour) -> (NamedSink, Arc<Mutex<Log>>) {
        let log = Arc::new(Mutex::new(Log::default()));
        let sink = TestSink {
            log: log.clone(),
            behaviour,
            calls: 0,
            accepted_changes: 0,
        };
        (NamedSink::new("test sink", Box::new(sink)), log)
    }
}

fn changes_of(batch: &Batch) -> Vec<Change> {
    batch
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Change(c) => Some(c),
            _ => None,
        })
        .map(|c| {
            assert_eq!(c.op, Op::Insert, "only inserts are made: {c:?}");
            let id_at = c.table.column_index("id").expect("column id");
            let after = c.after.as_ref().expect("an insert has an after row");
            let id = match after.values()[id_at] {
                Value::Int4(id) => id,
                ref other => panic!("id is not an int4: {other:?}"),
            };
            Change {
                id,
                commit_lsn: c.source.commit_lsn,
                ordinal: c.source.ordinal,
            }
        })
        .collect()
}

impl TestSink {
    /// The error `self.behaviour` gives call number `call`, which would
    /// add `changes` row changes, if any, with its class.
    fn refusal(&self, call: usize, changes: usize) -> Option<(SinkError, &'static str)> {
        match self.behaviour {
            Behaviour::FatalAfter(n) if self.accepted_changes + changes > n => {
                Some((SinkError::fatal("test sink: quota exceeded"), "fatal"))
            }
            Behaviour::RetryableFirst(n) if call <= n => Some((
                SinkError::retryable("test sink: temporarily unavailable"),
                "retryable",
            )),
            _ => None,
        }
    }

    /// One call: a batch, or a group of batches that counts as a whole
    /// (the `write_batches` contract: on error nothing of it is written).
    /// A refused group is logged as one failed write of all its changes.
    fn write_group(&mut self, batches: &[&Batch]) -> Result<(), SinkError> {
        self.calls += 1;
        let per_batch: Vec<Vec<Change>> = batches.iter().map(|b| changes_of(b)).collect();
        let total = per_batch.iter().map(Vec::len).sum();
        let log = self.log.clone();
        let mut log = log.lock().unwrap();
        if let Some((error, class)) = self.refusal(self.calls, total) {
            let checkpoint = batches.iter().rev().find_map(|b| b.checkpoint);
            log.failed.push((per_batch.concat(), checkpoint, class));
            return Err(error);
        }
        self.accepted_changes += total;
        for (changes, batch) in per_batch.into_iter().zip(batches) {
            log.accepted.push(Accepted {
                changes,
                checkpoint: batch.checkpoint,
            });
        }
        Ok(())
    }
}

impl Sink for TestSink {
    async fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.write_group(&[batch])
    }

    async fn write_batches(&mut self, batches: &[&Batch]) -> Result<(), SinkError> {
        self.write_group(batches)
    }
}

const TABLE: &str = "CREATE TABLE public.t (id int PRIMARY KEY, v text)";

fn source_config(db: &TestDb, publication: &str, slot: &str) -> PgSourceConfig {
    let mut cfg = PgSourceConfig::new(
        db.url(),
        vec![TableName::new("public", "t")],
        publication,
        slot,
    );
    // Small batches, so that acknowledgements happen many times; a long
    // wait, so that a batch is cut by its size and not by a pause of the
    // (already fully written) stream.
    cfg.max_batch_events = 5;
    cfg.max_batch_wait = Duration::from_millis(500);
    cfg.status_interval = Duration::from_millis(200);
    cfg.reconnect_initial = Duration::from_millis(50);
    cfg.reconnect_max = Duration::from_millis(500);
    cfg
}

fn options() -> PipelineOptions {
    let mut options = PipelineOptions::default();
    options.channel_capacity = 2;
    options.retry_initial = Duration::from_millis(20);
    options.retry_max = Duration::from_millis(100);
    options
}

/// Single-row insert transactions of ids `from..=to`, one after the other.
async fn insert_rows(db: &TestDb, from: i32, to: i32) {
    for i in from..=to {
        db.exec(&format!("INSERT INTO public.t VALUES ({i}, 'row {i}')"))
            .await;
    }
}

async fn connect(db: &TestDb, publication: &str, slot: &str) -> PgSource {
    PgSource::connect(source_config(db, publication, slot))
        .await
        .unwrap_or_else(|e| panic!("PgSource::connect: {}", cdc_core::error_chain(&e)))
}

/// A test's database with `public.t`, and a unique publication and slot
/// name.
async fn fresh_db(name: &str) -> (TestDb, String, String) {
    let db = TestDb::create(name).await;
    db.exec(TABLE).await;
    let s = unique_suffix();
    (db, format!("p_{s}"), format!("s_{s}"))
}

/// Stops the pipeline of `handle` (which must not have ended) and checks
/// that it acknowledged at least the last checkpoint the sink made durable
/// (in `log`) and that the slot stays at exactly what it acknowledged.
async fn stop_cleanly(
    handle: JoinHandle<Result<Outcome, PipelineError>>,
    shutdown: &CancellationToken,
    log: &Mutex<Log>,
    db: &TestDb,
    slot: &str,
) {
    let outcome = stop_pipeline(handle, shutdown).await;
    assert!(!outcome.source_ended);
    let last_checkpoint = log
        .lock()
        .unwrap()
        .last_durable_checkpoint()
        .expect("a checkpoint");
    assert!(outcome.acknowledged >= last_checkpoint, "{outcome:?}");
    wait_slot_released(db, slot).await;
    assert_eq!(
        db.slot_confirmed_flush_lsn(slot).await,
        Some(outcome.acknowledged),
        "after a clean shutdown the slot must be at the acknowledged position"
    );
}

/// Waits until no connection holds the slot any more (a new stream on it
/// would be refused).
async fn wait_slot_released(db: &TestDb, slot: &str) {
    let released = wait_until(Duration::from_secs(20), async || {
        !db.slot_active(slot).await
    })
    .await;
    assert!(
        released,
        "slot {slot} is still active 20s after the pipeline returned"
    );
}

fn spawn_pipeline(
    source: PgSource,
    sink: NamedSink,
    shutdown: &CancellationToken,
) -> JoinHandle<Result<Outcome, PipelineError>> {
    tokio::spawn(run_pipeline(
        source,
        vec![sink],
        options(),
        shutdown.clone(),
        CancellationToken::new(),
    ))
}

/// Stops a pipeline started by [`spawn_pipeline`] through its shutdown
/// token and returns its outcome.
async fn stop_pipeline(
    handle: JoinHandle<Result<Outcome, PipelineError>>,
    shutdown: &CancellationToken,
) -> Outcome {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("the pipeline did not stop within 30s of the shutdown request")
        .expect("the pipeline task panicked")
        .unwrap_or_else(|e| panic!("the pipeline failed: {e}"))
}

fn ids(changes: &[Change]) -> Vec<i32> {
    changes.iter().map(|c| c.id).collect()
}

#[tokio::test]
async fn a_fatal_sink_error_acknowledges_exactly_what_was_durable_and_loses_nothing() {
    const ROWS: i32 = 40;
    const ACCEPT: usize = 12;

    let (db, publication, slot) = fresh_db("ack_fatal").await;

    // The slot is created by the first connect; everything inserted after it
    // is in the stream. The whole stream is written before the pipeline
    // runs, so that it never pauses between a row and its commit.
    let source = connect(&db, &publication, &slot).await;
    let slot_start = db
        .slot_confirmed_flush_lsn(&slot)
        .await
        .expect("the slot exists");
    insert_rows(&db, 1, ROWS).await;

    let (sink, log) = TestSink::named(Behaviour::FatalAfter(ACCEPT));
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        run_pipeline(
            source,
            vec![sink],
            options(),
            CancellationToken::new(),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("the pipeline did not stop within 60s after a fatal sink error");
    let err = match result {
        Ok(outcome) => panic!("the pipeline ended without the sink's error: {outcome:?}"),
        Err(e) => e,
    };
    assert!(
        matches!(&err, PipelineError::Sink { error, .. } if !error.is_retryable()),
        "{err:?}"
    );
    assert!(
        cdc_core::error_chain(&err).contains("quota exceeded"),
        "{err}"
    );

    let (accepted, last_durable, first_rejected) = {
        let log = log.lock().unwrap();
        assert_eq!(
            log.failed.len(),
            1,
            "the fatal batch was written once: {log:?}"
        );
        let first_rejected = log.failed[0].0.first().copied();
        (
            log.accepted_changes(),
            log.last_durable_checkpoint(),
            first_rejected,
        )
    };
    let first_rejected = first_rejected.expect("the failed batch held a row change");
    assert!(accepted.len() <= ACCEPT, "{accepted:?}");
    let accepted_ids = ids(&accepted);
    assert_eq!(
        accepted_ids,
        (1..=accepted.len() as i32).collect::<Vec<_>>(),
        "the sink got the rows out of order"
    );
    assert_eq!(first_rejected.id, accepted.len() as i32 + 1);

    // Once the slot is released its walsender has ended: no status update
    // (one sent after the pipeline returned, or one the client made up from
    // the WAL it received) can still move it.
    wait_slot_released(&db, &slot).await;
    let confirmed = db
        .slot_confirmed_flush_lsn(&slot)
        .await
        .expect("the slot still exists");
    let expected = last_durable.unwrap_or(slot_start);
    eprintln!(
        "slot created at {slot_start}; sink accepted rows {accepted_ids:?}, last durable checkpoint \
         {}; first rejected row {} (commit {}); confirmed_flush_lsn {confirmed}",
        last_durable.map_or_else(|| "none".to_owned(), |l| l.to_string()),
        first_rejected.id,
        first_rejected.commit_lsn
    );
    // The hard invariant: a restart from `confirmed` must decode the first
    // transaction whose change the sink did not accept.
    assert!(
        confirmed <= first_rejected.commit_lsn,
        "confirmed_flush_lsn {confirmed} passed the commit {} of row {} that the sink never accepted \
         (last durable checkpoint {expected})",
        first_rejected.commit_lsn,
        first_rejected.id
    );
    assert!(
        confirmed <= expected,
        "confirmed_flush_lsn {confirmed} is past the last checkpoint the sink made durable ({expected})"
    );
    // And the final acknowledgement was sent before the source shut down.
    assert_eq!(
        confirmed, expected,
        "confirmed_flush_lsn {confirmed} lags the last durable checkpoint {expected} \
         (slot created at {slot_start}): the final position was not flushed"
    );

    // Restart with a sink that accepts everything: nothing is lost, and the
    // stream resumes at the acknowledged position (not earlier).
    let source = connect(&db, &publication, &slot).await;
    let (sink, log) = TestSink::named(Behaviour::AcceptAll);
    let shutdown = CancellationToken::new();
    let handle = spawn_pipeline(source, sink, &shutdown);
    let complete = wait_until(Duration::from_secs(30), async || {
        log.lock()
            .unwrap()
            .accepted_changes()
            .last()
            .is_some_and(|c| c.id == ROWS)
    })
    .await;
    let redelivered = log.lock().unwrap().accepted_changes();
    assert!(
        complete,
        "the restarted pipeline did not deliver row {ROWS} within 30s: got {:?}",
        ids(&redelivered)
    );
    let first = redelivered[0];
    assert!(
        first.id <= first_rejected.id,
        "lost rows: the restart began at row {} but rows from {} on were never accepted",
        first.id,
        first_rejected.id
    );
    assert!(
        first.commit_lsn >= confirmed,
        "the restart began at row {} (commit {}), before the acknowledged position {confirmed}",
        first.id,
        first.commit_lsn
    );
    assert_eq!(
        ids(&redelivered),
        (first.id..=ROWS).collect::<Vec<_>>(),
        "the restarted stream is not the rows from {} to {ROWS} in order",
        first.id
    );
    // Rows that were accepted but whose commit was not yet durable are
    // delivered again with the same position.
    for again in redelivered.iter().filter(|c| c.id <= accepted.len() as i32) {
        let before = accepted[again.id as usize - 1];
        assert_eq!(*again, before, "a redelivered change has a new position");
    }

    stop_cleanly(handle, &shutdown, &log, &db, &slot).await;
    db.cleanup().await;
}

#[tokio::test]
async fn retryable_sink_errors_retry_the_same_batch_and_the_pipeline_keeps_running() {
    const ROWS: i32 = 20;
    const FAILURES: usize = 3;

    let (db, publication, slot) = fresh_db("ack_retry").await;
    let source = connect(&db, &publication, &slot).await;
    insert_rows(&db, 1, ROWS).await;

    let (sink, log) = TestSink::named(Behaviour::RetryableFirst(FAILURES));
    let shutdown = CancellationToken::new();
    let handle = spawn_pipeline(source, sink, &shutdown);

    let got_all = |n: i32| {
        let log = log.clone();
        async move {
            wait_until(Duration::from_secs(30), async || {
                log.lock().unwrap().accepted_changes().len() >= n as usize
            })
            .await
        }
    };
    assert!(
        got_all(ROWS).await,
        "not every row arrived within 30s: {:?}",
        log.lock().unwrap()
    );
    {
        let log = log.lock().unwrap();
        assert_eq!(
            ids(&log.accepted_changes()),
            (1..=ROWS).collect::<Vec<_>>(),
            "rows missing, repeated or out of order"
        );
        assert_eq!(log.failed.len(), FAILURES, "{log:?}");
        // Every attempt was the same batch (or group of batches), and that
        // is what was accepted first.
        let accepted = log.accepted_changes();
        let (first, _, _) = &log.failed[0];
        assert_eq!(
            first.as_slice(),
            &accepted[..first.len()],
            "what was accepted first is not what failed"
        );
        for (changes, checkpoint, class) in &log.failed {
            assert_eq!(*class, "retryable");
            assert_eq!(changes, first, "a retry got a different batch");
            assert_eq!(*checkpoint, log.failed[0].1);
        }
    }
    assert!(
        !handle.is_finished(),
        "the pipeline stopped after retryable errors: {:?}",
        handle.await
    );

    // It keeps streaming.
    insert_rows(&db, ROWS + 1, ROWS + 5).await;
    assert!(
        got_all(ROWS + 5).await,
        "rows written after the retries did not arrive: {:?}",
        ids(&log.lock().unwrap().accepted_changes())
    );
    assert_eq!(
        ids(&log.lock().unwrap().accepted_changes()),
        (1..=ROWS + 5).collect::<Vec<_>>()
    );
    assert!(!handle.is_finished());

    stop_cleanly(handle, &shutdown, &log, &db, &slot).await;
    db.cleanup().await;
}
