//! [`Writers`]: clients changing `public.t (id int primary key, v int,
//! note text)` concurrently, in small random transactions, logging what
//! committed ([`Written`]) so a test can check that a sink holds it.
//!
//! Each change writes a `v` of its own (handed out in order from
//! [`Workload::first_v`]), so `(id, v)` names exactly one change
//! ([`RowChange`]). The ids of a transaction are changed in ascending
//! order (no deadlocks between writers). A transaction that fails costs
//! only itself: the writer connects again and goes on (the server may be
//! restarting); only transactions whose COMMIT succeeded are logged.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value as Json;
use sqlx::{Connection, PgConnection};

use crate::replay::Change;

/// How a writer's changes are spread over the kinds of change: weights,
/// in any unit (`insert: 3, upsert: 2, update: 3, delete: 2`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Mix {
    /// Inserts of a new id (needs [`Workload::new_ids_from`]).
    pub insert: u64,
    /// `INSERT … ON CONFLICT DO UPDATE` of an existing (or once existing) id.
    pub upsert: u64,
    /// `UPDATE` of an existing id (a miss changes nothing).
    pub update: u64,
    /// `DELETE` of an existing id (a miss changes nothing).
    pub delete: u64,
}

/// What [`Writers`] do.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Concurrent writers, each on a connection of its own.
    pub writers: usize,
    /// Ids of existing rows are picked from `1..=keys` (without
    /// [`new_ids_from`](Workload::new_ids_from)).
    pub keys: i32,
    /// New ids are handed out from this one on, and existing ones picked
    /// among those below the next new id.
    pub new_ids_from: Option<i32>,
    /// Changes per transaction: from 1 to this many.
    pub max_changes: u64,
    /// The kinds of change.
    pub mix: Mix,
    /// The first `v` handed out.
    pub first_v: i32,
    /// Pause after each transaction.
    pub pause: Duration,
    /// A transaction (or connection attempt) that takes longer fails.
    pub timeout: Option<Duration>,
}

impl Workload {
    /// `writers` writers on ids `1..=40`, 1 to 3 changes per transaction
    /// (half upserts, a third updates, a fifth deletes), `v` from 1, no
    /// pause, no timeout.
    pub fn new(writers: usize) -> Workload {
        Workload {
            writers,
            keys: 40,
            new_ids_from: None,
            max_changes: 3,
            mix: Mix {
                insert: 0,
                upsert: 5,
                update: 3,
                delete: 2,
            },
            first_v: 1,
            pause: Duration::ZERO,
            timeout: None,
        }
    }
}

/// One committed change of `public.t`, named by the row version it wrote
/// or removed: `(id, v)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowChange {
    /// An insert or update that left the row `(id, v)`.
    Write(i32, i32),
    /// A delete of the row `(id, v)`.
    Delete(i32, i32),
}

impl RowChange {
    /// The row change `change` records, if it is one with integer `id`
    /// and `v` (a delete's from `before`: the table needs `REPLICA IDENTITY
    /// FULL` for its `v`).
    pub fn of(change: &Change) -> Option<RowChange> {
        let int = |v: &Json| v.to_string().parse::<i32>().ok();
        let row = change.row();
        let (id, v) = (int(&row["id"])?, int(&row["v"])?);
        match change.op.as_str() {
            "c" | "u" | "r" => Some(RowChange::Write(id, v)),
            "d" => Some(RowChange::Delete(id, v)),
            _ => None,
        }
    }
}

/// What the writers' committed transactions did.
#[derive(Debug, Default)]
pub struct Written {
    /// Every committed change (in commit order per writer).
    pub changes: Vec<RowChange>,
    /// Transactions committed.
    pub committed: usize,
    /// Transactions (and connection attempts) that failed.
    pub failed: usize,
}

impl Written {
    /// Fails unless every committed change is in `seen`.
    pub fn assert_all_in(&self, seen: &HashSet<RowChange>) {
        let missing: Vec<_> = self.changes.iter().filter(|c| !seen.contains(c)).collect();
        assert!(
            missing.is_empty(),
            "{} of {} committed changes are not in the sink, e.g. {:?}",
            missing.len(),
            self.changes.len(),
            &missing[..missing.len().min(15)]
        );
    }

