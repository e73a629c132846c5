//! Requests other than `_bulk`, retried on transient failures.

use cdc_core::SinkError;
use elasticsearch::http::{Method, StatusCode};

use crate::http::RequestError;

use super::EsSink;

impl EsSink {
    /// A request retried on transient failures up to `max_retries` times.
    pub(super) async fn request_with_retries(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        allow_404: bool,
    ) -> Result<(StatusCode, Vec<u8>), SinkError> {
        self.request_retrying(method, path, query, body, allow_404)
            .await
            .map_err(|e| e.into_sink_error("elasticsearch"))
    }

    /// [`Self::request_with_retries`], keeping the request's own error.
    pub(super) async fn request_retrying(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        allow_404: bool,
    ) -> Result<(StatusCode, Vec<u8>), RequestError> {
        let mut backoff = self.backoff();
        loop {
            match self
                .http
                .request(method, path, query, body.clone(), false, allow_404)
                .await
            {
                Err(RequestError::Transient(m)) if backoff.attempts() < self.config.max_retries => {
                    tracing::warn!(pipeline = %self.pipeline, "elasticsearch: {m}; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                answer => return answer,
            }
        }
    }
}
