//! The fault schedule at work: kills, stops, terminated sessions and server
//! restarts at their moments, and the restarts and `SIGCONT`s they call for.

use std::time::{Duration, Instant};

use sqlx::Connection;

use super::Round;
use crate::plan::{Action, Fault};
use crate::rng::Rng;
use crate::server::{job_state, terminate_backends, try_connect};
use crate::{CHAOS_WINDOW, INSTANCES};

impl Round<'_> {
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

    /// `kill -9` of running instance `i`, started again after `down_for`
    /// (added to `pending`); its name.
    async fn kill(
        &mut self,
        i: usize,
        down_for: Duration,
        pending: &mut Vec<(Instant, Action)>,
    ) -> String {
        let inst = &mut self.instances[i];
        let engine = inst.engine.as_mut().expect("running");
        engine.sigkill();
        let _ = engine.try_wait_exit(Duration::from_secs(5)).await;
        inst.stopped = false;
        inst.killed = true;
        self.kills += 1;
        pending.push((Instant::now() + down_for, Action::StartAgain(i)));
        inst.name.clone()
    }

    async fn act(&mut self, action: Action, pending: &mut Vec<(Instant, Action)>) {
        match action {
            Action::Fault(Fault::Kill { instance, down_for }) => {
                let Some(i) = self.choose(instance, false).await else {
                    self.note("kill: no instance runs");
                    return;
                };
                let name = self.kill(i, down_for, pending).await;
                self.note(format!(
                    "kill -9 {name}; starting again in {} ms",
                    down_for.as_millis()
                ));
            }
            Action::Fault(Fault::KillAll { down_for }) => {
                let mut names = Vec::new();
                for i in 0..INSTANCES {
                    if self.running(i) {
                        names.push(self.kill(i, down_for, pending).await);
                    }
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

    /// Runs the schedule while the writer writes; at the end every instance
    /// runs again.
    pub(super) async fn inject(&mut self) {
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
}
