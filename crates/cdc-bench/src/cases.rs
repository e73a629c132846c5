//! The case groups: snapshot, streaming (file, null sink, Kafka), latency.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cdc_postgres::ident::quote_ident;

use crate::broker::Broker;
use crate::ctx::Ctx;
use crate::data::{self, StreamLoad};
use crate::model::{Latency, Line, Results, Run, ENGINE_FILE, ENGINE_FILE_WARMED, LIBRARY_NULL};
use crate::readers::{self, EngineMode, EngineSink, Library};
use crate::report::count;
use crate::runner::End;

/// Sizes and switches of one bench run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Row counts of the snapshot tables.
    pub snapshot_rows: Vec<u64>,
    /// Snapshot worker counts.
    pub workers: Vec<usize>,
    /// Row changes of each streaming case.
    pub stream_rows: u64,
    /// Streaming loads.
    pub loads: Vec<StreamLoad>,
    /// Rows per second of the latency writer.
    pub latency_rate: u64,
    /// Seconds the latency writer runs.
    pub latency_secs: u64,
    /// Whether the Kafka cases run.
    pub kafka: bool,
    /// Rows of the table snapshotted into NATS.
    pub sink_rows: u64,
    /// Rows of the table snapshotted into Elasticsearch (whose test
    /// servers are slower).
    pub es_rows: u64,
}

pub(crate) fn log_step(msg: &str) {
    eprintln!("cdc-bench [{}] {msg}", crate::report::clock());
}

/// Records a failed run and keeps going.
pub(crate) fn note(results: &mut Results, what: &str, r: Result<Run>) -> Option<Run> {
    match r {
        Ok(run) => {
            log_step(&format!(
                "  {what}: {} rows in {:.2}s = {:.0} rows/s, cpu {:.2}s, walsender {:.2}s, rss {} KiB",
                run.rows,
                run.secs,
                run.rate(),
                run.cpu_s.unwrap_or(0.0),
                run.walsender_cpu_s.unwrap_or(0.0),
                run.rss_kb.unwrap_or(0)
            ));
            Some(run)
        }
        Err(e) => {
            let msg = format!("{what}: {e:#}");
            log_step(&format!("  FAILED {msg}"));
            results.failures.push(msg);
            None
        }
    }
}

