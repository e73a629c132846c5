//! [`SourceStatus`]: what a source is doing right now, shared with whoever
//! reports it (the engine's `/status` and `/metrics`).
//!
//! A source updates the handle as it works (cheap atomic stores, one small
//! lock for snapshot progress); readers take copies. The handle is `Clone`
//! and all clones see the same state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use crate::lsn::Lsn;
use crate::schema::TableName;
pub use crate::status_progress::{
    IncrementalProgress, IncrementalState, SnapshotProgress, TableProgress,
};

/// The phase a source is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Connecting and checking the server.
    Starting,
    /// Copying the rows that already exist.
    Snapshot,
    /// Reading the replication stream.
    Streaming,
    /// Waiting for another instance to release the slot.
    Standby,
    /// Reconnecting after a transient error.
    Reconnecting,
    /// Ended or stopped.
    Stopped,
}

impl Phase {
    const ALL: [Phase; 6] = [
        Phase::Starting,
        Phase::Snapshot,
        Phase::Streaming,
        Phase::Standby,
        Phase::Reconnecting,
        Phase::Stopped,
    ];

    /// The lower-case name used in `/status` and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Snapshot => "snapshot",
            Phase::Streaming => "streaming",
            Phase::Standby => "standby",
            Phase::Reconnecting => "reconnecting",
            Phase::Stopped => "stopped",
        }
    }

    /// Every phase, in declaration order (for metric label sets).
    pub fn all() -> &'static [Phase] {
        &Self::ALL
    }

    fn to_u8(self) -> u8 {
        match self {
            Phase::Starting => 0,
            Phase::Snapshot => 1,
            Phase::Streaming => 2,
            Phase::Standby => 3,
            Phase::Reconnecting => 4,
            Phase::Stopped => 5,
        }
    }

    fn from_u8(v: u8) -> Phase {
        Self::ALL
            .get(usize::from(v))
            .copied()
            .unwrap_or(Phase::Stopped)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Default)]
struct Inner {
    phase: AtomicU8,
    received: AtomicU64,
    server_wal_end: AtomicU64,
    reconnects: AtomicU64,
    heartbeats: AtomicU64,
    snapshot: Mutex<SnapshotProgress>,
    untracked: Mutex<BTreeMap<TableName, u64>>,
    incremental: Mutex<BTreeMap<TableName, IncrementalProgress>>,
    tables: Mutex<CapturedTables>,
}

/// The tables a source captures now, and those dropped while it ran.
#[derive(Debug, Default, Clone)]
struct CapturedTables {
    captured: BTreeSet<TableName>,
    dropped: BTreeMap<TableName, SystemTime>,
}

/// The live status of a source; see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct SourceStatus {
    inner: Arc<Inner>,
}

