//! The progress records [`SourceStatus`](crate::SourceStatus) keeps: the
//! initial snapshot's, per table, and each table's incremental snapshot.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::schema::TableName;

/// Snapshot progress of one table, a copy taken by
/// [`SourceStatus::snapshot_progress`](crate::SourceStatus::snapshot_progress).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableProgress {
    /// Rows read so far (by this instance).
    pub rows: u64,
    /// Chunks durably written (by any instance).
    pub chunks_done: u64,
    /// Chunks in the plan.
    pub chunks_total: u64,
}

/// Snapshot progress of the whole source, a copy taken by
/// [`SourceStatus::snapshot_progress`](crate::SourceStatus::snapshot_progress). Later versions may count more
/// (hence `#[non_exhaustive]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotProgress {
    /// When this instance started taking part in the snapshot.
    pub started_at: Option<SystemTime>,
    /// When the snapshot was over for this instance.
    pub finished_at: Option<SystemTime>,
    /// Per table, in name order.
    pub tables: BTreeMap<TableName, TableProgress>,
    /// How often the exported snapshot was found gone (its session ended)
    /// and replaced by a new export while this instance coordinated.
    pub exports_replaced: u64,
    /// How often this instance lost the coordinator lock to another
    /// instance and stepped down.
    pub coordination_lost: u64,
    /// How often a reader of this instance found a table rewritten under
    /// the exported snapshot (`ALTER TABLE … TYPE`, `VACUUM FULL`, …) and
    /// started the table over, to be read again under a new export.
    pub tables_reread: u64,
}

impl SnapshotProgress {
    /// Seconds from start to finish (or to now while running); `None`
    /// before it started.
    pub fn duration_secs(&self) -> Option<f64> {
        let start = self.started_at?;
        let end = self.finished_at.unwrap_or_else(SystemTime::now);
        Some(end.duration_since(start).map_or(0.0, |d| d.as_secs_f64()))
    }
}

/// The state of a table's incremental snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IncrementalState {
    /// Asked for; no chunk read yet.
    Pending,
    /// Chunks are being read.
    Running,
    /// Paused by a signal.
    Paused,
    /// Every chunk read.
    Done,
    /// Stopped by a signal.
    Stopped,
    /// Given up on (the reason is in `error`).
    Failed,
}

impl IncrementalState {
    /// Every state, in declaration order (for metric label sets).
    pub const ALL: [IncrementalState; 6] = [
        IncrementalState::Pending,
        IncrementalState::Running,
        IncrementalState::Paused,
        IncrementalState::Done,
        IncrementalState::Stopped,
        IncrementalState::Failed,
    ];

    /// The lower-case name used in `/status`, metric labels and the
    /// progress table.
    pub const fn as_str(self) -> &'static str {
        match self {
            IncrementalState::Pending => "pending",
            IncrementalState::Running => "running",
            IncrementalState::Paused => "paused",
            IncrementalState::Done => "done",
            IncrementalState::Stopped => "stopped",
            IncrementalState::Failed => "failed",
        }
    }
}

/// A table's latest incremental snapshot, a copy taken by
/// [`SourceStatus::incremental_progress`](crate::SourceStatus::incremental_progress).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IncrementalProgress {
    /// The snapshot's id.
    pub snapshot: i64,
    /// Where it stands.
    pub state: IncrementalState,
    /// Chunks of this snapshot emitted so far (by earlier runs too).
    pub chunks: u64,
    /// Rows of this snapshot emitted so far (by earlier runs too).
    pub rows: u64,
    /// The key of the last row emitted, as text; `None` before the first.
    pub last_key: Option<Vec<String>>,
    /// The snapshot's filter (SQL), if any.
    pub filter: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Chunks this process emitted for the table, every snapshot counted
    /// (never goes down: a counter).
    pub chunks_emitted: u64,
    /// Rows this process emitted for the table, every snapshot counted
    /// (never goes down: a counter).
    pub rows_emitted: u64,
}

impl IncrementalProgress {
    /// Snapshot `snapshot` in `state`, nothing emitted yet.
    pub fn new(snapshot: i64, state: IncrementalState) -> Self {
        Self {
            snapshot,
            state,
            chunks: 0,
            rows: 0,
            last_key: None,
            filter: None,
            error: None,
            chunks_emitted: 0,
            rows_emitted: 0,
        }
    }
}
