//! The readers that are measured: the engine binary, the library worker,
//! `pg_recvlogical`, and parallel `COPY` through `psql`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::process::Command;

use crate::ctx::Ctx;
use crate::model::Run;
use crate::proc_stat::Tracked;
use crate::runner::{count_lines, spawn, watch, End, Watch};
use crate::worker::WorkerResult;

/// Where the engine delivers.
pub enum EngineSink<'a> {
    /// A JSON-lines file.
    File(&'a Path),
    /// Kafka (tansu on loopback).
    Kafka { port: u16, topic: &'a str },
    /// A JetStream stream (file storage) the sink creates.
    Nats {
        url: &'a str,
        stream: &'a str,
        subject_prefix: &'a str,
    },
    /// An Elasticsearch-API server; `index` is the index template.
    Es { url: &'a str, index: &'a str },
}

/// What the engine reads.
pub enum EngineMode {
    /// Stream from an existing slot and publication.
    Stream,
    /// `snapshot_only` with this many workers.
    Snapshot(usize),
}

/// Writes an engine configuration file and returns its path.
pub fn engine_config(
    ctx: &Ctx,
    name: &str,
    table: &str,
    publication: &str,
    slot: &str,
    mode: &EngineMode,
    sink: &EngineSink,
) -> Result<PathBuf> {
    let sink_yaml = match sink {
        EngineSink::File(path) => format!("  - type: file\n    path: '{}'\n", path.display()),
        EngineSink::Kafka { port, topic } => format!(
            "  - type: kafka\n    brokers: ['127.0.0.1:{port}']\n    topic: '{topic}'\n    \
             create_topics: {{ partitions: 1, replication_factor: 1 }}\n"
        ),
        EngineSink::Nats {
            url,
            stream,
            subject_prefix,
        } => format!(
            "  - type: nats\n    url: '{url}'\n    subject: '{subject_prefix}.{{schema}}.{{table}}'\n    \
             stream: {{ name: {stream}, create: true, storage: file }}\n"
        ),
        EngineSink::Es { url, index } => format!(
            "  - type: elasticsearch\n    urls: ['{url}']\n    index: '{index}'\n"
        ),
    };
    let snapshot = match mode {
        // Stream-only: the engine's default mode would copy the table first.
        EngineMode::Stream => "snapshot:\n  mode: never\n".to_owned(),
        EngineMode::Snapshot(w) => format!(
            "snapshot:\n  mode: snapshot_only\n  workers: {w}\n  tables: [public.{table}]\n  \
             instance_id: bench-{name}\n"
        ),
    };
    let yaml = format!(
        "name: bench\nsource:\n  url: '{url}'\n  tables: [public.{table}]\n  \
         publication: {{ name: {publication}, create: false }}\n  \
         slot: {{ name: {slot}, create: false }}\nsinks:\n{sink_yaml}{snapshot}\
         log: {{ level: warn }}\n",
        url = ctx.url
    );
    let path = ctx.path(&format!("{name}.yaml"));
    std::fs::write(&path, yaml)?;
    Ok(path)
}

fn run_from(
    rows: u64,
    w: &crate::runner::Watched,
    secs: Option<f64>,
    broker_cpu_s: Option<f64>,
) -> Run {
    Run {
        rows,
        secs: secs.unwrap_or(w.secs),
        cpu_s: w.process.map(|s| s.cpu_s),
        user_cpu_s: w.process.map(|s| s.user_s),
        sys_cpu_s: w.process.map(|s| s.sys_s),
        walsender_cpu_s: w.walsender.map(|s| s.cpu_s),
        rss_kb: w.process.map(|s| s.hwm_kb),
        broker_cpu_s,
    }
}

/// Runs the engine until `end`; `rows` is what it delivered by then.
pub async fn engine(
    ctx: &Ctx,
    name: &str,
    config: &Path,
    slot: Option<&str>,
    end: End,
    rows: u64,
    broker: Option<&mut Tracked>,
) -> Result<Run> {
    let log = ctx.path(&format!("{name}.log"));
    let start = Instant::now();
    let mut cmd = Command::new(&ctx.engine);
    cmd.arg("run").arg("--config").arg(config);
    let mut child = spawn(&mut cmd, &log)?;
    let broker_before = broker.as_ref().and_then(|b| b.last()).map(|s| s.cpu_s);
    let spec = Watch {
        start,
        slot,
        end,
        timeout: ctx.timeout,
        log: &log,
    };
    let w = watch(&ctx.db, &mut child, spec, broker)
        .await
        .with_context(|| format!("engine run {name}"))?;
    let broker_cpu = match (w.extra, broker_before) {
        (Some(after), Some(before)) => Some(after.cpu_s - before),
        _ => None,
    };
    Ok(run_from(rows, &w, None, broker_cpu))
}

/// Runs the engine's snapshot into a file and checks the row count. On
/// success the file is left in place (its path is returned) for the caller
/// to delete, or to delete right before the next run as that run's
/// `warm_up`: a file deleted just before the engine starts, so that the
/// page-cache pages it frees are there for the new file's writes.
pub async fn engine_snapshot(
    ctx: &Ctx,
    name: &str,
    table: &str,
    workers: usize,
    rows: u64,
    warm_up: Option<&Path>,
) -> Result<(Run, PathBuf)> {
    let out = ctx.path(&format!("{name}.jsonl"));
    let _ = std::fs::remove_file(&out);
    let config = engine_config(
        ctx,
        name,
        table,
        "unused",
        name,
        &EngineMode::Snapshot(workers),
        &EngineSink::File(&out),
    )?;
    if let Some(w) = warm_up {
        std::fs::remove_file(w).with_context(|| format!("deleting {}", w.display()))?;
    }
    let run = engine(ctx, name, &config, None, End::Exit, rows, None).await;
    let checked = run.and_then(|run| {
        let lines = count_lines(&out)?;
        if lines != rows {
            bail!("engine snapshot {name}: {lines} rows in the file, expected {rows}");
        }
        Ok(run)
    });
    match checked {
        Ok(run) => Ok((run, out)),
        Err(e) => {
            let _ = std::fs::remove_file(&out);
            Err(e)
        }
    }
}

/// A run of the library worker.
pub struct Library<'a> {
    /// Name for logs and files.
    pub name: &'a str,
    /// Table (in `public`).
    pub table: &'a str,
    /// Publication.
    pub publication: &'a str,
    /// Slot (the snapshot's job key when copying).
    pub slot: &'a str,
    /// Copy with this many workers instead of streaming.
    pub snapshot_workers: Option<usize>,
    /// Row changes it must deliver.
    pub rows: u64,
    /// Record commit-to-ack latency.
    pub latency: bool,
    /// Write into the engine's file sink here instead of dropping.
    pub file: Option<&'a Path>,
}

