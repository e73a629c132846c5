//! [`EsSink`]: change events to `_bulk` requests, durable on return.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cdc_core::{Backoff, Batch, ChangeEvent, Event, Op, Sink, SinkError, TableName, TableSchema};
use elasticsearch::http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::AsyncWriteExt;

use crate::bulk::{parse_response, retry_selection, Action, ActionKind, ItemOutcome};
use crate::config::{EsSinkConfig, Mappings};
use crate::document::{has_unchanged_toast, parse_fields, render, StoredFields};
use crate::http::{Http, RequestError};
use crate::mapping;
use crate::naming::{document_id, split_table, IndexTemplate};
use crate::version::external_version;

/// Longest pause between in-sink retries.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(10);
/// Documents asked for in one `_mget`.
const MGET_CHUNK: usize = 1000;

/// `(index, _id)` of a document.
type DocKey = (String, String);

/// What the sink knows about an index's mapping.
struct IndexState {
    /// The properties of an index whose mapping this sink manages; `None`
    /// for an index it leaves alone (`mappings: none`, or not created by
    /// the sink).
    mapped: Option<HashSet<String>>,
    /// The table schema last checked against it.
    seen: Arc<TableSchema>,
}

/// A stored document as `_mget` returned it.
struct StoredDoc {
    version: i64,
    fields: StoredFields,
}

/// The Elasticsearch / OpenSearch sink.
///
/// Each batch becomes `_bulk` requests of `index` and `delete` actions with
/// external versions (see the crate docs); `write_batch` returns once every
/// item succeeded, was an older version than the stored one, or (with
/// `dead_letter`) was written to the dead-letter file and `fsync`ed.
pub struct EsSink {
    http: Http,
    template: IndexTemplate,
    explicit: HashMap<TableName, String>,
    index_names: HashMap<TableName, String>,
    table_mappings: HashMap<TableName, Mappings>,
    indexes: HashMap<String, IndexState>,
    config: EsSinkConfig,
    pipeline: String,
    dead_letter: Option<tokio::fs::File>,
    dead_letter_dirty: bool,
}

impl std::fmt::Debug for EsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EsSink")
            .field("urls", &self.config.urls)
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

impl EsSink {
    /// Builds the client, checks that the cluster answers (a transient
    /// failure is retryable, a refusal such as 401 fatal), and opens the
    /// dead-letter file if one is configured.
    pub async fn connect(config: &EsSinkConfig, pipeline_name: &str) -> Result<EsSink, SinkError> {
        if let Some((field, message)) = config.validate().into_iter().next() {
            return Err(SinkError::fatal(format!("{field}: {message}")));
        }
        let template = IndexTemplate::parse(&config.index)
            .map_err(|m| SinkError::fatal(format!("index: {m}")))?;
        let mut explicit = HashMap::new();
        for (table, index) in &config.indices {
            let name = split_table(table)
                .ok_or_else(|| SinkError::fatal(format!("indices.{table}: not schema.table")))?;
            explicit.insert(name, index.clone());
        }
        let mut table_mappings = HashMap::new();
        for (table, mode) in &config.table_mappings {
            let name = split_table(table).ok_or_else(|| {
                SinkError::fatal(format!("table_mappings.{table}: not schema.table"))
            })?;
            table_mappings.insert(name, *mode);
        }
        let http = Http::new(config)?;
        http.request(Method::Get, "/", &[], None, false, false)
            .await
            .map_err(|e| e.into_sink_error("the search cluster does not answer"))?;
        let dead_letter = match &config.dead_letter {
            Some(path) => Some(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .map_err(|e| {
                        SinkError::fatal(format!(
                            "dead_letter: cannot open {}: {e}",
                            path.display()
                        ))
                    })?,
            ),
            None => None,
        };
        tracing::info!(pipeline = pipeline_name, urls = ?config.urls, "elasticsearch sink connected");
        Ok(EsSink {
            http,
            template,
            explicit,
            index_names: HashMap::new(),
            table_mappings,
            indexes: HashMap::new(),
            config: config.clone(),
            pipeline: pipeline_name.to_owned(),
            dead_letter,
            dead_letter_dirty: false,
        })
    }

