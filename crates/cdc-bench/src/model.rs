//! What a bench run measures, as saved in the JSON results file.

use serde::{Deserialize, Serialize};

use crate::stats::median;

/// The engine snapshotting into the file sink (and streaming into it).
pub const ENGINE_FILE: &str = "engine → file";
/// The same snapshot into a warmed target: the previous run's output
/// deleted right before the engine starts (see `cases::snapshot`).
pub const ENGINE_FILE_WARMED: &str = "engine → file, warmed target";
/// The library path into a sink that drops every batch.
pub const LIBRARY_NULL: &str = "library → null sink";

/// One run of one reader.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Run {
    /// Row changes delivered.
    pub rows: u64,
    /// Wall-clock seconds.
    pub secs: f64,
    /// CPU seconds of the reader process (engine, library worker,
    /// pg_recvlogical, or the psql clients of the COPY ceiling).
    pub cpu_s: Option<f64>,
    /// The user part of `cpu_s` (absent in results of older runs).
    #[serde(default)]
    pub user_cpu_s: Option<f64>,
    /// The system (kernel) part of `cpu_s`.
    #[serde(default)]
    pub sys_cpu_s: Option<f64>,
    /// CPU seconds of the walsender serving the reader.
    pub walsender_cpu_s: Option<f64>,
    /// Peak RSS of the reader process, KiB.
    pub rss_kb: Option<u64>,
    /// CPU seconds of the Kafka broker during the run.
    pub broker_cpu_s: Option<f64>,
}

impl Run {
    /// Rows per second.
    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.rows as f64 / self.secs
        } else {
            0.0
        }
    }

    /// CPU seconds of the reader per million rows delivered.
    pub fn cpu_per_million(&self) -> Option<f64> {
        per_million(self.cpu_s, self.rows)
    }
}

fn per_million(v: Option<f64>, rows: u64) -> Option<f64> {
    v.filter(|_| rows > 0).map(|v| v * 1e6 / rows as f64)
}

/// One line of a results table: a reader against its ceiling on the same data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    /// `snapshot`, `streaming` or `kafka`.
    pub group: String,
    /// The case, e.g. `1M rows, 2 workers`.
    pub case: String,
    /// The reader, e.g. `engine → file`.
    pub reader: String,
    /// The ceiling, e.g. `2 × COPY`.
    pub ceiling_reader: String,
    /// Runs of the reader.
    pub runs: Vec<Run>,
    /// Runs of the ceiling.
    pub ceiling: Vec<Run>,
    /// Row count each run had to deliver.
    pub expected_rows: u64,
    /// Snapshot workers of a snapshot case (absent in results of older
    /// runs: then read from `case`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
}

fn med(runs: &[Run], f: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = runs.iter().filter_map(f).collect();
    median(&v)
}

impl Line {
    /// Median rows/s of the reader.
    pub fn rate(&self) -> Option<f64> {
        med(&self.runs, |r| Some(r.rate()))
    }
    /// Median rows/s of the ceiling.
    pub fn ceiling_rate(&self) -> Option<f64> {
        med(&self.ceiling, |r| Some(r.rate()))
    }
    /// Reader rate over ceiling rate.
    pub fn ratio(&self) -> Option<f64> {
        match (self.rate(), self.ceiling_rate()) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        }
    }
    /// Median CPU seconds of the reader.
    pub fn cpu(&self) -> Option<f64> {
        med(&self.runs, |r| r.cpu_s)
    }
    /// Median user CPU seconds of the reader.
    pub fn user_cpu(&self) -> Option<f64> {
        med(&self.runs, |r| r.user_cpu_s)
    }
    /// Median system CPU seconds of the reader.
    pub fn sys_cpu(&self) -> Option<f64> {
        med(&self.runs, |r| r.sys_cpu_s)
    }
    /// Median CPU seconds of the reader per million rows.
    pub fn cpu_per_million(&self) -> Option<f64> {
        med(&self.runs, Run::cpu_per_million)
    }
    /// Median CPU seconds of the ceiling per million rows.
    pub fn ceiling_cpu_per_million(&self) -> Option<f64> {
        med(&self.ceiling, Run::cpu_per_million)
    }
    /// Snapshot workers: the recorded count, else the `N worker(s)` part of
    /// the case.
    pub fn workers(&self) -> Option<usize> {
        self.workers.or_else(|| {
            self.case.split(", ").find_map(|part| {
                part.strip_suffix(" workers")
                    .or_else(|| part.strip_suffix(" worker"))
                    .and_then(|n| n.parse().ok())
            })
        })
    }
    /// Median CPU seconds of the walsender.
    pub fn walsender_cpu(&self) -> Option<f64> {
        med(&self.runs, |r| r.walsender_cpu_s)
    }
    /// Median CPU seconds of the ceiling's walsender.
    pub fn ceiling_walsender_cpu(&self) -> Option<f64> {
        med(&self.ceiling, |r| r.walsender_cpu_s)
    }
    /// Median CPU seconds of the broker.
    pub fn broker_cpu(&self) -> Option<f64> {
        med(&self.runs, |r| r.broker_cpu_s)
    }
    /// Highest peak RSS over the runs, KiB.
    pub fn peak_rss_kb(&self) -> Option<u64> {
        self.runs.iter().filter_map(|r| r.rss_kb).max()
    }
}

/// Commit-to-ack latency at a steady write rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    /// The reader, e.g. `library → null sink`.
    pub reader: String,
    /// Target rows per second of the writer.
    pub target_rate: u64,
    /// Rows per second the writer reached.
    pub achieved_rate: f64,
    /// Rows delivered.
    pub rows: u64,
    /// p50, p99 and max, microseconds.
    pub latency_us: [u64; 3],
    /// CPU seconds of the reader.
    pub cpu_s: Option<f64>,
    /// Peak RSS of the reader, KiB.
    pub rss_kb: Option<u64>,
}

/// Everything one bench run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// Throughput lines.
    pub lines: Vec<Line>,
    /// Latency measurements.
    pub latency: Vec<Latency>,
    /// Cases that failed, with the reason.
    pub failures: Vec<String>,
}
