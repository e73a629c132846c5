//! A round: its engine instances across their incarnations, its fault log
//! and counters, and the course of a round from the tables' creation to
//! the comparison ([`run_round`]).

mod checks;
mod faults;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::pipelines::yaml_str;
use integration_tests::{unique_suffix, Cluster, Engine, TestDb};

use crate::plan::Plan;
use crate::writer::writer;
use crate::{tables, CLAIM_TIMEOUT, INSTANCES};

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

/// A round in progress.
pub(crate) struct Round<'a> {
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

/// What a round did and how it ended.
#[derive(Default)]
pub(crate) struct Outcome {
    pub(crate) kills: u32,
    pub(crate) stops: u32,
    pub(crate) terminated: u32,
    pub(crate) restarts: u32,
    pub(crate) signals: u32,
    pub(crate) exits: u32,
    pub(crate) rows: usize,
    pub(crate) snapshot_secs: Option<f64>,
    pub(crate) failure: Option<String>,
}

impl Round<'_> {
    fn note(&mut self, what: impl AsRef<str>) {
        let t = self.started.elapsed().as_secs_f64();
        let _ = writeln!(self.log, "{t:7.2}s {}", what.as_ref());
    }

    fn yaml(&self, i: usize, out: &Path) -> String {
        let name = &self.instances[i].name;
        let url = format!("{}?application_name={name}", self.db.url());
        let tables: Vec<&str> = tables::TABLES.iter().map(|t| t.0).collect();
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
}

/// Runs a round of `plan` on `cluster`, its files in `round_dir`: the
/// outcome, the directory and the fault log.
pub(crate) async fn run_round(
    cluster: &Cluster,
    plan: Plan,
    round_dir: PathBuf,
) -> (Outcome, PathBuf, String) {
    let mut outcome = Outcome::default();
    std::fs::create_dir_all(&round_dir).expect("creating the round directory");
    let db = TestDb::create_on(&cluster.url("postgres"), "chaos").await;
    let s = unique_suffix();
    tables::create(&db, &plan).await;
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
