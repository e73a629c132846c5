//! Reading back what file sinks wrote and rebuilding tables from it, the
//! way a keyed consumer would: events of several files merged, sorted
//! stably by (`source.commit_lsn`, `source.ordinal`), applied by key
//! (`r`/`c`/`u`: the row becomes `after`, except that the columns an update
//! names in `source.unchanged_toast` keep their stored value; `d`: removed,
//! `t`: cleared), and compared with the table's `to_jsonb` rows
//! ([`crate::TestDb::to_jsonb_rows`], [`crate::TestDb::to_jsonb_rows_keyed`]).

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::{Engine, TestDb};

/// How long the stream may take to catch up with the source once writes stop.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// One line of an output file, reduced to what the checks need.
#[derive(Debug, Clone)]
pub struct Ev {
    /// Which file (instance) it came from.
    pub file: usize,
    /// Line number in that file, from 1.
    pub line: usize,
    pub op: String,
    /// `schema.table`, unquoted.
    pub table: String,
    pub snapshot: String,
    pub lsn: u64,
    pub commit_lsn: u64,
    pub ordinal: u64,
    pub before: Json,
    pub after: Json,
    /// `source.unchanged_toast`: columns left out of `after` because their
    /// (TOASTed) value did not change.
    pub unchanged_toast: Vec<String>,
}

pub fn parse_event(file: usize, line: usize, text: &str, path: &Path) -> Ev {
    let v: Json = serde_json::from_str(text).unwrap_or_else(|e| {
        panic!(
            "{} line {line}: not JSON ({e}): {}",
            path.display(),
            &text[..text.len().min(300)]
        )
    });
    let Json::Object(mut m) = v else {
        panic!("{} line {line}: not an object: {text}", path.display());
    };
    let src = m.remove("source").unwrap_or(Json::Null);
    let str_of = |v: &Json, what: &str| -> String {
        v.as_str()
            .unwrap_or_else(|| panic!("{} line {line}: no string {what}", path.display()))
            .to_owned()
    };
    let num_of = |v: &Json, what: &str| -> u64 {
        v.as_u64()
            .unwrap_or_else(|| panic!("{} line {line}: no integer {what}: {v}", path.display()))
    };
    Ev {
        file,
        line,
        op: str_of(m.get("op").unwrap_or(&Json::Null), "op"),
        table: format!(
            "{}.{}",
            str_of(&src["schema"], "source.schema"),
            str_of(&src["table"], "source.table")
        ),
        snapshot: str_of(&src["snapshot"], "source.snapshot"),
        lsn: num_of(&src["lsn"], "source.lsn"),
        commit_lsn: num_of(&src["commit_lsn"], "source.commit_lsn"),
        ordinal: num_of(&src["ordinal"], "source.ordinal"),
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
    }
}

/// The events of an output file, read incrementally: each [`Tail::poll`]
/// parses only the complete lines appended since the last one (a partial
/// last line is left for later: the sink may be writing it, or cut it
/// after a crash).
pub struct Tail {
    pub file: usize,
    pub path: PathBuf,
    pub offset: u64,
    pub lines: usize,
    pub events: Vec<Ev>,
}

impl Tail {
    pub fn new(file: usize, path: PathBuf) -> Tail {
        Tail {
            file,
            path,
            offset: 0,
            lines: 0,
            events: Vec::new(),
        }
    }

    /// Reads what was appended; returns how many events were added.
    pub fn poll(&mut self) -> usize {
        let mut f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
            Err(e) => panic!("cannot open {}: {e}", self.path.display()),
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        assert!(
            len >= self.offset,
            "{} shrank below {} bytes of complete lines (now {len})",
            self.path.display(),
            self.offset
        );
        f.seek(SeekFrom::Start(self.offset)).expect("seek");
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).expect("read");
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
            return 0;
        };
        let text = std::str::from_utf8(&buf[..=end])
            .unwrap_or_else(|e| panic!("{}: not UTF-8: {e}", self.path.display()));
        let before = self.events.len();
        for l in text.split_terminator('\n') {
            self.lines += 1;
            if l.trim().is_empty() {
                continue;
            }
            self.events
                .push(parse_event(self.file, self.lines, l, &self.path));
        }
        self.offset += end as u64 + 1;
        self.events.len() - before
    }
}

