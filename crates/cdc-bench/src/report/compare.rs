//! The report's "Before and after" table against the results files of
//! earlier runs.

use std::fmt::Write as _;

use super::{f, mb, rate};
use crate::model::{Latency, Line, Results};

/// The first line of the same group, case and reader in the baselines.
fn find<'a>(baselines: &'a [(&str, &Results)], l: &Line) -> Option<&'a Line> {
    baselines.iter().find_map(|(_, b)| {
        b.lines
            .iter()
            .find(|b| b.group == l.group && b.case == l.case && b.reader == l.reader)
    })
}

/// The first latency measurement of the same reader in the baselines.
fn find_latency<'a>(baselines: &'a [(&str, &Results)], l: &Latency) -> Option<&'a Latency> {
    baselines
        .iter()
        .find_map(|(_, b)| b.latency.iter().find(|b| b.reader == l.reader))
}

/// Writes the "Before and after" section: every line of this run that one
/// of `baselines` (file name, results; looked up in this order) measured
/// too.
pub(super) fn before_after(out: &mut String, results: &Results, baselines: &[(&str, &Results)]) {
    if baselines.is_empty() {
        return;
    }
    let names: Vec<String> = baselines.iter().map(|(n, _)| format!("`{n}`")).collect();
    let _ = writeln!(
        out,
        "## Before and after\n\nThe same cases in {} (earlier runs of this bench, before the \
         fixes below; a case is taken from the first file that has it) against this run. \
         Ratios are to each run's own ceiling; CPU s per 1M rows is the reader's.\n\n\
         | case | reader | rows/s before | rows/s after | ratio before | ratio after | CPU s before | CPU s after | CPU s per 1M rows before | CPU s per 1M rows after | RSS MiB before | RSS MiB after |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        names.join(" and ")
    );
    for l in &results.lines {
        if let Some(b) = find(baselines, l) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                l.case,
                l.reader,
                rate(b.rate()),
                rate(l.rate()),
                f(b.ratio(), 2),
                f(l.ratio(), 2),
                f(b.cpu(), 2),
                f(l.cpu(), 2),
                f(b.cpu_per_million(), 2),
                f(l.cpu_per_million(), 2),
                mb(b.peak_rss_kb()),
                mb(l.peak_rss_kb())
            );
        }
    }
    for l in &results.latency {
        if let Some(b) = find_latency(baselines, l) {
            let _ = writeln!(
                out,
                "| latency p99 ms | {} | {:.1} | {:.1} | | | {} | {} | | | {} | {} |",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Results {
        serde_json::from_str(text).unwrap_or_default()
    }

    /// The committed results files (written before runs recorded the
    /// user/system split and the workers) still load, and their cases key
    /// into the table: the snapshot cases with their CPU per 1M rows from
    /// the full run's file, NATS and Elasticsearch from the sinks run's.
    #[test]
    fn committed_results_files_key_into_the_table() {
        let before = load(include_str!("../../../../docs/benchmarks-before.json"));
        let sinks = load(include_str!("../../../../docs/benchmarks-sinks.json"));
        assert!(before.lines.iter().any(|l| l.group == "snapshot"));
        assert!(sinks.lines.iter().any(|l| l.group == "sinks"));
        let mut after = before.clone();
        after.lines.extend(sinks.lines.iter().cloned());
        let snapshot = after.lines.len();
        let mut out = String::new();
        before_after(
            &mut out,
            &after,
            &[
                ("benchmarks-before.json", &before),
                ("benchmarks-sinks.json", &sinks),
            ],
        );
        let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("| ")).collect();
        // The header, then every line and both latency readers.
        assert_eq!(rows.len(), 1 + snapshot + before.latency.len(), "{out}");
        let first = &before.lines[0];
        let per_million = f(first.cpu_per_million(), 2);
        assert!(per_million != "–", "{out}");
        let expected = format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {per_million} | {per_million} |",
            first.case,
            first.reader,
            rate(first.rate()),
            rate(first.rate()),
            f(first.ratio(), 2),
            f(first.ratio(), 2),
            f(first.cpu(), 2),
            f(first.cpu(), 2),
        );
        assert!(out.contains(&expected), "{expected}\n{out}");
        assert!(out.contains("| 200k rows, snapshot, 1 worker | engine → NATS JetStream (file) |"));
        assert!(out.contains("`benchmarks-before.json` and `benchmarks-sinks.json`"));
    }
}
