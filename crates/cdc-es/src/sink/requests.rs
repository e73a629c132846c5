//! Requests other than `_bulk`, retried on transient failures.

use elasticsearch::http::{Method, StatusCode};

use crate::http::RequestError;

use super::EsSink;

impl EsSink {
    /// A request retried on transient failures up to `max_retries` times.
    /// Its error, when it gives up or the failure is not transient, keeps
    /// the kind of failure (denied, permanent) for callers that handle one;
    /// `?` turns it into a [`cdc_core::SinkError`].
    pub(super) async fn request_with_retries(
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
