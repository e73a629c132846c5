//! The engine's HTTP endpoint against a real PostgreSQL 15 and the real
//! `cdc-engine` binary with a file sink: `/metrics` parses as Prometheus
//! text and its counters follow the rows that change, `/status` shows the
//! positions and the replication lag, `/healthz` turns to 503 on a fatal
//! sink error (and the engine exits non-zero after `hold_after_failure`),
//! and no password reaches the logs, `/status` or `/metrics`.
//!
//! Each test listens on a port of its own, picked free by the OS.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use integration_tests::http::{client, free_port, get, status};
use integration_tests::pipelines::{Pipeline, STREAM_ONLY};
use integration_tests::{
    pg_url, quote_ident, quote_literal, read_jsonl, unique_suffix, wait_for, wait_streaming,
    wait_until, Engine, TempDir, TestDb,
};
use serde_json::Value;

/// How long to wait for the engine to start or for events to arrive.
const TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERMed engine may take to drain and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(45);

// ------------------------------------------------- Prometheus text parser

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: samples and the declared type of each family.
#[derive(Debug, Default)]
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the one sample `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(
            found.len() <= 1,
            "{name} {labels:?} matches several samples: {found:?}"
        );
        found.first().map(|s| s.value)
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s
            .parse::<f64>()
            .map_err(|e| format!("bad value {s:?}: {e}")),
    }
}

/// Parses `name{k="v",...}` at the start of `line`; returns the rest.
fn parse_sample_head(line: &str) -> Result<(String, BTreeMap<String, String>, &str), String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=').ok_or("label without =")?;
            let key = &rest[..eq];
            if !is_label_name(key) {
                return Err(format!("bad label name {key:?}"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err("unterminated label value".into()),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some((_, '\n')) => return Err("raw line feed in label value".into()),
                    Some((_, c)) => value.push(c),
                }
            };
            if labels.insert(key.to_owned(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
            rest = &rest[end + 1..];
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else if !rest.starts_with('}') {
                return Err("expected , or } after a label".into());
            }
        }
    }
    Ok((name.to_owned(), labels, rest))
}

/// The family a sample name belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|t| t == "histogram") {
                return Some(base);
            }
        }
    }
    None
}

/// A strict parser of the text format 0.0.4: every sample belongs to a
/// family declared by a `# TYPE` line before it, families are not split,
/// `# HELP`/`# TYPE` appear at most once per family, label values are
/// properly escaped, values are numbers, no sample repeats, histograms have
/// cumulative buckets ending with `le="+Inf"` equal to `_count`.
fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut exp = Exposition::default();
    let mut helps = std::collections::HashSet::new();
    let mut finished_families = std::collections::HashSet::new();
    let mut current: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the document does not end with a line feed".into());
    }
    for (n, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), Some(_))
                    if !is_metric_name(name) || !helps.insert(name.to_owned()) =>
                {
                    return Err(err("bad or repeated HELP".into()));
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !matches!(
                        kind,
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ) {
                        return Err(err(format!("unknown type {kind}")));
                    }
                    if exp.types.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(err("repeated TYPE".into()));
                    }
                    if let Some(prev) = current.replace(name.to_owned()) {
                        finished_families.insert(prev);
                    }
                }
                _ => {}
            }
            continue;
        }
        let (name, labels, rest) = parse_sample_head(line).map_err(err)?;
        let mut fields = rest.split_whitespace();
        let value =
            parse_value(fields.next().ok_or_else(|| err("no value".into()))?).map_err(err)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| err(format!("bad timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(err("trailing text".into()));
        }
        let family =
            family_of(&name, &exp.types).ok_or_else(|| err("sample without a TYPE line".into()))?;
        if current.as_deref() != Some(family) || finished_families.contains(family) {
            return Err(err("sample outside its family's block".into()));
        }
        if exp.types[family] == "counter" && (value.is_nan() || value < 0.0) {
            return Err(err("negative counter".into()));
        }
        if !seen.insert((name.clone(), labels.clone())) {
            return Err(err("repeated sample".into()));
        }
        exp.samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    check_histograms(&exp)?;
    Ok(exp)
}

