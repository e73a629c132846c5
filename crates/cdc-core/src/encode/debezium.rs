//! The Debezium-style JSON envelope.

use super::json_text::{write_i64, write_json_string, write_u64};
use super::value_json::write_value;
use crate::event::{ChangeEvent, Op};
use crate::schema::TableSchema;
use crate::value::{Row, Value};

/// Writes change events as Debezium-style JSON:
///
/// ```json
/// {"before":null,"after":{"id":1,"name":"a"},
///  "source":{"version":"0.1.0","connector":"postgresql","name":"cdc","ts_ms":1714564800000,
///            "snapshot":"false","db":"app","schema":"public","table":"users",
///            "txId":742,"lsn":24023128,"commit_lsn":24023200,"ordinal":0},
///  "op":"c","ts_ms":1714564800123}
/// ```
///
/// * Column values are rendered by [`write_value`](super::write_value), equal
///   to PostgreSQL's `to_jsonb`.
/// * `lsn` and `commit_lsn` are the 64-bit WAL positions as integers, as
///   Debezium writes them; `ordinal` orders changes within a transaction.
/// * A key-only old row (replica identity `DEFAULT`) holds only the key
///   columns in `before`.
/// * Columns whose value was an unchanged TOAST value are left out of
///   `after` and listed in `source.unchanged_toast`.
/// * A truncate is one event per table with `op: "t"` and no rows.
#[derive(Debug, Clone)]
pub struct DebeziumJson {
    name: String,
}

impl Default for DebeziumJson {
    fn default() -> Self {
        Self::new("cdc")
    }
}

impl DebeziumJson {
    /// An encoder whose events carry `source.name = name` (Debezium's
    /// logical server name).
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// Appends the envelope of `event` to `out` (no trailing newline).
    /// `now_ms` is the envelope's top-level `ts_ms`: when it was processed.
    pub fn encode(&self, event: &ChangeEvent, now_ms: i64, out: &mut Vec<u8>) {
        let table = &*event.table;
        out.extend_from_slice(b"{\"before\":");
        write_row(out, table, event.before.as_ref());
        out.extend_from_slice(b",\"after\":");
        write_row(out, table, event.after.as_ref());

        let src = &event.source;
        out.extend_from_slice(b",\"source\":{\"version\":\"");
        out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
        out.extend_from_slice(b"\",\"connector\":\"postgresql\",\"name\":");
        write_json_string(out, &self.name);
        out.extend_from_slice(b",\"ts_ms\":");
        write_i64(out, src.commit_time_us.div_euclid(1000));
        out.extend_from_slice(b",\"snapshot\":\"");
        out.extend_from_slice(src.snapshot.as_str().as_bytes());
        out.extend_from_slice(b"\",\"db\":");
        write_json_string(out, &table.database);
        out.extend_from_slice(b",\"schema\":");
        write_json_string(out, &table.name.schema);
        out.extend_from_slice(b",\"table\":");
        write_json_string(out, &table.name.name);
        out.extend_from_slice(b",\"txId\":");
        match src.txid {
            Some(x) => write_u64(out, u64::from(x)),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"lsn\":");
        write_u64(out, src.lsn.0);
        out.extend_from_slice(b",\"commit_lsn\":");
        write_u64(out, src.commit_lsn.0);
        out.extend_from_slice(b",\"ordinal\":");
        write_u64(out, src.ordinal);
        if let Some(after) = &event.after {
            write_unchanged_toast(out, table, after);
        }
        out.extend_from_slice(b"},\"op\":\"");
        out.extend_from_slice(event.op.code().as_bytes());
        out.extend_from_slice(b"\",\"ts_ms\":");
        write_i64(out, now_ms);
        out.push(b'}');
    }

