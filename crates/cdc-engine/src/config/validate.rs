//! Semantic checks of a parsed [`Config`]: pure (no network, no files), and
//! reporting every problem rather than the first.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use cdc_core::TableName;

use super::error::{join_key, ConfigError, ConfigProblem};
use super::model::{Config, MetricsConfig, PipelineConfig, RetryConfig, SourceConfig};
use super::sink::SinkConfig;

/// PostgreSQL's identifier length limit (`NAMEDATALEN - 1`).
const MAX_NAME_LEN: usize = 63;

/// Checks everything that parsing alone does not: required lists are not
/// empty, names follow PostgreSQL's rules, tables are not listed twice, limits
/// are at least 1, … [`parse_config`](super::parse_config) and
/// [`load_config`](super::load_config) already call it.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    let mut problems = problems_except_sinks(config);
    problems.extend(sink_problems(&config.sinks));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { problems })
    }
}

/// Every problem outside `sinks`.
pub(crate) fn problems_except_sinks(config: &Config) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    check_name(&config.name, &mut problems);
    check_source(&config.source, &mut problems);
    check_pipeline(&config.pipeline, &mut problems);
    check_retry(&config.retry, &mut problems);
    if let Some(metrics) = &config.metrics {
        check_metrics(metrics, &mut problems);
    }
    check_intervals(config, &mut problems);
    super::snapshot::check_snapshot(&config.snapshot, &config.source, &mut problems);
    problems
}

fn check_name(name: &str, problems: &mut Vec<ConfigProblem>) {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        problems.push(ConfigProblem::new(
            "name",
            "must be non-empty and use only letters, digits, `.`, `_` and `-`",
        ));
    }
}

fn check_source(source: &SourceConfig, problems: &mut Vec<ConfigProblem>) {
    // The URL itself is never quoted: it may hold a password.
    if !(source.url.starts_with("postgres://") || source.url.starts_with("postgresql://")) {
        problems.push(ConfigProblem::new(
            "source.url",
            "must be a connection URL starting with `postgres://` or `postgresql://`",
        ));
    }
    if let Some(url) = &source.primary_url {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            problems.push(ConfigProblem::new(
                "source.primary_url",
                "must be a connection URL starting with `postgres://` or `postgresql://`",
            ));
        }
    }

    if source.tables.is_empty() && source.table_patterns.is_empty() {
        problems.push(ConfigProblem::new(
            "source.tables",
            "must list at least one table or pattern",
        ));
    }
    for (i, p) in source.table_patterns.iter().enumerate() {
        if source.table_patterns[..i].contains(p) {
            problems.push(ConfigProblem::new(
                "source.tables",
                format!("pattern `{p}` is listed twice"),
            ));
        }
    }
    let mut first_seen: HashMap<&TableName, usize> = HashMap::new();
    for (i, table) in source.tables.iter().enumerate() {
        match first_seen.entry(table) {
            Entry::Vacant(entry) => {
                entry.insert(i);
            }
            Entry::Occupied(first) => problems.push(ConfigProblem::new(
                format!("source.tables[{i}]"),
                format!(
                    "table `{table}` is already listed at source.tables[{}]",
                    first.get()
                ),
            )),
        }
    }

    let publication = &source.publication.name;
    if !is_name(publication, |c| c.is_ascii_alphanumeric() || c == '_') {
        problems.push(ConfigProblem::new(
            "source.publication.name",
            format!(
                "invalid publication name `{publication}`: use 1 to {MAX_NAME_LEN} characters among A-Z, a-z, 0-9 and `_`"
            ),
        ));
    }
    let slot = &source.slot.name;
    if !is_name(slot, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
    }) {
        problems.push(ConfigProblem::new(
            "source.slot.name",
            format!(
                "invalid replication slot name `{slot}`: PostgreSQL allows only 1 to {MAX_NAME_LEN} lower-case letters, digits and `_`"
            ),
        ));
    }

    check_subsets(source, problems);

    let mut configured = HashSet::new();
    for (table, _) in &source.replica_identity {
        let field = join_key("source.replica_identity", &table.to_string());
        if !source.selects(table) {
            problems.push(ConfigProblem::new(
                field,
                format!(
                    "table `{table}` is not listed in source.tables (by name or pattern), \
                     or source.exclude_tables leaves it out"
                ),
            ));
        } else if !configured.insert(table) {
            problems.push(ConfigProblem::new(
                field,
                format!("table `{table}` is given a replica identity twice"),
            ));
        }
    }
}

/// `name` has 1 to 63 characters, all accepted by `allowed`.
fn is_name(name: &str, allowed: impl Fn(char) -> bool) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len()) && name.chars().all(allowed)
}

/// Every problem in `sinks`, whose positions are the entries' indices.
pub(crate) fn sink_problems(sinks: &[SinkConfig]) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    if sinks.is_empty() {
        problems.push(ConfigProblem::new("sinks", "must list at least one sink"));
    }
    let mut files = HashMap::new();
    for (i, sink) in sinks.iter().enumerate() {
        match sink {
            SinkConfig::Stdout(_) => {}
            SinkConfig::File(file) => {
                let field = format!("sinks[{i}].path");
                if file.path.as_os_str().is_empty() {
                    problems.push(ConfigProblem::new(field, "must not be empty"));
                } else {
                    match files.entry(&file.path) {
                        Entry::Vacant(entry) => {
                            entry.insert(i);
                        }
                        Entry::Occupied(first) => problems.push(ConfigProblem::new(
                            field,
                            format!(
                                "file `{}` is already written by sinks[{}]",
                                file.path.display(),
                                first.get()
                            ),
                        )),
                    }
                }
            }
            SinkConfig::Crate(c) => push_sink_problems(&mut problems, i, c.settings.problems()),
        }
    }
    problems
}

