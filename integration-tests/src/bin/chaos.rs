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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::{Connection, PgConnection};

use integration_tests::pipelines::yaml_str;
use integration_tests::replay::{apply_keyed, diff, merged, Tail, CATCH_UP_TIMEOUT};
use integration_tests::{engine_bin, unique_suffix, Cluster, Engine, TestDb};

/// The captured tables: SQL name, `schema.table` as events name it, key.
const TABLES: [(&str, &str, &[&str]); 3] = [
    ("public.t_plain", "public.t_plain", &["id"]),
    ("public.t_toast", "public.t_toast", &["id"]),
    ("public.t_comp", "public.t_comp", &["a", "b"]),
];

/// Engine instances per round.
const INSTANCES: usize = 3;
/// `snapshot.claim_timeout` of the instances.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(3);
/// How long faults are injected in a round (the writer runs as long).
const CHAOS_WINDOW: Duration = Duration::from_secs(20);
/// Faults aimed at the snapshot fall in its first seconds.
const SNAPSHOT_WINDOW: (u64, u64) = (300, 8_000);

// ------------------------------------------------------------------ rng

/// splitmix64: small, seedable, good enough for a fault schedule.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

// ------------------------------------------------------------------ args

struct Args {
    rounds: u32,
    seed: u64,
    dir: Option<PathBuf>,
    keep: bool,
}

fn parse_u64(s: &str) -> anyhow::Result<u64> {
    let v = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16)?,
        None => s.parse()?,
    };
    Ok(v)
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        rounds: 3,
        seed: random_seed(),
        dir: None,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--rounds" => {
                args.rounds = value("--rounds")?.parse().context("--rounds")?;
            }
            "--seed" => args.seed = parse_u64(&value("--seed")?).context("--seed")?,
            "--dir" => args.dir = Some(PathBuf::from(value("--dir")?)),
            "--keep" => args.keep = true,
            "-h" | "--help" => {
                println!("usage: chaos [--rounds N] [--seed S] [--dir D] [--keep]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (usage: chaos [--rounds N] [--seed S] [--dir D] [--keep])"),
        }
    }
    Ok(args)
}

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut r = Rng(nanos ^ (u64::from(std::process::id()) << 32));
    r.next_u64() >> 16
}

// ------------------------------------------------------------------ plan

/// A fault of the schedule.
#[derive(Debug, Clone)]
enum Fault {
    /// `kill -9` of an instance (`None`: the leader, see [`Round::leader`]);
    /// started again after `down_for`.
    Kill {
        instance: Option<usize>,
        down_for: Duration,
    },
    /// `kill -9` of every instance at once; each started again after
    /// `down_for`.
    KillAll { down_for: Duration },
    /// `SIGSTOP` for `stopped_for`, then `SIGCONT`.
    Stop {
        instance: Option<usize>,
        stopped_for: Duration,
    },
    /// `pg_terminate_backend` on `count` engine sessions.
    Terminate { count: u64 },
    /// `pg_ctl restart -m fast|immediate`.
    Restart { immediate: bool },
    /// A signal row asking for an incremental snapshot of `tables`.
    Signal { tables: Vec<&'static str> },
}

/// An action at a moment of the round (faults, and the restarts and
/// `SIGCONT`s they schedule).
#[derive(Debug, Clone)]
enum Action {
    Fault(Fault),
    StartAgain(usize),
    Continue(usize),
}

/// What a round is made of, all chosen from its seed.
#[derive(Debug, Clone)]
struct Plan {
    seed: u64,
    rows_plain: u64,
    rows_toast: u64,
    rows_comp: u64,
    chunk_rows: u64,
    workers: u64,
    toast_identity_full: bool,
    comp_identity_full: bool,
    truncate_at: Option<Duration>,
    faults: Vec<(Duration, Fault)>,
    /// Incremental snapshots on, with chunks of this many rows.
    incremental: Option<u64>,
}

impl Plan {
    fn new(seed: u64) -> Plan {
        let mut r = Rng(seed);
        let window = CHAOS_WINDOW.as_millis() as u64;
        let mut faults = Vec::new();
        // Every kind of fault once during the snapshot's first seconds or
        // anywhere, kills two or three times.
        let at = |r: &mut Rng, early: bool| {
            if early {
                r.ms(SNAPSHOT_WINDOW.0, SNAPSHOT_WINDOW.1)
            } else {
                r.ms(SNAPSHOT_WINDOW.0, window - 2_000)
            }
        };
        let kills = r.range(2, 4);
        for k in 0..kills {
            let early = k == 0 || r.chance(30);
            let t = at(&mut r, early);
            let f = Fault::Kill {
                instance: (!r.chance(40)).then(|| r.below(INSTANCES as u64) as usize),
                down_for: r.ms(100, 3_000),
            };
            faults.push((t, f));
        }
        if r.chance(25) {
            let early = r.chance(70);
            let t = at(&mut r, early);
            faults.push((
                t,
                Fault::KillAll {
                    down_for: r.ms(100, 2_000),
                },
            ));
        }
        let early = r.chance(50);
        let t = at(&mut r, early);
        let stop = Fault::Stop {
            instance: (!r.chance(50)).then(|| r.below(INSTANCES as u64) as usize),
            stopped_for: CLAIM_TIMEOUT + r.ms(500, 2_500),
        };
        faults.push((t, stop));
        for k in 0..r.range(2, 5) {
            let early = k == 0 || r.chance(30);
            let t = at(&mut r, early);
            faults.push((
                t,
                Fault::Terminate {
                    count: r.range(1, 3),
                },
            ));
        }
        let early = r.chance(40);
        let t = at(&mut r, early);
        faults.push((
            t,
            Fault::Restart {
                immediate: r.chance(35),
            },
        ));
        faults.sort_by_key(|(t, _)| *t);
        let mut plan = Plan {
            seed,
            rows_plain: r.range(60_000, 90_000),
            rows_toast: r.range(3_000, 5_000),
            rows_comp: r.range(16_000, 28_000),
            chunk_rows: r.range(50, 500),
            workers: r.range(1, 4),
            toast_identity_full: r.chance(50),
            comp_identity_full: r.chance(30),
            truncate_at: r.chance(30).then(|| r.ms(1_000, window - 3_000)),
            faults,
            incremental: None,
        };
        // Drawn last: the rest of a seed's schedule stays as it was.
        if r.chance(50) {
            // Small chunks of the largest table first: the snapshot lasts
            // through the faults.
            plan.incremental = Some(r.range(200, 500));
            for _ in 0..r.range(1, 2) {
                let tables: Vec<&'static str> = TABLES
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| *k == 0 || r.chance(50))
                    .map(|(_, t)| t.1)
                    .collect();
                let t = r.ms(SNAPSHOT_WINDOW.0, window - 4_000);
                plan.faults.push((t, Fault::Signal { tables }));
            }
            plan.faults.sort_by_key(|(t, _)| *t);
        }
        plan
    }
}

