//! What asks for an incremental snapshot (a signal row) and what its
//! watermarks say.

use cdc_core::TableName;
use serde_json::Value as Json;

use super::filter::check_filter_text;
use super::progress::Control;

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
    /// this order, of the rows matching `filter` (SQL text) when given.
    Snapshot {
        tables: Vec<TableName>,
        filter: Option<String>,
    },
    /// `kind = 'stop-snapshot'`, `'pause-snapshot'` or
    /// `'resume-snapshot'`: of these tables (all when empty).
    Control {
        control: Control,
        tables: Vec<TableName>,
    },
}

/// The kinds of signal rows.
pub const SIGNAL_KINDS: [&str; 4] = [
    "snapshot",
    "stop-snapshot",
    "pause-snapshot",
    "resume-snapshot",
];

/// Reads a signal row's `kind` and `payload` (JSON text). Tables are
/// written `"schema.table"` (split at the first dot, no quoting) or
/// `{"schema": "…", "table": "…"}` for names holding a dot. A snapshot's
/// payload may carry `"where"`, a filter checked by
/// [`check_filter_text`]; a stop, pause or resume needs no payload (all
/// unfinished snapshots) or names `"tables"`.
pub(crate) fn parse_signal(kind: &str, payload: Option<&str>) -> Result<Signal, String> {
    let control = match kind {
        "snapshot" => None,
        "stop-snapshot" => Some(Control::Stop),
        "pause-snapshot" => Some(Control::Pause),
        "resume-snapshot" => Some(Control::Resume),
        other => {
            return Err(format!(
                "unknown signal kind `{other}` (known: {})",
                SIGNAL_KINDS.map(|k| format!("`{k}`")).join(", ")
            ))
        }
    };
    let v: Option<Json> = payload
        .map(|p| serde_json::from_str(p).map_err(|e| format!("the payload is not JSON: {e}")))
        .transpose()?;
    if let Some(control) = control {
        let tables = match v.as_ref().and_then(|v| v.get("tables")) {
            None | Some(Json::Null) => Vec::new(),
            Some(t) => parse_tables(t)?,
        };
        return Ok(Signal::Control { control, tables });
    }
    let v = v.ok_or("a `snapshot` signal needs a payload {\"tables\": [...]}")?;
    let tables = parse_tables(v.get("tables").ok_or("the payload has no array `tables`")?)?;
    if tables.is_empty() {
        return Err("the payload names no table".into());
    }
    let filter = match v.get("where") {
        None | Some(Json::Null) => None,
        Some(Json::String(f)) => {
            check_filter_text(f).map_err(|e| format!("`where`: {e}"))?;
            Some(f.clone())
        }
        Some(other) => return Err(format!("`where` is {other}, not SQL text")),
    };
    Ok(Signal::Snapshot { tables, filter })
}

/// The tables of a payload's `tables` array, each once, in order.
fn parse_tables(tables: &Json) -> Result<Vec<TableName>, String> {
    let tables = tables.as_array().ok_or("`tables` is not an array")?;
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
    Ok(out)
}

/// The payload of a `snapshot` signal asking for `tables` (each written
/// as an object, so names holding a dot are kept) with `filter`.
pub fn snapshot_payload(tables: &[TableName], filter: Option<&str>) -> Json {
    let tables: Vec<Json> = tables
        .iter()
        .map(|t| serde_json::json!({"schema": t.schema, "table": t.name}))
        .collect();
    match filter {
        Some(f) => serde_json::json!({"tables": tables, "where": f}),
        None => serde_json::json!({"tables": tables}),
    }
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
            Ok(Signal::Snapshot {
                tables: vec![TableName::new("public", "t"), TableName::new("a.b", "c")],
                filter: None
            })
        );
        assert!(parse_signal("snapshot", Some(r#"{"tables": ["t"]}"#)).is_err());
        assert!(parse_signal("snapshot", Some(r#"{"tables": []}"#)).is_err());
        assert!(parse_signal("snapshot", None).is_err());
        assert!(parse_signal("pause", Some("{}"))
            .unwrap_err()
            .contains("unknown signal kind"));
    }

    #[test]
    fn snapshots_take_a_filter_and_controls_take_optional_tables() {
        let t = TableName::new("public", "t");
        let payload = snapshot_payload(std::slice::from_ref(&t), Some("v > 1")).to_string();
        assert_eq!(
            parse_signal("snapshot", Some(&payload)),
            Ok(Signal::Snapshot {
                tables: vec![t.clone()],
                filter: Some("v > 1".into())
            })
        );
        assert!(parse_signal(
            "snapshot",
            Some(r#"{"tables": ["public.t"], "where": "true) OR (true"}"#)
        )
        .unwrap_err()
        .contains("`where`"));
        assert!(parse_signal("snapshot", Some(r#"{"tables": ["public.t"], "where": 1}"#)).is_err());
        assert_eq!(
            parse_signal("pause-snapshot", None),
            Ok(Signal::Control {
                control: Control::Pause,
                tables: vec![]
            })
        );
        assert_eq!(
            parse_signal("stop-snapshot", Some(r#"{"tables": ["public.t"]}"#)),
            Ok(Signal::Control {
                control: Control::Stop,
                tables: vec![t]
            })
        );
        assert!(matches!(
            parse_signal("resume-snapshot", Some("{}")),
            Ok(Signal::Control {
                control: Control::Resume,
                ..
            })
        ));
        assert!(parse_signal("resume-snapshot", Some("not json")).is_err());
    }
}
