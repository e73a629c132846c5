//! Exponential backoff with jitter, for retrying retryable errors.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Delays that double from `initial` up to `max`, each with ±25 % jitter
/// so that many clients do not retry in lockstep; optionally a bound on how
/// long one run of failures may last ([`Backoff::give_up_after`]).
///
/// ```
/// use std::time::Duration;
/// use cdc_core::Backoff;
///
/// let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
///     .give_up_after(Some(Duration::from_secs(600)));
/// // After a retryable failure:
/// let wait = backoff.next_delay();
/// assert!(wait <= Duration::from_millis(125));
/// assert!(!backoff.exhausted()); // failing for less than 10 minutes
/// // After a success:
/// backoff.reset();
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    attempts: u32,
    give_up_after: Option<Duration>,
    failing_since: Option<Instant>,
}

impl Backoff {
    /// A backoff starting at `initial`, never above `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
            next: initial,
            attempts: 0,
            give_up_after: None,
            failing_since: None,
        }
    }

    /// Bounds a run of failures: once the first failure since the last
    /// [`reset`](Backoff::reset) is at least `bound` old,
    /// [`exhausted`](Backoff::exhausted) says so. `None` (the default):
    /// retry for ever.
    pub fn give_up_after(mut self, bound: Option<Duration>) -> Self {
        self.give_up_after = bound;
        self
    }

    /// The delay before the next attempt; each call doubles the following one.
    /// The first call after a [`reset`](Backoff::reset) starts the run of
    /// failures that [`give_up_after`](Backoff::give_up_after) bounds.
    pub fn next_delay(&mut self) -> Duration {
        self.failing_since.get_or_insert_with(Instant::now);
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        // Jitter from the clock's nanoseconds: good enough to de-synchronise.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let factor = 0.75 + f64::from(nanos % 1000) / 2000.0; // 0.75 ..= 1.25
        base.mul_f64(factor).min(self.max)
    }

    /// Attempts since the last [`reset`](Backoff::reset).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// How long the current run of failures has lasted: since the first
    /// [`next_delay`](Backoff::next_delay) after the last reset.
    pub fn failing_for(&self) -> Option<Duration> {
        self.failing_since.map(|since| since.elapsed())
    }

    /// Whether the current run of failures has lasted at least the bound
    /// of [`give_up_after`](Backoff::give_up_after) (never without one).
    pub fn exhausted(&self) -> bool {
        match (self.give_up_after, self.failing_for()) {
            (Some(bound), Some(failing)) => failing >= bound,
            _ => false,
        }
    }

    /// The bound set by [`give_up_after`](Backoff::give_up_after).
    pub fn bound(&self) -> Option<Duration> {
        self.give_up_after
    }

    /// Back to `initial` after a success; ends the run of failures.
    pub fn reset(&mut self) {
        self.next = self.initial;
        self.attempts = 0;
        self.failing_since = None;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d1 = b.next_delay();
        assert!(d1 >= Duration::from_millis(75) && d1 <= Duration::from_millis(125));
        let d2 = b.next_delay();
        assert!(d2 >= Duration::from_millis(150) && d2 <= Duration::from_millis(250));
        for _ in 0..10 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        assert_eq!(b.attempts(), 12);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }

    #[test]
    fn gives_up_once_the_failures_last_the_bound() {
        let unbounded = {
            let mut b = Backoff::new(Duration::from_millis(1), Duration::from_millis(1));
            b.next_delay();
            b
        };
        assert!(!unbounded.exhausted());

        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_millis(1))
            .give_up_after(Some(Duration::from_millis(30)));
        assert!(!b.exhausted(), "no failure yet");
        assert_eq!(b.failing_for(), None);
        b.next_delay();
        assert!(!b.exhausted(), "the run of failures just began");
        std::thread::sleep(Duration::from_millis(40));
        b.next_delay();
        assert!(b.exhausted(), "failing for {:?}", b.failing_for());
        b.reset();
        assert!(!b.exhausted(), "a success ends the run");
        b.next_delay();
        assert!(!b.exhausted());

        let mut zero = Backoff::new(Duration::from_millis(1), Duration::from_millis(1))
            .give_up_after(Some(Duration::ZERO));
        zero.next_delay();
        assert!(
            zero.exhausted(),
            "a zero bound gives up at the first failure"
        );
    }
}