/// Snapshot: engine → file (each run followed at once by one into a warmed
/// target) and library → null sink against parallel COPY.
pub async fn snapshot(ctx: &Ctx, plan: &Plan, results: &mut Results) -> Result<()> {
    for &rows in &plan.snapshot_rows {
        let table = format!("snap_{rows}");
        log_step(&format!(
            "snapshot: loading {} rows into {table}",
            count(rows)
        ));
        data::create_table(&ctx.db, &table).await?;
        data::insert_bulk(&ctx.db, &table, rows).await?;
        let pages = ctx
            .db
            .int(&format!(
                "SELECT relpages::bigint FROM pg_class WHERE oid = 'public.{}'::regclass",
                quote_ident(&table)
            ))
            .await?
            .max(1) as u64;
        for &workers in &plan.workers {
            let case = format!(
                "{} rows, {workers} worker{}",
                count(rows),
                if workers == 1 { "" } else { "s" }
            );
            log_step(&format!("snapshot: {case}"));
            let mut ceiling = Vec::new();
            let mut engine = Vec::new();
            let mut warmed = Vec::new();
            let mut library = Vec::new();
            for rep in 0..ctx.reps {
                let name = format!("snap-{rows}-{workers}-{rep}");
                let r = readers::parallel_copy(
                    ctx,
                    &format!("{name}-copy"),
                    &table,
                    pages,
                    workers,
                    rows,
                )
                .await;
                ceiling.extend(note(results, &format!("{case} COPY ceiling"), r));
                let slot = format!("snap_e_{rows}_{workers}_{rep}");
                let r = readers::engine_snapshot(ctx, &slot, &table, workers, rows, None).await;
                let (r, written) = match r {
                    Ok((run, path)) => (Ok(run), Some(path)),
                    Err(e) => (Err(e), None),
                };
                engine.extend(note(results, &format!("{case} {ENGINE_FILE}"), r));
                // At once the same snapshot into a warmed target: the file
                // just written (as large as the new one will be) is deleted
                // right before the engine starts, so the new file's writes
                // find page-cache pages that were in use a moment ago.
                if let Some(written) = written {
                    let slot = format!("snap_w_{rows}_{workers}_{rep}");
                    let r =
                        readers::engine_snapshot(ctx, &slot, &table, workers, rows, Some(&written))
                            .await;
                    let r = r.map(|(run, path)| {
                        let _ = std::fs::remove_file(path);
                        run
                    });
                    // (Gone already unless the run failed before starting.)
                    let _ = std::fs::remove_file(&written);
                    warmed.extend(note(results, &format!("{case} {ENGINE_FILE_WARMED}"), r));
                }
                let slot = format!("snap_l_{rows}_{workers}_{rep}");
                let r = readers::library(
                    ctx,
                    Library {
                        name: &slot,
                        table: &table,
                        publication: "unused",
                        slot: &slot,
                        snapshot_workers: Some(workers),
                        rows,
                        latency: false,
                        file: None,
                    },
                )
                .await
                .map(|(run, _)| run);
                library.extend(note(results, &format!("{case} {LIBRARY_NULL}"), r));
                ctx.db.exec("DROP SCHEMA IF EXISTS cdc CASCADE").await?;
            }
            let ceiling_reader = format!("{workers} × COPY");
            for (reader, runs) in [
                (ENGINE_FILE, engine),
                (ENGINE_FILE_WARMED, warmed),
                (LIBRARY_NULL, library),
            ] {
                results.lines.push(Line {
                    group: "snapshot".into(),
                    case: case.clone(),
                    reader: reader.into(),
                    ceiling_reader: ceiling_reader.clone(),
                    runs,
                    ceiling: ceiling.clone(),
                    expected_rows: rows,
                    workers: Some(workers),
                });
            }
        }
        ctx.db
            .exec(&format!("DROP TABLE public.{}", quote_ident(&table)))
            .await?;
    }
    Ok(())
}

/// The readers of a streaming case, each with its own slot created before
/// the load so that all decode the same WAL.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reader {
    RecvLogical,
    EngineFile,
    LibraryNull,
    EngineKafka,
}

impl Reader {
    fn key(self) -> &'static str {
        match self {
            Reader::RecvLogical => "recv",
            Reader::EngineFile => "file",
            Reader::LibraryNull => "null",
            Reader::EngineKafka => "kafka",
        }
    }
}

