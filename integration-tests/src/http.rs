//! Reading the engine's HTTP endpoint (`metrics.listen`).

use std::time::Duration;

use serde_json::Value;

/// A TCP port nothing listens on right now (for `metrics.listen`).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local address").port()
}

/// `GET http://127.0.0.1:{port}/status` as JSON; `None` while nothing
/// answers there (or the answer is not JSON).
pub async fn status_json(port: u16) -> Option<Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok()?;
    let r = client
        .get(format!("http://127.0.0.1:{port}/status"))
        .send()
        .await
        .ok()?;
    serde_json::from_str(&r.text().await.ok()?).ok()
}
