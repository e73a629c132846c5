//! `_bulk` actions, their NDJSON form, and the classification of per-item
//! results.

use std::collections::{HashMap, HashSet};

use cdc_core::encode::write_json_string;
use serde::Deserialize;

/// What an action does to its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActionKind {
    /// `index`: store the whole document.
    Index,
    /// `delete`: remove the document.
    Delete,
}

impl ActionKind {
    fn name(self) -> &'static str {
        match self {
            ActionKind::Index => "index",
            ActionKind::Delete => "delete",
        }
    }
}

/// One `_bulk` action with its external version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Action {
    pub(crate) kind: ActionKind,
    pub(crate) index: String,
    pub(crate) id: String,
    pub(crate) version: i64,
    /// The document, for `index`.
    pub(crate) doc: Option<Vec<u8>>,
    /// `schema.table` the change came from (for dead letters).
    pub(crate) table: String,
}

impl Action {
    /// Appends the action line (and the document line for `index`).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(self.kind.name().as_bytes());
        out.extend_from_slice(b"\":{\"_index\":");
        write_json_string(out, &self.index);
        out.extend_from_slice(b",\"_id\":");
        write_json_string(out, &self.id);
        out.extend_from_slice(b",\"version\":");
        out.extend_from_slice(self.version.to_string().as_bytes());
        out.extend_from_slice(b",\"version_type\":\"external_gte\"}}\n");
        if let Some(doc) = &self.doc {
            out.extend_from_slice(doc);
            out.push(b'\n');
        }
    }

    /// About how many body bytes the action takes.
    pub(crate) fn encoded_len(&self) -> usize {
        96 + self.index.len() + self.id.len() + self.doc.as_ref().map_or(0, |d| d.len() + 1)
    }

    /// The dead-letter line for this action: what was sent and why the
    /// server refused it.
    pub(crate) fn dead_letter_line(&self, status: u16, reason: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.doc.as_ref().map_or(0, Vec::len));
        out.extend_from_slice(b"{\"action\":\"");
        out.extend_from_slice(self.kind.name().as_bytes());
        out.extend_from_slice(b"\",\"table\":");
        write_json_string(&mut out, &self.table);
        out.extend_from_slice(b",\"index\":");
        write_json_string(&mut out, &self.index);
        out.extend_from_slice(b",\"id\":");
        write_json_string(&mut out, &self.id);
        out.extend_from_slice(
            format!(
                ",\"version\":{},\"status\":{status},\"error\":",
                self.version
            )
            .as_bytes(),
        );
        write_json_string(&mut out, reason);
        if let Some(doc) = &self.doc {
            out.extend_from_slice(b",\"document\":");
            out.extend_from_slice(doc);
        }
        out.extend_from_slice(b"}\n");
        out
    }
}

/// What to do about one item of a bulk response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ItemOutcome {
    /// Written, or a tolerated conflict (an older version than the stored
    /// one; a delete of a document that is not there).
    Done,
    /// 429 or 5xx: send the item again.
    Retry(String),
    /// Any other refusal (mapping error, invalid id, ...): permanent.
    Reject(u16, String),
}

#[derive(Debug, Deserialize)]
struct BulkResponse {
    items: Vec<HashMap<String, BulkItem>>,
}

#[derive(Debug, Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// Parses a `_bulk` response into one outcome per action, in order. The
/// top-level `errors` flag is ignored: every item's status is checked.
pub(crate) fn parse_response(body: &[u8], actions: &[Action]) -> Result<Vec<ItemOutcome>, String> {
    let response: BulkResponse = serde_json::from_slice(body)
        .map_err(|e| format!("unreadable _bulk response ({e}): {}", snippet(body)))?;
    if response.items.len() != actions.len() {
        return Err(format!(
            "the _bulk response has {} items for {} actions",
            response.items.len(),
            actions.len()
        ));
    }
    let mut outcomes = Vec::with_capacity(actions.len());
    for (action, item) in actions.iter().zip(response.items) {
        let Some(result) = item.into_values().next() else {
            return Err("a _bulk response item is empty".to_owned());
        };
        outcomes.push(classify(action.kind, result.status, result.error.as_ref()));
    }
    Ok(outcomes)
}

