//! The Elasticsearch ceiling: a minimal HTTP client sending the documents
//! the engine stored (same ids, versions and bodies, pre-encoded) as
//! `_bulk` requests of the sink's batch size, one at a time as the sink
//! sends them, with the sink's acknowledgement rule: every item must
//! succeed.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Pre-encoded `_bulk` bodies for one index, and the index's mapping.
pub struct Bulk {
    /// NDJSON bodies without the index name (see [`Bulk::body`]).
    docs: Vec<Vec<(String, i64, Box<RawValue>)>>,
    /// The engine index's `mappings`.
    mappings: Box<RawValue>,
    /// Documents in all.
    pub count: u64,
}

fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?)
}

async fn ok(resp: reqwest::Response, what: &str) -> Result<Bytes> {
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        bail!(
            "{what}: {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    Ok(body)
}

/// How many documents `index` holds (after a refresh).
pub async fn count(url: &str, index: &str) -> Result<u64> {
    #[derive(Deserialize)]
    struct Count {
        count: u64,
    }
    let http = client()?;
    ok(
        http.post(format!("{url}/{index}/_refresh")).send().await?,
        "refresh",
    )
    .await?;
    let body = ok(
        http.get(format!("{url}/{index}/_count")).send().await?,
        "count",
    )
    .await?;
    Ok(serde_json::from_slice::<Count>(&body)?.count)
}

/// Reads every document of `index` with its id and version, and cuts them
/// into bulks of `batch` documents.
pub async fn capture(url: &str, index: &str, batch: usize) -> Result<Bulk> {
    #[derive(Deserialize)]
    struct Page {
        #[serde(rename = "_scroll_id")]
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
        #[serde(rename = "_version")]
        version: i64,
        #[serde(rename = "_source")]
        source: Box<RawValue>,
    }
    let http = client()?;
    let body = ok(
        http.get(format!("{url}/{index}/_mapping")).send().await?,
        "mapping",
    )
    .await?;
    let mut by_index: std::collections::HashMap<String, serde_json::Value> =
        serde_json::from_slice(&body)?;
    let mappings = by_index
        .remove(index)
        .and_then(|mut v| v.get_mut("mappings").map(serde_json::Value::take))
        .context("the engine's index has no mapping")?;
    let mappings = RawValue::from_string(serde_json::to_string(&mappings)?)?;
    let query = r#"{"size":5000,"version":true,"sort":["_doc"],"query":{"match_all":{}}}"#;
    let mut page: Page = serde_json::from_slice(
        &ok(
            http.post(format!("{url}/{index}/_search?scroll=1m"))
                .header("content-type", "application/json")
                .body(query)
                .send()
                .await?,
            "search",
        )
        .await?,
    )?;
    let mut all = Vec::new();
    loop {
        if page.hits.hits.is_empty() {
            break;
        }
        all.extend(
            page.hits
                .hits
                .into_iter()
                .map(|h| (h.id, h.version, h.source)),
        );
        let Some(scroll_id) = page.scroll_id else {
            break;
        };
        let body = serde_json::json!({"scroll": "1m", "scroll_id": scroll_id}).to_string();
        page = serde_json::from_slice(
            &ok(
                http.post(format!("{url}/_search/scroll"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?,
                "scroll",
            )
            .await?,
        )?;
    }
    // In the order the engine wrote them (a scroll returns them in the
    // server's order): the row order, by key, for the snapshot's reads.
    all.sort_by(|a, b| {
        (a.1, a.0.parse::<i64>().ok(), &a.0).cmp(&(b.1, b.0.parse::<i64>().ok(), &b.0))
    });
    let count = all.len() as u64;
    let mut docs = Vec::new();
    let mut it = all.into_iter().peekable();
    while it.peek().is_some() {
        docs.push(it.by_ref().take(batch.max(1)).collect());
    }
    Ok(Bulk {
        docs,
        mappings,
        count,
    })
}

impl Bulk {
    /// The NDJSON bodies for `index`, as the sink writes its actions.
    pub fn bodies(&self, index: &str) -> Vec<Bytes> {
        self.docs
            .iter()
            .map(|docs| {
                let mut out = Vec::new();
                for (id, version, source) in docs {
                    out.extend_from_slice(b"{\"index\":{\"_index\":");
                    out.extend_from_slice(
                        serde_json::to_string(index).unwrap_or_default().as_bytes(),
                    );
                    out.extend_from_slice(b",\"_id\":");
                    out.extend_from_slice(serde_json::to_string(id).unwrap_or_default().as_bytes());
                    out.extend_from_slice(
                        format!(",\"version\":{version},\"version_type\":\"external_gte\"}}}}\n")
                            .as_bytes(),
                    );
                    out.extend_from_slice(source.get().as_bytes());
                    out.push(b'\n');
                }
                Bytes::from(out)
            })
            .collect()
    }
}

/// Creates `index` with the engine index's mapping, then sends `bodies`
/// one `_bulk` request after another, checking every item's status.
/// Returns the seconds from the first request to the last answer.
pub async fn send(url: &str, index: &str, bulk: &Bulk, bodies: &[Bytes]) -> Result<f64> {
    #[derive(Deserialize)]
    struct Response {
        items: Vec<std::collections::HashMap<String, Item>>,
    }
    #[derive(Deserialize)]
    struct Item {
        status: u16,
    }
    let start = Instant::now();
    let http = client()?;
    let create = format!("{{\"mappings\":{}}}", bulk.mappings.get());
    ok(
        http.put(format!("{url}/{index}"))
            .header("content-type", "application/json")
            .body(create)
            .send()
            .await?,
        "creating the ceiling's index",
    )
    .await?;
    let bulk_url = format!("{url}/_bulk?refresh=false");
    for body in bodies {
        let answer = ok(
            http.post(&bulk_url)
                .header("content-type", "application/x-ndjson")
                .body(body.clone())
                .send()
                .await?,
            "_bulk",
        )
        .await?;
        let response: Response = serde_json::from_slice(&answer)?;
        for item in response.items.iter().flat_map(|i| i.values()) {
            if !(200..300).contains(&item.status) {
                bail!("_bulk item failed with status {}", item.status);
            }
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Deletes `index` if it exists.
pub async fn delete_index(url: &str, index: &str) -> Result<()> {
    let _ = client()?.delete(format!("{url}/{index}")).send().await?;
    Ok(())
}
