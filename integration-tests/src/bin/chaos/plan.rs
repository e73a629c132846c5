//! A round's plan: table sizes, snapshot settings and the fault schedule,
//! all chosen from the round's seed.

use std::time::Duration;

use crate::rng::Rng;
use crate::{CHAOS_WINDOW, CLAIM_TIMEOUT, INSTANCES, SNAPSHOT_WINDOW};

/// A fault of the schedule.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// `kill -9` of an instance (`None`: the leader, see
    /// [`Round::leader`](crate::round::Round)); started again after
    /// `down_for`.
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
pub(crate) enum Action {
    Fault(Fault),
    StartAgain(usize),
    Continue(usize),
}

/// What a round is made of, all chosen from its seed.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) seed: u64,
    pub(crate) rows_plain: u64,
    pub(crate) rows_toast: u64,
    pub(crate) rows_comp: u64,
    pub(crate) chunk_rows: u64,
    pub(crate) workers: u64,
    pub(crate) toast_identity_full: bool,
    pub(crate) comp_identity_full: bool,
    pub(crate) truncate_at: Option<Duration>,
    pub(crate) faults: Vec<(Duration, Fault)>,
    /// Incremental snapshots on, with chunks of this many rows.
    pub(crate) incremental: Option<u64>,
}

impl Plan {
    pub(crate) fn new(seed: u64) -> Plan {
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
                let tables: Vec<&'static str> = crate::tables::TABLES
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
