//! The `type: nats` sink entry of a pipeline file.

use std::time::Duration;

use cdc_core::settings::{deserialize_duration, Auth, Credential, Tls, TlsSupport};
use serde::Deserialize;

use crate::subject::SubjectTemplate;

/// Configuration of the NATS sink (`type: nats` in `sinks:`).
///
/// ```yaml
/// sinks:
///   - type: nats
///     url: nats://127.0.0.1:4222
///     subject: "cdc.{schema}.{table}"
///     stream: { name: CDC, create: true, duplicate_window: 2m }
/// ```
///
/// Built in code: start from [`NatsSinkConfig::default`] (every key at the
/// default it has when absent from the file) and set the fields to change:
///
/// ```
/// use cdc_nats::{NatsSinkConfig, StreamConfig};
///
/// let mut config = NatsSinkConfig::default();
/// config.url = "nats://nats-1:4222,nats://nats-2:4222".into();
/// let mut stream = StreamConfig::new("CDC");
/// stream.create = true;
/// config.stream = Some(stream);
/// assert!(config.validate().is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsSinkConfig {
    /// Server URL, or several separated by commas
    /// (`nats://a:4222,nats://b:4222`). Default `nats://127.0.0.1:4222`.
    #[serde(default = "default_url")]
    pub url: String,
    /// Subject template. Placeholders: `{prefix}`, `{schema}`, `{table}`,
    /// `{op}` (the Debezium op code `c`/`u`/`d`/`r`/`t`). Substituted values
    /// are sanitised (see the crate docs). Default `cdc.{schema}.{table}`.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// Value of `{prefix}`. Default: the pipeline's name.
    #[serde(default)]
    pub prefix: Option<String>,
    /// `true` (default): publish to JetStream and wait for every PubAck.
    /// `false`: core NATS, fire-and-forget — **not durable**, a batch counts
    /// as written once it is flushed to the socket.
    #[serde(default = "default_true")]
    pub jetstream: bool,
    /// The JetStream stream the subjects belong to. Optional: without it
    /// the server routes each subject to whatever stream captures it.
    #[serde(default)]
    pub stream: Option<StreamConfig>,
    /// Credentials: one of `username` and `password`, `token`,
    /// `nkey_seed`, `credentials_file` (a `.creds` file as `nsc` writes
    /// it). Absent: none.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// TLS: present, the connection must use TLS (also when the URL says
    /// `nats://`); `ca` is added to the system roots; `cert` and `key` give
    /// a client certificate. TLS is also used when the URL says `tls://`.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// How long to wait for the TCP/TLS connection and the server's INFO.
    /// Default `10s`.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub connect_timeout: Duration,
    /// How long to wait for each PubAck and each JetStream API reply.
    /// Default `10s`.
    #[serde(
        default = "default_ack_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub ack_timeout: Duration,
    /// Publishes whose PubAck may be outstanding at once. Default `1024`.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// `true` (default): the stream holds only this sink's messages, so each
    /// message after the first of a batch can carry
    /// `Nats-Expected-Last-Msg-Id` (the previous message's id). JetStream
    /// then refuses a message that a reconnect would otherwise store ahead
    /// of one lost with the old connection, keeping every subject in commit
    /// order. Set `false` when other publishers write into the same stream
    /// (order per subject is then not guaranteed across reconnects).
    #[serde(default = "default_true")]
    pub exclusive_stream: bool,
}

/// The JetStream stream the sink publishes into (`stream:`). Built in code
/// with [`StreamConfig::new`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StreamConfig {
    /// Stream name (no spaces, dots, `*` or `>`).
    pub name: String,
    /// Subjects the stream captures, used when the sink creates it.
    /// Default: the subject template with every token that holds a
    /// placeholder replaced by `*` (`cdc.{schema}.{table}` → `cdc.*.*`).
    #[serde(default)]
    pub subjects: Vec<String>,
    /// `file` (default) or `memory`, used when the sink creates the stream.
    #[serde(default)]
    pub storage: Storage,
    /// The server's de-duplication window by `Nats-Msg-Id`, used when the
    /// sink creates the stream. A replay after a crash is dropped only if it
    /// arrives within this window. Default `2m`.
    #[serde(
        default = "default_duplicate_window",
        deserialize_with = "deserialize_duration"
    )]
    pub duplicate_window: Duration,
    /// Create the stream when it does not exist (default `false`: a missing
    /// stream is a fatal error at start). An existing stream is never changed.
    #[serde(default)]
    pub create: bool,
}

