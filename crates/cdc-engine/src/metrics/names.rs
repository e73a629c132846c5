//! Every metric the engine exposes: name, type and help text, in one place
//! (`docs/operations-metrics.md` lists the same table for users).

/// The type of a metric family, as written on its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (restarts at zero with the process).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted into buckets.
    Histogram,
}

impl Kind {
    /// The keyword of the `# TYPE` line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// The family name (`cdc_…`).
    pub name: &'static str,
    /// The type.
    pub kind: Kind,
    /// The `# HELP` text.
    pub help: &'static str,
}

pub(crate) const fn metric(name: &'static str, kind: Kind, help: &'static str) -> Metric {
    Metric { name, kind, help }
}

/// Change events read from the source, labels `table` and `op`
/// (`read`, `insert`, `update`, `delete`, `truncate`).
pub const SOURCE_EVENTS: Metric = metric(
    "cdc_source_events_total",
    Kind::Counter,
    "Change events received from the source, by table and operation.",
);
/// Reconnections of the replication stream.
pub const SOURCE_RECONNECTS: Metric = metric(
    "cdc_source_reconnects_total",
    Kind::Counter,
    "Reconnections of the replication stream.",
);
/// Heartbeats the source wrote to the server.
pub const SOURCE_HEARTBEATS: Metric = metric(
    "cdc_source_heartbeats_total",
    Kind::Counter,
    "Heartbeat messages the source wrote to the server.",
);
/// Changes the server sent for relations the source does not capture,
/// label `relation`.
pub const SOURCE_UNTRACKED_CHANGES: Metric = metric(
    "cdc_source_untracked_changes_total",
    Kind::Counter,
    "Changes received for relations that are not captured (not in source.tables), by relation.",
);
/// The phase, label `phase`; 1 for the current one, 0 for the others.
pub const PHASE: Metric = metric(
    "cdc_phase",
    Kind::Gauge,
    "Current phase of the pipeline (1 for the current phase, 0 otherwise).",
);
/// The last WAL position received from the server.
pub const RECEIVED_LSN: Metric = metric(
    "cdc_received_lsn",
    Kind::Gauge,
    "Last WAL position received from the server, as a number.",
);
/// What every sink made durable, as acknowledged to the source.
pub const ACKNOWLEDGED_LSN: Metric = metric(
    "cdc_acknowledged_lsn",
    Kind::Gauge,
    "Position every sink made durable and the engine acknowledged to the source, as a number.",
);
/// The slot's `confirmed_flush_lsn`, as the lag poll last read it.
pub const CONFIRMED_FLUSH_LSN: Metric = metric(
    "cdc_confirmed_flush_lsn",
    Kind::Gauge,
    "confirmed_flush_lsn of the replication slot as last polled, as a number.",
);
/// The server's WAL position, as the lag poll last read it.
pub const SERVER_WAL_LSN: Metric = metric(
    "cdc_server_wal_lsn",
    Kind::Gauge,
    "Current WAL position of the server as last polled (replay position on a standby), as a number.",
);
/// Server WAL position minus the slot's `confirmed_flush_lsn`.
pub const REPLICATION_LAG_BYTES: Metric = metric(
    "cdc_replication_lag_bytes",
    Kind::Gauge,
    "Bytes of WAL the server keeps for the slot: server WAL position minus confirmed_flush_lsn.",
);
/// Whether the server invalidated the slot (1) or not (0).
pub const SLOT_INVALIDATED: Metric = metric(
    "cdc_slot_invalidated",
    Kind::Gauge,
    "1 when the server invalidated the replication slot (wal_status lost, or an invalidation_reason): a new snapshot is needed; 0 when not, as last polled.",
);
/// Whether a connection holds the slot (1) or not (0).
pub const SLOT_ACTIVE: Metric = metric(
    "cdc_slot_active",
    Kind::Gauge,
    "1 when a connection holds the replication slot, 0 when not, as last polled.",
);
/// Failed lag polls.
pub const LAG_POLL_ERRORS: Metric = metric(
    "cdc_lag_poll_errors_total",
    Kind::Counter,
    "Failed polls of the server's WAL position and the slot.",
);
/// Events a sink made durable, label `sink` and `type`.
pub const SINK_EVENTS: Metric = metric(
    "cdc_sink_events_total",
    Kind::Counter,
    "Change events a sink wrote durably.",
);
/// Batches a sink made durable.
pub const SINK_BATCHES: Metric = metric(
    "cdc_sink_batches_total",
    Kind::Counter,
    "Batches a sink wrote durably.",
);
/// Failed batch writes, labels `sink` and `class` (`retryable`, `fatal`).
pub const SINK_ERRORS: Metric = metric(
    "cdc_sink_errors_total",
    Kind::Counter,
    "Failed batch writes of a sink, by error class.",
);
/// Duration of successful batch writes, label `sink`.
pub const SINK_WRITE_SECONDS: Metric = metric(
    "cdc_sink_write_seconds",
    Kind::Histogram,
    "Duration of successful sink writes (one batch, or a group of queued batches written together), in seconds.",
);
/// Batches waiting in a sink's channel.
pub const SINK_CHANNEL_QUEUED: Metric = metric(
    "cdc_sink_channel_queued_batches",
    Kind::Gauge,
    "Batches waiting in the channel in front of a sink.",
);
/// Capacity of a sink's channel.
pub const SINK_CHANNEL_CAPACITY: Metric = metric(
    "cdc_sink_channel_capacity_batches",
    Kind::Gauge,
    "Capacity of the channel in front of a sink, in batches.",
);
/// Sink state, labels `sink` and `state`; 1 for the current one.
pub const SINK_STATE: Metric = metric(
    "cdc_sink_state",
    Kind::Gauge,
    "Current state of a sink (1 for the current state, 0 otherwise).",
);
/// Rows the snapshot read, label `table`.
pub const SNAPSHOT_ROWS: Metric = metric(
    "cdc_snapshot_rows_total",
    Kind::Counter,
    "Rows read by the snapshot, by table.",
);
/// Snapshot chunks done, label `table`.
pub const SNAPSHOT_CHUNKS_DONE: Metric = metric(
    "cdc_snapshot_chunks_done",
    Kind::Gauge,
    "Snapshot chunks durably written (by any instance), by table.",
);
/// Snapshot chunks planned, label `table`.
pub const SNAPSHOT_CHUNKS_PLANNED: Metric = metric(
    "cdc_snapshot_chunks_planned",
    Kind::Gauge,
    "Snapshot chunks in the plan, by table.",
);
/// Seconds the snapshot took (or has taken so far).
pub const SNAPSHOT_DURATION_SECONDS: Metric = metric(
    "cdc_snapshot_duration_seconds",
    Kind::Gauge,
    "Seconds the snapshot took, or has taken so far while it runs.",
);
/// Rows emitted by incremental snapshots, label `table`.
pub const INCREMENTAL_ROWS: Metric = metric(
    "cdc_incremental_snapshot_rows_total",
    Kind::Counter,
    "Rows emitted by incremental snapshots (by this instance), by table.",
);
/// Chunks emitted by incremental snapshots, label `table`.
pub const INCREMENTAL_CHUNKS: Metric = metric(
    "cdc_incremental_snapshot_chunks_total",
    Kind::Counter,
    "Chunks emitted by incremental snapshots (by this instance), by table.",
);
/// State of a table's latest incremental snapshot, labels `table` and
/// `state`; 1 for the current one.
pub const INCREMENTAL_STATE: Metric = metric(
    "cdc_incremental_snapshot_state",
    Kind::Gauge,
    "State of the table's latest incremental snapshot (1 for the current state, 0 otherwise).",
);

