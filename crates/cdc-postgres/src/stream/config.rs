//! [`PgSourceConfig`]: what a [`PgSource`](super::PgSource) is built from.

use std::time::Duration;

use cdc_core::{ReplicaIdentity, SourceStatus, TableName};

use crate::incremental::IncrementalSettings;
use crate::load::SnapshotSettings;
use crate::selection::{TableSelection, TableSubset};

/// Everything [`PgSource::connect`](super::PgSource::connect) needs.
#[derive(Clone)]
#[non_exhaustive]
pub struct PgSourceConfig {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// Tables to capture, by name. [`PgSource::connect`](super::PgSource::connect)
    /// adds the matches of [`selection`](Self::selection)'s patterns and
    /// removes its exclusions.
    pub tables: Vec<TableName>,
    /// Tables to capture by pattern, and tables to leave out; resolved
    /// against the catalog when the source connects (the resolved list is
    /// logged). Default: none.
    pub selection: TableSelection,
    /// Tables captured in part: a column list and a row filter each, set
    /// on the publication (PostgreSQL 15+; needs `create_publication`) and
    /// read back by the snapshot. Default: none.
    pub subsets: Vec<(TableName, TableSubset)>,
    /// Publication name.
    pub publication: String,
    /// Create the publication (or add missing tables) when needed.
    pub create_publication: bool,
    /// When `url` is a hot standby (PostgreSQL 16+): the primary's URL (the
    /// same database), where heartbeats are written; they come back
    /// through the standby's slot. `None`: heartbeats go to `url` (and a
    /// standby with heartbeats on is refused).
    pub primary_url: Option<String>,
    /// Replication slot name (`[a-z0-9_]`).
    pub slot: String,
    /// Create the slot when missing.
    pub create_slot: bool,
    /// Create the slot as a failover slot (PostgreSQL 17+), which standbys
    /// with `sync_replication_slots` keep a synchronised copy of, so that
    /// streaming resumes from it after a failover. Default `false`.
    pub slot_failover: bool,
    /// Replica identities to set before streaming.
    pub replica_identity: Vec<(TableName, ReplicaIdentity)>,
    /// At most this many events per batch.
    pub max_batch_events: usize,
    /// At most about this many bytes of pgoutput data per batch.
    pub max_batch_bytes: usize,
    /// How long a non-empty batch waits for more events.
    pub max_batch_wait: Duration,
    /// How often the acknowledged position is reported to the server.
    pub status_interval: Duration,
    /// Replication events buffered by the protocol client.
    pub buffer_events: usize,
    /// First delay before reconnecting after a transient error.
    pub reconnect_initial: Duration,
    /// Longest delay between reconnection attempts.
    pub reconnect_max: Duration,
    /// Still unable to (re)start the stream this long after the first
    /// failure of a run: stop with [`PgError::Stopped`](crate::PgError)
    /// instead of trying again. `None`: retry for ever.
    pub reconnect_give_up_after: Option<Duration>,
    /// Write a heartbeat (`pg_logical_emit_message`) after this long
    /// without a transaction of the captured tables, so the slot advances
    /// while only other tables write WAL; `None`: no heartbeats.
    pub heartbeat_interval: Option<Duration>,
    /// Several instances share the slot: while another session streams
    /// from it, wait (phase [`Phase::Standby`](cdc_core::Phase::Standby))
    /// and take over when it is released. Without it, a slot in use is an
    /// error retried with backoff.
    pub standby: bool,
    /// How often a standby checks whether the slot became free.
    pub activity_check_interval: Duration,
    /// With patterns in [`selection`](Self::selection): how often the
    /// catalog is checked for tables created or dropped while streaming
    /// (also checked at once when the stream describes a matching table it
    /// does not capture yet). A new match is added to the publication and
    /// captured from its first row: its earlier rows by an incremental
    /// snapshot (with [`incremental`](Self::incremental) enabled). `None`:
    /// the tables resolved at start stay the captured ones. Default 10
    /// seconds.
    pub discovery_interval: Option<Duration>,
    /// The initial snapshot, if any.
    pub snapshot: SnapshotSettings,
    /// Incremental snapshots while streaming (off by default); their
    /// tables live in `snapshot.metadata_schema`.
    pub incremental: IncrementalSettings,
    /// Where the source reports its phase, positions and snapshot
    /// progress; pass a clone of a handle to watch it from elsewhere
    /// (e.g. before [`PgSource::connect`](super::PgSource::connect) returns).
    pub status: SourceStatus,
}

impl std::fmt::Debug for PgSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSourceConfig")
            .field("url", &"<redacted>")
            .field("tables", &self.tables)
            .field("publication", &self.publication)
            .field("slot", &self.slot)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("standby", &self.standby)
            .finish_non_exhaustive()
    }
}

impl PgSourceConfig {
    /// A configuration with the usual defaults for the tuning knobs.
    pub fn new(
        url: impl Into<String>,
        tables: Vec<TableName>,
        publication: impl Into<String>,
        slot: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            tables,
            selection: TableSelection::default(),
            subsets: Vec::new(),
            publication: publication.into(),
            create_publication: true,
            primary_url: None,
            slot: slot.into(),
            create_slot: true,
            slot_failover: false,
            replica_identity: Vec::new(),
            max_batch_events: 2048,
            max_batch_bytes: 8 << 20,
            max_batch_wait: Duration::from_millis(10),
            status_interval: Duration::from_secs(1),
            buffer_events: 1024,
            reconnect_initial: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(30),
            reconnect_give_up_after: None,
            heartbeat_interval: Some(Duration::from_secs(10)),
            standby: false,
            activity_check_interval: Duration::from_secs(10),
            discovery_interval: Some(Duration::from_secs(10)),
            snapshot: SnapshotSettings::default(),
            incremental: IncrementalSettings::default(),
            status: SourceStatus::new(),
        }
    }
}
