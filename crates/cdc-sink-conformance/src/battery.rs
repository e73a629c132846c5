//! The conformance battery: what every [`Sink`] must do, checked against
//! what it stored, read back from its destination.
//!
//! A sink takes part by implementing [`Subject`]: open the sink onto the
//! destination of a table (a topic, a stream, an index, a file), read
//! back what it stored there, break and heal that destination, and do
//! one thing the sink must refuse for good. [`run`] then writes
//! [`Script`]'s three batches of hand-made changes (`id int4, v int4,
//! body text`; inserts, updates, deletes, one row changed twice in a
//! transaction) and checks, each on a table of its own:
//!
//! - [`ordering`]: batches written in order leave each key's changes in
//!   commit order and the newest values;
//! - [`retry_same_batch`]: a batch written twice (the engine retries a
//!   failed batch whole, part of it may have been stored) converges;
//! - [`replay_converges`]: after a restart the sink is handed batches it
//!   already stored, older than what it holds (at-least-once delivery),
//!   and converges to the newest values;
//! - [`classifies_errors`]: the sink's fatal case fails as fatal; while
//!   the destination is broken a write fails as retryable (within a
//!   bound: waiting forever is no answer), and once it is healed the same
//!   batch, written again on the same sink (after a backoff, as often as
//!   it fails retryably, as the engine does), is stored;
//! - [`close_after_writes`]: `close` succeeds after writes, and what was
//!   written is there.
//!
//! What a sink stored is judged as [`Stored::Changes`] (a log: each key's
//! first occurrences of a position must come in commit order, and
//! replaying the log by key must give the rows) or as
//! [`Stored::Documents`] (the rows themselves). The checks panic with
//! the difference.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cdc_core::{Batch, ErrorClass, Event, Op, Sink, SinkError, TableName, TableSchema, Value};
use serde_json::{json, Value as Json};

use crate::fixture::{self, change, text};
use crate::poll::{wait_for, wait_until};
use crate::replay::{apply, diff, row_key, Change};

/// How long what a sink stored may take to become readable.
const VISIBLE_WITHIN: Duration = Duration::from_secs(30);
/// How long a write to a broken destination may take to fail.
const FAILS_WITHIN: Duration = Duration::from_secs(90);
/// The pause before the engine writes a failed batch again.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// The schema of the checks' tables.
pub const SCHEMA: &str = "conformance";

/// What a sink stored at a table's destination, read back.
#[derive(Debug, Clone)]
pub enum Stored {
    /// Change events, each key's in the order the destination keeps them
    /// (a file, a topic partition, a stream).
    Changes(Vec<Change>),
    /// The rows the destination holds now, by the JSON text of their `id`
    /// (a search index).
    Documents(BTreeMap<String, Json>),
}

/// A sink under test, with the means to read back what it stored. Every
/// check uses a table of its own (a unique name in [`SCHEMA`]); the
/// destination follows from the table's name.
pub trait Subject: Send {
    /// The sink.
    type Sink: Sink;

    /// Opens the sink onto the destination of `table`. Opening it again
    /// writes to the same destination, as a restarted pipeline does.
    fn open(&mut self, table: &TableName) -> impl Future<Output = Self::Sink> + Send;

    /// What the destination of `table` holds now.
    fn read(&mut self, table: &TableName) -> impl Future<Output = Stored> + Send;

    /// Breaks the destination of `table` (a sink for it is open): writes
    /// must fail, retryably, until [`heal`](Subject::heal).
    fn break_destination(&mut self, table: &TableName) -> impl Future<Output = ()> + Send;

    /// Ends [`break_destination`](Subject::break_destination).
    fn heal(&mut self, table: &TableName) -> impl Future<Output = ()> + Send;