/// Where a created stream keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Storage {
    /// On disk: survives a server restart.
    #[default]
    File,
    /// In memory: lost when the server restarts.
    Memory,
}

impl StreamConfig {
    /// The stream called `name`, every other key at the default it has
    /// when absent from the file (so the sink does not create it).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            subjects: Vec::new(),
            storage: Storage::default(),
            duplicate_window: default_duplicate_window(),
            create: false,
        }
    }
}

/// The credentials `auth` may give.
const CREDENTIALS: &[Credential] = &[
    Credential::UserPassword,
    Credential::Token,
    Credential::NkeySeed,
    Credential::CredentialsFile,
];

/// What async-nats does with `tls`.
const TLS_SUPPORT: TlsSupport = TlsSupport::new("nats").with_client_certificate();

fn default_url() -> String {
    "nats://127.0.0.1:4222".to_owned()
}

fn default_subject() -> String {
    "cdc.{schema}.{table}".to_owned()
}

const fn default_true() -> bool {
    true
}

const fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

const fn default_ack_timeout() -> Duration {
    Duration::from_secs(10)
}

const fn default_duplicate_window() -> Duration {
    Duration::from_secs(120)
}

const fn default_max_in_flight() -> usize {
    1024
}

impl Default for NatsSinkConfig {
    fn default() -> Self {
        Self {
            url: default_url(),
            subject: default_subject(),
            prefix: None,
            jetstream: true,
            stream: None,
            auth: None,
            tls: None,
            connect_timeout: default_connect_timeout(),
            ack_timeout: default_ack_timeout(),
            max_in_flight: default_max_in_flight(),
            exclusive_stream: true,
        }
    }
}

impl NatsSinkConfig {
    /// The server URLs of `url`, split at commas.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Checks the entry without touching the network or files. Returns
    /// `(field, message)` pairs; `field` is relative to the sink entry
    /// (`subject`, `stream.name`, ...).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut push = |field: &str, message: String| problems.push((field.to_owned(), message));

        let urls = self.urls();
        if urls.is_empty() {
            push("url", "must name at least one server".to_owned());
        }
        for u in &urls {
            if let Err(e) = u.parse::<async_nats::ServerAddr>() {
                push("url", format!("`{u}` is not a NATS server URL: {e}"));
            }
        }

        if let Err(e) = SubjectTemplate::parse(&self.subject) {
            push("subject", e);
        }
        if let Some(prefix) = &self.prefix {
            if prefix.is_empty() {
                push("prefix", "must not be empty".to_owned());
            }
        }

        if let Some(stream) = &self.stream {
            if !self.jetstream {
                push(
                    "stream",
                    "only applies with `jetstream: true` (core NATS has no streams)".to_owned(),
                );
            }
            if stream.name.is_empty() {
                push("stream.name", "must not be empty".to_owned());
            } else if let Some(c) = stream.name.chars().find(|c| {
                c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')
            }) {
                push(
                    "stream.name",
                    format!("`{}` contains {c:?}: a stream name may not contain spaces, `.`, `*`, `>`, `/` or `\\`", stream.name),
                );
            }
            for (i, s) in stream.subjects.iter().enumerate() {
                if let Err(e) = check_subject_filter(s) {
                    push(&format!("stream.subjects[{i}]"), e);
                }
            }
            if stream.duplicate_window.is_zero() {
                push(
                    "stream.duplicate_window",
                    "must be greater than zero: replays after a crash are de-duplicated only within it".to_owned(),
                );
            }
        }

        if self.connect_timeout.is_zero() {
            push("connect_timeout", "must be greater than zero".to_owned());
        }
        if self.ack_timeout.is_zero() {
            push("ack_timeout", "must be greater than zero".to_owned());
        }
        if self.max_in_flight == 0 {
            push("max_in_flight", "must be at least 1".to_owned());
        }
        if let Some(a) = &self.auth {
            if let Some(seed) = &a.nkey_seed {
                if !seed.expose().trim().starts_with('S') {
                    push(
                        "auth.nkey_seed",
                        "an nkey seed starts with `S` (e.g. `SUA…`)".to_owned(),
                    );
                }
            }
            problems.extend(a.check(CREDENTIALS, &[]));
        }
        if let Some(tls) = &self.tls {
            problems.extend(tls.check(TLS_SUPPORT));
        }
        problems
    }

    /// The subjects a stream created by the sink captures: `stream.subjects`,
    /// or else the template's filter (`cdc.*.*`).
    pub(crate) fn stream_subjects(&self) -> Vec<String> {
        match &self.stream {
            Some(s) if !s.subjects.is_empty() => s.subjects.clone(),
            _ => SubjectTemplate::parse(&self.subject)
                .map(|t| vec![t.filter()])
                .unwrap_or_default(),
        }
    }
}

