//! Transactions the stream delivered before other sessions could see them.
//!
//! PostgreSQL commits a transaction by writing and flushing its commit
//! record, marking it committed in the commit log, and only then removing
//! it from the set of running transactions, which is what makes it
//! visible to new snapshots. In between it may wait: for a synchronous
//! standby (`synchronous_standby_names`, `synchronous_commit` of `on`,
//! `remote_write` or `remote_apply`), which can last as long as the
//! standby is away, or just for the scheduler. Logical decoding does not
//! wait for that: the stream can deliver a transaction `T` while a
//! snapshot taken afterwards still counts `T` as running.
//!
//! A chunk read in such a snapshot holds the rows `T` changed as they
//! were before `T`. The window cannot catch it: `T`'s changes came through
//! the stream before the chunk was read, so they are not among the keys
//! changed inside the window, and the chunk would emit the old rows at its
//! high watermark, after `T`'s changes: the sinks would end stale.
//!
//! So the source remembers which transactions the stream delivered
//! ([`Delivered`]: their xids, from pgoutput's Begin, with the tables they
//! changed), and a chunk read also reads its snapshot's running
//! transactions (`pg_snapshot_xip(pg_current_snapshot())`, the same
//! snapshot as the rows). A delivered transaction among them that changed
//! the chunk's table makes the chunk unusable: it is dropped and read
//! again a moment later, until the transaction is visible. (Dropping only
//! the rows it changed would need its keys kept, for an unbounded time.)
//!
//! No race: the chunk is read between two transactions of the stream, so
//! every transaction whose commit precedes the stream's position was
//! delivered and recorded before the read's snapshot was taken; one whose
//! commit follows comes through the stream inside the window and has its
//! keys dropped there.
//!
//! Memory stays bounded: a delivered transaction that a snapshot does not
//! count as running is visible to that snapshot, so to every later one,
//! and is forgotten. After each read only the delivered transactions still
//! running are kept, and when many accumulate without a read (no snapshot
//! under way), the source takes a snapshot to forget the visible ones
//! ([`MAX_DELIVERED`]).
//!
//! A run cannot know what an earlier run of the source (or the instance
//! it takes the slot over from) delivered. When it starts or takes over,
//! the transactions waiting for a synchronous standby (wait event
//! `SyncRep` in `pg_stat_activity`, visible to roles with
//! `pg_read_all_stats`) count as delivered, for every table: the earlier
//! run may have streamed them.

use std::collections::{HashMap, HashSet};

use sqlx::PgConnection;

use crate::error::PgError;

/// Delivered transactions remembered before the visible ones are looked
/// up and forgotten.
pub(super) const MAX_DELIVERED: usize = 10_000;

/// A table OID standing for every table: a transaction an earlier run may
/// have delivered, whose tables are not known.
const ANY_TABLE: u32 = 0;

/// The running transactions of the current snapshot, as 32-bit xids (the
/// stream's); the epoch is cut off, as pgoutput's Begin does.
const XIP_QUERY: &str =
    "SELECT (x::pg_catalog.text::pg_catalog.int8 % 4294967296)::pg_catalog.int8 \
     FROM pg_catalog.pg_snapshot_xip(pg_catalog.pg_current_snapshot()) AS x";

/// Transactions that wait for a synchronous standby after their commit
/// record was written.
const SYNC_WAITERS_QUERY: &str = "SELECT backend_xid::pg_catalog.text::pg_catalog.int8 \
     FROM pg_catalog.pg_stat_activity \
     WHERE wait_event = 'SyncRep' AND backend_xid IS NOT NULL";

/// Transactions the stream delivered that may still be invisible, with
/// the OIDs of the captured tables they changed.
#[derive(Debug, Default)]
pub(crate) struct Delivered {
    xids: HashMap<u32, Vec<u32>>,
}

impl Delivered {
    /// Transaction `xid` of the stream changed table `oid`.
    pub fn record(&mut self, xid: u32, oid: u32) {
        let tables = self.xids.entry(xid).or_default();
        if !tables.contains(&oid) {
            tables.push(oid);
        }
    }

    /// `xid` may have been delivered (by an earlier run), changing any
    /// table.
    pub fn record_any(&mut self, xid: u32) {
        self.record(xid, ANY_TABLE);
    }

    /// Transactions remembered.
    pub fn len(&self) -> usize {
        self.xids.len()
    }

    /// A snapshot taken after everything remembered was delivered counts
    /// `running` as running: the others are visible for good and
    /// forgotten. Returns the remembered transactions still running that
    /// changed table `oid` (`None`: any), in xid order.
    pub fn still_running(&mut self, running: &[u32], oid: Option<u32>) -> Vec<u32> {
        let running: HashSet<u32> = running.iter().copied().collect();
        self.xids.retain(|xid, _| running.contains(xid));
        let mut stale: Vec<u32> = self
            .xids
            .iter()
            .filter(|(_, tables)| {
                oid.is_none_or(|oid| tables.iter().any(|t| *t == oid || *t == ANY_TABLE))
            })
            .map(|(xid, _)| *xid)
            .collect();
        stale.sort_unstable();
        stale
    }
}

/// The running transactions of `conn`'s current snapshot (in a
/// `REPEATABLE READ` transaction: the transaction's snapshot).
pub(super) async fn running_xids(conn: &mut PgConnection) -> Result<Vec<u32>, PgError> {
    xids(conn, XIP_QUERY, "reading a snapshot's running transactions").await
}

/// The transactions waiting for a synchronous standby now (none when the
/// role may not see other roles' sessions).
pub(super) async fn sync_waiters(conn: &mut PgConnection) -> Result<Vec<u32>, PgError> {
    xids(
        conn,
        SYNC_WAITERS_QUERY,
        "looking up transactions waiting for a synchronous standby",
    )
    .await
}

async fn xids(conn: &mut PgConnection, sql: &'static str, what: &str) -> Result<Vec<u32>, PgError> {
    let rows: Vec<i64> = sqlx::query_scalar(sql)
        .fetch_all(conn)
        .await
        .map_err(|e| PgError::sql(what, e))?;
    Ok(rows
        .into_iter()
        .map(|x| u32::try_from(x & 0xFFFF_FFFF).unwrap_or_default())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_transactions_of_the_table_are_stale_and_the_rest_forgotten() {
        let mut d = Delivered::default();
        d.record(10, 1);
        d.record(10, 1);
        d.record(11, 2);
        d.record(12, 1);
        d.record(12, 2);
        d.record_any(13);
        assert_eq!(d.len(), 4);
        // 12 became visible: forgotten.
        assert_eq!(d.still_running(&[10, 11, 13, 99], Some(1)), vec![10, 13]);
        assert_eq!(d.len(), 3);
        assert_eq!(d.still_running(&[11], Some(1)), Vec::<u32>::new());
        assert_eq!(d.still_running(&[11], None), vec![11]);
        assert_eq!(d.still_running(&[], None), Vec::<u32>::new());
        assert_eq!(d.len(), 0);
    }
}
