//! Whole-file tests: valid configurations and, for each kind of mistake, the
//! field the error names.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use cdc_core::TableName;

use super::load::parse_config_with_env;
use super::*;

const FULL: &str = r#"
name: shop
source:
  url: postgres://app:${PGPASSWORD}@127.0.0.1:5432/app
  tables: [public.users, Public.Orders, '"Mixed Case"."odd ""name"""']
  publication: { name: shop_pub, create: false }
  slot: { name: shop_slot, create: false, standby: true, failover: true, activity_check_interval: 3s }
  replica_identity: { public.users: full, public.orders: default }
sinks:
  - type: stdout
  - type: file
    path: ./out/changes.jsonl
pipeline:
  channel_capacity: 4
  max_batch_events: 100
  max_batch_bytes: 1MiB
  max_batch_wait: 50ms
retry: { initial_backoff: 1s, max_backoff: 1m, give_up_after: 10m }
log: { level: debug, format: json }
heartbeat: { interval: 30s, enabled: false }
"#;

/// The `source` section of a minimal file; `with_sinks` completes it.
const MINIMAL: &str = "source:\n  url: postgres://u@h/db\n  tables: [public.users]\n";

fn env(name: &str) -> Option<String> {
    match name {
        "PGPASSWORD" => Some("s3cret".into()),
        "SLOT" => Some("from_env".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_config_with_env(text, env)
}

/// The problems of an invalid file, as `field: message` lines.
fn problems(text: &str) -> Vec<(String, String)> {
    let err = parse(text).expect_err("the configuration should be invalid");
    err.problems
        .into_iter()
        .map(|p| (p.field, p.message))
        .collect()
}

/// Asserts that the only problem is about `field` and its message contains
/// `needle`.
#[track_caller]
fn assert_problem(text: &str, field: &str, needle: &str) {
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, field, "{found:?}");
    assert!(found[0].1.contains(needle), "{found:?}");
}

/// `source`, one stdout sink, then `rest` (more top-level keys).
fn with_sinks(source: &str, rest: &str) -> String {
    format!("{source}sinks:\n  - type: stdout\n{rest}")
}

/// [`MINIMAL`] with its sinks and `extra` appended to `source.tables`'s
/// line (`"\n  exclude_tables: [...]"` adds a source key).
fn with_source(extra: &str) -> String {
    with_sinks(
        &MINIMAL.replace("[public.users]", &format!("[public.users]{extra}")),
        "",
    )
}

#[test]
fn full_config() {
    let config = parse(FULL).unwrap();
    assert_eq!(config.name, "shop");
    assert_eq!(
        config.source.url,
        "postgres://app:s3cret@127.0.0.1:5432/app"
    );
    assert_eq!(
        config.source.tables,
        vec![
            TableName::new("public", "users"),
            TableName::new("public", "orders"),
            TableName::new("Mixed Case", "odd \"name\""),
        ]
    );
    assert_eq!(
        config.source.publication,
        PublicationConfig {
            name: "shop_pub".into(),
            create: false
        }
    );
    assert_eq!(
        config.source.slot,
        SlotConfig {
            name: "shop_slot".into(),
            create: false,
            standby: true,
            failover: true,
            activity_check_interval: Duration::from_secs(3),
        }
    );
    assert_eq!(
        config.heartbeat,
        HeartbeatConfig {
            enabled: false,
            interval: Duration::from_secs(30),
        }
    );
    assert_eq!(
        config.source.replica_identity,
        vec![
            (
                TableName::new("public", "users"),
                ReplicaIdentitySetting::Full
            ),
            (
                TableName::new("public", "orders"),
                ReplicaIdentitySetting::Default
            ),
        ]
    );
    assert!(
        matches!(
            config.sinks.as_slice(),
            [SinkConfig::Stdout(StdoutSinkConfig {}), SinkConfig::File(FileSinkConfig { path })]
                if path == &PathBuf::from("./out/changes.jsonl")
        ),
        "{:?}",
        config.sinks
    );
    assert_eq!(
        config.pipeline,
        PipelineConfig {
            channel_capacity: 4,
            max_batch_events: 100,
            max_batch_bytes: 1 << 20,
            max_batch_wait: Duration::from_millis(50),
            shutdown_timeout: Duration::from_secs(30),
        }
    );
    assert_eq!(
        config.retry,
        RetryConfig {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            give_up_after: Some(Duration::from_secs(600)),
        }
    );
    assert_eq!(
        config.log,
        LogConfig {
            level: LogLevel::Debug,
            format: LogFormat::Json
        }
    );
}

#[test]
fn defaults() {
    let config = parse(&with_sinks(MINIMAL, "")).unwrap();
    assert_eq!(config.name, "cdc");
    assert_eq!(config.source.publication.name, "cdc_pub");
    assert!(config.source.publication.create);
    assert_eq!(config.source.slot.name, "cdc_slot");
    assert!(config.source.slot.create);
    assert!(config.source.replica_identity.is_empty());
    assert_eq!(config.pipeline.channel_capacity, 8);
    assert_eq!(config.pipeline.max_batch_events, 2048);
    assert_eq!(config.pipeline.max_batch_bytes, 8 * 1024 * 1024);
    assert_eq!(config.pipeline.max_batch_wait, Duration::from_millis(10));
    assert_eq!(config.retry.initial_backoff, Duration::from_millis(200));
    assert_eq!(config.retry.max_backoff, Duration::from_secs(30));
    assert_eq!(config.log.level, LogLevel::Info);
    assert_eq!(config.log.format, LogFormat::Text);
}

#[test]
fn debug_output_masks_the_password() {
    let config = parse(FULL).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(
        debug.contains("postgres://app:***@127.0.0.1:5432/app"),
        "{debug}"
    );
    assert_eq!(
        config.source.redacted_url(),
        "postgres://app:***@127.0.0.1:5432/app"
    );
}

#[test]
fn unknown_top_level_key() {
    assert_problem(
        &with_sinks(MINIMAL, "sink: []\n"),
        "sink",
        "unknown field `sink`",
    );
}

#[test]
fn unknown_nested_key() {
    let text = MINIMAL.replace("  tables", "  slot: { nme: x }\n  tables");
    assert_problem(
        &with_sinks(&text, ""),
        "source.slot.nme",
        "unknown field `nme`",
    );
    assert_problem(
        &with_sinks(MINIMAL, "pipeline: { max_batch_event: 1 }\n"),
        "pipeline.max_batch_event",
        "expected one of",
    );
}

#[test]
fn unknown_sink_key() {
    let text = format!("{MINIMAL}sinks:\n  - type: file\n    pathh: x\n");
    assert_problem(
        &text,
        "sinks[0].pathh",
        "unknown field `pathh`, expected `path`",
    );
    let text = format!("{MINIMAL}sinks:\n  - type: stdout\n    path: x\n");
    assert_problem(&text, "sinks[0].path", "unknown field `path`");
}

#[test]
fn errors_carry_line_and_column() {
    let text = with_sinks(MINIMAL, "pipeline:\n  max_batch_wait: soon\n");
    assert_problem(&text, "pipeline.max_batch_wait", "at line 7 column 19");
}

#[test]
fn missing_url() {
    let text = "source:\n  tables: [public.users]\nsinks: [{ type: stdout }]\n";
    assert_problem(text, "source.url", "missing field `url`");
}

#[test]
fn missing_source_and_sinks() {
    assert_problem(
        "sinks: [{ type: stdout }]\n",
        "source",
        "missing field `source`",
    );
    assert_problem(MINIMAL, "sinks", "missing field `sinks`");
}

#[test]
fn not_a_postgres_url() {
    let text = with_sinks(
        &MINIMAL.replace("postgres://u@h/db", "mysql://u:pw@h/db"),
        "",
    );
    let found = problems(&text);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, "source.url");
    assert!(!found[0].1.contains("pw"), "{found:?}");
}

