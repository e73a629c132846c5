//! The acknowledgement watermark: per sink, what it made durable; to the
//! source, the minimum over every sink.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cdc_core::{AckHandle, Lsn};

use crate::metrics::PipelineMetrics;

/// Per sink: the highest durable checkpoint and the number of durable
/// batches. The source sees the minimum of each across sinks.
pub(crate) struct Durable {
    per_sink: Vec<(AtomicU64, AtomicU64)>,
    ack: AckHandle,
    metrics: Arc<PipelineMetrics>,
}

impl Durable {
    /// Nothing durable yet for `sinks` sinks; acknowledges through `ack`.
    pub(crate) fn new(sinks: usize, ack: AckHandle, metrics: Arc<PipelineMetrics>) -> Self {
        Self {
            per_sink: (0..sinks)
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
            ack,
            metrics,
        }
    }

    /// Sink `sink` made one more batch durable, with `checkpoint`.
    pub(crate) fn mark(&self, sink: usize, checkpoint: Option<Lsn>) {
        if let Some((lsn, batches)) = self.per_sink.get(sink) {
            if let Some(cp) = checkpoint {
                lsn.fetch_max(cp.0, Ordering::AcqRel);
            }
            batches.fetch_add(1, Ordering::AcqRel);
        }
        let min_of = |pick: fn(&(AtomicU64, AtomicU64)) -> u64| {
            self.per_sink.iter().map(pick).min().unwrap_or(0)
        };
        let lsn = min_of(|s| s.0.load(Ordering::Acquire));
        if lsn > 0 {
            self.ack.advance(Lsn(lsn));
            self.metrics.set_acknowledged(Lsn(lsn));
        }
        self.ack
            .advance_batches(min_of(|s| s.1.load(Ordering::Acquire)));
    }

    /// The position acknowledged to the source.
    pub(crate) fn acknowledged(&self) -> Lsn {
        self.ack.get()
    }
}
