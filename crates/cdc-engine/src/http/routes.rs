//! Which path answers what.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};

use super::status_doc::status_document;
use crate::engine_state::{EngineState, Health};
use crate::metrics::exposition::CONTENT_TYPE as METRICS_CONTENT_TYPE;
use crate::metrics::render_metrics;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// The response to `method path`: `GET` (or `HEAD`) of `/metrics`,
/// `/status` or `/healthz`; `405` for other methods on those paths; `404`
/// for any other path.
pub fn respond(method: &Method, path: &str, state: &EngineState) -> Response<Full<Bytes>> {
    if !matches!(path, "/metrics" | "/status" | "/healthz") {
        return reply(StatusCode::NOT_FOUND, TEXT, "not found\n".into());
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "method not allowed\n".into(),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
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

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