#[test]
fn empty_tables() {
    let text = with_sinks(&MINIMAL.replace("[public.users]", "[]"), "");
    assert_problem(&text, "source.tables", "at least one table");
}

#[test]
fn bad_table_syntax() {
    let text = with_sinks(
        &MINIMAL.replace("[public.users]", "[public.users, a.b.c]"),
        "",
    );
    assert_problem(&text, "source.tables[1]", "invalid table name `a.b.c`");
    let text = with_sinks(
        &MINIMAL.replace("[public.users]", "[public.users, '\"unterminated']"),
        "",
    );
    assert_problem(&text, "source.tables[1]", "unterminated quoted identifier");
}

#[test]
fn unqualified_table() {
    let text = with_sinks(&MINIMAL.replace("[public.users]", "[users]"), "");
    assert_problem(&text, "source.tables[0]", "must be schema-qualified");
}

#[test]
fn duplicate_table() {
    let text = with_sinks(
        &MINIMAL.replace("[public.users]", "[public.users, x.y, Public.USERS]"),
        "",
    );
    assert_problem(
        &text,
        "source.tables[2]",
        "already listed at source.tables[0]",
    );
}

#[test]
fn replica_identity_for_unlisted_table() {
    let text =
        MINIMAL.to_owned() + "  replica_identity: { public.users: full, public.orders: full }\n";
    assert_problem(
        &with_sinks(&text, ""),
        "source.replica_identity.\"public.orders\"",
        "not listed in source.tables",
    );
}

