//! # cdc-core
//!
//! The vocabulary every crate of this PostgreSQL change-data-capture
//! toolkit shares: the event model, the [`Source`] and [`Sink`] traits, the
//! acknowledgement that lets a replication slot move on, classified errors,
//! the configuration shapes sinks share ([`settings`]), and the
//! Debezium-style JSON encoder ([`encode`]). It has no runtime and no I/O:
//! depend on it to write a sink or a source.
//!
//! The other crates: `cdc-postgres` (the PostgreSQL [`Source`]),
//! `cdc-pipeline` (runs a source into sinks), `cdc-kafka`, `cdc-nats` and
//! `cdc-es` (sinks), `cdc-engine` (the YAML-configured binary).
//!
//! ## The event model
//!
//! A source emits [`Batch`]es of [`Event`]s in stream order. A row change
//! is a [`ChangeEvent`]: an [`Op`], the table's [`TableSchema`] (shared
//! behind an `Arc`, so column names are not repeated per row), the old and
//! new [`Row`]s of typed [`Value`]s (positional: `values()[i]` belongs to
//! `columns[i]`), and a [`SourceInfo`] whose `(commit_lsn, ordinal)`
//! identifies the change; a change delivered twice carries the same
//! position. Everything else (schema changes, snapshot boundaries,
//! heartbeats) is a [`ControlEvent`], which sinks may ignore. Text-like
//! values hold a [`Text`], which reads as a `str`; rows built with a
//! [`RowsBuilder`] share their memory with the other rows of their batch.
//!
//! Building an event by hand and rendering it the way every bundled sink
//! does:
//!
//! ```
//! use std::sync::Arc;
//! use cdc_core::encode::DebeziumJson;
//! use cdc_core::{
//!     ChangeEvent, Column, Op, ReplicaIdentity, Row, SourceInfo, TableName, TableSchema, Value,
//! };
//!
//! let column = |name: &str, type_name: &str, is_key: bool| Column {
//!     name: name.into(),
//!     type_oid: 0,
//!     type_name: type_name.into(),
//!     type_modifier: -1,
//!     nullable: !is_key,
//!     is_key,
//! };
//! let users = Arc::new(TableSchema {
//!     database: "app".into(),
//!     oid: 16384,
//!     name: TableName::new("public", "users"),
//!     columns: vec![column("id", "int4", true), column("name", "text", false)],
//!     replica_identity: ReplicaIdentity::Default,
//! });
//! let insert = ChangeEvent {
//!     op: Op::Insert,
//!     table: users,
//!     before: None,
//!     after: Some(Row::new(vec![Value::Int4(1), Value::Text("ann".into())])),
//!     source: SourceInfo::default(),
//! };
//!
//! let mut json = Vec::new();
//! DebeziumJson::new("shop").encode(&insert, 0, &mut json);
//! let json = String::from_utf8(json).unwrap();
//! assert!(json.starts_with(r#"{"before":null,"after":{"id":1,"name":"ann"},"source":{"#));
//! assert!(json.ends_with(r#""op":"c","ts_ms":0}"#));
//! ```
//!
//! ## Writing a sink
//!
//! Implement [`Sink`]. The contract, in short (the trait documents it in
//! full): `write_batch` returns `Ok` only once the whole batch is durable,
//! because the slot then moves past it; batches come in order, one call at
//! a time; delivery is at-least-once, so a batch may come again after a
//! retry or a restart. Classify failures with [`SinkError::retryable`]
//! (the same batch is written again after a backoff) or
//! [`SinkError::fatal`] (the pipeline stops):
//!
//! ```
//! use cdc_core::{encode::DebeziumJson, Batch, Event, Sink, SinkError};
//!
//! /// Prints each row change as one line of JSON.
//! struct Print { enc: DebeziumJson, buf: Vec<u8> }
//!
//! impl Sink for Print {
//!     async fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
//!         for event in &batch.events {
//!             if let Event::Change(change) = event {
//!                 self.buf.clear();
//!                 self.enc.encode(change, 0, &mut self.buf);
//!                 println!("{}", String::from_utf8_lossy(&self.buf));
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//! ```
//!
//! Run it with `cdc-pipeline` (`run_pipeline`), which needs this crate
//! only. To offer it as a `type:` of the `cdc-engine` binary's `sinks:`,
//! implement [`SinkSettings`] for its `serde` configuration struct, built
//! from the shapes of [`settings`] ([`settings::Tls`], [`settings::Auth`],
//! [`settings::Secret`], durations such as `30s`).
//!
//! ## Writing a source
//!
//! Implement [`Source`]: `next_batch` hands out batches numbered 1, 2, 3, …
//! in stream order, and the source reports to its server only what the
//! consumer acknowledged through the source's [`AckHandle`] (a consumer
//! calls [`AckHandle::durable`] once a batch is durable everywhere).
//! [`SourceStatus`] carries the live phase and counters a source reports;
//! [`Backoff`] spaces out its retries.
//!
//! ## Stability
//!
//! Enums that later versions may extend are `#[non_exhaustive]` ([`Event`],
//! [`ControlEvent`], [`Value`], [`Phase`], [`SnapshotMarker`],
//! [`settings::Credential`]): match them with a `_` arm. [`Op`],
//! [`ErrorClass`] and [`ReplicaIdentity`] are exhaustive on purpose (each
//! says why). Configuration structs such as [`settings::Tls`] and
//! [`settings::Auth`] are `#[non_exhaustive]` too: start from their
//! `Default` and assign the fields.

#![warn(missing_docs)]

mod backoff;
mod batch;
pub mod encode;
mod error;
mod event;
mod lsn;
mod rows_builder;
mod schema;
pub mod settings;
mod sink;
mod sink_settings;
mod source;
mod status;
mod status_progress;
mod text;
mod value;

pub use backoff::Backoff;
pub use batch::{AckHandle, AckWatch, Batch, ReadClaims, ReadFence};
pub use error::{error_chain, ErrorClass, SinkError, SourceError};
pub use event::{ChangeEvent, ControlEvent, Event, Op, SnapshotMarker, SourceInfo};
pub use lsn::{Lsn, ParseLsnError};
pub use rows_builder::{RowsBuilder, TextKind, TextWriter};
pub use schema::{Column, ReplicaIdentity, TableName, TableSchema};
pub use sink::{BoxFuture, DynSink, Sink};
pub use sink_settings::{open_sink, section_secrets, SinkSettings};
pub use source::Source;
pub use status::{
    IncrementalProgress, IncrementalState, Phase, SnapshotProgress, SourceStatus, TableProgress,
};
pub use text::Text;
pub use value::{Row, Value};