// ------------------------------------------------------------------ round state

/// One engine instance across its incarnations.
struct Instance {
    name: String,
    incarnation: u32,
    engine: Option<Engine>,
    stopped: bool,
    /// Killed by the schedule (so its exit is expected).
    killed: bool,
    /// The output file of every incarnation so far.
    outputs: Vec<PathBuf>,
}

struct Round<'a> {
    cluster: &'a Cluster,
    db: TestDb,
    dir: PathBuf,
    slot: String,
    publication: String,
    plan: Plan,
    instances: Vec<Instance>,
    log: String,
    started: Instant,
    kills: u32,
    stops: u32,
    terminated: u32,
    restarts: u32,
    signals: u32,
    /// Exits the schedule did not cause, and panics.
    exits: u32,
    panics: Vec<String>,
    snapshot_done_at: Option<Duration>,
}

#[derive(Default)]
struct Outcome {
    kills: u32,
    stops: u32,
    terminated: u32,
    restarts: u32,
    signals: u32,
    exits: u32,
    rows: usize,
    snapshot_secs: Option<f64>,
    failure: Option<String>,
}

impl Round<'_> {
    fn note(&mut self, what: impl AsRef<str>) {
        let t = self.started.elapsed().as_secs_f64();
        let _ = writeln!(self.log, "{t:7.2}s {}", what.as_ref());
    }

    fn yaml(&self, i: usize, out: &Path) -> String {
        let name = &self.instances[i].name;
        let url = format!("{}?application_name={name}", self.db.url());
        let tables: Vec<&str> = TABLES.iter().map(|t| t.0).collect();
        let incremental = self.plan.incremental.map_or(String::new(), |rows| {
            format!(", incremental: {{ enabled: true, chunk_rows: {rows} }}")
        });
        format!(
            "name: chaos\n\
             source:\n  url: {url}\n  tables: [{tables}]\n  \
             publication: {{ name: {publication}, create: true }}\n  \
             slot: {{ name: {slot}, create: true, standby: true, activity_check_interval: 1s }}\n\
             sinks:\n  - {{ type: file, path: {out} }}\n\
             snapshot: {{ mode: initial, chunking: key, chunk_rows: {chunk_rows}, workers: {workers}, \
             claim_timeout: {claim}ms, heartbeat_interval: 1s, instance_id: {name}{incremental} }}\n\
             heartbeat: {{ enabled: true, interval: 1s }}\n\
             retry: {{ initial_backoff: 100ms, max_backoff: 1s }}\n\
             log: {{ level: info }}\n",
            url = yaml_str(&url),
            tables = tables.join(", "),
            publication = self.publication,
            slot = self.slot,
            out = yaml_str(&out.to_string_lossy()),
            chunk_rows = self.plan.chunk_rows,
            workers = self.plan.workers,
            claim = CLAIM_TIMEOUT.as_millis(),
        )
    }

    /// Starts instance `i`'s next incarnation, into a new output file.
    fn start(&mut self, i: usize) {
        let inc = self.instances[i].incarnation + 1;
        let name = self.instances[i].name.clone();
        let out = self.dir.join(format!("{name}-{inc}.jsonl"));
        let yaml = self.yaml(i, &out);
        let engine_dir = self.dir.join(format!("{name}-{inc}"));
        let engine = Engine::start_in(&engine_dir, &yaml, &["run"], &[]);
        let pid = engine.pid();
        let inst = &mut self.instances[i];
        inst.incarnation = inc;
        inst.engine = Some(engine);
        inst.stopped = false;
        inst.killed = false;
        inst.outputs.push(out);
        self.note(format!("start {name} #{inc} (pid {pid})"));
    }

    fn running(&mut self, i: usize) -> bool {
        self.instances[i]
            .engine
            .as_mut()
            .is_some_and(|e| e.is_running())
    }

    /// The leader: the instance whose walsender holds the slot, or else
    /// the snapshot's coordinator; `None` when neither is known.
    async fn leader(&self) -> Option<usize> {
        let mut c = try_connect(self.cluster, self.db.name()).await?;
        let streaming: Option<String> = sqlx::query_scalar(
            "SELECT a.application_name::text FROM pg_replication_slots s \
             JOIN pg_stat_activity a ON a.pid = s.active_pid WHERE s.slot_name = $1",
        )
        .bind(&self.slot)
        .fetch_optional(&mut c)
        .await
        .ok()
        .flatten();
        let name = match streaming {
            Some(n) => Some(n),
            None => sqlx::query_scalar::<_, Option<String>>(
                "SELECT coordinator FROM cdc.snapshot_jobs WHERE slot_name = $1",
            )
            .bind(&self.slot)
            .fetch_optional(&mut c)
            .await
            .ok()
            .flatten()
            .flatten(),
        };
        let _ = c.close().await;
        let name = name?;
        self.instances.iter().position(|i| i.name == name)
    }

    /// Instance `i` (the leader for `None`) if it runs (and is not
    /// stopped, with `not_stopped`), else another one that does.
    async fn choose(&mut self, i: Option<usize>, not_stopped: bool) -> Option<usize> {
        let i = match i {
            Some(i) => i,
            None => {
                let leader = self.leader().await;
                self.note(format!(
                    "the leader is {}",
                    leader.map_or("unknown", |l| self.instances[l].name.as_str())
                ));
                leader.unwrap_or(0)
            }
        };
        (0..INSTANCES)
            .map(|k| (i + k) % INSTANCES)
            .find(|&k| self.running(k) && !(not_stopped && self.instances[k].stopped))
    }

    async fn act(&mut self, action: Action, pending: &mut Vec<(Instant, Action)>) {
        match action {
            Action::Fault(Fault::Kill { instance, down_for }) => {
                let Some(i) = self.choose(instance, false).await else {
                    self.note("kill: no instance runs");
                    return;
                };
                let inst = &mut self.instances[i];
                let engine = inst.engine.as_mut().expect("running");
                engine.sigkill();
                let _ = engine.try_wait_exit(Duration::from_secs(5)).await;
                inst.stopped = false;
                inst.killed = true;
                let name = inst.name.clone();
                self.kills += 1;
                self.note(format!(
                    "kill -9 {name}; starting again in {} ms",
                    down_for.as_millis()
                ));
                pending.push((Instant::now() + down_for, Action::StartAgain(i)));
            }
            Action::Fault(Fault::KillAll { down_for }) => {
                let mut names = Vec::new();
                for i in 0..INSTANCES {
                    if !self.running(i) {
                        continue;
                    }
                    let inst = &mut self.instances[i];
                    let engine = inst.engine.as_mut().expect("running");
                    engine.sigkill();
                    let _ = engine.try_wait_exit(Duration::from_secs(5)).await;
                    inst.stopped = false;
                    inst.killed = true;
                    names.push(inst.name.clone());
                    self.kills += 1;
                    pending.push((Instant::now() + down_for, Action::StartAgain(i)));
                }
                self.note(format!(
                    "kill -9 of every instance ({}); starting them again in {} ms",
                    names.join(", "),
                    down_for.as_millis()
                ));
            }
            Action::Fault(Fault::Stop {
                instance,
                stopped_for,
            }) => {
                let Some(i) = self.choose(instance, true).await else {
                    self.note("stop: no instance runs");
                    return;
                };
                let inst = &mut self.instances[i];
                inst.engine.as_mut().expect("running").sigstop();
                inst.stopped = true;
                let name = inst.name.clone();
                self.stops += 1;
                self.note(format!("SIGSTOP {name} for {} ms", stopped_for.as_millis()));
                pending.push((Instant::now() + stopped_for, Action::Continue(i)));
            }
            Action::Fault(Fault::Terminate { count }) => {
                let mut r = Rng(self.plan.seed ^ self.started.elapsed().as_nanos() as u64);
                match terminate_backends(self.cluster, self.db.name(), count, &mut r).await {
                    Ok(done) => {
                        self.terminated += done.len() as u32;
                        for d in done {
                            self.note(format!("pg_terminate_backend {d}"));
                        }
                    }
                    Err(e) => self.note(format!("pg_terminate_backend failed: {e:#}")),
                }
            }
            Action::Fault(Fault::Restart { immediate }) => {
                let mode = if immediate { "immediate" } else { "fast" };
                self.note(format!("pg_ctl restart -m {mode}"));
                if immediate {
                    self.cluster.restart_immediate().await;
                } else {
                    self.cluster.restart_fast().await;
                }
                self.restarts += 1;
                self.note("server up again");
            }
            Action::Fault(Fault::Signal { tables }) => {
                let payload = serde_json::json!({ "tables": tables }).to_string();
                let sent = match try_connect(self.cluster, self.db.name()).await {
                    Some(mut c) => sqlx::query(
                        "INSERT INTO cdc.signals (kind, payload) VALUES ('snapshot', $1::jsonb)",
                    )
                    .bind(&payload)
                    .execute(&mut c)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                    None => Err("cannot connect".into()),
                };
                if sent.is_ok() {
                    self.signals += 1;
                }
                self.note(format!("incremental snapshot signal {payload}: {sent:?}"));
            }
            Action::StartAgain(i) => {
                if !self.running(i) {
                    self.start(i);
                }
            }
            Action::Continue(i) => {
                let inst = &mut self.instances[i];
                if inst.stopped {
                    if let Some(e) = inst.engine.as_mut() {
                        e.sigcont();
                    }
                    inst.stopped = false;
                    let name = inst.name.clone();
                    self.note(format!("SIGCONT {name}"));
                }
            }
        }
    }

    /// An instance that exited without being killed is noted (with the end
    /// of its log) and started again, as a supervisor would.
    fn restart_exited(&mut self) {
        for i in 0..INSTANCES {
            let inst = &mut self.instances[i];
            if inst.killed {
                continue;
            }
            let Some(code) = inst.engine.as_mut().and_then(|e| e.poll_exit()) else {
                continue;
            };
            let stderr = inst
                .engine
                .as_ref()
                .map(|e| e.stderr_text())
                .unwrap_or_default();
            let last: Vec<&str> = stderr.lines().rev().take(3).collect();
            let name = inst.name.clone();
            self.exits += 1;
            self.note(format!(
                "{name} exited on its own with {code}; last lines: {}",
                last.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
            self.start(i);
        }
    }

    /// Panics in the engine logs of every incarnation.
    fn scan_panics(&mut self) {
        let mut found = Vec::new();
        for inst in &self.instances {
            for n in 1..=inst.incarnation {
                let log = self
                    .dir
                    .join(format!("{}-{n}", inst.name))
                    .join("stderr.log");
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                for (k, line) in text.lines().enumerate() {
                    if line.contains("panicked at") {
                        found.push(format!("{} line {}: {line}", log.display(), k + 1));
                    }
                }
            }
        }
        self.panics = found;
    }

    /// Runs the schedule while the writer writes; at the end every instance
    /// runs again.
    async fn inject(&mut self) {
        let t0 = Instant::now();
        let mut pending: Vec<(Instant, Action)> = self
            .plan
            .faults
            .iter()
            .map(|(t, f)| (t0 + *t, Action::Fault(f.clone())))
            .collect();
        let end = t0 + CHAOS_WINDOW;
        let mut last_poll = Instant::now();
        loop {
            pending.sort_by_key(|(t, _)| *t);
            let now = Instant::now();
            if now >= end && pending.iter().all(|(t, _)| *t > end) {
                break;
            }
            if let Some((t, _)) = pending.first() {
                if *t <= now {
                    let (_, a) = pending.remove(0);
                    self.act(a, &mut pending).await;
                    continue;
                }
            }
            if last_poll.elapsed() >= Duration::from_millis(500) {
                last_poll = Instant::now();
                self.restart_exited();
                if self.snapshot_done_at.is_none()
                    && job_state(self.cluster, self.db.name(), &self.slot)
                        .await
                        .as_deref()
                        == Some("done")
                {
                    self.snapshot_done_at = Some(self.started.elapsed());
                    self.note("snapshot job done");
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Whatever is still pending (restarts, SIGCONTs) happens now.
        pending.sort_by_key(|(t, _)| *t);
        for (_, a) in pending {
            if !matches!(a, Action::Fault(_)) {
                self.act(a, &mut Vec::new()).await;
            }
        }
        self.restart_exited();
        for i in 0..INSTANCES {
            if self.instances[i].stopped {
                self.act(Action::Continue(i), &mut Vec::new()).await;
            }
            if !self.running(i) {
                let code = self.instances[i]
                    .engine
                    .as_mut()
                    .and_then(|e| e.poll_exit());
                self.note(format!(
                    "{} is not running (exit {code:?}): starting it again",
                    self.instances[i].name
                ));
                self.start(i);
            }
        }
    }

    fn tails(&self) -> Vec<Tail> {
        let mut n = 0;
        let mut tails = Vec::new();
        for inst in &self.instances {
            for p in &inst.outputs {
                tails.push(Tail::new(n, p.clone()));
                n += 1;
            }
        }
        tails
    }

    /// Waits for the end state and compares; `Err` describes a failure.
    async fn converge(&mut self, rows: &mut usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        // The snapshot finished.
        loop {
            let state = job_state(self.cluster, self.db.name(), &self.slot).await;
            if state.as_deref() == Some("done") {
                if self.snapshot_done_at.is_none() {
                    self.snapshot_done_at = Some(self.started.elapsed());
                    self.note("snapshot job done");
                }
                break;
            }
            if Instant::now() >= deadline {
                bail!("the snapshot job is not done after {CATCH_UP_TIMEOUT:?} (state {state:?})");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // The incremental snapshots asked for finished.
        while self.signals > 0 {
            let states = incremental_states(self.cluster, self.db.name(), &self.slot).await;
            let all_done = |s: &Vec<(i64, String)>| {
                let asked: std::collections::HashSet<i64> = s.iter().map(|x| x.0).collect();
                asked.len() >= self.signals as usize && s.iter().all(|x| x.1 == "done")
            };
            if states.as_ref().is_some_and(all_done) {
                self.note("incremental snapshots done");
                break;
            }
            if states
                .as_ref()
                .is_some_and(|s| s.iter().any(|x| x.1.starts_with("failed")))
                || Instant::now() >= deadline
            {
                bail!("incremental snapshots not done after {CATCH_UP_TIMEOUT:?}: {states:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // The slot confirmed everything written so far.
        let target = current_wal_lsn(self.cluster, self.db.name()).await?;
        self.note(format!("waiting for the slot to confirm {target}"));
        loop {
            let confirmed = slot_confirmed(self.cluster, self.db.name(), &self.slot).await;
            if confirmed.is_some_and(|c| c >= target) {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the slot's confirmed_flush_lsn ({}) did not reach {target} within {CATCH_UP_TIMEOUT:?}",
                    confirmed.map_or("-".into(), |c| c.to_string())
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.note("slot confirmed; waiting for the files to stop growing");
        let mut want = BTreeMap::new();
        for (sql, _, key) in TABLES {
            let rows_of = self.db.to_jsonb_rows_keyed(sql, key).await;
            *rows += rows_of.len();
            want.insert(sql, rows_of);
        }
        let mut tails = self.tails();
        let mut quiet = 0;
        loop {
            let added: usize = tails.iter_mut().map(Tail::poll).sum();
            quiet = if added == 0 { quiet + 1 } else { 0 };
            let stable = quiet >= 4;
            if stable || Instant::now() >= deadline {
                let refs: Vec<&Tail> = tails.iter().collect();
                let events = merged(&refs);
                let mut report = String::new();
                for (sql, table, key) in TABLES {
                    let got = apply_keyed(&events, table, key);
                    if let Some(d) = diff(&got, &want[sql]) {
                        let _ = writeln!(report, "{table}: {d}");
                    }
                }
                if report.is_empty() {
                    self.note(format!("converged ({} events)", events.len()));
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    bail!(
                        "the merged files ({} events in {} files) differ from the tables after {CATCH_UP_TIMEOUT:?}:\n{report}",
                        events.len(),
                        tails.len()
                    );
                }
                // Not yet: keep polling until the deadline.
                quiet = 0;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

// ------------------------------------------------------------------ server queries (tolerant)

/// A connection to `database`, or `None` (the server may be restarting).
async fn try_connect(cluster: &Cluster, database: &str) -> Option<PgConnection> {
    let url = format!("{}?application_name=chaos-monitor", cluster.url(database));
    match tokio::time::timeout(Duration::from_secs(3), PgConnection::connect(&url)).await {
        Ok(Ok(c)) => Some(c),
        _ => None,
    }
}

async fn job_state(cluster: &Cluster, database: &str, slot: &str) -> Option<String> {
    let mut c = try_connect(cluster, database).await?;
    let exists: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('cdc.snapshot_jobs')::text")
            .fetch_one(&mut c)
            .await
            .ok()?;
    exists.as_ref()?;
    let state: Option<String> =
        sqlx::query_scalar("SELECT state::text FROM cdc.snapshot_jobs WHERE slot_name = $1")
            .bind(slot)
            .fetch_optional(&mut c)
            .await
            .ok()?;
    let _ = c.close().await;
    state
}

/// `(snapshot, state (error))` of every table of the slot's incremental
/// snapshots.
async fn incremental_states(
    cluster: &Cluster,
    database: &str,
    slot: &str,
) -> Option<Vec<(i64, String)>> {
    let mut c = try_connect(cluster, database).await?;
    let states = sqlx::query_as(
        "SELECT snapshot_id, state || coalesce(' (' || error || ')', '') \
         FROM cdc.incremental_snapshots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_all(&mut c)
    .await
    .ok();
    let _ = c.close().await;
    states
}

async fn current_wal_lsn(cluster: &Cluster, database: &str) -> anyhow::Result<u64> {
    let mut c = try_connect(cluster, database)
        .await
        .context("connecting to read the WAL position")?;
    let lsn: i64 = sqlx::query_scalar("SELECT (pg_current_wal_lsn() - '0/0')::bigint")
        .fetch_one(&mut c)
        .await?;
    let _ = c.close().await;
    Ok(lsn as u64)
}

async fn slot_confirmed(cluster: &Cluster, database: &str, slot: &str) -> Option<u64> {
    let mut c = try_connect(cluster, database).await?;
    let v: Option<i64> = sqlx::query_scalar(
        "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&mut c)
    .await
    .ok()
    .flatten();
    let _ = c.close().await;
    v.map(|l| l as u64)
}

/// A session of `pg_stat_activity`: pid, application_name, backend_type,
/// state, the start of its query.
type Session = (i32, String, String, String, String);

/// Terminates up to `count` sessions of the engines in `database`: picks a
/// kind at random (snapshot reader, walsender, idle in transaction, other
/// client sessions), then a session of that kind. Returns what it
/// terminated.
async fn terminate_backends(
    cluster: &Cluster,
    database: &str,
    count: u64,
    r: &mut Rng,
) -> anyhow::Result<Vec<String>> {
    let mut c = try_connect(cluster, database)
        .await
        .context("connecting to pick sessions")?;
    let rows: Vec<Session> = sqlx::query_as(
        "SELECT pid, application_name::text, coalesce(backend_type, '')::text, \
         coalesce(state, '')::text, left(regexp_replace(coalesce(query, ''), '\\s+', ' ', 'g'), 70) \
         FROM pg_stat_activity \
         WHERE datname = $1 AND application_name LIKE 'chaos-inst-%' AND pid <> pg_backend_pid()",
    )
    .bind(database)
    .fetch_all(&mut c)
    .await?;
    let kind = |row: &Session| -> &'static str {
        if row.2 == "walsender" {
            "walsender"
        } else if row.4.starts_with("COPY") && row.3 == "active" {
            "reader"
        } else if row.3.starts_with("idle in transaction") {
            "idle-in-transaction"
        } else {
            "session"
        }
    };
    let mut by_kind: BTreeMap<&str, Vec<&Session>> = BTreeMap::new();
    for row in &rows {
        by_kind.entry(kind(row)).or_default().push(row);
    }
    let mut done = Vec::new();
    for _ in 0..count {
        let kinds: Vec<&str> = by_kind
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if kinds.is_empty() {
            break;
        }
        let k = *r.pick(&kinds);
        let list = by_kind.get_mut(k).expect("kind listed");
        let row = list.remove(r.below(list.len() as u64) as usize);
        let ok: Option<bool> = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(row.0)
            .fetch_one(&mut c)
            .await
            .ok();
        done.push(format!(
            "{k} pid {} of {} ({}, {}): {} -> {ok:?}",
            row.0, row.1, row.2, row.3, row.4
        ));
    }
    let _ = c.close().await;
    Ok(done)
}

// ------------------------------------------------------------------ writer

#[derive(Debug)]
struct WriterStats {
    transactions: u64,
    failed: u64,
    truncated: bool,
}

/// Changes the tables until `stop`: transactions of 1 to ~200 statements;
/// errors (a terminated session, a restarting server) only cost the
/// transaction, and it connects again.
async fn writer(url: String, plan: Plan, stop: Arc<AtomicBool>) -> WriterStats {
    let mut r = Rng(plan.seed.rotate_left(17) ^ 0x5eed);
    let mut stats = WriterStats {
        transactions: 0,
        failed: 0,
        truncated: false,
    };
    let t0 = Instant::now();
    let mut next_plain = plan.rows_plain as i64 + 1;
    let mut next_toast = plan.rows_toast as i32 + 1;
    let mut next_comp = plan.rows_comp as i32 + 1;
    let mut tag: u64 = 0;
    let mut conn: Option<PgConnection> = None;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            match tokio::time::timeout(Duration::from_secs(3), PgConnection::connect(&url)).await {
                Ok(Ok(mut c)) => {
                    let _ = sqlx::raw_sql("SET lock_timeout = '5s'; SET statement_timeout = '20s'")
                        .execute(&mut c)
                        .await;
                    conn = Some(c);
                }
                _ => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected");
        let size = match r.below(100) {
            0..=69 => r.range(1, 3),
            70..=94 => r.range(4, 20),
            _ => r.range(50, 200),
        };
        let truncate = !stats.truncated && plan.truncate_at.is_some_and(|t| t0.elapsed() >= t);
        let res: Result<(), sqlx::Error> = async {
            let mut tx = c.begin().await?;
            if truncate {
                let sql = if r.chance(50) {
                    "TRUNCATE public.t_plain"
                } else {
                    "TRUNCATE public.t_plain, public.t_comp"
                };
                sqlx::query(sql).execute(&mut *tx).await?;
            }
            for _ in 0..size {
                tag += 1;
                let tag_s = format!("{}-{tag}", plan.seed);
                match r.below(100) {
                    // t_plain
                    0..=19 => {
                        sqlx::query(
                            "INSERT INTO public.t_plain (id, n, s, b) VALUES ($1, $2, md5($3), $4)",
                        )
                        .bind(next_plain)
                        .bind(r.below(1000) as i32)
                        .bind(&tag_s)
                        .bind(r.chance(50))
                        .execute(&mut *tx)
                        .await?;
                        next_plain += 1;
                    }
                    20..=39 => {
                        sqlx::query(
                            "UPDATE public.t_plain SET n = n + $2, s = md5($3) WHERE id = $1",
                        )
                        .bind(r.range(1, next_plain as u64 - 1) as i64)
                        .bind(r.range(1, 9) as i32)
                        .bind(&tag_s)
                        .execute(&mut *tx)
                        .await?;
                    }
                    40..=46 => {
                        sqlx::query("DELETE FROM public.t_plain WHERE id = $1")
                            .bind(r.range(1, next_plain as u64 - 1) as i64)
                            .execute(&mut *tx)
                            .await?;
                    }
                    // t_toast
                    47..=52 => {
                        sqlx::query(
                            "INSERT INTO public.t_toast (id, n, doc, doc2) \
                             VALUES ($1, 0, public.chain($2, $3), public.chain($2 || 'b', $4))",
                        )
                        .bind(next_toast)
                        .bind(&tag_s)
                        .bind(r.range(70, 130) as i32)
                        .bind(r.range(70, 100) as i32)
                        .execute(&mut *tx)
                        .await?;
                        next_toast += 1;
                    }
                    53..=62 => {
                        // Leaves both TOASTed columns as they are.
                        sqlx::query("UPDATE public.t_toast SET n = n + 1 WHERE id = $1")
                            .bind(r.range(1, next_toast as u64 - 1) as i32)
                            .execute(&mut *tx)
                            .await?;
                    }
                    63..=67 => {
                        let sql = match r.below(3) {
                            0 => "UPDATE public.t_toast SET doc = public.chain($2, $3) WHERE id = $1",
                            1 => "UPDATE public.t_toast SET doc2 = public.chain($2, $3), n = n + 1 WHERE id = $1",
                            _ => "UPDATE public.t_toast SET doc = public.chain($2, $3), doc2 = NULL WHERE id = $1",
                        };
                        sqlx::query(sql)
                            .bind(r.range(1, next_toast as u64 - 1) as i32)
                            .bind(&tag_s)
                            .bind(r.range(70, 130) as i32)
                            .execute(&mut *tx)
                            .await?;
                    }
                    68..=70 => {
                        sqlx::query("DELETE FROM public.t_toast WHERE id = $1")
                            .bind(r.range(1, next_toast as u64 - 1) as i32)
                            .execute(&mut *tx)
                            .await?;
                    }
                    // t_comp
                    71..=80 => {
                        sqlx::query(
                            "INSERT INTO public.t_comp (a, b, v, note) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT DO NOTHING",
                        )
                        .bind(next_comp)
                        .bind(if r.chance(50) { "k1" } else { "k2" })
                        .bind(r.below(1000) as i32)
                        .bind(&tag_s)
                        .execute(&mut *tx)
                        .await?;
                        next_comp += 1;
                    }
                    81..=90 => {
                        sqlx::query("UPDATE public.t_comp SET v = v + 1, note = $2 WHERE a = $1")
                            .bind(r.range(1, next_comp as u64 - 1) as i32)
                            .bind(&tag_s)
                            .execute(&mut *tx)
                            .await?;
                    }
                    91..=93 => {
                        // A key change: b gets a value no other row has.
                        sqlx::query(
                            "UPDATE public.t_comp SET b = 'm' || $3 WHERE a = $1 AND b = $2",
                        )
                        .bind(r.range(1, next_comp as u64 - 1) as i32)
                        .bind(if r.chance(50) { "k1" } else { "k2" })
                        .bind(&tag_s)
                        .execute(&mut *tx)
                        .await?;
                    }
                    _ => {
                        sqlx::query("DELETE FROM public.t_comp WHERE a = $1")
                            .bind(r.range(1, next_comp as u64 - 1) as i32)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            tx.commit().await
        }
        .await;
        match res {
            Ok(()) => {
                stats.transactions += 1;
                if truncate {
                    stats.truncated = true;
                }
            }
            Err(_) => {
                stats.failed += 1;
                if let Some(c) = conn.take() {
                    let _ = c.close().await;
                }
            }
        }
        tokio::time::sleep(r.ms(5, 60)).await;
    }
    if let Some(c) = conn.take() {
        let _ = c.close().await;
    }
    stats
}

// ------------------------------------------------------------------ a round

async fn run_round(
    cluster: &Cluster,
    plan: Plan,
    round_dir: PathBuf,
) -> (Outcome, PathBuf, String) {
    let mut outcome = Outcome::default();
    std::fs::create_dir_all(&round_dir).expect("creating the round directory");
    let db = TestDb::create_on(&cluster.url("postgres"), "chaos").await;
    let s = unique_suffix();
    let toast_identity = if plan.toast_identity_full {
        "FULL"
    } else {
        "DEFAULT"
    };
    let comp_identity = if plan.comp_identity_full {
        "FULL"
    } else {
        "DEFAULT"
    };
    db.exec(&format!(
        "CREATE FUNCTION public.chain(tag text, n int) RETURNS text LANGUAGE sql \
           AS $$ SELECT string_agg(md5(tag || g), '') FROM generate_series(1, n) g $$;\
         CREATE TABLE public.t_plain (id bigint PRIMARY KEY, n int NOT NULL, s text, b bool);\
         INSERT INTO public.t_plain SELECT g, g % 1000, md5('p' || g), g % 2 = 0 \
           FROM generate_series(1, {rows_plain}) g;\
         CREATE TABLE public.t_toast (id int PRIMARY KEY, n int NOT NULL, doc text, doc2 text);\
         ALTER TABLE public.t_toast ALTER COLUMN doc SET STORAGE EXTERNAL;\
         ALTER TABLE public.t_toast REPLICA IDENTITY {toast_identity};\
         INSERT INTO public.t_toast SELECT g, 0, public.chain('d' || g, 70 + g % 60), \
           CASE WHEN g % 3 = 0 THEN NULL ELSE public.chain('e' || g, 70) END \
           FROM generate_series(1, {rows_toast}) g;\
         CREATE TABLE public.t_comp (a int, b text, v int, note text, PRIMARY KEY (a, b));\
         ALTER TABLE public.t_comp REPLICA IDENTITY {comp_identity};\
         INSERT INTO public.t_comp SELECT g, k, g, 'n' || g \
           FROM generate_series(1, {rows_comp}) g, (VALUES ('k1'), ('k2')) AS x(k);\
         ANALYZE",
        rows_plain = plan.rows_plain,
        rows_toast = plan.rows_toast,
        rows_comp = plan.rows_comp / 2,
    ))
    .await;
    let mut round = Round {
        cluster,
        dir: round_dir.clone(),
        slot: format!("chaos_{s}"),
        publication: format!("chaos_pub_{s}"),
        instances: (0..INSTANCES)
            .map(|i| Instance {
                name: format!("chaos-inst-{}", (b'a' + i as u8) as char),
                incarnation: 0,
                engine: None,
                stopped: false,
                killed: false,
                outputs: Vec::new(),
            })
            .collect(),
        log: String::new(),
        started: Instant::now(),
        kills: 0,
        stops: 0,
        terminated: 0,
        restarts: 0,
        signals: 0,
        exits: 0,
        panics: Vec::new(),
        snapshot_done_at: None,
        plan: plan.clone(),
        db,
    };
    round.note(format!("plan: {:?}", round.plan));
    round.note(format!("database {}", round.db.name()));
    for i in 0..INSTANCES {
        round.start(i);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer_task = tokio::spawn(writer(
        format!("{}?application_name=chaos-writer", round.db.url()),
        plan.clone(),
        stop.clone(),
    ));
    round.inject().await;
    stop.store(true, Ordering::Relaxed);
    match tokio::time::timeout(Duration::from_secs(30), writer_task).await {
        Ok(Ok(w)) => round.note(format!(
            "writer stopped: {} transactions, {} failed, truncated: {}",
            w.transactions, w.failed, w.truncated
        )),
        other => round.note(format!("writer did not stop cleanly: {other:?}")),
    }
    let mut rows = 0;
    let result = round.converge(&mut rows).await;
    outcome.rows = rows;
    round.scan_panics();
    let result = match result {
        Ok(()) if !round.panics.is_empty() => Err(anyhow::anyhow!(
            "the outputs converged, but an engine panicked:\n{}",
            round.panics.join("\n")
        )),
        other => other,
    };
    if let Err(e) = result {
        round.note(format!("FAILED: {e:#}"));
        outcome.failure = Some(format!("{e:#}"));
    }
    outcome.kills = round.kills;
    outcome.stops = round.stops;
    outcome.terminated = round.terminated;
    outcome.restarts = round.restarts;
    outcome.signals = round.signals;
    outcome.exits = round.exits;
    outcome.snapshot_secs = round.snapshot_done_at.map(|d| d.as_secs_f64());
    for inst in &mut round.instances {
        if let Some(e) = inst.engine.as_mut() {
            e.sigkill();
            let _ = e.try_wait_exit(Duration::from_secs(10)).await;
        }
    }
    let log = round.log.clone();
    let _ = std::fs::write(round_dir.join("faults.log"), &log);
    let Round { db, instances, .. } = round;
    drop(instances);
    db.cleanup().await;
    (outcome, round_dir, log)
}

// ------------------------------------------------------------------ main

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
