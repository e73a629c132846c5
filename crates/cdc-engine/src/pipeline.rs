//! The pipeline: one source, any number of sinks, a bounded channel in
//! between, and acknowledgements that never run ahead of durability.
//!
//! ```text
//! source ──► [bounded channel per sink] ──► sink worker ──► durable[i]
//!    ▲                                                         │
//!    └──────────── AckHandle = min(durable[..]) ◄──────────────┘
//! ```
//!
//! Priorities of the main loop (a `biased` select):
//! 1. a sink failed fatally → stop, acknowledge nothing more;
//! 2. shutdown requested → stop reading, drain, acknowledge, return;
//! 3. the next batch from the source → hand it to every sink (waits while
//!    any sink's channel is full: that is the backpressure).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc_core::{AckHandle, Backoff, Batch, DynSink, Lsn, Source};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::{change_count, PipelineMetrics, SinkMetrics};

/// Tuning of a pipeline run.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Batches buffered between the source and each sink.
    pub channel_capacity: usize,
    /// First delay before retrying a sink's retryable error.
    pub retry_initial: Duration,
    /// Longest delay between retries.
    pub retry_max: Duration,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            channel_capacity: 8,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// A named sink, as the pipeline runs it.
pub struct NamedSink {
    /// For logs and errors, e.g. `sinks[1] (file)`.
    pub name: String,
    /// The sink.
    pub sink: Box<dyn DynSink>,
}

/// Why a pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The source failed with a fatal error.
    #[error("source")]
    Source(#[source] cdc_core::SourceError),
    /// A sink failed with a fatal error.
    #[error("{sink}")]
    Sink {
        /// Which sink.
        sink: String,
        /// Its error.
        #[source]
        error: cdc_core::SinkError,
    },
}

/// How the pipeline ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The last position acknowledged to the source.
    pub acknowledged: Lsn,
    /// `true` when the source ended by itself (not by a shutdown request).
    pub source_ended: bool,
}

/// Per sink: the highest durable checkpoint and the number of durable
/// batches. The source sees the minimum of each across sinks.
struct Durable {
    per_sink: Vec<(AtomicU64, AtomicU64)>,
    ack: AckHandle,
    metrics: Arc<PipelineMetrics>,
}

impl Durable {
    /// Sink `sink` made one more batch durable, with `checkpoint`.
    fn mark(&self, sink: usize, checkpoint: Option<Lsn>) {
        if let Some((lsn, batches)) = self.per_sink.get(sink) {
            if let Some(cp) = checkpoint {
                lsn.fetch_max(cp.0, Ordering::AcqRel);
            }
            batches.fetch_add(1, Ordering::AcqRel);
        }
        let min_of = |pick: fn(&(AtomicU64, AtomicU64)) -> u64| {
            self.per_sink.iter().map(pick).min().unwrap_or(0)
        };
        let lsn = min_of(|s| s.0.load(Ordering::Acquire));
        if lsn > 0 {
            self.ack.advance(Lsn(lsn));
            self.metrics.set_acknowledged(Lsn(lsn));
        }
        self.ack
            .advance_batches(min_of(|s| s.1.load(Ordering::Acquire)));
    }
}

/// A group stops taking waiting batches once it holds this many events
/// (batches are taken whole, so a group may hold one batch more). Four
/// default-sized batches: enough to pay a sink's fixed cost per call (an
/// `fsync` costs milliseconds whatever its size) a quarter as often, small
/// enough that what a sink encodes for one call stays a few MiB.
const MAX_GROUP_EVENTS: usize = 8_192;

/// Takes the batches already waiting behind `first` in `rx` (group
/// commit), up to [`MAX_GROUP_EVENTS`] events, without waiting for more.
fn take_group(
    first: Arc<Batch>,
    rx: &mut mpsc::Receiver<Arc<Batch>>,
    metrics: Option<&SinkMetrics>,
) -> Vec<Arc<Batch>> {
    let mut events = first.events.len();
    let mut group = vec![first];
    while events < MAX_GROUP_EVENTS {
        let Ok(next) = rx.try_recv() else { break };
        if let Some(m) = metrics {
            m.dequeued();
        }
        events += next.events.len();
        group.push(next);
    }
    group
}

