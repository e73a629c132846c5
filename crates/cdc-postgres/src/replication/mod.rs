//! The replication connection, shared by the snapshot handoff ([`crate::load`])
//! and streaming ([`crate::stream`]): a small [`ReplicationTransport`] seam
//! and its implementation over the `pgwire-replication` crate.

mod pgwire;
mod transport;

pub use pgwire::PgWireTransport;
pub use transport::{Recv, ReplicationTransport, WireEvent};
