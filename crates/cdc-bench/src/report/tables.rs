//! The report's result tables: snapshot (with the page-cache comparison),
//! streaming, Kafka, NATS and Elasticsearch, latency.

use std::fmt::Write as _;

use super::{f, mb, rate};
use crate::model::{Line, Results, Run, ENGINE_FILE, ENGINE_FILE_WARMED};

/// Median of a value over the ceiling's runs.
fn med_ceiling(l: &Line, f: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = l.ceiling.iter().filter_map(f).collect();
    crate::stats::median(&v)
}

/// A table of lines against their ceilings; `walsender` adds the
/// walsenders' CPU (streaming) in place of the ceiling's name.
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

/// The snapshot table: besides the rates, the reader's CPU per million
/// rows (the ceiling's in brackets) and its user / system split.
fn snapshot_table(out: &mut String, lines: &[&Line]) {
    out.push_str(
        "| case | reader | rows/s | ceiling | ceiling rows/s | ratio | reader CPU s | user / system CPU s | reader CPU s per 1M rows (ceiling's) | peak RSS MiB | runs |\n\
         |---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for l in lines {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} ({}) | {} | {} |",
            l.case,
            l.reader,
            rate(l.rate()),
            l.ceiling_reader,
            rate(l.ceiling_rate()),
            f(l.ratio(), 2),
            f(l.cpu(), 2),
            f(l.user_cpu(), 2),
            f(l.sys_cpu(), 2),
            f(l.cpu_per_million(), 2),
            f(l.ceiling_cpu_per_million(), 2),
            mb(l.peak_rss_kb()),
            l.runs.len()
        );
    }
    out.push('\n');
}

/// Each engine → file case beside its warmed-target runs.
fn page_cache_table(out: &mut String, lines: &[&Line]) {
    let pairs: Vec<(&Line, &Line)> = lines
        .iter()
        .filter(|l| l.reader == ENGINE_FILE)
        .filter_map(|l| {
            lines
                .iter()
                .find(|w| w.reader == ENGINE_FILE_WARMED && w.case == l.case)
                .map(|w| (*l, *w))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    out.push_str(
        "### Engine → file: the page cache apart from the engine\n\n\
         Each engine → file run beside the run that followed it at once into a warmed target \
         (see \"How each figure is taken\"). Both do the same work in user space and make the \
         same `write` and `fdatasync` calls; what the warmed run saves, mostly system CPU, is \
         the cost of page-cache memory touched for the first time. The warmed run's CPU is the \
         engine's own cost, JSON encoding and write included.\n\n\
         | case | rows/s | rows/s warmed | ratio | ratio warmed | user CPU s | user warmed | system CPU s | system warmed | CPU s per 1M rows | per 1M rows warmed |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (cold, warm) in pairs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cold.case,
            rate(cold.rate()),
            rate(warm.rate()),
            f(cold.ratio(), 2),
            f(warm.ratio(), 2),
            f(cold.user_cpu(), 2),
            f(warm.user_cpu(), 2),
            f(cold.sys_cpu(), 2),
            f(warm.sys_cpu(), 2),
            f(cold.cpu_per_million(), 2),
            f(warm.cpu_per_million(), 2)
        );
    }
    out.push('\n');
}

/// The throughput sections (snapshot, streaming, Kafka, NATS and
/// Elasticsearch) and the latency section.
pub(super) fn results_tables(out: &mut String, results: &Results) {
    for (group, title) in [
        ("snapshot", "Snapshot"),
        ("streaming", "Streaming"),
        ("kafka", "Into Kafka"),
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
        if group == "snapshot" {
            snapshot_table(out, &lines);
            page_cache_table(out, &lines);
        } else {
            table(out, &lines, true);
        }
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
        table(out, &sinks, false);
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
}
