//! The generated Markdown report.

use std::fmt::Write as _;

use crate::model::{Line, Results};

/// A count as people write it: `20k`, `1M`, `5M`, `1234`.
pub fn count(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(100_000) {
        let m = n as f64 / 1e6;
        if n.is_multiple_of(1_000_000) {
            format!("{}M", n / 1_000_000)
        } else {
            format!("{m:.1}M")
        }
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// The current UTC time of day, `HH:MM:SS`.
pub fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day / 60 % 60, day % 60)
}

/// The current UTC date and time, `YYYY-MM-DD HH:MM UTC`.
pub fn now_utc() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        Err(_) => clock(),
    }
}

/// The machine and the run's circumstances.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Logical cores.
    pub cores: usize,
    /// Total memory.
    pub memory: String,
    /// Kernel release.
    pub kernel: String,
    /// PostgreSQL server version.
    pub pg_version: String,
    /// Load average at the start.
    pub load_start: String,
    /// Load average at the end.
    pub load_end: String,
    /// When the run started.
    pub started: String,
    /// Minutes the run took.
    pub minutes: f64,
}

impl Machine {
    /// Reads what /proc and uname tell.
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "?".into());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
            .unwrap_or_else(|| "?".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "?".into());
        Self {
            cpu,
            cores,
            memory,
            kernel,
            load_start: crate::proc_stat::loadavg(),
            started: now_utc(),
            ..Self::default()
        }
    }

    /// Whether other work was competing for the cores (1-minute load
    /// average at the start or end above half the cores).
    pub fn shared(&self) -> bool {
        let first = |s: &str| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let limit = self.cores as f64 / 2.0;
        first(&self.load_start) > limit || first(&self.load_end) > limit
    }
}

/// Inputs of the report besides the results.
pub struct ReportInput<'a> {
    /// The machine.
    pub machine: &'a Machine,
    /// `quick` or `full`.
    pub mode: &'a str,
    /// Repetitions per measurement.
    pub reps: usize,
    /// PostgreSQL settings that matter, `(name, value)`.
    pub pg_settings: &'a [(String, String)],
    /// Build and engine settings, `(name, value)`.
    pub settings: &'a [(String, String)],
    /// A results file of an earlier run, for before/after.
    pub baseline: Option<(&'a str, &'a Results)>,
    /// Hand-written notes (profile and fixes).
    pub notes: Option<&'a str>,
}

fn f(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

fn rate(v: Option<f64>) -> String {
    v.map(|x| format!("{:.0}", x)).unwrap_or_else(|| "–".into())
}

fn mb(kb: Option<u64>) -> String {
    kb.map(|k| format!("{:.1}", k as f64 / 1024.0))
        .unwrap_or_else(|| "–".into())
}

/// Median of a value over the ceiling's runs.
fn med_ceiling(l: &Line, f: impl Fn(&crate::model::Run) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = l.ceiling.iter().filter_map(f).collect();
    crate::stats::median(&v)
}

const RSS_LIMIT_KB: u64 = 64 * 1024;

fn table(out: &mut String, lines: &[&Line], walsender: bool) {
    if walsender {
        out.push_str(
            "| case | reader | rows/s | ceiling rows/s | ratio | reader CPU s | walsender CPU s (ceiling's) | peak RSS MiB | runs |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
    } else {
        out.push_str(
            "| case | reader | rows/s | ceiling | ceiling rows/s | ratio | reader CPU s | peak RSS MiB | runs |\n\
             |---|---|---:|---|---:|---:|---:|---:|---:|\n",
        );
    }
    for l in lines {
        if walsender {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} |",
                l.case,
                l.reader,
                rate(l.rate()),
                rate(l.ceiling_rate()),
                f(l.ratio(), 2),
                f(l.cpu(), 2),
                f(l.walsender_cpu(), 2),
                f(l.ceiling_walsender_cpu(), 2),
                mb(l.peak_rss_kb()),
                l.runs.len()
            );
        } else {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                l.case,
                l.reader,
                rate(l.rate()),
                l.ceiling_reader,
                rate(l.ceiling_rate()),
                f(l.ratio(), 2),
                f(l.cpu(), 2),
                mb(l.peak_rss_kb()),
                l.runs.len()
            );
        }
    }
    out.push('\n');
}