/// Every event of `tails`, concatenated in order and sorted stably by
/// (`commit_lsn`, `ordinal`).
pub fn merged<'a>(tails: &[&'a Tail]) -> Vec<&'a Ev> {
    let mut all: Vec<&Ev> = tails.iter().flat_map(|t| t.events.iter()).collect();
    all.sort_by_key(|e| (e.commit_lsn, e.ordinal));
    all
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
/// keyed by the JSON text of `id`, as [`TestDb::to_jsonb_rows`] keys it.
pub fn apply(events: &[&Ev], table: &str) -> BTreeMap<String, Json> {
    apply_keyed(events, table, &["id"])
}

/// Like [`apply`], keyed by [`row_key`] of `key_columns`, as
/// [`TestDb::to_jsonb_rows_keyed`] keys the table's rows. An update's
/// columns named in `source.unchanged_toast` keep the stored row's values;
/// an update whose `before` has another key moves the row to the new key.
pub fn apply_keyed(events: &[&Ev], table: &str, key_columns: &[&str]) -> BTreeMap<String, Json> {
    let mut rows: BTreeMap<String, Json> = BTreeMap::new();
    for ev in events.iter().filter(|e| e.table == table) {
        let at = format!("file {} line {}", ev.file, ev.line);
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
            None => out.push(format!("id {k}: missing from the files; table has {w}")),
            Some(g) if g != w => out.push(format!("id {k}: files have {g}; table has {w}")),
            Some(_) => {}
        }
    }
    for (k, g) in got {
        if !want.contains_key(k) {
            out.push(format!(
                "id {k}: in the files ({}) but not in the table",
                g.borrow()
            ));
        }
    }
    if out.is_empty() {
        return None;
    }
    let n = out.len();
    out.truncate(20);
    Some(format!(
        "{n} difference(s) ({} rows rebuilt, {} in the table):\n  {}",
        got.len(),
        want.len(),
        out.join("\n  ")
    ))
}

/// Polls `tails` until the merged events rebuild `public.t` exactly as it
/// is now (the writers must have stopped), at most [`CATCH_UP_TIMEOUT`].
pub async fn wait_converged(db: &TestDb, tails: &mut [Tail], engines: &[&Engine]) {
    wait_converged_tables(db, tails, engines, &["public.t"]).await;
}

/// Polls `tails` until the merged events rebuild every table of `tables`
/// (`schema.name`, keyed by `id`) exactly as it is now (the writers must
/// have stopped), at most [`CATCH_UP_TIMEOUT`].
pub async fn wait_converged_tables(
    db: &TestDb,
    tails: &mut [Tail],
    engines: &[&Engine],
    tables: &[&str],
) {
    let mut wants = Vec::with_capacity(tables.len());
    for table in tables {
        wants.push(db.to_jsonb_rows(table, "id").await);
    }
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        for t in tails.iter_mut() {
            t.poll();
        }
        let refs: Vec<&Tail> = tails.iter().collect();
        let events = merged(&refs);
        let differences: Vec<String> = tables
            .iter()
            .zip(&wants)
            .filter_map(|(table, want)| {
                diff(&apply(&events, table), want).map(|d| format!("{table}: {d}"))
            })
            .collect();
        if differences.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            let reports: Vec<String> = engines.iter().map(|e| e.output_report()).collect();
            panic!(
                "the merged files did not converge to {} within {CATCH_UP_TIMEOUT:?}: {}\n{}",
                tables.join(", "),
                differences.join("\n"),
                reports.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(n: usize, op: &str, lsn: u64, before: Json, after: Json, unchanged: &[&str]) -> Ev {
        Ev {
            file: 0,
            line: n,
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
        let refs: Vec<&Ev> = events.iter().collect();
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
}