/// Runs the library worker (null sink, or the file sink with `file`).
pub async fn library(ctx: &Ctx, spec: Library<'_>) -> Result<(Run, WorkerResult)> {
    let Library {
        name,
        table,
        publication,
        slot,
        snapshot_workers,
        rows,
        latency,
        file,
    } = spec;
    let log = ctx.path(&format!("{name}.log"));
    let mut cmd = Command::new(&ctx.me);
    cmd.arg("library")
        .args(["--url", &ctx.url, "--table", table])
        .args(["--publication", publication])
        .args(["--slot", slot, "--expect-rows", &rows.to_string()]);
    if let Some(w) = snapshot_workers {
        cmd.args(["--snapshot-workers", &w.to_string()]);
    }
    if latency {
        cmd.arg("--latency");
    }
    if let Some(f) = file {
        cmd.arg("--file").arg(f);
    }
    cmd.env("RUST_LOG", "warn");
    let start = Instant::now();
    let mut child = spawn(&mut cmd, &log)?;
    let ws = snapshot_workers.is_none().then_some(slot);
    let spec = Watch {
        start,
        slot: ws,
        end: End::Exit,
        timeout: ctx.timeout,
        log: &log,
    };
    let w = watch(&ctx.db, &mut child, spec, None)
        .await
        .with_context(|| format!("library run {name}"))?;
    let result: WorkerResult = serde_json::from_str(w.stdout.trim())
        .with_context(|| format!("library run {name}: bad output {:?}", w.stdout))?;
    if result.rows != rows {
        bail!("library run {name}: {} rows, expected {rows}", result.rows);
    }
    Ok((run_from(rows, &w, Some(result.secs), None), result))
}