/// Which items of one `_bulk` write to send again, by position: those
/// that failed with 429/5xx, except an item followed, in the same write,
/// by a done item (written, or refused as older than the stored
/// document) of the same document (`_index`, `_id`). Such an item is
/// superseded: the index holds a later change of that document, and
/// sending the older one again could overwrite it, because changes past
/// the 65 535th of a transaction share a version and `external_gte`
/// accepts an equal version. The items kept stay in their order, so the
/// changes of one document are retried oldest first.
pub(crate) fn retry_selection(actions: &[Action], outcomes: &[ItemOutcome]) -> Vec<bool> {
    let mut written_later: HashSet<(&str, &str)> = HashSet::new();
    let mut again = vec![false; outcomes.len()];
    for (i, (action, outcome)) in actions.iter().zip(outcomes).enumerate().rev() {
        let key = (action.index.as_str(), action.id.as_str());
        match outcome {
            ItemOutcome::Done => {
                written_later.insert(key);
            }
            ItemOutcome::Retry(_) => again[i] = !written_later.contains(&key),
            ItemOutcome::Reject(..) => {}
        }
    }
    again
}

fn classify(kind: ActionKind, status: u16, error: Option<&serde_json::Value>) -> ItemOutcome {
    let error_type = error
        .and_then(|e| e.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("");
    match status {
        200..=299 => ItemOutcome::Done,
        409 if error_type == "version_conflict_engine_exception" => ItemOutcome::Done,
        // Already gone (or its index never existed): what a delete wants.
        404 if kind == ActionKind::Delete => ItemOutcome::Done,
        429 | 500..=599 => ItemOutcome::Retry(format!("status {status}: {}", describe(error))),
        _ => ItemOutcome::Reject(status, describe(error)),
    }
}

/// `type: reason (caused by: reason)` of an Elasticsearch error object.
pub(crate) fn describe(error: Option<&serde_json::Value>) -> String {
    let Some(error) = error else {
        return "no error details".to_owned();
    };
    if let Some(text) = error.as_str() {
        return text.to_owned();
    }
    let field = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(str::to_owned)
            .unwrap_or_default()
    };
    let mut text = format!("{}: {}", field(error, "type"), field(error, "reason"));
    if let Some(cause) = error.get("caused_by") {
        text.push_str(&format!(
            " (caused by {}: {})",
            field(cause, "type"),
            field(cause, "reason")
        ));
    }
    text
}