/// Adds a sink crate's own `(field, message)` findings under `sinks[i]`.
fn push_sink_problems(problems: &mut Vec<ConfigProblem>, i: usize, found: Vec<(String, String)>) {
    for (field, message) in found {
        problems.push(ConfigProblem::new(format!("sinks[{i}].{field}"), message));
    }
}

fn check_pipeline(pipeline: &PipelineConfig, problems: &mut Vec<ConfigProblem>) {
    let limits = [
        ("pipeline.channel_capacity", pipeline.channel_capacity),
        ("pipeline.max_batch_events", pipeline.max_batch_events),
        ("pipeline.max_batch_bytes", pipeline.max_batch_bytes),
    ];
    for (field, value) in limits {
        if value == 0 {
            problems.push(ConfigProblem::new(field, "must be at least 1"));
        }
    }
    if pipeline.shutdown_timeout.is_zero() {
        problems.push(ConfigProblem::new(
            "pipeline.shutdown_timeout",
            "must be greater than zero",
        ));
    }
}

fn check_metrics(metrics: &MetricsConfig, problems: &mut Vec<ConfigProblem>) {
    if metrics.lag_poll_interval.is_zero() {
        problems.push(ConfigProblem::new(
            "metrics.lag_poll_interval",
            "must be greater than zero",
        ));
    }
}

fn check_intervals(config: &Config, problems: &mut Vec<ConfigProblem>) {
    if config.heartbeat.interval.is_zero() {
        problems.push(ConfigProblem::new(
            "heartbeat.interval",
            "must be greater than zero",
        ));
    }
    if config.source.discovery.interval.is_zero() {
        problems.push(ConfigProblem::new(
            "source.discovery.interval",
            "must be greater than zero",
        ));
    }
    if config.source.slot.activity_check_interval.is_zero() {
        problems.push(ConfigProblem::new(
            "source.slot.activity_check_interval",
            "must be greater than zero",
        ));
    }
}

fn check_retry(retry: &RetryConfig, problems: &mut Vec<ConfigProblem>) {
    if retry.initial_backoff.is_zero() {
        problems.push(ConfigProblem::new(
            "retry.initial_backoff",
            "must be greater than zero",
        ));
    }
    if retry.give_up_after.is_some_and(|bound| bound.is_zero()) {
        problems.push(ConfigProblem::new(
            "retry.give_up_after",
            "must be greater than zero (leave it out to retry for ever)",
        ));
    }
    if retry.max_backoff < retry.initial_backoff {
        problems.push(ConfigProblem::new(
            "retry.max_backoff",
            format!(
                "must be at least retry.initial_backoff ({:?}), is {:?}",
                retry.initial_backoff, retry.max_backoff
            ),
        ));
    }
}

/// `source.columns` and `source.row_filters`: selected tables, non-empty
/// lists and filters, each table once, and a publication the engine
/// manages.
fn check_subsets(source: &SourceConfig, problems: &mut Vec<ConfigProblem>) {
    let mut seen: HashSet<&TableName> = HashSet::new();
    for (table, columns) in &source.columns {
        let field = join_key("source.columns", &table.to_string());
        if !source.selects(table) {
            problems.push(ConfigProblem::new(
                field,
                format!("table `{table}` is not listed in source.tables (by name or pattern)"),
            ));
            continue;
        }
        if !seen.insert(table) {
            problems.push(ConfigProblem::new(
                field,
                format!("table `{table}` is given twice"),
            ));
            continue;
        }
        let (key, list) = match (&columns.include, &columns.exclude) {
            (Some(l), None) => ("include", l),
            (None, Some(l)) => ("exclude", l),
            _ => {
                problems.push(ConfigProblem::new(
                    field,
                    "give exactly one of `include` and `exclude`",
                ));
                continue;
            }
        };
        if list.is_empty() || list.iter().any(|c| c.is_empty()) {
            problems.push(ConfigProblem::new(
                format!("{field}.{key}"),
                "must list at least one column, each a non-empty name",
            ));
        }
    }
    let mut seen: HashSet<&TableName> = HashSet::new();
    for (table, filter) in &source.row_filters {
        let field = join_key("source.row_filters", &table.to_string());
        if !source.selects(table) {
            problems.push(ConfigProblem::new(
                field,
                format!("table `{table}` is not listed in source.tables (by name or pattern)"),
            ));
        } else if !seen.insert(table) {
            problems.push(ConfigProblem::new(
                field,
                format!("table `{table}` is given twice"),
            ));
        } else if filter.trim().is_empty() {
            problems.push(ConfigProblem::new(
                field,
                "must be a boolean SQL expression",
            ));
        }
    }
    if (!source.columns.is_empty() || !source.row_filters.is_empty()) && !source.publication.create
    {
        problems.push(ConfigProblem::new(
            "source.publication.create",
            "must be true with source.columns or source.row_filters (the engine sets them on the \
             publication); with a publication made by hand, put the column list and row filter on \
             the publication itself: the snapshot reads them from there",
        ));
    }
}