/// Writes one group of batches, retrying retryable errors with backoff
/// until it succeeds, a fatal error occurs, or `hard_stop` fires. Every
/// attempt's outcome is counted in `metrics`.
/// `true` when `batch` holds rows read by a snapshot.
#[cfg(feature = "failpoints")]
fn has_snapshot_reads(batch: &Batch) -> bool {
    batch
        .events
        .iter()
        .any(|e| matches!(e, cdc_core::Event::Change(c) if c.op == cdc_core::Op::Read))
}

async fn write_with_retry(
    name: &str,
    sink: &mut dyn DynSink,
    group: &[&Batch],
    opts: &PipelineOptions,
    hard_stop: &CancellationToken,
    metrics: Option<&SinkMetrics>,
) -> Result<(), Option<cdc_core::SinkError>> {
    let mut backoff = Backoff::new(opts.retry_initial, opts.retry_max);
    let changes = || group.iter().map(|b| change_count(b)).sum::<u64>();
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            biased;
            _ = hard_stop.cancelled() => return Err(None),
            r = async {
                match group {
                    [one] => sink.write_batch(one).await,
                    _ => sink.write_batches(group).await,
                }
            } => r,
        };
        let took = started.elapsed();
        if result.is_ok() {
            tracing::debug!(
                sink = name,
                batches = group.len(),
                events = group.iter().map(|b| b.events.len()).sum::<usize>(),
                checkpoint = ?group.iter().rev().find_map(|b| b.checkpoint),
                ?took,
                "batches written"
            );
        }
        if let Some(m) = metrics {
            match &result {
                Ok(()) => m.record_written(changes(), took),
                Err(e) => m.record_error(e.class(), cdc_core::error_chain(e)),
            }
        }
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() => {
                let delay = backoff.next_delay();
                tracing::warn!(sink = name, error = %cdc_core::error_chain(&e), retry_in = ?delay, attempt = backoff.attempts(), "sink write failed; retrying the batch");
                tokio::select! {
                    _ = hard_stop.cancelled() => return Err(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => return Err(Some(e)),
        }
    }
}

/// Runs `source` into `sinks` until `shutdown` is cancelled, the source
/// ends, or something fails fatally. `hard_stop` aborts draining (a second
/// Ctrl-C). Acknowledges to the source only positions every sink made durable.
pub async fn run_pipeline<S: Source>(
    source: S,
    sinks: Vec<NamedSink>,
    opts: PipelineOptions,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
) -> Result<Outcome, PipelineError> {
    let metrics = PipelineMetrics::new(
        &[],
        sinks
            .iter()
            .map(|s| SinkMetrics::new(s.name.clone(), "custom", opts.channel_capacity.max(1)))
            .collect(),
    );
    run_pipeline_observed(source, sinks, opts, Arc::new(metrics), shutdown, hard_stop).await
}

