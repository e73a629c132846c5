//! `type: elasticsearch` sink entries: connection, routing and batching keys.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cdc_core::settings::{deserialize_duration, Auth, Credential, Tls, TlsSupport};
use serde::Deserialize;

use crate::naming::IndexTemplate;

const fn default_batch_max_docs() -> usize {
    1000
}

const fn default_batch_max_bytes() -> usize {
    5 * 1024 * 1024
}

const fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

const fn default_max_retries() -> u32 {
    5
}

const fn default_retry_backoff() -> Duration {
    Duration::from_millis(200)
}

/// The credentials `auth` may give.
const CREDENTIALS: &[Credential] = &[Credential::UserPassword, Credential::ApiKey];

/// What the HTTP client does with `tls`: a CA to trust.
const TLS_SUPPORT: TlsSupport = TlsSupport::new("elasticsearch");

fn default_index() -> String {
    "{schema}.{table}".to_owned()
}

/// When written documents become visible to searches (`_bulk?refresh=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Refresh {
    /// `false` (default): the server refreshes on its own schedule.
    #[default]
    False,
    /// `true`: refresh the affected shards after every bulk request (costly).
    True,
    /// `wait_for`: each bulk request returns once a refresh made it visible.
    WaitFor,
}

impl Refresh {
    /// The query-string value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refresh::False => "false",
            Refresh::True => "true",
            Refresh::WaitFor => "wait_for",
        }
    }
}

/// Whether the sink gives a new index a mapping derived from the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Mappings {
    /// `auto` (default): an index that does not exist is created with one
    /// property per column, typed after the column (see the crate docs),
    /// and `dynamic: false`; columns added to the table later are added to
    /// the mapping. An existing index is never changed unless the sink
    /// created it.
    #[default]
    Auto,
    /// `none`: the sink creates and changes no index; the server creates
    /// it on the first document (index templates, dynamic mapping).
    None,
}

/// One `type: elasticsearch` entry of `sinks` (Elasticsearch 8 or
/// OpenSearch, through the documented REST API).
///
/// Read from YAML or JSON with serde, or built in code with
/// [`EsSinkConfig::new`] (the node URLs; every other key at its default)
/// and then the fields to change:
///
/// ```
/// use cdc_es::{EsSinkConfig, Refresh};
///
/// let mut config = EsSinkConfig::new(["http://127.0.0.1:9200"]);
/// config.index = "shop-{table}".into();
/// config.refresh = Refresh::WaitFor;
/// assert!(config.validate().is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EsSinkConfig {
    /// `urls`: base URLs of the cluster's nodes (`http://` or `https://`),
    /// used round-robin. Required, at least one.
    pub urls: Vec<String>,
    /// `auth`: credentials, `{ username, password }` (basic) or
    /// `{ api_key }` (its encoded form: base64 of `id:key`, what
    /// `POST /_security/api_key` returns as `encoded`); none when unset.
    #[serde(default)]
    pub auth: Option<Box<Auth>>,
    /// `tls`: `{ ca }`, a PEM file with the CA certificate(s) that signed
    /// the server's certificate; the system roots are used when unset.
    #[serde(default)]
    pub tls: Option<Box<Tls>>,
    /// `index`: index name template for tables not listed in `indices`;
    /// `{schema}` and `{table}` are replaced, then the name is lower-cased
    /// and sanitised (see the crate docs). Must contain `{table}`. Default
    /// `{schema}.{table}`.
    #[serde(default = "default_index")]
    pub index: String,
    /// `indices`: explicit index per table, `schema.table: index-name`
    /// (the name is used as given and must already be valid).
    #[serde(default)]
    pub indices: BTreeMap<String, String>,
    /// `mappings`: `auto` (default) or `none`, see [`Mappings`].
    #[serde(default)]
    pub mappings: Mappings,
    /// `table_mappings`: `schema.table: auto | none` for tables that
    /// differ from `mappings` (e.g. `none` for a table whose index an
    /// index template or its owner maps).
    #[serde(default)]
    pub table_mappings: BTreeMap<String, Mappings>,
    /// `batch_max_docs`: most actions in one `_bulk` request. Default 1000.
    #[serde(default = "default_batch_max_docs")]
    pub batch_max_docs: usize,
    /// `batch_max_bytes`: most body bytes in one `_bulk` request (a single
    /// larger document is still sent alone). Default 5 MiB (5242880).
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// `refresh`: `false` (default), `true` or `wait_for`.
    #[serde(default)]
    pub refresh: Refresh,
    /// `dead_letter`: a file that receives, as JSON lines, the actions the
    /// server rejects permanently (4xx other than version conflicts, e.g. a
    /// mapping error); without it such an action stops the pipeline.
    #[serde(default)]
    pub dead_letter: Option<PathBuf>,
    /// `request_timeout`: timeout of each HTTP request. Default `30s`.
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub request_timeout: Duration,
    /// `max_retries`: how often the items of a bulk request that failed
    /// with 429/5xx (or a request that failed to connect) are retried
    /// inside one batch write before the batch is handed back to the
    /// engine's retry. Default 5.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// `retry_backoff`: first delay of those retries, doubled each time
    /// up to 10 s. Default `200ms`.
    #[serde(
        default = "default_retry_backoff",
        deserialize_with = "deserialize_duration"
    )]
    pub retry_backoff: Duration,
}

