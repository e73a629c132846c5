//! Batches: the unit a source emits, a sink writes and the engine acknowledges.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::event::Event;
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
    /// is consumed. It is always a transaction's commit end LSN (or a
    /// position with no transaction open, such as a keepalive's).
    pub checkpoint: Option<Lsn>,
}

impl Batch {
    /// `true` when the batch carries no events (it may still carry a checkpoint).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// A shared, monotonic "durable up to" position.
///
/// The engine raises it to the minimum position every sink has made durable;
/// the source reads it and reports it to PostgreSQL as the slot's flush
/// position. It never goes backwards.
#[derive(Debug, Clone, Default)]
pub struct AckHandle(Arc<AtomicU64>);

impl AckHandle {
    /// A handle starting at `0/0`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the durable position to `lsn` (lower values are ignored).
    pub fn advance(&self, lsn: Lsn) {
        self.0.fetch_max(lsn.0, Ordering::AcqRel);
    }

    /// The durable position.
    pub fn get(&self) -> Lsn {
        Lsn(self.0.load(Ordering::Acquire))
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
    }
}
