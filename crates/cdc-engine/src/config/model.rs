//! The configuration model. The doc comment of each field is the reference
//! for the YAML key of the same name (`docs/configuration.md` has the
//! user-facing version with a full example).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use cdc_core::{ReplicaIdentity, TableName};
use cdc_postgres::selection::TablePattern;

pub use super::columns::ColumnsConfig;
use serde::Deserialize;

use super::redact::redact_url;
use super::sink::SinkConfig;
use cdc_core::settings::{deserialize_duration, deserialize_optional_duration};

use super::slot::SlotConfig;
use super::{size, table_name};

/// A whole configuration file: one pipeline from one PostgreSQL database to
/// one or more sinks. Build it with [`load_config`](super::load_config) or
/// [`parse_config`](super::parse_config), which also validate it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// `name`: the pipeline's name, written as `source.name` in every
    /// Debezium-style event. Letters, digits, `.`, `_` and `-`.
    /// Default `cdc`.
    pub name: String,
    /// `source`: the PostgreSQL database to capture changes from. Required.
    pub source: SourceConfig,
    /// `sinks`: where change events go, at least one. Each entry is a map
    /// with a `type` key (`stdout`, `file`, `kafka`, `nats`,
    /// `elasticsearch`) and that sink's own keys. Every
    /// event is delivered to every sink. Required.
    pub sinks: Vec<SinkConfig>,
    /// `pipeline`: batching and buffering between the source and the sinks.
    /// Optional.
    pub pipeline: PipelineConfig,
    /// `retry`: backoff between attempts after retryable errors. Optional.
    pub retry: RetryConfig,
    /// `log`: the engine's own log output. Optional.
    pub log: LogConfig,
    /// `snapshot`: copying existing rows before streaming. Optional
    /// (default: no snapshot).
    pub snapshot: super::snapshot::SnapshotConfig,
    /// `metrics`: the HTTP endpoint serving `/metrics`, `/status` and
    /// `/healthz`. Absent: no endpoint. Present (even empty, `metrics: {}`):
    /// the endpoint runs with the defaults of [`MetricsConfig`].
    pub metrics: Option<MetricsConfig>,
    /// `heartbeat`: keeping the slot moving while the captured tables are
    /// idle. Optional (default: on, every 10 s).
    pub heartbeat: HeartbeatConfig,
}

/// Default of [`Config::name`].
pub(crate) fn default_name() -> String {
    "cdc".to_owned()
}

/// `source`: the PostgreSQL database, the tables to capture, and the
/// publication and replication slot used to capture them.
///
/// `Debug` masks the password of `url`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "SourceDocument")]
#[non_exhaustive]
pub struct SourceConfig {
    /// `url`: connection URL, `postgres://user:password@host:5432/dbname`
    /// (or `postgresql://`), with libpq query parameters such as
    /// `?sslmode=require`. The user needs the `REPLICATION` attribute. Use
    /// `${VAR}` to keep the password out of the file. Required.
    pub url: String,
    /// `primary_url`: when `url` is a hot standby (PostgreSQL 16+, logical
    /// decoding in recovery), the primary's URL of the same database:
    /// heartbeats are written there (a standby is read-only) and come back
    /// through the standby's slot. Optional.
    pub primary_url: Option<String>,
    /// `tables`: the tables to capture, each schema-qualified
    /// (`public.users`). Unquoted parts are folded to lower case as
    /// PostgreSQL does (`Public.Users` is `public.users`); double-quote parts
    /// to keep their case or use other characters
    /// (`'"Mixed Case"."odd ""name"""'`, where `""` is one `"`). At least one
    /// entry, no duplicates. Required. This field holds the entries that
    /// name one table; patterns are in
    /// [`table_patterns`](Self::table_patterns).
    pub tables: Vec<TableName>,
    /// The entries of `tables` that are patterns: `schema.*`, globs with
    /// `*` and `?` in unquoted parts (`public.log_*`), or `/regex/`
    /// matched against `schema.table`. Resolved against the catalog at
    /// every start (see [`cdc_postgres::selection`]).
    pub table_patterns: Vec<TablePattern>,
    /// `exclude_tables`: names or patterns of tables left out, also when
    /// `tables` names them. Default: none.
    pub exclude_tables: Vec<TablePattern>,
    /// `columns`: a map from table to `{ include: [columns] }` or
    /// `{ exclude: [columns] }`, the columns captured of that table (in
    /// the snapshot and the stream alike; a key column cannot be left
    /// out). Set as the table's column list on the publication
    /// (`publication.create: true`); before PostgreSQL 15, which has no
    /// column lists, the source drops the other columns itself. Default:
    /// every column.
    pub columns: Vec<(TableName, ColumnsConfig)>,
    /// `row_filters`: a map from table to a boolean SQL expression on its
    /// columns; only rows for which it is true are captured (in the
    /// snapshot and the stream alike). Set as the table's row filter on the
    /// publication (PostgreSQL 15+, `publication.create: true`), whose
    /// rules apply. Default: every row.
    pub row_filters: Vec<(TableName, String)>,
    /// `publication`: the publication listing `tables`.
    #[serde(default)]
    pub publication: PublicationConfig,
    /// `slot`: the logical replication slot the changes are read from.
    #[serde(default)]
    pub slot: SlotConfig,
    /// `replica_identity`: a map from table to `default`, `full` or
    /// `nothing`, the replica identity to set on that table
    /// (`ALTER TABLE … REPLICA IDENTITY`). `full` makes updates and deletes
    /// carry the whole old row. Each table must be one of `tables`; tables not
    /// listed are left as they are. Default: empty.
    #[serde(default, deserialize_with = "table_name::deserialize_map")]
    pub replica_identity: Vec<(TableName, ReplicaIdentitySetting)>,
    /// `discovery`: tables created and dropped while streaming, when
    /// `tables` holds patterns.
    pub discovery: super::DiscoveryConfig,
}

