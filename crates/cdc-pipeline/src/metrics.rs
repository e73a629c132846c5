//! Counters the pipeline updates as batches flow: events per table and
//! operation on the way in, and per sink the events written, errors, write
//! latency, channel fill and state. They are plain atomics to read from
//! anywhere (the engine renders them at `/metrics` and `/status`); pass
//! them to [`run_pipeline_observed`](crate::run_pipeline_observed).
//!
//! The write path takes no lock: per-table counters for the configured
//! tables are created up front, a batch is counted in runs of events of
//! the same table (one lookup per run, not per event), and everything else
//! is a relaxed atomic. Only a sink's error text sits behind a mutex, taken
//! when a write fails.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cdc_core::{Batch, ErrorClass, Event, Lsn, Op, TableName};

pub mod histogram;

use histogram::{Histogram, WRITE_SECONDS_BOUNDS};

/// Operations in counter order.
pub const OPS: [Op; 5] = [Op::Read, Op::Insert, Op::Update, Op::Delete, Op::Truncate];

/// The label value of an operation.
pub const fn op_label(op: Op) -> &'static str {
    match op {
        Op::Read => "read",
        Op::Insert => "insert",
        Op::Update => "update",
        Op::Delete => "delete",
        Op::Truncate => "truncate",
    }
}

const fn op_index(op: Op) -> usize {
    match op {
        Op::Read => 0,
        Op::Insert => 1,
        Op::Update => 2,
        Op::Delete => 3,
        Op::Truncate => 4,
    }
}

#[derive(Debug, Default)]
struct OpCounters([AtomicU64; 5]);

impl OpCounters {
    fn add(&self, counts: &[u64; 5]) {
        for (c, n) in self.0.iter().zip(counts) {
            if *n > 0 {
                c.fetch_add(*n, Ordering::Relaxed);
            }
        }
    }

    fn get(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// What a sink is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SinkState {
    /// Writing normally (or idle).
    Running,
    /// Its last write failed with a retryable error; retrying.
    Retrying,
    /// Failed with a fatal error; the pipeline stops.
    Failed,
}

impl SinkState {
    /// Every state, for metric label sets.
    pub const ALL: [SinkState; 3] = [SinkState::Running, SinkState::Retrying, SinkState::Failed];

    /// The name used in `/status` and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            SinkState::Running => "running",
            SinkState::Retrying => "retrying",
            SinkState::Failed => "failed",
        }
    }

    const fn to_u8(self) -> u8 {
        match self {
            SinkState::Running => 0,
            SinkState::Retrying => 1,
            SinkState::Failed => 2,
        }
    }

    const fn from_u8(v: u8) -> SinkState {
        match v {
            0 => SinkState::Running,
            1 => SinkState::Retrying,
            _ => SinkState::Failed,
        }
    }
}

/// The counters of one sink.
#[derive(Debug)]
pub struct SinkMetrics {
    id: String,
    kind: String,
    events: AtomicU64,
    batches: AtomicU64,
    retryable_errors: AtomicU64,
    fatal_errors: AtomicU64,
    write_seconds: Histogram,
    queued: AtomicI64,
    capacity: u64,
    state: AtomicU8,
    last_error: Mutex<Option<String>>,
}

impl SinkMetrics {
    /// Counters for the sink `id` (`sinks[0]`) of type `kind` (`file`)
    /// behind a channel of `capacity` batches.
    pub fn new(id: impl Into<String>, kind: impl Into<String>, capacity: usize) -> Self {
        Self {
            id: id.into(),
            kind: kind.into(),
            events: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            retryable_errors: AtomicU64::new(0),
            fatal_errors: AtomicU64::new(0),
            write_seconds: Histogram::new(WRITE_SECONDS_BOUNDS),
            queued: AtomicI64::new(0),
            capacity: capacity as u64,
            state: AtomicU8::new(SinkState::Running.to_u8()),
            last_error: Mutex::new(None),
        }
    }

