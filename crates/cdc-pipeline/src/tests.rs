//! The pipeline against scripted sources and sinks: acknowledgement at the
//! minimum over sinks, retries, fatal errors, group commit, draining.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cdc_core::{AckHandle, Batch, Lsn, Sink, SinkError, Source, SourceError};
use tokio_util::sync::CancellationToken;

use crate::{run_pipeline, NamedSink, PipelineError, PipelineOptions};

/// Hands out prepared batches, then waits (like an idle stream) or ends.
struct ScriptedSource {
    batches: VecDeque<Batch>,
    ack: AckHandle,
    end_when_empty: bool,
    shut_down_at: Arc<Mutex<Option<Lsn>>>,
}

impl Source for ScriptedSource {
    async fn next_batch(&mut self) -> Result<Option<Batch>, SourceError> {
        match self.batches.pop_front() {
            Some(b) => Ok(Some(b)),
            None if self.end_when_empty => Ok(None),
            None => std::future::pending().await,
        }
    }
    fn ack_handle(&self) -> AckHandle {
        self.ack.clone()
    }
    async fn shutdown(&mut self) -> Result<(), SourceError> {
        *self.shut_down_at.lock().unwrap() = Some(self.ack.get());
        Ok(())
    }
}

fn batches(checkpoints: &[Option<u64>]) -> VecDeque<Batch> {
    checkpoints
        .iter()
        .map(|cp| Batch {
            events: vec![cdc_core::Event::Control(
                cdc_core::ControlEvent::Heartbeat { lsn: Lsn(1) },
            )],
            checkpoint: cp.map(Lsn),
            seq: 0,
            fence: None,
        })
        .collect()
}

/// Succeeds, fails retryably `retry_failures` times first, or fails
/// fatally on the batch numbered `fatal_at`.
struct TestSink {
    written: Arc<Mutex<Vec<Option<Lsn>>>>,
    retry_failures: u32,
    fatal_at: Option<usize>,
    delay: Duration,
}

impl Sink for TestSink {
    async fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        tokio::time::sleep(self.delay).await;
        if self.retry_failures > 0 {
            self.retry_failures -= 1;
            return Err(SinkError::retryable("flaky"));
        }
        let mut w = self.written.lock().unwrap();
        if self.fatal_at == Some(w.len()) {
            return Err(SinkError::fatal("message too large"));
        }
        w.push(batch.checkpoint);
        Ok(())
    }
}

fn sink(
    fatal_at: Option<usize>,
    retry_failures: u32,
    delay_ms: u64,
) -> (NamedSink, Arc<Mutex<Vec<Option<Lsn>>>>) {
    let written = Arc::new(Mutex::new(Vec::new()));
    let s = TestSink {
        written: written.clone(),
        retry_failures,
        fatal_at,
        delay: Duration::from_millis(delay_ms),
    };
    (
        NamedSink {
            name: "test".into(),
            sink: Box::new(s),
        },
        written,
    )
}

fn opts() -> PipelineOptions {
    PipelineOptions {
        channel_capacity: 2,
        retry_initial: Duration::from_millis(1),
        retry_max: Duration::from_millis(5),
        give_up_after: None,
    }
}