    /// Fails unless `events` (each key's in the order a consumer reads
    /// them) hold every committed write (an `after` with its `id` and `v`)
    /// and, after the first occurrence of each deleted row version, a
    /// delete of its row: nothing committed was lost.
    pub fn assert_no_loss(&self, events: &[&Change]) {
        let mut first: HashMap<(i32, i32), usize> = HashMap::new();
        let mut deletes_of: HashMap<i32, Vec<usize>> = HashMap::new();
        for (i, ev) in events.iter().enumerate() {
            if ev.op == "d" {
                let id = ev.before["id"].to_string().parse().unwrap_or_else(|e| {
                    panic!("event {i}: delete without an integer before.id ({e}): {ev:?}")
                });
                deletes_of.entry(id).or_default().push(i);
            } else if let Some(RowChange::Write(id, v)) = RowChange::of(ev) {
                first.entry((id, v)).or_insert(i);
            }
        }
        let missing: Vec<_> = self
            .changes
            .iter()
            .filter(|c| matches!(c, RowChange::Write(id, v) if !first.contains_key(&(*id, *v))))
            .collect();
        assert!(
            missing.is_empty(),
            "{} committed row writes (id, v) are missing, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
        let mut lost = Vec::new();
        for c in &self.changes {
            let RowChange::Delete(id, v) = *c else {
                continue;
            };
            let written_at = *first.get(&(id, v)).unwrap_or_else(|| {
                panic!("the deleted row version (id {id}, v {v}) was never written")
            });
            let deleted_later = deletes_of
                .get(&id)
                .is_some_and(|ds| ds.iter().any(|&d| d > written_at));
            if !deleted_later {
                lost.push((id, v));
            }
        }
        assert!(
            lost.is_empty(),
            "{} committed deletes have no delete after the row version they removed, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(20)]
        );
    }
}

/// Concurrent writers of a [`Workload`] on `public.t`; see the module
/// documentation. Stop them with [`Writers::finish`].
pub struct Writers {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Written>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// Connects the writers to the database at `url` (panics when one
    /// cannot) and starts them.
    pub async fn start(url: &str, workload: Workload) -> Writers {
        let seed = seed();
        eprintln!("writers: seed {seed:#x}");
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Written::default()));
        let shared = Arc::new(Shared {
            url: url.to_owned(),
            v: AtomicI32::new(workload.first_v),
            next_id: AtomicI32::new(workload.new_ids_from.unwrap_or(workload.keys + 1)),
            workload,
        });
        let mut tasks = Vec::new();
        for i in 0..shared.workload.writers {
            let conn = PgConnection::connect(url)
                .await
                .unwrap_or_else(|e| panic!("writer {i}: cannot connect: {e}"));
            let rng = Rng(seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            tasks.push(tokio::spawn(write_loop(
                i,
                conn,
                rng,
                shared.clone(),
                stop.clone(),
                log.clone(),
            )));
        }
        Writers { stop, log, tasks }
    }

    /// Transactions committed so far.
    pub fn committed(&self) -> usize {
        self.log.lock().unwrap().committed
    }

    /// `(committed, failed)` so far.
    pub fn progress(&self) -> (usize, usize) {
        let log = self.log.lock().unwrap();
        (log.committed, log.failed)
    }

    /// Waits until `n` more transactions than now have committed, at most
    /// `timeout`; `false` when they did not.
    pub async fn wait_more(&self, n: usize, timeout: Duration) -> bool {
        let target = self.committed() + n;
        crate::wait_until(timeout, async || self.committed() >= target).await
    }

    /// Stops the writers (after the transaction under way) and returns
    /// what they committed.
    pub async fn finish(self) -> Written {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("a writer panicked");
        }
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// What the writers of one [`Writers`] share.
struct Shared {
    url: String,
    workload: Workload,
    v: AtomicI32,
    next_id: AtomicI32,
}

/// A small xorshift generator: no statistical quality needed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n.max(1)
    }
}

/// A seed of this run's own.
fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{}_{nanos}_{}", std::process::id(), crate::unique_suffix()).bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h | 1
}

