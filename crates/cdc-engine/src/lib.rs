//! # cdc-engine
//!
//! Runs a change-data-capture pipeline described by a YAML file: a
//! PostgreSQL source, a bounded channel, and one or more sinks, with the
//! replication slot acknowledged only up to what every sink made durable.
//!
//! The binary is `cdc-engine run --config pipeline.yaml` (and
//! `cdc-engine validate --config pipeline.yaml` and `cdc-engine check
//! --config pipeline.yaml`, see [`check`]); this library exposes the
//! same pieces for embedding: [`config`], [`pipeline::run_pipeline`] (works
//! with any [`cdc_core::Source`] and [`cdc_core::Sink`]s), and the built-in
//! [`sinks`].

pub mod check;
pub mod config;
pub mod engine_state;
pub mod http;
pub mod lag_poll;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod run;
pub mod secrets;
pub mod sinks;
pub mod status_report;
