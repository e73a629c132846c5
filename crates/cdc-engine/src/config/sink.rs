//! `sinks[]` entries: a `type` key choosing the sink, and that sink's keys.
//!
//! An entry is decoded in two steps, first `type`, then the rest with the
//! chosen sink's struct, rather than as an internally tagged enum: serde
//! buffers tagged enums before decoding the variant, which loses the path of
//! errors inside it (`sinks[1]` instead of `sinks[1].path`).

use std::path::PathBuf;
use std::sync::Arc;

use cdc_core::SinkSettings;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::error::{join_key, ConfigProblem};

/// Decodes the keys of a sink entry found at a field (`sinks[1]`).
type DecodeSettings = fn(Mapping, &str) -> Result<Arc<dyn SinkSettings>, ConfigProblem>;

/// A sink type that a sink crate provides: its `type` name and how to
/// decode the keys of its entries.
struct SinkType {
    name: &'static str,
    decode: DecodeSettings,
}

impl SinkType {
    #[cfg_attr(
        not(any(feature = "kafka", feature = "nats", feature = "elasticsearch")),
        allow(dead_code)
    )]
    const fn of<T: DeserializeOwned + SinkSettings>(name: &'static str) -> SinkType {
        SinkType {
            name,
            decode: decode_settings::<T>,
        }
    }
}

/// The sink crates of this build, by `type`. Adding a sink crate: its
/// config struct implements [`SinkSettings`], and one line here (behind
/// the crate's cargo feature).
const SINK_CRATES: &[SinkType] = &[
    #[cfg(feature = "kafka")]
    SinkType::of::<cdc_kafka::KafkaSinkConfig>("kafka"),
    #[cfg(feature = "nats")]
    SinkType::of::<cdc_nats::NatsSinkConfig>("nats"),
    #[cfg(feature = "elasticsearch")]
    SinkType::of::<cdc_es::EsSinkConfig>("elasticsearch"),
];

/// Every sink type name, including those this build does not provide.
const SINK_TYPES: &str = "stdout, file, kafka, nats, elasticsearch";

/// One entry of `sinks`, chosen by its `type` key: a sink built into the
/// engine, or one of a sink crate.
#[derive(Clone)]
#[non_exhaustive]
pub enum SinkConfig {
    /// `type: stdout`.
    Stdout(StdoutSinkConfig),
    /// `type: file`.
    File(FileSinkConfig),
    /// A sink crate's type (`kafka`, `nats`, `elasticsearch`).
    Crate(CrateSinkConfig),
}

/// The entry of a sink a sink crate provides.
#[derive(Clone)]
#[non_exhaustive]
pub struct CrateSinkConfig {
    /// The `type` value, e.g. `kafka`.
    pub kind: &'static str,
    /// Its keys, decoded by the sink crate.
    pub settings: Arc<dyn SinkSettings>,
}

impl SinkConfig {
    /// The `type` value: `stdout`, `file`, `kafka`, ...
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Stdout(_) => "stdout",
            Self::File(_) => "file",
            Self::Crate(c) => c.kind,
        }
    }
}

/// Sink crates' settings are shown only as their type: they may hold
/// passwords, tokens and keys (and URLs with credentials).
impl std::fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stdout(c) => f.debug_tuple("Stdout").field(c).finish(),
            Self::File(c) => f.debug_tuple("File").field(c).finish(),
            Self::Crate(c) => write!(f, "{}(..)", c.kind),
        }
    }
}

/// `type: stdout`: each change as one line of JSON on standard output. Not
/// a durable store. No other keys.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StdoutSinkConfig {}

/// `type: file`: each change as one line of JSON appended to a file,
/// `fsync`ed before the batch counts as durable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
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
        kind => match SINK_CRATES.iter().find(|t| t.name == kind) {
            Some(t) => (t.decode)(entry, field).map(|settings| {
                SinkConfig::Crate(CrateSinkConfig {
                    kind: t.name,
                    settings,
                })
            }),
            None if SINK_TYPES.split(", ").any(|t| t == kind) => Err(ConfigProblem::new(
                type_field,
                format!("sink type `{kind}` is not available in this build"),
            )),
            None => Err(ConfigProblem::new(
                type_field,
                format!("unknown sink type `{kind}`, expected one of {SINK_TYPES}"),
            )),
        },
    }
}

/// Decodes a sink crate's entry.
#[cfg_attr(
    not(any(feature = "kafka", feature = "nats", feature = "elasticsearch")),
    allow(dead_code)
)]
fn decode_settings<T: DeserializeOwned + SinkSettings>(
    entry: Mapping,
    field: &str,
) -> Result<Arc<dyn SinkSettings>, ConfigProblem> {
    decode::<T>(entry, field).map(|t| Arc::new(t) as Arc<dyn SinkSettings>)
}

/// Decodes the keys of a sink entry other than `type`.
fn decode<T: DeserializeOwned>(entry: Mapping, field: &str) -> Result<T, ConfigProblem> {
    serde_path_to_error::deserialize(Value::Mapping(entry))
        .map_err(|err| ConfigProblem::from_serde(field, err))
}
