//! The main loop: reads the source and hands each batch to every sink's
//! channel (the workers are in `worker`, the watermark in `watermark`).
//!
//! Priorities of the main loop (a `biased` select):
//! 1. a sink failed fatally → stop, acknowledge nothing more;
//! 2. shutdown requested → stop reading, drain, acknowledge, return;
//! 3. the next batch from the source → hand it to every sink (waits while
//!    any sink's channel is full: that is the backpressure).

use std::sync::Arc;
use std::time::Duration;

use cdc_core::{Batch, DynSink, Lsn, Source};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::{PipelineMetrics, SinkMetrics};
use crate::watermark::Durable;
use crate::worker::{run_worker, WorkerContext};

/// Tuning of a pipeline run. Start from [`PipelineOptions::default`] and
/// set the fields to change (new fields may come in later versions, so
/// the struct cannot be written as a literal outside this crate):
///
/// ```
/// use std::time::Duration;
/// use cdc_pipeline::PipelineOptions;
///
/// let mut opts = PipelineOptions::default();
/// opts.channel_capacity = 2;
/// opts.retry_max = Duration::from_secs(5);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PipelineOptions {
    /// Batches buffered between the source and each sink; when a sink's
    /// channel is full, reading from the source waits (backpressure).
    /// `0` counts as 1. Default 8.
    pub channel_capacity: usize,
    /// First delay before a sink's write is retried after a retryable
    /// error; each further failure doubles it (with ±25 % jitter).
    /// Default 200 ms.
    pub retry_initial: Duration,
    /// Longest delay between two retries of a sink's write. Default 30 s.
    pub retry_max: Duration,
    /// A sink still failing with retryable errors this long after the
    /// first failure of a run ends the pipeline with an error (nothing it
    /// did not write is acknowledged). `None`: retry for ever.
    pub give_up_after: Option<Duration>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            channel_capacity: 8,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            give_up_after: None,
        }
    }
}

/// A sink and the name the pipeline knows it by.
///
/// ```
/// use cdc_core::{Batch, Sink, SinkError};
/// use cdc_pipeline::NamedSink;
///
/// struct Discard;
///
/// impl Sink for Discard {
///     async fn write_batch(&mut self, _batch: &Batch) -> Result<(), SinkError> {
///         Ok(())
///     }
/// }
///
/// let named = NamedSink::new("discard", Box::new(Discard));
/// assert_eq!(named.name, "discard");
/// ```
#[non_exhaustive]
pub struct NamedSink {
    /// The name in logs (the span `sink{name=…}` around everything the sink
    /// logs), in [`PipelineError::Sink`] and in the sink's metrics, e.g.
    /// `sinks[1] (file)`.
    pub name: String,
    /// The sink: any [`Sink`](cdc_core::Sink), boxed.
    pub sink: Box<dyn DynSink>,
}

impl NamedSink {
    /// Names `sink`.
    pub fn new(name: impl Into<String>, sink: Box<dyn DynSink>) -> Self {
        Self {
            name: name.into(),
            sink,
        }
    }
}

/// Why a pipeline stopped with an error. Retryable errors never end up
/// here: the source retries its own, and a sink's write is retried until it
/// succeeds or fails fatally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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

/// How the pipeline ended without an error. The default is a pipeline
/// that acknowledged nothing and was stopped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Outcome {
    /// The last position acknowledged to the source (every sink made
    /// everything up to it durable); [`Lsn::ZERO`] when none was.
    pub acknowledged: Lsn,
    /// `true` when the source ended by itself (a finished `snapshot_only`
    /// run), `false` when `shutdown` stopped it.
    pub source_ended: bool,
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
    let durable = Arc::new(Durable::new(
        sinks.len(),
        source.ack_handle(),
        metrics.clone(),
    ));
    let (fail_tx, mut fail_rx) = mpsc::channel::<PipelineError>(sinks.len().max(1));
    let mut senders = Vec::with_capacity(sinks.len());
    let mut workers = Vec::with_capacity(sinks.len());
    for (index, sink) in sinks.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel::<Arc<Batch>>(opts.channel_capacity.max(1));
        senders.push(tx);
        let cx = WorkerContext {
            index,
            durable: durable.clone(),
            fail_tx: fail_tx.clone(),
            opts: opts.clone(),
            hard_stop: hard_stop.clone(),
            metrics: metrics.sink(index).cloned(),
        };
        // Everything the sink logs, its client libraries included, says
        // which sink it came from.
        let span = tracing::info_span!("sink", name = %sink.name);
        workers.push(tokio::spawn(run_worker(sink, rx, cx).instrument(span)));
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
    let acknowledged = durable.acknowledged();
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