#[test]
fn unqualified_replica_identity_table() {
    let text = MINIMAL.to_owned() + "  replica_identity: { users: full }\n";
    assert_problem(
        &with_sinks(&text, ""),
        "source.replica_identity.users",
        "invalid table name `users`: it must be schema-qualified",
    );
}

#[test]
fn bad_replica_identity_value() {
    let text = MINIMAL.to_owned() + "  replica_identity: { public.users: everything }\n";
    assert_problem(
        &with_sinks(&text, ""),
        "source.replica_identity.\"public.users\"",
        "unknown variant `everything`",
    );
}

#[test]
fn bad_slot_and_publication_names() {
    let text =
        MINIMAL.to_owned() + "  slot: { name: My-Slot }\n  publication: { name: 'my pub' }\n";
    let found = problems(&with_sinks(&text, ""));
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].0, "source.publication.name");
    assert_eq!(found[1].0, "source.slot.name");
    assert!(
        found[1].1.contains("lower-case letters, digits and `_`"),
        "{found:?}"
    );
    let long = "s".repeat(64);
    let text = MINIMAL.to_owned() + &format!("  slot: {{ name: {long} }}\n");
    assert_problem(&with_sinks(&text, ""), "source.slot.name", "1 to 63");
}

#[test]
fn bad_duration() {
    let text = with_sinks(MINIMAL, "retry: { initial_backoff: 10 }\n");
    assert_problem(&text, "retry.initial_backoff", "has no unit");
    let text = with_sinks(MINIMAL, "retry: { max_backoff: 1.5s }\n");
    assert_problem(&text, "retry.max_backoff", "invalid duration `1.5s`");
    let text = with_sinks(MINIMAL, "retry: { give_up_after: 10 }\n");
    assert_problem(&text, "retry.give_up_after", "has no unit");
    let text = with_sinks(MINIMAL, "retry: { give_up_after: 0s }\n");
    assert_problem(&text, "retry.give_up_after", "greater than zero");
}

#[test]
fn bad_size() {
    let text = with_sinks(MINIMAL, "pipeline: { max_batch_bytes: 8 megabytes }\n");
    assert_problem(&text, "pipeline.max_batch_bytes", "invalid size");
    let text = with_sinks(MINIMAL, "pipeline: { max_batch_bytes: 4096 }\n");
    assert_eq!(parse(&text).unwrap().pipeline.max_batch_bytes, 4096);
}

#[test]
fn zero_capacity() {
    let text = with_sinks(MINIMAL, "pipeline: { channel_capacity: 0 }\n");
    assert_problem(&text, "pipeline.channel_capacity", "at least 1");
}

#[test]
fn semantic_problems_are_all_reported() {
    let text = format!(
        "name: ''\n{}  slot: {{ name: BAD }}\nsinks: []\npipeline: {{ channel_capacity: 0, max_batch_events: 0 }}\nretry: {{ initial_backoff: 2s, max_backoff: 1s }}\n",
        MINIMAL.replace("[public.users]", "[public.a, public.a]")
    );
    let fields: Vec<String> = problems(&text).into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        [
            "sinks",
            "name",
            "source.tables[1]",
            "source.slot.name",
            "pipeline.channel_capacity",
            "pipeline.max_batch_events",
            "retry.max_backoff",
        ]
    );
}

#[test]
fn missing_file_path() {
    let text = format!("{MINIMAL}sinks:\n  - type: stdout\n  - type: file\n");
    assert_problem(&text, "sinks[1].path", "missing field `path`");
}

#[test]
fn bad_file_path_type() {
    let text = format!("{MINIMAL}sinks:\n  - type: file\n    path: [a]\n");
    assert_problem(&text, "sinks[0].path", "invalid type");
}

#[test]
fn duplicate_file_paths() {
    let text = format!(
        "{MINIMAL}sinks:\n  - {{ type: file, path: a.jsonl }}\n  - {{ type: stdout }}\n  - {{ type: file, path: a.jsonl }}\n"
    );
    assert_problem(&text, "sinks[2].path", "already written by sinks[0]");
}

