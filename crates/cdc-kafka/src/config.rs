//! `type: kafka` sink configuration: the YAML keys, their defaults, and a
//! pure [`KafkaSinkConfig::validate`] (no network, no files read).

use std::collections::BTreeMap;
use std::time::Duration;

use cdc_core::settings::{deserialize_duration, Auth, Credential, Tls, TlsSupport};
use serde::Deserialize;

use crate::route::TopicTemplate;

/// The Kafka sink's settings (`type: kafka` in the engine's `sinks:`): one
/// topic per table, keyed by primary key, durable once every delivery
/// report of a batch is back.
///
/// Read from YAML or JSON with serde, or built in code with
/// [`KafkaSinkConfig::new`] (the brokers; every other key at its default)
/// and then the fields to change:
///
/// ```
/// use cdc_kafka::{Compression, KafkaSinkConfig};
///
/// let mut config = KafkaSinkConfig::new(["kafka-1:9092", "kafka-2:9092"]);
/// config.topic = Some("shop.{table}".into());
/// config.compression = Compression::Zstd;
/// assert!(config.validate().is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KafkaSinkConfig {
    /// `brokers`: bootstrap servers, `host:port` each (librdkafka
    /// `bootstrap.servers`). Required, at least one.
    pub brokers: Vec<String>,
    /// `client_id`: the Kafka client id. Default `cdc-<pipeline name>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// `topic`: topic name template with the placeholders `{db}`,
    /// `{schema}` and `{table}`. Characters Kafka does not allow in a topic
    /// name (anything but `a-z A-Z 0-9 . _ -`) are replaced by `_` after
    /// substitution. Default `cdc.{schema}.{table}` unless `topics` is
    /// given, then tables missing from `topics` are an error.
    #[serde(default)]
    pub topic: Option<String>,
    /// `topics`: explicit table → topic map (`public.users: users-v1`);
    /// wins over `topic` for the tables it lists.
    #[serde(default)]
    pub topics: BTreeMap<String, String>,
    /// `create_topics`: create missing topics through the admin API with
    /// these settings. When absent, every topic must already exist: a
    /// missing one stops the pipeline.
    #[serde(default)]
    pub create_topics: Option<CreateTopics>,
    /// `tombstones`: after each delete, also send a tombstone (same key,
    /// null value) so log compaction can drop the row. Default `true`.
    #[serde(default = "default_true")]
    pub tombstones: bool,
    /// `compression`: `none`, `gzip`, `snappy`, `lz4` or `zstd`
    /// (librdkafka `compression.type`). Default `none`.
    #[serde(default)]
    pub compression: Compression,
    /// `batching`: how the producer groups messages into requests.
    #[serde(default)]
    pub batching: Batching,
    /// `timeouts`: how long deliveries and requests may take.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// `tls`: connect with TLS (every key of [`Tls`] is supported).
    /// Absent: plaintext.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// `auth`: SASL authentication, `{ mechanism, username, password }`
    /// with `mechanism` one of `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`.
    /// Absent: no authentication.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// `properties`: any other librdkafka producer property, passed as is
    /// and applied last (so it overrides the keys above). Values are strings.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// `create_topics`: settings of topics the sink creates. The default is
/// what an empty `create_topics: {}` gives: one partition, one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CreateTopics {
    /// `partitions`: partitions per created topic. Default 1.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// `replication_factor`: replicas per partition. Default 1.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
}

impl Default for CreateTopics {
    fn default() -> Self {
        Self {
            partitions: default_partitions(),
            replication_factor: default_replication_factor(),
        }
    }
}

/// `compression`: the producer's compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The librdkafka `compression.type` value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// `batching`: how messages are grouped into produce requests. The
/// default is what an absent `batching` gives (each field's default below).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Batching {
    /// `linger`: how long to wait for more messages before sending a
    /// request (librdkafka `linger.ms`). Default `5ms`.
    #[serde(default = "default_linger", deserialize_with = "deserialize_duration")]
    pub linger: Duration,
    /// `max_messages`: messages per request at most
    /// (`batch.num.messages`). Default 10000.
    #[serde(default = "default_batch_messages")]
    pub max_messages: u32,
    /// `max_bytes`: bytes per partition batch at most (`batch.size`), a
    /// number of bytes. Default 1000000.
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: u32,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            linger: default_linger(),
            max_messages: default_batch_messages(),
            max_bytes: default_batch_bytes(),
        }
    }
}

