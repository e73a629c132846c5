//! Batches: the unit a source emits, a sink writes and the engine acknowledges.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::event::{Event, Op};
use crate::lsn::Lsn;

/// An ordered run of events.
///
/// A batch may end in the middle of a transaction (so a huge transaction
/// never has to sit in memory); then `checkpoint` is the last transaction
/// that ended *before or inside* this batch, or `None` if none did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    /// Events in stream order.
    pub events: Vec<Event>,
    /// When `Some(lsn)`: once this batch and every batch before it are
    /// durable, the source may tell PostgreSQL that everything up to `lsn`
    /// is consumed. It is always a transaction's commit end LSN.
    pub checkpoint: Option<Lsn>,
    /// The batch's number among those its source returned, from 1; `0`
    /// for a batch no source numbered. [`AckHandle::durable`] uses it to
    /// tell the source how many batches are durable.
    pub seq: u64,
    /// For a batch holding snapshot reads: whether this instance still
    /// holds the claims they were read under. See
    /// [`without_lost_reads`](Batch::without_lost_reads).
    pub fence: Option<ReadFence>,
}

impl Batch {
    /// `true` when the batch carries no events (it may still carry a checkpoint).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Call right before writing the batch to a sink. `None` when it may
    /// be written as it is. Otherwise the claims its snapshot reads were
    /// read under are lost (the process stood still longer than the claim
    /// timeout and another instance reads those rows again; the newer
    /// changes to them may already be written): returns a copy without
    /// the reads, to write in its place. The source then reads those
    /// chunks again instead of counting them as done; acknowledge the
    /// batch as usual.
    pub fn without_lost_reads(&self) -> Option<Batch> {
        let fence = self.fence.as_ref()?;
        if fence.held() {
            return None;
        }
        Some(Batch {
            events: self
                .events
                .iter()
                .filter(|e| !matches!(e, Event::Change(c) if c.op == Op::Read))
                .cloned()
                .collect(),
            checkpoint: self.checkpoint,
            seq: self.seq,
            fence: None,
        })
    }
}

/// The claims a batch's snapshot reads were read under, as their source
/// tracks them.
pub trait ReadClaims: Send + Sync {
    /// `true` while every claim is still held. Once it has returned
    /// `false` it keeps doing so, and the source reads those rows again
    /// rather than count them as delivered.
    fn held(&self) -> bool;
}

/// A shared [`ReadClaims`], carried by a [`Batch`].
#[derive(Clone)]
pub struct ReadFence(Arc<dyn ReadClaims>);

impl ReadFence {
    /// Wraps `claims`.
    pub fn new(claims: impl ReadClaims + 'static) -> Self {
        Self(Arc::new(claims))
    }

    /// See [`ReadClaims::held`].
    pub fn held(&self) -> bool {
        self.0.held()
    }
}

impl fmt::Debug for ReadFence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReadFence")
    }
}

impl PartialEq for ReadFence {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// What the consumer has made durable, shared between a source and the
/// pipeline that drives it. Both parts only ever move forward.
///
/// * [`advance`](AckHandle::advance): the position up to which every
///   change is durable (a batch's `checkpoint`); the source reports it to
///   PostgreSQL as the slot's flush position.
/// * [`advance_batches`](AckHandle::advance_batches): how many batches,
///   counted from the first one the source returned, are durable. Sources
///   use it for progress that is not a WAL position, such as snapshot
///   chunks, which are marked done only once their rows are durable.
///
/// A library user driving a source by hand makes each batch durable in
/// order and then calls [`durable`](AckHandle::durable) with it, which
/// does both. The engine updates both itself with the minimum over all
/// sinks.
#[derive(Debug, Clone, Default)]
pub struct AckHandle(Arc<AckState>);

#[derive(Debug, Default)]
struct AckState {
    lsn: AtomicU64,
    batches: AtomicU64,
}

impl AckHandle {
    /// A handle at `0/0` with no batch durable.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the durable position to `lsn` (lower values are ignored).
    pub fn advance(&self, lsn: Lsn) {
        self.0.lsn.fetch_max(lsn.0, Ordering::AcqRel);
    }