#[test]
fn unknown_sink_type() {
    let text = format!("{MINIMAL}sinks:\n  - type: stdout\n  - type: x\n");
    assert_problem(
        &text,
        "sinks[1].type",
        "unknown sink type `x`, expected one of stdout, file, kafka, nats, elasticsearch",
    );
}

#[test]
fn sinks_accept_yaml_merge_keys() {
    let text = format!(
        "{MINIMAL}file_defaults: &file {{ type: file }}\nsinks:\n  - {{ <<: *file, path: a.jsonl }}\n"
    );
    // `file_defaults` is an unknown top-level key: anchors must live in
    // the entries themselves.
    assert_problem(&text, "file_defaults", "unknown field");
    let text = format!(
        "{MINIMAL}sinks:\n  - &file {{ type: file, path: a.jsonl }}\n  - {{ <<: *file, path: b.jsonl }}\n"
    );
    let config = parse(&text).unwrap();
    assert!(
        matches!(&config.sinks[1], SinkConfig::File(FileSinkConfig { path }) if path == &PathBuf::from("b.jsonl")),
        "{:?}",
        config.sinks[1]
    );
}

#[test]
fn missing_sink_type() {
    let text = format!("{MINIMAL}sinks:\n  - path: x\n");
    assert_problem(&text, "sinks[0].type", "missing field `type`");
}

#[test]
fn every_bad_sink_is_reported() {
    let text = format!("{MINIMAL}sinks:\n  - type: kafkaa\n  - type: file\n  - type: bogus\n");
    let fields: Vec<String> = problems(&text).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["sinks[0].type", "sinks[1].path", "sinks[2].type"]);
}

#[test]
#[cfg(not(feature = "kafka"))]
fn kafka_not_available() {
    let text = format!("{MINIMAL}sinks:\n  - type: kafka\n    brokers: x\n");
    assert_problem(
        &text,
        "sinks[0].type",
        "sink type `kafka` is not available in this build",
    );
}

#[test]
#[cfg(feature = "kafka")]
fn kafka_entry_fields_are_named() {
    let text = format!("{MINIMAL}sinks:\n  - type: kafka\n    brokerz: x\n");
    assert_problem(&text, "sinks[0].brokerz", "unknown field `brokerz`");
}

#[test]
fn unset_env_var() {
    let text = with_sinks(&MINIMAL.replace("u@h", "u:${NOT_SET}@h"), "");
    assert_problem(
        &text,
        "line 2, column 21",
        "environment variable `NOT_SET` is not set",
    );
}

#[test]
fn env_var_with_default() {
    let text = MINIMAL.to_owned()
        + "  slot: { name: '${SLOT}' }\n  publication: { name: \"${PUB:-fallback_pub}\" }\n";
    let config = parse(&with_sinks(&text, "")).unwrap();
    assert_eq!(config.source.slot.name, "from_env");
    assert_eq!(config.source.publication.name, "fallback_pub");
}

#[test]
fn env_var_in_a_number() {
    let text = with_sinks(MINIMAL, "pipeline: { channel_capacity: ${CAP:-16} }\n");
    assert_eq!(parse(&text).unwrap().pipeline.channel_capacity, 16);
}

#[test]
fn not_yaml() {
    assert_problem(
        "source: {\n  url: x\n  tables: [a.b\n",
        "source",
        "at line 3 column 9",
    );
    assert_problem("- a\n", "", "expected a map");
    assert_eq!(problems("# nothing\n\n")[0].1, "the configuration is empty");
}

#[test]
fn load_config_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipeline.yaml");
    std::fs::write(&path, with_sinks(MINIMAL, "")).unwrap();
    assert_eq!(load_config(&path).unwrap().name, "cdc");
}

#[test]
fn missing_file() {
    let path = std::path::Path::new("/nonexistent/pipeline.yaml");
    let err = load_config(path).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("cannot read config file /nonexistent/pipeline.yaml: "),
        "{text}"
    );
}

#[test]
fn display_is_one_line_per_problem() {
    let err = ConfigError {
        problems: vec![
            ConfigProblem::new("source.url", "a"),
            ConfigProblem::new("", "b"),
        ],
    };
    assert_eq!(err.to_string(), "source.url: a\nb");
}

