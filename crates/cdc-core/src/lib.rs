//! # cdc-core
//!
//! The vocabulary shared by every crate of this PostgreSQL change-data-capture
//! toolkit: the event model, the [`Source`] and [`Sink`] traits, checkpoints,
//! errors and the Debezium-style JSON encoder.
//!
//! ## The event model
//!
//! A [`Batch`] holds [`Event`]s in stream order. A row change is a
//! [`ChangeEvent`]: an [`Op`], the table's [`TableSchema`] (shared behind an
//! `Arc`, so column names are never repeated per row), positional
//! [`Row`]s of typed [`Value`]s, and a [`SourceInfo`] whose
//! `(commit_lsn, ordinal)` identifies the change.
//!
//! ## Writing a sink
//!
//! Implement [`Sink`]: `write_batch` must return only once the batch is
//! durable, and must tolerate seeing a batch again (delivery is
//! at-least-once). Classify failures as [`SinkError::retryable`] or
//! [`SinkError::fatal`]. To render events, use [`encode::DebeziumJson`]:
//!
//! ```
//! use cdc_core::{encode::DebeziumJson, Batch, Event, Sink, SinkError};
//!
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
//! The engine (`cdc-engine`) runs a source and any number of sinks, and
//! acknowledges to PostgreSQL only the minimum position all sinks made
//! durable ([`AckHandle`]).

mod backoff;
mod batch;
pub mod encode;
mod error;
mod event;
mod lsn;
mod schema;
pub mod settings;
mod sink;
mod sink_settings;
mod source;
mod status;
mod value;

pub use backoff::Backoff;
pub use batch::{AckHandle, AckWatch, Batch, ReadClaims, ReadFence};
pub use error::{error_chain, ErrorClass, SinkError, SourceError};
pub use event::{ChangeEvent, ControlEvent, Event, Op, SnapshotMarker, SourceInfo};
pub use lsn::{Lsn, ParseLsnError};
pub use schema::{Column, ReplicaIdentity, TableName, TableSchema};
pub use sink::{BoxFuture, DynSink, Sink};
pub use sink_settings::{open_sink, section_secrets, SinkSettings};
pub use source::Source;
pub use status::{Phase, SnapshotProgress, SourceStatus, TableProgress};
pub use value::{Row, Value};