impl SourceStatus {
    /// A fresh status in phase [`Phase::Starting`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Enters `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.inner.phase.store(phase.to_u8(), Ordering::Relaxed);
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.inner.phase.load(Ordering::Relaxed))
    }

    /// Records the WAL position of the latest message received from the
    /// server (never moves backwards).
    pub fn record_received(&self, lsn: Lsn) {
        self.inner.received.fetch_max(lsn.0, Ordering::Relaxed);
    }

    /// The latest WAL position received; [`Lsn::ZERO`] before any.
    pub fn received(&self) -> Lsn {
        Lsn(self.inner.received.load(Ordering::Relaxed))
    }

    /// Records the server's WAL end as the server last reported it
    /// (keepalives and data messages carry it).
    pub fn record_server_wal_end(&self, lsn: Lsn) {
        self.inner
            .server_wal_end
            .fetch_max(lsn.0, Ordering::Relaxed);
    }

    /// The server's WAL end as last reported; [`Lsn::ZERO`] before any.
    pub fn server_wal_end(&self) -> Lsn {
        Lsn(self.inner.server_wal_end.load(Ordering::Relaxed))
    }

    /// Counts one reconnection of the replication stream.
    pub fn record_reconnect(&self) {
        self.inner.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Reconnections so far.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Counts one heartbeat written to the server.
    pub fn record_heartbeat(&self) {
        self.inner.heartbeats.fetch_add(1, Ordering::Relaxed);
    }

    /// Heartbeats written so far.
    pub fn heartbeats(&self) -> u64 {
        self.inner.heartbeats.load(Ordering::Relaxed)
    }

    /// Counts one change the server sent for `relation`, which the source
    /// does not capture (not a configured table).
    pub fn record_untracked(&self, relation: &TableName) {
        let mut guard = self
            .inner
            .untracked
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match guard.get_mut(relation) {
            Some(n) => *n += 1,
            None => {
                guard.insert(relation.clone(), 1);
            }
        }
    }

    /// Changes skipped so far, per relation not captured
    /// ([`record_untracked`](Self::record_untracked)).
    pub fn untracked_changes(&self) -> BTreeMap<TableName, u64> {
        self.inner
            .untracked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn with_snapshot<R>(&self, f: impl FnOnce(&mut SnapshotProgress) -> R) -> R {
        let mut guard = self
            .inner
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// Marks the start of the snapshot (first call wins).
    pub fn snapshot_started(&self) {
        self.with_snapshot(|s| {
            s.started_at.get_or_insert_with(SystemTime::now);
        });
    }

    /// Marks the end of the snapshot for this instance.
    pub fn snapshot_finished(&self) {
        self.with_snapshot(|s| {
            s.started_at.get_or_insert_with(SystemTime::now);
            s.finished_at = Some(SystemTime::now());
        });
    }

    /// Records a table's plan: `chunks_total` chunks, `chunks_done` of them
    /// already done (e.g. by an earlier run).
    pub fn snapshot_table(&self, table: &TableName, chunks_total: u64, chunks_done: u64) {
        self.with_snapshot(|s| {
            let t = s.tables.entry(table.clone()).or_default();
            t.chunks_total = chunks_total;
            t.chunks_done = chunks_done;
        });
    }

    /// Counts `rows` rows read from `table`.
    pub fn snapshot_rows(&self, table: &TableName, rows: u64) {
        self.with_snapshot(|s| s.tables.entry(table.clone()).or_default().rows += rows);
    }

    /// Counts one chunk of `table` as done.
    pub fn snapshot_chunk_done(&self, table: &TableName) {
        self.with_snapshot(|s| s.tables.entry(table.clone()).or_default().chunks_done += 1);
    }

    /// Counts one exported snapshot found gone and replaced.
    pub fn snapshot_export_replaced(&self) {
        self.with_snapshot(|s| s.exports_replaced += 1);
    }

    /// Counts one table found rewritten under the exported snapshot and
    /// started over: its `chunks` chunks are all to be read again.
    pub fn snapshot_table_reread(&self, table: &TableName, chunks: u64) {
        self.with_snapshot(|s| {
            s.tables_reread += 1;
            let t = s.tables.entry(table.clone()).or_default();
            if chunks > 0 {
                t.chunks_total = chunks;
            }
            t.chunks_done = 0;
        });
    }

    /// Counts one loss of the coordinator lock to another instance.
    pub fn snapshot_coordination_lost(&self) {
        self.with_snapshot(|s| s.coordination_lost += 1);
    }

    /// A copy of the snapshot progress.
    pub fn snapshot_progress(&self) -> SnapshotProgress {
        self.with_snapshot(|s| s.clone())
    }

    fn with_incremental<R>(
        &self,
        f: impl FnOnce(&mut BTreeMap<TableName, IncrementalProgress>) -> R,
    ) -> R {
        let mut guard = self
            .inner
            .incremental
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// Records `table`'s latest incremental snapshot as `progress`
    /// (its `*_emitted` counters are kept from before).
    pub fn incremental_snapshot(&self, table: &TableName, progress: IncrementalProgress) {
        self.with_incremental(|m| {
            let (chunks, rows) = m
                .get(table)
                .map_or((0, 0), |p| (p.chunks_emitted, p.rows_emitted));
            m.insert(
                table.clone(),
                IncrementalProgress {
                    chunks_emitted: chunks,
                    rows_emitted: rows,
                    ..progress
                },
            );
        });
    }

    /// Counts one chunk of `rows` rows of snapshot `snapshot` of `table`
    /// emitted, ending at `last_key`; `done`: the last one.
    pub fn incremental_chunk(
        &self,
        table: &TableName,
        snapshot: i64,
        rows: u64,
        last_key: Option<Vec<String>>,
        done: bool,
    ) {
        self.with_incremental(|m| {
            let p = m
                .entry(table.clone())
                .or_insert_with(|| IncrementalProgress::new(snapshot, IncrementalState::Running));
            if p.snapshot == snapshot {
                p.chunks += 1;
                p.rows += rows;
                if last_key.is_some() {
                    p.last_key = last_key;
                }
                p.state = if done {
                    IncrementalState::Done
                } else {
                    IncrementalState::Running
                };
            }
            p.chunks_emitted += 1;
            p.rows_emitted += rows;
        });
    }

    /// Sets the state of snapshot `snapshot` of `table` (when it is the
    /// table's latest), with the reason of a failure.
    pub fn incremental_state(
        &self,
        table: &TableName,
        snapshot: i64,
        state: IncrementalState,
        error: Option<String>,
    ) {
        self.with_incremental(|m| {
            if let Some(p) = m.get_mut(table).filter(|p| p.snapshot == snapshot) {
                p.state = state;
                p.error = error;
            }
        });
    }

    /// A copy of every table's latest incremental snapshot, in name order.
    pub fn incremental_progress(&self) -> BTreeMap<TableName, IncrementalProgress> {
        self.with_incremental(|m| m.clone())
    }

    fn with_tables<R>(&self, f: impl FnOnce(&mut CapturedTables) -> R) -> R {
        let mut guard = self
            .inner
            .tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// Sets the tables captured (the selection as resolved when the source
    /// started).
    pub fn set_tables(&self, tables: impl IntoIterator<Item = TableName>) {
        self.with_tables(|t| t.captured = tables.into_iter().collect());
    }

    /// A table captured from now on (created while the source ran).
    pub fn table_added(&self, table: &TableName) {
        self.with_tables(|t| {
            t.captured.insert(table.clone());
            t.dropped.remove(table);
        });
    }

    /// A captured table was dropped: it leaves the captured tables (and
    /// its incremental snapshot, if any) and is listed among the dropped
    /// ones, with when it was noticed.
    pub fn table_dropped(&self, table: &TableName) {
        self.with_tables(|t| {
            t.captured.remove(table);
            t.dropped.insert(table.clone(), SystemTime::now());
        });
        self.with_incremental(|m| {
            m.remove(table);
        });
    }

    /// The tables captured now, in name order.
    pub fn tables(&self) -> Vec<TableName> {
        self.with_tables(|t| t.captured.iter().cloned().collect())
    }

    /// The tables dropped while the source ran, with when each drop was
    /// noticed, in name order.
    pub fn dropped_tables(&self) -> Vec<(TableName, SystemTime)> {
        self.with_tables(|t| t.dropped.iter().map(|(n, at)| (n.clone(), *at)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_state_and_positions_never_regress() {
        let a = SourceStatus::new();
        let b = a.clone();
        assert_eq!(a.phase(), Phase::Starting);
        b.set_phase(Phase::Streaming);
        assert_eq!(a.phase(), Phase::Streaming);
        a.record_received(Lsn(100));
        a.record_received(Lsn(50));
        assert_eq!(b.received(), Lsn(100));
        b.record_reconnect();
        assert_eq!(a.reconnects(), 1);
        for p in Phase::all() {
            a.set_phase(*p);
            assert_eq!(b.phase(), *p);
        }
    }

    #[test]
    fn captured_tables_follow_additions_and_drops() {
        let status = SourceStatus::new();
        let (a, b) = (TableName::new("s", "a"), TableName::new("s", "b"));
        status.set_tables([a.clone()]);
        status.table_added(&b);
        assert_eq!(status.tables(), [a.clone(), b.clone()]);
        status.incremental_snapshot(&b, IncrementalProgress::new(1, IncrementalState::Running));
        status.table_dropped(&b);
        assert_eq!(status.tables(), [a]);
        assert!(status.incremental_progress().is_empty());
        let dropped: Vec<TableName> = status
            .dropped_tables()
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(dropped, std::slice::from_ref(&b));
        // Created again: captured again, no longer listed as dropped.
        status.table_added(&b);
        assert!(status.dropped_tables().is_empty());
    }

    #[test]
    fn snapshot_progress_per_table() {
        let s = SourceStatus::new();
        let t = TableName::new("public", "t");
        s.snapshot_started();
        s.snapshot_table(&t, 4, 1);
        s.snapshot_rows(&t, 10);
        s.snapshot_chunk_done(&t);
        let p = s.snapshot_progress();
        assert_eq!(
            p.tables.get(&t),
            Some(&TableProgress {
                rows: 10,
                chunks_done: 2,
                chunks_total: 4
            })
        );
        assert!(p.duration_secs().is_some());
        s.snapshot_table_reread(&t, 4);
        let p = s.snapshot_progress();
        assert_eq!(p.tables_reread, 1);
        assert_eq!(
            p.tables.get(&t).map(|t| (t.chunks_done, t.chunks_total)),
            Some((0, 4))
        );
        assert!(p.finished_at.is_none());
        s.snapshot_finished();
        assert!(s.snapshot_progress().finished_at.is_some());
    }

    #[test]
    fn incremental_progress_per_table_keeps_its_counters() {
        let s = SourceStatus::new();
        let t = TableName::new("public", "t");
        s.incremental_snapshot(&t, IncrementalProgress::new(7, IncrementalState::Pending));
        s.incremental_chunk(&t, 7, 10, Some(vec!["10".into()]), false);
        s.incremental_chunk(&t, 7, 5, None, true);
        let p = s.incremental_progress()[&t].clone();
        assert_eq!((p.chunks, p.rows, p.state), (2, 15, IncrementalState::Done));
        assert_eq!(p.last_key, Some(vec!["10".to_owned()]));
        // A new snapshot of the table starts its own numbers; the counters go on.
        s.incremental_snapshot(&t, IncrementalProgress::new(9, IncrementalState::Pending));
        s.incremental_state(&t, 7, IncrementalState::Failed, None);
        s.incremental_chunk(&t, 9, 3, None, false);
        let p = s.incremental_progress()[&t].clone();
        assert_eq!((p.snapshot, p.chunks, p.rows), (9, 1, 3));
        assert_eq!((p.chunks_emitted, p.rows_emitted), (3, 18));
        assert_eq!(p.state, IncrementalState::Running);
        s.incremental_state(&t, 9, IncrementalState::Failed, Some("no key".into()));
        assert_eq!(
            s.incremental_progress()[&t].error.as_deref(),
            Some("no key")
        );
    }
}
