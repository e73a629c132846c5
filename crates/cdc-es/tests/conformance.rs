//! [`EsSink`] runs the sink conformance battery
//! ([`cdc_sink_conformance::battery`]) against both servers that
//! `scripts/test.sh` starts (`CDC_TEST_ES_URL`: noida-db,
//! `CDC_TEST_OPENSEARCH_URL`: osmem-server): one index per table of the
//! checks, read back as its documents.
//!
//! Its fatal case: a document the index's mapping refuses (`body` mapped
//! as an integer, 400). Its transient fault: a [`FaultProxy`] between
//! sink and server answers every `_bulk` with 503 (a cluster that is not
//! ready) until healed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cdc_core::{Sink, SinkError, TableName, TableSchema};
use cdc_es::{EsSink, EsSinkConfig};
use cdc_sink_conformance::battery::{self, Script, Stored, Subject};
use cdc_sink_conformance::fixture::unique_name;
use es_fault_proxy::{BulkFault, FaultProxy};
use serde_json::json;
use support::{delete_index, docs, on_both_servers};

struct Search {
    es: String,
    proxy: FaultProxy,
    broken: Arc<AtomicBool>,
    /// The index prefix of this run.
    prefix: String,
}

impl Search {
    async fn new(es: &str) -> Search {
        let broken = Arc::new(AtomicBool::new(false));
        let fault = broken.clone();
        let proxy = FaultProxy::start(
            es,
            Box::new(move |_| match fault.load(Ordering::Relaxed) {
                true => BulkFault::Status(503),
                false => BulkFault::Pass,
            }),
        )
        .await;
        Search {
            es: es.to_owned(),
            proxy,
            broken,
            prefix: unique_name("cf"),
        }
    }

    fn index(&self, table: &TableName) -> String {
        format!("{}-{table}", self.prefix)
    }

    /// A sink writing to `url`.
    async fn sink(&self, url: &str) -> Result<EsSink, SinkError> {
        let config: EsSinkConfig = serde_json::from_value(json!({
            "urls": [url],
            "index": format!("{}-{{schema}}.{{table}}", self.prefix),
            "refresh": "true",
            "max_retries": 2,
            "retry_backoff": "10ms",
        }))
        .unwrap();
        assert!(config.validate().is_empty());
        EsSink::connect(&config, "conformance").await
    }
}

impl Subject for Search {
    type Sink = EsSink;

    async fn open(&mut self, _table: &TableName) -> EsSink {
        self.sink(&self.proxy.url()).await.unwrap()
    }

    async fn read(&mut self, table: &TableName) -> Stored {
        let docs = docs(&self.es, &self.index(table)).await;
        Stored::Documents(
            docs.into_iter()
                .map(|(_, source)| (source["id"].to_string(), source))
                .collect(),
        )
    }

    async fn break_destination(&mut self, _table: &TableName) {
        self.broken.store(true, Ordering::Relaxed);
    }

    async fn heal(&mut self, _table: &TableName) {
        self.broken.store(false, Ordering::Relaxed);
    }

    async fn fatal(&mut self, table: &Arc<TableSchema>) -> Result<(), SinkError> {
        let index = self.index(&table.name);
        let created = reqwest::Client::new()
            .put(format!("{}/{index}", self.es))
            .json(&json!({"mappings": {"properties": {"body": {"type": "integer"}}}}))
            .send()
            .await
            .unwrap();
        assert!(
            created.status().is_success(),
            "creating {index}: {created:?}"
        );
        let mut sink = self.sink(&self.es).await?;
        sink.write_batch(&Script::new(table).batches[0]).await
    }
}

/// Runs the battery against the server at `es`, then drops the indices.
async fn conforms(es: &str) {
    let mut search = Search::new(es).await;
    battery::run(&format!("elasticsearch sink ({es})"), &mut search).await;
    delete_index(es, &format!("{}-*", search.prefix)).await;
}

on_both_servers!(conforms: the_elasticsearch_sink_conforms_noida, the_elasticsearch_sink_conforms_osmem);
