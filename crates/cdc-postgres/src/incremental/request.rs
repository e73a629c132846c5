//! What asks for an incremental snapshot (a signal row) and what its
//! watermarks say.

use cdc_core::TableName;
use serde_json::Value as Json;

/// Which watermark of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MarkKind {
    /// Written before the chunk is read.
    Low,
    /// Written after the chunk is read.
    High,
}

impl MarkKind {
    fn as_str(self) -> &'static str {
        match self {
            MarkKind::Low => "low",
            MarkKind::High => "high",
        }
    }
}

/// The content of a watermark message: which snapshot, table, chunk and
/// mark. Watermarks are matched by their WAL position; the content is for
/// people reading the WAL (and a check that the position is the mark).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mark {
    pub snapshot: i64,
    pub table: TableName,
    pub chunk: u64,
    pub kind: MarkKind,
    /// Unique to one attempt at the chunk: the watermarks of an earlier
    /// attempt (or run) never match this one.
    pub run: String,
}

impl Mark {
    /// `{"snapshot":7,"schema":"public","table":"t","chunk":3,"mark":"low","run":"…"}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "snapshot": self.snapshot,
            "schema": self.table.schema,
            "table": self.table.name,
            "chunk": self.chunk,
            "mark": self.kind.as_str(),
            "run": self.run,
        })
        .to_string()
    }

    /// The mark in a message's content; `None` when it is not one.
    pub fn parse(content: &[u8]) -> Option<Mark> {
        let v: Json = serde_json::from_slice(content).ok()?;
        let kind = match v.get("mark")?.as_str()? {
            "low" => MarkKind::Low,
            "high" => MarkKind::High,
            _ => return None,
        };
        Some(Mark {
            snapshot: v.get("snapshot")?.as_i64()?,
            table: TableName::new(v.get("schema")?.as_str()?, v.get("table")?.as_str()?),
            chunk: v.get("chunk")?.as_u64()?,
            kind,
            run: v.get("run")?.as_str()?.to_owned(),
        })
    }
}

/// What a signal row asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signal {
    /// `kind = 'snapshot'`: an incremental snapshot of these tables, in
    /// this order.
    Snapshot(Vec<TableName>),
}

/// Reads a signal row's `kind` and `payload` (JSON text). Tables are
/// written `"schema.table"` (split at the first dot, no quoting) or
/// `{"schema": "…", "table": "…"}` for names holding a dot.
pub(crate) fn parse_signal(kind: &str, payload: Option<&str>) -> Result<Signal, String> {
    match kind {
        "snapshot" => {}
        other => return Err(format!("unknown signal kind `{other}` (known: `snapshot`)")),
    }
    let payload = payload.ok_or("a `snapshot` signal needs a payload {\"tables\": [...]}")?;
    let v: Json =
        serde_json::from_str(payload).map_err(|e| format!("the payload is not JSON: {e}"))?;
    let tables = v
        .get("tables")
        .and_then(Json::as_array)
        .ok_or("the payload has no array `tables`")?;
    let mut out = Vec::with_capacity(tables.len());
    for t in tables {
        let name = match t {
            Json::String(s) => match s.split_once('.') {
                Some((schema, name)) if !schema.is_empty() && !name.is_empty() => {
                    TableName::new(schema, name)
                }
                _ => return Err(format!("table `{s}` is not written `schema.table`")),
            },
            Json::Object(o) => match (
                o.get("schema").and_then(Json::as_str),
                o.get("table").and_then(Json::as_str),
            ) {
                (Some(schema), Some(name)) => TableName::new(schema, name),
                _ => return Err(format!("table {t} lacks `schema` or `table`")),
            },
            other => return Err(format!("table {other} is neither a string nor an object")),
        };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    if out.is_empty() {
        return Err("the payload names no table".into());
    }
    Ok(Signal::Snapshot(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip() {
        let m = Mark {
            snapshot: 7,
            table: TableName::new("Odd.Schema", "t\"x"),
            chunk: 3,
            kind: MarkKind::High,
            run: "42-1".into(),
        };
        assert_eq!(Mark::parse(m.to_json().as_bytes()), Some(m));
        assert_eq!(Mark::parse(b"not json"), None);
        assert_eq!(Mark::parse(br#"{"mark":"middle"}"#), None);
    }

    #[test]
    fn signals_name_tables_as_text_or_objects() {
        assert_eq!(
            parse_signal(
                "snapshot",
                Some(r#"{"tables": ["public.t", {"schema": "a.b", "table": "c"}, "public.t"]}"#)
            ),
            Ok(Signal::Snapshot(vec![
                TableName::new("public", "t"),
                TableName::new("a.b", "c")
            ]))
        );
        assert!(parse_signal("snapshot", Some(r#"{"tables": ["t"]}"#)).is_err());
        assert!(parse_signal("snapshot", Some(r#"{"tables": []}"#)).is_err());
        assert!(parse_signal("snapshot", None).is_err());
        assert!(parse_signal("pause", Some("{}"))
            .unwrap_err()
            .contains("unknown signal kind"));
    }
}
