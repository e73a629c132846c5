//! Which path answers what.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use super::status_doc::status_document;
use crate::engine_state::{EngineState, Health};
use crate::metrics::exposition::CONTENT_TYPE as METRICS_CONTENT_TYPE;
use crate::metrics::render_metrics;

pub(super) const JSON: &str = "application/json";
pub(super) const TEXT: &str = "text/plain; charset=utf-8";

/// The response to `req`: `POST /snapshot` ([`super::snapshot`]), or
/// what [`respond`] says.
pub async fn handle(req: Request<Incoming>, state: &EngineState) -> Response<Full<Bytes>> {
    if req.uri().path() == "/snapshot" {
        let method = req.method().clone();
        let body = Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| e.to_string());
        return super::snapshot::respond(&method, body, state).await;
    }
    respond(req.method(), req.uri().path(), state)
}

/// The longest request body read, in bytes.
const MAX_BODY: usize = 64 * 1024;

/// The response to `method path`: `GET` (or `HEAD`) of `/metrics`,
/// `/status` or `/healthz`; `405` for other methods on those paths; `404`
/// for any other path.
pub fn respond(method: &Method, path: &str, state: &EngineState) -> Response<Full<Bytes>> {
    if !matches!(path, "/metrics" | "/status" | "/healthz") {
        return reply(StatusCode::NOT_FOUND, TEXT, "not found\n".into());
    }
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    match path {
        "/metrics" => reply(StatusCode::OK, METRICS_CONTENT_TYPE, render_metrics(state)),
        "/status" => {
            let mut body = status_document(state).to_string();
            body.push('\n');
            reply(StatusCode::OK, JSON, body)
        }
        _ => healthz(state),
    }
}

fn healthz(state: &EngineState) -> Response<Full<Bytes>> {
    let phase = state.phase_label();
    match state.health() {
        Health::Ok => reply(StatusCode::OK, TEXT, format!("ok: {phase}\n")),
        Health::Stopping => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            format!("stopping: {phase}\n"),
        ),
        Health::Failed => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            format!(
                "failed: {}\n",
                state.failure().unwrap_or_default().replace('\n', " ")
            ),
        ),
    }
}

/// `405 Method Not Allowed`, naming the methods the path takes.
pub(super) fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = reply(
        StatusCode::METHOD_NOT_ALLOWED,
        TEXT,
        "method not allowed\n".into(),
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

pub(super) fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {

    use cdc_core::Phase;
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn state(shutdown: &CancellationToken) -> EngineState {
        let config = crate::config::parse_config(
            "source:\n  url: postgres://u:hunter22@h/db\n  tables: [public.t]\nsinks: [{ type: stdout }]\n",
        )
        .unwrap();
        crate::http::test_state(&config, shutdown.clone())
    }

    async fn body(r: Response<Full<Bytes>>) -> String {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn paths_methods_and_health() {
        let shutdown = CancellationToken::new();
        let st = state(&shutdown);
        assert_eq!(respond(&Method::GET, "/nope", &st).status(), 404);
        let r = respond(&Method::POST, "/metrics", &st);
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
        let r = respond(&Method::GET, "/metrics", &st);
        assert_eq!(r.headers()[CONTENT_TYPE], METRICS_CONTENT_TYPE);
        assert!(body(r)
            .await
            .contains("cdc_sink_events_total{sink=\"sinks[0]\",type=\"stdout\"} 0\n"));

        st.source.set_phase(Phase::Standby);
        let r = respond(&Method::GET, "/healthz", &st);
        assert_eq!(r.status(), 200);
        assert_eq!(body(r).await, "ok: standby\n");

        shutdown.cancel();
        assert_eq!(respond(&Method::GET, "/healthz", &st).status(), 503);

        st.set_failed("cannot connect to postgres://u:hunter22@h/db".into());
        let r = respond(&Method::GET, "/healthz", &st);
        assert_eq!(r.status(), 503);
        assert_eq!(
            body(r).await,
            "failed: cannot connect to postgres://u:***@h/db\n"
        );
        let status: serde_json::Value =
            serde_json::from_str(&body(respond(&Method::GET, "/status", &st)).await).unwrap();
        assert_eq!(status["phase"], "failed");
        assert_eq!(status["source_phase"], "standby");
        assert_eq!(status["error"], "cannot connect to postgres://u:***@h/db");
        assert_eq!(status["sinks"][0]["state"], "running");
    }

    #[tokio::test]
    async fn incremental_snapshots_in_status_and_metrics() {
        let st = state(&CancellationToken::new());
        let metrics = body(respond(&Method::GET, "/metrics", &st)).await;
        assert!(!metrics.contains("cdc_incremental"), "shown before any");
        let t = cdc_core::TableName::new("public", "t");
        let mut p = cdc_core::IncrementalProgress::new(4, cdc_core::IncrementalState::Pending);
        p.filter = Some("id > 1".into());
        st.source.incremental_snapshot(&t, p);
        st.source
            .incremental_chunk(&t, 4, 100, Some(vec!["100".into()]), false);
        let metrics = body(respond(&Method::GET, "/metrics", &st)).await;
        for line in [
            "cdc_incremental_snapshot_rows_total{table=\"public.t\"} 100\n",
            "cdc_incremental_snapshot_chunks_total{table=\"public.t\"} 1\n",
            "cdc_incremental_snapshot_state{table=\"public.t\",state=\"running\"} 1\n",
            "cdc_incremental_snapshot_state{table=\"public.t\",state=\"paused\"} 0\n",
        ] {
            assert!(metrics.contains(line), "{line} not in\n{metrics}");
        }
        let status: serde_json::Value =
            serde_json::from_str(&body(respond(&Method::GET, "/status", &st)).await).unwrap();
        assert_eq!(
            status["incremental_snapshots"],
            serde_json::json!([{
                "table": "public.t", "snapshot": 4, "state": "running", "chunks": 1,
                "rows": 100, "last_key": ["100"], "where": "id > 1", "error": null
            }])
        );
    }
}
