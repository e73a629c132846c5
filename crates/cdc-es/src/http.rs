//! The HTTP client: transport, authentication, TLS, and the classification
//! of whole-request failures.

use std::time::Duration;

use cdc_core::SinkError;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use elasticsearch::http::transport::{MultiNodeConnectionPool, TransportBuilder};
use elasticsearch::http::{Method, StatusCode, Url};
use elasticsearch::Elasticsearch;

use crate::config::EsSinkConfig;

/// A request that got no usable answer.
#[derive(Debug)]
pub(crate) enum RequestError {
    /// Worth trying again: connection failure, timeout, 429, 5xx.
    Transient(String),
    /// Trying again will not help: 4xx other than 429, 401 and 403, bad
    /// response.
    Permanent(String),
    /// 401 or 403: the credentials may not do this.
    Denied(String),
}

impl RequestError {
    pub(crate) fn into_sink_error(self, what: &str) -> SinkError {
        match self {
            RequestError::Transient(m) => SinkError::retryable(format!("{what}: {m}")),
            RequestError::Permanent(m) | RequestError::Denied(m) => {
                SinkError::fatal(format!("{what}: {m}"))
            }
        }
    }
}

/// A request's failure as a sink error, named `elasticsearch`: transient
/// ones retryable, the others fatal.
impl From<RequestError> for SinkError {
    fn from(e: RequestError) -> Self {
        e.into_sink_error("elasticsearch")
    }
}

/// The cluster's REST API.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: Elasticsearch,
    timeout: Duration,
}

impl Http {
    /// Builds the client; reads the CA file. Does not connect.
    pub(crate) fn new(config: &EsSinkConfig) -> Result<Self, SinkError> {
        let mut urls = Vec::with_capacity(config.urls.len());
        for url in &config.urls {
            let parsed = Url::parse(url)
                .map_err(|e| SinkError::fatal(format!("urls: `{url}` is not a URL: {e}")))?;
            urls.push(parsed);
        }
        if urls.is_empty() {
            return Err(SinkError::fatal("urls: at least one URL is required"));
        }
        let pool = MultiNodeConnectionPool::round_robin(urls, None);
        let timeout = config.request_timeout.max(Duration::from_millis(1));
        let mut builder = TransportBuilder::new(pool).timeout(timeout);
        if let Some(auth) = &config.auth {
            if let (Some(user), Some(password)) = (&auth.username, &auth.password) {
                builder = builder.auth(Credentials::Basic(
                    user.clone(),
                    password.expose().to_owned(),
                ));
            } else if let Some(key) = &auth.api_key {
                builder = builder.auth(Credentials::EncodedApiKey(key.expose().trim().to_owned()));
            }
        }
        if let Some(path) = config.tls.as_ref().and_then(|t| t.ca.as_ref()) {
            let pem = std::fs::read(path).map_err(|e| {
                SinkError::fatal(format!("tls.ca: cannot read {}: {e}", path.display()))
            })?;
            let cert = Certificate::from_pem(&pem).map_err(|e| {
                SinkError::fatal(format!(
                    "tls.ca: {} is not a PEM certificate: {e}",
                    path.display()
                ))
            })?;
            builder = builder.cert_validation(CertificateValidation::Full(cert));
        }
        let transport = builder
            .build()
            .map_err(|e| SinkError::fatal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            client: Elasticsearch::new(transport),
            timeout,
        })
    }

    /// Sends a request and returns the status and body of a 2xx answer, or
    /// of a 404 when `allow_404`.
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        ndjson: bool,
        allow_404: bool,
    ) -> Result<(StatusCode, Vec<u8>), RequestError> {
        let mut headers = HeaderMap::new();
        // Plain media types: OpenSearch refuses the ES 8 compatibility ones.
        let content_type = if ndjson {
            "application/x-ndjson"
        } else {
            "application/json"
        };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        let response = self
            .client
            .send(method, path, headers, Some(query), body, Some(self.timeout))
            .await
            .map_err(|e| RequestError::Transient(format!("request to {path} failed: {e}")))?;
        let status = response.status_code();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| RequestError::Transient(format!("reading the answer to {path}: {e}")))?;
        let body = bytes.to_vec();
        if status.is_success() || (allow_404 && status == StatusCode::NOT_FOUND) {
            return Ok((status, body));
        }
        let message = format!("{path} answered {status}: {}", crate::bulk::snippet(&body));
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(RequestError::Transient(message))
        } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            Err(RequestError::Denied(message))
        } else if status == StatusCode::PAYLOAD_TOO_LARGE {
            Err(RequestError::Permanent(format!(
                "{message} (lower `batch_max_bytes`)"
            )))
        } else {
            Err(RequestError::Permanent(message))
        }
    }
}
