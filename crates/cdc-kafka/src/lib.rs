//! # cdc-kafka
//!
//! A [`Sink`](cdc_core::Sink) that writes change events to Kafka through
//! librdkafka (the `rdkafka` crate): one topic per table, the row's primary
//! key as the message key (so every change of a row lands on one partition,
//! in commit order), the Debezium-style JSON envelope as the value, and a
//! tombstone after each delete.
//!
//! A batch counts as durable only when every message's delivery report is
//! back (idempotent producer, `acks=all`, deliveries that never expire, so
//! a resent message can never land after a newer change of its key). Used
//! by `cdc-engine` as `type: kafka`, or on its own:
//!
//! ```no_run
//! # async fn f(batch: cdc_core::Batch) -> Result<(), cdc_core::SinkError> {
//! use cdc_core::Sink;
//! use cdc_kafka::{KafkaSink, KafkaSinkConfig};
//!
//! let config: KafkaSinkConfig = serde_yaml::from_str(
//!     "brokers: [127.0.0.1:9092]\ntopic: 'cdc.{schema}.{table}'\n",
//! ).map_err(|e| cdc_core::SinkError::fatal(e.to_string()))?;
//! let mut sink = KafkaSink::connect(&config, "shop").await?;
//! sink.write_batch(&batch).await?; // returns once Kafka has every message
//! # Ok(()) }
//! ```
//!
//! See `docs/sinks/kafka.md` for every configuration key.

mod client;
mod config;
mod error;
mod route;
mod sink;

pub use config::{Batching, Compression, CreateTopics, KafkaSinkConfig, Timeouts};
pub use sink::KafkaSink;

#[cfg(test)]
mod tests;
