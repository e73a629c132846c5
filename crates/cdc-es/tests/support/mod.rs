//! What the tests that drive [`cdc_es::EsSink`] with hand-made batches
//! against the servers of `scripts/test.sh` share: the servers' URLs and
//! the documents of an index read back, an index deleted. The hand-made
//! tables and changes come from [`cdc_sink_conformance::fixture`].

/// One test per search server: `on_both_servers!(body: a_noida, a_osmem)`
/// runs `body(&url)` against noida-db (`CDC_TEST_ES_URL`) as `a_noida` and
/// against osmem-server (`CDC_TEST_OPENSEARCH_URL`) as `a_osmem`.
macro_rules! on_both_servers {
    ($body:ident: $noida:ident, $osmem:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $noida() {
            $body(&$crate::support::server_url("CDC_TEST_ES_URL")).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $osmem() {
            $body(&$crate::support::server_url("CDC_TEST_OPENSEARCH_URL")).await;
        }
    };
}
pub(crate) use on_both_servers;

/// The search server's base URL from `var` (`CDC_TEST_ES_URL`: noida-db,
/// `CDC_TEST_OPENSEARCH_URL`: osmem-server); panics when it is unset.
pub fn server_url(var: &str) -> String {
    match std::env::var(var) {
        Ok(u) if !u.trim().is_empty() => u.trim().trim_end_matches('/').to_owned(),
        _ => panic!("{var} is not set: run ./scripts/test.sh (see scripts/servers/)"),
    }
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

/// Deletes `index` (or the indices a pattern such as `prefix-*` matches;
/// best effort: a test's cleanup).
pub async fn delete_index(es: &str, index: &str) {
    let _ = reqwest::Client::new()
        .delete(format!("{es}/{index}"))
        .send()
        .await;
}
