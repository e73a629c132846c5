//! NATS sink for the PostgreSQL CDC toolkit.
//!
//! [`NatsSink`] publishes every row change as one Debezium JSON message
//! ([`cdc_core::encode::DebeziumJson`]) to a subject made from a template,
//! `cdc.{schema}.{table}` by default. Control events are not published.
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

mod classify;
mod config;
mod message;
mod sink;
mod subject;

pub use config::{NatsSinkConfig, Storage, StreamConfig};
pub use message::{message_id, COMMIT_LSN_HEADER, MSG_ID_HEADER, OP_HEADER, TABLE_HEADER};
pub use sink::NatsSink;