/// The start of a response body, for messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut end = text.len().min(500);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn action(kind: ActionKind, id: &str) -> Action {
        Action {
            kind,
            index: "public.t".into(),
            id: id.into(),
            version: 7,
            doc: (kind == ActionKind::Index).then(|| br#"{"id":1}"#.to_vec()),
            table: "public.t".into(),
        }
    }

    #[test]
    fn encodes_ndjson() {
        let mut out = Vec::new();
        action(ActionKind::Index, "1").encode(&mut out);
        action(ActionKind::Delete, "a\"b").encode(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"index\":{\"_index\":\"public.t\",\"_id\":\"1\",\"version\":7,\"version_type\":\"external_gte\"}}\n\
             {\"id\":1}\n\
             {\"delete\":{\"_index\":\"public.t\",\"_id\":\"a\\\"b\",\"version\":7,\"version_type\":\"external_gte\"}}\n"
        );
        let line = action(ActionKind::Index, "1").dead_letter_line(400, "bad");
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["document"]["id"], 1);
        assert_eq!(v["status"], 400);
    }

    fn on(index: &str, id: &str) -> Action {
        Action {
            index: index.into(),
            ..action(ActionKind::Index, id)
        }
    }

    fn retry() -> ItemOutcome {
        ItemOutcome::Retry("status 429".into())
    }

    /// The ids `retry_selection` picks, in order.
    fn picked(items: &[(Action, ItemOutcome)]) -> Vec<String> {
        let (actions, outcomes): (Vec<Action>, Vec<ItemOutcome>) = items.iter().cloned().unzip();
        let again = retry_selection(&actions, &outcomes);
        assert_eq!(again.len(), actions.len());
        actions
            .iter()
            .zip(again)
            .filter(|(_, again)| *again)
            .map(|(a, _)| format!("{}/{}", a.index, a.id))
            .collect()
    }

    #[test]
    fn a_failed_item_superseded_by_a_later_written_one_is_not_retried() {
        // x's first change failed, its second was written: sending the
        // first again (with an equal version past ordinal 65535) would
        // overwrite the newer value.
        let d = ItemOutcome::Done;
        assert!(picked(&[(on("i", "x"), retry()), (on("i", "x"), d.clone())]).is_empty());
        // Also when the later one was refused as older than the stored
        // document (409, counted as done): the index holds something newer.
        let delete = Action {
            index: "i".into(),
            ..action(ActionKind::Delete, "x")
        };
        assert!(picked(&[
            (on("i", "x"), retry()),
            (on("i", "x"), retry()),
            (delete, d.clone())
        ])
        .is_empty());
    }

    #[test]
    fn failed_items_are_retried_in_their_order() {
        let d = ItemOutcome::Done;
        // An earlier written change does not supersede a later failed one.
        assert_eq!(
            picked(&[(on("i", "x"), d.clone()), (on("i", "x"), retry())]),
            ["i/x"]
        );
        // Failed changes of one document, nothing written after them: all,
        // in order, also around other documents' items.
        assert_eq!(
            picked(&[
                (on("i", "x"), retry()),
                (on("i", "y"), d.clone()),
                (on("i", "y"), retry()),
                (on("i", "x"), retry()),
                (on("j", "x"), d.clone()),
            ]),
            ["i/x", "i/y", "i/x"]
        );
        // Same _id in another index is another document.
        assert_eq!(
            picked(&[(on("i", "x"), retry()), (on("j", "x"), d.clone())]),
            ["i/x"]
        );
        // A later change refused for good (dead letter) wrote nothing.
        assert_eq!(
            picked(&[
                (on("i", "x"), retry()),
                (on("i", "x"), ItemOutcome::Reject(400, "bad".into()))
            ]),
            ["i/x"]
        );
        // Only the failed ones after the last written one.
        assert_eq!(
            picked(&[
                (on("i", "x"), retry()),
                (on("i", "x"), d),
                (on("i", "x"), retry()),
            ]),
            ["i/x"]
        );
    }

    #[test]
    fn every_item_is_classified() {
        let actions = vec![
            action(ActionKind::Index, "1"),
            action(ActionKind::Index, "2"),
            action(ActionKind::Delete, "3"),
            action(ActionKind::Index, "4"),
            action(ActionKind::Index, "5"),
            action(ActionKind::Index, "6"),
        ];
        let body = br#"{"errors": false, "items": [
            {"index": {"status": 201}},
            {"index": {"status": 409, "error": {"type": "version_conflict_engine_exception", "reason": "old"}}},
            {"delete": {"status": 404, "result": "not_found"}},
            {"index": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "busy"}}},
            {"index": {"status": 503, "error": "unavailable"}},
            {"index": {"status": 400, "error": {"type": "document_parsing_exception", "reason": "bad",
                        "caused_by": {"type": "illegal_argument_exception", "reason": "x"}}}}
        ]}"#;
        let out = parse_response(body, &actions).unwrap();
        assert_eq!(out[0], ItemOutcome::Done);
        assert_eq!(out[1], ItemOutcome::Done);
        assert_eq!(out[2], ItemOutcome::Done);
        assert!(matches!(out[3], ItemOutcome::Retry(_)));
        assert!(matches!(out[4], ItemOutcome::Retry(_)));
        assert_eq!(
            out[5],
            ItemOutcome::Reject(
                400,
                "document_parsing_exception: bad (caused by illegal_argument_exception: x)".into()
            )
        );
        assert!(parse_response(br#"{"items": []}"#, &actions).is_err());
        assert!(parse_response(b"<html>", &actions).is_err());
    }
}