/// `source` as written: `tables` entries are names or patterns.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceDocument {
    url: String,
    #[serde(default)]
    primary_url: Option<String>,
    #[serde(deserialize_with = "table_name::deserialize_selectors")]
    tables: Vec<table_name::Selector>,
    #[serde(default, deserialize_with = "table_name::deserialize_selectors")]
    exclude_tables: Vec<table_name::Selector>,
    #[serde(default)]
    publication: PublicationConfig,
    #[serde(default)]
    slot: SlotConfig,
    #[serde(default, deserialize_with = "table_name::deserialize_map")]
    replica_identity: Vec<(TableName, ReplicaIdentitySetting)>,
    #[serde(default, deserialize_with = "table_name::deserialize_map")]
    columns: Vec<(TableName, ColumnsConfig)>,
    #[serde(default, deserialize_with = "table_name::deserialize_map")]
    row_filters: Vec<(TableName, String)>,
    #[serde(default)]
    discovery: super::DiscoveryConfig,
}

impl From<SourceDocument> for SourceConfig {
    fn from(doc: SourceDocument) -> Self {
        let mut tables = Vec::new();
        let mut table_patterns = Vec::new();
        for selector in doc.tables {
            match selector {
                table_name::Selector::Name(t) => tables.push(t),
                table_name::Selector::Pattern(p) => table_patterns.push(p),
            }
        }
        SourceConfig {
            url: doc.url,
            primary_url: doc.primary_url,
            tables,
            table_patterns,
            exclude_tables: doc
                .exclude_tables
                .into_iter()
                .map(table_name::Selector::into_pattern)
                .collect(),
            publication: doc.publication,
            slot: doc.slot,
            replica_identity: doc.replica_identity,
            columns: doc.columns,
            row_filters: doc.row_filters,
            discovery: doc.discovery,
        }
    }
}

impl fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceConfig")
            .field("url", &redact_url(&self.url))
            .field("primary_url", &self.primary_url.as_deref().map(redact_url))
            .field("tables", &self.tables)
            .field("table_patterns", &self.table_patterns)
            .field("exclude_tables", &self.exclude_tables)
            .field("publication", &self.publication)
            .field("slot", &self.slot)
            .field("replica_identity", &self.replica_identity)
            .field("columns", &self.columns)
            .field("row_filters", &self.row_filters)
            .field("discovery", &self.discovery)
            .finish()
    }
}

impl SourceConfig {
    /// Whether `table` is captured as far as the configuration alone can
    /// tell: named in `tables` or matching one of `table_patterns`, and not
    /// matching `exclude_tables`.
    pub fn selects(&self, table: &TableName) -> bool {
        (self.tables.contains(table) || self.table_patterns.iter().any(|p| p.matches(table)))
            && !self.exclude_tables.iter().any(|p| p.matches(table))
    }