    /// Does what this sink must refuse for good (a message too large, a
    /// document the mapping rejects, a file that cannot be synced) with
    /// rows of `table`, and returns how the sink answered.
    fn fatal(
        &mut self,
        table: &Arc<TableSchema>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// The batches every check writes, and the rows they leave.
#[derive(Debug, Clone)]
pub struct Script {
    /// Three batches of two transactions each, in stream order.
    pub batches: [Batch; 3],
    /// The rows after all three, keyed by the JSON text of `id`.
    pub rows: BTreeMap<String, Json>,
}

/// Builds the transactions of a [`Script`].
struct Transactions {
    table: Arc<TableSchema>,
    rows: BTreeMap<i32, (i32, String)>,
    lsn: u64,
    events: Vec<Event>,
}

impl Transactions {
    fn push(&mut self, op: Op, id: i32, v: i32, body: String) {
        let ordinal = self.events.len() as u64;
        let row = Some((id, Value::Int4(v), text(&body)));
        self.events
            .push(change(&self.table, op, self.lsn, ordinal, row));
    }

    fn put(&mut self, id: i32, v: i32) {
        let op = match self.rows.contains_key(&id) {
            true => Op::Update,
            false => Op::Insert,
        };
        let body = format!("v{v} of {id} \"q\" ü");
        self.rows.insert(id, (v, body.clone()));
        self.push(op, id, v, body);
    }

    fn delete(&mut self, id: i32) {
        let (v, body) = self.rows.remove(&id).expect("deleting a row that exists");
        self.push(Op::Delete, id, v, body);
    }

    /// The events so far as one transaction; the next one commits later.
    fn commit(&mut self) -> Vec<Event> {
        self.lsn += 0x100;
        std::mem::take(&mut self.events)
    }

    /// Two transactions as one batch, acknowledging up to the second.
    fn batch(&mut self, first: Vec<Event>, second: Vec<Event>) -> Batch {
        let checkpoint = self.lsn - 0x100;
        fixture::batch([first, second].concat(), Some(checkpoint))
    }
}

impl Script {
    /// The script on `table`: rows 1..=20 inserted; all updated, 20
    /// deleted, 21 inserted, 1 updated again; 1..=10 updated, 19 deleted,
    /// 2 updated twice in one transaction.
    pub fn new(table: &Arc<TableSchema>) -> Script {
        let mut t = Transactions {
            table: table.clone(),
            rows: BTreeMap::new(),
            lsn: 0x1_0000_1000,
            events: Vec::new(),
        };
        (1..=10).for_each(|id| t.put(id, 1));
        let t1 = t.commit();
        (11..=20).for_each(|id| t.put(id, 1));
        let t2 = t.commit();
        let b1 = t.batch(t1, t2);
        (1..=20).for_each(|id| t.put(id, 2));
        let t3 = t.commit();
        t.delete(20);
        t.put(21, 2);
        t.put(1, 3);
        let t4 = t.commit();
        let b2 = t.batch(t3, t4);
        (1..=10).for_each(|id| t.put(id, 4));
        t.delete(19);
        let t5 = t.commit();
        t.put(2, 5);
        t.put(2, 6);
        let t6 = t.commit();
        let b3 = t.batch(t5, t6);
        let rows = t
            .rows
            .iter()
            .map(|(id, (v, body))| (id.to_string(), json!({"id": id, "v": v, "body": body})))
            .collect();
        Script {
            batches: [b1, b2, b3],
            rows,
        }
    }
}

/// A table of the checks' own.
fn fresh_table(check: &str) -> Arc<TableSchema> {
    fixture::table(SCHEMA, &fixture::unique_name(&format!("{check}_")))
}

/// `None` when `stored` is what the script's `want` rows should be,
/// else what is wrong.
fn judge(stored: &Stored, table: &str, want: &BTreeMap<String, Json>) -> Option<String> {
    match stored {
        Stored::Documents(docs) => diff(docs, want),
        Stored::Changes(changes) => {
            let mine: Vec<&Change> = changes.iter().filter(|c| c.table == table).collect();
            let mut seen = HashSet::new();
            let mut last: HashMap<String, (u64, u64)> = HashMap::new();
            for c in &mine {
                let Some(key) = row_key(c.row(), &["id"]) else {
                    return Some(format!("a change without its row's id: {c:?}"));
                };
                let at = c.position();
                if !seen.insert(at) {
                    continue; // a duplicate: at least once
                }
                if let Some(prev) = last.insert(key.clone(), at).filter(|p| *p >= at) {
                    return Some(format!(
                        "key {key}: the change at {at:?} is stored after the one at {prev:?}"
                    ));
                }
            }
            diff(&apply(&mine, table), want)
        }
    }
}

/// Waits until what the destination of `table` holds is `want`.
async fn assert_stored<S: Subject>(
    subject: &mut S,
    table: &TableName,
    want: &BTreeMap<String, Json>,
    what: &str,
) {
    let name = table.to_string();
    let mut problem = None;
    let stored = wait_until(VISIBLE_WITHIN, async || {
        problem = judge(&subject.read(table).await, &name, want);
        problem.is_none()
    })
    .await;
    assert!(stored, "{what}: {name}: {}", problem.unwrap_or_default());
}

/// Writes `batch`; panics, naming `what`, when the sink fails.
async fn write(sink: &mut impl Sink, batch: &Batch, what: &str) {
    if let Err(e) = sink.write_batch(batch).await {
        panic!("{what}: the write failed: {}", cdc_core::error_chain(&e));
    }
}

/// Batches written in order leave each key's changes in commit order and
/// the newest values.
pub async fn ordering<S: Subject>(subject: &mut S) {
    let table = fresh_table("order");
    let script = Script::new(&table);
    let mut sink = subject.open(&table.name).await;
    for (i, b) in script.batches.iter().enumerate() {
        write(&mut sink, b, &format!("ordering: batch {}", i + 1)).await;
    }
    assert_stored(subject, &table.name, &script.rows, "ordering").await;
}

/// The same batch written twice, as the engine retries a batch that
/// failed after part of it was stored, converges.
pub async fn retry_same_batch<S: Subject>(subject: &mut S) {
    let table = fresh_table("retry");
    let script = Script::new(&table);
    let [b1, b2, b3] = &script.batches;
    let mut sink = subject.open(&table.name).await;
    for b in [b1, b2, b2, b3] {
        write(&mut sink, b, "retry of the same batch").await;
    }
    assert_stored(
        subject,
        &table.name,
        &script.rows,
        "retry of the same batch",
    )
    .await;
}

/// After a restart the sink is handed again the batches after the last
/// acknowledged one, older than what it stored: it converges to the
/// newest values.
pub async fn replay_converges<S: Subject>(subject: &mut S) {
    let table = fresh_table("replay");
    let script = Script::new(&table);
    let [b1, b2, b3] = &script.batches;
    let mut sink = subject.open(&table.name).await;
    for b in [b1, b2, b3] {
        write(&mut sink, b, "replay: first run").await;
    }
    drop(sink);
    let mut sink = subject.open(&table.name).await;
    for b in [b2, b3] {
        write(&mut sink, b, "replay: after the restart").await;
    }
    assert_stored(subject, &table.name, &script.rows, "replay").await;
}

/// The sink's fatal case fails as fatal; a write to a broken destination
/// fails as retryable, and once the destination is healed the same batch,
/// written again on the same sink, is stored.
pub async fn classifies_errors<S: Subject>(subject: &mut S) {
    let table = fresh_table("fatal");
    match subject.fatal(&table).await {
        Ok(()) => panic!("the fatal case succeeded"),
        Err(e) => assert_eq!(
            e.class(),
            ErrorClass::Fatal,
            "the fatal case failed as {}: {}",
            e.class(),
            cdc_core::error_chain(&e)
        ),
    }

    let table = fresh_table("transient");
    let script = Script::new(&table);
    let [b1, b2, b3] = &script.batches;
    let mut sink = subject.open(&table.name).await;
    subject.break_destination(&table.name).await;
    let attempt = tokio::time::timeout(FAILS_WITHIN, sink.write_batch(b1)).await;
    subject.heal(&table.name).await;
    match attempt {
        Err(_) => panic!("a write to the broken destination did not end within {FAILS_WITHIN:?}"),
        Ok(Ok(())) => panic!("a write to the broken destination succeeded"),
        Ok(Err(e)) => assert_eq!(
            e.class(),
            ErrorClass::Retryable,
            "a write to the broken destination failed as {}: {}",
            e.class(),
            cdc_core::error_chain(&e)
        ),
    }
    // As the engine does: the same batch again, after a backoff, until
    // it is stored (a sink may take a moment to reconnect).
    let mut last = None;
    let retried = wait_for(FAILS_WITHIN, async || match sink.write_batch(b1).await {
        Ok(()) => Some(Ok(())),
        Err(e) if e.is_retryable() => {
            last = Some(cdc_core::error_chain(&e));
            tokio::time::sleep(RETRY_BACKOFF).await;
            None
        }
        Err(e) => Some(Err(cdc_core::error_chain(&e))),
    })
    .await;
    match retried {
        Some(Ok(())) => {}
        Some(Err(e)) => panic!("the retried batch failed fatally after healing: {e}"),
        None => panic!(
            "the retried batch was not stored within {FAILS_WITHIN:?} after healing: {}",
            last.unwrap_or_default()
        ),
    }
    for b in [b2, b3] {
        write(&mut sink, b, "after the destination was healed").await;
    }
    assert_stored(subject, &table.name, &script.rows, "retry after healing").await;
}

/// `close` succeeds after writes, and what was written is there.
pub async fn close_after_writes<S: Subject>(subject: &mut S) {
    let table = fresh_table("close");
    let script = Script::new(&table);
    let mut sink = subject.open(&table.name).await;
    for b in &script.batches {
        write(&mut sink, b, "close").await;
    }
    if let Err(e) = sink.close().await {
        panic!("close failed: {}", cdc_core::error_chain(&e));
    }
    assert_stored(subject, &table.name, &script.rows, "close").await;
}

/// Runs every check on `subject`, one after another; `name` labels the
/// progress printed to stderr.
pub async fn run<S: Subject>(name: &str, subject: &mut S) {
    eprintln!("{name}: ordering");
    ordering(subject).await;
    eprintln!("{name}: retry of the same batch");
    retry_same_batch(subject).await;
    eprintln!("{name}: replay converges");
    replay_converges(subject).await;
    eprintln!("{name}: fatal and retryable errors");
    classifies_errors(subject).await;
    eprintln!("{name}: close after writes");
    close_after_writes(subject).await;
    eprintln!("{name}: all checks passed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_leaves_the_rows_its_changes_say() {
        let table = fixture::table(SCHEMA, "t");
        let script = Script::new(&table);
        assert_eq!(script.rows.len(), 19);
        assert_eq!(script.rows["2"]["v"], 6);
        assert_eq!(script.rows["1"]["v"], 4);
        assert_eq!(script.rows["15"]["v"], 2);
        assert!(!script.rows.contains_key("19") && !script.rows.contains_key("20"));
        // Checkpoints and commit positions only grow.
        let positions: Vec<(u64, u64)> = script
            .batches
            .iter()
            .flat_map(|b| &b.events)
            .map(|e| match e {
                Event::Change(c) => (c.source.commit_lsn.0, c.source.ordinal),
                _ => unreachable!(),
            })
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
        let checkpoints: Vec<u64> = script
            .batches
            .iter()
            .map(|b| b.checkpoint.unwrap().0)
            .collect();
        assert!(checkpoints.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            checkpoints[2],
            positions.last().unwrap().0,
            "the last batch acknowledges its last commit"
        );
    }

    fn ch(id: i64, v: i64, at: u64, op: &str) -> Change {
        let row = json!({"id": id, "v": v});
        let (before, after) = match op {
            "d" => (row, Json::Null),
            _ => (Json::Null, row),
        };
        Change {
            output: 0,
            seq: 0,
            op: op.into(),
            table: "s.t".into(),
            snapshot: "false".into(),
            lsn: at,
            commit_lsn: at,
            ordinal: 0,
            before,
            after,
            unchanged_toast: Vec::new(),
        }
    }

    #[test]
    fn a_log_is_judged_by_key_order_and_replay() {
        let want: BTreeMap<String, Json> = [("1".to_owned(), json!({"id": 1, "v": 2}))].into();
        let log = |cs: &[(i64, i64, u64, &str)]| {
            Stored::Changes(
                cs.iter()
                    .map(|&(id, v, at, op)| ch(id, v, at, op))
                    .collect(),
            )
        };
        let good = log(&[
            (1, 1, 10, "c"),
            (2, 1, 11, "c"),
            (1, 2, 20, "u"),
            (2, 1, 30, "d"),
        ]);
        assert_eq!(judge(&good, "s.t", &want), None);
        // A replayed older change after newer ones: a duplicate, fine as
        // long as the newest comes again.
        let replayed = log(&[
            (1, 1, 10, "c"),
            (1, 2, 20, "u"),
            (1, 1, 10, "c"),
            (1, 2, 20, "u"),
        ]);
        assert_eq!(judge(&replayed, "s.t", &want), None);
        // A change stored after a later one of its key: out of order.
        let swapped = log(&[(1, 2, 20, "u"), (1, 1, 10, "c"), (1, 2, 21, "u")]);
        assert!(judge(&swapped, "s.t", &want).is_some_and(|p| p.contains("stored after")));
        // The last value missing.
        assert!(judge(&log(&[(1, 1, 10, "c")]), "s.t", &want).is_some());
        // Documents: the rows themselves.
        assert_eq!(judge(&Stored::Documents(want.clone()), "s.t", &want), None);
        assert!(judge(&Stored::Documents(BTreeMap::new()), "s.t", &want).is_some());
    }
}