impl EsSinkConfig {
    /// The settings for a cluster whose nodes answer at `urls` (`http://`
    /// or `https://` each), every other key at the default it has when
    /// absent from the file.
    pub fn new<I, S>(urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            urls: urls.into_iter().map(Into::into).collect(),
            auth: None,
            tls: None,
            index: default_index(),
            indices: BTreeMap::new(),
            mappings: Mappings::default(),
            table_mappings: BTreeMap::new(),
            batch_max_docs: default_batch_max_docs(),
            batch_max_bytes: default_batch_max_bytes(),
            refresh: Refresh::default(),
            dead_letter: None,
            request_timeout: default_request_timeout(),
            max_retries: default_max_retries(),
            retry_backoff: default_retry_backoff(),
        }
    }

    /// Checks the entry without touching the network or files; returns
    /// `(field, message)` pairs, empty when it is fine.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut push = |field: &str, message: String| problems.push((field.to_owned(), message));
        if self.urls.is_empty() {
            push("urls", "at least one URL is required".to_owned());
        }
        for (i, url) in self.urls.iter().enumerate() {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
                Ok(_) => push(
                    &format!("urls[{i}]"),
                    format!("`{url}` must be an http:// or https:// URL with a host"),
                ),
                Err(e) => push(&format!("urls[{i}]"), format!("`{url}` is not a URL: {e}")),
            }
        }
        if let Err(message) = IndexTemplate::parse(&self.index) {
            push("index", message);
        }
        let mut targets: BTreeMap<&str, &str> = BTreeMap::new();
        for (table, index) in &self.indices {
            let field = format!("indices.{table}");
            if crate::naming::split_table(table).is_none() {
                push(
                    &field,
                    "expected a schema-qualified table name, e.g. `public.users`".to_owned(),
                );
            }
            if let Err(message) = crate::naming::check_index_name(index) {
                push(&field, message);
            }
            if let Some(first) = targets.insert(index.as_str(), table.as_str()) {
                push(
                    &field,
                    format!("index `{index}` is already used by `{first}`: one index per table"),
                );
            }
        }
        for table in self.table_mappings.keys() {
            if crate::naming::split_table(table).is_none() {
                push(
                    &format!("table_mappings.{table}"),
                    "expected a schema-qualified table name, e.g. `public.users`".to_owned(),
                );
            }
        }
        if self.batch_max_docs == 0 {
            push("batch_max_docs", "must be at least 1".to_owned());
        }
        if self.batch_max_bytes < 1024 {
            push("batch_max_bytes", "must be at least 1024".to_owned());
        }
        if self.request_timeout < Duration::from_millis(1) {
            push("request_timeout", "must be greater than zero".to_owned());
        }
        if self.retry_backoff < Duration::from_millis(1) {
            push("retry_backoff", "must be at least 1ms".to_owned());
        }
        if matches!(&self.dead_letter, Some(p) if p.as_os_str().is_empty()) {
            push("dead_letter", "must not be empty".to_owned());
        }
        if let Some(auth) = &self.auth {
            if matches!(&auth.api_key, Some(k) if k.expose().trim().is_empty()) {
                push("auth.api_key", "must not be empty".to_owned());
            }
        }
        if let Some(tls) = &self.tls {
            if matches!(&tls.ca, Some(p) if p.as_os_str().is_empty()) {
                push("tls.ca", "must not be empty".to_owned());
            }
        }
        if let Some(auth) = &self.auth {
            problems.extend(auth.check(CREDENTIALS, &[]));
        }
        if let Some(tls) = &self.tls {
            problems.extend(tls.check(TLS_SUPPORT));
        }
        problems
    }
}

