//! # cdc-kafka
//!
//! A [`Sink`](cdc_core::Sink) that writes change events to Kafka through
//! librdkafka (the `rdkafka` crate): one topic per table, the row's primary
//! key as the message key (so every change of a row lands on one partition,
//! in commit order), the Debezium-style JSON envelope as the value, and a
//! tombstone after each delete. [`KafkaSink`] says what each message
//! carries.
//!
//! ## Durability
//!
//! A batch counts as durable only when every message's delivery report is
//! back: the producer is idempotent, waits for `acks=all`, and never lets a
//! delivery expire, so a resent message can never land after a newer
//! change of its key. While brokers cannot be reached the sink keeps
//! trying (and logs a warning every `timeouts.stall_warning`); errors no
//! retry can fix (authorization, a missing topic without `create_topics`,
//! a message too large) are fatal.
//!
//! ## Using it
//!
//! In the `cdc-engine` binary it is `type: kafka` of `sinks:`
//! (`docs/sinks/kafka.md` lists every key). As a library, build a
//! [`KafkaSinkConfig`] (from YAML with serde, or in code with
//! [`KafkaSinkConfig::new`]), connect, and hand the sink to
//! `cdc_pipeline::run_pipeline` as
//! `NamedSink::new("kafka", Box::new(sink))`, or write batches yourself:
//!
//! ```no_run
//! use cdc_core::{Batch, Sink, SinkError};
//! use cdc_kafka::{CreateTopics, KafkaSink, KafkaSinkConfig};
//!
//! # async fn f(batch: Batch) -> Result<(), SinkError> {
//! let mut config = KafkaSinkConfig::new(["127.0.0.1:9092"]);
//! config.topic = Some("shop.{schema}.{table}".into());
//! config.create_topics = Some(CreateTopics::default());
//! // "shop" is the pipeline's name: the envelope's `source.name`, and the
//! // client id `cdc-shop`.
//! let mut sink = KafkaSink::connect(&config, "shop").await?;
//! sink.write_batch(&batch).await?; // returns once Kafka has every message
//! sink.close().await?;
//! # Ok(()) }
//! ```
//!
//! The same settings from YAML:
//!
//! ```
//! use cdc_kafka::KafkaSinkConfig;
//!
//! let config: KafkaSinkConfig = serde_yaml::from_str(
//!     "brokers: [127.0.0.1:9092]\ntopic: 'shop.{schema}.{table}'\ncreate_topics: {}\n",
//! ).unwrap();
//! assert!(config.validate().is_empty());
//! ```
//!
//! [`KafkaSinkConfig`] and its sections are `#[non_exhaustive]` (a later
//! version may add keys): start from [`KafkaSinkConfig::new`] or `Default`
//! and assign the fields.

#![warn(missing_docs)]

mod client;
mod config;
mod error;
mod route;
mod sink;

pub use config::{Batching, Compression, CreateTopics, KafkaSinkConfig, Timeouts};
pub use sink::KafkaSink;

#[cfg(test)]
mod tests;
