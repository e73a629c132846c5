//! The engine's HTTP endpoint (`metrics.listen`) as the tests read it.

use std::time::Duration;

use serde_json::Value;

/// A TCP port on 127.0.0.1 that nothing listens on right now (for
/// `metrics.listen`).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// An HTTP client with a 10 s timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// `GET http://127.0.0.1:port{path}`: status and body, or `None` when
/// nothing answers.
pub async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let r = client()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// The `/status` document; panics unless it answers 200 with JSON.
pub async fn status(port: u16) -> Value {
    let (code, body) = get(port, "/status").await.expect("/status answers");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"))
}

/// The `/status` document as JSON; `None` while nothing answers there (or
/// the answer is not JSON), as during a restart.
pub async fn status_json(port: u16) -> Option<Value> {
    let (_, body) = get(port, "/status").await?;
    serde_json::from_str(&body).ok()
}
