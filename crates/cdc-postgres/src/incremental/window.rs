//! The window of one chunk: from the moment the chunk is read until its
//! high watermark comes back through the stream, the keys of the table
//! that stream events change are collected; at the high watermark the
//! chunk's rows with those keys are dropped and the rest are emitted.
//!
//! Dropping a row relies on the stream carrying its newer state whole. An
//! update that leaves a TOASTed value unchanged does not (with `REPLICA
//! IDENTITY DEFAULT` its new row marks the value unchanged, and the old row
//! is not sent): a sink that never had the row, which is what a backfill
//! is for, would get it without that value. So the window also follows
//! the rows of the chunk's keys through the changes it sees (each change's
//! new row, its unchanged values taken from the row it changed: the
//! chunk's, or the one an earlier change in the window left), and when the
//! last change of a key left a value unchanged, that key's row as it
//! stands then is emitted in place of the dropped one. It is the row's
//! state at the high watermark (every change before the watermark went
//! through the window), so it is exact there like any other read.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cdc_core::{ChangeEvent, Op, Row, TableSchema, Value};

/// A row key rendered as JSON (`[1,"a"]`): equal keys render equally, and
/// JSON keeps `1` and `"1"` apart.
pub(crate) type KeyText = Vec<u8>;

/// Renders the values of `row` at `positions` as a [`KeyText`]; `None`
/// when one is missing or NULL (the image does not hold the key: a
/// key-only old row of another index, say).
pub(crate) fn key_of(row: &Row, positions: &[usize]) -> Option<KeyText> {
    let mut out = Vec::with_capacity(16 * positions.len() + 2);
    out.push(b'[');
    for (i, p) in positions.iter().enumerate() {
        let value = row.values().get(*p)?;
        if matches!(value, Value::Null | Value::UnchangedToast) {
            return None;
        }
        if i > 0 {
            out.push(b',');
        }
        cdc_core::encode::write_value(&mut out, value);
    }
    out.push(b']');
    Some(out)
}

/// Followed rows allowed beyond twice the chunk's rows before the chunk
/// is read again (see [`Window::observe`]).
const FOLLOWED_SLACK: usize = 1024;

/// One chunk between its read and its high watermark.
#[derive(Debug)]
pub(crate) struct Window {
    /// Positions of the chunk key's columns in the table's rows.
    key: Vec<usize>,
    /// Their names, to find them in the rows of a change whose table
    /// was described with other columns (before or after a schema change).
    names: Vec<String>,
    /// The table as the chunk was read.
    schema: Arc<TableSchema>,
    /// The key's positions in the rows of the last other description a
    /// change came with (`None`: it lacks a key column).
    other: Option<(Arc<TableSchema>, Option<Vec<usize>>)>,
    /// The chunk's rows, in key order, with their keys.
    rows: Vec<(KeyText, Row)>,
    /// Keys of the chunk's rows changed by stream events since the window
    /// opened (only those: no other key can drop a row, so the set never
    /// outgrows the chunk, whatever the transactions inside the window
    /// change).
    changed: HashSet<KeyText>,
    /// A stream event changed a row whose key it does not tell (or the
    /// table was truncated): no row of the chunk can be trusted.
    spoiled: bool,
    /// Positions of the chunk's keys in `rows`.
    index: HashMap<KeyText, usize>,
    /// The rows of the chunk's keys (and of keys a change moved them to)
    /// as the changes inside the window left them.
    latest: HashMap<KeyText, Latest>,
}

/// A row as the changes inside a window left it.
#[derive(Debug)]
enum Latest {
    /// Deleted (or moved to another key).
    Gone,
    /// The row, whole; `partial`: the last change did not carry all its
    /// values (an unchanged TOAST value), so a sink may lack some.
    Row { row: Row, partial: bool },
}

/// What closing a window came to.
#[derive(Debug, PartialEq)]
pub(crate) enum Closed {
    /// The rows to emit as reads, in key order (rows changed inside the
    /// window are left out), and how many were dropped.
    Rows { rows: Vec<Row>, dropped: usize },
    /// The chunk must be read again: a change inside the window could
    /// not be matched to a key.
    Reread,
}

