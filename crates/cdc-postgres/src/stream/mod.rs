//! Streaming changes from a logical replication slot.

mod heartbeat;
mod pgwire;
mod rows;
mod source;
mod standby;
mod transport;

pub use heartbeat::HEARTBEAT_PREFIX;

pub use pgwire::PgWireTransport;
pub use source::{PgSource, PgSourceConfig};
pub use transport::{Recv, ReplicationTransport, WireEvent};
