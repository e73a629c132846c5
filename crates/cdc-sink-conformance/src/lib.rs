//! # cdc-sink-conformance
//!
//! The test kit of the sinks of this toolkit: what the tests of every sink
//! crate, the example sinks and the integration tests share.
//!
//! - [`replay`]: change events read back from a sink's output, rebuilt
//!   into rows by key and compared with what they should be;
//! - [`poll`]: waiting until something holds.
//!
//! It depends on `cdc-core` only (and tokio, serde_json), so any sink crate
//! can take it as a dev-dependency.

pub mod poll;
pub mod replay;
