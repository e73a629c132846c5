//! `_bulk` bodies split into items, and responses with injected 429 items
//! spliced in.

use serde_json::{json, Value};

/// One action of a `_bulk` request (its action line and, except for
/// `delete`, its source line).
#[derive(Debug, Clone, PartialEq)]
pub struct BulkItem {
    /// `index`, `create`, `update` or `delete`.
    pub action: String,
    /// `_index` of the action line, or the index of the request path
    /// (`/{index}/_bulk`).
    pub index: String,
    /// `_id` (empty when the action has none).
    pub id: String,
    /// `version` of the action line.
    pub version: Option<i64>,
    /// The source line, parsed (`None` for `delete`).
    pub source: Option<Value>,
    /// The item's lines as the client sent them, each ending in `\n`.
    lines: Vec<u8>,
}

impl BulkItem {
    /// `source[field]` as a string, if it is one.
    pub fn source_str(&self, field: &str) -> Option<&str> {
        self.source.as_ref()?.get(field)?.as_str()
    }
}

/// The items of an NDJSON `_bulk` body; `default_index` is the index of
/// the request path, if any. An error for a body that is not one.
pub(crate) fn split(body: &[u8], default_index: Option<&str>) -> Result<Vec<BulkItem>, String> {
    let mut lines = body
        .split_inclusive(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace));
    let mut items = Vec::new();
    while let Some(line) = lines.next() {
        let parsed: Value = serde_json::from_slice(line)
            .map_err(|e| format!("action line {} is not JSON: {e}", items.len()))?;
        let Some((action, meta)) = parsed.as_object().and_then(|o| o.iter().next()) else {
            return Err(format!("action line {} is not an object", items.len()));
        };
        let mut raw = line.to_vec();
        if !raw.ends_with(b"\n") {
            raw.push(b'\n');
        }
        let source = if action == "delete" {
            None
        } else {
            let Some(doc) = lines.next() else {
                return Err(format!("action {} has no source line", items.len()));
            };
            raw.extend_from_slice(doc);
            if !raw.ends_with(b"\n") {
                raw.push(b'\n');
            }
            Some(
                serde_json::from_slice(doc)
                    .map_err(|e| format!("source line {} is not JSON: {e}", items.len()))?,
            )
        };
        let text = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_owned);
        items.push(BulkItem {
            action: action.clone(),
            index: text("_index")
                .or_else(|| default_index.map(str::to_owned))
                .unwrap_or_default(),
            id: text("_id").unwrap_or_default(),
            version: meta.get("version").and_then(Value::as_i64),
            source,
            lines: raw,
        });
    }
    Ok(items)
}

/// The body that carries every item not in `rejected`, in order.
pub(crate) fn forwarded_body(items: &[BulkItem], rejected: &[bool]) -> Vec<u8> {
    let mut body = Vec::new();
    for (item, rejected) in items.iter().zip(rejected) {
        if !rejected {
            body.extend_from_slice(&item.lines);
        }
    }
    body
}

/// The 429 answer Elasticsearch gives for an item its write queue refused.
fn rejection(item: &BulkItem) -> Value {
    json!({ item.action.clone(): {
        "_index": item.index,
        "_id": item.id,
        "status": 429,
        "error": {
            "type": "es_rejected_execution_exception",
            "reason": "rejected execution of coordinating operation (injected by es-fault-proxy)"
        }
    }})
}

/// The response to the whole request: the server's answer to the
/// forwarded items (`upstream`, `None` when nothing was forwarded) with a
/// 429 item at each rejected position and `errors: true`.
pub(crate) fn splice(
    items: &[BulkItem],
    rejected: &[bool],
    upstream: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let forwarded = rejected.iter().filter(|r| !**r).count();
    let mut answer = match upstream {
        Some(body) => serde_json::from_slice::<Value>(body)
            .map_err(|e| format!("the server's _bulk answer is not JSON: {e}"))?,
        None => json!({ "took": 0, "items": [] }),
    };
    let Some(object) = answer.as_object_mut() else {
        return Err("the server's _bulk answer is not an object".to_owned());
    };
    let from_server = match object.remove("items") {
        Some(Value::Array(list)) => list,
        _ => return Err("the server's _bulk answer has no items".to_owned()),
    };
    if from_server.len() != forwarded {
        return Err(format!(
            "the server answered {} items for {forwarded} forwarded",
            from_server.len()
        ));
    }
    let mut from_server = from_server.into_iter();
    let mut spliced = Vec::with_capacity(items.len());
    for (item, rejected) in items.iter().zip(rejected) {
        if *rejected {
            spliced.push(rejection(item));
        } else if let Some(answer) = from_server.next() {
            spliced.push(answer);
        }
    }
    object.insert("items".to_owned(), Value::Array(spliced));
    object.insert("errors".to_owned(), Value::Bool(true));
    serde_json::to_vec(&answer).map_err(|e| format!("encoding the answer: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"{\"index\":{\"_index\":\"i\",\"_id\":\"1\",\"version\":7,\"version_type\":\"external_gte\"}}\n\
{\"v\":\"old\"}\n\
{\"delete\":{\"_id\":\"2\"}}\n\
\n\
{\"index\":{\"_index\":\"i\",\"_id\":\"1\",\"version\":7}}\n\
{\"v\":\"new\"}";

    #[test]
    fn splits_items_and_forwards_the_rest() {
        let items = split(BODY, Some("p")).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(
            (
                items[0].action.as_str(),
                items[0].index.as_str(),
                items[0].id.as_str()
            ),
            ("index", "i", "1")
        );
        assert_eq!(items[0].version, Some(7));
        assert_eq!(items[0].source_str("v"), Some("old"));
        assert_eq!(
            (
                items[1].action.as_str(),
                items[1].index.as_str(),
                items[1].source.clone()
            ),
            ("delete", "p", None)
        );
        assert_eq!(items[2].source_str("v"), Some("new"));
        let body = forwarded_body(&items, &[true, false, false]);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "{\"delete\":{\"_id\":\"2\"}}\n{\"index\":{\"_index\":\"i\",\"_id\":\"1\",\"version\":7}}\n{\"v\":\"new\"}\n"
        );
        assert!(split(b"{\"index\":{}}\n", None).is_err());
        assert!(split(b"nope\n", None).is_err());
    }

    #[test]
    fn splices_rejections_at_their_positions() {
        let items = split(BODY, None).unwrap();
        let upstream = br#"{"took":3,"errors":false,"items":[{"delete":{"status":404}},{"index":{"status":200}}]}"#;
        let out = splice(&items, &[true, false, false], Some(upstream)).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["errors"], json!(true));
        assert_eq!(out["took"], json!(3));
        let list = out["items"].as_array().unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0]["index"]["status"], json!(429));
        assert_eq!(
            list[0]["index"]["error"]["type"],
            json!("es_rejected_execution_exception")
        );
        assert_eq!(list[1]["delete"]["status"], json!(404));
        assert_eq!(list[2]["index"]["status"], json!(200));
        // Everything rejected: nothing was forwarded.
        let all = splice(&items, &[true, true, true], None).unwrap();
        let all: Value = serde_json::from_slice(&all).unwrap();
        assert_eq!(all["items"].as_array().unwrap().len(), 3);
        // An answer that does not match what was forwarded.
        assert!(splice(&items, &[true, false, true], Some(upstream)).is_err());
    }
}