/// `timeouts`: durations written like `30s`, `500ms`, `2m`. The default is
/// what an absent `timeouts` gives (each field's default below).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Timeouts {
    /// `stall_warning`: how long a batch may wait for its delivery
    /// reports before the sink logs a warning (again after each further
    /// period). Deliveries never expire: the producer keeps sending a
    /// message, with the same producer id and sequence number, until the
    /// broker takes it, so a message given up on can never land after a
    /// newer one. Default `30s`.
    #[serde(
        default = "default_stall_warning",
        deserialize_with = "deserialize_duration"
    )]
    pub stall_warning: Duration,
    /// `request`: how long one request may wait for its answer
    /// (`request.timeout.ms`, `socket.timeout.ms`); then the producer
    /// closes that connection and sends the request again, under the same
    /// sequence numbers, on a new one. Default `30s`.
    #[serde(default = "default_request", deserialize_with = "deserialize_duration")]
    pub request: Duration,
    /// `metadata`: how long a metadata lookup or topic creation may take
    /// before the batch fails (retryable). Default `10s`.
    #[serde(
        default = "default_metadata",
        deserialize_with = "deserialize_duration"
    )]
    pub metadata: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            stall_warning: default_stall_warning(),
            request: default_request(),
            metadata: default_metadata(),
        }
    }
}

/// The SASL mechanisms `auth.mechanism` accepts.
const SASL_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// What librdkafka does with `tls`: everything.
const TLS_SUPPORT: TlsSupport = TlsSupport::new("kafka")
    .with_client_certificate()
    .with_key_password()
    .with_skip_hostname_verification();

/// Properties the sink sets itself and that `properties` must not change,
/// because durability, per-key order or the sink's own error handling
/// depend on them.
const RESERVED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "use `brokers`"),
    ("metadata.broker.list", "use `brokers`"),
    (
        "acks",
        "always `all`: a change acknowledged by the leader alone can be lost with it",
    ),
    (
        "request.required.acks",
        "always `all`: a change acknowledged by the leader alone can be lost with it",
    ),
    (
        "enable.idempotence",
        "always on: without producer sequence numbers a resent request can land after a newer change of its key",
    ),
    (
        "message.timeout.ms",
        "deliveries never expire (see `timeouts.stall_warning`): a message given up on could still land after a newer change of its key",
    ),
    (
        "delivery.timeout.ms",
        "deliveries never expire (see `timeouts.stall_warning`): a message given up on could still land after a newer change of its key",
    ),
    (
        "retries",
        "the producer never stops resending: a message given up on could still land after a newer change of its key",
    ),
    (
        "message.send.max.retries",
        "the producer never stops resending: a message given up on could still land after a newer change of its key",
    ),
    (
        "transactional.id",
        "transactions are not supported by this sink",
    ),
    ("sasl.username", "use `auth.username`"),
    ("sasl.password", "use `auth.password`"),
    ("sasl.mechanism", "use `auth.mechanism`"),
    ("sasl.mechanisms", "use `auth.mechanism`"),
];

impl KafkaSinkConfig {
    /// The default `topic` template.
    pub(crate) const DEFAULT_TOPIC: &'static str = "cdc.{schema}.{table}";

