//! Documents: a row as a JSON object of its columns' `to_jsonb` values,
//! with two renderings that keep every value storable:
//!
//! * a `numeric` beyond the range of a double (a number of more than 308
//!   digits before the point) is sent as a JSON string of its exact text,
//!   like `NaN` and `Infinity` already are: JSON parsers, Elasticsearch
//!   and its clients among them, read such a number as infinity or refuse
//!   it;
//! * a `real` / `double precision` value of magnitude 1e21 or more is
//!   written in exponent notation (`1e22`, `1.7976931348623157e308`), the
//!   same value as the integer digits `to_jsonb` writes: parsers read a
//!   long run of digits as an integer that overflows (the rule of
//!   JavaScript's number printing);
//! * a `json` value with duplicate object keys is sent with only the last
//!   of them (what `jsonb` and `to_jsonb` keep): Elasticsearch refuses
//!   documents with duplicate keys. Without duplicates the text is sent
//!   as PostgreSQL sent it.

use std::collections::HashMap;

use cdc_core::encode::{write_json_array, write_json_string, write_value};
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
            None => write_es_value(&mut out, value),
        }
    }
    out.push(b'}');
    out
}

/// `value` as [`write_value`] renders it, with this module's two
/// renderings.
pub(crate) fn write_es_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Numeric(text) if beyond_double(text) => write_json_string(out, text),
        Value::Float4(v) if v.is_finite() && v.abs() >= 1e21 => {
            out.extend_from_slice(format!("{v:e}").as_bytes());
        }
        Value::Float8(v) if v.is_finite() && v.abs() >= 1e21 => {
            out.extend_from_slice(format!("{v:e}").as_bytes());
        }
        Value::Json(text) => write_json_unique_keys(out, text),
        Value::Array(items) => write_json_array(out, items, write_es_value),
        _ => write_value(out, value),
    }
}

/// `true` for a numeric's decimal text (not `NaN` / `Infinity`) whose
/// magnitude a double cannot hold.
fn beyond_double(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    digits.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && text.parse::<f64>().is_ok_and(f64::is_infinite)
}

/// Deepest nesting [`write_json_unique_keys`] rewrites; deeper documents
/// are sent as they are.
const MAX_JSON_DEPTH: usize = 256;