/// Streaming: engine → file, library → null sink and engine → Kafka
/// against `pg_recvlogical` on the same WAL.
pub async fn streaming(ctx: &Ctx, plan: &Plan, results: &mut Results) -> Result<()> {
    let rows = plan.stream_rows;
    let mut readers = vec![Reader::RecvLogical, Reader::EngineFile, Reader::LibraryNull];
    if plan.kafka {
        readers.push(Reader::EngineKafka);
    }
    for &load in &plan.loads {
        let key = load.key();
        let case = load.describe(rows);
        let table = format!("st_{key}");
        let publication = format!("pub_{key}");
        log_step(&format!("streaming: {case}: preparing"));
        load.prepare(&ctx.db, &table, rows).await?;
        ctx.db.create_publication(&publication, &table).await?;
        let slot = |r: Reader, rep: usize| format!("bench_{key}_{}_{rep}", r.key());
        for rep in 0..ctx.reps {
            for &r in &readers {
                ctx.db.create_slot(&slot(r, rep)).await?;
            }
        }
        log_step(&format!("streaming: {case}: loading"));
        let t0 = Instant::now();
        let last_commit = load.run(&ctx.db, &table, rows).await?;
        let endpos = ctx.db.text("SELECT pg_current_wal_lsn()::text").await?;
        log_step(&format!(
            "streaming: {case}: loaded in {:.1}s (end {endpos})",
            t0.elapsed().as_secs_f64()
        ));
        let mut runs: Vec<(Reader, Vec<Run>)> = readers.iter().map(|&r| (r, Vec::new())).collect();
        for rep in 0..ctx.reps {
            for &r in &readers {
                let s = slot(r, rep);
                let name = format!("st-{key}-{}-{rep}", r.key());
                let result = match r {
                    Reader::RecvLogical => {
                        readers::recvlogical(ctx, &name, &s, &publication, &endpos, rows).await
                    }
                    Reader::EngineFile => {
                        let out = ctx.path(&format!("{name}.jsonl"));
                        let _ = std::fs::remove_file(&out);
                        let config = readers::engine_config(
                            ctx,
                            &name,
                            &table,
                            &publication,
                            &s,
                            &EngineMode::Stream,
                            &EngineSink::File(&out),
                        )?;
                        let run = readers::engine(
                            ctx,
                            &name,
                            &config,
                            Some(&s),
                            End::FileLines(out.clone(), rows),
                            rows,
                            None,
                        )
                        .await;
                        let _ = std::fs::remove_file(&out);
                        run
                    }
                    Reader::LibraryNull => readers::library(
                        ctx,
                        Library {
                            name: &name,
                            table: &table,
                            publication: &publication,
                            slot: &s,
                            snapshot_workers: None,
                            rows,
                            latency: false,
                            file: None,
                        },
                    )
                    .await
                    .map(|(run, _)| run),
                    Reader::EngineKafka => {
                        kafka_run(ctx, &name, &table, &publication, &s, last_commit, rows).await
                    }
                };
                let what = format!("{case} {}", r.key());
                if let Some(run) = note(results, &what, result) {
                    if let Some(entry) = runs.iter_mut().find(|(x, _)| *x == r) {
                        entry.1.push(run);
                    }
                }
                ctx.db.drop_slot(&s).await?;
            }
        }
        let ceiling = runs
            .iter()
            .find(|(r, _)| *r == Reader::RecvLogical)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        for (r, v) in runs {
            let (group, reader) = match r {
                Reader::RecvLogical => continue,
                Reader::EngineFile => ("streaming", ENGINE_FILE),
                Reader::LibraryNull => ("streaming", LIBRARY_NULL),
                Reader::EngineKafka => ("kafka", "engine → Kafka (tansu)"),
            };
            results.lines.push(Line {
                group: group.into(),
                case: case.clone(),
                reader: reader.into(),
                ceiling_reader: "pg_recvlogical (pgoutput v1)".into(),
                runs: v,
                ceiling: ceiling.clone(),
                expected_rows: rows,
                workers: None,
            });
        }
        ctx.db
            .exec(&format!(
                "DROP PUBLICATION {}; DROP TABLE public.{}",
                quote_ident(&publication),
                quote_ident(&table)
            ))
            .await?;
    }
    Ok(())
}

async fn kafka_run(
    ctx: &Ctx,
    name: &str,
    table: &str,
    publication: &str,
    slot: &str,
    last_commit: u64,
    rows: u64,
) -> Result<Run> {
    let bin = ctx.tansu.as_ref().context("no tansu binary")?;
    let mut broker =
        Broker::start(bin, ctx.kafka_port, &ctx.path(&format!("{name}-tansu"))).await?;
    let topic = format!("bench.{name}");
    let config = readers::engine_config(
        ctx,
        name,
        table,
        publication,
        slot,
        &EngineMode::Stream,
        &EngineSink::Kafka {
            port: ctx.kafka_port,
            topic: &topic,
        },
    )?;
    let run = readers::engine(
        ctx,
        name,
        &config,
        Some(slot),
        End::SlotPast(slot.to_owned(), last_commit),
        rows,
        Some(&mut broker.tracked),
    )
    .await;
    broker.stop().await;
    let _ = std::fs::remove_dir_all(ctx.path(&format!("{name}-tansu")));
    run
}

