//! Reading back what file sinks wrote and rebuilding tables from it, the
//! way a keyed consumer would: events of several files merged, sorted
//! stably by (`source.commit_lsn`, `source.ordinal`), replayed by key
//! ([`cdc_sink_conformance::replay`]) and compared with the table's
//! `to_jsonb` rows ([`crate::TestDb::to_jsonb_rows`],
//! [`crate::TestDb::to_jsonb_rows_keyed`]).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cdc_sink_conformance::replay::{apply, apply_keyed, converge, diff, row_key, Change};

use serde_json::Value as Json;

use crate::{Engine, TestDb};

/// How long the stream may take to catch up with the source once writes stop.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// One line of an output file (number `file` among the files a test
/// reads, line `line` from 1) as a [`Change`]; panics, naming the file and
/// line, when it is not a change event.
pub fn parse_event(file: usize, line: usize, text: &str, path: &Path) -> Change {
    let value = serde_json::from_str(text).unwrap_or_else(|e| {
        panic!(
            "{} line {line}: not JSON ({e}): {}",
            path.display(),
            &text[..text.len().min(300)]
        )
    });
    Change::from_json(file, line, value)
        .unwrap_or_else(|e| panic!("{} line {line}: {e}: {text}", path.display()))
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
    pub events: Vec<Change>,
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

    /// A tail of each of `paths`, numbered in their order from 0.
    pub fn of_files(paths: &[PathBuf]) -> Vec<Tail> {
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| Tail::new(i, p.clone()))
            .collect()
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

/// Every event of the file at `path` now (a missing file has none).
pub fn read_changes(path: &Path) -> Vec<Change> {
    let mut tail = Tail::new(0, path.to_owned());
    tail.poll();
    tail.events
}

/// Every event of `tails`, concatenated in order and sorted stably by
/// (`commit_lsn`, `ordinal`).
pub fn merged<'a>(tails: &[&'a Tail]) -> Vec<&'a Change> {
    let mut all: Vec<&Change> = tails.iter().flat_map(|t| t.events.iter()).collect();
    all.sort_by_key(|e| (e.commit_lsn, e.ordinal));
    all
}

/// The change events among `events` (a batch a library consumer took
/// from a source) as [`Change`]s, encoded as the sinks encode them
/// (Debezium JSON); `seq` counts them (from its value plus 1) to order
/// changes of one position.
pub fn changes_of(events: &[cdc_core::Event], seq: &mut usize) -> Vec<Change> {
    let enc = cdc_core::encode::DebeziumJson::default();
    let mut out = Vec::new();
    for event in events {
        if let cdc_core::Event::Change(c) = event {
            let mut bytes = Vec::new();
            enc.encode(c, 0, &mut bytes);
            let json = serde_json::from_slice(&bytes).expect("the envelope is JSON");
            *seq += 1;
            out.push(Change::from_json(0, *seq, json).expect("a complete envelope"));
        }
    }
    out
}

/// Polls every tail once more, then [`merged`]: every event the files
/// hold now, in commit order.
pub fn poll_merged(tails: &mut [Tail]) -> Vec<&Change> {
    for tail in tails.iter_mut() {
        tail.poll();
    }
    let refs: Vec<&Tail> = tails.iter().collect();
    merged(&refs)
}

/// The tables `events` name (`schema.table`), each once.
pub fn tables_of<'a>(events: &[&'a Change]) -> std::collections::BTreeSet<&'a str> {
    events.iter().map(|e| e.table.as_str()).collect()
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
    let oracles: Vec<(&str, &str)> = tables.iter().map(|t| (*t, *t)).collect();
    wait_converged_to(db, tails, engines, &oracles).await;
}

/// [`wait_converged_tables`] against a query per table: each
/// `(table, oracle)` pair names the table as the events do and the SQL the
/// rows it should end up with are read from (`public.t`, or a subquery in
/// parentheses such as `(SELECT id, a FROM public.t WHERE a > 0)` for a
/// table captured with a column list or a row filter).
pub async fn wait_converged_to(
    db: &TestDb,
    tails: &mut [Tail],
    engines: &[&Engine],
    oracles: &[(&str, &str)],
) {
    let tables: Vec<&str> = oracles.iter().map(|(t, _)| *t).collect();
    // One map of every table's rows, keyed `<table> <key>`.
    let keyed = |table: &str, rows: BTreeMap<String, Json>| {
        rows.into_iter()
            .map(move |(k, v)| (format!("{table} {k}"), v))
            .collect::<Vec<_>>()
    };
    let mut want = BTreeMap::new();
    for (table, oracle) in oracles {
        want.extend(keyed(table, db.to_jsonb_rows(oracle, "id").await));
    }
    let result = converge(
        CATCH_UP_TIMEOUT,
        Duration::from_millis(400),
        &want,
        async || {
            for t in tails.iter_mut() {
                t.poll();
            }
            let refs: Vec<&Tail> = tails.iter().collect();
            let events = merged(&refs);
            tables
                .iter()
                .flat_map(|table| keyed(table, apply(&events, table)))
                .collect::<BTreeMap<_, _>>()
        },
    )
    .await;
    if let Err(d) = result {
        let reports: Vec<String> = engines.iter().map(|e| e.output_report()).collect();
        panic!(
            "the merged files did not converge to {} within {CATCH_UP_TIMEOUT:?}: {d}\n{}",
            tables.join(", "),
            reports.join("\n")
        );
    }
}