impl cdc_core::SinkSettings for EsSinkConfig {
    fn problems(&self) -> Vec<cdc_core::settings::Problem> {
        self.validate()
    }

    /// `auth.password`, `auth.api_key`.
    fn secrets(&self) -> Vec<&str> {
        cdc_core::section_secrets(self.auth.as_deref(), self.tls.as_deref())
    }

    /// `urls` (`https://user:password@host`).
    fn urls(&self) -> Vec<&str> {
        self.urls.iter().map(String::as_str).collect()
    }

    fn open<'a>(
        &'a self,
        pipeline: &'a str,
    ) -> cdc_core::BoxFuture<'a, Result<Box<dyn cdc_core::DynSink>, cdc_core::SinkError>> {
        cdc_core::open_sink(crate::EsSink::connect(self, pipeline))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn config(json: &str) -> EsSinkConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults() {
        let c = config(r#"{"urls": ["http://127.0.0.1:9200"]}"#);
        assert_eq!(c.index, "{schema}.{table}");
        assert_eq!(c.batch_max_docs, 1000);
        assert_eq!(c.batch_max_bytes, 5 * 1024 * 1024);
        assert_eq!(c.refresh, Refresh::False);
        assert_eq!(c.mappings, Mappings::Auto);
        assert!(c.validate().is_empty());
        let c = config(
            r#"{"urls": ["http://127.0.0.1:9200"], "mappings": "none",
                "table_mappings": {"public.a": "auto", "b": "none"}}"#,
        );
        assert_eq!(c.mappings, Mappings::None);
        assert_eq!(c.table_mappings["public.a"], Mappings::Auto);
        let fields: Vec<String> = c.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["table_mappings.b"]);
    }

    #[test]
    fn new_gives_the_defaults_of_a_file_that_names_only_the_urls() {
        let parsed = config(r#"{"urls": ["http://a:9200", "http://b:9200"]}"#);
        assert_eq!(
            EsSinkConfig::new(["http://a:9200", "http://b:9200"]),
            parsed
        );
    }

    #[test]
    fn small_enough_for_the_engine_enum() {
        // The engine holds sink configs in one enum; clippy's
        // large_enum_variant limit is 200 bytes.
        assert!(std::mem::size_of::<EsSinkConfig>() < 200);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let r: Result<EsSinkConfig, _> = serde_json::from_str(r#"{"urls": [], "nope": 1}"#);
        assert!(r.is_err());
    }

    #[test]
    fn findings_name_their_field() {
        let c = config(
            r#"{"urls": ["ftp://x", "::"], "auth": {"username": "u", "api_key": "k"},
                "index": "{schema}", "indices": {"users": "A*", "public.b": "A*"},
                "batch_max_docs": 0, "refresh": "wait_for"}"#,
        );
        let fields: Vec<String> = c.validate().into_iter().map(|(f, _)| f).collect();
        for expected in [
            "urls[0]",
            "urls[1]",
            "auth.password",
            "auth",
            "index",
            "indices.users",
            "indices.public.b",
            "batch_max_docs",
        ] {
            assert!(
                fields.iter().any(|f| f == expected),
                "{expected} missing in {fields:?}"
            );
        }
    }
}
