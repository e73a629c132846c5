//! # cdc-pipeline
//!
//! The runtime that drives a change-data-capture [`Source`](cdc_core::Source)
//! into any number of [`Sink`](cdc_core::Sink)s, and acknowledges to the
//! source only what every sink made durable. It depends on `cdc-core` (and
//! tokio) only, so a custom sink runs on it without any of the bundled sink
//! crates (and without their C and C++ build chains). The `cdc-engine`
//! binary runs its YAML-configured pipelines on it.
//!
//! ```text
//! source ──► [bounded channel per sink] ──► sink worker ──► durable[i]
//!    ▲                                                         │
//!    └──────────── AckHandle = min(durable[..]) ◄──────────────┘
//! ```
//!
//! * **Bounded channels**: each sink has its own channel of
//!   [`PipelineOptions::channel_capacity`] batches and its own task; a full
//!   channel makes reading wait (backpressure), so memory stays bounded.
//! * **Fan-out**: every sink gets every batch (the same `Arc<Batch>`).
//! * **Group commit**: batches that queued up behind a slow sink are handed
//!   to it together ([`Sink::write_batches`](cdc_core::Sink::write_batches)).
//! * **Retries**: a retryable sink error retries the same batches with
//!   exponential backoff and jitter ([`PipelineOptions::retry_initial`] up
//!   to [`PipelineOptions::retry_max`]); a fatal one stops the pipeline
//!   with [`PipelineError::Sink`].
//! * **Acknowledgement watermark**: the source's
//!   [`AckHandle`](cdc_core::AckHandle) moves to the minimum position (and
//!   batch count) every sink made durable, never further.
//! * **Metrics**: [`run_pipeline_observed`] counts what flows in a
//!   [`metrics::PipelineMetrics`] you can read at any time.
//!
//! ## Running a pipeline
//!
//! Name each sink ([`NamedSink::new`]), pick [`PipelineOptions`] (the
//! defaults suit most uses), and call [`run_pipeline`] with two
//! cancellation tokens: cancelling `shutdown` (on Ctrl-C, say) stops
//! reading, lets every sink write what it holds, acknowledges and returns
//! [`Outcome`]; cancelling `hard_stop` as well stops at once (what was not
//! acknowledged is delivered again next time). The pipeline also returns
//! when the source ends, and with an error when the source or a sink fails
//! fatally.
//!
//! In production the source is `cdc_postgres::PgSource`; here a source
//! that replays three batches, into a sink that counts them:
//!
//! ```
//! use cdc_core::{AckHandle, Batch, Lsn, Sink, SinkError, Source, SourceError};
//! use cdc_pipeline::{run_pipeline, NamedSink, PipelineOptions};
//! use tokio_util::sync::CancellationToken;
//!
//! /// Hands out its batches, then ends.
//! struct Replay { batches: std::vec::IntoIter<Batch>, ack: AckHandle }
//!
//! impl Source for Replay {
//!     async fn next_batch(&mut self) -> Result<Option<Batch>, SourceError> {
//!         Ok(self.batches.next())
//!     }
//!     fn ack_handle(&self) -> AckHandle {
//!         self.ack.clone()
//!     }
//!     async fn shutdown(&mut self) -> Result<(), SourceError> {
//!         Ok(())
//!     }
//! }
//!
//! /// Counts batches; memory is as durable as a counter needs.
//! struct Count(u64);
//!
//! impl Sink for Count {
//!     async fn write_batch(&mut self, _batch: &Batch) -> Result<(), SinkError> {
//!         self.0 += 1;
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Batch n is durable up to LSN n × 100 once written.
//! let batches: Vec<Batch> = (1..=3)
//!     .map(|seq| Batch { checkpoint: Some(Lsn(seq * 100)), seq, ..Batch::default() })
//!     .collect();
//! let ack = AckHandle::new();
//! let source = Replay { batches: batches.into_iter(), ack: ack.clone() };
//! let sinks = vec![NamedSink::new("count", Box::new(Count(0)))];
//!
//! let mut options = PipelineOptions::default();
//! options.channel_capacity = 2;
//! let (shutdown, hard_stop) = (CancellationToken::new(), CancellationToken::new());
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! let outcome = runtime.block_on(run_pipeline(source, sinks, options, shutdown, hard_stop))?;
//!
//! assert!(outcome.source_ended);
//! assert_eq!(outcome.acknowledged, Lsn(300));
//! assert_eq!(ack.get(), Lsn(300)); // what the source tells its server
//! # Ok(())
//! # }
//! ```
//!
//! `examples/custom-sink` in the repository does the same with a
//! PostgreSQL source and a sink that writes one file per table.
//!
//! ## Stability
//!
//! [`PipelineOptions`], [`NamedSink`] and [`Outcome`] are
//! `#[non_exhaustive]`: build them with [`PipelineOptions::default`] and
//! [`NamedSink::new`] and assign the public fields; [`PipelineError`] and
//! [`metrics::SinkState`] may gain variants, so match them with a `_` arm.

#![warn(missing_docs)]

#[cfg(feature = "failpoints")]
mod failpoint;
pub mod metrics;
mod run;
mod watermark;
mod worker;

pub use run::{
    run_pipeline, run_pipeline_observed, NamedSink, Outcome, PipelineError, PipelineOptions,
};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests;