    /// The index a table's documents go to.
    fn index_for(&mut self, table: &TableName) -> Result<String, SinkError> {
        if let Some(name) = self.index_names.get(table) {
            return Ok(name.clone());
        }
        let name = match self.explicit.get(table) {
            Some(name) => name.clone(),
            None => self
                .template
                .render(table)
                .map_err(|m| SinkError::fatal(format!("index for table {table}: {m}")))?,
        };
        self.index_names.insert(table.clone(), name.clone());
        Ok(name)
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.config.retry_backoff, MAX_RETRY_BACKOFF)
    }

    /// A request retried on transient failures up to `max_retries` times.
    async fn request_with_retries(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        allow_404: bool,
    ) -> Result<(StatusCode, Vec<u8>), SinkError> {
        self.request_retrying(method, path, query, body, allow_404)
            .await
            .map_err(|e| e.into_sink_error("elasticsearch"))
    }

    /// [`Self::request_with_retries`], keeping the request's own error.
    async fn request_retrying(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        allow_404: bool,
    ) -> Result<(StatusCode, Vec<u8>), RequestError> {
        let mut backoff = self.backoff();
        loop {
            match self
                .http
                .request(method, path, query, body.clone(), false, allow_404)
                .await
            {
                Err(RequestError::Transient(m)) if backoff.attempts() < self.config.max_retries => {
                    tracing::warn!(pipeline = %self.pipeline, "elasticsearch: {m}; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                answer => return answer,
            }
        }
    }

    /// Makes sure the index of `schema`'s table has a mapping for its
    /// columns (`mappings: auto`): creates the index with the derived
    /// mapping when it does not exist, and adds properties for columns
    /// that are new since. An index the sink did not create is left alone.
    async fn ensure_index(&mut self, schema: &Arc<TableSchema>) -> Result<(), SinkError> {
        let index = self.index_for(&schema.name)?;
        let mode = self
            .table_mappings
            .get(&schema.name)
            .copied()
            .unwrap_or(self.config.mappings);
        let mapped = match self.indexes.get_mut(&index) {
            Some(state) if Arc::ptr_eq(&state.seen, schema) => return Ok(()),
            Some(state) if *state.seen == **schema => {
                state.seen = schema.clone();
                return Ok(());
            }
            Some(state) => state.mapped.clone(),
            None if mode == Mappings::None => None,
            None => self.discover_mapping(&index, schema).await?,
        };
        let Some(mut mapped) = mapped else {
            self.indexes.insert(
                index,
                IndexState {
                    mapped: None,
                    seen: schema.clone(),
                },
            );
            return Ok(());
        };
        let missing: Vec<&cdc_core::Column> = schema
            .columns
            .iter()
            .filter(|c| mapping::mappable(&c.name) && !mapped.contains(&c.name))
            .collect();
        if !missing.is_empty() {
            let body = serde_json::to_vec(
                &serde_json::json!({ "properties": mapping::properties(missing.iter().copied()) }),
            )
            .map_err(|e| SinkError::fatal(format!("encoding a mapping: {e}")))?;
            let path = format!("/{index}/_mapping");
            match self
                .request_retrying(Method::Put, &path, &[], Some(body), false)
                .await
            {
                Ok(_) => {
                    tracing::info!(
                        pipeline = %self.pipeline, index = %index, columns = missing.len(),
                        "elasticsearch: added new columns to the index mapping"
                    );
                }
                Err(RequestError::Permanent(m) | RequestError::Denied(m)) => tracing::warn!(
                    pipeline = %self.pipeline, index = %index,
                    "elasticsearch: cannot add new columns to the mapping ({m}); \
                     they stay in the documents, unindexed"
                ),
                Err(e) => {
                    return Err(e.into_sink_error("elasticsearch: adding columns to a mapping"))
                }
            }
            mapped.extend(missing.iter().map(|c| c.name.clone()));
        }
        self.indexes.insert(
            index,
            IndexState {
                mapped: Some(mapped),
                seen: schema.clone(),
            },
        );
        Ok(())
    }

    /// The answer of [`Self::discover_mapping`] when the credentials may
    /// not read mappings or create indices: the index is left to the
    /// server, as with `mappings: none`.
    fn not_allowed(&self, index: &str, message: &str) -> Option<HashSet<String>> {
        tracing::warn!(
            pipeline = %self.pipeline, index,
            "elasticsearch: not allowed to read the mapping of or create the index ({message}); \
             the server's own mapping applies (grant `view_index_metadata` and `create_index` \
             on the index, or set `mappings: none` to silence this)"
        );
        None
    }

    /// The properties of `index` when this sink manages its mapping
    /// (creating the index with the mapping derived from `schema` when it
    /// does not exist); `None` for an index someone else created.
    async fn discover_mapping(
        &self,
        index: &str,
        schema: &TableSchema,
    ) -> Result<Option<HashSet<String>>, SinkError> {
        let hint = "(set `mappings: none` to leave index creation to the server)";
        let path = format!("/{index}/_mapping");
        for _ in 0..3 {
            let (status, answer) = match self
                .request_retrying(Method::Get, &path, &[], None, true)
                .await
            {
                Ok(answer) => answer,
                Err(RequestError::Denied(m)) => return Ok(self.not_allowed(index, &m)),
                Err(e) => {
                    return Err(e.into_sink_error(&format!("reading the mapping of {index} {hint}")))
                }
            };
            if status != StatusCode::NOT_FOUND {
                let answer: serde_json::Value = serde_json::from_slice(&answer).map_err(|e| {
                    SinkError::retryable(format!(
                        "unreadable mapping of {index} ({e}): {}",
                        crate::bulk::snippet(&answer)
                    ))
                })?;
                let managed = mapping::managed_properties(&answer);
                if managed.is_none() {
                    tracing::info!(
                        pipeline = %self.pipeline, index,
                        "elasticsearch: index exists and was not created by this sink; its mapping is left as it is"
                    );
                }
                return Ok(managed.map(|names| names.into_iter().collect()));
            }
            let body =
                serde_json::to_vec(&serde_json::json!({ "mappings": mapping::mappings(schema) }))
                    .map_err(|e| SinkError::fatal(format!("encoding a mapping: {e}")))?;
            match self
                .request_retrying(Method::Put, &format!("/{index}"), &[], Some(body), false)
                .await
            {
                Ok(_) => {
                    tracing::info!(
                        pipeline = %self.pipeline, index, table = %schema.name,
                        "elasticsearch: created the index with a mapping derived from the table"
                    );
                    return Ok(Some(
                        schema.columns.iter().map(|c| c.name.clone()).collect(),
                    ));
                }
                // Created meanwhile by someone else: read its mapping.
                Err(RequestError::Permanent(m))
                    if m.contains("resource_already_exists_exception") => {}
                Err(RequestError::Denied(m)) => return Ok(self.not_allowed(index, &m)),
                Err(e) => return Err(e.into_sink_error(&format!("creating index {index} {hint}"))),
            }
        }
        Err(SinkError::retryable(format!(
            "index {index} keeps appearing and disappearing while its mapping is read"
        )))
    }

    /// Stored versions and fields of the documents that partial updates in
    /// `batch` need and that no earlier change of the batch wrote.
    async fn fetch_bases(
        &mut self,
        batch: &Batch,
    ) -> Result<HashMap<DocKey, StoredDoc>, SinkError> {
        let mut touched: HashSet<DocKey> = HashSet::new();
        let mut truncated: HashSet<String> = HashSet::new();
        let mut needed: Vec<DocKey> = Vec::new();
        for event in &batch.events {
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

    async fn mget(
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

    /// Sends `actions` as one `_bulk` request, then only the items that
    /// failed with 429/5xx again (not those superseded by a later written
    /// item of their document, see [`retry_selection`]), until all are
    /// done or `max_retries` is used up (then a retryable error).
    async fn send_bulk(&mut self, actions: Vec<Action>) -> Result<(), SinkError> {
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
    async fn reject(
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
    async fn truncate(&mut self, index: &str, version: i64, table: &str) -> Result<(), SinkError> {
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

/// The actions of one batch, cut into `_bulk` requests.
struct Pending {
    actions: Vec<Action>,
    bytes: usize,
    /// Each document's content as of the latest change of this batch
    /// (`None`: deleted), the base for later partial updates.
    latest: HashMap<DocKey, Option<Vec<u8>>>,
    /// Indices truncated in this batch.
    truncated: HashSet<String>,
}

impl Sink for EsSink {
    async fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let mut last: Option<&Arc<TableSchema>> = None;
        for event in &batch.events {
            if let Event::Change(change) = event {
                if last.is_some_and(|t| Arc::ptr_eq(t, &change.table)) {
                    continue;
                }
                self.ensure_index(&change.table).await?;
                last = Some(&change.table);
            }
        }
        let bases = self.fetch_bases(batch).await?;
        let mut pending = Pending {
            actions: Vec::new(),
            bytes: 0,
            latest: HashMap::new(),
            truncated: HashSet::new(),
        };
        for event in &batch.events {
            let Event::Change(change) = event else {
                continue;
            };
            let index = self.index_for(&change.table.name)?;
            if change.op == Op::Truncate {
                self.flush(&mut pending).await?;
                let version = external_version(&change.source).map_err(SinkError::fatal)?;
                self.truncate(&index, version, &change.table.name.to_string())
                    .await?;
                pending.latest.retain(|(i, _), _| *i != index);
                pending.truncated.insert(index);
                continue;
            }
            for action in plan(change, &index, &bases, &mut pending)? {
                let len = action.encoded_len();
                if !pending.actions.is_empty()
                    && (pending.actions.len() >= self.config.batch_max_docs
                        || pending.bytes + len > self.config.batch_max_bytes)
                {
                    self.flush(&mut pending).await?;
                }
                pending.bytes += len;
                pending.actions.push(action);
            }
        }
        self.flush(&mut pending).await?;
        if self.dead_letter_dirty {
            if let Some(file) = self.dead_letter.as_mut() {
                file.flush().await.map_err(|e| {
                    SinkError::retryable(format!("writing the dead-letter file: {e}"))
                })?;
                file.sync_data().await.map_err(|e| {
                    SinkError::retryable(format!("syncing the dead-letter file: {e}"))
                })?;
            }
            self.dead_letter_dirty = false;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        if let Some(file) = self.dead_letter.as_mut() {
            file.sync_data()
                .await
                .map_err(|e| SinkError::retryable(format!("syncing the dead-letter file: {e}")))?;
        }
        Ok(())
    }
}

impl EsSink {
    async fn flush(&mut self, pending: &mut Pending) -> Result<(), SinkError> {
        if pending.actions.is_empty() {
            return Ok(());
        }
        let actions = std::mem::take(&mut pending.actions);
        pending.bytes = 0;
        self.send_bulk(actions).await
    }
}

/// The actions for one row change, recording its effect in `pending.latest`.
fn plan(
    change: &ChangeEvent,
    index: &str,
    bases: &HashMap<DocKey, StoredDoc>,
    pending: &mut Pending,
) -> Result<Vec<Action>, SinkError> {
    let schema: &TableSchema = &change.table;
    let table = schema.name.to_string();
    let version = external_version(&change.source).map_err(SinkError::fatal)?;
    let action = |kind, id: String, doc| Action {
        kind,
        index: index.to_owned(),
        id,
        version,
        doc,
        table: table.clone(),
    };
    let mut actions = Vec::new();
    match change.op {
        Op::Read | Op::Insert | Op::Update => {
            let after = change.after.as_ref().ok_or_else(|| {
                SinkError::fatal(format!(
                    "{} change of {table} without a new row",
                    change.op.code()
                ))
            })?;
            let id = document_id(schema, after).map_err(SinkError::fatal)?;
            // A key change moves the document: the old _id is deleted, and
            // a partial row takes its unchanged columns from the old one.
            let old_id = change
                .before
                .as_ref()
                .and_then(|before| document_id(schema, before).ok())
                .filter(|old| *old != id);
            let key = (index.to_owned(), id.clone());
            let base_key = match &old_id {
                Some(old) => (index.to_owned(), old.clone()),
                None => key.clone(),
            };
            let moved_already = old_id.is_some()
                && !pending.latest.contains_key(&key)
                && !pending.truncated.contains(index)
                && bases.get(&key).is_some_and(|s| s.version >= version);
            if has_unchanged_toast(after) && moved_already {
                // A replayed key change: the new _id already holds it (or
                // something newer); only make sure the old one is gone.
                if let Some(old) = old_id {
                    pending.latest.insert((index.to_owned(), old.clone()), None);
                    actions.push(action(ActionKind::Delete, old, None));
                }
                return Ok(actions);
            }
            let doc = if has_unchanged_toast(after) {
                match pending.latest.get(&base_key) {
                    Some(Some(doc)) => {
                        let fields = parse_fields(doc).map_err(SinkError::fatal)?;
                        render(schema, after, Some(&fields))
                    }
                    Some(None) => render(schema, after, None),
                    None if pending.truncated.contains(index) => render(schema, after, None),
                    None => match bases.get(&base_key) {
                        // The stored document is newer: this is a replay.
                        Some(stored) if stored.version > version => return Ok(actions),
                        Some(stored) => render(schema, after, Some(&stored.fields)),
                        None => {
                            tracing::warn!(
                                index, id = %id,
                                "update with unchanged TOAST columns of a document that is not stored; \
                                 indexing it without those columns"
                            );
                            render(schema, after, None)
                        }
                    },
                }
            } else {
                render(schema, after, None)
            };
            if let Some(old) = old_id {
                pending.latest.insert((index.to_owned(), old.clone()), None);
                actions.push(action(ActionKind::Delete, old, None));
            }
            pending.latest.insert(key, Some(doc.clone()));
            actions.push(action(ActionKind::Index, id, Some(doc)));
        }
        Op::Delete => {
            let before = change.before.as_ref().ok_or_else(|| {
                SinkError::fatal(format!(
                    "delete on {table} carries no old row (REPLICA IDENTITY NOTHING?): \
                     the document to delete is unknown"
                ))
            })?;
            let id = document_id(schema, before).map_err(SinkError::fatal)?;
            pending.latest.insert((index.to_owned(), id.clone()), None);
            actions.push(action(ActionKind::Delete, id, None));
        }
        Op::Truncate => {}
    }
    Ok(actions)
}
