//! Reading a configuration: file → `${VAR}` interpolation → YAML → sinks →
//! validation.

use std::path::Path;

use serde::Deserialize;

use super::error::{ConfigError, ConfigProblem};
use super::interpolate::interpolate;
use super::model::{
    default_name, deserialize_metrics, Config, HeartbeatConfig, LogConfig, MetricsConfig,
    PipelineConfig, RetryConfig, SourceConfig,
};
use super::sink::decode_sink;
use super::snapshot::SnapshotConfig;
use super::validate::{problems_except_sinks, sink_problems};

/// The top level of the file as parsed; sinks are decoded afterwards (see
/// the `sink` module). Keys are documented on [`Config`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigDocument {
    #[serde(default = "default_name")]
    name: String,
    source: SourceConfig,
    sinks: Vec<serde_yaml::Value>,
    #[serde(default)]
    pipeline: PipelineConfig,
    #[serde(default)]
    retry: RetryConfig,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    snapshot: SnapshotConfig,
    #[serde(default, deserialize_with = "deserialize_metrics")]
    metrics: Option<MetricsConfig>,
    #[serde(default)]
    heartbeat: HeartbeatConfig,
}

/// Reads, interpolates, parses and validates the configuration file at
/// `path`. `${VAR}` references are resolved from the process environment.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        ConfigError::single(
            "",
            format!("cannot read config file {}: {err}", path.display()),
        )
    })?;
    parse_config(&text)
}

/// Interpolates, parses and validates configuration text, resolving
/// `${VAR}` references from the process environment.
pub fn parse_config(yaml_text: &str) -> Result<Config, ConfigError> {
    parse_config_with_env(yaml_text, |name| std::env::var(name).ok())
}

/// [`parse_config`] with `${VAR}` references resolved by `lookup`.
pub(crate) fn parse_config_with_env(
    yaml_text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let text = interpolate(yaml_text, lookup)?;
    if text.lines().all(|line| {
        let line = line.trim_start();
        line.is_empty() || line.starts_with('#')
    }) {
        return Err(ConfigError::single("", "the configuration is empty"));
    }
    let document: ConfigDocument =
        serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(&text))
            .map_err(|err| ConfigError::from(vec![ConfigProblem::from_serde("", err)]))?;

    let mut problems = Vec::new();
    let mut sinks = Vec::with_capacity(document.sinks.len());
    for (i, value) in document.sinks.into_iter().enumerate() {
        match decode_sink(value, &format!("sinks[{i}]")) {
            Ok(sink) => sinks.push(sink),
            Err(problem) => problems.push(problem),
        }
    }
    let config = Config {
        name: document.name,
        source: document.source,
        sinks,
        pipeline: document.pipeline,
        retry: document.retry,
        log: document.log,
        snapshot: document.snapshot,
        metrics: document.metrics,
        heartbeat: document.heartbeat,
    };
    // Sink checks name entries by index: skip them when some entries failed
    // to decode and are missing from `config.sinks`.
    if problems.is_empty() {
        problems.extend(sink_problems(&config.sinks));
    }
    problems.extend(problems_except_sinks(&config));
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError { problems })
    }
}