    /// The settings for these bootstrap servers (`host:port` each), every
    /// other key at the default it has when absent from the file.
    pub fn new<I, S>(brokers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            brokers: brokers.into_iter().map(Into::into).collect(),
            client_id: None,
            topic: None,
            topics: BTreeMap::new(),
            create_topics: None,
            tombstones: default_true(),
            compression: Compression::default(),
            batching: Batching::default(),
            timeouts: Timeouts::default(),
            tls: None,
            auth: None,
            properties: BTreeMap::new(),
        }
    }

    /// Checks the configuration without connecting: `(field, message)` per
    /// problem, `field` relative to the sink entry (`brokers`,
    /// `sasl.mechanism`, `topics.public.users`).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut push = |field: &str, message: String| problems.push((field.to_owned(), message));
        if self.brokers.is_empty() {
            push("brokers", "at least one broker is required".into());
        }
        for (i, b) in self.brokers.iter().enumerate() {
            if let Err(msg) = check_broker(b) {
                push(&format!("brokers[{i}]"), msg);
            }
        }
        if let Some(id) = &self.client_id {
            if id.trim().is_empty() {
                push("client_id", "must not be empty".into());
            }
        }
        if let Some(t) = &self.topic {
            if let Err(msg) = TopicTemplate::parse(t) {
                push("topic", msg);
            }
        }
        for (table, topic) in &self.topics {
            let field = format!("topics.{table}");
            match table.split_once('.') {
                Some((s, t)) if !s.is_empty() && !t.is_empty() => {}
                _ => push(
                    &field,
                    "the key must be a schema-qualified table, e.g. `public.users`".into(),
                ),
            }
            if let Err(msg) = crate::route::check_topic_name(topic) {
                push(&field, msg);
            }
        }
        if let Some(c) = &self.create_topics {
            if c.partitions < 1 {
                push("create_topics.partitions", "must be at least 1".into());
            }
            if c.replication_factor < 1 {
                push(
                    "create_topics.replication_factor",
                    "must be at least 1".into(),
                );
            }
        }
        if self.batching.max_messages == 0 {
            push("batching.max_messages", "must be at least 1".into());
        }
        if self.batching.max_bytes == 0 {
            push("batching.max_bytes", "must be at least 1".into());
        }
        let ms_limit = Duration::from_millis(i32::MAX as u64);
        if self.batching.linger > Duration::from_secs(900) {
            push("batching.linger", "must be at most 900s".into());
        }
        for (field, d) in [
            ("timeouts.stall_warning", self.timeouts.stall_warning),
            ("timeouts.request", self.timeouts.request),
            ("timeouts.metadata", self.timeouts.metadata),
        ] {
            if d.is_zero() {
                push(field, "must be greater than zero".into());
            } else if d > ms_limit {
                push(field, "is too long".into());
            }
        }
        for key in self.properties.keys() {
            let field = format!("properties.{key}");
            if let Some((_, why)) = RESERVED_PROPERTIES.iter().find(|(k, _)| k == key) {
                push(&field, format!("set by the sink itself: {why}"));
            } else if key.trim().is_empty() {
                push(&field, "empty property name".into());
            }
        }
        if let Some(tls) = &self.tls {
            problems.extend(tls.check(TLS_SUPPORT));
        }
        if let Some(auth) = &self.auth {
            problems.extend(auth.check(&[Credential::UserPassword], SASL_MECHANISMS));
        }
        problems
    }
}

fn check_broker(b: &str) -> Result<(), String> {
    let b = b.trim();
    let Some((host, port)) = b.rsplit_once(':') else {
        return Err(format!("`{b}`: expected host:port"));
    };
    if host.is_empty() {
        return Err(format!("`{b}`: empty host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("`{b}`: invalid port `{port}`")),
    }
}

const fn default_true() -> bool {
    true
}
const fn default_partitions() -> i32 {
    1
}
const fn default_replication_factor() -> i32 {
    1
}
const fn default_linger() -> Duration {
    Duration::from_millis(5)
}
const fn default_batch_messages() -> u32 {
    10_000
}
const fn default_batch_bytes() -> u32 {
    1_000_000
}
const fn default_stall_warning() -> Duration {
    Duration::from_secs(30)
}
const fn default_request() -> Duration {
    Duration::from_secs(30)
}
const fn default_metadata() -> Duration {
    Duration::from_secs(10)
}

impl cdc_core::SinkSettings for KafkaSinkConfig {
    fn problems(&self) -> Vec<cdc_core::settings::Problem> {
        self.validate()
    }

    /// `auth.password`, `tls.key_password`, and `properties` whose key
    /// names a password or secret.
    fn secrets(&self) -> Vec<&str> {
        let shared = cdc_core::section_secrets(self.auth.as_ref(), self.tls.as_ref());
        let properties = self.properties.iter().filter_map(|(k, v)| {
            let k = k.to_ascii_lowercase();
            (k.contains("password") || k.contains("secret")).then_some(v.as_str())
        });
        shared.into_iter().chain(properties).collect()
    }

    fn open<'a>(
        &'a self,
        pipeline: &'a str,
    ) -> cdc_core::BoxFuture<'a, Result<Box<dyn cdc_core::DynSink>, cdc_core::SinkError>> {
        cdc_core::open_sink(crate::KafkaSink::connect(self, pipeline))
    }
}
