//! `sinks[]` entries: a `type` key choosing the sink, and that sink's keys.
//!
//! An entry is decoded in two steps, first `type`, then the rest with the
//! chosen sink's struct, rather than as an internally tagged enum: serde
//! buffers tagged enums before decoding the variant, which loses the path of
//! errors inside it (`sinks[1]` instead of `sinks[1].path`).

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::error::{join_key, ConfigProblem};

/// Every sink type name, including those this build does not provide.
const SINK_TYPES: &str = "stdout, file, kafka, nats, elasticsearch";

/// Sink types whose cargo feature this build was compiled without.
const UNAVAILABLE_SINK_TYPES: &[&str] = &[
    #[cfg(not(feature = "kafka"))]
    "kafka",
    #[cfg(not(feature = "nats"))]
    "nats",
    #[cfg(not(feature = "elasticsearch"))]
    "elasticsearch",
];

/// One entry of `sinks`, chosen by its `type` key.
///
/// `Debug` shows the Kafka, NATS and Elasticsearch settings only as their
/// type: they may hold passwords, tokens and keys (and URLs with
/// credentials) that their own `Debug` output would print.
#[derive(Clone, PartialEq, Eq)]
pub enum SinkConfig {
    /// `type: stdout`.
    Stdout(StdoutSinkConfig),
    /// `type: file`.
    File(FileSinkConfig),
    /// `type: kafka` (cargo feature `kafka`).
    #[cfg(feature = "kafka")]
    Kafka(cdc_kafka::KafkaSinkConfig),
    /// `type: nats` (cargo feature `nats`).
    #[cfg(feature = "nats")]
    Nats(cdc_nats::NatsSinkConfig),
    /// `type: elasticsearch` (cargo feature `elasticsearch`).
    #[cfg(feature = "elasticsearch")]
    Elasticsearch(cdc_es::EsSinkConfig),
}

impl SinkConfig {
    /// The `type` value: `stdout`, `file`.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Stdout(_) => "stdout",
            Self::File(_) => "file",
            #[cfg(feature = "kafka")]
            Self::Kafka(_) => "kafka",
            #[cfg(feature = "nats")]
            Self::Nats(_) => "nats",
            #[cfg(feature = "elasticsearch")]
            Self::Elasticsearch(_) => "elasticsearch",
        }
    }
}

impl std::fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stdout(c) => f.debug_tuple("Stdout").field(c).finish(),
            Self::File(c) => f.debug_tuple("File").field(c).finish(),
            #[cfg(feature = "kafka")]
            Self::Kafka(_) => f.write_str("Kafka(..)"),
            #[cfg(feature = "nats")]
            Self::Nats(_) => f.write_str("Nats(..)"),
            #[cfg(feature = "elasticsearch")]
            Self::Elasticsearch(_) => f.write_str("Elasticsearch(..)"),
        }
    }
}

/// `type: stdout`: each change as one line of JSON on standard output. Not
/// a durable store. No other keys.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {}

/// `type: file`: each change as one line of JSON appended to a file,
/// `fsync`ed before the batch counts as durable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// `path`: the file to write, relative to the working directory unless
    /// absolute. Two file sinks cannot share a path. Required.
    pub path: PathBuf,
}

/// Decodes the sink entry found at `field` (`sinks[1]`).
pub(crate) fn decode_sink(value: Value, field: &str) -> Result<SinkConfig, ConfigProblem> {
    let type_field = join_key(field, "type");
    let mut value = value;
    // The top level gets `<<` merge keys from the YAML parser; a `Value`
    // needs them applied explicitly.
    if let Err(err) = value.apply_merge() {
        return Err(ConfigProblem::new(field, err.to_string()));
    }
    let Value::Mapping(mut entry) = value else {
        return Err(ConfigProblem::new(
            field,
            "expected a map with a `type` key, e.g. `{ type: stdout }`",
        ));
    };
    let kind = match entry.remove("type") {
        Some(Value::String(kind)) => kind,
        Some(_) => {
            return Err(ConfigProblem::new(
                type_field,
                format!("expected a sink type, one of {SINK_TYPES}"),
            ))
        }
        None => {
            return Err(ConfigProblem::new(
                type_field,
                format!("missing field `type` (one of {SINK_TYPES})"),
            ))
        }
    };
    match kind.as_str() {
        "stdout" => decode(entry, field).map(SinkConfig::Stdout),
        "file" => decode(entry, field).map(SinkConfig::File),
        #[cfg(feature = "kafka")]
        "kafka" => decode(entry, field).map(SinkConfig::Kafka),
        #[cfg(feature = "nats")]
        "nats" => decode(entry, field).map(SinkConfig::Nats),
        #[cfg(feature = "elasticsearch")]
        "elasticsearch" => decode(entry, field).map(SinkConfig::Elasticsearch),
        kind if UNAVAILABLE_SINK_TYPES.contains(&kind) => Err(ConfigProblem::new(
            type_field,
            format!("sink type `{kind}` is not available in this build"),
        )),
        kind => Err(ConfigProblem::new(
            type_field,
            format!("unknown sink type `{kind}`, expected one of {SINK_TYPES}"),
        )),
    }
}

/// Decodes the keys of a sink entry other than `type`.
fn decode<T: DeserializeOwned>(entry: Mapping, field: &str) -> Result<T, ConfigProblem> {
    serde_path_to_error::deserialize(Value::Mapping(entry))
        .map_err(|err| ConfigProblem::from_serde(field, err))
}
