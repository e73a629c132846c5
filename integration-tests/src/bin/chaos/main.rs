//! The chaos suite (run it with `scripts/chaos.sh [--rounds N] [--seed S]`).
//!
//! On a PostgreSQL 15 cluster of its own ([`Cluster::start`]), each round
//! creates a fresh database with three tables (plain; TOASTed text columns;
//! a composite key), pre-filled so that the initial snapshot takes a few
//! seconds in small chunks, and starts three engine instances sharing one
//! slot and one snapshot, each writing to a file sink. A writer changes the
//! tables concurrently (inserts, updates with and without TOASTed columns,
//! key changes, deletes, now and then a TRUNCATE) while faults chosen by a
//! seeded random generator hit the instances and the server, during the
//! snapshot and during the stream:
//!
//! - `kill -9` of an instance (at random, or the one streaming from the slot
//!   or coordinating the snapshot), started again (into a new output file)
//!   after a short delay; in some rounds `kill -9` of every instance at once;
//! - `SIGSTOP` of an instance for longer than `claim_timeout`, then
//!   `SIGCONT`;
//! - `pg_terminate_backend` of engine sessions (snapshot readers, the
//!   walsender or exporting session, metadata, heartbeat, lock);
//! - one server restart per round (`pg_ctl restart -m fast`, or
//!   `-m immediate` in some rounds);
//! - in half the rounds, incremental snapshots are on and signal rows ask
//!   for one or two of them (of some of the tables) while the faults go
//!   on; the round also waits for them to be done.
//!
//! At the end of a round the writer stops, every instance runs again, and
//! once the slot has confirmed the current WAL position and the files stopped
//! growing, the files of every incarnation are merged by (`commit_lsn`,
//! `ordinal`), applied by key ([`integration_tests::replay`]) and compared
//! with every table's rows. A round that does not converge is reported with
//! its first differences and its directory (engine configs and logs, output
//! files, fault log, server log) is kept.
//!
//! Arguments: `--rounds N` (default 3), `--seed S` (default: random; decimal
//! or `0x` hex), `--dir D` (where round directories go; default
//! `$TMPDIR/cdc-chaos-<seed>`), `--keep` (keep the directories of rounds
//! that passed too). Round 1 runs with seed S and each round's
//! seed is printed: `--seed <that seed> --rounds 1` replays a round's
//! schedule (the interleaving with the engines' own timing differs).
//! The engine binary is `CDC_ENGINE_BIN` (see [`integration_tests::engine_bin`]).

mod args;
mod plan;
mod rng;
mod round;
mod server;
mod tables;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::{engine_bin, Cluster};

use crate::args::parse_args;
use crate::plan::Plan;
use crate::rng::Rng;
use crate::round::run_round;

/// Engine instances per round.
const INSTANCES: usize = 3;
/// `snapshot.claim_timeout` of the instances.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(3);
/// How long faults are injected in a round (the writer runs as long).
const CHAOS_WINDOW: Duration = Duration::from_secs(20);
/// Faults aimed at the snapshot fall in its first seconds.
const SNAPSHOT_WINDOW: (u64, u64) = (300, 8_000);

/// `line`, cut to at most `max` bytes (on a character boundary).
fn clip(line: &str, max: usize) -> String {
    if line.len() <= max {
        return line.to_owned();
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} …", &line[..end])
}