    /// The sink's id, its `sink` label.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The sink's type, its `type` label.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// A batch of `events` change events was made durable in `took`.
    pub(crate) fn record_written(&self, events: u64, took: Duration) {
        self.events.fetch_add(events, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.write_seconds.observe_duration(took);
        self.state
            .store(SinkState::Running.to_u8(), Ordering::Relaxed);
    }

    /// A write failed with an error of `class`, rendered as `message`.
    pub(crate) fn record_error(&self, class: ErrorClass, message: String) {
        let (counter, state) = match class {
            ErrorClass::Retryable => (&self.retryable_errors, SinkState::Retrying),
            ErrorClass::Fatal => (&self.fatal_errors, SinkState::Failed),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(message);
        self.state.store(state.to_u8(), Ordering::Relaxed);
    }

    /// One batch entered the channel (call before sending).
    pub(crate) fn enqueued(&self) {
        self.queued.fetch_add(1, Ordering::Relaxed);
    }

    /// One batch left the channel, or a send was abandoned.
    pub(crate) fn dequeued(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }

    /// Change events made durable.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Batches made durable.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Failed writes of `class`.
    pub fn errors(&self, class: ErrorClass) -> u64 {
        match class {
            ErrorClass::Retryable => self.retryable_errors.load(Ordering::Relaxed),
            ErrorClass::Fatal => self.fatal_errors.load(Ordering::Relaxed),
        }
    }

    /// The write-duration histogram.
    pub fn write_seconds(&self) -> &Histogram {
        &self.write_seconds
    }

    /// Batches waiting in the channel.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed).max(0) as u64
    }

    /// The channel's capacity in batches.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The current state.
    pub fn state(&self) -> SinkState {
        SinkState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// The text of the last failed write, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Everything the pipeline counts; shared with `/metrics` and `/status`.
#[derive(Debug)]
pub struct PipelineMetrics {
    tables: HashMap<TableName, OpCounters>,
    /// Tables that were not configured (only a library user's source
    /// produces them): counted under a lock.
    other_tables: Mutex<BTreeMap<TableName, [u64; 5]>>,
    sinks: Vec<Arc<SinkMetrics>>,
    acknowledged: AtomicU64,
}

impl PipelineMetrics {
    /// Counters for `tables` and for `sinks`, in the order the pipeline
    /// receives the sinks.
    pub fn new(tables: &[TableName], sinks: Vec<SinkMetrics>) -> Self {
        Self {
            tables: tables
                .iter()
                .map(|t| (t.clone(), OpCounters::default()))
                .collect(),
            other_tables: Mutex::new(BTreeMap::new()),
            sinks: sinks.into_iter().map(Arc::new).collect(),
            acknowledged: AtomicU64::new(0),
        }
    }

    /// Counts the change events of a batch read from the source.
    pub(crate) fn record_source_batch(&self, batch: &Batch) {
        let mut run: Option<(&TableName, [u64; 5])> = None;
        for event in &batch.events {
            let Event::Change(change) = event else {
                continue;
            };
            let table = &change.table.name;
            match &mut run {
                Some((t, counts)) if *t == table => counts[op_index(change.op)] += 1,
                _ => {
                    if let Some((t, counts)) = run.take() {
                        self.add_table(t, &counts);
                    }
                    let mut counts = [0; 5];
                    counts[op_index(change.op)] = 1;
                    run = Some((table, counts));
                }
            }
        }
        if let Some((t, counts)) = run {
            self.add_table(t, &counts);
        }
    }

    fn add_table(&self, table: &TableName, counts: &[u64; 5]) {
        match self.tables.get(table) {
            Some(c) => c.add(counts),
            None => {
                let mut others = self
                    .other_tables
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let entry = others.entry(table.clone()).or_default();
                for (e, n) in entry.iter_mut().zip(counts) {
                    *e += n;
                }
            }
        }
    }

    /// Events received per table, `[read, insert, update, delete, truncate]`
    /// (see [`OPS`]), in table order.
    pub fn source_events(&self) -> BTreeMap<TableName, [u64; 5]> {
        let mut out: BTreeMap<TableName, [u64; 5]> = self
            .tables
            .iter()
            .map(|(t, c)| (t.clone(), c.get()))
            .collect();
        let others = self
            .other_tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        out.extend(others.iter().map(|(t, c)| (t.clone(), *c)));
        out
    }

    /// The counters of the sink at `index`.
    pub fn sink(&self, index: usize) -> Option<&Arc<SinkMetrics>> {
        self.sinks.get(index)
    }

    /// Every sink's counters, in pipeline order.
    pub fn sinks(&self) -> &[Arc<SinkMetrics>] {
        &self.sinks
    }

    /// Records the position acknowledged to the source.
    pub(crate) fn set_acknowledged(&self, lsn: Lsn) {
        self.acknowledged.fetch_max(lsn.0, Ordering::Relaxed);
    }

    /// The position acknowledged to the source; [`Lsn::ZERO`] before any.
    pub fn acknowledged(&self) -> Lsn {
        Lsn(self.acknowledged.load(Ordering::Relaxed))
    }
}

/// The number of change events (not control events) in a batch.
pub(crate) fn change_count(batch: &Batch) -> u64 {
    batch
        .events
        .iter()
        .filter(|e| matches!(e, Event::Change(_)))
        .count() as u64
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc as StdArc;

    use cdc_core::{ChangeEvent, SourceInfo, TableSchema};

    use super::*;

    fn change(table: &StdArc<TableSchema>, op: Op) -> Event {
        Event::Change(ChangeEvent {
            op,
            table: table.clone(),
            before: None,
            after: None,
            source: SourceInfo::default(),
        })
    }

    fn schema(name: &str) -> StdArc<TableSchema> {
        StdArc::new(TableSchema {
            database: "db".into(),
            oid: 1,
            name: TableName::new("public", name),
            columns: vec![],
            replica_identity: cdc_core::ReplicaIdentity::Default,
        })
    }

    #[test]
    fn counts_per_table_and_op_including_unconfigured_tables() {
        let (a, b) = (schema("a"), schema("b"));
        let m = PipelineMetrics::new(&[TableName::new("public", "a")], vec![]);
        let batch = Batch {
            events: vec![
                change(&a, Op::Insert),
                change(&a, Op::Insert),
                change(&b, Op::Delete),
                cdc_core::Event::Control(cdc_core::ControlEvent::Heartbeat { lsn: Lsn(1) }),
                change(&a, Op::Update),
            ],
            checkpoint: None,
            seq: 0,
            fence: None,
        };
        m.record_source_batch(&batch);
        m.record_source_batch(&batch);
        let counts = m.source_events();
        assert_eq!(counts[&TableName::new("public", "a")], [0, 4, 2, 0, 0]);
        assert_eq!(counts[&TableName::new("public", "b")], [0, 0, 0, 2, 0]);
        assert_eq!(change_count(&batch), 4);
    }

    #[test]
    fn sink_state_follows_errors_and_successes() {
        let s = SinkMetrics::new("sinks[0]", "file", 4);
        assert_eq!(s.state(), SinkState::Running);
        s.record_error(ErrorClass::Retryable, "busy".into());
        assert_eq!(s.state(), SinkState::Retrying);
        s.record_written(3, Duration::from_millis(2));
        assert_eq!(
            (s.state(), s.events(), s.batches()),
            (SinkState::Running, 3, 1)
        );
        assert_eq!(s.last_error().as_deref(), Some("busy"));
        s.record_error(ErrorClass::Fatal, "disk full".into());
        assert_eq!(s.state(), SinkState::Failed);
        assert_eq!(
            (s.errors(ErrorClass::Retryable), s.errors(ErrorClass::Fatal)),
            (1, 1)
        );
        s.enqueued();
        s.enqueued();
        s.dequeued();
        assert_eq!(s.queued(), 1);
    }
}
