//! [`EsSink`]: change events to `_bulk` requests, durable on return.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cdc_core::settings::no_problems;
use cdc_core::{Backoff, Batch, ChangeEvent, Event, Op, Sink, SinkError, TableName, TableSchema};
use elasticsearch::http::Method;
use tokio::io::AsyncWriteExt;

use crate::bulk::{Action, ActionKind};
use crate::config::{EsSinkConfig, Mappings};
use crate::document::{has_unchanged_toast, parse_fields, render, StoredFields};
use crate::http::Http;
use crate::naming::{document_id, split_table, IndexTemplate};
use crate::version::external_version;

mod bulk_send;
mod index_setup;
mod requests;
mod stored;

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
        no_problems(config.validate()).map_err(SinkError::fatal)?;
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
        Sink::write_batches(self, &[batch]).await
    }

    /// A group of batches is written as one: their actions fill `_bulk`
    /// requests up to `batch_max_docs` / `batch_max_bytes` across the
    /// batches' boundaries, and the group counts as written once every
    /// item of it succeeded.
    async fn write_batches(&mut self, batches: &[&Batch]) -> Result<(), SinkError> {
        let events = || batches.iter().flat_map(|b| &b.events);
        let mut last: Option<&Arc<TableSchema>> = None;
        for event in events() {
            if let Event::Change(change) = event {
                if last.is_some_and(|t| Arc::ptr_eq(t, &change.table)) {
                    continue;
                }
                self.ensure_index(&change.table).await?;
                last = Some(&change.table);
            }
        }
        let bases = self.fetch_bases(batches).await?;
        let mut pending = Pending {
            actions: Vec::new(),
            bytes: 0,
            latest: HashMap::new(),
            truncated: HashSet::new(),
        };
        for event in events() {
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