impl Window {
    /// A window over `rows` (in key order) of `schema`, whose key is the
    /// columns at `key`. A row without a complete key spoils the window (it
    /// cannot happen for a key of NOT NULL columns).
    pub fn new(schema: Arc<TableSchema>, key: Vec<usize>, rows: Vec<Row>) -> Self {
        let names = key
            .iter()
            .filter_map(|p| schema.columns.get(*p).map(|c| c.name.clone()))
            .collect();
        let mut spoiled = false;
        let rows: Vec<(KeyText, Row)> = rows
            .into_iter()
            .filter_map(|row| match key_of(&row, &key) {
                Some(k) => Some((k, row)),
                None => {
                    spoiled = true;
                    None
                }
            })
            .collect();
        let index = rows
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        Self {
            key,
            names,
            schema,
            other: None,
            rows,
            changed: HashSet::new(),
            spoiled,
            index,
            latest: HashMap::new(),
        }
    }

    /// The row of `key` as the window last knew it: its latest state, or
    /// the chunk's row; `None` when it is neither tracked nor in the chunk,
    /// or deleted.
    fn known(&self, key: &KeyText) -> Option<&Row> {
        match self.latest.get(key) {
            Some(Latest::Row { row, .. }) => Some(row),
            Some(Latest::Gone) => None,
            None => self
                .index
                .get(key)
                .and_then(|i| self.rows.get(*i))
                .map(|(_, r)| r),
        }
    }

    /// `true` when the window follows `key`: a key of the chunk, or one a
    /// change moved a followed row to.
    fn follows(&self, key: &KeyText) -> bool {
        self.latest.contains_key(key) || self.index.contains_key(key)
    }

    /// Follows the row a change of the chunk's description leaves at
    /// `new_key` (`None`: deleted) and the key it left (`old_key`, when the
    /// key changed or the row was deleted).
    fn follow(&mut self, op: Op, new: Option<(&KeyText, &Row)>, old_key: Option<&KeyText>) {
        if let Some((key, row)) = new {
            let partial = row
                .values()
                .iter()
                .any(|v| matches!(v, Value::UnchangedToast));
            let base = if op == Op::Update {
                old_key.unwrap_or(key)
            } else {
                key
            };
            if !partial {
                if self.follows(key) || self.follows(base) {
                    self.latest.insert(
                        key.clone(),
                        Latest::Row {
                            row: row.clone(),
                            partial: false,
                        },
                    );
                }
            } else if let Some(before) = self.known(base) {
                let values = row
                    .values()
                    .iter()
                    .zip(before.values())
                    .map(|(v, b)| match v {
                        Value::UnchangedToast => b.clone(),
                        v => v.clone(),
                    })
                    .collect();
                self.latest.insert(
                    key.clone(),
                    Latest::Row {
                        row: Row::new(values),
                        partial: true,
                    },
                );
            } else if self.follows(base) {
                // The row it changed was deleted inside the window: cannot
                // happen; read the chunk again rather than guess.
                self.spoiled = true;
            }
        }
        if let Some(old) = old_key {
            if new.is_none_or(|(k, _)| k != old) && self.follows(old) {
                self.latest.insert(old.clone(), Latest::Gone);
            }
        }
    }