/// [`run_pipeline`], counting what flows in `metrics`: events received
/// per table and operation, and for the sink at index `i` of `sinks` the
/// counters at index `i` of `metrics` (sinks without counters there are not
/// counted).
pub async fn run_pipeline_observed<S: Source>(
    mut source: S,
    sinks: Vec<NamedSink>,
    opts: PipelineOptions,
    metrics: Arc<PipelineMetrics>,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
) -> Result<Outcome, PipelineError> {
    let durable = Arc::new(Durable {
        per_sink: sinks
            .iter()
            .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
            .collect(),
        ack: source.ack_handle(),
        metrics: metrics.clone(),
    });
    let (fail_tx, mut fail_rx) = mpsc::channel::<PipelineError>(sinks.len().max(1));
    let mut senders = Vec::with_capacity(sinks.len());
    let mut workers = Vec::with_capacity(sinks.len());
    for (index, NamedSink { name, mut sink }) in sinks.into_iter().enumerate() {
        let (tx, mut rx) = mpsc::channel::<Arc<Batch>>(opts.channel_capacity.max(1));
        senders.push(tx);
        let durable = durable.clone();
        let fail_tx = fail_tx.clone();
        let opts = opts.clone();
        let hard_stop = hard_stop.clone();
        let sink_metrics = metrics.sink(index).cloned();
        workers.push(tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                if let Some(m) = &sink_metrics {
                    m.dequeued();
                }
                let group = take_group(first, &mut rx, sink_metrics.as_deref());
                #[cfg(feature = "failpoints")]
                if group.iter().any(|b| has_snapshot_reads(b)) {
                    cdc_postgres::failpoint_reached("sink::before_write_reads").await;
                }
                // Snapshot reads whose claims this process lost (it stood
                // still while another instance read them again) are left
                // out: written now, they could land after newer changes.
                let fenced: Vec<Option<Batch>> =
                    group.iter().map(|b| b.without_lost_reads()).collect();
                let to_write: Vec<&Batch> = group
                    .iter()
                    .zip(&fenced)
                    .map(|(b, f)| f.as_ref().unwrap_or(b.as_ref()))
                    .filter(|b| !b.is_empty())
                    .collect();
                if !to_write.is_empty() {
                    match write_with_retry(
                        &name,
                        sink.as_mut(),
                        &to_write,
                        &opts,
                        &hard_stop,
                        sink_metrics.as_deref(),
                    )
                    .await
                    {
                        Ok(()) => {}
                        Err(None) => return,
                        Err(Some(error)) => {
                            let _ = fail_tx.send(PipelineError::Sink { sink: name, error }).await;
                            return;
                        }
                    }
                    #[cfg(feature = "failpoints")]
                    cdc_postgres::failpoint_reached("sink::before_ack").await;
                }
                for batch in &group {
                    durable.mark(index, batch.checkpoint);
                }
            }
            if let Err(e) = sink.close().await {
                tracing::warn!(sink = %name, error = %cdc_core::error_chain(&e), "closing sink failed");
            }
        }));
    }
    drop(fail_tx);

    let mut source_ended = false;
    let mut failure = None;
    'read: loop {
        tokio::select! {
            biased;
            Some(err) = fail_rx.recv() => { failure = Some(err); break 'read; }
            _ = shutdown.cancelled() => break 'read,
            next = source.next_batch() => match next {
                Ok(Some(batch)) => {
                    metrics.record_source_batch(&batch);
                    let batch = Arc::new(batch);
                    for (index, tx) in senders.iter().enumerate() {
                        let sink_metrics = metrics.sink(index);
                        // Counted before the send so that the worker's
                        // decrement never comes first; undone if the send
                        // does not happen.
                        let abandon = || if let Some(m) = sink_metrics { m.dequeued() };
                        if let Some(m) = sink_metrics {
                            m.enqueued();
                        }
                        tokio::select! {
                            biased;
                            Some(err) = fail_rx.recv() => { abandon(); failure = Some(err); break 'read; }
                            _ = shutdown.cancelled() => { abandon(); break 'read; }
                            sent = tx.send(batch.clone()) => if sent.is_err() {
                                abandon();
                                // The worker stopped; its failure is in fail_rx.
                                if let Some(err) = fail_rx.recv().await { failure = Some(err); }
                                break 'read;
                            },
                        }
                    }
                }
                Ok(None) => { source_ended = true; break 'read; }
                Err(e) => { failure = Some(PipelineError::Source(e)); break 'read; }
            },
        }
    }
    // Drain: closing the channels lets every worker finish what it holds.
    drop(senders);
    if failure.is_some() {
        hard_stop.cancel();
    }
    for w in workers {
        tokio::select! {
            _ = w => {}
            _ = hard_stop.cancelled() => {}
        }
    }
    if failure.is_none() {
        if let Ok(err) = fail_rx.try_recv() {
            failure = Some(err);
        }
    }
    let acknowledged = durable.ack.get();
    if let Err(e) = source.shutdown().await {
        tracing::warn!(error = %cdc_core::error_chain(&e), "source shutdown");
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(Outcome {
            acknowledged,
            source_ended,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use cdc_core::{Sink, SinkError, SourceError};

    use super::*;

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
}
