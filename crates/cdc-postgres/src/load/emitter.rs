//! Turning snapshot rows into `op: r` events, and tracking which chunks
//! may be marked done once their batch is durable.

use std::collections::HashMap;

use cdc_core::{
    Batch, ChangeEvent, ControlEvent, Event, Lsn, Op, Row, SnapshotMarker, SourceInfo, TableName,
};

use super::workers::{ChunkInfo, LoadItem};

/// A chunk whose rows are all in batches up to `batch_seq`.
pub(crate) struct Completion {
    pub batch_seq: u64,
    pub chunk_id: i64,
    pub rows: u64,
    pub table: TableName,
}

/// Per chunk being emitted: the row held back (so the table's last row can
/// be marked `last`) and the row count.
struct Open {
    held: Option<Row>,
    next_row: u64,
}

pub(crate) struct Emitter {
    snapshot_lsn: Lsn,
    started_at_us: i64,
    open: HashMap<i64, Open>,
    completions: Vec<Completion>,
}

impl Emitter {
    pub fn new(snapshot_lsn: Lsn, started_at_us: i64) -> Self {
        Self {
            snapshot_lsn,
            started_at_us,
            open: HashMap::new(),
            completions: Vec::new(),
        }
    }

    fn event(&self, chunk: &ChunkInfo, row: Row, index: u64, marker: SnapshotMarker) -> Event {
        Event::Change(ChangeEvent {
            op: Op::Read,
            table: chunk.table.clone(),
            before: None,
            after: Some(row),
            source: SourceInfo {
                commit_lsn: self.snapshot_lsn,
                lsn: self.snapshot_lsn,
                // Stable across re-reads of the same chunk under the same snapshot.
                ordinal: (u64::from(chunk.chunk_no) << 32) | (index & 0xFFFF_FFFF),
                txid: None,
                commit_time_us: self.started_at_us,
                snapshot: marker,
            },
        })
    }

    /// Adds `item` to `batch`, which will be batch number `batch_seq`.
    /// Returns the number of events added.
    pub fn push(&mut self, item: LoadItem, batch: &mut Batch, batch_seq: u64) -> usize {
        let before = batch.events.len();
        match item {
            LoadItem::Start(chunk) => {
                if chunk.chunk_no == 0 {
                    batch
                        .events
                        .push(Event::Control(ControlEvent::SnapshotBegin {
                            table: Some(chunk.table.name.clone()),
                            snapshot_lsn: self.snapshot_lsn,
                        }));
                }
                self.open.insert(
                    chunk.id,
                    Open {
                        held: None,
                        next_row: 0,
                    },
                );
            }
            LoadItem::Rows(chunk, rows) => {
                let Some(mut open) = self.open.remove(&chunk.id) else {
                    return 0;
                };
                for row in rows {
                    if let Some(prev) = open.held.replace(row) {
                        let index = open.next_row;
                        open.next_row += 1;
                        let marker = if index == 0 && chunk.chunk_no == 0 {
                            SnapshotMarker::First
                        } else {
                            SnapshotMarker::True
                        };
                        let ev = self.event(&chunk, prev, index, marker);
                        batch.events.push(ev);
                    }
                }
                self.open.insert(chunk.id, open);
            }
            LoadItem::End(chunk, rows) => {
                if let Some(open) = self.open.remove(&chunk.id) {
                    if let Some(last) = open.held {
                        let index = open.next_row;
                        let marker = if chunk.is_last {
                            SnapshotMarker::Last
                        } else if index == 0 && chunk.chunk_no == 0 {
                            SnapshotMarker::First
                        } else {
                            SnapshotMarker::True
                        };
                        let ev = self.event(&chunk, last, index, marker);
                        batch.events.push(ev);
                    }
                }
                if chunk.is_last {
                    batch.events.push(Event::Control(ControlEvent::SnapshotEnd {
                        table: Some(chunk.table.name.clone()),
                        snapshot_lsn: self.snapshot_lsn,
                    }));
                }
                self.completions.push(Completion {
                    batch_seq,
                    chunk_id: chunk.id,
                    rows,
                    table: chunk.table.name.clone(),
                });
            }
        }
        batch.events.len() - before
    }

    /// Chunks whose batches are all durable (`durable_batches` counted from 1).
    pub fn take_completed(&mut self, durable_batches: u64) -> Vec<Completion> {
        let (done, waiting): (Vec<_>, Vec<_>) = self
            .completions
            .drain(..)
            .partition(|c| c.batch_seq <= durable_batches);
        self.completions = waiting;
        done
    }

    /// `true` when no chunk is being emitted or waiting for durability.
    pub fn is_idle(&self) -> bool {
        self.open.is_empty() && self.completions.is_empty()
    }
}
