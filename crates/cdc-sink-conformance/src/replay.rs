//! Rebuilding rows from the change events a sink wrote, the way a keyed
//! consumer would, and comparing them with the rows they should be.
//!
//! A [`Change`] is one Debezium-style envelope read back from an output (a
//! file, a topic partition, a stream). [`apply_keyed`] replays changes in
//! the order given, by key: `r`/`c`/`u` make the row `after` (except that
//! the columns an update names in `source.unchanged_toast` keep their
//! stored value, and an update whose `before` has another key moves the
//! row), `d` removes it, `t` clears the table. [`diff`] describes how two
//! sets of rows differ, and [`converge`] polls until they do not.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value as Json;

use crate::poll::wait_for;

/// One change event as read back, reduced to what the checks need.
#[derive(Debug, Clone)]
pub struct Change {
    /// Which output it was read from (a file's or a partition's number).
    pub output: usize,
    /// Where in that output: a line number from 1, an offset, a sequence.
    pub seq: usize,
    /// `r`, `c`, `u`, `d` or `t`.
    pub op: String,
    /// `schema.table`, unquoted.
    pub table: String,
    /// `source.snapshot`: `false`, `first`, `true`, `last` or `incremental`.
    pub snapshot: String,
    /// `source.lsn`.
    pub lsn: u64,
    /// `source.commit_lsn`.
    pub commit_lsn: u64,
    /// `source.ordinal`.
    pub ordinal: u64,
    /// The old row (or `null`).
    pub before: Json,
    /// The new row (or `null`).
    pub after: Json,
    /// `source.unchanged_toast`: columns left out of `after` because their
    /// (TOASTed) value did not change.
    pub unchanged_toast: Vec<String>,
}

