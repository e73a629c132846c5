//! Change events and the control events that travel beside them.

use std::sync::Arc;

use crate::lsn::Lsn;
use crate::schema::{TableName, TableSchema};
use crate::value::Row;

/// What happened to a row.
///
/// Unlike [`Event`], [`ControlEvent`] and [`Value`](crate::Value), this enum is
/// exhaustive on purpose: it mirrors Debezium's fixed set of op codes, and
/// sinks and metrics match it in full, so that an operation added one day
/// makes every consumer decide what to do with it rather than fall into a
/// catch-all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A row read by the initial snapshot (Debezium `r`).
    Read,
    /// `INSERT` (Debezium `c`).
    Insert,
    /// `UPDATE` (Debezium `u`).
    Update,
    /// `DELETE` (Debezium `d`).
    Delete,
    /// `TRUNCATE` of the whole table (Debezium `t`); carries no rows.
    Truncate,
}

impl Op {
    /// The one-letter Debezium code: `r`, `c`, `u`, `d`, `t`.
    pub fn code(self) -> &'static str {
        match self {
            Op::Read => "r",
            Op::Insert => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Truncate => "t",
        }
    }
}

/// Where an event sits in a snapshot, as Debezium's `source.snapshot` field says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SnapshotMarker {
    /// A streamed change, not part of a snapshot.
    #[default]
    False,
    /// The first snapshot row of a table.
    First,
    /// A snapshot row that is neither first nor last.
    True,
    /// The last snapshot row of a table.
    Last,
    /// A row read by an incremental snapshot while streaming went on
    /// (Debezium's `incremental`): current as of its position in the
    /// stream, which it shares with the changes around it.
    Incremental,
}

impl SnapshotMarker {
    /// `"false"`, `"first"`, `"true"` or `"last"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMarker::False => "false",
            SnapshotMarker::First => "first",
            SnapshotMarker::True => "true",
            SnapshotMarker::Last => "last",
            SnapshotMarker::Incremental => "incremental",
        }
    }
}

/// Where a change came from.
///
/// The position of an event is `(commit_lsn, ordinal)`: several changes share
/// one commit LSN, the ordinal orders them within their transaction. Two
/// deliveries of the same change (after a restart) carry the same position.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SourceInfo {
    /// LSN of the commit record of the change's transaction (for snapshot
    /// rows: the snapshot's consistent point).
    pub commit_lsn: Lsn,
    /// LSN of the change's own WAL record (equals `commit_lsn` when the
    /// server does not tell it).
    pub lsn: Lsn,
    /// Zero-based position of the change within its transaction.
    pub ordinal: u64,
    /// PostgreSQL's transaction id (`xid`) of the change, when the source
    /// knows it; Debezium's `source.txId`.
    pub txid: Option<u32>,
    /// Commit time, microseconds since the Unix epoch (0 when unknown).
    pub commit_time_us: i64,
    /// Where the event sits in a snapshot; [`SnapshotMarker::False`] (the
    /// default) for a streamed change.
    pub snapshot: SnapshotMarker,
}

/// One row-level change (or a truncate of one table).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// What happened.
    pub op: Op,
    /// The table's schema at the time of the change.
    pub table: Arc<TableSchema>,
    /// The old row: for updates and deletes, as much as the table's replica
    /// identity logs (see [`crate::Row::is_key_only`]); `None` for inserts,
    /// snapshot reads, truncates, and updates that logged no old row.
    pub before: Option<Row>,
    /// The new row for inserts, updates and snapshot reads.
    pub after: Option<Row>,
    /// Position and transaction metadata.
    pub source: SourceInfo,
}

/// Events that are not row changes. Sinks may ignore them; the built-in
/// sinks do.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ControlEvent {
    /// A table's schema differs from the one seen before (or is seen for the
    /// first time in this stream, then `previous` is `None`).
    SchemaChange {
        /// The new schema.
        table: Arc<TableSchema>,
        /// The schema it replaces.
        previous: Option<Arc<TableSchema>>,
    },
    /// A logical decoding message written with `pg_logical_emit_message`.
    Message {
        /// Emitted inside a transaction (delivered at its commit) or not.
        transactional: bool,
        /// WAL position of the message.
        lsn: Lsn,
        /// The message prefix.
        prefix: String,
        /// The message payload.
        content: Vec<u8>,
    },
    /// A snapshot of a table starts; `table` is `None` for the whole snapshot.
    SnapshotBegin {
        /// The table, or `None` for the snapshot as a whole.
        table: Option<TableName>,
        /// The consistent point the snapshot was taken at.
        snapshot_lsn: Lsn,
    },
    /// A snapshot of a table ended; `table` is `None` for the whole snapshot.
    SnapshotEnd {
        /// The table, or `None` for the snapshot as a whole.
        table: Option<TableName>,
        /// The consistent point the snapshot was taken at.
        snapshot_lsn: Lsn,
    },
    /// An incremental snapshot of a table starts: its reads (marked
    /// [`SnapshotMarker::Incremental`]) follow, interleaved with the
    /// table's streamed changes.
    IncrementalSnapshotBegin {
        /// The table.
        table: TableName,
        /// The snapshot's id (the signal that asked for it).
        snapshot: i64,
    },
    /// Every row of an incremental snapshot of a table was read.
    IncrementalSnapshotEnd {
        /// The table.
        table: TableName,
        /// The snapshot's id.
        snapshot: i64,
        /// Rows emitted by the snapshot (from where it resumed, when it
        /// was interrupted).
        rows: u64,
    },
    /// The source is alive and has seen the server's WAL up to `lsn`.
    Heartbeat {
        /// Server WAL position.
        lsn: Lsn,
    },
}

/// Anything a source emits.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A row change.
    Change(ChangeEvent),
    /// A control event.
    Control(ControlEvent),
}
