//! `POST /snapshot`: asks for an incremental snapshot, as `cdc-engine
//! snapshot` does. The body is `{"tables": ["public.t", …], "where": "…"}`
//! (`where` optional); the answer is JSON: `202` with what was queued,
//! `400` for a request that cannot work (with the reason in `error`),
//! `403` when `metrics.snapshot_requests` is off, `405` for another
//! method, `503` when the database cannot be asked.

use bytes::Bytes;
use http_body_util::Full;

use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::routes::{method_not_allowed, reply, JSON};
use crate::config::parse_table_name;
use crate::engine_state::EngineState;
use crate::snapshot_request::{request_snapshot, RequestError};

/// The response to `method /snapshot` with `body` (or why it could not be
/// read).
pub async fn respond(
    method: &Method,
    body: Result<Bytes, String>,
    state: &EngineState,
) -> Response<Full<Bytes>> {
    if method != Method::POST {
        return method_not_allowed("POST");
    }
    let Some(config) = state.snapshot_requests.as_ref() else {
        return error(
            StatusCode::FORBIDDEN,
            "POST /snapshot is off: set metrics.snapshot_requests: true to accept it",
        );
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
            )
        }
    };
    let (tables, filter) = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    match request_snapshot(config, &tables, filter.as_deref()).await {
        Ok(queued) => {
            tracing::info!(
                signal = queued.signal,
                "POST /snapshot: {}",
                queued.to_text()
            );
            let mut body = queued.to_json().to_string();
            body.push('\n');
            reply(StatusCode::ACCEPTED, JSON, body)
        }
        Err(e) => {
            let status = match e {
                RequestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            };
            error(status, &state.secrets.scrub(&e.to_string()))
        }
    }
}

/// The tables and filter of a request body.
fn parse_body(body: &[u8]) -> Result<(Vec<cdc_core::TableName>, Option<String>), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the body is not JSON ({e}); send {{\"tables\": [\"schema.table\"], \"where\": \"…\"}}"
        )
    })?;
    let Some(obj) = v.as_object() else {
        return Err("the body is not a JSON object".into());
    };
    if let Some(unknown) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "tables" | "where"))
    {
        return Err(format!("unknown key `{unknown}` (known: tables, where)"));
    }
    let tables = obj
        .get("tables")
        .and_then(Value::as_array)
        .ok_or("`tables` must be an array of table names")?;
    let tables = tables
        .iter()
        .map(|t| {
            let text = t
                .as_str()
                .ok_or_else(|| format!("table {t} is not a string"))?;
            parse_table_name(text).map_err(|e| format!("table `{text}`: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let filter = match obj.get("where") {
        None | Some(Value::Null) => None,
        Some(Value::String(f)) => Some(f.clone()),
        Some(other) => return Err(format!("`where` is {other}, not SQL text")),
    };
    Ok((tables, filter))
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut body = json!({ "error": message }).to_string();
    body.push('\n');
    reply(status, JSON, body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {

    use http_body_util::BodyExt;
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn state(incremental: bool, accept: bool) -> EngineState {
        let config = crate::config::parse_config(&format!(
            "source:\n  url: postgres://u:hunter22@127.0.0.1:1/db\n  tables: [public.t]\n\
             snapshot: {{ mode: never, incremental: {{ enabled: {incremental} }} }}\n\
             sinks: [{{ type: stdout }}]\n"
        ))
        .unwrap();
        let state = crate::http::test_state(&config, CancellationToken::new());
        if accept {
            state.with_snapshot_requests(config)
        } else {
            state
        }
    }

    async fn call(state: &EngineState, method: Method, body: &str) -> (u16, Value) {
        let r = respond(&method, Ok(Bytes::from(body.to_owned())), state).await;
        let status = r.status().as_u16();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v)
    }

    #[tokio::test]
    async fn refusals_say_why_before_any_connection() {
        let on = state(true, true);
        assert_eq!(call(&on, Method::GET, "").await.0, 405);
        let (status, v) = call(&state(true, false), Method::POST, "{}").await;
        assert_eq!(status, 403);
        assert!(v["error"]
            .as_str()
            .unwrap()
            .contains("metrics.snapshot_requests"));
        for (body, says) in [
            ("nope", "not JSON"),
            ("[]", "not a JSON object"),
            (r#"{"tables": "public.t"}"#, "must be an array"),
            (
                r#"{"tables": ["public.t"], "when": 1}"#,
                "unknown key `when`",
            ),
            (r#"{"tables": ["t x"]}"#, "table `t x`"),
            (r#"{"tables": ["public.t"], "where": 5}"#, "not SQL text"),
            (r#"{"tables": []}"#, "at least one table"),
            (r#"{"tables": ["public.other"]}"#, "not in source.tables"),
        ] {
            let (status, v) = call(&on, Method::POST, body).await;
            assert_eq!(status, 400, "{body}: {v}");
            assert!(v["error"].as_str().unwrap().contains(says), "{body}: {v}");
        }
        let (status, v) = call(
            &state(false, true),
            Method::POST,
            r#"{"tables": ["public.t"]}"#,
        )
        .await;
        assert_eq!(status, 400);
        assert!(v["error"].as_str().unwrap().contains("not enabled"));
        // Nothing listens on port 1: the database cannot be asked.
        let (status, v) = call(&on, Method::POST, r#"{"tables": ["public.t"]}"#).await;
        assert_eq!(status, 503, "{v}");
        assert!(!v["error"].as_str().unwrap().contains("hunter22"));
    }
}
