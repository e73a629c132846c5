//! # cdc-engine
//!
//! Runs a change-data-capture pipeline described by a YAML file: a
//! PostgreSQL source, a bounded channel per sink, and one or more sinks
//! (stdout and file built in; Kafka, NATS and Elasticsearch behind the
//! features `kafka`, `nats` and `elasticsearch`, all on by default), with
//! the replication slot acknowledged only up to what every sink made
//! durable.
//!
//! ## The binary
//!
//! ```text
//! cdc-engine run      --config pipeline.yaml   # until SIGINT/SIGTERM (a second signal stops at once)
//! cdc-engine validate --config pipeline.yaml   # the file alone, no connection; exit 2 when invalid
//! cdc-engine check    --config pipeline.yaml   # what the server lacks, with fixes; exit 0 ready, 1 blocked, 2 cannot check
//! cdc-engine status   --config pipeline.yaml   # slot, publication, snapshot job; exit 0 healthy, 1 degraded, 2 unknown
//! cdc-engine snapshot --config pipeline.yaml --table public.t [--where 'id > 10']
//!                                              # ask the running pipeline for an incremental snapshot
//! ```
//!
//! A minimal file (every key is described in `docs/configuration.md`, and
//! on the fields of [`config::Config`]):
//!
//! ```yaml
//! name: shop
//! source:
//!   url: postgres://cdc:${PGPASSWORD}@db:5432/app
//!   tables: [public.orders, public.customers]
//! sinks:
//!   - type: kafka
//!     brokers: [kafka:9092]
//! metrics: { listen: 0.0.0.0:9187 }   # /metrics, /status, /healthz
//! ```
//!
//! ## Embedding the engine
//!
//! This library is the binary's insides. Load and validate a configuration
//! with [`config::load_config`] (a file) or [`config::parse_config`] (text);
//! both resolve `${VAR}` from the environment and report every problem
//! with the field it is about ([`config::ConfigError`]):
//!
//! ```
//! use cdc_engine::config::parse_config;
//!
//! let config = parse_config(
//!     "name: shop\n\
//!      source:\n  url: postgres://cdc:secret@db/app\n  tables: [public.orders]\n\
//!      sinks:\n  - type: file\n    path: orders.jsonl\n",
//! )?;
//! assert_eq!(config.sinks[0].kind(), "file");
//! assert_eq!(config.pipeline.channel_capacity, 8); // the default
//! assert!(!config.source.redacted_url().contains("secret"));
//!
//! let broken = parse_config("source: { url: x, tables: [orders] }\nsinks: []\n").unwrap_err();
//! assert!(broken.problems.iter().any(|p| p.field == "source.tables[0]"));
//! # Ok::<(), cdc_engine::config::ConfigError>(())
//! ```
//!
//! Then [`run::run`] does what `cdc-engine run` does (the HTTP endpoint
//! included, when the file has a `metrics` section) until the token
//! `shutdown` is cancelled:
//!
//! ```no_run
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! // Like the binary: pick rustls' ring provider for the whole process
//! // (two providers are linked in, and TLS setup panics on the ambiguity).
//! let _ = rustls::crypto::ring::default_provider().install_default();
//! let config = cdc_engine::config::load_config("pipeline.yaml".as_ref())?;
//! let (shutdown, hard_stop) = (CancellationToken::new(), CancellationToken::new());
//! // Cancel `shutdown` to drain and acknowledge, then `hard_stop` to stop at once.
//! let outcome = cdc_engine::run::run(config, shutdown, hard_stop).await?;
//! println!("stopped; acknowledged up to {}", outcome.acknowledged);
//! # Ok(())
//! # }
//! ```
//!
//! [`check::main`], [`status_report::status`] and
//! [`snapshot_request::request_snapshot`] are the `check`, `status` and
//! `snapshot` commands; [`secrets::Secrets`] masks a configuration's
//! passwords in any text (the binary's log writer is
//! [`secrets::ScrubbingStderr`]).
//!
//! ## Custom sinks
//!
//! A sink of your own does not need this crate: run it with the pipeline
//! runtime, `cdc-pipeline` (re-exported here as [`pipeline`]), which needs
//! only `cdc-core`. To offer it as a `type:` of this binary's `sinks:`,
//! see "Adding a sink" in `docs/architecture.md`.
//!
//! ## Stability
//!
//! The configuration structs and enums, [`run::RunError`] and the status
//! report types are `#[non_exhaustive]`: every new key of the file is a new
//! field. Get a [`config::Config`] from [`config::parse_config`] or
//! [`config::load_config`], change its public fields if you need to, and
//! check the result with [`config::validate`]; match the enums with a `_`
//! arm.

#![warn(missing_docs)]

pub mod check;
pub mod config;
pub(crate) mod engine_state;
pub(crate) mod http;
pub(crate) mod lag_poll;
pub(crate) mod metrics;
pub mod one_shot;
pub(crate) mod progress;
pub mod resnapshot;
pub mod run;
pub mod secrets;
pub mod sinks;
pub mod snapshot_request;
pub mod status_report;

/// The pipeline runtime (`cdc-pipeline`): `run_pipeline`, `NamedSink`,
/// `PipelineOptions`, …
pub use cdc_pipeline as pipeline;
