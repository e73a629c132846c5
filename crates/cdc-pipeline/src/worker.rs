//! A sink's worker: takes batches from its channel, groups those already
//! waiting (group commit), writes them with retries, and marks them
//! durable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc_core::{Backoff, Batch, DynSink};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::{change_count, SinkMetrics};
use crate::run::{NamedSink, PipelineError, PipelineOptions};
use crate::watermark::Durable;

/// A group stops taking waiting batches once it holds this many events
/// (batches are taken whole, so a group may hold one batch more). Four
/// default-sized batches: enough to pay a sink's fixed cost per call (an
/// `fsync` costs milliseconds whatever its size) a quarter as often, small
/// enough that what a sink encodes for one call stays a few MiB.
const MAX_GROUP_EVENTS: usize = 8_192;

/// What a worker needs besides its sink and channel.
pub(crate) struct WorkerContext {
    /// The sink's index in the pipeline (its slot in `durable`).
    pub index: usize,
    pub durable: Arc<Durable>,
    /// Where a fatal sink error goes.
    pub fail_tx: mpsc::Sender<PipelineError>,
    pub opts: PipelineOptions,
    pub hard_stop: CancellationToken,
    pub metrics: Option<Arc<SinkMetrics>>,
}

/// Runs the worker of `sink` until its channel closes (then closes the
/// sink), a fatal error (sent to `fail_tx`) or `hard_stop`.
pub(crate) async fn run_worker(
    NamedSink { name, mut sink }: NamedSink,
    mut rx: mpsc::Receiver<Arc<Batch>>,
    cx: WorkerContext,
) {
    let sink_metrics = cx.metrics.as_deref();
    while let Some(first) = rx.recv().await {
        if let Some(m) = sink_metrics {
            m.dequeued();
        }
        let group = take_group(first, &mut rx, sink_metrics);
        #[cfg(feature = "failpoints")]
        if group
            .iter()
            .any(|b| crate::failpoint::has_snapshot_reads(b))
        {
            crate::failpoint::reached("sink::before_write_reads").await;
        }
        // Snapshot reads whose claims this process lost (it stood
        // still while another instance read them again) are left
        // out: written now, they could land after newer changes.
        let fenced: Vec<Option<Batch>> = group.iter().map(|b| b.without_lost_reads()).collect();
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
                &cx.opts,
                &cx.hard_stop,
                sink_metrics,
            )
            .await
            {
                Ok(()) => {}
                Err(None) => return,
                Err(Some(error)) => {
                    let _ = cx
                        .fail_tx
                        .send(PipelineError::Sink { sink: name, error })
                        .await;
                    return;
                }
            }
            #[cfg(feature = "failpoints")]
            crate::failpoint::reached("sink::before_ack").await;
        }
        for batch in &group {
            cx.durable.mark(cx.index, batch.checkpoint);
        }
    }
    if let Err(e) = sink.close().await {
        tracing::warn!(sink = %name, error = %cdc_core::error_chain(&e), "closing sink failed");
    }
}

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
/// until it succeeds, a fatal error occurs (`Err(Some)`), or `hard_stop`
/// fires (`Err(None)`). Every attempt's outcome is counted in `metrics`.
async fn write_with_retry(
    name: &str,
    sink: &mut dyn DynSink,
    group: &[&Batch],
    opts: &PipelineOptions,
    hard_stop: &CancellationToken,
    metrics: Option<&SinkMetrics>,
) -> Result<(), Option<cdc_core::SinkError>> {
    let mut backoff =
        Backoff::new(opts.retry_initial, opts.retry_max).give_up_after(opts.give_up_after);
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
                if let (true, Some(failing), Some(bound)) =
                    (backoff.exhausted(), backoff.failing_for(), backoff.bound())
                {
                    return Err(Some(gave_up(e, failing, bound, backoff.attempts())));
                }
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

/// The fatal error that ends a sink's retries once they lasted `bound`.
fn gave_up(
    last: cdc_core::SinkError,
    failing: Duration,
    bound: Duration,
    attempts: u32,
) -> cdc_core::SinkError {
    cdc_core::SinkError::fatal(format!(
        "still failing after {failing:.1?} and {attempts} attempts (the retry bound is {bound:?}); last error: {}",
        last.message()
    ))
    .with_source(last)
}