    /// A stream event of the chunk's table: the keys it changes are
    /// collected (an update's old key too, when the key changed). The key
    /// is found by its columns' names when the change's table was described
    /// with other columns than the chunk's (a column added or dropped in
    /// between); a change whose rows lack a key column spoils the window.
    pub fn observe(&mut self, change: &ChangeEvent) {
        let table = &change.table;
        let same = Arc::ptr_eq(table, &self.schema) || table.columns == self.schema.columns;
        if !same
            && !self
                .other
                .as_ref()
                .is_some_and(|(t, _)| Arc::ptr_eq(t, table))
        {
            let positions = self
                .names
                .iter()
                .map(|n| table.column_index(n))
                .collect::<Option<Vec<usize>>>();
            self.other = Some((table.clone(), positions));
        }
        let key: &[usize] = if same {
            &self.key
        } else {
            match &self.other {
                Some((_, Some(positions))) => positions,
                _ => {
                    self.spoiled = true;
                    return;
                }
            }
        };
        let images: [Option<&Row>; 2] = match change.op {
            Op::Insert | Op::Read => [change.after.as_ref(), None],
            Op::Update => [change.after.as_ref(), change.before.as_ref()],
            Op::Delete => [change.before.as_ref(), None],
            Op::Truncate => {
                self.spoiled = true;
                return;
            }
        };
        let mut any = false;
        let mut keys: [Option<KeyText>; 2] = [None, None];
        for (slot, row) in keys.iter_mut().zip(images) {
            let Some(row) = row else { continue };
            match key_of(row, key) {
                Some(k) => {
                    any = true;
                    if self.index.contains_key(&k) {
                        self.changed.insert(k.clone());
                    }
                    *slot = Some(k);
                }
                // The new row always holds the key; an old key-only image
                // of another index does not: its row is unknown.
                None => self.spoiled = true,
            }
        }
        if !any {
            self.spoiled = true;
            return;
        }
        let [first, second] = keys;
        let (new, old) = match change.op {
            Op::Delete => (None, first),
            _ => (first.zip(change.after.as_ref()), second),
        };
        if !same {
            // Rows of another description are not followed; one that does
            // not carry all its values cannot be completed here.
            let partial = new.as_ref().is_some_and(|(_, r)| {
                r.values()
                    .iter()
                    .any(|v| matches!(v, Value::UnchangedToast))
            });
            if partial {
                self.spoiled = true;
            }
            return;
        }
        self.follow(change.op, new.as_ref().map(|(k, r)| (k, *r)), old.as_ref());
        // Rows followed to keys outside the chunk (keys changed again and
        // again inside one window) could grow without bound: past twice
        // the chunk, read it again instead.
        if self.latest.len() > 2 * self.rows.len() + FOLLOWED_SLACK {
            self.latest.clear();
            self.spoiled = true;
        }
    }