fn check_histograms(exp: &Exposition) -> Result<(), String> {
    for (family, kind) in &exp.types {
        if kind != "histogram" {
            continue;
        }
        // Series = labels without `le`.
        let mut buckets: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in exp
            .samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
        {
            let mut labels = s.labels.clone();
            let le = labels
                .remove("le")
                .ok_or_else(|| format!("{family}: bucket without le"))?;
            buckets
                .entry(labels)
                .or_default()
                .push((parse_value(&le)?, s.value));
        }
        for (labels, bs) in buckets {
            let label_list: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            for pair in bs.windows(2) {
                if !(pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1) {
                    return Err(format!(
                        "{family} {labels:?}: buckets not cumulative: {bs:?}"
                    ));
                }
            }
            let last = bs.last().ok_or("no bucket")?;
            let count = exp
                .value(&format!("{family}_count"), &label_list)
                .ok_or_else(|| format!("{family} {labels:?}: no _count"))?;
            exp.value(&format!("{family}_sum"), &label_list)
                .ok_or_else(|| format!("{family} {labels:?}: no _sum"))?;
            if last.0 != f64::INFINITY || last.1 != count {
                return Err(format!(
                    "{family} {labels:?}: last bucket must be +Inf = _count: {bs:?}, {count}"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn the_parser_is_strict() {
    let good = "# HELP a_total x\n# TYPE a_total counter\na_total{l=\"q\\\"\\\\\\n\"} 1\n\
                # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n";
    let exp = parse_exposition(good).unwrap();
    assert_eq!(exp.value("a_total", &[("l", "q\"\\\n")]), Some(1.0));
    for bad in [
        "a 1\n",
        "# TYPE a counter\na{l=\"x} 1\n",
        "# TYPE a counter\na{l=x} 1\n",
        "# TYPE a counter\na -1\n",
        "# TYPE a counter\na 1\na 1\n",
        "# TYPE a gauge\n# TYPE b gauge\nb 1\na 1\n",
        "# TYPE a gauge\na one\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
        "# TYPE a gauge\na 1",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted: {bad:?}");
    }
}

// ---------------------------------------------------------------- helpers

async fn metrics(port: u16) -> Exposition {
    let (status, body) = get(port, "/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200, "{body}");
    parse_exposition(&body).unwrap_or_else(|e| panic!("/metrics is not valid: {e}\n{body}"))
}

fn lsn(v: &Value) -> Option<u64> {
    let (hi, lo) = v.as_str()?.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// A stream-only pipeline config for `public.t` of `url` into `out`, with
/// the endpoint on `port` and `extra` YAML appended (after `metrics`).
fn config(url: &str, slot: &str, publication: &str, out: &Path, port: u16, extra: &str) -> String {
    Pipeline::new("ops_test", url)
        .table("public.t")
        .publication(publication)
        .slot(slot)
        .file_sink(out)
        .snapshot(STREAM_ONLY)
        .batching("{ max_batch_wait: 10ms, shutdown_timeout: 20s }")
        .extra(&format!(
            "metrics:\n  listen: '127.0.0.1:{port}'\n  lag_poll_interval: 1s\n{extra}"
        ))
        .yaml()
}

/// Waits until `/healthz` answers 200.
async fn wait_healthy(engine: &mut Engine, port: u16) {
    let up = wait_until(TIMEOUT, async || {
        matches!(get(port, "/healthz").await, Some((200, _)))
    })
    .await;
    assert!(
        up,
        "/healthz did not answer 200 within {TIMEOUT:?}\n{}",
        engine.output_report()
    );
}

const PHASES: &[&str] = &[
    "starting",
    "snapshot",
    "streaming",
    "standby",
    "reconnecting",
    "stopped",
    "failed",
];

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn metrics_and_status_follow_the_stream_and_the_lag() {
    let db = TestDb::create("ops_metrics").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY, v text); CREATE TABLE public.other (id int, pad text)")
        .await;
    let s = unique_suffix();
    let (slot, publication) = (format!("s_{s}"), format!("p_{s}"));
    let out_dir = TempDir::new("ops-out");
    let out = out_dir.join("changes.jsonl");
    let port = free_port();
    let mut engine = Engine::start(&config(db.url(), &slot, &publication, &out, port, ""));
    wait_healthy(&mut engine, port).await;
    wait_streaming(&db, &mut engine, &slot, TIMEOUT).await;

    // Other paths and methods.
    assert_eq!(get(port, "/nope").await.map(|r| r.0), Some(404));
    let post = client()
        .post(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("POST answers");
    assert_eq!(post.status().as_u16(), 405);

    let before = metrics(port).await;
    let ins = [("table", "public.t"), ("op", "insert")];
    assert_eq!(before.value("cdc_source_events_total", &ins), Some(0.0));
    assert_eq!(
        before.value("cdc_sink_events_total", &[("sink", "sinks[0]")]),
        Some(0.0)
    );

    db.exec("INSERT INTO public.t SELECT g, 'row ' || g FROM generate_series(1, 5) g")
        .await;
    db.exec("UPDATE public.t SET v = 'changed' WHERE id <= 2")
        .await;
    db.exec("DELETE FROM public.t WHERE id = 5").await;

    let counted = wait_until(TIMEOUT, async || {
        let m = metrics(port).await;
        let src = |op: &str| {
            m.value(
                "cdc_source_events_total",
                &[("table", "public.t"), ("op", op)],
            )
        };
        src("insert") == Some(5.0)
            && src("update") == Some(2.0)
            && src("delete") == Some(1.0)
            && m.value("cdc_sink_events_total", &[("sink", "sinks[0]")]) == Some(8.0)
    })
    .await;
    let m = metrics(port).await;
    assert!(
        counted,
        "counters did not reach 5 inserts, 2 updates, 1 delete, 8 written: {:#?}\n{}",
        m.samples
            .iter()
            .filter(|s| s.name.starts_with("cdc_source_events")
                || s.name.starts_with("cdc_sink_events"))
            .collect::<Vec<_>>(),
        engine.output_report()
    );
    assert_eq!(read_jsonl(&out).len(), 8);
    let sink = [("sink", "sinks[0]")];
    assert!(m.value("cdc_sink_batches_total", &sink).unwrap() >= 1.0);
    assert!(m.value("cdc_sink_write_seconds_count", &sink).unwrap() >= 1.0);
    assert_eq!(
        m.value(
            "cdc_sink_errors_total",
            &[("sink", "sinks[0]"), ("class", "fatal")]
        ),
        Some(0.0)
    );
    assert_eq!(
        m.value(
            "cdc_sink_state",
            &[("sink", "sinks[0]"), ("state", "running")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value("cdc_sink_channel_capacity_batches", &sink),
        Some(8.0)
    );
    let phase_ones: Vec<&Sample> = m
        .samples
        .iter()
        .filter(|s| s.name == "cdc_phase" && s.value == 1.0)
        .collect();
    assert_eq!(
        phase_ones.len(),
        1,
        "exactly one phase is current: {phase_ones:?}"
    );

    // The acknowledged position reaches the slot, and the lag poll sees it.
    let acked = wait_for(TIMEOUT, async || {
        let st = status(port).await;
        let acked = lsn(&st["acknowledged_lsn"])?;
        let confirmed = lsn(&st["confirmed_flush_lsn"])?;
        (confirmed >= acked).then_some(acked)
    })
    .await;
    let st = status(port).await;
    let acked = acked.unwrap_or_else(|| {
        panic!(
            "the lag poll never saw the acknowledged position: {st:#}\n{}",
            engine.output_report()
        )
    });

    // Write WAL the pipeline does not capture: the server moves on, the
    // lag is the distance to the slot's confirmed position.
    db.exec("INSERT INTO public.other SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g")
        .await;
    let wal = db.current_wal_lsn().await.0;
    let seen = wait_for(TIMEOUT, async || {
        let st = status(port).await;
        let server = lsn(&st["server_wal_lsn"])?;
        let confirmed = lsn(&st["confirmed_flush_lsn"])?;
        let lag = st["lag_bytes"].as_u64()?;
        (server >= wal).then_some((server, confirmed, lag, st))
    })
    .await;
    let (server, confirmed, lag, st) = match seen {
        Some(seen) => seen,
        None => panic!(
            "/status never showed the server past {wal:X}: {:#}\n{}",
            status(port).await,
            engine.output_report()
        ),
    };
    assert_eq!(lag, server - confirmed, "{st:#}");
    assert!(confirmed >= acked, "{st:#}");
    assert!(
        lag > 300_000,
        "about 400 kB of WAL were written past the slot, lag is {lag}: {st:#}"
    );
    assert_eq!(st["pipeline"], "ops_test");
    assert_eq!(st["slot"], slot.as_str());
    assert!(st["error"].is_null(), "{st:#}");
    assert_eq!(st["slot_active"], true);
    let phase = st["phase"].as_str().unwrap_or_default();
    assert!(
        PHASES.contains(&phase) && phase != "failed" && phase != "stopped",
        "{st:#}"
    );
    let s0 = &st["sinks"][0];
    assert_eq!(s0["name"], "sinks[0]");
    assert_eq!(s0["type"], "file");
    assert_eq!(s0["state"], "running");
    assert_eq!(s0["events_written"], 8);
    assert_eq!(s0["errors"], 0);
    assert!(s0["last_error"].is_null());

    // The same numbers in /metrics.
    let lag_metrics = wait_until(TIMEOUT, async || {
        let m = metrics(port).await;
        match (
            m.value("cdc_server_wal_lsn", &[]),
            m.value("cdc_confirmed_flush_lsn", &[]),
            m.value("cdc_replication_lag_bytes", &[]),
        ) {
            (Some(s), Some(c), Some(l)) => s >= wal as f64 && l == s - c && l > 0.0,
            _ => false,
        }
    })
    .await;
    assert!(lag_metrics, "/metrics does not show the lag");

    engine.stop_clean(STOP_TIMEOUT, "stop").await;
    db.cleanup().await;
}

#[tokio::test]
async fn healthz_turns_503_on_a_fatal_sink_error_then_the_engine_exits_non_zero() {
    let db = TestDb::create("ops_fatal").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
        .await;
    let s = unique_suffix();
    let (slot, publication) = (format!("s_{s}"), format!("p_{s}"));
    let port = free_port();
    // /dev/null takes the write but cannot be fsynced: a fatal error on
    // the first batch, every time.
    let hold = Duration::from_secs(4);
    let yaml = config(
        db.url(),
        &slot,
        &publication,
        Path::new("/dev/null"),
        port,
        "  hold_after_failure: 4s\n",
    );
    let mut engine = Engine::start(&yaml);
    wait_healthy(&mut engine, port).await;
    wait_streaming(&db, &mut engine, &slot, TIMEOUT).await;
    let (code, body) = get(port, "/healthz").await.expect("answers");
    assert_eq!((code, body.starts_with("ok")), (200, true), "{body}");

    db.exec("INSERT INTO public.t VALUES (1, 'boom')").await;
    let failed = wait_for(TIMEOUT, async || match get(port, "/healthz").await {
        Some((503, body)) => Some(body),
        _ => None,
    })
    .await;
    let body = failed.unwrap_or_else(|| {
        panic!(
            "/healthz did not turn 503 after the fatal sink error\n{}",
            engine.output_report()
        )
    });
    assert!(body.contains("cannot be synced"), "{body}");
    let seen_at = std::time::Instant::now();
    // Still serving during the hold: /status shows the failure.
    let st = status(port).await;
    assert_eq!(st["phase"], "failed", "{st:#}");
    let error = st["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("sinks[0]") && error.contains("cannot be synced"),
        "{st:#}"
    );
    let s0 = &st["sinks"][0];
    assert_eq!(s0["state"], "failed", "{st:#}");
    assert_eq!(s0["fatal_errors"], 1, "{st:#}");
    assert!(s0["last_error"]
        .as_str()
        .unwrap_or_default()
        .contains("/dev/null"));
    let m = metrics(port).await;
    assert_eq!(
        m.value(
            "cdc_sink_errors_total",
            &[("sink", "sinks[0]"), ("class", "fatal")]
        ),
        Some(1.0)
    );
    assert_eq!(m.value("cdc_phase", &[("phase", "failed")]), Some(1.0));

    engine.wait_failure(hold + TIMEOUT).await;
    // It served for (about) hold_after_failure after failing.
    assert!(
        seen_at.elapsed() + Duration::from_millis(1500) >= hold,
        "exited {:?} after /healthz turned 503, before the 4s hold",
        seen_at.elapsed()
    );
    assert!(
        engine.stderr_text().contains("cannot be synced"),
        "{}",
        engine.output_report()
    );
    // The endpoint is gone with the process.
    assert!(get(port, "/healthz").await.is_none());
    db.cleanup().await;
}

#[tokio::test]
async fn no_password_in_logs_status_or_metrics() {
    let db = TestDb::create("ops_secret").await;
    let password = format!("Zx9-distinct-pw-{}", unique_suffix());
    let RoleEngine {
        role,
        mut engine,
        out,
        port,
        _dir,
    } = start_as_role(&db, &password, "{ level: debug, format: json }").await;
    db.exec("INSERT INTO public.t SELECT g, 'v' FROM generate_series(1, 3) g")
        .await;
    db.exec("UPDATE public.t SET v = 'w'").await;
    let written = wait_until(TIMEOUT, async || read_jsonl(&out).len() == 6).await;
    assert!(
        written,
        "expected 6 events, got {:?}\n{}",
        read_jsonl(&out),
        engine.output_report()
    );
    // Let the lag poll run at least once as the new role.
    let polled = wait_until(TIMEOUT, async || {
        !status(port).await["confirmed_flush_lsn"].is_null()
    })
    .await;
    assert!(polled, "{}", engine.output_report());

    let (_, status_body) = get(port, "/status").await.expect("/status");
    let (_, metrics_body) = get(port, "/metrics").await.expect("/metrics");
    let (_, health_body) = get(port, "/healthz").await.expect("/healthz");
    engine.stop_clean(STOP_TIMEOUT, "stop").await;
    let stderr = engine.stderr_text();
    let stdout = engine.stdout_text();

    let debug_lines = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {l}"))
        })
        .filter(|v| v["level"] == "DEBUG")
        .count();
    assert!(debug_lines > 0, "no debug log lines:\n{stderr}");
    // The URL is logged (at debug), with its password masked.
    assert!(
        stderr.contains(&format!("{role}:***@")),
        "the redacted source URL is not in the log:\n{stderr}"
    );
    for (what, text) in [
        ("/status", &status_body),
        ("/metrics", &metrics_body),
        ("/healthz", &health_body),
        ("stderr", &stderr),
        ("stdout", &stdout),
    ] {
        assert!(
            !text.contains(&password),
            "the password appears in {what}:\n{text}"
        );
    }
    db.cleanup().await;
    drop_role(&role).await;
}

/// Creates a login role with REPLICATION and `password` that may create
/// schemas in `db` and owns a new table `public.t`; returns the role and
/// the test database's URL with its credentials.
async fn create_role_owning_t(db: &TestDb, role: &str, password: &str) -> (String, String) {
    let qrole = quote_ident(role);
    db.exec(&format!(
        "CREATE ROLE {qrole} LOGIN REPLICATION PASSWORD {};\
         GRANT CREATE ON DATABASE {} TO {qrole};\
         CREATE TABLE public.t (id int PRIMARY KEY, v text);\
         ALTER TABLE public.t OWNER TO {qrole}",
        quote_literal(password),
        quote_ident(db.name())
    ))
    .await;
    let base = db.url();
    let (scheme, rest) = base.split_once("://").expect("a URL");
    let host_part = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    (
        role.to_owned(),
        format!("{scheme}://{role}:{password}@{host_part}"),
    )
}

/// An engine running as a role of its own, streaming `public.t` of a test
/// database into a file, with `/metrics` on `port`.
struct RoleEngine {
    role: String,
    engine: Engine,
    out: std::path::PathBuf,
    port: u16,
    _dir: TempDir,
}

/// Creates a role with `password` ([`create_role_owning_t`]) and starts the
/// engine as that role with `log` as its `log` section; returns once it
/// streams.
async fn start_as_role(db: &TestDb, password: &str, log: &str) -> RoleEngine {
    let s = unique_suffix();
    let (role, url) = create_role_owning_t(db, &format!("r_{s}"), password).await;
    let (slot, publication) = (format!("s_{s}"), format!("p_{s}"));
    let dir = TempDir::new("ops-role-out");
    let out = dir.join("changes.jsonl");
    let port = free_port();
    let yaml = config(
        &url,
        &slot,
        &publication,
        &out,
        port,
        &format!("log: {log}\n"),
    );
    let mut engine = Engine::start(&yaml);
    wait_healthy(&mut engine, port).await;
    wait_streaming(db, &mut engine, &slot, TIMEOUT).await;
    RoleEngine {
        role,
        engine,
        out,
        port,
        _dir: dir,
    }
}

/// Drops a role made by [`create_role_owning_t`] (roles outlive the test
/// database).
async fn drop_role(role: &str) {
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&pg_url())
        .await
        .expect("admin connection");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP ROLE IF EXISTS {}",
        quote_ident(role)
    )))
    .execute(&admin)
    .await
    .expect("drop role");
    admin.close().await;
}

/// The lines of `text` in which `word` stands as a token of its own: not
/// inside a longer word (`cdc_postgres`), a module path (`postgres::x`) or
/// a URL's scheme (`postgres://`).
fn lines_with_standalone(text: &str, word: &str) -> Vec<String> {
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    text.lines()
        .filter(|line| {
            line.match_indices(word).any(|(at, _)| {
                let before = line[..at].chars().next_back();
                let after = line[at + word.len()..].chars().next();
                let rest = &line[at + word.len()..];
                let in_path = line[..at].ends_with("::") || rest.starts_with("::");
                let is_scheme = rest.starts_with("://");
                !is_word(before) && !is_word(after) && !in_path && !is_scheme
            })
        })
        .map(str::to_owned)
        .collect()
}

/// Runs the engine as a role whose password is `password` (a word that
/// also occurs in module paths and names) with debug logs in text form,
/// streams a few changes, and checks the logs: module paths intact, the
/// URL shown with its password masked, the password never standing on its
/// own.
async fn logs_keep_words_and_mask(password: &str) {
    let db = TestDb::create(&format!("ops_scrub_{password}")).await;
    let RoleEngine {
        role,
        mut engine,
        out,
        _dir,
        ..
    } = start_as_role(&db, password, "{ level: debug, format: text }").await;
    db.exec("INSERT INTO public.t SELECT g, 'v' FROM generate_series(1, 3) g")
        .await;
    let written = wait_until(TIMEOUT, async || read_jsonl(&out).len() == 3).await;
    assert!(written, "{}", engine.output_report());
    engine.stop_clean(STOP_TIMEOUT, "stop").await;
    let stderr = engine.stderr_text();
    for path in ["cdc_engine::", "cdc_postgres::"] {
        assert!(
            stderr.contains(path),
            "no log line names a module of {path} (password {password:?}):\n{stderr}"
        );
    }
    for broken in ["_***", "***_", "***::", "::***"] {
        assert!(
            !stderr.contains(broken),
            "a mask cut into a name ({broken}) with password {password:?}:\n{stderr}"
        );
    }
    assert!(
        stderr.contains(&format!("{role}:***@")),
        "the source URL is not logged with its password masked:\n{stderr}"
    );
    let leaks = lines_with_standalone(&stderr, password);
    assert!(
        leaks.is_empty(),
        "the password {password:?} stands in these log lines:\n{}",
        leaks.join("\n")
    );
    db.cleanup().await;
    drop_role(&role).await;
}

#[tokio::test]
async fn logs_keep_module_paths_with_password_postgres() {
    logs_keep_words_and_mask("postgres").await;
}

#[tokio::test]
async fn logs_keep_module_paths_with_password_cdc() {
    logs_keep_words_and_mask("cdc").await;
}

#[tokio::test]
async fn logs_keep_module_paths_with_password_engine() {
    logs_keep_words_and_mask("engine").await;
}

#[tokio::test]
async fn the_endpoint_answers_while_the_source_is_unreachable_and_log_env_overrides() {
    let pg_port = free_port(); // nobody listens there
    let port = free_port();
    let out_dir = TempDir::new("ops-unreachable-out");
    let yaml = config(
        &format!("postgres://cdc:pw-unreachable@127.0.0.1:{pg_port}/db"),
        "s_unreachable",
        "p_unreachable",
        &out_dir.join("changes.jsonl"),
        port,
        "log: { level: error }\n",
    );

    // RUST_LOG overrides log.level.
    let mut engine = Engine::start_with(&yaml, &["run"], &[("RUST_LOG", "debug")]);
    wait_healthy(&mut engine, port).await;
    let waiting = wait_for(TIMEOUT, async || {
        let st = status(port).await;
        (!st["lag_poll_error"].is_null()).then_some(st)
    })
    .await;
    let st = waiting.unwrap_or_else(|| panic!("no lag poll error\n{}", engine.output_report()));
    assert!(
        ["starting", "reconnecting"].contains(&st["phase"].as_str().unwrap_or_default()),
        "{st:#}"
    );
    assert!(st["error"].is_null(), "{st:#}");
    let m = metrics(port).await;
    assert!(m.value("cdc_lag_poll_errors_total", &[]).unwrap() >= 1.0);
    assert_eq!(m.value("cdc_replication_lag_bytes", &[]), None);
    let logged = engine
        .logs_within("connecting to the source", TIMEOUT)
        .await;
    assert!(
        logged,
        "RUST_LOG=debug was ignored\n{}",
        engine.output_report()
    );
    engine.stop_clean(STOP_TIMEOUT, "stop").await;
    assert!(!engine.stderr_text().contains("pw-unreachable"));

    // CDC_LOG wins over RUST_LOG.
    let mut engine = Engine::start_with(
        &yaml,
        &["run"],
        &[("RUST_LOG", "debug"), ("CDC_LOG", "warn")],
    );
    wait_healthy(&mut engine, port).await;
    let warned = engine
        .logs_within("cannot start streaming yet", TIMEOUT)
        .await;
    assert!(warned, "{}", engine.output_report());
    engine.stop_clean(STOP_TIMEOUT, "stop").await;
    let stderr = engine.stderr_text();
    assert!(
        !stderr.contains("DEBUG") && !stderr.contains(" INFO "),
        "CDC_LOG=warn did not win over RUST_LOG=debug:\n{stderr}"
    );
}
