//! # cdc-pipeline
//!
//! The runtime that drives a change-data-capture [`Source`](cdc_core::Source)
//! into any number of [`Sink`](cdc_core::Sink)s, and acknowledges to the
//! source only what every sink made durable. It depends on `cdc-core` (and
//! tokio) only, so a custom sink runs on it without any of the bundled sink
//! crates (and without their C and C++ build chains).
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
//!   exponential backoff and jitter; a fatal one stops the pipeline with
//!   [`PipelineError::Sink`].
//! * **Acknowledgement watermark**: the source's
//!   [`AckHandle`](cdc_core::AckHandle) moves to the minimum position (and
//!   batch count) every sink made durable, never further.
//! * **Metrics**: [`run_pipeline_observed`] counts what flows in a
//!   [`metrics::PipelineMetrics`] you can read at any time.
//!
//! ```no_run
//! use cdc_core::{Sink, Source};
//! use cdc_pipeline::{run_pipeline, NamedSink, PipelineOptions};
//! use tokio_util::sync::CancellationToken;
//!
//! // `source`: e.g. a `cdc_postgres::PgSource`; `sink`: your own `Sink`.
//! async fn run(source: impl Source, sink: impl Sink + 'static) -> Result<(), cdc_pipeline::PipelineError> {
//!     let sinks = vec![NamedSink::new("mine", Box::new(sink))];
//!     // Cancel `shutdown` (on Ctrl-C, say) to stop reading, drain,
//!     // acknowledge and return; cancel `hard_stop` to stop at once.
//!     let (shutdown, hard_stop) = (CancellationToken::new(), CancellationToken::new());
//!     let outcome =
//!         run_pipeline(source, sinks, PipelineOptions::default(), shutdown, hard_stop).await?;
//!     println!("acknowledged up to {}", outcome.acknowledged);
//!     Ok(())
//! }
//! ```
//!
//! The `cdc-engine` binary runs its YAML-configured pipelines on this
//! crate, with its built-in and bundled sinks.

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
#[allow(clippy::unwrap_used)]
mod tests;
