//! Stored documents that partial updates (unchanged TOAST columns) build on.

use std::collections::{HashMap, HashSet};

use cdc_core::{Batch, Event, Op, SinkError};
use elasticsearch::http::Method;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::document::{has_unchanged_toast, parse_fields};
use crate::naming::document_id;

use super::{DocKey, EsSink, StoredDoc, MGET_CHUNK};

impl EsSink {
    /// Stored versions and fields of the documents that partial updates in
    /// `batches` need and that no earlier change of them wrote.
    pub(super) async fn fetch_bases(
        &mut self,
        batches: &[&Batch],
    ) -> Result<HashMap<DocKey, StoredDoc>, SinkError> {
        let mut touched: HashSet<DocKey> = HashSet::new();
        let mut truncated: HashSet<String> = HashSet::new();
        let mut needed: Vec<DocKey> = Vec::new();
        for event in batches.iter().flat_map(|b| &b.events) {
            let Event::Change(change) = event else {
                continue;
            };
            let index = self.index_for(&change.table.name)?;
            if change.op == Op::Truncate {
                truncated.insert(index);
                continue;
            }
            if let (Op::Update, Some(after)) = (change.op, &change.after) {
                if has_unchanged_toast(after) {
                    // The stored copy sits under the old key if the key changed.
                    let row = change.before.as_ref().unwrap_or(after);
                    let id = document_id(&change.table, row)
                        .or_else(|_| document_id(&change.table, after))
                        .map_err(SinkError::fatal)?;
                    let key = (index.clone(), id);
                    if !touched.contains(&key) && !truncated.contains(&index) {
                        needed.push(key.clone());
                    }
                    // With a key change, also the new _id: already stored
                    // there means this change is a replay.
                    if let Ok(new_id) = document_id(&change.table, after) {
                        let new_key = (index.clone(), new_id);
                        if new_key != key
                            && !touched.contains(&new_key)
                            && !truncated.contains(&index)
                        {
                            needed.push(new_key);
                        }
                    }
                }
            }
            for row in [&change.before, &change.after].into_iter().flatten() {
                if let Ok(id) = document_id(&change.table, row) {
                    touched.insert((index.clone(), id));
                }
            }
        }
        let mut found = HashMap::new();
        for chunk in needed.chunks(MGET_CHUNK) {
            self.mget(chunk, &mut found).await?;
        }
        Ok(found)
    }

    pub(super) async fn mget(
        &self,
        keys: &[DocKey],
        found: &mut HashMap<DocKey, StoredDoc>,
    ) -> Result<(), SinkError> {
        #[derive(Deserialize)]
        struct MgetResponse {
            docs: Vec<MgetDoc>,
        }
        #[derive(Deserialize)]
        struct MgetDoc {
            #[serde(default)]
            found: bool,
            #[serde(default, rename = "_version")]
            version: Option<i64>,
            #[serde(default, rename = "_source")]
            source: Option<Box<RawValue>>,
            #[serde(default)]
            error: Option<serde_json::Value>,
        }
        let docs: Vec<serde_json::Value> = keys
            .iter()
            .map(|(index, id)| serde_json::json!({"_index": index, "_id": id}))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "docs": docs }))
            .map_err(|e| SinkError::fatal(format!("encoding _mget: {e}")))?;
        let (_, answer) = self
            .request_with_retries(Method::Post, "/_mget", &[], Some(body), false)
            .await?;
        let response: MgetResponse = serde_json::from_slice(&answer).map_err(|e| {
            SinkError::retryable(format!(
                "unreadable _mget response ({e}): {}",
                crate::bulk::snippet(&answer)
            ))
        })?;
        if response.docs.len() != keys.len() {
            return Err(SinkError::retryable(format!(
                "_mget answered {} documents for {}",
                response.docs.len(),
                keys.len()
            )));
        }
        for (key, doc) in keys.iter().zip(response.docs) {
            if let Some(error) = &doc.error {
                let kind = error.get("type").and_then(|t| t.as_str()).unwrap_or("");
                if kind == "index_not_found_exception" {
                    continue;
                }
                return Err(SinkError::retryable(format!(
                    "_mget of {}/{}: {}",
                    key.0,
                    key.1,
                    crate::bulk::describe(Some(error))
                )));
            }
            if !doc.found {
                continue;
            }
            let (Some(version), Some(source)) = (doc.version, doc.source) else {
                continue;
            };
            let fields = parse_fields(source.get().as_bytes()).map_err(|m| {
                SinkError::fatal(format!("stored document {}/{}: {m}", key.0, key.1))
            })?;
            found.insert(key.clone(), StoredDoc { version, fields });
        }
        Ok(())
    }
}
