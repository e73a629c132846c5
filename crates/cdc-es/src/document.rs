//! Documents: a row as a JSON object of its columns' `to_jsonb` values.

use std::collections::HashMap;

use cdc_core::encode::{write_json_string, write_value};
use cdc_core::{Row, TableSchema, Value};
use serde_json::value::RawValue;

/// A stored document's fields, each kept as the exact JSON text the server
/// returned (no number is re-parsed, so nothing loses precision).
pub(crate) type StoredFields = HashMap<String, Box<RawValue>>;

/// `true` when some column of `row` was not sent (unchanged TOAST).
pub(crate) fn has_unchanged_toast(row: &Row) -> bool {
    row.values()
        .iter()
        .any(|v| matches!(v, Value::UnchangedToast))
}

/// The row as a JSON object in column order. A column whose value was not
/// sent is taken from `base` (the stored document) when it has it, and
/// left out otherwise.
pub(crate) fn render(schema: &TableSchema, row: &Row, base: Option<&StoredFields>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 16 * schema.columns.len());
    out.push(b'{');
    let mut first = true;
    for (column, value) in schema.columns.iter().zip(row.values()) {
        let stored = match value {
            Value::UnchangedToast => match base.and_then(|b| b.get(&column.name)) {
                Some(raw) => Some(raw.get()),
                None => continue,
            },
            _ => None,
        };
        if !first {
            out.push(b',');
        }
        first = false;
        write_json_string(&mut out, &column.name);
        out.push(b':');
        match stored {
            Some(raw) => out.extend_from_slice(raw.as_bytes()),
            None => write_value(&mut out, value),
        }
    }
    out.push(b'}');
    out
}

/// Parses a document this sink rendered (or the server returned) into its
/// fields.
pub(crate) fn parse_fields(json: &[u8]) -> Result<StoredFields, String> {
    serde_json::from_slice(json).map_err(|e| format!("document is not a JSON object: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use cdc_core::{Column, ReplicaIdentity, TableName};

    fn schema() -> TableSchema {
        let col = |name: &str, key| Column {
            name: name.into(),
            type_oid: 25,
            type_name: "text".into(),
            type_modifier: -1,
            nullable: true,
            is_key: key,
        };
        TableSchema {
            database: "db".into(),
            oid: 1,
            name: TableName::new("public", "t"),
            columns: vec![col("id", true), col("big", false), col("n", false)],
            replica_identity: ReplicaIdentity::Default,
        }
    }

    #[test]
    fn full_and_partial_rows() {
        let s = schema();
        let row = Row::new(vec![
            Value::Int4(1),
            Value::Text("long".into()),
            Value::Numeric("1.50".into()),
        ]);
        assert!(!has_unchanged_toast(&row));
        assert_eq!(
            String::from_utf8(render(&s, &row, None)).unwrap(),
            r#"{"id":1,"big":"long","n":1.50}"#
        );
        let partial = Row::new(vec![Value::Int4(1), Value::UnchangedToast, Value::Null]);
        assert!(has_unchanged_toast(&partial));
        assert_eq!(
            String::from_utf8(render(&s, &partial, None)).unwrap(),
            r#"{"id":1,"n":null}"#
        );
        let base =
            parse_fields(br#"{"n": 12345678901234567890.123, "big": "kept", "id": 1}"#).unwrap();
        assert_eq!(
            String::from_utf8(render(&s, &partial, Some(&base))).unwrap(),
            r#"{"id":1,"big":"kept","n":null}"#
        );
        assert!(parse_fields(b"[1]").is_err());
    }
}