/// Writes the JSON text `text` with duplicate object keys removed (the
/// last occurrence wins, as in `jsonb`), or `text` unchanged when it has
/// none (or cannot be read).
fn write_json_unique_keys(out: &mut Vec<u8>, text: &str) {
    let mut reader = JsonReader {
        bytes: text.as_bytes(),
        pos: 0,
        changed: false,
    };
    let mut rewritten = Vec::new();
    let ok = reader.value(&mut rewritten, 0).is_some() && reader.at_end();
    if ok && reader.changed {
        out.extend_from_slice(&rewritten);
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

/// A minimal reader of (valid) JSON text that copies it compactly,
/// dropping object members whose key occurs again later in that object.
struct JsonReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// A member was dropped.
    changed: bool,
}

impl JsonReader<'_> {
    fn skip_ws(&mut self) {
        while self
            .bytes
            .get(self.pos)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.pos += 1;
        }
    }

    fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.pos == self.bytes.len()
    }

    fn value(&mut self, out: &mut Vec<u8>, depth: usize) -> Option<()> {
        if depth > MAX_JSON_DEPTH {
            return None;
        }
        self.skip_ws();
        match *self.bytes.get(self.pos)? {
            b'{' => self.object(out, depth),
            b'[' => {
                self.pos += 1;
                out.push(b'[');
                self.skip_ws();
                if self.bytes.get(self.pos) == Some(&b']') {
                    self.pos += 1;
                    out.push(b']');
                    return Some(());
                }
                loop {
                    self.value(out, depth + 1)?;
                    self.skip_ws();
                    match *self.bytes.get(self.pos)? {
                        b',' => out.push(b','),
                        b']' => {
                            self.pos += 1;
                            out.push(b']');
                            return Some(());
                        }
                        _ => return None,
                    }
                    self.pos += 1;
                }
            }
            b'"' => {
                let span = self.string()?;
                out.extend_from_slice(span);
                Some(())
            }
            _ => {
                let start = self.pos;
                while self.bytes.get(self.pos).is_some_and(|b| {
                    !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                }) {
                    self.pos += 1;
                }
                if self.pos == start {
                    return None;
                }
                out.extend_from_slice(&self.bytes[start..self.pos]);
                Some(())
            }
        }
    }

    /// The raw text of the string starting at `pos`, quotes included.
    fn string(&mut self) -> Option<&[u8]> {
        let start = self.pos;
        self.pos += 1;
        loop {
            match *self.bytes.get(self.pos)? {
                b'\\' => self.pos += 2,
                b'"' => {
                    self.pos += 1;
                    return self.bytes.get(start..self.pos);
                }
                _ => self.pos += 1,
            }
        }
    }

    fn object(&mut self, out: &mut Vec<u8>, depth: usize) -> Option<()> {
        self.pos += 1;
        // (decoded key, rendered member)
        let mut members: Vec<(String, Vec<u8>)> = Vec::new();
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            out.extend_from_slice(b"{}");
            return Some(());
        }
        loop {
            self.skip_ws();
            if self.bytes.get(self.pos) != Some(&b'"') {
                return None;
            }
            let raw_key = self.string()?;
            let key: String = serde_json::from_slice(raw_key).ok()?;
            let mut member = raw_key.to_vec();
            self.skip_ws();
            if self.bytes.get(self.pos) != Some(&b':') {
                return None;
            }
            self.pos += 1;
            member.push(b':');
            self.value(&mut member, depth + 1)?;
            members.push((key, member));
            self.skip_ws();
            match *self.bytes.get(self.pos)? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    break;
                }
                _ => return None,
            }
        }
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(members.len());
        for (i, (key, _)) in members.iter().enumerate() {
            last.insert(key.as_str(), i);
        }
        out.push(b'{');
        let mut first = true;
        for (i, (key, member)) in members.iter().enumerate() {
            if last.get(key.as_str()) != Some(&i) {
                self.changed = true;
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(member);
        }
        out.push(b'}');
        Some(())
    }
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

    fn es(value: &Value) -> String {
        let mut out = Vec::new();
        write_es_value(&mut out, value);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn numerics_beyond_double_become_strings() {
        let huge = format!("{}.5", "9".repeat(400));
        assert_eq!(
            es(&Value::Numeric(huge.clone().into())),
            format!("\"{huge}\"")
        );
        let minus = format!("-{huge}");
        assert_eq!(
            es(&Value::Numeric(minus.clone().into())),
            format!("\"{minus}\"")
        );
        assert_eq!(es(&Value::Numeric("1.50".into())), "1.50");
        let tiny = format!("0.{}1", "0".repeat(400));
        assert_eq!(es(&Value::Numeric(tiny.clone().into())), tiny);
        assert_eq!(es(&Value::Numeric("NaN".into())), "\"NaN\"");
        assert_eq!(es(&Value::Numeric("-Infinity".into())), "\"-Infinity\"");
        let array = Value::Array(
            vec![
                Value::Numeric(huge.clone().into()),
                Value::Null,
                Value::Numeric("2".into()),
            ]
            .into(),
        );
        assert_eq!(es(&array), format!("[\"{huge}\", null, 2]"));
    }

    #[test]
    fn large_floats_in_exponent_notation() {
        assert_eq!(es(&Value::Float8(f64::MAX)), "1.7976931348623157e308");
        assert_eq!(es(&Value::Float8(-1e22)), "-1e22");
        assert_eq!(es(&Value::Float4(f32::MAX)), "3.4028235e38");
        assert_eq!(es(&Value::Float8(1e20)), "100000000000000000000");
        assert_eq!(es(&Value::Float8(0.1)), "0.1");
        assert_eq!(es(&Value::Float8(f64::NAN)), "\"NaN\"");
        assert_eq!(es(&Value::Float4(f32::NEG_INFINITY)), "\"-Infinity\"");
    }

    #[test]
    fn json_duplicate_keys_keep_the_last() {
        let json = |t: &str| es(&Value::Json(t.into()));
        // Untouched without duplicates, whitespace and number text included.
        for same in [
            r#" {"sp" :  1 , "t": [true, 2.50, {"a": null}]} "#,
            r#""str""#,
            "[]",
            "{}",
            "null",
            "1e2",
            r#"{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}"#,
            r#"{"k": "a\"b", "k\\": "}"}"#,
        ] {
            assert_eq!(json(same), same);
        }
        assert_eq!(json(r#"{"a": 1, "a": 2}"#), r#"{"a":2}"#);
        assert_eq!(
            json(r#"{"o": {"k": 1, "k": [2.50]}, "z": "x", "\u007a": 0}"#),
            r#"{"o":{"k":[2.50]},"\u007a":0}"#
        );
        assert_eq!(
            json(r#"[{"a": "x", "b": 1, "a": {"c": 1, "c": 2}}]"#),
            r#"[{"b":1,"a":{"c":2}}]"#
        );
        // Not JSON: sent as it is.
        assert_eq!(json(r#"{"a": 1, "a": "#), r#"{"a": 1, "a": "#);
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        assert_eq!(json(&deep), deep);
    }
}