#[test]
fn documented_example_is_valid() {
    let doc = include_str!("../../../../docs/configuration.md");
    let start = doc
        .find("```yaml\n")
        .expect("the reference has a YAML example")
        + 8;
    let end = start + doc[start..].find("```").unwrap();
    let example = &doc[start..end];
    let config = parse_config_with_env(example, |_| Some("secret".into())).unwrap();
    assert!(!config.sinks.is_empty());
}

#[test]
fn metrics_section_absent_empty_or_set() {
    assert_eq!(parse(&with_sinks(MINIMAL, "")).unwrap().metrics, None);
    for section in ["metrics: {}\n", "metrics:\n"] {
        let metrics = parse(&with_sinks(MINIMAL, section)).unwrap().metrics;
        let metrics = metrics.expect("a present section enables the endpoint");
        assert_eq!(metrics.listen.to_string(), "127.0.0.1:9187");
        assert_eq!(metrics.hold_after_failure, Duration::from_secs(5));
        assert_eq!(metrics.lag_poll_interval, Duration::from_secs(5));
        assert!(!metrics.snapshot_requests);
    }
    let text = with_sinks(
        MINIMAL,
        "metrics: { listen: '0.0.0.0:9999', hold_after_failure: 0ms, lag_poll_interval: 1s, \
         snapshot_requests: true }\n",
    );
    let metrics = parse(&text).unwrap().metrics.unwrap();
    assert!(metrics.snapshot_requests);
    assert_eq!(metrics.listen.to_string(), "0.0.0.0:9999");
    assert_eq!(metrics.hold_after_failure, Duration::ZERO);
    assert_eq!(metrics.lag_poll_interval, Duration::from_secs(1));
}

#[test]
fn metrics_and_shutdown_mistakes_name_their_field() {
    let text = with_sinks(MINIMAL, "metrics: { listen: 'localhost' }\n");
    assert_problem(&text, "metrics.listen", "");
    let text = with_sinks(MINIMAL, "metrics: { lag_poll_interval: 0s }\n");
    assert_problem(&text, "metrics.lag_poll_interval", "greater than zero");
    let text = with_sinks(MINIMAL, "metrics: { port: 1 }\n");
    assert_problem(&text, "metrics.port", "unknown field");
    let text = with_sinks(MINIMAL, "pipeline: { shutdown_timeout: 0s }\n");
    assert_problem(&text, "pipeline.shutdown_timeout", "greater than zero");
    let text = with_sinks(MINIMAL, "pipeline: { shutdown_timeout: 2m }\n");
    assert_eq!(
        parse(&text).unwrap().pipeline.shutdown_timeout,
        Duration::from_secs(120)
    );
}

#[test]
fn heartbeat_and_standby_defaults_and_checks() {
    let config = parse(&with_sinks(MINIMAL, "")).unwrap();
    assert_eq!(config.heartbeat, HeartbeatConfig::default());
    assert!(config.heartbeat.enabled);
    assert_eq!(config.heartbeat.interval, Duration::from_secs(10));
    assert!(!config.source.slot.standby);
    assert_eq!(
        config.source.slot.activity_check_interval,
        Duration::from_secs(10)
    );

    assert_problem(
        &with_sinks(MINIMAL, "heartbeat: { interval: 0s }\n"),
        "heartbeat.interval",
        "greater than zero",
    );
    let text = MINIMAL.replace(
        "  tables",
        "  slot: { standby: true, activity_check_interval: 0ms }\n  tables",
    );
    assert_problem(
        &with_sinks(&text, ""),
        "source.slot.activity_check_interval",
        "greater than zero",
    );
    let found = problems(&with_sinks(MINIMAL, "heartbeat: { every: 1s }\n"));
    assert!(found[0].1.contains("every"), "{found:?}");
}

#[test]
fn discovery_defaults_and_checks() {
    let config = parse(&with_sinks(MINIMAL, "")).unwrap();
    assert!(config.source.discovery.enabled);
    assert_eq!(config.source.discovery.interval, Duration::from_secs(10));
    let text = MINIMAL.replace(
        "  tables",
        "  discovery: { enabled: false, interval: 2s }\n  tables",
    );
    let config = parse(&with_sinks(&text, "")).unwrap();
    assert!(!config.source.discovery.enabled);
    assert_eq!(config.source.discovery.interval, Duration::from_secs(2));
    let text = MINIMAL.replace("  tables", "  discovery: { interval: 0s }\n  tables");
    assert_problem(
        &with_sinks(&text, ""),
        "source.discovery.interval",
        "greater than zero",
    );
}