/// Commit-to-ack latency at a steady rate, through the library path into
/// the null sink and into the engine's file sink (fsync per batch).
pub async fn latency(ctx: &Ctx, plan: &Plan, results: &mut Results) -> Result<()> {
    let table = "lat";
    let publication = "pub_lat";
    data::create_table(&ctx.db, table).await?;
    ctx.db.create_publication(publication, table).await?;
    let total = plan.latency_rate * plan.latency_secs;
    for (i, (label, file)) in [
        ("library → null sink", false),
        ("library → file sink", true),
    ]
    .into_iter()
    .enumerate()
    {
        log_step(&format!(
            "latency: {label} at {} rows/s for {}s",
            plan.latency_rate, plan.latency_secs
        ));
        let slot = format!("bench_lat_{i}");
        ctx.db.create_slot(&slot).await?;
        let out = ctx.path(&format!("lat-{i}.jsonl"));
        let _ = std::fs::remove_file(&out);
        let name = format!("lat-{i}");
        let worker = readers::library(
            ctx,
            Library {
                name: &name,
                table,
                publication,
                slot: &slot,
                snapshot_workers: None,
                rows: total,
                latency: true,
                file: file.then_some(out.as_path()),
            },
        );
        let writer = async {
            // Wait until the worker streams, then write at a steady pace.
            let t = Instant::now();
            while ctx.db.slot_pid(&slot).await?.is_none() {
                if t.elapsed() > Duration::from_secs(60) {
                    bail!("the worker did not start streaming");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            steady_writer(ctx, table, i as u64 * total, total, plan.latency_rate).await
        };
        let (w, achieved) = tokio::join!(worker, writer);
        let _ = std::fs::remove_file(&out);
        ctx.db.drop_slot(&slot).await?;
        match (w, achieved) {
            (Ok((run, res)), Ok(achieved)) => {
                let lat = res.latency_us.unwrap_or([0; 3]);
                log_step(&format!(
                    "  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({achieved:.0} rows/s written)",
                    lat[0] as f64 / 1e3,
                    lat[1] as f64 / 1e3,
                    lat[2] as f64 / 1e3
                ));
                results.latency.push(Latency {
                    reader: label.into(),
                    target_rate: plan.latency_rate,
                    achieved_rate: achieved,
                    rows: res.rows,
                    latency_us: lat,
                    cpu_s: run.cpu_s,
                    rss_kb: run.rss_kb,
                });
            }
            (w, a) => {
                let msg = format!(
                    "latency {label}: {}",
                    [
                        w.err().map(|e| format!("{e:#}")),
                        a.err().map(|e| format!("{e:#}"))
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("; ")
                );
                log_step(&format!("  FAILED {msg}"));
                results.failures.push(msg);
            }
        }
    }
    ctx.db
        .exec("DROP PUBLICATION pub_lat; DROP TABLE public.lat")
        .await?;
    Ok(())
}

/// Inserts `total` rows (ids after `base`) in transactions of 10, paced to
/// `rate` rows per second. Returns the rate reached.
async fn steady_writer(ctx: &Ctx, table: &str, base: u64, total: u64, rate: u64) -> Result<f64> {
    let t = quote_ident(table);
    let per_tx = 10u64;
    let interval = Duration::from_secs_f64(per_tx as f64 / rate.max(1) as f64);
    let start = tokio::time::Instant::now();
    let mut conn = ctx.db.pool.acquire().await?;
    // The cluster runs with synchronous_commit = off for the loads; then a
    // commit reaches the walsender only when the WAL writer flushes it (up
    // to wal_writer_delay later). The latency writer commits as an
    // application that cares would.
    sqlx::raw_sql("SET synchronous_commit = on")
        .execute(&mut *conn)
        .await?;
    let mut written = 0u64;
    let mut k = 0u32;
    while written < total {
        tokio::time::sleep_until(start + interval * k).await;
        let n = per_tx.min(total - written);
        let from = base + written + 1;
        let to = from + n - 1;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "INSERT INTO public.{t} SELECT g, 'name-' || md5(g::text), (g % 1000)::int, \
             jsonb_build_object('k', g), now() FROM generate_series({from}::bigint, {to}::bigint) g"
        )))
        .execute(&mut *conn)
        .await?;
        written += n;
        k += 1;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}
