//! Turning snapshot rows into `op: r` events, and tracking which chunks
//! may be marked done once their batch is durable.

use std::collections::HashMap;

use cdc_core::{
    Batch, ChangeEvent, ControlEvent, Event, Lsn, Op, Row, SnapshotMarker, SourceInfo, TableName,
};

use super::item::{ChunkInfo, LoadItem};

/// A chunk whose rows are all in batches up to `batch_seq`.
pub(crate) struct Completion {
    pub batch_seq: u64,
    pub chunk_id: i64,
    /// The claim it was read under: marked done only if still current.
    pub attempt: u32,
    pub rows: u64,
    pub table: TableName,
    /// The table's files it was read from.
    pub files: String,
}

/// Per chunk being emitted: the row held back (so the table's last row can
/// be marked `last`) and the row count.
struct Open {
    held: Option<Row>,
    next_row: u64,
}

/// Open reads are kept per chunk *and claim*: two readers may read the
/// same chunk under different claims (one of them lost its claim without
/// knowing yet), and one's items must never end the other's read.
type ReadKey = (i64, u32);

fn key(chunk: &ChunkInfo) -> ReadKey {
    (chunk.id, chunk.attempt)
}

pub(crate) struct Emitter {
    snapshot_lsn: Lsn,
    started_at_us: i64,
    open: HashMap<ReadKey, Open>,
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