    /// Rows read in this chunk.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The high watermark arrived: the rows to emit (a row whose last
    /// change left a value unchanged is emitted as that change left it,
    /// completed: in the chunk's place when its key is the chunk's, after
    /// the chunk's rows when a change moved it to another key).
    pub fn close(mut self) -> Closed {
        if self.spoiled {
            return Closed::Reread;
        }
        let mut completed: HashMap<KeyText, Row> = self
            .latest
            .drain()
            .filter_map(|(k, l)| match l {
                Latest::Row { row, partial: true } => Some((k, row)),
                _ => None,
            })
            .collect();
        let mut dropped = 0;
        let mut rows = Vec::with_capacity(self.rows.len());
        for (k, row) in self.rows {
            if !self.changed.contains(&k) {
                rows.push(row);
            } else if let Some(row) = completed.remove(&k) {
                rows.push(row);
            } else {
                dropped += 1;
            }
        }
        let mut moved: Vec<(KeyText, Row)> = completed.into_iter().collect();
        moved.sort_by(|a, b| a.0.cmp(&b.0));
        rows.extend(moved.into_iter().map(|(_, row)| row));
        Closed::Rows { rows, dropped }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::Arc;

    use cdc_core::{Column, Lsn, ReplicaIdentity, SourceInfo, TableName, TableSchema};

    use super::*;

    fn schema() -> Arc<TableSchema> {
        let col = |name: &str, key: bool| Column {
            name: name.into(),
            type_oid: 23,
            type_name: "int4".into(),
            type_modifier: -1,
            nullable: !key,
            is_key: key,
        };
        Arc::new(TableSchema {
            database: "db".into(),
            oid: 1,
            name: TableName::new("public", "t"),
            columns: vec![col("id", true), col("v", false)],
            replica_identity: ReplicaIdentity::Default,
        })
    }

    fn row(id: i32, v: i32) -> Row {
        Row::new(vec![Value::Int4(id), Value::Int4(v)])
    }

    fn change(op: Op, before: Option<Row>, after: Option<Row>) -> ChangeEvent {
        ChangeEvent {
            op,
            table: schema(),
            before,
            after,
            source: SourceInfo {
                commit_lsn: Lsn(9),
                ..SourceInfo::default()
            },
        }
    }

    fn ids(closed: Closed) -> Vec<i32> {
        let Closed::Rows { rows, .. } = closed else {
            panic!("expected rows, got {closed:?}")
        };
        rows.iter()
            .map(|r| match r.values()[0] {
                Value::Int4(i) => i,
                _ => panic!(),
            })
            .collect()
    }

    fn chunk() -> Window {
        Window::new(schema(), vec![0], (1..=6).map(|i| row(i, i * 10)).collect())
    }

    #[test]
    fn untouched_rows_come_out_in_key_order() {
        assert_eq!(ids(chunk().close()), vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn rows_changed_inside_the_window_are_dropped() {
        let mut w = chunk();
        w.observe(&change(Op::Update, None, Some(row(2, 99))));
        w.observe(&change(
            Op::Delete,
            Some(Row::key_only(vec![Value::Int4(4), Value::Null])),
            None,
        ));
        // An insert of a key beyond the chunk changes nothing read.
        w.observe(&change(Op::Insert, None, Some(row(100, 1))));
        // The same key twice is dropped once.
        w.observe(&change(Op::Update, None, Some(row(2, 98))));
        let closed = w.close();
        assert!(matches!(closed, Closed::Rows { dropped: 2, .. }));
        assert_eq!(ids(closed), vec![1, 3, 5, 6]);
    }

    #[test]
    fn what_a_window_keeps_is_bounded_by_its_chunk() {
        // A big transaction inside the window, all beyond the chunk.
        let mut w = chunk();
        for id in 1000..101_000 {
            w.observe(&change(Op::Insert, None, Some(row(id, 1))));
        }
        assert!(w.changed.is_empty() && w.latest.is_empty());
        assert_eq!(ids(w.close()), vec![1, 2, 3, 4, 5, 6]);
        // A row of the chunk moved from key to key, again and again.
        let mut w = chunk();
        let mut from = 3;
        for to in 10_000..12_000 {
            w.observe(&change(
                Op::Update,
                Some(Row::key_only(vec![Value::Int4(from), Value::Null])),
                Some(row(to, 1)),
            ));
            from = to;
        }
        assert!(w.latest.is_empty());
        assert_eq!(w.close(), Closed::Reread);
    }

    #[test]
    fn a_key_change_drops_the_old_and_the_new_key() {
        let mut w = chunk();
        w.observe(&change(
            Op::Update,
            Some(Row::key_only(vec![Value::Int4(3), Value::Null])),
            Some(row(5, 1)),
        ));
        assert_eq!(ids(w.close()), vec![1, 2, 4, 6]);
    }

    #[test]
    fn a_change_whose_key_is_unknown_or_a_truncate_means_reading_again() {
        let mut w = chunk();
        // A key-only old image of another index: the key column is NULL.
        w.observe(&change(
            Op::Delete,
            Some(Row::key_only(vec![Value::Null, Value::Int4(7)])),
            None,
        ));
        assert_eq!(w.close(), Closed::Reread);
        let mut w = chunk();
        w.observe(&change(Op::Truncate, None, None));
        assert_eq!(w.close(), Closed::Reread);
    }

    #[test]
    fn a_change_described_with_other_columns_is_keyed_by_name() {
        // A column `gone` before the key was dropped since the chunk was
        // read: the key is now at 1 in the change's rows, not at 0.
        let mut t = (*schema()).clone();
        t.columns.insert(0, t.columns[1].clone());
        t.columns[0].name = "gone".into();
        let t = Arc::new(t);
        let mut w = Window::new(
            t,
            vec![1],
            (1..=4)
                .map(|i| Row::new(vec![Value::Int4(99), Value::Int4(i), Value::Int4(0)]))
                .collect(),
        );
        // The stream's rows: (id, v). Read at position 1 they would say
        // "v = 30" is the key (no row of the chunk); by name it is id 2.
        w.observe(&change(Op::Update, None, Some(row(2, 30))));
        let Closed::Rows { dropped, .. } = w.close() else {
            panic!("not spoiled")
        };
        assert_eq!(dropped, 1);
        let mut w = Window::new(schema(), vec![0], vec![row(1, 1)]);
        let mut renamed = (*schema()).clone();
        renamed.columns[0].name = "ident".into();
        let mut c = change(Op::Insert, None, Some(row(1, 2)));
        c.table = Arc::new(renamed);
        w.observe(&c);
        assert_eq!(w.close(), Closed::Reread, "a key column it lacks");
    }

    #[test]
    fn an_update_leaving_a_toasted_value_unchanged_emits_the_row_completed() {
        let partial = |id: i32| Row::new(vec![Value::Int4(id), Value::UnchangedToast]);
        // Unchanged after the chunk's read: the chunk's value.
        let mut w = chunk();
        w.observe(&change(Op::Update, None, Some(partial(2))));
        let closed = w.close();
        assert!(matches!(closed, Closed::Rows { dropped: 0, .. }));
        let Closed::Rows { rows, .. } = closed else {
            panic!()
        };
        assert_eq!(rows[1], row(2, 20));
        assert_eq!(rows.len(), 6);

        // Set by an earlier change inside the window, then left alone: the
        // earlier change's value; a whole row last: dropped as usual.
        let mut w = chunk();
        w.observe(&change(Op::Update, None, Some(row(3, 31))));
        w.observe(&change(Op::Update, None, Some(partial(3))));
        w.observe(&change(Op::Update, None, Some(partial(4))));
        w.observe(&change(Op::Update, None, Some(row(4, 41))));
        let Closed::Rows { rows, dropped } = w.close() else {
            panic!()
        };
        assert_eq!(dropped, 1);
        assert_eq!(
            ids(Closed::Rows {
                rows: rows.clone(),
                dropped
            }),
            vec![1, 2, 3, 5, 6]
        );
        assert_eq!(rows[2], row(3, 31));

        // Deleted and inserted again, then left alone: the insert's value.
        let mut w = chunk();
        w.observe(&change(
            Op::Delete,
            Some(Row::key_only(vec![Value::Int4(5), Value::Null])),
            None,
        ));
        w.observe(&change(Op::Insert, None, Some(row(5, 55))));
        w.observe(&change(Op::Update, None, Some(partial(5))));
        let Closed::Rows { rows, .. } = w.close() else {
            panic!()
        };
        assert_eq!(rows[4], row(5, 55));

        // Moved to a key beyond the chunk: the chunk's row under the new key,
        // after the chunk's rows; the old key is dropped.
        let mut w = chunk();
        w.observe(&change(
            Op::Update,
            Some(Row::key_only(vec![Value::Int4(6), Value::Null])),
            Some(partial(60)),
        ));
        let Closed::Rows { rows, dropped } = w.close() else {
            panic!()
        };
        assert_eq!(dropped, 1);
        assert_eq!(rows.last(), Some(&row(60, 60)));

        // A key the window knows nothing of: not emitted.
        let mut w = chunk();
        w.observe(&change(Op::Update, None, Some(partial(99))));
        assert_eq!(ids(w.close()), vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn keys_of_several_columns_and_types_do_not_collide() {
        let a = Row::new(vec![Value::Int4(1), Value::Text("2".into())]);
        let b = Row::new(vec![Value::Text("1".into()), Value::Int4(2)]);
        assert_ne!(key_of(&a, &[0, 1]), key_of(&b, &[0, 1]));
        assert_eq!(key_of(&a, &[0, 1]).unwrap(), b"[1,\"2\"]".to_vec());
        assert_eq!(key_of(&a, &[1, 0]).unwrap(), b"[\"2\",1]".to_vec());
    }
}