/// Runs `pg_recvlogical` with pgoutput v1 until `endpos`.
pub async fn recvlogical(
    ctx: &Ctx,
    name: &str,
    slot: &str,
    publication: &str,
    endpos: &str,
    rows: u64,
) -> Result<Run> {
    let log = ctx.path(&format!("{name}.log"));
    let mut cmd = Command::new(ctx.pg_bin.join("pg_recvlogical"));
    cmd.args(["-d", &ctx.url, "--slot", slot, "--start", "--no-loop"])
        .args(["-o", "proto_version=1", "-o"])
        .arg(format!("publication_names={publication}"))
        .args(["--endpos", endpos, "-f", "/dev/null"]);
    let start = Instant::now();
    let mut child = spawn(&mut cmd, &log)?;
    let spec = Watch {
        start,
        slot: Some(slot),
        end: End::Exit,
        timeout: ctx.timeout,
        log: &log,
    };
    let w = watch(&ctx.db, &mut child, spec, None)
        .await
        .with_context(|| format!("pg_recvlogical {name}"))?;
    Ok(run_from(rows, &w, None, None))
}

/// `n` parallel `COPY (SELECT … WHERE ctid …) TO STDOUT` streams to
/// /dev/null, over TCP like the engine; CPU is that of the psql clients.
pub async fn parallel_copy(
    ctx: &Ctx,
    name: &str,
    table: &str,
    pages: u64,
    n: usize,
    rows: u64,
) -> Result<Run> {
    let n64 = n as u64;
    let start = Instant::now();
    let mut children = Vec::new();
    for i in 0..n64 {
        let lo = pages * i / n64;
        let hi = pages * (i + 1) / n64;
        let cond = if i + 1 == n64 {
            format!("ctid >= '({lo},0)'::tid")
        } else {
            format!("ctid >= '({lo},0)'::tid AND ctid < '({hi},0)'::tid")
        };
        let sql = format!("COPY (SELECT * FROM public.\"{table}\" WHERE {cond}) TO STDOUT");
        let mut cmd = Command::new(ctx.pg_bin.join("psql"));
        cmd.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &ctx.url,
            "-c",
            &sql,
        ]);
        let log = ctx.path(&format!("{name}-{i}.log"));
        let err = std::fs::File::create(&log)?;
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create("/dev/null")?)
            .stderr(err)
            .kill_on_drop(true);
        let child = cmd.spawn().context("starting psql")?;
        let pid = child.id().unwrap_or(0);
        children.push((child, Tracked::new(pid), log));
    }
    let mut done = vec![false; children.len()];
    while done.iter().any(|d| !d) {
        for (i, (child, t, log)) in children.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            t.update();
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("psql COPY failed: {}", crate::runner::tail(log));
                }
                done[i] = true;
            }
        }
        if start.elapsed() > ctx.timeout {
            bail!("COPY did not finish in time");
        }
        if done.iter().any(|d| !d) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let sum = |f: fn(&crate::proc_stat::Sample) -> f64| -> f64 {
        children
            .iter()
            .filter_map(|c| c.1.last())
            .map(|s| f(&s))
            .sum()
    };
    let rss = children
        .iter()
        .filter_map(|c| c.1.last())
        .map(|s| s.hwm_kb)
        .max()
        .unwrap_or(0);
    Ok(Run {
        rows,
        secs,
        cpu_s: Some(sum(|s| s.cpu_s)),
        user_cpu_s: Some(sum(|s| s.user_s)),
        sys_cpu_s: Some(sum(|s| s.sys_s)),
        walsender_cpu_s: None,
        rss_kb: Some(rss),
        broker_cpu_s: None,
    })
}
