//! # cdc-postgres
//!
//! The PostgreSQL side of the toolkit: a [`PgSource`] that copies the rows
//! a table already has (a consistent, chunked, parallel, resumable
//! snapshot) and then streams every later change from a logical
//! replication slot (`pgoutput`), with no gap and no overlap between the
//! two. It implements [`cdc_core::Source`]: batches of
//! [`cdc_core::Event`]s, each batch acknowledged once your code has made it
//! durable, and only then confirmed to the server.
//!
//! ## Quick start
//!
//! ```no_run
//! use cdc_core::{Event, Source, TableName};
//! use cdc_postgres::{PgSource, PgSourceConfig, SnapshotMode};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = PgSourceConfig::new(
//!     "postgres://cdc:secret@127.0.0.1:5432/app",
//!     vec![TableName::new("public", "users")],
//!     "app_pub",  // publication (created when missing)
//!     "app_slot", // replication slot (created when missing)
//! );
//! config.snapshot.mode = SnapshotMode::Initial; // existing rows first
//! let mut source = PgSource::connect(config).await?;
//! let ack = source.ack_handle();
//! while let Some(batch) = source.next_batch().await? {
//!     for event in &batch.events {
//!         if let Event::Change(change) = event {
//!             println!("{:?} {}", change.op, change.table.name);
//!         }
//!     }
//!     // Handled and durable: the slot may now release these changes.
//!     ack.durable(&batch);
//! }
//! source.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Nothing is confirmed to PostgreSQL before [`cdc_core::AckHandle::durable`]
//! is called for the batch that carried it, so a crash at any point
//! replays what was not acknowledged. The acknowledgement is pushed to the
//! replication connection at once, even while your code is not reading.
//!
//! ## Snapshot and handoff
//!
//! With [`SnapshotMode::Initial`] the slot is created with an exported
//! snapshot; every chunk of every table is read under that snapshot, and
//! streaming starts at the slot's consistent point, so each row committed
//! before it arrives once as a read (`Op::Read`) and each later change once
//! from the stream. Chunks are coordinated through two tables in the
//! metadata schema ([`SnapshotSettings::metadata_schema`]), so several
//! instances can share a snapshot and a restarted one resumes where the
//! durable chunks end. [`SnapshotMode::SnapshotOnly`] copies and ends,
//! [`SnapshotMode::Never`] only streams.
//!
//! ## Several instances, one slot
//!
//! With [`PgSourceConfig::standby`] set, an instance that finds the slot in
//! use waits ([`cdc_core::Phase::Standby`]) and takes over when the
//! streaming one goes away.
//!
//! ## Errors
//!
//! Every failure is a [`PgError`], classified as retryable (connection
//! loss, server restarts, a slot busy elsewhere: the source reconnects by
//! itself with backoff) or fatal (missing privileges, `wal_level` not
//! `logical`, a dropped slot: the message says what to change).
//!
//! ## Other modules
//!
//! - [`pgoutput`]: a pure decoder of pgoutput messages (no I/O).
//! - [`value`]: the text-value parser shared by the stream and the
//!   snapshot, so both render a value identically.
//! - [`setup`]: `check_source`, a read-only report of what a database lacks
//!   for change data capture, each finding with what to do.
//! - [`inspect`]: a read-only look at a pipeline's slot, publication and
//!   snapshot job.
//! - [`conn`], [`ident`]: connection URLs and identifier quoting.
//!
//! Values are rendered deterministically: every connection pins
//! `DateStyle=ISO`, `TimeZone=UTC`, `IntervalStyle=postgres`,
//! `extra_float_digits=3` and `bytea_output=hex` ([`conn::PINNED_SETTINGS`]).
//!
//! ## Features
//!
//! - `failpoints`: named fault-injection points for the toolkit's fault
//!   tests; never enable it in a normal build.
//! - `internals`: makes the internal building blocks public for the
//!   toolkit's own tests and benchmarks; not a stable API.

#![warn(missing_docs)]

pub mod conn;
mod error;
mod failpoint;
pub mod ident;
pub mod incremental;
pub mod inspect;
pub mod invalidation;
mod load;
pub mod local_subsets;
pub mod pgoutput;
mod schema_ddl;
pub mod selection;
pub mod setup;
mod stream;
mod target_session;
pub mod value;

/// Declares modules that are private to the crate, or public with the
/// `internals` feature: the building blocks the toolkit's own tests and
/// benchmarks drive directly. They are not a stable API.
macro_rules! internal_modules {
    ($($(#[$meta:meta])* $name:ident;)*) => {$(
        $(#[$meta])*
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        $(#[$meta])*
        #[cfg(not(feature = "internals"))]
        mod $name;
    )*};
}

internal_modules! {
    /// Table and column descriptions from the catalog, shared by the
    /// stream's Relation messages and the snapshot.
    catalog;
    /// The replication connection behind a narrow transport trait.
    replication;
    /// Building blocks of the initial snapshot (planning, reading, metadata).
    /// Some of their entry points (whole-chunk reads, plain chunk inserts,
    /// totals) are used only by the tests that drive them directly.
    #[cfg_attr(not(feature = "internals"), allow(dead_code, unused_imports))]
    snapshot;
}

pub use error::{PgError, ReplicationError, StreamNames};
/// A failpoint for the engine's own code (test builds only; see the
/// `failpoints` feature).
#[cfg(feature = "failpoints")]
#[doc(hidden)]
pub use failpoint::reached as failpoint_reached;
pub use incremental::IncrementalSettings;
pub use load::{ChunkRows, Chunking, SnapshotMode, SnapshotSettings};
pub use snapshot::CopyFormat;
pub use stream::{PgSource, PgSourceConfig, HEARTBEAT_PREFIX};
