//! Pipeline configurations for the tests.

use std::path::Path;

use crate::TestDb;

/// A single-quoted YAML scalar.
pub fn yaml_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A pipeline config: `tables` as written in YAML (`public.t`,
/// `"S"."T"`), one file sink, and `snapshot` as a YAML flow mapping
/// (`{ mode: initial, chunk_rows: 100 }`).
pub fn pipeline_yaml(
    db: &TestDb,
    tables: &[&str],
    slot: &str,
    publication: &str,
    out: &Path,
    snapshot: &str,
) -> String {
    let mut y = String::from("name: snapshot_test\nsource:\n");
    y.push_str(&format!("  url: {}\n  tables:\n", yaml_str(db.url())));
    for t in tables {
        y.push_str(&format!("    - {}\n", yaml_str(t)));
    }
    y.push_str(&format!(
        "  publication: {{ name: {publication}, create: true }}\n  slot: {{ name: {slot}, create: true }}\n"
    ));
    y.push_str(&format!(
        "sinks:\n  - {{ type: file, path: {} }}\n",
        yaml_str(&out.to_string_lossy())
    ));
    y.push_str(&format!("snapshot: {snapshot}\n"));
    y.push_str("retry: { initial_backoff: 100ms, max_backoff: 1s }\nlog: { level: info }\n");
    y
}
