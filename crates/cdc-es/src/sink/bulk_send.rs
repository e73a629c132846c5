//! Sending `_bulk` requests: per-item retries, permanent refusals, truncates.

use cdc_core::SinkError;
use elasticsearch::http::{Method, StatusCode};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::bulk::{parse_response, retry_selection, Action, ActionKind, ItemOutcome};
use crate::http::RequestError;

use super::EsSink;

impl EsSink {
    /// Sends `actions` as one `_bulk` request, then only the items that
    /// failed with 429/5xx again (not those superseded by a later written
    /// item of their document, see [`retry_selection`]), until all are
    /// done or `max_retries` is used up (then a retryable error).
    pub(super) async fn send_bulk(&mut self, actions: Vec<Action>) -> Result<(), SinkError> {
        let mut todo = actions;
        let mut backoff = self.backoff();
        let query = [("refresh", self.config.refresh.as_str())];
        loop {
            let mut body = Vec::with_capacity(todo.iter().map(Action::encoded_len).sum());
            for action in &todo {
                action.encode(&mut body);
            }
            let answer = self
                .http
                .request(Method::Post, "/_bulk", &query, Some(body), true, false)
                .await;
            let last_error = match answer {
                Ok((_, response)) => {
                    let outcomes =
                        parse_response(&response, &todo).map_err(SinkError::retryable)?;
                    let again = retry_selection(&todo, &outcomes);
                    let mut retry = Vec::new();
                    let mut last = String::new();
                    for ((action, outcome), again) in todo.into_iter().zip(outcomes).zip(again) {
                        match outcome {
                            ItemOutcome::Done => {}
                            ItemOutcome::Retry(_) if !again => {
                                tracing::debug!(
                                    pipeline = %self.pipeline, index = %action.index, id = %action.id,
                                    "elasticsearch: failed item superseded by a later written change of its document; not retried"
                                );
                            }
                            ItemOutcome::Retry(m) => {
                                last = m;
                                retry.push(action);
                            }
                            ItemOutcome::Reject(status, reason) => {
                                self.reject(&action, status, &reason).await?;
                            }
                        }
                    }
                    if retry.is_empty() {
                        return Ok(());
                    }
                    tracing::warn!(
                        pipeline = %self.pipeline,
                        items = retry.len(),
                        "elasticsearch: bulk items failed ({last}); retrying them"
                    );
                    todo = retry;
                    last
                }
                Err(RequestError::Transient(m)) => {
                    tracing::warn!(pipeline = %self.pipeline, "elasticsearch: {m}; retrying");
                    m
                }
                Err(e) => return Err(e.into_sink_error("elasticsearch _bulk")),
            };
            if backoff.attempts() >= self.config.max_retries {
                return Err(SinkError::retryable(format!(
                    "elasticsearch _bulk: {} items still failing after {} retries: {last_error}",
                    todo.len(),
                    self.config.max_retries
                )));
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// A permanently refused item: to the dead-letter file, or fatal.
    pub(super) async fn reject(
        &mut self,
        action: &Action,
        status: u16,
        reason: &str,
    ) -> Result<(), SinkError> {
        let Some(file) = self.dead_letter.as_mut() else {
            return Err(SinkError::fatal(format!(
                "elasticsearch refused document {}/{} (table {}, status {status}): {reason}; \
                 fix the mapping or set `dead_letter` to skip such documents",
                action.index, action.id, action.table
            )));
        };
        tracing::warn!(
            pipeline = %self.pipeline,
            index = %action.index,
            id = %action.id,
            "elasticsearch refused a document (status {status}: {reason}); written to the dead-letter file"
        );
        file.write_all(&action.dead_letter_line(status, reason))
            .await
            .map_err(|e| SinkError::retryable(format!("writing the dead-letter file: {e}")))?;
        self.dead_letter_dirty = true;
        Ok(())
    }

    /// Removes every document of `index` (a TRUNCATE at `version`): refresh
    /// so the search sees all of them, walk them with a scroll, and delete
    /// each with the truncate's version. A document newer than the
    /// truncate (a replay) refuses the delete with 409 and stays; the
    /// tombstones carry the truncate's version, so replayed changes from
    /// before the truncate are refused too (while `index.gc_deletes` keeps
    /// them), and changes after it are accepted.
    pub(super) async fn truncate(
        &mut self,
        index: &str,
        version: i64,
        table: &str,
    ) -> Result<(), SinkError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default, rename = "_scroll_id")]
            scroll_id: Option<String>,
            hits: Hits,
        }
        #[derive(Deserialize)]
        struct Hits {
            hits: Vec<Hit>,
        }
        #[derive(Deserialize)]
        struct Hit {
            #[serde(rename = "_id")]
            id: String,
            #[serde(default, rename = "_version")]
            version: Option<i64>,
        }
        let refresh = format!("/{index}/_refresh");
        let (status, _) = self
            .request_with_retries(Method::Post, &refresh, &[], None, true)
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        let search = format!("/{index}/_search");
        let query = br#"{"size":1000,"_source":false,"version":true,"sort":["_doc"],"query":{"match_all":{}}}"#;
        let (status, mut answer) = self
            .request_with_retries(
                Method::Post,
                &search,
                &[("scroll", "1m")],
                Some(query.to_vec()),
                true,
            )
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        let mut last_scroll = None;
        loop {
            let page: Page = serde_json::from_slice(&answer).map_err(|e| {
                SinkError::retryable(format!(
                    "truncating index {index}: unreadable search response ({e}): {}",
                    crate::bulk::snippet(&answer)
                ))
            })?;
            if let Some(id) = &page.scroll_id {
                last_scroll = Some(id.clone());
            }
            if page.hits.hits.is_empty() {
                break;
            }
            let deletes: Vec<Action> = page
                .hits
                .hits
                .into_iter()
                .filter(|hit| hit.version.is_none_or(|v| v <= version))
                .map(|hit| Action {
                    kind: ActionKind::Delete,
                    index: index.to_owned(),
                    id: hit.id,
                    version,
                    doc: None,
                    table: table.to_owned(),
                })
                .collect();
            if !deletes.is_empty() {
                self.send_bulk(deletes).await?;
            }
            let Some(scroll_id) = page.scroll_id else {
                return Err(SinkError::retryable(format!(
                    "truncating index {index}: the search answered without a scroll id"
                )));
            };
            let body =
                serde_json::to_vec(&serde_json::json!({"scroll": "1m", "scroll_id": scroll_id}))
                    .map_err(|e| SinkError::fatal(format!("encoding a scroll request: {e}")))?;
            let (_, next) = self
                .request_with_retries(Method::Post, "/_search/scroll", &[], Some(body), false)
                .await?;
            answer = next;
        }
        if let Some(scroll_id) = last_scroll {
            // Best effort: the server drops it after a minute anyway.
            if let Ok(body) = serde_json::to_vec(&serde_json::json!({ "scroll_id": scroll_id })) {
                let _ = self
                    .http
                    .request(
                        Method::Delete,
                        "/_search/scroll",
                        &[],
                        Some(body),
                        false,
                        true,
                    )
                    .await;
            }
        }
        Ok(())
    }
}