#[test]
fn tables_by_pattern_and_exclusions() {
    let text = with_sinks(
        &MINIMAL.replace(
            "[public.users]",
            "[public.users, 'Sales.*', 'public.log_2026_??', '/^audit\\.(a|b)$/']\n  exclude_tables: [sales.tmp, 'sales.scratch_*']\n  replica_identity: { sales.orders: full }",
        ),
        "",
    );
    let config = parse(&text).expect("valid");
    let source = &config.source;
    assert_eq!(source.tables, [TableName::new("public", "users")]);
    let patterns: Vec<String> = source
        .table_patterns
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(
        patterns,
        ["Sales.*", "public.log_2026_??", "/^audit\\.(a|b)$/"]
    );
    assert!(source.selects(&TableName::new("sales", "orders")));
    assert!(source.selects(&TableName::new("audit", "b")));
    assert!(
        !source.selects(&TableName::new("sales", "tmp")),
        "excluded by name"
    );
    assert!(
        !source.selects(&TableName::new("sales", "scratch_1")),
        "excluded by pattern"
    );
    assert!(!source.selects(&TableName::new("public", "orders")));
    let selection = source.selection();
    assert_eq!(selection.include.len(), 3);
    assert_eq!(selection.exclude.len(), 2);
}

#[test]
fn bad_patterns_are_named() {
    let text = with_sinks(
        &MINIMAL.replace("[public.users]", "[public.users, '/(/']"),
        "",
    );
    assert_problem(&text, "source.tables[1]", "invalid table pattern `/(/`");
    let text = with_source("\n  exclude_tables: ['a b.*']");
    assert_problem(
        &text,
        "source.exclude_tables[0]",
        "invalid table pattern `a b.*`",
    );
    let text = with_sinks(&MINIMAL.replace("[public.users]", "['x.*', 'X.*']"), "");
    assert_problem(&text, "source.tables", "pattern `X.*` is listed twice");
    let text = with_sinks(
        &MINIMAL.replace(
            "[public.users]",
            "['x.*']\n  replica_identity: { y.t: full }",
        ),
        "",
    );
    assert_problem(
        &text,
        "source.replica_identity.\"y.t\"",
        "not listed in source.tables",
    );
}

#[test]
fn columns_and_row_filters() {
    let text = with_sinks(
        &MINIMAL.replace(
            "[public.users]",
            "[public.users, 'shop.*']\n  columns: { public.users: { exclude: [password_hash] }, shop.orders: { include: [id, total] } }\n  row_filters: { shop.orders: \"region = 'eu'\" }",
        ),
        "",
    );
    let config = parse(&text).expect("valid");
    let subsets = config.source.subsets();
    assert_eq!(subsets.len(), 2);
    let (users, u) = &subsets[0];
    assert_eq!(users, &TableName::new("public", "users"));
    assert_eq!(
        u.columns,
        Some(cdc_postgres::selection::ColumnSelection::Exclude(vec![
            "password_hash".into()
        ]))
    );
    assert_eq!(u.row_filter, None);
    let (_, o) = &subsets[1];
    assert_eq!(o.row_filter.as_deref(), Some("region = 'eu'"));
}

#[test]
fn bad_columns_and_row_filters_are_named() {
    let text = with_source("\n  columns: { public.other: { include: [a] } }");
    assert_problem(
        &text,
        "source.columns.\"public.other\"",
        "not listed in source.tables",
    );
    let text = with_source("\n  columns: { public.users: { include: [] } }");
    assert_problem(
        &text,
        "source.columns.\"public.users\".include",
        "at least one column",
    );
    let text = with_source("\n  row_filters: { public.users: ' ' }");
    assert_problem(
        &text,
        "source.row_filters.\"public.users\"",
        "boolean SQL expression",
    );
    let text = with_source(
        "\n  publication: { create: false }\n  row_filters: { public.users: 'id > 0' }",
    );
    assert_problem(&text, "source.publication.create", "must be true");
    let text = with_source("\n  columns: { public.users: { keep: [a] } }");
    let found = problems(&text);
    assert!(
        found
            .iter()
            .any(|(f, m)| f.starts_with("source.columns") && m.contains("unknown field `keep`")),
        "{found:?}"
    );
    let text = with_source("\n  columns: { public.users: { include: [a], exclude: [b] } }");
    assert_problem(&text, "source.columns.\"public.users\"", "exactly one of");
}