    /// The durable position.
    pub fn get(&self) -> Lsn {
        Lsn(self.0.lsn.load(Ordering::Acquire))
    }

    /// Records that the first `count` batches are durable.
    pub fn advance_batches(&self, count: u64) {
        self.0.batches.fetch_max(count, Ordering::AcqRel);
    }

    /// Acknowledges `batch` and, with it, every batch the source returned
    /// before it: its checkpoint (if any) becomes the durable position and
    /// its number the count of durable batches. Call it once the batch is
    /// handled for good, in the order the batches came.
    pub fn durable(&self, batch: &Batch) {
        if let Some(lsn) = batch.checkpoint {
            self.advance(lsn);
        }
        self.advance_batches(batch.seq);
    }

    /// How many batches, from the first, are durable.
    pub fn durable_batches(&self) -> u64 {
        self.0.batches.load(Ordering::Acquire)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn ack_handle_is_monotonic_and_shared() {
        let a = AckHandle::new();
        let b = a.clone();
        a.advance(Lsn(10));
        b.advance(Lsn(5));
        assert_eq!(a.get(), Lsn(10));
        b.advance(Lsn(11));
        assert_eq!(a.get(), Lsn(11));
        a.advance_batches(3);
        b.advance_batches(2);
        assert_eq!(b.durable_batches(), 3);
    }

    struct Flag(std::sync::atomic::AtomicBool);

    impl ReadClaims for Arc<Flag> {
        fn held(&self) -> bool {
            self.0.load(Ordering::Acquire)
        }
    }

    #[test]
    fn lost_reads_are_left_out_and_the_rest_kept() {
        use crate::event::{ChangeEvent, ControlEvent, SourceInfo};
        use crate::schema::{ReplicaIdentity, TableName, TableSchema};
        let table = Arc::new(TableSchema {
            database: "db".into(),
            oid: 1,
            name: TableName::new("public", "t"),
            columns: vec![],
            replica_identity: ReplicaIdentity::Default,
        });
        let change = |op| {
            Event::Change(ChangeEvent {
                op,
                table: table.clone(),
                before: None,
                after: None,
                source: SourceInfo::default(),
            })
        };
        let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(true)));
        let batch = Batch {
            events: vec![
                change(Op::Read),
                Event::Control(ControlEvent::Heartbeat { lsn: Lsn(1) }),
                change(Op::Insert),
                change(Op::Read),
            ],
            checkpoint: Some(Lsn(9)),
            seq: 3,
            fence: Some(ReadFence::new(flag.clone())),
        };
        assert_eq!(batch.without_lost_reads(), None);
        flag.0.store(false, Ordering::Release);
        let kept = batch.without_lost_reads().unwrap();
        assert_eq!(kept.events, batch.events[1..3].to_vec());
        assert_eq!((kept.checkpoint, kept.seq), (Some(Lsn(9)), 3));
        let unfenced = Batch {
            fence: None,
            ..batch.clone()
        };
        assert_eq!(unfenced.without_lost_reads(), None);
    }

    #[test]
    fn durable_acknowledges_position_and_count() {
        let a = AckHandle::new();
        a.durable(&Batch {
            events: Vec::new(),
            checkpoint: Some(Lsn(40)),
            seq: 4,
            fence: None,
        });
        assert_eq!((a.get(), a.durable_batches()), (Lsn(40), 4));
        // A batch without a checkpoint (inside a transaction, or snapshot
        // rows) still counts.
        a.durable(&Batch {
            seq: 5,
            ..Batch::default()
        });
        assert_eq!((a.get(), a.durable_batches()), (Lsn(40), 5));
    }
}
