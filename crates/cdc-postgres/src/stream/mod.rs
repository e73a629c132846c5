//! Streaming changes from a logical replication slot.

mod pgwire;
mod rows;
mod source;
mod transport;

pub use pgwire::PgWireTransport;
pub use source::{PgSource, PgSourceConfig};
pub use transport::{Recv, ReplicationTransport, WireEvent};
