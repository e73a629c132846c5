//! Index creation and mapping discovery before a table's first write.

use std::collections::HashSet;
use std::sync::Arc;

use cdc_core::{SinkError, TableSchema};
use elasticsearch::http::{Method, StatusCode};

use crate::config::Mappings;
use crate::http::RequestError;
use crate::mapping;

use super::{EsSink, IndexState};

impl EsSink {
    /// Makes sure the index of `schema`'s table has a mapping for its
    /// columns (`mappings: auto`): creates the index with the derived
    /// mapping when it does not exist, and adds properties for columns
    /// that are new since. An index the sink did not create is left alone.
    pub(super) async fn ensure_index(
        &mut self,
        schema: &Arc<TableSchema>,
    ) -> Result<(), SinkError> {
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
                .request_with_retries(Method::Put, &path, &[], Some(body), false)
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
    pub(super) fn not_allowed(&self, index: &str, message: &str) -> Option<HashSet<String>> {
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
    pub(super) async fn discover_mapping(
        &self,
        index: &str,
        schema: &TableSchema,
    ) -> Result<Option<HashSet<String>>, SinkError> {
        let hint = "(set `mappings: none` to leave index creation to the server)";
        let path = format!("/{index}/_mapping");
        for _ in 0..3 {
            let (status, answer) = match self
                .request_with_retries(Method::Get, &path, &[], None, true)
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
                .request_with_retries(Method::Put, &format!("/{index}"), &[], Some(body), false)
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
}
