//! # cdc-nats
//!
//! NATS sink for the PostgreSQL CDC toolkit: [`NatsSink`] publishes every
//! row change as one Debezium JSON message
//! ([`cdc_core::encode::DebeziumJson`]) to a subject made from a template,
//! `cdc.{schema}.{table}` by default, into JetStream (durable, the
//! default) or core NATS. Control events are not published.
//!
//! # Using it
//!
//! In the `cdc-engine` binary it is `type: nats` of `sinks:`
//! (`docs/sinks/nats.md` lists every key). As a library, build a
//! [`NatsSinkConfig`] (from YAML or JSON with serde, or in code from
//! [`NatsSinkConfig::default`]), connect, and hand the sink to
//! `cdc_pipeline::run_pipeline` as `NamedSink::new("nats", Box::new(sink))`,
//! or write batches yourself:
//!
//! ```no_run
//! use cdc_core::{Batch, Sink, SinkError};
//! use cdc_nats::{NatsSink, NatsSinkConfig, StreamConfig};
//!
//! # async fn f(batch: Batch) -> Result<(), SinkError> {
//! let mut config = NatsSinkConfig::default(); // nats://127.0.0.1:4222
//! let mut stream = StreamConfig::new("CDC");
//! stream.create = true; // subjects cdc.*.*, file storage, 2 min de-duplication
//! config.stream = Some(stream);
//! // "shop" is the pipeline's name: the envelope's `source.name`, `{prefix}`
//! // by default, and the first part of every `Nats-Msg-Id`.
//! let mut sink = NatsSink::connect(&config, "shop").await?;
//! sink.write_batch(&batch).await?; // returns once every PubAck is in
//! sink.close().await?;
//! # Ok(()) }
//! ```
//!
//! [`NatsSinkConfig`] and [`StreamConfig`] are `#[non_exhaustive]` (a later
//! version may add keys): start from `Default` or [`StreamConfig::new`] and
//! assign the fields. Consumers find the message headers' names in
//! [`MSG_ID_HEADER`], [`OP_HEADER`], [`TABLE_HEADER`] and
//! [`COMMIT_LSN_HEADER`].
//!
//! # JetStream (default)
//!
//! Messages of a batch are published back to back (up to `max_in_flight`
//! PubAcks outstanding) and [`write_batch`](cdc_core::Sink::write_batch)
//! returns only when **every** PubAck arrived. A missing PubAck (timeout,
//! disconnect) is a retryable error: the engine writes the whole batch
//! again, and the server drops the messages it already stored, because
//! each carries a stable `Nats-Msg-Id`:
//!
//! ```text
//! <pipeline>:<database>:<table oid>:<op>:<commit LSN>:<ordinal>    e.g. orders:app:16384:u:0/1A2B3C8:2
//! ```
//!
//! (a snapshot read is identified by its key instead of its position: see
//! [`message_id`]).
//!
//! A replay after a crash is dropped the same way, as long as it arrives
//! within the stream's `duplicate_window`. Other headers: `Cdc-Op`,
//! `Cdc-Table` (`schema.table`), `Cdc-Commit-Lsn`.
//!
//! With `exclusive_stream` (the default) every message after the first of
//! a batch also carries `Nats-Expected-Last-Msg-Id` = its predecessor's id,
//! so a message that a reconnect would store ahead of a lost one is refused
//! and the retried batch stores everything in commit order. This needs a
//! stream written by this sink alone; a foreign last message is a fatal
//! error saying so.
//!
//! # Subjects
//!
//! Placeholders `{prefix}`, `{schema}`, `{table}`, `{op}`. Substituted
//! identifiers are sanitised so that each stays inside its token: `.`, `*`,
//! `>`, white space and control characters become `_`, an empty value
//! becomes `_`; everything else (case, non-ASCII letters) is kept. So
//! `"My Schema"."a.b"` goes to `cdc.My_Schema.a_b`. Two tables whose names
//! differ only in those characters share a subject.
//!
//! # Core NATS (`jetstream: false`)
//!
//! Fire-and-forget: a batch counts as written once flushed to the socket.
//! Not durable — a server or network failure loses messages while the
//! slot moves on. For consumers who accept that.
//!
//! # Errors
//!
//! Unreachable server, timeouts and disconnects are retryable (the client
//! reconnects on its own). Rejected credentials, TLS failures, JetStream not
//! enabled, a missing stream with `stream.create: false`, no stream for a
//! subject and oversized messages are fatal.

#![warn(missing_docs)]

mod classify;
mod config;
mod message;
mod sink;
mod subject;

pub use config::{NatsSinkConfig, Storage, StreamConfig};
pub use message::{message_id, COMMIT_LSN_HEADER, MSG_ID_HEADER, OP_HEADER, TABLE_HEADER};
pub use sink::NatsSink;