/// Every family, in exposition order (the tests check their names).
#[cfg(test)]
const ALL: &[Metric] = &[
    SOURCE_EVENTS,
    SOURCE_RECONNECTS,
    SOURCE_HEARTBEATS,
    SOURCE_UNTRACKED_CHANGES,
    PHASE,
    RECEIVED_LSN,
    ACKNOWLEDGED_LSN,
    CONFIRMED_FLUSH_LSN,
    SERVER_WAL_LSN,
    REPLICATION_LAG_BYTES,
    SLOT_ACTIVE,
    SLOT_INVALIDATED,
    LAG_POLL_ERRORS,
    SINK_EVENTS,
    SINK_BATCHES,
    SINK_ERRORS,
    SINK_WRITE_SECONDS,
    SINK_CHANNEL_QUEUED,
    SINK_CHANNEL_CAPACITY,
    SINK_STATE,
    SNAPSHOT_ROWS,
    SNAPSHOT_CHUNKS_DONE,
    SNAPSHOT_CHUNKS_PLANNED,
    SNAPSHOT_DURATION_SECONDS,
    INCREMENTAL_ROWS,
    INCREMENTAL_CHUNKS,
    INCREMENTAL_STATE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prefixed_and_valid() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("cdc_"), "{}", m.name);
            assert!(
                m.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.name.ends_with("_total"),
                m.kind == Kind::Counter,
                "{}: counters and only counters end in _total",
                m.name
            );
            assert!(!m.help.is_empty() && !m.help.contains('\n'));
        }
    }
}