impl Change {
    /// Reads an envelope (`op`, `before`, `after`, `source`); `Err` says
    /// what it lacks.
    pub fn from_json(output: usize, seq: usize, value: Json) -> Result<Change, String> {
        let Json::Object(mut m) = value else {
            return Err(format!("not an object: {value}"));
        };
        let src = m.remove("source").unwrap_or(Json::Null);
        let text = |v: &Json, what: &str| -> Result<String, String> {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("no string {what}"))
        };
        let number = |v: &Json, what: &str| -> Result<u64, String> {
            v.as_u64().ok_or_else(|| format!("no integer {what}: {v}"))
        };
        Ok(Change {
            output,
            seq,
            op: text(m.get("op").unwrap_or(&Json::Null), "op")?,
            table: format!(
                "{}.{}",
                text(&src["schema"], "source.schema")?,
                text(&src["table"], "source.table")?
            ),
            snapshot: text(&src["snapshot"], "source.snapshot")?,
            lsn: number(&src["lsn"], "source.lsn")?,
            commit_lsn: number(&src["commit_lsn"], "source.commit_lsn")?,
            ordinal: number(&src["ordinal"], "source.ordinal")?,
            before: m.remove("before").unwrap_or(Json::Null),
            after: m.remove("after").unwrap_or(Json::Null),
            unchanged_toast: src
                .get("unchanged_toast")
                .and_then(Json::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// `(commit_lsn, ordinal)`: where the change sits in the stream.
    pub fn position(&self) -> (u64, u64) {
        (self.commit_lsn, self.ordinal)
    }

    /// The row the change is about: `before` of a delete, else `after`.
    pub fn row(&self) -> &Json {
        if self.op == "d" {
            &self.before
        } else {
            &self.after
        }
    }
}

/// The key of a row (an `after` or `before` object) under `key_columns`:
/// the JSON text of the one column's value (`1`, `"abc"`), or a JSON array
/// of the values of several (`[1,"abc"]`); `None` when a column is missing
/// or NULL.
pub fn row_key(row: &Json, key_columns: &[&str]) -> Option<String> {
    let values: Vec<Json> = key_columns
        .iter()
        .map(|c| row.get(*c).filter(|v| !v.is_null()).cloned())
        .collect::<Option<_>>()?;
    match values.as_slice() {
        [one] => Some(one.to_string()),
        _ => Some(Json::Array(values).to_string()),
    }
}

/// The table `table` (`schema.name`) as `events` (in order) rebuild it,
/// keyed by the JSON text of `id`.
pub fn apply(events: &[&Change], table: &str) -> BTreeMap<String, Json> {
    apply_keyed(events, table, &["id"])
}

/// The table `table` (`schema.name`) as `events` (in order) rebuild it,
/// keyed by [`row_key`] of `key_columns`. An update's columns named in
/// `source.unchanged_toast` keep the stored row's values; an update whose
/// `before` has another key moves the row to the new key. Panics on an
/// event it cannot apply (a change without its row, an unknown op).
pub fn apply_keyed(
    events: &[&Change],
    table: &str,
    key_columns: &[&str],
) -> BTreeMap<String, Json> {
    let mut rows: BTreeMap<String, Json> = BTreeMap::new();
    for ev in events.iter().filter(|e| e.table == table) {
        let at = format!("output {} at {}", ev.output, ev.seq);
        match ev.op.as_str() {
            "r" | "c" | "u" => {
                assert!(
                    ev.after.is_object(),
                    "{at}: {} without after: {ev:?}",
                    ev.op
                );
                let key = row_key(&ev.after, key_columns)
                    .unwrap_or_else(|| panic!("{at}: no key {key_columns:?} in after: {ev:?}"));
                // An update that changed the key: the old key's row goes.
                if ev.op == "u" {
                    if let Some(old) = row_key(&ev.before, key_columns).filter(|k| *k != key) {
                        if let Some(prev) = rows.remove(&old) {
                            rows.insert(key.clone(), prev);
                        }
                    }
                }
                let mut row = ev.after.clone();
                if let (Some(prev), Some(obj)) = (rows.get(&key), row.as_object_mut()) {
                    for c in &ev.unchanged_toast {
                        if let Some(v) = prev.get(c) {
                            obj.insert(c.clone(), v.clone());
                        }
                    }
                }
                rows.insert(key, row);
            }
            "d" => {
                assert!(ev.before.is_object(), "{at}: delete without before: {ev:?}");
                let key = row_key(&ev.before, key_columns)
                    .unwrap_or_else(|| panic!("{at}: no key {key_columns:?} in before: {ev:?}"));
                rows.remove(&key);
            }
            "t" => rows.clear(),
            other => panic!("{at}: unknown op {other:?}: {ev:?}"),
        }
    }
    rows
}

/// `None` when `got` equals `want`, else a description of (up to 20 of)
/// the differences.
pub fn diff<G: Borrow<Json>>(
    got: &BTreeMap<String, G>,
    want: &BTreeMap<String, Json>,
) -> Option<String> {
    let mut out = Vec::new();
    for (k, w) in want {
        match got.get(k).map(Borrow::borrow) {
            None => out.push(format!("key {k}: missing; want {w}")),
            Some(g) if g != w => out.push(format!("key {k}: got {g}; want {w}")),
            Some(_) => {}
        }
    }
    for (k, g) in got {
        if !want.contains_key(k) {
            out.push(format!("key {k}: got {}, not wanted", g.borrow()));
        }
    }
    if out.is_empty() {
        return None;
    }
    let n = out.len();
    out.truncate(20);
    Some(format!(
        "{n} difference(s) ({} rows rebuilt, {} wanted):\n  {}",
        got.len(),
        want.len(),
        out.join("\n  ")
    ))
}

/// Polls `rebuild` (the rows a sink's output rebuilds now) every `pause`
/// until they equal `want`, at most `timeout`; `Err` with the last
/// [`diff`] when they never did.
pub async fn converge<G, F>(
    timeout: Duration,
    pause: Duration,
    want: &BTreeMap<String, Json>,
    mut rebuild: F,
) -> Result<(), String>
where
    G: Borrow<Json>,
    F: AsyncFnMut() -> BTreeMap<String, G>,
{
    let mut last = String::new();
    let done = wait_for(timeout, async || {
        match diff(&rebuild().await, want) {
            None => return Some(()),
            Some(d) => last = d,
        }
        tokio::time::sleep(pause).await;
        None
    })
    .await;
    done.ok_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(n: usize, op: &str, lsn: u64, before: Json, after: Json, unchanged: &[&str]) -> Change {
        Change {
            output: 0,
            seq: n,
            op: op.into(),
            table: "public.t".into(),
            snapshot: "false".into(),
            lsn,
            commit_lsn: lsn,
            ordinal: 0,
            before,
            after,
            unchanged_toast: unchanged.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn row_keys() {
        let row = json!({"a": 1, "b": "x", "c": null});
        assert_eq!(row_key(&row, &["a"]).as_deref(), Some("1"));
        assert_eq!(row_key(&row, &["b"]).as_deref(), Some("\"x\""));
        assert_eq!(row_key(&row, &["a", "b"]).as_deref(), Some("[1,\"x\"]"));
        assert_eq!(row_key(&row, &["c"]), None);
        assert_eq!(row_key(&row, &["a", "missing"]), None);
    }

    #[test]
    fn envelopes_are_read_and_bad_ones_named() {
        let c = Change::from_json(
            2,
            7,
            json!({"op": "u", "before": null, "after": {"id": 1},
                   "source": {"schema": "s", "table": "t", "snapshot": "false", "lsn": 5,
                              "commit_lsn": 9, "ordinal": 3, "unchanged_toast": ["doc"]}}),
        )
        .unwrap();
        assert_eq!((c.output, c.seq, c.op.as_str()), (2, 7, "u"));
        assert_eq!(c.table, "s.t");
        assert_eq!(c.position(), (9, 3));
        assert_eq!(c.unchanged_toast, ["doc"]);
        assert_eq!(c.row(), &json!({"id": 1}));
        let e = Change::from_json(0, 1, json!({"op": "c", "source": {}})).unwrap_err();
        assert!(e.contains("source.schema"), "{e}");
    }

    #[test]
    fn unchanged_toast_keeps_the_stored_value_and_key_changes_move_the_row() {
        let events = [
            ev(
                1,
                "r",
                10,
                Json::Null,
                json!({"a": 1, "b": "k", "doc": "long", "n": 0}),
                &[],
            ),
            ev(
                2,
                "u",
                20,
                Json::Null,
                json!({"a": 1, "b": "k", "n": 1}),
                &["doc"],
            ),
            ev(
                3,
                "u",
                30,
                json!({"a": 1, "b": "k"}),
                json!({"a": 1, "b": "m", "n": 2}),
                &["doc"],
            ),
            ev(
                4,
                "c",
                40,
                Json::Null,
                json!({"a": 2, "b": "k", "doc": "x", "n": 0}),
                &[],
            ),
            ev(5, "d", 50, json!({"a": 2, "b": "k"}), Json::Null, &[]),
        ];
        let refs: Vec<&Change> = events.iter().collect();
        let got = apply_keyed(&refs, "public.t", &["a", "b"]);
        let want: BTreeMap<String, Json> = [(
            "[1,\"m\"]".to_owned(),
            json!({"a": 1, "b": "m", "doc": "long", "n": 2}),
        )]
        .into();
        assert_eq!(diff(&got, &want), None);
        // Without the stored value the column stays missing, and diff says so.
        let got = apply_keyed(&refs[1..2], "public.t", &["a", "b"]);
        let want: BTreeMap<String, Json> = [(
            "[1,\"k\"]".to_owned(),
            json!({"a": 1, "b": "k", "doc": "long", "n": 1}),
        )]
        .into();
        assert!(diff(&got, &want).is_some_and(|d| d.contains("1 difference")));
        // A truncate clears the table.
        let t = ev(6, "t", 60, Json::Null, Json::Null, &[]);
        let mut with_truncate = refs.clone();
        with_truncate.push(&t);
        assert!(apply_keyed(&with_truncate, "public.t", &["a", "b"]).is_empty());
    }

    #[tokio::test]
    async fn converge_polls_until_equal_or_reports_the_difference() {
        let want: BTreeMap<String, Json> = [("1".to_owned(), json!({"id": 1}))].into();
        let mut polls = 0;
        let ok = converge(
            Duration::from_secs(5),
            Duration::from_millis(1),
            &want,
            async || {
                polls += 1;
                if polls < 3 {
                    BTreeMap::new()
                } else {
                    want.clone()
                }
            },
        )
        .await;
        assert_eq!(ok, Ok(()));
        assert_eq!(polls, 3);
        let never = converge(
            Duration::from_millis(50),
            Duration::from_millis(1),
            &want,
            async || BTreeMap::<String, Json>::new(),
        )
        .await;
        assert!(never.unwrap_err().contains("key 1: missing"));
    }
}
