//! Streaming changes from a logical replication slot.

mod heartbeat;
mod rows;
mod source;
mod standby;

pub use heartbeat::HEARTBEAT_PREFIX;

pub use source::{PgSource, PgSourceConfig};
