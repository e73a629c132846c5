//! # cdc-sink-conformance
//!
//! The test kit of the sinks of this toolkit: what the tests of every sink
//! crate, the example sinks and the integration tests share.
//!
//! - [`battery`]: the conformance battery every [`Sink`](cdc_core::Sink)
//!   runs (ordering, retry of the same batch, replay convergence, fatal
//!   and retryable errors, close), given a [`battery::Subject`] that reads
//!   back what the sink stored;
//! - [`fixture`]: hand-made tables, change events and batches;
//! - [`replay`]: change events read back from a sink's output, rebuilt
//!   into rows by key and compared with what they should be;
//! - [`poll`]: waiting until something holds;
//! - [`CutProxy`]: a TCP relay whose connections a test can cut, to make
//!   a server unreachable.
//!
//! It depends on `cdc-core` only (and tokio, serde_json), so any sink crate
//! can take it as a dev-dependency.

pub mod battery;
mod cut_proxy;
pub mod fixture;
pub mod poll;
pub mod replay;

pub use cut_proxy::CutProxy;
