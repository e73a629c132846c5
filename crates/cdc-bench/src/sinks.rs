//! Into NATS and Elasticsearch: the engine snapshotting a table into the
//! sink against a minimal client sending the same messages (read back from
//! what the engine stored) with the same acknowledgement rule, in paired
//! rounds on the same server.

use std::future::Future;

use anyhow::{bail, Context, Result};
use cdc_postgres::ident::quote_ident;

use crate::cases::{log_step, note, Plan};
use crate::ctx::Ctx;
use crate::model::{Line, Results, Run};
use crate::proc_stat::Tracked;
use crate::readers::{self, EngineMode, EngineSink};
use crate::report::count;
use crate::runner::End;
use crate::{data, es_ceiling, nats_ceiling};

/// The sink's `max_in_flight` default, used by engine and ceiling alike.
const NATS_IN_FLIGHT: usize = 1024;
/// The sink's `batch_max_docs` default, used by engine and ceiling alike.
const ES_BATCH_DOCS: usize = 1000;

/// Runs the NATS and Elasticsearch cases whose servers were given.
pub async fn sinks(ctx: &Ctx, plan: &Plan, results: &mut Results) -> Result<()> {
    if ctx.nats.is_none() && ctx.es.is_none() {
        return Ok(());
    }
    if let Some(server) = &ctx.nats {
        let rows = plan.sink_rows;
        let (table, case) = load(ctx, rows).await?;
        log_step(&format!("sinks: {case} → NATS"));
        let mut pair = Pair::default();
        let mut captured: Option<Vec<nats_ceiling::Message>> = None;
        for rep in 0..ctx.reps {
            // Paired rounds, alternating which goes first once the
            // ceiling has its messages.
            let engine_first = captured.is_none() || rep % 2 == 0;
            for engine_turn in [engine_first, !engine_first] {
                if engine_turn {
                    let r = nats_engine(ctx, &server.url, server.pid, &table, rep, rows).await;
                    let r = match r {
                        Ok(run) if captured.is_none() => {
                            let prefix = format!("benche{rep}");
                            let stream = format!("BENCH_E{rep}");
                            match nats_ceiling::capture(&server.url, &stream, &prefix, rows).await {
                                Ok(m) => {
                                    captured = Some(m);
                                    Ok(run)
                                }
                                Err(e) => Err(e.context("capturing the engine's messages")),
                            }
                        }
                        r => r,
                    };
                    nats_ceiling::delete_stream(&server.url, &format!("BENCH_E{rep}")).await?;
                    pair.engine
                        .extend(note(results, &format!("{case} engine → NATS"), r));
                } else if let Some(messages) = &captured {
                    let stream = format!("BENCH_C{rep}");
                    let prefix = format!("benchc{rep}");
                    let r = ceiling(server.pid, rows, || {
                        nats_ceiling::publish(
                            &server.url,
                            &stream,
                            &prefix,
                            messages,
                            NATS_IN_FLIGHT,
                        )
                    })
                    .await;
                    nats_ceiling::delete_stream(&server.url, &stream).await?;
                    pair.ceiling
                        .extend(note(results, &format!("{case} NATS ceiling"), r));
                }
            }
        }
        pair.push(
            results,
            &case,
            "engine → NATS JetStream (file)",
            "async-nats, 1024 in flight",
            rows,
        );
        drop_table(ctx, &table).await?;
    }
    if let Some(server) = &ctx.es {
        let rows = plan.es_rows;
        let (table, case) = load(ctx, rows).await?;
        log_step(&format!("sinks: {case} → Elasticsearch API"));
        let mut pair = Pair::default();
        let mut captured: Option<(es_ceiling::Bulk, Vec<bytes::Bytes>)> = None;
        for rep in 0..ctx.reps {
            let engine_first = captured.is_none() || rep % 2 == 0;
            for engine_turn in [engine_first, !engine_first] {
                let index = format!("bench-e{rep}-{table}");
                if engine_turn {
                    let r = es_engine(ctx, &server.url, server.pid, &table, rep, rows).await;
                    let r = match r {
                        Ok(run) if captured.is_none() => {
                            match es_ceiling::capture(&server.url, &index, ES_BATCH_DOCS).await {
                                Ok(b) if b.count == rows => {
                                    let bodies = b.bodies(&format!("bench-c-{table}"));
                                    captured = Some((b, bodies));
                                    Ok(run)
                                }
                                Ok(b) => Err(anyhow::anyhow!(
                                    "read back {} documents, expected {rows}",
                                    b.count
                                )),
                                Err(e) => Err(e.context("capturing the engine's documents")),
                            }
                        }
                        r => r,
                    };
                    es_ceiling::delete_index(&server.url, &index).await?;
                    pair.engine
                        .extend(note(results, &format!("{case} engine → ES"), r));
                } else if let Some((bulk, bodies)) = &captured {
                    let cindex = format!("bench-c-{table}");
                    let r = ceiling(server.pid, rows, || {
                        es_ceiling::send(&server.url, &cindex, bulk, bodies)
                    })
                    .await;
                    let r = match r {
                        Ok(run) => match es_ceiling::count(&server.url, &cindex).await {
                            Ok(n) if n == rows => Ok(run),
                            Ok(n) => Err(anyhow::anyhow!("ceiling index holds {n} documents")),
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    };
                    es_ceiling::delete_index(&server.url, &cindex).await?;
                    pair.ceiling
                        .extend(note(results, &format!("{case} ES ceiling"), r));
                }
            }
        }
        pair.push(
            results,
            &case,
            &format!("engine → {}", server.label),
            "reqwest `_bulk` of 1000, one at a time",
            rows,
        );
        drop_table(ctx, &table).await?;
    }
    Ok(())
}

/// Creates and fills the table `sink_<rows>`; returns it and the case name.
async fn load(ctx: &Ctx, rows: u64) -> Result<(String, String)> {
    let table = format!("sink_{rows}");
    log_step(&format!("sinks: loading {} rows into {table}", count(rows)));
    data::create_table(&ctx.db, &table).await?;
    data::insert_bulk(&ctx.db, &table, rows).await?;
    Ok((table, format!("{} rows, snapshot, 1 worker", count(rows))))
}

async fn drop_table(ctx: &Ctx, table: &str) -> Result<()> {
    ctx.db
        .exec(&format!("DROP TABLE public.{}", quote_ident(table)))
        .await
}

#[derive(Default)]
struct Pair {
    engine: Vec<Run>,
    ceiling: Vec<Run>,
}

impl Pair {
    fn push(self, results: &mut Results, case: &str, reader: &str, ceiling: &str, rows: u64) {
        results.lines.push(Line {
            group: "sinks".into(),
            case: case.to_owned(),
            reader: reader.to_owned(),
            ceiling_reader: ceiling.to_owned(),
            runs: self.engine,
            ceiling: self.ceiling,
            expected_rows: rows,
            workers: None,
        });
    }
}

/// Runs a ceiling in this process: its CPU is this process's, the
/// server's CPU is sampled around it.
async fn ceiling<F, Fut>(server_pid: Option<u32>, rows: u64, f: F) -> Result<Run>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<f64>>,
{
    let mut me = Tracked::new(std::process::id());
    let mut server = server_pid.map(Tracked::new);
    let me_before = me.last().map(|s| s.cpu_s);
    let server_before = server.as_ref().and_then(|s| s.last()).map(|s| s.cpu_s);
    let secs = f().await?;
    me.update();
    if let Some(s) = server.as_mut() {
        s.update();
    }
    let delta = |before: Option<f64>, t: Option<&Tracked>| match (before, t.and_then(|t| t.last()))
    {
        (Some(b), Some(a)) => Some(a.cpu_s - b),
        _ => None,
    };
    Ok(Run {
        rows,
        secs,
        cpu_s: delta(me_before, Some(&me)),
        walsender_cpu_s: None,
        rss_kb: None,
        broker_cpu_s: delta(server_before, server.as_ref()),
        ..Run::default()
    })
}

/// The engine snapshotting `table` into stream `BENCH_E<rep>`.
async fn nats_engine(
    ctx: &Ctx,
    url: &str,
    pid: Option<u32>,
    table: &str,
    rep: usize,
    rows: u64,
) -> Result<Run> {
    let stream = format!("BENCH_E{rep}");
    let prefix = format!("benche{rep}");
    nats_ceiling::delete_stream(url, &stream).await?;
    let sink = EngineSink::Nats {
        url,
        stream: &stream,
        subject_prefix: &prefix,
    };
    let name = format!("sink-nats-{rep}");
    let run = engine_into(ctx, &name, table, &sink, pid, rows).await?;
    let stored = nats_ceiling::stream_count(url, &stream).await?;
    if stored != rows {
        bail!("stream {stream} holds {stored} messages, expected {rows}");
    }
    Ok(run)
}

/// The engine snapshotting `table` into index `bench-e<rep>-<table>`.
async fn es_engine(
    ctx: &Ctx,
    url: &str,
    pid: Option<u32>,
    table: &str,
    rep: usize,
    rows: u64,
) -> Result<Run> {
    let index = format!("bench-e{rep}-{table}");
    es_ceiling::delete_index(url, &index).await?;
    let template = format!("bench-e{rep}-{{table}}");
    let sink = EngineSink::Es {
        url,
        index: &template,
    };
    let name = format!("sink-es-{rep}");
    let run = engine_into(ctx, &name, table, &sink, pid, rows).await?;
    let stored = es_ceiling::count(url, &index)
        .await
        .with_context(|| format!("counting {index}"))?;
    if stored != rows {
        bail!("index {index} holds {stored} documents, expected {rows}");
    }
    Ok(run)
}

/// The release engine run `name` snapshotting `table` (1 worker) into
/// `sink` until it exits, the sink's server (`pid`) tracked; the
/// coordination tables are dropped before and after.
async fn engine_into(
    ctx: &Ctx,
    name: &str,
    table: &str,
    sink: &EngineSink<'_>,
    pid: Option<u32>,
    rows: u64,
) -> Result<Run> {
    ctx.db.exec("DROP SCHEMA IF EXISTS cdc CASCADE").await?;
    let config = readers::engine_config(
        ctx,
        name,
        table,
        "unused",
        &name.replace('-', "_"),
        &EngineMode::Snapshot(1),
        sink,
    )?;
    let mut server = pid.map(Tracked::new);
    let run = readers::engine(ctx, name, &config, None, End::Exit, rows, server.as_mut()).await?;
    ctx.db.exec("DROP SCHEMA IF EXISTS cdc CASCADE").await?;
    Ok(run)
}
