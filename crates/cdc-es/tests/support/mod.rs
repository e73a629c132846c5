//! What the tests that drive [`cdc_es::EsSink`] with hand-made batches
//! against the servers of `scripts/test.sh` share: the servers' URLs, a
//! three-column table, change events at chosen positions, and the
//! documents of an index read back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cdc_core::{
    ChangeEvent, Column, Event, Lsn, Op, ReplicaIdentity, Row, SourceInfo, TableName, TableSchema,
    Value,
};

/// The search server's base URL from `var` (`CDC_TEST_ES_URL`: noida-db,
/// `CDC_TEST_OPENSEARCH_URL`: osmem-server); panics when it is unset.
pub fn server_url(var: &str) -> String {
    match std::env::var(var) {
        Ok(u) if !u.trim().is_empty() => u.trim().trim_end_matches('/').to_owned(),
        _ => panic!("{var} is not set: run ./scripts/test.sh (see scripts/servers/)"),
    }
}

/// A table name no other test run uses.
pub fn unique_table() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "t{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `schema.table (id int4 PRIMARY KEY, v int4, body text)`.
pub fn schema(schema: &str, table: &str) -> Arc<TableSchema> {
    let col = |name: &str, oid: u32, type_name: &str, key: bool| Column {
        name: name.into(),
        type_oid: oid,
        type_name: type_name.into(),
        type_modifier: -1,
        nullable: !key,
        is_key: key,
    };
    Arc::new(TableSchema {
        database: "db".into(),
        oid: 1,
        name: TableName::new(schema, table),
        columns: vec![
            col("id", 23, "int4", true),
            col("v", 23, "int4", false),
            col("body", 25, "text", false),
        ],
        replica_identity: ReplicaIdentity::Default,
    })
}

/// A change of `row` (`id, v, body`) committed at `lsn`, the
/// `ordinal`-th of its transaction.
pub fn change(
    table: &Arc<TableSchema>,
    op: Op,
    lsn: u64,
    ordinal: u64,
    row: Option<(i32, Value, Value)>,
) -> Event {
    let row = row.map(|(id, v, body)| Row::new(vec![Value::Int4(id), v, body]));
    let (before, after) = match op {
        Op::Delete => (row, None),
        Op::Truncate => (None, None),
        _ => (None, row),
    };
    Event::Change(ChangeEvent {
        op,
        table: table.clone(),
        before,
        after,
        source: SourceInfo {
            commit_lsn: Lsn(lsn),
            lsn: Lsn(lsn),
            ordinal,
            ..SourceInfo::default()
        },
    })
}

/// A text value.
pub fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// Every document of `index` as `(_id, _source)`, sorted by `_id`, after a
/// refresh; empty when the index does not exist.
pub async fn docs(es: &str, index: &str) -> Vec<(String, serde_json::Value)> {
    let http = reqwest::Client::new();
    let _ = http.post(format!("{es}/{index}/_refresh")).send().await;
    let r = http
        .post(format!("{es}/{index}/_search"))
        .json(&serde_json::json!({"size": 100, "version": true, "query": {"match_all": {}}}))
        .send()
        .await
        .unwrap();
    if r.status() == reqwest::StatusCode::NOT_FOUND {
        return Vec::new();
    }
    let body: serde_json::Value = r.json().await.unwrap();
    let mut out: Vec<(String, serde_json::Value)> = body["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["_id"].as_str().unwrap().to_owned(), h["_source"].clone()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
