//! What the stream said so far: the relations described (tracked or
//! not), the transaction being received, and the positions received.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cdc_core::{Lsn, SnapshotMarker, SourceInfo, SourceStatus, TableName, TableSchema};

use crate::catalog::RelationInfo;
use crate::error::PgError;
use crate::pgoutput::{self, pgoutput_epoch_to_unix_micros};

/// What the stream said so far.
pub(super) struct Changes {
    /// The configured tables.
    tracked: HashSet<TableName>,
    relations: HashMap<u32, Relation>,
    /// Untracked relations already warned about (once per relation).
    warned_untracked: HashSet<TableName>,
    /// The transaction being received.
    tx: Option<Tx>,
    /// Highest WAL position received, published once per batch.
    pub received: Lsn,
    /// End of the last commit received.
    pub last_commit_end: Lsn,
    /// WAL end of the previous keepalive that asked for a reply.
    pub last_keepalive_end: Lsn,
}

/// The transaction being received.
struct Tx {
    commit_lsn: Lsn,
    xid: u32,
    commit_time_us: i64,
    ordinal: u64,
}

/// A relation described by the stream.
struct Relation {
    info: RelationInfo,
    tracked: bool,
    /// Why a relation that is not tracked is published (for the warning).
    untracked_reason: Option<String>,
}

impl Changes {
    /// Nothing received yet; changes of `tracked` are captured.
    pub fn new(tracked: HashSet<TableName>) -> Self {
        Self {
            tracked,
            relations: HashMap::new(),
            warned_untracked: HashSet::new(),
            tx: None,
            received: Lsn::ZERO,
            last_commit_end: Lsn::ZERO,
            last_keepalive_end: Lsn::ZERO,
        }
    }

    /// `true` when changes of `name` are captured.
    pub fn tracks(&self, name: &TableName) -> bool {
        self.tracked.contains(name)
    }

    /// Captures the changes of `name` from now on (a table created while
    /// the source runs); returns the schemas of the relations of that name
    /// the stream already described (as not tracked), now tracked.
    pub fn track(&mut self, name: &TableName) -> Vec<Arc<TableSchema>> {
        self.tracked.insert(name.clone());
        let mut described = Vec::new();
        for r in self.relations.values_mut() {
            if r.info.schema.name == *name && !r.tracked {
                r.tracked = true;
                r.untracked_reason = None;
                described.push(r.info.schema.clone());
            }
        }
        described
    }

    /// `true` between a transaction's Begin and its Commit.
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }

    /// Forgets the transaction being received: a new stream starts at a
    /// transaction boundary.
    pub fn forget_transaction(&mut self) {
        self.tx = None;
    }

    /// A transaction starts.
    pub fn begin(&mut self, begin: &pgoutput::Begin) {
        self.tx = Some(Tx {
            commit_lsn: begin.final_lsn,
            xid: begin.xid,
            commit_time_us: pgoutput_epoch_to_unix_micros(begin.commit_time),
            ordinal: 0,
        });
    }

    /// The transaction ended; `end_lsn` is the position to acknowledge.
    pub fn commit(&mut self, end_lsn: Lsn) {
        self.tx = None;
        self.received = self.received.max(end_lsn);
        self.last_commit_end = self.last_commit_end.max(end_lsn);
    }

    /// Records relation `oid` as the stream describes it now; returns the
    /// schema it had before, if any.
    pub fn describe(
        &mut self,
        oid: u32,
        info: RelationInfo,
        tracked: bool,
        untracked_reason: Option<String>,
    ) -> Option<Arc<TableSchema>> {
        let previous = self.relations.remove(&oid);
        self.relations.insert(
            oid,
            Relation {
                info,
                tracked,
                untracked_reason,
            },
        );
        previous.map(|p| p.info.schema)
    }

    /// Relation `oid` as described, tracked or not.
    pub fn described(&self, oid: u32) -> Option<&RelationInfo> {
        self.relations.get(&oid).map(|r| &r.info)
    }

    /// The commit LSN of the open transaction.
    pub fn commit_lsn(&self) -> Option<Lsn> {
        self.tx.as_ref().map(|t| t.commit_lsn)
    }

    /// The position of the next change of the open transaction.
    pub fn source_info(&mut self, lsn: Lsn) -> Result<SourceInfo, PgError> {
        let tx = self.tx.as_mut().ok_or_else(|| {
            PgError::Protocol("a row change arrived outside a transaction".into())
        })?;
        let ordinal = tx.ordinal;
        tx.ordinal += 1;
        Ok(SourceInfo {
            commit_lsn: tx.commit_lsn,
            lsn: if lsn.is_zero() { tx.commit_lsn } else { lsn },
            ordinal,
            txid: Some(tx.xid),
            commit_time_us: tx.commit_time_us,
            snapshot: SnapshotMarker::False,
        })
    }

    /// The tracked relation `oid`; `None` for one that is not tracked,
    /// whose change is counted in `status` and skipped (warned about the
    /// first time).
    pub fn relation(
        &mut self,
        oid: u32,
        status: &SourceStatus,
    ) -> Result<Option<&RelationInfo>, PgError> {
        let skipped = match self.relations.get(&oid) {
            Some(r) if r.tracked => None,
            Some(r) => Some((r.info.schema.name.clone(), r.untracked_reason.clone())),
            None => {
                return Err(PgError::Protocol(format!(
                    "a change for relation {oid} arrived before its Relation message"
                )))
            }
        };
        if let Some((name, reason)) = skipped {
            status.record_untracked(&name);
            if self.warned_untracked.insert(name.clone()) {
                tracing::warn!(relation = %name, "skipping the changes of {name}: {}",
                    reason.as_deref().unwrap_or("it is not in source.tables"));
            }
            return Ok(None);
        }
        Ok(self.relations.get(&oid).map(|r| &r.info))
    }
}
