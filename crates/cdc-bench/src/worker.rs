//! `cdc-bench library`: the library path (`PgSource` and
//! `cdc_engine::pipeline::run_pipeline`) into a sink that drops every batch
//! (or into the engine's file sink), in a process of its own so that its
//! CPU time and peak memory are measured like the engine's.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use cdc_core::{Batch, Event, Op, Sink, SinkError, TableName};
use cdc_engine::pipeline::{run_pipeline, NamedSink, PipelineOptions};
use cdc_engine::sinks::FileSink;
use cdc_postgres::{ChunkRows, CopyFormat, PgSource, PgSourceConfig, SnapshotMode};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::stats::percentile_sorted;

/// What the library worker reads and how.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Database URL.
    #[arg(long)]
    pub url: String,
    /// Table (in `public`).
    #[arg(long)]
    pub table: String,
    /// Publication.
    #[arg(long)]
    pub publication: String,
    /// Slot (the snapshot's job key with `--snapshot-workers`).
    #[arg(long)]
    pub slot: String,
    /// Copy the table with this many workers instead of streaming.
    #[arg(long)]
    pub snapshot_workers: Option<usize>,
    /// Stop after this many row changes.
    #[arg(long)]
    pub expect_rows: u64,
    /// Rows per snapshot chunk instead of the library's default (sized
    /// from the table and the workers), for measuring the per-chunk cost
    /// by hand.
    #[arg(long)]
    pub chunk_rows: Option<u64>,
    /// Rows a snapshot reader hands over at a time instead of the
    /// library's default.
    #[arg(long)]
    pub rows_per_batch: Option<usize>,
    /// Read the snapshot with text `COPY` instead of the library's default
    /// (binary where every column's type allows), for comparing the two.
    #[arg(long)]
    pub text_copy: bool,
    /// Read the snapshot's chunks on the driver's connection instead of
    /// the reader's own COPY connection, for comparing the two.
    #[arg(long)]
    pub driver_copy: bool,
    /// Write into the engine's file sink at this path instead of dropping.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Record commit-to-ack latency of every change.
    #[arg(long)]
    pub latency: bool,
}

/// What the worker prints (one JSON line on stdout).
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerResult {
    /// Row changes received.
    pub rows: u64,
    /// Seconds from the start of the process's work until the last
    /// expected change was acknowledged by the sink.
    pub secs: f64,
    /// Commit-to-ack latency percentiles, microseconds: p50, p99, max.
    pub latency_us: Option<[u64; 3]>,
}

struct Shared {
    rows: AtomicU64,
    expect: u64,
    start: Instant,
    done_at_us: AtomicU64,
    latencies: Option<Mutex<Vec<u64>>>,
    done: CancellationToken,
}

struct BenchSink {
    inner: Option<FileSink>,
    shared: Arc<Shared>,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl Sink for BenchSink {
    async fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        if let Some(inner) = self.inner.as_mut() {
            inner.write_batch(batch).await?;
        }
        let acked = now_us();
        let mut n = 0u64;
        let mut lat = self.shared.latencies.as_ref().map(|m| m.lock());
        for event in &batch.events {
            if let Event::Change(c) = event {
                if c.op == Op::Truncate {
                    continue;
                }
                n += 1;
                if let Some(Ok(v)) = lat.as_mut() {
                    v.push(u64::try_from(acked - c.source.commit_time_us).unwrap_or(0));
                }
            }
        }
        drop(lat);
        let total = self.shared.rows.fetch_add(n, Ordering::AcqRel) + n;
        if total >= self.shared.expect && !self.shared.done.is_cancelled() {
            let us = self.shared.start.elapsed().as_micros() as u64;
            self.shared.done_at_us.store(us, Ordering::Release);
            self.shared.done.cancel();
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        match self.inner.as_mut() {
            Some(inner) => inner.close().await,
            None => Ok(()),
        }
    }
}

/// Runs the worker and prints its [`WorkerResult`].
pub async fn run(args: WorkerArgs) -> Result<()> {
    let start = Instant::now();
    let mut cfg = PgSourceConfig::new(
        args.url.clone(),
        vec![TableName::new("public", args.table.clone())],
        args.publication.clone(),
        args.slot.clone(),
    );
    cfg.create_publication = false;
    cfg.create_slot = false;
    if let Some(workers) = args.snapshot_workers {
        cfg.snapshot.mode = SnapshotMode::SnapshotOnly;
        cfg.snapshot.workers = workers;
        cfg.snapshot.tables = Some(vec![TableName::new("public", args.table.clone())]);
        cfg.snapshot.instance_id = format!("bench-{}", std::process::id());
        if let Some(rows) = args.chunk_rows {
            cfg.snapshot.chunk_rows = ChunkRows::Fixed(rows);
        }
        if let Some(rows) = args.rows_per_batch {
            cfg.snapshot.rows_per_batch = rows;
        }
        if args.text_copy {
            cfg.snapshot.copy_format = CopyFormat::Text;
        }
        if args.driver_copy {
            cfg.snapshot.own_copy_connection = false;
        }
    }
    let shared = Arc::new(Shared {
        rows: AtomicU64::new(0),
        expect: args.expect_rows,
        start,
        done_at_us: AtomicU64::new(0),
        latencies: args.latency.then(|| Mutex::new(Vec::new())),
        done: CancellationToken::new(),
    });
    let inner = match &args.file {
        Some(path) => Some(
            FileSink::open(path, "bench")
                .await
                .context("opening the file sink")?,
        ),
        None => None,
    };
    let source = PgSource::connect(cfg)
        .await
        .context("connecting the source")?;
    let sink = BenchSink {
        inner,
        shared: shared.clone(),
    };
    let sinks = vec![NamedSink::new("bench", Box::new(sink))];
    let outcome = run_pipeline(
        source,
        sinks,
        PipelineOptions::default(),
        shared.done.clone(),
        CancellationToken::new(),
    )
    .await
    .context("pipeline")?;
    let rows = shared.rows.load(Ordering::Acquire);
    let mut secs = shared.done_at_us.load(Ordering::Acquire) as f64 / 1e6;
    if secs == 0.0 {
        secs = start.elapsed().as_secs_f64();
    }
    tracing::debug!(?outcome, rows, "worker done");
    let latency_us = match shared.latencies.as_ref().map(|m| m.lock()) {
        Some(Ok(mut v)) if !v.is_empty() => {
            v.sort_unstable();
            Some([
                percentile_sorted(&v, 50.0).unwrap_or(0),
                percentile_sorted(&v, 99.0).unwrap_or(0),
                v.last().copied().unwrap_or(0),
            ])
        }
        _ => None,
    };
    let result = WorkerResult {
        rows,
        secs,
        latency_us,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}