    /// Appends the event's key as a JSON object of its key columns
    /// (`{"id":42}`), taken from the new row, or the old row for deletes.
    /// Returns `false` (writing nothing) for truncates and tables without
    /// key columns.
    pub fn encode_key(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> bool {
        let row = match event.op {
            Op::Delete => event.before.as_ref(),
            Op::Truncate => None,
            _ => event.after.as_ref().or(event.before.as_ref()),
        };
        let Some(row) = row else { return false };
        let table = &*event.table;
        let mut first = true;
        for i in table.key_indices() {
            out.push(if first { b'{' } else { b',' });
            first = false;
            write_json_string(out, &table.columns[i].name);
            out.push(b':');
            write_value(out, row.values().get(i).unwrap_or(&Value::Null));
        }
        if first {
            return false;
        }
        out.push(b'}');
        true
    }
}

fn write_row(out: &mut Vec<u8>, table: &TableSchema, row: Option<&Row>) {
    let Some(row) = row else {
        out.extend_from_slice(b"null");
        return;
    };
    out.push(b'{');
    let mut first = true;
    for (column, value) in table.columns.iter().zip(row.values()) {
        if matches!(value, Value::UnchangedToast) || (row.is_key_only() && !column.is_key) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_json_string(out, &column.name);
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
}

fn write_unchanged_toast(out: &mut Vec<u8>, table: &TableSchema, row: &Row) {
    let mut first = true;
    for (column, value) in table.columns.iter().zip(row.values()) {
        if matches!(value, Value::UnchangedToast) {
            out.extend_from_slice(if first {
                b",\"unchanged_toast\":["
            } else {
                b","
            });
            first = false;
            write_json_string(out, &column.name);
        }
    }
    if !first {
        out.push(b']');
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{SnapshotMarker, SourceInfo};
    use crate::lsn::Lsn;
    use crate::schema::{Column, ReplicaIdentity, TableName};

    fn table() -> Arc<TableSchema> {
        let col = |name: &str, oid, key: bool| Column {
            name: name.into(),
            type_oid: oid,
            type_name: String::new(),
            type_modifier: -1,
            nullable: !key,
            is_key: key,
        };
        Arc::new(TableSchema {
            database: "app".into(),
            oid: 1,
            name: TableName::new("public", "Users \"x\""),
            columns: vec![
                col("id", 23, true),
                col("name", 25, false),
                col("doc", 25, false),
            ],
            replica_identity: ReplicaIdentity::Default,
        })
    }

    fn encode(e: &ChangeEvent) -> serde_json::Value {
        let mut out = Vec::new();
        DebeziumJson::default().encode(e, 7, &mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn update_with_unchanged_toast_and_key_only_before() {
        let e = ChangeEvent {
            op: Op::Update,
            table: table(),
            before: Some(Row::key_only(vec![
                Value::Int4(1),
                Value::Null,
                Value::Null,
            ])),
            after: Some(Row::new(vec![
                Value::Int4(1),
                Value::Text("b".into()),
                Value::UnchangedToast,
            ])),
            source: SourceInfo {
                commit_lsn: Lsn(200),
                lsn: Lsn(150),
                ordinal: 3,
                txid: Some(9),
                commit_time_us: 1_500_999,
                snapshot: SnapshotMarker::False,
            },
        };
        let v = encode(&e);
        assert_eq!(v["before"], serde_json::json!({"id": 1}));
        assert_eq!(v["after"], serde_json::json!({"id": 1, "name": "b"}));
        assert_eq!(v["op"], "u");
        assert_eq!(v["ts_ms"], 7);
        let s = &v["source"];
        assert_eq!(s["unchanged_toast"], serde_json::json!(["doc"]));
        assert_eq!(s["table"], "Users \"x\"");
        assert_eq!(s["lsn"], 150);
        assert_eq!(s["commit_lsn"], 200);
        assert_eq!(s["ordinal"], 3);
        assert_eq!(s["txId"], 9);
        assert_eq!(s["ts_ms"], 1500);
        assert_eq!(s["snapshot"], "false");

        let mut key = Vec::new();
        assert!(DebeziumJson::default().encode_key(&e, &mut key));
        assert_eq!(key, br#"{"id":1}"#);
    }

    #[test]
    fn truncate_has_no_rows_and_no_key() {
        let e = ChangeEvent {
            op: Op::Truncate,
            table: table(),
            before: None,
            after: None,
            source: SourceInfo::default(),
        };
        let v = encode(&e);
        assert_eq!(v["op"], "t");
        assert!(v["before"].is_null() && v["after"].is_null());
        assert!(v["source"].get("unchanged_toast").is_none());
        assert!(!DebeziumJson::default().encode_key(&e, &mut Vec::new()));
    }
}
