//! # cdc-engine
//!
//! Runs a change-data-capture pipeline described by a YAML file: a
//! PostgreSQL source, a bounded channel, and one or more sinks, with the
//! replication slot acknowledged only up to what every sink made durable.
//!
//! The binary is `cdc-engine run --config pipeline.yaml` (and
//! `cdc-engine validate --config pipeline.yaml` and `cdc-engine check
//! --config pipeline.yaml`, see [`check`]); this library exposes the
//! same pieces for embedding: [`config`], the built-in [`sinks`], and the
//! bundled ones behind the features `kafka`, `nats` and `elasticsearch`.
//! The pipeline runtime itself is the `cdc-pipeline` crate (re-exported
//! here as [`pipeline`]): a custom sink needs only that crate and
//! `cdc-core`, not this one.

pub mod check;
pub mod config;
pub(crate) mod engine_state;
pub(crate) mod http;
pub(crate) mod lag_poll;
pub(crate) mod metrics;
pub(crate) mod progress;
pub mod run;
pub mod secrets;
pub mod sinks;
pub mod status_report;

/// The pipeline runtime (`cdc-pipeline`): `run_pipeline`, `NamedSink`,
/// `PipelineOptions`, …
pub use cdc_pipeline as pipeline;