/// Waits for SIGINT or SIGTERM (e.g. from `timeout`); names it.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chaos: {e:#}");
            std::process::exit(2);
        }
    };
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("cdc-chaos-{:#x}", args.seed)));
    if let Err(e) = std::fs::create_dir_all(&base) {
        eprintln!("chaos: cannot create {}: {e}", base.display());
        std::process::exit(2);
    }
    println!(
        "chaos: {} round(s), seed {:#x}, engine {}, round directories under {}",
        args.rounds,
        args.seed,
        engine_bin().display(),
        base.display()
    );
    let cluster = Arc::new(Cluster::start("").await);
    println!("chaos: PostgreSQL on port {}", cluster.port());

    let run_started = Instant::now();
    let mut seed = args.seed;
    let (mut kills, mut faults, mut rows, mut total_exits) = (0u64, 0u64, 0usize, 0u64);
    let mut failures: Vec<(u32, u64, PathBuf)> = Vec::new();
    for n in 1..=args.rounds {
        let plan = Plan::new(seed);
        let dir = base.join(format!("round-{n}-{seed:#x}"));
        let started = Instant::now();
        let cl = cluster.clone();
        let d = dir.clone();
        let mut round = tokio::spawn(async move { run_round(&cl, plan, d).await });
        let res = tokio::select! {
            res = &mut round => res,
            sig = shutdown_signal() => {
                // Dropping the round kills its engines and drops its
                // database; dropping the cluster stops it.
                round.abort();
                let _ = round.await;
                println!("chaos: {sig}: stopped in round {n} (seed {seed:#x}); its directory: {}", dir.display());
                drop(cluster);
                std::process::exit(130);
            }
        };
        let secs = started.elapsed().as_secs_f64();
        match res {
            Ok((o, dir, log)) => {
                kills += u64::from(o.kills);
                faults += u64::from(o.kills + o.stops + o.terminated + o.restarts);
                rows += o.rows;
                let snap = o.snapshot_secs.map_or("-".into(), |s| format!("{s:.1}s"));
                let status = if o.failure.is_some() { "FAILED" } else { "ok" };
                let signals = if o.signals > 0 {
                    format!(" incremental-snapshot-signals {}", o.signals)
                } else {
                    String::new()
                };
                let exits = if o.exits > 0 {
                    format!(" unexpected-exits {}", o.exits)
                } else {
                    String::new()
                };
                println!(
                    "round {n}/{} seed {seed:#x}: kills {} stops {} terminated {} restarts {}{signals}{exits} \
                     rows {} snapshot {snap}: {status} {secs:.1}s",
                    args.rounds, o.kills, o.stops, o.terminated, o.restarts, o.rows
                );
                total_exits += u64::from(o.exits);
                if let Some(f) = o.failure {
                    let _ = std::fs::copy(cluster.log_path(), dir.join("postgres.log"));
                    let _ = std::fs::write(dir.join("failure.txt"), &f);
                    // Rows of TOASTed values are long: the whole report is
                    // in failure.txt.
                    let short: Vec<String> = f.lines().take(30).map(|l| clip(l, 400)).collect();
                    println!("  {}", short.join("\n  "));
                    println!(
                        "  faults:\n    {}",
                        log.lines().collect::<Vec<_>>().join("\n    ")
                    );
                    println!("  kept: {}", dir.display());
                    failures.push((n, seed, dir));
                } else if !args.keep {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            Err(e) => {
                // The tool itself panicked (or an SQL step of the setup
                // failed): counted as a failure, directory kept.
                let _ = std::fs::copy(cluster.log_path(), dir.join("postgres.log"));
                println!(
                    "round {n}/{} seed {seed:#x}: FAILED (the round panicked: {e}) {secs:.1}s\n  kept: {}",
                    args.rounds,
                    dir.display()
                );
                failures.push((n, seed, dir));
            }
        }
        seed = Rng(seed).next_u64();
    }
    let failed: Vec<String> = failures
        .iter()
        .map(|(n, s, d)| format!("round {n} seed {s:#x} ({})", d.display()))
        .collect();
    println!(
        "chaos summary: {} rounds, {kills} kills, {faults} faults injected, {rows} rows compared, \
         {total_exits} unexpected engine exits, {} failed{}{} ({:.0}s)",
        args.rounds,
        failures.len(),
        if failed.is_empty() { "" } else { ": " },
        failed.join(", "),
        run_started.elapsed().as_secs_f64()
    );
    if failures.is_empty() && !args.keep {
        let _ = std::fs::remove_dir(&base);
    }
    drop(cluster);
    std::process::exit(if failures.is_empty() { 0 } else { 1 });
}