/// One target: what it asks, and each measured value against it.
fn target(out: &mut String, title: &str, checks: &[(String, Option<f64>, bool)]) {
    let measured: Vec<&(String, Option<f64>, bool)> =
        checks.iter().filter(|c| c.1.is_some()).collect();
    let met = !measured.is_empty() && measured.iter().all(|c| c.2);
    let verdict = if measured.is_empty() {
        "**not measured**"
    } else if met {
        "**met**"
    } else {
        "**missed**"
    };
    let _ = writeln!(out, "- {title}: {verdict}");
    for (what, value, ok) in checks {
        let _ = writeln!(
            out,
            "  - {what}: {}{}",
            value
                .map(|v| format!("{v:.3}"))
                .unwrap_or_else(|| "–".into()),
            if value.is_none() {
                " (failed)"
            } else if *ok {
                ""
            } else {
                " ✗"
            }
        );
    }
}

/// Renders the whole report.
pub fn render(results: &Results, input: &ReportInput) -> String {
    let m = input.machine;
    let mut out = String::new();
    out.push_str("# Benchmarks\n\n");
    let _ =
        writeln!(
        out,
        "Generated by `./scripts/bench.sh{}` on {} ({} mode, {:.1} minutes). Do not edit by hand: \
         re-run the bench. Every figure is the median of {} run(s), beside its ceiling measured \
         in the same run on the same data.\n",
        if input.mode == "quick" { " --quick" } else { "" },
        m.started,
        input.mode,
        m.minutes,
        input.reps
    );
    out.push_str("## Machine\n\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| CPU | {} |", m.cpu);
    let _ = writeln!(out, "| cores | {} |", m.cores);
    let _ = writeln!(out, "| memory | {} |", m.memory);
    let _ = writeln!(out, "| kernel | {} |", m.kernel);
    let _ = writeln!(out, "| PostgreSQL | {} |", m.pg_version);
    let _ = writeln!(
        out,
        "| load average (1/5/15 min) at start | {} |",
        m.load_start
    );
    let _ = writeln!(out, "| load average at end | {} |\n", m.load_end);
    if m.shared() {
        out.push_str(
            "**The machine was shared** with other work during this run (load average above half \
             the cores): absolute rates are noisy and lower than on an idle machine; the ratios to \
             the ceilings, measured under the same conditions, are the figures to compare.\n\n",
        );
    }
    out.push_str(
        "The engine, PostgreSQL, the ceilings' clients and (for Kafka) the broker all share the \
         same cores, so a reader that uses more CPU also slows the server it reads from.\n\n",
    );
    out.push_str("## Settings\n\nPostgreSQL (a cluster of its own, started by the bench, tuned for write throughput):\n\n");
    out.push_str("| setting | value |\n|---|---|\n");
    for (k, v) in input.pg_settings {
        let _ = writeln!(out, "| `{k}` | {v} |");
    }
    out.push_str("\nBench:\n\n| setting | value |\n|---|---|\n");
    for (k, v) in input.settings {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    out.push_str(
        "\nHow each figure is taken:\n\n\
         * **rows/s**: rows delivered over wall time from starting the reader process until the \
         last row is delivered (engine → file: the file holds every line; library → null sink: \
         the sink saw every row; engine → Kafka: the slot's `confirmed_flush_lsn` passed the last \
         commit, so within the engine's 1 s status interval; `pg_recvlogical`: until it exits at \
         `--endpos`; COPY: until the last `psql` exits). Connection and setup time is included \
         for every reader alike.\n\
         * **ceiling**: snapshot: as many parallel `COPY (SELECT * … WHERE ctid …) TO STDOUT` \
         streams over TCP into /dev/null as the reader has workers, over the same table; \
         streaming: `pg_recvlogical -o proto_version=1 -o publication_names=…` into /dev/null \
         from a slot created beside the reader's before the load, so both decode identical WAL.\n\
         * **reader CPU s**: user + system time of the reader process (`/proc/<pid>/stat`), for \
         the COPY ceiling the sum over its `psql` clients; **walsender CPU s**: the same for the \
         walsender serving the reader (`pg_replication_slots.active_pid`), in brackets the \
         walsender of the ceiling; **peak RSS**: `VmHWM` of the reader process, the highest over \
         the runs.\n\n",
    );

    for (group, title, walsender) in [
        ("snapshot", "Snapshot", false),
        ("streaming", "Streaming", true),
        ("kafka", "Into Kafka", true),
    ] {
        let lines: Vec<&Line> = results.lines.iter().filter(|l| l.group == group).collect();
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(out, "## {title}\n");
        if group == "kafka" {
            out.push_str(
                "The tansu broker (in-memory storage, a fresh one per run) runs on the same cores; \
                 its CPU seconds per run are reported separately below.\n\n",
            );
        }
        table(&mut out, &lines, walsender);
        if group == "kafka" {
            out.push_str("| case | broker CPU s |\n|---|---:|\n");
            for l in &lines {
                let _ = writeln!(out, "| {} | {} |", l.case, f(l.broker_cpu(), 2));
            }
            out.push('\n');
        }
    }

    let sinks: Vec<&Line> = results
        .lines
        .iter()
        .filter(|l| l.group == "sinks")
        .collect();
    if !sinks.is_empty() {
        out.push_str(
            "## Into NATS and Elasticsearch\n\nThe engine snapshots a table (1 worker) into the \
             sink, until it exits with every row acknowledged (NATS: a PubAck per message, \
             `max_in_flight` 1024; Elasticsearch: every `_bulk` item succeeded, `batch_max_docs` \
             1000, one request at a time). The ceiling is a minimal client in the bench process \
             sending the same pre-encoded messages, read back from what the engine stored (same \
             subjects, headers and payloads; same ids, external versions and documents), with the \
             same acknowledgement rule into a fresh stream or index on the same server, timed \
             from connecting (and creating the stream or index) to the last acknowledgement. \
             Engine and ceiling alternate in paired rounds. The server runs on the same cores; \
             its CPU seconds are reported below (ceiling's in brackets), and the ceiling's CPU \
             is that of the bench process while it sends.\n\n",
        );
        table(&mut out, &sinks, false);
        out.push_str(
            "| case | reader | server CPU s (ceiling's) | ceiling CPU s |\n|---|---|---:|---:|\n",
        );
        for l in &sinks {
            let _ = writeln!(
                out,
                "| {} | {} | {} ({}) | {} |",
                l.case,
                l.reader,
                f(l.broker_cpu(), 2),
                f(med_ceiling(l, |r| r.broker_cpu_s), 2),
                f(med_ceiling(l, |r| r.cpu_s), 2)
            );
        }
        out.push('\n');
    }

    if !results.latency.is_empty() {
        out.push_str(
            "## Latency\n\nA writer inserts at a steady rate in transactions of 10 rows; each \
             change's latency is the time its batch's `write_batch` returned minus its commit \
             time (`source.commit_time_us`, the server's clock, same machine). The file sink \
             `fsync`s before returning.\n\n\
             | reader | target rows/s | written rows/s | rows | p50 ms | p99 ms | max ms | reader CPU s | peak RSS MiB |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for l in &results.latency {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {} | {} |",
                l.reader,
                l.target_rate,
                l.achieved_rate,
                l.rows,
                l.latency_us[0] as f64 / 1e3,
                l.latency_us[1] as f64 / 1e3,
                l.latency_us[2] as f64 / 1e3,
                f(l.cpu_s, 2),
                mb(l.rss_kb)
            );
        }
        out.push('\n');
    }

    out.push_str("## Targets\n\n");
    let ratio_checks = |group: &str, min: f64| -> Vec<(String, Option<f64>, bool)> {
        results
            .lines
            .iter()
            .filter(|l| l.group == group)
            .map(|l| {
                let r = l.ratio();
                (
                    format!("{}, {}", l.case, l.reader),
                    r,
                    r.is_some_and(|r| r >= min),
                )
            })
            .collect()
    };
    target(
        &mut out,
        "Streaming into the file/null sink ≥ 0.9× `pg_recvlogical`",
        &ratio_checks("streaming", 0.9),
    );
    target(
        &mut out,
        "Streaming into Kafka ≥ 0.6× `pg_recvlogical`",
        &ratio_checks("kafka", 0.6),
    );
    target(
        &mut out,
        "NATS and Elasticsearch sinks ≥ 0.8× a minimal client with the same acknowledgement rule",
        &ratio_checks("sinks", 0.8),
    );
    target(
        &mut out,
        "Snapshot ≥ 0.8× parallel COPY at equal parallelism",
        &ratio_checks("snapshot", 0.8),
    );
    let mut rss: Vec<(String, Option<f64>, bool)> = results
        .lines
        .iter()
        .map(|l| {
            let v = l.peak_rss_kb();
            (
                format!("{}, {} (MiB)", l.case, l.reader),
                v.map(|k| k as f64 / 1024.0),
                v.is_some_and(|k| k <= RSS_LIMIT_KB),
            )
        })
        .collect();
    rss.extend(results.latency.iter().map(|l| {
        (
            format!("latency, {} (MiB)", l.reader),
            l.rss_kb.map(|k| k as f64 / 1024.0),
            l.rss_kb.is_some_and(|k| k <= RSS_LIMIT_KB),
        )
    }));
    target(&mut out, "Peak RSS ≤ 64 MiB in every case", &rss);
    let lat: Vec<(String, Option<f64>, bool)> = results
        .latency
        .iter()
        .map(|l| {
            let p99 = l.latency_us[1] as f64 / 1e3;
            (format!("{} p99 (ms)", l.reader), Some(p99), p99 <= 50.0)
        })
        .collect();
    target(&mut out, "p99 commit-to-ack ≤ 50 ms at 5k rows/s", &lat);
    out.push('\n');

    if !results.failures.is_empty() {
        out.push_str("## Failed runs\n\n");
        for f in &results.failures {
            let _ = writeln!(out, "- {}", f.replace('\n', " "));
        }
        out.push('\n');
    }

    if let Some((name, before)) = input.baseline {
        let _ = writeln!(
            out,
            "## Before and after\n\nThe same cases in `{name}` (an earlier run of this bench, \
             before the fixes below) against this run. Ratios are to each run's own ceiling.\n\n\
             | case | reader | rows/s before | rows/s after | ratio before | ratio after | CPU s before | CPU s after | RSS MiB before | RSS MiB after |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for l in &results.lines {
            if let Some(b) = before
                .lines
                .iter()
                .find(|b| b.group == l.group && b.case == l.case && b.reader == l.reader)
            {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    l.case,
                    l.reader,
                    rate(b.rate()),
                    rate(l.rate()),
                    f(b.ratio(), 2),
                    f(l.ratio(), 2),
                    f(b.cpu(), 2),
                    f(l.cpu(), 2),
                    mb(b.peak_rss_kb()),
                    mb(l.peak_rss_kb())
                );
            }
        }
        for l in &results.latency {
            if let Some(b) = before.latency.iter().find(|b| b.reader == l.reader) {
                let _ = writeln!(
                    out,
                    "| latency p99 ms | {} | {:.1} | {:.1} | | | {} | {} | {} | {} |",
                    l.reader,
                    b.latency_us[1] as f64 / 1e3,
                    l.latency_us[1] as f64 / 1e3,
                    f(b.cpu_s, 2),
                    f(l.cpu_s, 2),
                    mb(b.rss_kb),
                    mb(l.rss_kb)
                );
            }
        }
        out.push('\n');
    }

    if let Some(notes) = input.notes {
        out.push_str("## Profile and fixes\n\n");
        out.push_str("_From `docs/benchmarks-notes.md` (written by hand; the tables above are generated)._\n\n");
        let body = notes.trim_start();
        let body = body.strip_prefix("# ").map_or(body, |rest| {
            rest.split_once('\n').map_or("", |(_, after)| after)
        });
        out.push_str(body.trim());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(count(20_000), "20k");
        assert_eq!(count(1_000_000), "1M");
        assert_eq!(count(5_000_000), "5M");
        assert_eq!(count(1_500_000), "1.5M");
        assert_eq!(count(1234), "1234");
    }
}