#[tokio::test]
async fn acknowledges_the_minimum_across_sinks_and_retries() {
    let shut = Arc::new(Mutex::new(None));
    let ack = AckHandle::new();
    let source = ScriptedSource {
        batches: batches(&[Some(10), None, Some(20), Some(30)]),
        ack: ack.clone(),
        end_when_empty: true,
        shut_down_at: shut.clone(),
    };
    let (fast, fast_written) = sink(None, 0, 0);
    let (flaky, flaky_written) = sink(None, 3, 2);
    let out = run_pipeline(
        source,
        vec![fast, flaky],
        opts(),
        CancellationToken::new(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(out.source_ended);
    assert_eq!(out.acknowledged, Lsn(30));
    assert_eq!(*shut.lock().unwrap(), Some(Lsn(30)));
    assert_eq!(ack.durable_batches(), 4);
    assert_eq!(fast_written.lock().unwrap().len(), 4);
    assert_eq!(flaky_written.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn a_fatal_sink_error_stops_without_acknowledging_past_it() {
    let shut = Arc::new(Mutex::new(None));
    let ack = AckHandle::new();
    let source = ScriptedSource {
        batches: batches(&[Some(10), Some(20), Some(30), Some(40)]),
        ack: ack.clone(),
        end_when_empty: false,
        shut_down_at: shut.clone(),
    };
    // The healthy sink gets everything; the failing one dies on its third batch.
    let (healthy, _) = sink(None, 0, 0);
    let (failing, failing_written) = sink(Some(2), 0, 1);
    let err = run_pipeline(
        source,
        vec![healthy, failing],
        opts(),
        CancellationToken::new(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PipelineError::Sink { .. }), "{err}");
    assert!(cdc_core::error_chain(&err).contains("message too large"));
    assert_eq!(failing_written.lock().unwrap().len(), 2);
    assert_eq!(
        *shut.lock().unwrap(),
        Some(Lsn(20)),
        "acknowledged past the failed batch"
    );
}

#[tokio::test]
async fn a_sink_failing_longer_than_the_bound_stops_the_pipeline() {
    let shut = Arc::new(Mutex::new(None));
    let ack = AckHandle::new();
    let source = ScriptedSource {
        batches: batches(&[Some(10), Some(20), Some(30)]),
        ack: ack.clone(),
        end_when_empty: false,
        shut_down_at: shut.clone(),
    };
    // One sink works; the other fails retryably on every attempt.
    let (healthy, _) = sink(None, 0, 0);
    let (down, down_written) = sink(None, u32::MAX, 1);
    let down = NamedSink {
        name: "down".into(),
        ..down
    };
    let mut options = opts();
    options.give_up_after = Some(Duration::from_millis(50));
    let err = run_pipeline(
        source,
        vec![healthy, down],
        options,
        CancellationToken::new(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    let PipelineError::Sink { sink, error } = &err else {
        panic!("expected a sink error, got {err}");
    };
    assert_eq!(sink, "down");
    assert!(!error.is_retryable(), "{error:?}");
    let chain = cdc_core::error_chain(&err);
    assert!(chain.contains("the retry bound is 50ms"), "{chain}");
    assert!(chain.contains("flaky"), "{chain}");
    assert!(down_written.lock().unwrap().is_empty());
    assert_eq!(
        *shut.lock().unwrap(),
        Some(Lsn(0)),
        "acknowledged what the failing sink never wrote"
    );
}

/// Records each call as the checkpoints of the batches it got; slow,
/// so that batches queue up behind it.
struct GroupingSink {
    calls: Arc<Mutex<Vec<Vec<Option<Lsn>>>>>,
    fail_first_group: bool,
}

impl Sink for GroupingSink {
    async fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        Sink::write_batches(self, &[batch]).await
    }
    async fn write_batches(&mut self, batches: &[&Batch]) -> Result<(), SinkError> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if self.fail_first_group && batches.len() > 1 {
            self.fail_first_group = false;
            return Err(SinkError::retryable("flaky group"));
        }
        self.calls
            .lock()
            .unwrap()
            .push(batches.iter().map(|b| b.checkpoint).collect());
        Ok(())
    }
}

#[tokio::test]
async fn batches_queued_behind_a_slow_sink_are_written_as_one_group() {
    let shut = Arc::new(Mutex::new(None));
    let ack = AckHandle::new();
    let checkpoints: Vec<Option<u64>> = (1..=12)
        .map(|i| if i == 7 { None } else { Some(i * 10) })
        .collect();
    let source = ScriptedSource {
        batches: batches(&checkpoints),
        ack: ack.clone(),
        end_when_empty: true,
        shut_down_at: shut.clone(),
    };
    let calls = Arc::new(Mutex::new(Vec::new()));
    let grouping = NamedSink {
        name: "grouping".into(),
        sink: Box::new(GroupingSink {
            calls: calls.clone(),
            fail_first_group: true,
        }),
    };
    let mut o = opts();
    o.channel_capacity = 4;
    let out = run_pipeline(
        source,
        vec![grouping],
        o,
        CancellationToken::new(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(out.acknowledged, Lsn(120));
    assert_eq!(*shut.lock().unwrap(), Some(Lsn(120)));
    assert_eq!(ack.durable_batches(), 12);
    let calls = calls.lock().unwrap().clone();
    // In order, each batch exactly once (the failed group was retried
    // whole and recorded once), and at least one real group formed.
    let flat: Vec<Option<Lsn>> = calls.iter().flatten().copied().collect();
    let expected: Vec<Option<Lsn>> = checkpoints.iter().map(|c| c.map(Lsn)).collect();
    assert_eq!(flat, expected);
    assert!(calls.iter().any(|g| g.len() > 1), "no group: {calls:?}");
    assert!(calls.len() < 12, "{calls:?}");
}

#[tokio::test]
async fn shutdown_drains_what_was_handed_out() {
    let shut = Arc::new(Mutex::new(None));
    let source = ScriptedSource {
        batches: batches(&[Some(10), Some(20), Some(30)]),
        ack: AckHandle::new(),
        end_when_empty: false,
        shut_down_at: shut.clone(),
    };
    let (slow, written) = sink(None, 0, 20);
    let shutdown = CancellationToken::new();
    let stopper = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        stopper.cancel();
    });
    let out = run_pipeline(
        source,
        vec![slow],
        opts(),
        shutdown,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(!out.source_ended);
    let n = written.lock().unwrap().len();
    assert!(n >= 1, "nothing drained");
    // Whatever was written is acknowledged, and nothing more.
    let last = written.lock().unwrap().last().copied().flatten();
    assert_eq!(Some(out.acknowledged), last);
}
