//! A histogram with fixed bucket bounds, updated with atomics (no lock on
//! the write path).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of the buckets of batch write durations: from
/// 1 ms (a local file without much to sync) to 30 s (a broker retrying).
pub(crate) const WRITE_SECONDS_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Counts observations per bucket; see [`Histogram::observe`].
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// One per bound, then one for values above the last bound.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

/// A copy of a [`Histogram`]'s state.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds, increasing.
    pub bounds: Vec<f64>,
    /// Observations per bound (not cumulative) that were above the previous
    /// bound and at most this one.
    pub counts: Vec<u64>,
    /// All observations, including those above the last bound.
    pub count: u64,
    /// Sum of the observed values.
    pub sum: f64,
}

impl Histogram {
    /// A histogram with these upper bounds (sorted and deduplicated here;
    /// non-finite bounds are dropped: `+Inf` is always implied).
    pub fn new(bounds: &[f64]) -> Self {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            bounds,
            counts,
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one value, in seconds. A value lands in the first bucket
    /// whose bound is at least the value (Prometheus' `le`).
    pub fn observe(&self, seconds: f64) {
        let index = self.bounds.partition_point(|b| *b < seconds);
        if let Some(c) = self.counts.get(index) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if seconds > 0.0 {
            // Saturating conversion: `as` clamps out-of-range floats.
            let nanos = (seconds * 1e9).round() as u64;
            self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        }
    }

    /// Records one duration.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// A copy of the current state; its `count` is the sum of its buckets,
    /// so the cumulative counts never exceed it.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let all: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let count = all.iter().sum();
        HistogramSnapshot {
            bounds: self.bounds.clone(),
            counts: all[..self.bounds.len()].to_vec(),
            count,
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_at_least_as_large() {
        let h = Histogram::new(&[1.0, 0.1, f64::INFINITY, 1.0]);
        for v in [0.0, 0.1, 0.10001, 1.0, 1.5, 100.0] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.bounds, vec![0.1, 1.0]);
        assert_eq!(s.counts, vec![2, 2]);
        assert_eq!(s.count, 6);
        assert!((s.sum - 102.70001).abs() < 1e-6, "{}", s.sum);
    }

    #[test]
    fn default_bounds_are_increasing() {
        let h = Histogram::new(WRITE_SECONDS_BOUNDS);
        assert_eq!(h.snapshot().bounds, WRITE_SECONDS_BOUNDS);
        h.observe_duration(Duration::from_millis(3));
        let s = h.snapshot();
        // 3 ms is above 2.5 ms and at most 5 ms.
        assert_eq!(s.counts[2], 1);
        assert_eq!(s.counts.iter().sum::<u64>(), 1);
    }
}
