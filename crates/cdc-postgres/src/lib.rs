//! # cdc-postgres
//!
//! The PostgreSQL side of the toolkit: a [`PgSource`] that streams row
//! changes from a logical replication slot (`pgoutput`), the pure
//! [`pgoutput`] decoder, the [`value`] parser shared with the snapshot
//! reader, and the [`setup`] steps that prepare a database (or say what is
//! missing).
//!
//! Values are rendered deterministically: every connection pins
//! `DateStyle=ISO`, `TimeZone=UTC`, `IntervalStyle=postgres`,
//! `extra_float_digits=3` and `bytea_output=hex` ([`conn::PINNED_SETTINGS`]).

pub mod catalog;
pub mod conn;
mod error;
mod failpoint;
pub mod ident;
pub mod incremental;
pub mod inspect;
pub mod load;
pub mod pgoutput;
pub mod replication;
pub mod setup;
pub mod snapshot;
pub mod stream;
pub mod value;

pub use error::{PgError, StreamNames};
/// A failpoint for the engine's own code (test builds only; see the
/// `failpoints` feature).
#[cfg(feature = "failpoints")]
#[doc(hidden)]
pub use failpoint::reached as failpoint_reached;
pub use incremental::IncrementalSettings;
pub use load::{Chunking, SnapshotMode, SnapshotSettings};
pub use stream::{PgSource, PgSourceConfig};
