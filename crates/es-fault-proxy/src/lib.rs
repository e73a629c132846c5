//! # es-fault-proxy
//!
//! A test helper: an HTTP/1.1 proxy on 127.0.0.1 in front of an
//! Elasticsearch-API server (the noida-db and osmem-server instances that
//! `scripts/test.sh` starts) that injects the failures a real cluster
//! produces under load, so the Elasticsearch sink's handling of them can be
//! tested against a real server.
//!
//! Every request is relayed (method, path and query, headers other than
//! hop-by-hop ones and `accept-encoding`, body; the answer's status,
//! headers and body), one at a time per connection, with keep-alive.
//! Request bodies may come with `content-length` or chunked; the answer
//! is read whole from the server (whatever its framing) and written back
//! with a `content-length`.
//!
//! `_bulk` requests (`POST`/`PUT` `/_bulk` or `/{index}/_bulk`) are split
//! into their items ([`BulkItem`]), and the [`BulkRule`] decides
//! ([`BulkFault`]): relay unchanged, answer the whole request with a
//! status (nothing reaches the server), or reject chosen items with
//! `429 es_rejected_execution_exception`. Rejected items' lines are taken
//! out of the body, the rest is forwarded, and a 429 item is put back into
//! the server's `items` at each rejected position, with `errors: true`: the
//! client sees what a cluster whose write queue refused those items sends.
//! Every `_bulk` request is recorded ([`FaultProxy::bulk_log`]).
//!
//! A request the rule cannot see into (a body that is not NDJSON, or
//! compressed) is relayed unchanged; when the server's answer to the
//! forwarded items does not match them, the proxy answers 502 with the
//! reason, so a test fails visibly instead of passing on a half-injected
//! fault.

mod bulk;
mod http1;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub use bulk::BulkItem;
use http1::{write_response, Request, RequestReader};

/// What to do with one `_bulk` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkFault {
    /// Relay it unchanged.
    Pass,
    /// Answer the whole request with this status and an error body; nothing
    /// reaches the server.
    Status(u16),
    /// Reject the items at these positions with 429; forward the others.
    Reject(Vec<usize>),
}

/// Decides about each `_bulk` request from its items. Called once per
/// request, in the order the proxy reads them.
pub type BulkRule = Box<dyn FnMut(&[BulkItem]) -> BulkFault + Send>;

/// Which requests to refuse with 403 (from their method and path), as for
/// credentials without the privilege.
pub type ForbidRule = Box<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// One `_bulk` request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct BulkSeen {
    /// Its items, in order.
    pub items: Vec<BulkItem>,
    /// What the rule decided.
    pub fault: BulkFault,
}

impl BulkSeen {
    /// Positions of the items the client saw fail: the rejected ones, or
    /// all of them for a [`BulkFault::Status`].
    pub fn failed(&self) -> Vec<usize> {
        match &self.fault {
            BulkFault::Pass => Vec::new(),
            BulkFault::Status(_) => (0..self.items.len()).collect(),
            BulkFault::Reject(positions) => positions.clone(),
        }
    }
}

/// A rule that rejects the first item matching `matches`, the first time
/// one is seen, and passes everything else.
pub fn reject_once(matches: impl Fn(&BulkItem) -> bool + Send + 'static) -> BulkRule {
    let mut done = false;
    Box::new(move |items: &[BulkItem]| {
        if done {
            return BulkFault::Pass;
        }
        match items.iter().position(&matches) {
            Some(i) => {
                done = true;
                BulkFault::Reject(vec![i])
            }
            None => BulkFault::Pass,
        }
    })
}

/// What the connections share.
struct Shared {
    upstream: String,
    client: reqwest::Client,
    rule: Mutex<BulkRule>,
    forbid: Option<ForbidRule>,
    log: Mutex<Vec<BulkSeen>>,
}

/// The proxy; it stops (and drops its connections) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 (an ephemeral port) in front of
    /// `upstream` (`http://host:port`), with `rule` for `_bulk` requests.
    ///
    /// # Panics
    /// When it cannot listen on 127.0.0.1 (a test helper: the test fails).
    pub async fn start(upstream: &str, rule: BulkRule) -> FaultProxy {
        Self::start_with(upstream, rule, None).await
    }

    /// [`FaultProxy::start`], also answering 403 `security_exception` to
    /// every request `forbid(method, path)` picks.
    ///
    /// # Panics
    /// When it cannot listen on 127.0.0.1 or build its HTTP client.
    pub async fn start_with(upstream: &str, rule: BulkRule, forbid: Option<ForbidRule>) -> Self {
        #[allow(clippy::expect_used)]
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("es-fault-proxy: bind 127.0.0.1");
        #[allow(clippy::expect_used)]
        let addr = listener.local_addr().expect("es-fault-proxy: address");
        #[allow(clippy::expect_used)]
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("es-fault-proxy: HTTP client");
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client,
            rule: Mutex::new(rule),
            forbid,
            log: Mutex::new(Vec::new()),
        });
        let state = shared.clone();
        let task = tokio::spawn(async move {
            // Owned here, so aborting this task ends every connection.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((socket, _)) = accepted {
                            connections.spawn(serve(socket, state.clone()));
                        }
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        FaultProxy { addr, shared, task }
    }

    /// `http://127.0.0.1:port`: the URL to give the client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every `_bulk` request seen so far, in order.
    pub fn bulk_log(&self) -> Vec<BulkSeen> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one client connection until it closes or breaks.
