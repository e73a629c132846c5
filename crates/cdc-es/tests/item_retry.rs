//! [`EsSink`] against the servers that `scripts/test.sh` starts
//! (`CDC_TEST_ES_URL`: noida-db, `CDC_TEST_OPENSEARCH_URL`: osmem-server),
//! behind [`FaultProxy`], which fails chosen `_bulk` items with 429 as a
//! busy cluster does: items retried after a partial failure never let an
//! older change of a document win.
//!
//! Changes past the 65 535th of one transaction share one external version
//! (`commit_lsn × 2^16 + 65535`), and `external_gte` accepts an equal
//! version, so only the order of the writes decides between them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use cdc_core::{Batch, Op, Sink, Value};
use cdc_es::{EsSink, EsSinkConfig};
use cdc_sink_conformance::fixture::{change, text, unique_name};
use es_fault_proxy::{BulkFault, BulkItem, BulkSeen, FaultProxy};
use serde_json::json;
use support::{delete_index, docs, on_both_servers};

/// Commit LSN of the test transaction.
const COMMIT_LSN: u64 = 0x3_0000_1000;
/// The version of every change of that transaction from ordinal 65535 on.
const SHARED_VERSION: i64 = ((COMMIT_LSN << 16) | 0xFFFF) as i64;

/// A sink writing to `url` with `batch_max_docs` actions per `_bulk`.
async fn sink(url: &str, batch_max_docs: usize) -> EsSink {
    let config: EsSinkConfig = serde_json::from_value(json!({
        "urls": [url],
        "index": "it-{schema}.{table}",
        "refresh": "true",
        "batch_max_docs": batch_max_docs,
        "max_retries": 3,
        "retry_backoff": "10ms",
    }))
    .unwrap();
    assert!(config.validate().is_empty());
    EsSink::connect(&config, "item_retry_test").await.unwrap()
}

/// [`FaultProxy`] in front of `es` with
/// [`reject_first_shared_version_item`], a fresh table, the index its
/// documents go to, and a [`sink`] of `batch_max_docs` writing through the
/// proxy.
async fn setup(
    es: &str,
    batch_max_docs: usize,
) -> (
    FaultProxy,
    std::sync::Arc<cdc_core::TableSchema>,
    String,
    EsSink,
) {
    let proxy = FaultProxy::start(es, reject_first_shared_version_item()).await;
    let name = unique_name("t");
    let table = cdc_sink_conformance::fixture::table("retry", &name);
    let index = format!("it-retry.{name}");
    let sink = sink(&proxy.url(), batch_max_docs).await;
    (proxy, table, index, sink)
}

/// One transaction: row 1 inserted (ordinal 10), then updated to `old`
/// (ordinal 70 000) and to `new` (ordinal 70 001), row 2 inserted
/// (ordinal 70 002). The two updates share a version.
fn transaction(table: &std::sync::Arc<cdc_core::TableSchema>) -> Batch {
    let row = |id, v, body: &str| Some((id, Value::Int4(v), text(body)));
    Batch {
        events: vec![
            change(table, Op::Insert, COMMIT_LSN, 10, row(1, 0, "first")),
            change(table, Op::Update, COMMIT_LSN, 70_000, row(1, 1, "old")),
            change(table, Op::Update, COMMIT_LSN, 70_001, row(1, 2, "new")),
            change(table, Op::Insert, COMMIT_LSN, 70_002, row(2, 0, "two")),
        ],
        checkpoint: None,
        seq: 0,
        fence: None,
    }
}

/// Rejects, once, the first item seen for document 1 with the shared
/// version: the update to `old`.
fn reject_first_shared_version_item() -> es_fault_proxy::BulkRule {
    es_fault_proxy::reject_once(|item: &BulkItem| {
        item.id == "1" && item.version == Some(SHARED_VERSION)
    })
}

/// `(_id, body)` of every item of a logged request.
fn bodies(seen: &BulkSeen) -> Vec<(String, String)> {
    seen.items
        .iter()
        .map(|i| (i.id.clone(), i.source_str("body").unwrap_or("").to_owned()))
        .collect()
}

fn expected() -> Vec<(String, serde_json::Value)> {
    vec![
        ("1".to_owned(), json!({"id": 1, "v": 2, "body": "new"})),
        ("2".to_owned(), json!({"id": 2, "v": 0, "body": "two"})),
    ]
}

/// Both updates in one `_bulk`; the server refuses `old` with 429 and
/// writes `new`. `old` must not be sent again: with the version it shares
/// with `new` it would be accepted and overwrite it.
async fn superseded_item_is_not_sent_again(es: &str) {
    let (proxy, table, index, mut sink) = setup(es, 1000).await;
    sink.write_batch(&transaction(&table)).await.unwrap();
    assert_eq!(
        docs(es, &index).await,
        expected(),
        "requests: {:?}",
        proxy.bulk_log().iter().map(bodies).collect::<Vec<_>>()
    );

    // The fault happened as intended: one request with all four items,
    // `old` rejected, and nothing sent after it.
    let log = proxy.bulk_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        bodies(&log[0]),
        [("1", "first"), ("1", "old"), ("1", "new"), ("2", "two")]
            .map(|(i, b)| (i.to_owned(), b.to_owned()))
    );
    assert_eq!(log[0].fault, BulkFault::Reject(vec![1]));
    sink.close().await.unwrap();
    delete_index(es, &index).await;
}

/// One action per `_bulk`: `old` fails alone, is retried and written, and
/// only then is `new` sent. Requests go one after another, so this holds
/// with any retry selection; a guard for the per-request scope of it.
async fn failed_item_in_its_own_request_is_retried(es: &str) {
    let (proxy, table, index, mut sink) = setup(es, 1).await;
    sink.write_batch(&transaction(&table)).await.unwrap();
    assert_eq!(docs(es, &index).await, expected());

    let log: Vec<Vec<(String, String)>> = proxy.bulk_log().iter().map(bodies).collect();
    let one = |id: &str, body: &str| vec![(id.to_owned(), body.to_owned())];
    assert_eq!(
        log,
        [
            one("1", "first"),
            one("1", "old"),
            one("1", "old"),
            one("1", "new"),
            one("2", "two")
        ]
    );
    assert_eq!(proxy.bulk_log()[1].fault, BulkFault::Reject(vec![0]));
    sink.close().await.unwrap();
    delete_index(es, &index).await;
}

on_both_servers!(superseded_item_is_not_sent_again: superseded_item_is_not_sent_again_noida, superseded_item_is_not_sent_again_osmem);
on_both_servers!(failed_item_in_its_own_request_is_retried: failed_item_in_its_own_request_is_retried_noida, failed_item_in_its_own_request_is_retried_osmem);
