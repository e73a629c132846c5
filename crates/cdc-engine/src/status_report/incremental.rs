//! The incremental snapshots in `cdc-engine status`: one line (or JSON
//! object) per table of each snapshot, as the progress table holds them
//! (what is durable in the sinks), and a problem for each table whose
//! latest snapshot failed.

use cdc_core::IncrementalState;
use cdc_postgres::inspect::StoredIncremental;
use serde_json::{json, Value};

use super::unix_ms;

/// `incremental snapshot 7 public.t: running, 12 chunks, 2400 rows, last key (2400), where id > 5`.
pub(super) fn lines(rows: &[StoredIncremental]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            let mut text = format!(
                "incremental snapshot {} {}: {}, {} chunks, {} rows",
                r.snapshot,
                r.table,
                r.state.as_str(),
                r.chunks_done,
                r.rows_done
            );
            if let Some(key) = &r.last_key {
                text.push_str(&format!(", last key ({})", key.join(", ")));
            }
            if let Some(f) = &r.filter {
                text.push_str(&format!(", where {f}"));
            }
            if let Some(e) = &r.error {
                text.push_str(&format!(": {e}"));
            }
            text
        })
        .collect()
}

/// The rows as JSON objects.
pub(super) fn json(rows: &[StoredIncremental]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "snapshot": r.snapshot,
                    "table": r.table.to_string(),
                    "state": r.state.as_str(),
                    "chunks_done": r.chunks_done,
                    "rows_done": r.rows_done,
                    "last_key": r.last_key,
                    "where": r.filter,
                    "error": r.error,
                    "updated_at_ms": unix_ms(r.updated_at),
                })
            })
            .collect(),
    )
}

/// A table whose latest snapshot failed (a later one of the same table
/// clears it).
pub(super) fn problems(rows: &[StoredIncremental]) -> Vec<String> {
    rows.iter()
        .enumerate()
        .filter(|(i, r)| {
            r.state == IncrementalState::Failed
                && !rows[i + 1..].iter().any(|later| later.table == r.table)
        })
        .map(|(_, r)| {
            format!(
                "the incremental snapshot {} of {} failed: {}; fix it and ask for a new one \
                 (cdc-engine snapshot --table {})",
                r.snapshot,
                r.table,
                r.error.as_deref().unwrap_or("see the engine's log"),
                r.table
            )
        })
        .collect()
}