async fn serve(socket: TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = socket.into_split();
    let mut reader = RequestReader::new(read);
    while let Ok(Some(request)) = reader.next().await {
        let close = request.close;
        let head = request.method.eq_ignore_ascii_case("HEAD");
        let answer = answer(&shared, request).await;
        let head_only = head.then_some(answer.head_length);
        if write_response(
            &mut write,
            answer.status,
            &answer.headers,
            &answer.body,
            head_only,
            close,
        )
        .await
        .is_err()
            || close
        {
            return;
        }
    }
}

/// A response for the client.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The `content-length` of an answer to HEAD.
    head_length: u64,
}

impl Answer {
    /// A JSON error answer made by the proxy.
    fn error(status: u16, kind: &str, reason: &str) -> Answer {
        let body = serde_json::json!({
            "error": {"type": kind, "reason": reason},
            "status": status
        });
        Answer {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            head_length: 0,
        }
    }
}

/// Headers that describe one hop, not the message.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "host"
    )
}

async fn answer(shared: &Shared, request: Request) -> Answer {
    let path = request.path().to_owned();
    if shared
        .forbid
        .as_ref()
        .is_some_and(|forbid| forbid(&request.method, &path))
    {
        return Answer::error(
            403,
            "security_exception",
            "action is unauthorized (es-fault-proxy)",
        );
    }
    let bulk = (path == "/_bulk" || path.ends_with("/_bulk"))
        && matches!(request.method.as_str(), "POST" | "PUT")
        && request.header("content-encoding").is_none();
    if !bulk {
        return relay(shared, &request, request.body.clone()).await;
    }
    let default_index = path
        .strip_suffix("/_bulk")
        .map(|p| p.trim_start_matches('/'))
        .filter(|p| !p.is_empty());
    let Ok(items) = bulk::split(&request.body, default_index) else {
        return relay(shared, &request, request.body.clone()).await;
    };
    let fault = {
        let mut rule = shared.rule.lock().unwrap_or_else(PoisonError::into_inner);
        match rule(&items) {
            BulkFault::Reject(mut positions) => {
                positions.retain(|p| *p < items.len());
                positions.sort_unstable();
                positions.dedup();
                if positions.is_empty() {
                    BulkFault::Pass
                } else {
                    BulkFault::Reject(positions)
                }
            }
            other => other,
        }
    };
    shared
        .log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(BulkSeen {
            items: items.clone(),
            fault: fault.clone(),
        });
    match fault {
        BulkFault::Pass => relay(shared, &request, request.body.clone()).await,
        BulkFault::Status(status) => Answer::error(
            status,
            "es_fault_proxy_exception",
            "the whole _bulk request failed (injected by es-fault-proxy)",
        ),
        BulkFault::Reject(positions) => {
            let mut rejected = vec![false; items.len()];
            for p in positions {
                rejected[p] = true;
            }
            reject_items(shared, &request, &items, &rejected).await
        }
    }
}

/// Forwards the items not rejected and splices 429s into the answer.
async fn reject_items(
    shared: &Shared,
    request: &Request,
    items: &[BulkItem],
    rejected: &[bool],
) -> Answer {
    let body = bulk::forwarded_body(items, rejected);
    let upstream = if body.is_empty() {
        None
    } else {
        let answer = relay(shared, request, body).await;
        if !(200..300).contains(&answer.status) {
            // The whole request failed: the client sees that.
            return answer;
        }
        if answer
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-encoding"))
        {
            return Answer::error(
                502,
                "es_fault_proxy_exception",
                "es-fault-proxy: the server compressed its _bulk answer",
            );
        }
        Some(answer)
    };
    match bulk::splice(
        items,
        rejected,
        upstream.as_ref().map(|a| a.body.as_slice()),
    ) {
        Ok(body) => Answer {
            status: 200,
            headers: upstream.map(|a| a.headers).unwrap_or_else(|| {
                vec![("content-type".to_owned(), "application/json".to_owned())]
            }),
            body,
            head_length: 0,
        },
        Err(reason) => Answer::error(
            502,
            "es_fault_proxy_exception",
            &format!("es-fault-proxy: {reason}"),
        ),
    }
}

/// Sends the request with `body` to the server and reads its whole answer;
/// a 502 answer when the server cannot be reached.
async fn relay(shared: &Shared, request: &Request, body: Vec<u8>) -> Answer {
    let Ok(method) = reqwest::Method::from_bytes(request.method.as_bytes()) else {
        return Answer::error(400, "es_fault_proxy_exception", "bad method");
    };
    let mut outgoing = shared
        .client
        .request(method, format!("{}{}", shared.upstream, request.target))
        .body(body);
    for (name, value) in &request.headers {
        if !hop_by_hop(name) && name != "accept-encoding" {
            outgoing = outgoing.header(name, value);
        }
    }
    let response = match outgoing.send().await {
        Ok(r) => r,
        Err(e) => {
            return Answer::error(
                502,
                "es_fault_proxy_exception",
                &format!("es-fault-proxy: the server did not answer: {e}"),
            )
        }
    };
    let status = response.status().as_u16();
    // For HEAD the header tells the length a GET would have.
    let head_length = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(name, _)| !hop_by_hop(name.as_str()))
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
        .collect();
    match response.bytes().await {
        Ok(body) => Answer {
            status,
            headers,
            body: body.to_vec(),
            head_length,
        },
        Err(e) => Answer::error(
            502,
            "es_fault_proxy_exception",
            &format!("es-fault-proxy: reading the server's answer: {e}"),
        ),
    }
}