#[derive(Clone, Copy)]
enum Kind {
    Upsert,
    Update,
    Delete,
}

/// One writer: see the module documentation.
async fn write_loop(
    index: usize,
    conn: PgConnection,
    mut rng: Rng,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Written>>,
) {
    let w = &shared.workload;
    let mix = w.mix;
    let total = mix.insert + mix.upsert + mix.update + mix.delete;
    let mut conn = Some(conn);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match tokio::time::timeout(
                w.timeout.unwrap_or(Duration::from_secs(30)),
                PgConnection::connect(&shared.url),
            )
            .await
            {
                Ok(Ok(c)) => conn.insert(c),
                _ => {
                    log.lock().unwrap().failed += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let mut planned: Vec<(i32, Kind)> = (0..1 + rng.below(w.max_changes))
            .map(|_| {
                let pick = rng.below(total);
                if pick < mix.insert {
                    return (shared.next_id.fetch_add(1, Ordering::Relaxed), Kind::Upsert);
                }
                let below = match w.new_ids_from {
                    Some(_) => shared.next_id.load(Ordering::Relaxed) - 1,
                    None => w.keys,
                };
                let id = 1 + rng.below(below as u64) as i32;
                let kind = match pick - mix.insert {
                    p if p < mix.upsert => Kind::Upsert,
                    p if p < mix.upsert + mix.update => Kind::Update,
                    _ => Kind::Delete,
                };
                (id, kind)
            })
            .collect();
        // One lock order for every transaction: no deadlocks.
        planned.sort_by_key(|p| p.0);
        planned.dedup_by_key(|p| p.0);
        let mut changes = Vec::new();
        let transaction = async {
            let mut tx = c.begin().await?;
            for (id, kind) in &planned {
                n += 1;
                let v = shared.v.fetch_add(1, Ordering::Relaxed);
                let note = match rng.below(5) {
                    0 => None,
                    1 => Some(format!("w{index} tab\there nl\n \"q\" \\b\\ ü {n}")),
                    _ => Some(format!("w{index}-{n}")),
                };
                let change: Option<i32> = match kind {
                    Kind::Upsert => {
                        sqlx::query_scalar(
                            "INSERT INTO public.t (id, v, note) VALUES ($1, $2, $3) \
                             ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v, note = EXCLUDED.note \
                             RETURNING v",
                        )
                        .bind(id)
                        .bind(v)
                        .bind(&note)
                        .fetch_optional(&mut *tx)
                        .await?
                    }
                    Kind::Update => {
                        sqlx::query_scalar(
                            "UPDATE public.t SET v = $2, note = $3 WHERE id = $1 RETURNING v",
                        )
                        .bind(id)
                        .bind(v)
                        .bind(&note)
                        .fetch_optional(&mut *tx)
                        .await?
                    }
                    Kind::Delete => {
                        sqlx::query_scalar("DELETE FROM public.t WHERE id = $1 RETURNING v")
                            .bind(id)
                            .fetch_optional(&mut *tx)
                            .await?
                    }
                };
                match (kind, change) {
                    (_, None) => {}
                    (Kind::Delete, Some(old)) => changes.push(RowChange::Delete(*id, old)),
                    (_, Some(new)) => changes.push(RowChange::Write(*id, new)),
                }
            }
            tx.commit().await
        };
        let result = match w.timeout {
            None => transaction.await.map_err(|e| e.to_string()),
            Some(t) => match tokio::time::timeout(t, transaction).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("took longer than {t:?}")),
            },
        };
        {
            let mut log = log.lock().unwrap();
            match result {
                Ok(()) => {
                    log.changes.extend(changes);
                    log.committed += 1;
                }
                Err(e) => {
                    // Only a commit that returned Ok counts.
                    log.failed += 1;
                    if log.failed <= 3 {
                        eprintln!("writer {index}: transaction failed (not counted): {e}");
                    }
                    conn = None;
                }
            }
        }
        if !w.pause.is_zero() {
            tokio::time::sleep(w.pause).await;
        }
    }
    if let Some(c) = conn {
        let _ = c.close().await;
    }
}
