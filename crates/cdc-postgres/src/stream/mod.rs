//! Streaming changes from a logical replication slot: [`PgSource`], a
//! state machine over the phases of a source (its states and transitions
//! are drawn in `source.rs`, each phase's code is in a file of its own).

mod changes;
mod config;
mod connect;
mod context;
mod discovery;
mod events;
mod handoff;
mod heartbeat;
mod reconnect;
mod rows;
mod snapshots;
mod source;
mod standby;
mod state;
mod streaming;

pub use config::PgSourceConfig;
pub use heartbeat::HEARTBEAT_PREFIX;
pub use source::PgSource;