/// Checks a stream subject filter: dot-separated non-empty tokens without
/// spaces; `*` and `>` only as whole tokens, `>` only last.
fn check_subject_filter(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let tokens: Vec<&str> = s.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err(format!("`{s}` has an empty token"));
        }
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("`{s}` contains white space"));
        }
        if (t.contains('*') && *t != "*") || (t.contains('>') && *t != ">") {
            return Err(format!("`{s}`: `*` and `>` must be whole tokens"));
        }
        if *t == ">" && i + 1 != tokens.len() {
            return Err(format!("`{s}`: `>` must be the last token"));
        }
    }
    Ok(())
}

impl cdc_core::SinkSettings for NatsSinkConfig {
    fn problems(&self) -> Vec<cdc_core::settings::Problem> {
        self.validate()
    }

    /// `auth`'s password, token and nkey seed, `tls.key_password`.
    fn secrets(&self) -> Vec<&str> {
        cdc_core::section_secrets(self.auth.as_ref(), self.tls.as_ref())
    }

    /// `url` (`nats://user:password@host`).
    fn urls(&self) -> Vec<&str> {
        vec![self.url.as_str()]
    }

    fn open<'a>(
        &'a self,
        pipeline: &'a str,
    ) -> cdc_core::BoxFuture<'a, Result<Box<dyn cdc_core::DynSink>, cdc_core::SinkError>> {
        cdc_core::open_sink(crate::NatsSink::connect(self, pipeline))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = NatsSinkConfig::default();
        assert_eq!(c.validate(), Vec::<(String, String)>::new());
        assert_eq!(c.stream_subjects(), vec!["cdc.*.*".to_owned()]);
    }

    #[test]
    fn constructors_give_the_defaults_of_an_absent_key() {
        let parsed: NatsSinkConfig =
            serde_json::from_str(r#"{"stream": {"name": "CDC"}}"#).unwrap();
        let built = NatsSinkConfig {
            stream: Some(StreamConfig::new("CDC")),
            ..NatsSinkConfig::default()
        };
        assert_eq!(built, parsed);
    }

    fn fields(c: &NatsSinkConfig) -> Vec<String> {
        c.validate().into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn finds_problems_by_field() {
        let c = NatsSinkConfig {
            url: " , ".into(),
            subject: "cdc.{tabel}".into(),
            jetstream: false,
            stream: Some(StreamConfig {
                name: "a.b".into(),
                subjects: vec!["x.>.y".into()],
                storage: Storage::File,
                duplicate_window: Duration::ZERO,
                create: true,
            }),
            auth: Some({
                let mut auth = Auth::default();
                auth.token = Some("t".into());
                auth.username = Some("u".into());
                auth
            }),
            tls: Some({
                let mut tls = Tls::default();
                tls.cert = Some("c.pem".into());
                tls
            }),
            max_in_flight: 0,
            ..NatsSinkConfig::default()
        };
        assert_eq!(
            fields(&c),
            [
                "url",
                "subject",
                "stream",
                "stream.name",
                "stream.subjects[0]",
                "stream.duplicate_window",
                "max_in_flight",
                "auth",
                "auth.password",
                "tls.key"
            ]
        );
    }

    #[test]
    fn subject_filters() {
        assert!(check_subject_filter("cdc.>").is_ok());
        assert!(check_subject_filter("cdc.*.t").is_ok());
        assert!(check_subject_filter("cdc..t").is_err());
        assert!(check_subject_filter("cdc.a*").is_err());
        assert!(check_subject_filter("a b").is_err());
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn debug_masks_secrets() {
        let mut auth = Auth::default();
        auth.token = Some("tok-secret".into());
        auth.username = Some("ann".into());
        auth.password = Some("pw-secret".into());
        auth.nkey_seed = Some("SUAseed-secret".into());
        let auth = Some(auth);
        let text = format!(
            "{:?}",
            NatsSinkConfig {
                auth,
                ..NatsSinkConfig::default()
            }
        );
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("ann"), "{text}");
    }
}