    /// A snapshot read's position: commit LSN `C − 1` for the snapshot's
    /// consistent point C. The rows show every transaction that committed
    /// before C; one whose commit record starts exactly at C is not in the
    /// snapshot and is streamed with commit LSN C. So reads sort below
    /// every streamed change by (`commit_lsn`, `ordinal`), whatever their
    /// ordinal (`chunk_no << 32 | index`, stable across re-reads of a chunk
    /// under the same snapshot).
    fn event(&self, chunk: &ChunkInfo, row: Row, index: u64, marker: SnapshotMarker) -> Event {
        let position = Lsn(self.snapshot_lsn.as_u64().saturating_sub(1));
        Event::Change(ChangeEvent {
            op: Op::Read,
            table: chunk.table.clone(),
            before: None,
            after: Some(row),
            source: SourceInfo {
                commit_lsn: position,
                lsn: position,
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
                // A newer claim of the chunk supersedes older reads of it
                // here: their claims are lost, whatever they still send.
                self.open
                    .retain(|&(id, attempt), _| id != chunk.id || attempt > chunk.attempt);
                self.open.insert(
                    key(&chunk),
                    Open {
                        held: None,
                        next_row: 0,
                    },
                );
            }
            LoadItem::Rows(chunk, rows) => {
                let Some(mut open) = self.open.remove(&key(&chunk)) else {
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
                self.open.insert(key(&chunk), open);
            }
            LoadItem::Abort(chunk) => {
                // Rows already emitted stay (they are true rows of the
                // snapshot, read again later); the read no longer counts.
                self.open.remove(&key(&chunk));
            }
            LoadItem::End(chunk, rows) => {
                // The chunk's last row is held back until now, so a chunk
                // with rows always puts one into this batch; a chunk without
                // rows has nothing here and is complete once the batches
                // before this one are durable. (This batch may never be
                // returned: a batch that stays empty is not handed out.)
                let mut in_this_batch = false;
                let Some(open) = self.open.remove(&key(&chunk)) else {
                    // Not open: aborted, or never started here.
                    return 0;
                };
                {
                    if let Some(last) = open.held {
                        in_this_batch = true;
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
                    batch_seq: if in_this_batch {
                        batch_seq
                    } else {
                        batch_seq.saturating_sub(1)
                    },
                    chunk_id: chunk.id,
                    attempt: chunk.attempt,
                    rows,
                    table: chunk.table.name.clone(),
                    files: chunk.files.clone(),
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

    /// Puts back completions that could not be marked done (the metadata
    /// connection failed): they are taken again on the next call.
    pub fn requeue(&mut self, completions: Vec<Completion>) {
        self.completions.extend(completions);
    }

    /// `true` while some emitted chunk waits for its batch to be durable.
    pub fn awaits_durability(&self) -> bool {
        !self.completions.is_empty()
    }

    /// `true` when no chunk is being emitted or waiting for durability.
    pub fn is_idle(&self) -> bool {
        self.open.is_empty() && self.completions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cdc_core::{ReplicaIdentity, TableName, TableSchema, Value};

    use super::*;

    fn chunk(id: i64, chunk_no: u32, is_last: bool) -> Arc<ChunkInfo> {
        claim(id, 1, chunk_no, is_last)
    }

    fn claim(id: i64, attempt: u32, chunk_no: u32, is_last: bool) -> Arc<ChunkInfo> {
        Arc::new(ChunkInfo {
            id,
            attempt,
            table: Arc::new(TableSchema {
                database: "db".into(),
                oid: 1,
                name: TableName::new("public", "t"),
                columns: Vec::new(),
                replica_identity: ReplicaIdentity::Default,
            }),
            chunk_no,
            is_last,
            files: "1:1".into(),
        })
    }

    #[test]
    fn reads_sort_below_a_change_committed_at_the_snapshot_lsn() {
        // A transaction whose commit record starts exactly at the consistent
        // point C is streamed with commit LSN C and ordinals from 0: every
        // read, whatever its chunk and row, must sort below it.
        let c = Lsn(0x1C05_B898);
        let mut e = Emitter::new(c, 0);
        let mut b = Batch::default();
        let late = chunk(7, 3, true);
        e.push(LoadItem::Start(late.clone()), &mut b, 1);
        e.push(LoadItem::Rows(late.clone(), rows(&[1, 2])), &mut b, 1);
        e.push(LoadItem::End(late, 2), &mut b, 1);
        let streamed_at_c = (c, 0u64);
        for event in &b.events {
            if let Event::Change(read) = event {
                let position = (read.source.commit_lsn, read.source.ordinal);
                assert!(
                    position < streamed_at_c,
                    "read at {position:?} sorts after a change at {streamed_at_c:?}"
                );
                assert_eq!(read.source.commit_lsn, Lsn(c.as_u64() - 1));
            }
        }
    }

    #[test]
    fn an_empty_chunk_does_not_wait_for_a_batch_that_stays_empty() {
        let mut e = Emitter::new(Lsn(1), 0);
        // Batch 1 holds chunk 0's rows and is returned.
        let mut b1 = Batch::default();
        let c0 = chunk(10, 0, false);
        e.push(LoadItem::Start(c0.clone()), &mut b1, 1);
        e.push(
            LoadItem::Rows(c0.clone(), vec![Row::new(vec![Value::Int4(1)])]),
            &mut b1,
            1,
        );
        e.push(LoadItem::End(c0, 1), &mut b1, 1);
        assert!(!b1.events.is_empty());
        // Chunk 1 is empty and ends while batch 2 is still empty: batch 2
        // is never handed out, so the chunk must complete with batch 1.
        let mut b2 = Batch::default();
        let c1 = chunk(11, 1, false);
        e.push(LoadItem::Start(c1.clone()), &mut b2, 2);
        e.push(LoadItem::End(c1, 0), &mut b2, 2);
        assert!(b2.events.is_empty());
        let done: Vec<i64> = e.take_completed(1).iter().map(|c| c.chunk_id).collect();
        assert_eq!(done, vec![10, 11]);
        assert!(e.is_idle());
    }

    fn ids(batch: &Batch) -> Vec<i32> {
        batch
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Change(c) => match c.after.as_ref()?.values().first()? {
                    Value::Int4(v) => Some(*v),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    fn rows(ids: &[i32]) -> Vec<Row> {
        ids.iter()
            .map(|i| Row::new(vec![Value::Int4(*i)]))
            .collect()
    }

    #[test]
    fn a_second_reader_of_the_same_chunk_is_not_cut_short_by_the_first() {
        // Reader 1 of this instance lost its claim without noticing; reader
        // 2 of the same instance claimed the chunk again and reads it from
        // the start. Reader 1's late End must not end reader 2's chunk.
        let mut e = Emitter::new(Lsn(1), 0);
        let mut b = Batch::default();
        let first = claim(5, 1, 0, true);
        let second = claim(5, 2, 0, true);
        e.push(LoadItem::Start(first.clone()), &mut b, 1);
        e.push(LoadItem::Rows(first.clone(), rows(&[1, 2])), &mut b, 1);
        e.push(LoadItem::Start(second.clone()), &mut b, 1);
        e.push(LoadItem::Rows(second.clone(), rows(&[1, 2])), &mut b, 1);
        e.push(LoadItem::End(first, 2), &mut b, 1);
        e.push(LoadItem::Rows(second.clone(), rows(&[3])), &mut b, 1);
        e.push(LoadItem::End(second, 3), &mut b, 1);
        let mut got = ids(&b);
        got.sort_unstable();
        got.dedup();
        assert_eq!(got, vec![1, 2, 3], "every row of the chunk is emitted");
        let done = e.take_completed(1);
        assert_eq!(
            done.len(),
            1,
            "the chunk completes once, with the second read"
        );
        assert_eq!((done[0].rows, done[0].attempt), (3, 2));
        assert!(e.is_idle());
    }

    #[test]
    fn an_aborted_read_leaves_the_emitter_idle() {
        // A read that failed after it started (here the chunk is then read
        // by another instance) must not leave its chunk open for ever.
        let mut e = Emitter::new(Lsn(1), 0);
        let mut b = Batch::default();
        let c = chunk(9, 0, false);
        e.push(LoadItem::Start(c.clone()), &mut b, 1);
        e.push(LoadItem::Rows(c.clone(), rows(&[1, 2])), &mut b, 1);
        assert!(!e.is_idle());
        e.push(LoadItem::Abort(c.clone()), &mut b, 1);
        assert!(e.is_idle());
        // A late End of the aborted read completes nothing.
        e.push(LoadItem::End(c, 2), &mut b, 1);
        assert!(e.take_completed(1).is_empty());
    }

    #[test]
    fn a_chunk_with_rows_waits_for_the_batch_holding_its_last_row() {
        let mut e = Emitter::new(Lsn(1), 0);
        let mut b = Batch::default();
        let c = chunk(7, 0, true);
        e.push(LoadItem::Start(c.clone()), &mut b, 3);
        e.push(
            LoadItem::Rows(c.clone(), vec![Row::new(vec![Value::Int4(1)])]),
            &mut b,
            3,
        );
        e.push(LoadItem::End(c, 1), &mut b, 3);
        assert!(e.take_completed(2).is_empty());
        assert_eq!(e.take_completed(3).len(), 1);
    }
}
