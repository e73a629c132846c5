//! `cdc-bench`: the benchmark driver behind `scripts/bench.sh`.
//!
//! `cdc-bench run` loads data into a PostgreSQL cluster it is given, runs
//! every case against its ceiling (parallel `COPY`, `pg_recvlogical`)
//! several times, and writes the Markdown report and the raw results.
//! `cdc-bench library` is the library-path reader it starts as a process of
//! its own (null sink, or the file sink for latency).

mod broker;
mod cases;
mod ctx;
mod data;
mod db;
mod es_ceiling;
mod model;
mod nats_ceiling;
mod proc_stat;
mod readers;
mod report;
mod runner;
mod sinks;
mod stats;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::cases::Plan;
use crate::data::StreamLoad;
use crate::model::Results;
use crate::report::{Machine, ReportInput};

/// Benchmarks of the CDC engine against ceilings measured in the same run.
#[derive(Parser)]
#[command(name = "cdc-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the benchmark and write the report.
    Run(Box<RunArgs>),
    /// The library-path reader (started by `run`).
    Library(worker::WorkerArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Database URL of the bench cluster (TCP).
    #[arg(long)]
    url: String,
    /// The release `cdc-engine` binary.
    #[arg(long)]
    engine: PathBuf,
    /// Directory with `pg_recvlogical` and `psql`.
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pg_bin: PathBuf,
    /// Scratch directory.
    #[arg(long)]
    work: PathBuf,
    /// Where to write the Markdown report.
    #[arg(long)]
    out: PathBuf,
    /// Where to write the raw results (JSON).
    #[arg(long)]
    json: PathBuf,
    /// Tiny sizes and one repetition (a smoke run).
    #[arg(long)]
    quick: bool,
    /// Repetitions (default 3, 1 with --quick).
    #[arg(long)]
    reps: Option<usize>,
    /// The tansu broker binary; without it the Kafka cases are skipped.
    #[arg(long)]
    tansu: Option<PathBuf>,
    /// Port for the broker.
    #[arg(long, default_value_t = 57092)]
    kafka_port: u16,
    /// NATS server URL (JetStream enabled); without it the NATS case is
    /// skipped.
    #[arg(long)]
    nats_url: Option<String>,
    /// The NATS server's pid, for its CPU seconds.
    #[arg(long)]
    nats_pid: Option<u32>,
    /// Elasticsearch-API server URL; without it the Elasticsearch case is
    /// skipped.
    #[arg(long)]
    es_url: Option<String>,
    /// The Elasticsearch-API server's pid, for its CPU seconds.
    #[arg(long)]
    es_pid: Option<u32>,
    /// What the Elasticsearch-API server is, for the report.
    #[arg(long, default_value = "Elasticsearch API")]
    es_label: String,
    /// Rows of the table snapshotted into NATS instead of the mode's.
    #[arg(long)]
    sink_rows: Option<u64>,
    /// Rows of the table snapshotted into Elasticsearch instead of the
    /// mode's.
    #[arg(long)]
    es_rows: Option<u64>,
    /// Results files of earlier runs, for a before/after table (may be
    /// given more than once: a case is taken from the first file that has
    /// it).
    #[arg(long)]
    baseline: Vec<PathBuf>,
    /// Hand-written notes to include (profile and fixes).
    #[arg(long)]
    notes: Option<PathBuf>,
    /// Only these case groups (snapshot, streaming, sinks, latency).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Extra `name=value` lines for the report's settings table.
    #[arg(long = "setting")]
    settings: Vec<String>,
    /// Row counts of the snapshot tables instead of the mode's.
    #[arg(long, value_delimiter = ',')]
    snapshot_rows: Vec<u64>,
    /// Changes per streaming case instead of the mode's.
    #[arg(long)]
    stream_rows: Option<u64>,
    /// Seconds of the latency writer instead of the mode's.
    #[arg(long)]
    latency_secs: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run(*args).await,
            Command::Library(args) => worker::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

const PG_SETTINGS: &[&str] = &[
    "server_version",
    "shared_buffers",
    "wal_level",
    "synchronous_commit",
    "fsync",
    "full_page_writes",
    "wal_compression",
    "wal_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "logical_decoding_work_mem",
    "autovacuum",
    "wal_sender_timeout",
];

async fn run(args: RunArgs) -> Result<()> {
    let started = Instant::now();
    let mut machine = Machine::probe();
    std::fs::create_dir_all(&args.work)?;
    let db = db::Db::connect(&args.url).await?;
    machine.pg_version = db.text("SELECT version()").await?;
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let plan = if args.quick {
        Plan {
            snapshot_rows: vec![20_000],
            workers: vec![1, 2, 4],
            stream_rows: 20_000,
            loads: vec![StreamLoad::SmallTx, StreamLoad::OneTx, StreamLoad::Updates],
            latency_rate: 5_000,
            latency_secs: 3,
            kafka: args.tansu.is_some(),
            sink_rows: 5_000,
            es_rows: 5_000,
        }
    } else {
        Plan {
            snapshot_rows: vec![1_000_000, 5_000_000],
            workers: vec![1, 2, 4],
            stream_rows: 1_000_000,
            loads: vec![StreamLoad::SmallTx, StreamLoad::OneTx, StreamLoad::Updates],
            latency_rate: 5_000,
            latency_secs: 30,
            kafka: args.tansu.is_some(),
            sink_rows: 200_000,
            es_rows: 150_000,
        }
    };
    let mut plan = plan;
    if !args.snapshot_rows.is_empty() {
        plan.snapshot_rows = args.snapshot_rows.clone();
    }
    if let Some(n) = args.stream_rows {
        plan.stream_rows = n;
    }
    if let Some(n) = args.sink_rows {
        plan.sink_rows = n;
    }
    if let Some(n) = args.es_rows {
        plan.es_rows = n;
    }
    if let Some(n) = args.latency_secs {
        plan.latency_secs = n;
    }
    let ctx = ctx::Ctx {
        db,
        url: args.url.clone(),
        engine: args.engine.clone(),
        me: std::env::current_exe().context("locating cdc-bench")?,
        pg_bin: args.pg_bin.clone(),
        work: args.work.clone(),
        tansu: args.tansu.clone(),
        kafka_port: args.kafka_port,
        nats: args.nats_url.clone().map(|url| ctx::Server {
            url,
            pid: args.nats_pid,
            label: "NATS JetStream (file)".into(),
        }),
        es: args.es_url.clone().map(|url| ctx::Server {
            url,
            pid: args.es_pid,
            label: args.es_label.clone(),
        }),
        reps,
        timeout: Duration::from_secs(if args.quick { 120 } else { 900 }),
    };
    let wants = |g: &str| args.only.is_empty() || args.only.iter().any(|o| o == g);
    let mut results = Results::default();
    if wants("snapshot") {
        cases::snapshot(&ctx, &plan, &mut results).await?;
    }
    if wants("streaming") {
        cases::streaming(&ctx, &plan, &mut results).await?;
    }
    if wants("sinks") {
        sinks::sinks(&ctx, &plan, &mut results).await?;
    }
    if wants("latency") {
        cases::latency(&ctx, &plan, &mut results).await?;
    }
    for line in &results.lines {
        if line.runs.is_empty() || line.ceiling.is_empty() {
            results.failures.push(format!(
                "{} / {}: no successful run",
                line.case, line.reader
            ));
        }
    }

    let mut pg_settings = Vec::new();
    for name in PG_SETTINGS {
        let v = ctx
            .db
            .text(&format!("SELECT current_setting('{name}')"))
            .await
            .unwrap_or_else(|_| "?".into());
        pg_settings.push((name.to_string(), v));
    }
    let mut settings: Vec<(String, String)> = vec![
        ("repetitions".into(), reps.to_string()),
        (
            "snapshot tables".into(),
            plan.snapshot_rows.iter().map(|&r| report::count(r)).collect::<Vec<_>>().join(", "),
        ),
        (
            "snapshot workers".into(),
            plan.workers.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(", "),
        ),
        ("streaming changes per case".into(), report::count(plan.stream_rows)),
        (
            "NATS / Elasticsearch table".into(),
            format!(
                "{} / {} rows, snapshotted with 1 worker; sink defaults (`max_in_flight` 1024, `batch_max_docs` 1000)",
                report::count(plan.sink_rows),
                report::count(plan.es_rows)
            ),
        ),
        (
            "latency writer".into(),
            format!("{} rows/s for {} s, transactions of 10 rows", plan.latency_rate, plan.latency_secs),
        ),
        (
            "row".into(),
            "`id bigint` key, `name text` (37 chars), `qty int`, `doc jsonb` (3 keys), `ts timestamptz`: about 150 bytes on disk".into(),
        ),
        (
            "engine settings".into(),
            "defaults: `max_batch_events` 2048, `max_batch_bytes` 8 MiB, `max_batch_wait` 10 ms, `channel_capacity` 8, snapshot `chunk_rows` auto (rows / (8 × workers), 10,000 to 250,000)".into(),
        ),
    ];
    for s in &args.settings {
        if let Some((k, v)) = s.split_once('=') {
            settings.push((k.to_owned(), v.to_owned()));
        }
    }
    let mut baselines = Vec::new();
    for p in &args.baseline {
        baselines.push((
            // The file's name: the report names it, the directory is incidental.
            p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            serde_json::from_str::<Results>(&std::fs::read_to_string(p)?)
                .with_context(|| format!("reading {}", p.display()))?,
        ));
    }
    let baselines: Vec<(&str, &Results)> = baselines.iter().map(|(n, r)| (n.as_str(), r)).collect();
    let notes = match &args.notes {
        Some(p) => std::fs::read_to_string(p).ok(),
        None => None,
    };
    machine.load_end = proc_stat::loadavg();
    machine.minutes = started.elapsed().as_secs_f64() / 60.0;
    let input = ReportInput {
        machine: &machine,
        mode: if args.quick { "quick" } else { "full" },
        reps,
        pg_settings: &pg_settings,
        settings: &settings,
        baselines: &baselines,
        notes: notes.as_deref(),
    };
    let text = report::render(&results, &input);
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    std::fs::write(&args.json, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", args.json.display()))?;
    eprintln!(
        "cdc-bench: wrote {} and {} in {:.1} minutes",
        args.out.display(),
        args.json.display(),
        machine.minutes
    );
    if !results.failures.is_empty() {
        anyhow::bail!(
            "{} run(s) failed:\n{}",
            results.failures.len(),
            results.failures.join("\n")
        );
    }
    Ok(())
}
