//! [`SnapshotRequest`]: what the snapshot phase is started with.

use cdc_core::{SourceStatus, TableName};
use pgwire_replication::ReplicationConfig;
use sqlx::postgres::PgConnectOptions;

use super::settings::{SnapshotMode, SnapshotSettings};
use crate::setup::ServerInfo;

/// What the snapshot phase starts from: the source's configuration, as
/// far as the snapshot needs it, and what the preflight learned.
pub(crate) struct SnapshotRequest {
    /// `initial` or `snapshot_only` (never `never`).
    pub mode: SnapshotMode,
    /// The snapshot's settings.
    pub settings: SnapshotSettings,
    /// The tables to copy.
    pub tables: Vec<TableName>,
    /// Options of every snapshot connection (each sets its own role name).
    pub options: PgConnectOptions,
    /// The server, as the preflight found it.
    pub server: ServerInfo,
    /// The replication slot.
    pub slot: String,
    /// The publication whose column lists and row filters the snapshot
    /// applies (it may not exist in `snapshot_only` mode: then every
    /// column and row is read).
    pub publication: String,
    /// The configured column selections, applied to every table read
    /// (before PostgreSQL 15 the publication cannot hold them).
    pub local_subsets: crate::local_subsets::LocalSubsets,
    /// Whether the slot may be created.
    pub create_slot: bool,
    /// Create it as a failover slot (PostgreSQL 17+).
    pub slot_failover: bool,
    /// The replication session that creates the slot with an exported
    /// snapshot (it starts the stream once the snapshot is done).
    pub replication: ReplicationConfig,
    /// Where snapshot progress is reported.
    pub status: SourceStatus,
}
