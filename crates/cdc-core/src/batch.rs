//! Batches: the unit a source emits, a sink writes and the engine acknowledges.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

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

/// What the consumer has made durable, shared between a source and
/// whoever consumes it. It only ever moves forward.
///
/// **Acknowledge a batch with one call**, [`durable`](AckHandle::durable),
/// once the batch is handled for good, in the order the batches came:
///
/// ```
/// # use cdc_core::{AckHandle, Batch, Lsn};
/// # let ack = AckHandle::new();
/// # let batch = Batch { checkpoint: Some(Lsn(40)), seq: 4, ..Batch::default() };
/// // ... the batch is written somewhere durable ...
/// ack.durable(&batch);
/// assert_eq!((ack.get(), ack.durable_batches()), (Lsn(40), 4));
/// ```
///
/// The source learns of it at once, whatever the consumer does next: an
/// acknowledgement wakes every [`AckWatch`], so a source reports it to its
/// server even while nobody asks for the next batch.
///
/// A handle holds two positions, both moved by `durable`:
/// * the position up to which every change is durable (a batch's
///   `checkpoint`), which a source reports to its server (PostgreSQL: the
///   slot's flush position);
/// * how many batches, counted from the first one the source returned, are
///   durable, for progress that is not a WAL position (snapshot chunks are
///   marked done only once their rows are durable).
///
/// [`advance`](AckHandle::advance) and
/// [`advance_batches`](AckHandle::advance_batches) move each on its own:
/// they are for sources (a starting position) and for pipelines that
/// acknowledge the minimum over several sinks (`cdc-pipeline`); a consumer
/// of batches calls `durable`.
#[derive(Debug, Clone, Default)]
pub struct AckHandle(Arc<AckState>);

#[derive(Debug)]
struct AckState {
    lsn: AtomicU64,
    batches: AtomicU64,
    /// Sent to (its value is nothing) whenever either part moves.
    advanced: watch::Sender<()>,
}

impl Default for AckState {
    fn default() -> Self {
        Self {
            lsn: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            advanced: watch::Sender::new(()),
        }
    }
}

impl AckHandle {
    /// A handle at `0/0` with no batch durable.
    pub fn new() -> Self {
        Self::default()
    }

    /// Acknowledges `batch` and, with it, every batch the source returned
    /// before it: its checkpoint (if any) becomes the durable position and
    /// its number the count of durable batches. Call it once the batch is
    /// handled for good, in the order the batches came.
    pub fn durable(&self, batch: &Batch) {
        let moved_lsn = batch.checkpoint.is_some_and(|lsn| self.raise_lsn(lsn));
        let moved_batches = self.raise_batches(batch.seq);
        if moved_lsn || moved_batches {
            self.wake();
        }
    }

    /// Raises the durable position to `lsn` (lower values are ignored).
    /// Consumers of batches call [`durable`](AckHandle::durable) instead.
    pub fn advance(&self, lsn: Lsn) {
        if self.raise_lsn(lsn) {
            self.wake();
        }
    }

    /// Records that the first `count` batches are durable (lower values
    /// are ignored). Consumers of batches call
    /// [`durable`](AckHandle::durable) instead.
    pub fn advance_batches(&self, count: u64) {
        if self.raise_batches(count) {
            self.wake();
        }
    }

    /// The durable position.
    pub fn get(&self) -> Lsn {
        Lsn(self.0.lsn.load(Ordering::Acquire))
    }

    /// How many batches, from the first, are durable.
    pub fn durable_batches(&self) -> u64 {
        self.0.batches.load(Ordering::Acquire)
    }

    /// Something to wait on for this handle's next advance (see
    /// [`AckWatch::advanced`]).
    pub fn watch(&self) -> AckWatch {
        AckWatch(self.0.advanced.subscribe())
    }

    fn raise_lsn(&self, lsn: Lsn) -> bool {
        self.0.lsn.fetch_max(lsn.0, Ordering::AcqRel) < lsn.0
    }

    fn raise_batches(&self, count: u64) -> bool {
        self.0.batches.fetch_max(count, Ordering::AcqRel) < count
    }

    fn wake(&self) {
        self.0.advanced.send_replace(());
    }
}

/// Waits for an [`AckHandle`] to advance; from
/// [`AckHandle::watch`]. Works on any executor.
#[derive(Debug)]
pub struct AckWatch(watch::Receiver<()>);

impl AckWatch {
    /// Returns once the handle has advanced (either part) since this watch
    /// was made or since the last time this returned. Advances that come
    /// while nobody waits are not lost: the next call returns at once.
    /// Read the new values from the handle afterwards. Waits forever once
    /// every clone of the handle is gone (nothing can advance any more).
    pub async fn advanced(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
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

    /// Polls `fut` once, without an executor.
    fn poll_once<F: std::future::Future>(fut: std::pin::Pin<&mut F>) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        fut.poll(&mut cx).is_ready()
    }

    #[test]
    fn a_watch_returns_once_per_advance_and_never_for_a_lower_value() {
        let a = AckHandle::new();
        let mut w = a.watch();
        {
            let wait = std::pin::pin!(w.advanced());
            assert!(!poll_once(wait), "nothing advanced yet");
        }
        // Advanced while nobody waited: the next wait returns at once.
        a.durable(&Batch {
            checkpoint: Some(Lsn(40)),
            seq: 4,
            ..Batch::default()
        });
        assert!(poll_once(std::pin::pin!(w.advanced())));
        let mut wait = std::pin::pin!(w.advanced());
        assert!(!poll_once(wait.as_mut()), "returned twice for one advance");
        // Lower or equal values move nothing and wake nobody.
        a.advance(Lsn(30));
        a.advance_batches(4);
        a.durable(&Batch {
            checkpoint: Some(Lsn(40)),
            seq: 2,
            ..Batch::default()
        });
        assert!(!poll_once(wait.as_mut()));
        // Either part moving wakes it.
        a.advance_batches(5);
        assert!(poll_once(wait.as_mut()));
        let mut w2 = a.clone().watch();
        a.advance(Lsn(41));
        assert!(poll_once(std::pin::pin!(w2.advanced())));
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