    /// `columns` and `row_filters` per table, as the source applies them.
    pub fn subsets(&self) -> Vec<(TableName, cdc_postgres::selection::TableSubset)> {
        use cdc_postgres::selection::{ColumnSelection, TableSubset};
        fn entry<'a>(
            out: &'a mut Vec<(TableName, TableSubset)>,
            t: &TableName,
        ) -> &'a mut TableSubset {
            let i = match out.iter().position(|(n, _)| n == t) {
                Some(i) => i,
                None => {
                    out.push((t.clone(), TableSubset::default()));
                    out.len() - 1
                }
            };
            &mut out[i].1
        }
        let mut out: Vec<(TableName, TableSubset)> = Vec::new();
        for (t, c) in &self.columns {
            entry(&mut out, t).columns = match (&c.include, &c.exclude) {
                (Some(list), _) => Some(ColumnSelection::Include(list.clone())),
                (None, Some(list)) => Some(ColumnSelection::Exclude(list.clone())),
                (None, None) => None,
            };
        }
        for (t, f) in &self.row_filters {
            entry(&mut out, t).row_filter = Some(f.clone());
        }
        out
    }

    /// The patterns and exclusions, as the source resolves them.
    pub fn selection(&self) -> cdc_postgres::selection::TableSelection {
        let mut selection = cdc_postgres::selection::TableSelection::default();
        selection.include = self.table_patterns.clone();
        selection.exclude = self.exclude_tables.clone();
        selection
    }

    /// `url` with its password replaced by `***`, for logs and messages.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// `source.publication`: the PostgreSQL publication the slot decodes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PublicationConfig {
    /// `name`: 1 to 63 characters among `A-Z`, `a-z`, `0-9` and `_` (it is
    /// passed as an option of the replication command). Default `cdc_pub`.
    #[serde(default = "default_publication_name")]
    pub name: String,
    /// `create`: create the publication for `tables` if it does not exist.
    /// With `false`, it must already exist. Default `true`.
    #[serde(default = "default_true")]
    pub create: bool,
}

impl Default for PublicationConfig {
    fn default() -> Self {
        Self {
            name: default_publication_name(),
            create: true,
        }
    }
}

fn default_publication_name() -> String {
    "cdc_pub".to_owned()
}

/// `heartbeat`: while the captured tables are idle, the engine writes a
/// small logical decoding message (`pg_logical_emit_message`, prefix
/// `cdc_heartbeat`) and acknowledges it once the sinks are up to date, so
/// the slot's `confirmed_flush_lsn` advances and the server can recycle WAL
/// written by other tables and databases. Needs a role with `REPLICATION`
/// (or superuser); failures are logged and retried, never fatal.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HeartbeatConfig {
    /// `enabled`: write heartbeats. Default `true`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `interval`: write one after this long without a transaction of the
    /// captured tables, a duration string greater than zero.
    /// Default `10s`.
    #[serde(
        default = "default_heartbeat_interval",
        deserialize_with = "deserialize_duration"
    )]
    pub interval: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_heartbeat_interval(),
        }
    }
}

const fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(10)
}

pub(super) const fn default_true() -> bool {
    true
}

/// A value of `source.replica_identity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ReplicaIdentitySetting {
    /// `default`: old values of the primary key columns only.
    Default,
    /// `full`: old values of every column.
    Full,
    /// `nothing`: no old values.
    Nothing,
}

impl From<ReplicaIdentitySetting> for ReplicaIdentity {
    fn from(setting: ReplicaIdentitySetting) -> Self {
        match setting {
            ReplicaIdentitySetting::Default => Self::Default,
            ReplicaIdentitySetting::Full => Self::Full,
            ReplicaIdentitySetting::Nothing => Self::Nothing,
        }
    }
}

/// `pipeline`: how events are batched and buffered between the source and
/// the sinks. A batch is closed when it reaches `max_batch_events` or
/// `max_batch_bytes`, or `max_batch_wait` after its first event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PipelineConfig {
    /// `channel_capacity`: batches buffered between the source and each
    /// sink; when a sink's buffer is full, reading from PostgreSQL waits.
    /// At least 1. Default `8`.
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
    /// `max_batch_events`: events per batch, at least 1. Default `2048`.
    #[serde(default = "default_max_batch_events")]
    pub max_batch_events: usize,
    /// `max_batch_bytes`: size of a batch, as a number of bytes or a size
    /// string (`512KiB`, `8MiB`, `1MB`). At least 1 byte.
    /// Default `8MiB`.
    #[serde(
        default = "default_max_batch_bytes",
        deserialize_with = "size::deserialize"
    )]
    pub max_batch_bytes: usize,
    /// `max_batch_wait`: how long a batch may wait for more events, as a
    /// duration string (`10ms`, `1s`, `1m`); `0ms` sends every batch at
    /// once. Default `10ms`.
    #[serde(
        default = "default_max_batch_wait",
        deserialize_with = "deserialize_duration"
    )]
    pub max_batch_wait: Duration,
    /// `shutdown_timeout`: after SIGINT/SIGTERM, how long the sinks may take
    /// to write and acknowledge what they hold before the engine stops
    /// without them (a second signal stops at once). Greater than zero.
    /// Default `30s`.
    #[serde(
        default = "default_shutdown_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub shutdown_timeout: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            channel_capacity: default_channel_capacity(),
            max_batch_events: default_max_batch_events(),
            max_batch_bytes: default_max_batch_bytes(),
            max_batch_wait: default_max_batch_wait(),
            shutdown_timeout: default_shutdown_timeout(),
        }
    }
}

const fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

const fn default_channel_capacity() -> usize {
    8
}

const fn default_max_batch_events() -> usize {
    2048
}

const fn default_max_batch_bytes() -> usize {
    8 * 1024 * 1024
}

const fn default_max_batch_wait() -> Duration {
    Duration::from_millis(10)
}

/// `retry`: how long to wait before trying again after a retryable error.
/// The wait starts at `initial_backoff` and grows with each failed attempt,
/// up to `max_backoff`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// `initial_backoff`: the first wait, a duration string greater than
    /// zero. Default `200ms`.
    #[serde(
        default = "default_initial_backoff",
        deserialize_with = "deserialize_duration"
    )]
    pub initial_backoff: Duration,
    /// `max_backoff`: the longest wait, at least `initial_backoff`.
    /// Default `30s`.
    #[serde(
        default = "default_max_backoff",
        deserialize_with = "deserialize_duration"
    )]
    pub max_backoff: Duration,
    /// `give_up_after`: a sink, or the connection to PostgreSQL, still
    /// failing with retryable errors this long after the first failure of
    /// a run stops the engine with an error (exit status 1; nothing
    /// unwritten is acknowledged, so a restart resumes without loss).
    /// Default: retry for ever.
    #[serde(default, deserialize_with = "deserialize_optional_duration")]
    pub give_up_after: Option<Duration>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            give_up_after: None,
        }
    }
}

const fn default_initial_backoff() -> Duration {
    Duration::from_millis(200)
}

const fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

/// `log`: the engine's own log output.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LogConfig {
    /// `level`: `trace`, `debug`, `info`, `warn` or `error`. Default `info`.
    #[serde(default)]
    pub level: LogLevel,
    /// `format`: `text` (human-readable lines) or `json` (one JSON object
    /// per line). Default `text`.
    #[serde(default)]
    pub format: LogFormat,
}

/// A value of `log.level`: the least severe level logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogLevel {
    /// `trace`: everything, including per-message details.
    Trace,
    /// `debug`: diagnostic detail.
    Debug,
    /// `info`: lifecycle and progress.
    #[default]
    Info,
    /// `warn`: problems the engine works around.
    Warn,
    /// `error`: failures only.
    Error,
}

impl LogLevel {
    /// The lower-case name, as written in the file and accepted by
    /// `tracing` level filters.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// A value of `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// `text`: human-readable lines.
    #[default]
    Text,
    /// `json`: one JSON object per line.
    Json,
}

/// `metrics`: the engine's HTTP endpoint: `GET /metrics` (Prometheus text
/// format), `GET /status` (JSON) and `GET /healthz` (`200` or `503`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// `listen`: the address and port to serve on, `IP:port`
    /// (`0.0.0.0:9187` for every interface). Default `127.0.0.1:9187`.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
    /// `hold_after_failure`: after a fatal error, how long the engine keeps
    /// serving (`/healthz` answers `503`, `/status` shows the error) before
    /// it exits with a non-zero status. `0ms` exits at once. Default `5s`.
    #[serde(
        default = "default_hold_after_failure",
        deserialize_with = "deserialize_duration"
    )]
    pub hold_after_failure: Duration,
    /// `lag_poll_interval`: how often the engine asks the server for its
    /// WAL position and the slot's `confirmed_flush_lsn` (on a connection
    /// of its own) to compute the replication lag. Greater than zero.
    /// Default `5s`.
    #[serde(
        default = "default_lag_poll_interval",
        deserialize_with = "deserialize_duration"
    )]
    pub lag_poll_interval: Duration,
    /// `snapshot_requests`: accept `POST /snapshot` (ask for an
    /// incremental snapshot; its filter is SQL run with the source's role,
    /// so turn it on only where the endpoint is reachable by operators
    /// alone). Default `false`.
    #[serde(default)]
    pub snapshot_requests: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_metrics_listen(),
            hold_after_failure: default_hold_after_failure(),
            lag_poll_interval: default_lag_poll_interval(),
            snapshot_requests: false,
        }
    }
}

const fn default_metrics_listen() -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9187)
}

const fn default_hold_after_failure() -> Duration {
    Duration::from_secs(5)
}

const fn default_lag_poll_interval() -> Duration {
    Duration::from_secs(5)
}

/// `deserialize_with` for `metrics`: a present section turns the endpoint
/// on even when it is empty or `null` (`metrics:` with nothing under it).
pub(crate) fn deserialize_metrics<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<MetricsConfig>, D::Error> {
    Ok(Some(
        Option::<MetricsConfig>::deserialize(deserializer)?.unwrap_or_default(),
    ))
}
