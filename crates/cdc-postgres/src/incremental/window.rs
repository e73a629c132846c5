//! The window of one chunk: from the moment the chunk is read until its
//! high watermark comes back through the stream, the keys of the table
//! that stream events change are collected; at the high watermark the
//! chunk's rows with those keys are dropped and the rest are emitted.

use std::collections::HashSet;
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
    /// Keys changed by stream events since the window opened.
    changed: HashSet<KeyText>,
    /// A stream event changed a row whose key it does not tell (or the
    /// table was truncated): no row of the chunk can be trusted.
    spoiled: bool,
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
        let rows = rows
            .into_iter()
            .filter_map(|row| match key_of(&row, &key) {
                Some(k) => Some((k, row)),
                None => {
                    spoiled = true;
                    None
                }
            })
            .collect();
        Self {
            key,
            names,
            schema,
            other: None,
            rows,
            changed: HashSet::new(),
            spoiled,
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
        for row in images.into_iter().flatten() {
            match key_of(row, key) {
                Some(k) => {
                    any = true;
                    self.changed.insert(k);
                }
                // The new row always holds the key; an old key-only image
                // of another index does not: its row is unknown.
                None => self.spoiled = true,
            }
        }
        if !any {
            self.spoiled = true;
        }
    }

    /// Rows read in this chunk.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The high watermark arrived: the rows to emit.
    pub fn close(self) -> Closed {
        if self.spoiled {
            return Closed::Reread;
        }
        let before = self.rows.len();
        let rows: Vec<Row> = self
            .rows
            .into_iter()
            .filter(|(k, _)| !self.changed.contains(k))
            .map(|(_, row)| row)
            .collect();
        Closed::Rows {
            dropped: before - rows.len(),
            rows,
        }
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
    fn keys_of_several_columns_and_types_do_not_collide() {
        let a = Row::new(vec![Value::Int4(1), Value::Text("2".into())]);
        let b = Row::new(vec![Value::Text("1".into()), Value::Int4(2)]);
        assert_ne!(key_of(&a, &[0, 1]), key_of(&b, &[0, 1]));
        assert_eq!(key_of(&a, &[0, 1]).unwrap(), b"[1,\"2\"]".to_vec());
        assert_eq!(key_of(&a, &[1, 0]).unwrap(), b"[\"2\",1]".to_vec());
    }
}
