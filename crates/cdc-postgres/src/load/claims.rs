//! The claims this instance holds on snapshot chunks, and the fence the
//! sinks check before writing rows read under them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// One claim this instance holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    attempt: u32,
    /// When the last renewal that succeeded was sent: the server's
    /// heartbeat time is not earlier, so the claim is this instance's at
    /// least until `renewed + claim_timeout`.
    renewed: Instant,
}

/// The claims this instance holds (chunks being read, or read and waiting
/// for the sinks), heartbeated until marked done, with the time each was
/// last renewed: a claim whose lease ran out may have been taken over, and
/// its rows must not leave this instance any more.
#[derive(Debug, Clone, Default)]
pub(crate) struct Claims(Arc<Mutex<HashMap<i64, Held>>>);

impl Claims {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<i64, Held>) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// Records claim `attempt` of chunk `id`, made at `at`.
    pub fn hold(&self, id: i64, attempt: u32, at: Instant) {
        self.with(|m| {
            m.insert(
                id,
                Held {
                    attempt,
                    renewed: at,
                },
            );
        });
    }

    /// Forgets claim `attempt` of chunk `id` (done, released or lost).
    pub fn forget(&self, id: i64, attempt: u32) {
        self.with(|m| {
            if m.get(&id).is_some_and(|h| h.attempt == attempt) {
                m.remove(&id);
            }
        });
    }

    /// Every claim held now.
    pub(super) fn all(&self) -> Vec<(i64, u32)> {
        self.with(|m| m.iter().map(|(id, h)| (*id, h.attempt)).collect())
    }

    pub(super) fn renewed(&self, id: i64, attempt: u32, at: Instant) {
        self.with(|m| {
            if let Some(h) = m.get_mut(&id).filter(|h| h.attempt == attempt) {
                h.renewed = h.renewed.max(at);
            }
        });
    }

    pub fn holds(&self, id: i64, attempt: u32) -> bool {
        self.with(|m| m.get(&id).is_some_and(|h| h.attempt == attempt))
    }

    /// `true` while claim `attempt` of chunk `id` is held and its lease
    /// (three quarters of `claim_timeout` from its last renewal, leaving a
    /// margin for clocks and delays) has not run out.
    pub fn valid(&self, id: i64, attempt: u32, claim_timeout: Duration) -> bool {
        let lease = claim_timeout.mul_f64(0.75);
        self.with(|m| {
            m.get(&id)
                .is_some_and(|h| h.attempt == attempt && h.renewed.elapsed() < lease)
        })
    }
}

/// The claims of the chunks whose rows are in one batch, checked by the
/// sinks right before they write it ([`cdc_core::Batch::without_lost_reads`]).
pub(crate) struct ClaimFence {
    claims: Claims,
    claim_timeout: Duration,
    chunks: Vec<(i64, u32)>,
}

impl ClaimFence {
    pub fn new(claims: Claims, claim_timeout: Duration, chunks: Vec<(i64, u32)>) -> Self {
        Self {
            claims,
            claim_timeout,
            chunks,
        }
    }
}

impl cdc_core::ReadClaims for ClaimFence {
    fn held(&self) -> bool {
        let lost = self
            .chunks
            .iter()
            .filter(|&&(id, attempt)| !self.claims.valid(id, attempt, self.claim_timeout))
            .count();
        if lost == 0 {
            return true;
        }
        // The batch's reads are dropped as a whole: none of its chunks may
        // be marked done from here, so every one of them is given up (the
        // source releases them) and read again.
        for &(id, attempt) in &self.chunks {
            self.claims.forget(id, attempt);
        }
        tracing::warn!(
            chunks = ?self.chunks,
            lost,
            "snapshot rows whose claim ran out before the sink wrote them (this process stood \
             still longer than the claim's lease): dropping them; their chunks are read again"
        );
        false
    }
}
