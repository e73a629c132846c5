//! Opening the sink, without a search server: credentials reach the
//! server, and failures are classified (retryable vs fatal).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cdc_es::{EsSink, EsSinkConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn config(json: serde_json::Value) -> EsSinkConfig {
    serde_json::from_value(json).unwrap()
}

/// A one-request HTTP server on 127.0.0.1: answers `status` with a small
/// JSON body and returns the request head it received.
async fn one_shot(status: u16) -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let body = r#"{"version":{"number":"8.15.0"}}"#;
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&head).to_lowercase()
    });
    (url, task)
}

#[tokio::test]
async fn basic_auth_and_api_key_are_sent() {
    let (url, server) = one_shot(200).await;
    let c = config(
        serde_json::json!({"urls": [url], "auth": {"username": "cdc", "password": "s3cret"}}),
    );
    EsSink::connect(&c, "p").await.unwrap();
    // base64("cdc:s3cret")
    assert!(server
        .await
        .unwrap()
        .contains("authorization: basic y2rjonmzy3jlda=="));

    let (url, server) = one_shot(200).await;
    let c = config(serde_json::json!({"urls": [url], "auth": {"api_key": "QUJDOkRFRg=="}}));
    EsSink::connect(&c, "p").await.unwrap();
    assert!(server
        .await
        .unwrap()
        .contains("authorization: apikey qujdokrfrg=="));
}

#[tokio::test]
async fn failures_are_classified() {
    // Refused credentials: fatal.
    let (url, _server) = one_shot(401).await;
    let c = config(serde_json::json!({"urls": [url], "max_retries": 0}));
    let err = EsSink::connect(&c, "p").await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.message().contains("401"), "{err}");

    // Nobody listening: retryable.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let c = config(serde_json::json!({"urls": [format!("http://127.0.0.1:{port}")]}));
    let err = EsSink::connect(&c, "p").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");

    // A CA file that is not there: fatal, naming the key.
    let c = config(
        serde_json::json!({"urls": ["https://127.0.0.1:1"], "tls": {"ca": "/nonexistent/ca.pem"}}),
    );
    let err = EsSink::connect(&c, "p").await.unwrap_err();
    assert!(
        !err.is_retryable() && err.message().starts_with("tls.ca"),
        "{err}"
    );

    // An invalid configuration: fatal, naming the field.
    let c = config(serde_json::json!({"urls": []}));
    let err = EsSink::connect(&c, "p").await.unwrap_err();
    assert!(
        !err.is_retryable() && err.message().starts_with("urls"),
        "{err}"
    );
}
