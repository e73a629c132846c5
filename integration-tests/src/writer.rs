//! [`Writer`]: a client that keeps changing `public.t (id int primary
//! key, v text)` in the background (inserts, updates and deletes, each its
//! own transaction), riding out server restarts: a statement that fails is
//! not retried (its outcome may be unknown; the table is the truth the
//! tests compare with), the connection is opened again and writing goes on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, PgConnection};

/// How long one connection attempt or statement may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the writer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Statements that succeeded.
    pub ok: u64,
    /// Statements (or connection attempts) that failed.
    pub failed: u64,
}

/// A background writer; see the module documentation.
pub struct Writer {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Starts writing to `public.t` of the database at `url`, whose ids
    /// `1..=rows` may exist; new rows get ids above `rows`. One statement
    /// every `pause`.
    pub fn start(url: &str, rows: u32, pause: Duration) -> Writer {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(write_loop(
            url.to_owned(),
            i64::from(rows),
            pause,
            ok.clone(),
            failed.clone(),
            stop.clone(),
        ));
        Writer {
            ok,
            failed,
            stop,
            task,
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Waits until `n` more statements than now have succeeded, at most
    /// `timeout`; `false` when they did not.
    pub async fn wait_more(&self, n: u64, timeout: Duration) -> bool {
        let target = self.stats().ok + n;
        crate::wait_until(timeout, async || self.stats().ok >= target).await
    }

    /// Stops writing (after the statement under way) and returns what it did.
    pub async fn stop(self) -> WriterStats {
        let Writer {
            ok,
            failed,
            stop,
            task,
        } = self;
        stop.store(true, Ordering::Relaxed);
        let _ = task.await;
        WriterStats {
            ok: ok.load(Ordering::Relaxed),
            failed: failed.load(Ordering::Relaxed),
        }
    }
}

async fn write_loop(
    url: String,
    rows: i64,
    pause: Duration,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut conn: Option<PgConnection> = None;
    let mut next_id = rows + 1;
    let mut step: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(pause).await;
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match tokio::time::timeout(STEP_TIMEOUT, PgConnection::connect(&url)).await {
                Ok(Ok(c)) => conn.insert(c),
                _ => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            },
        };
        step += 1;
        // A spread of existing (or once existing) ids.
        let some_id = (step * 7919) % (next_id - 1) + 1;
        let statement = match step % 4 {
            0 | 1 => {
                next_id += 1;
                sqlx::query("INSERT INTO public.t (id, v) VALUES ($1::int, $2)")
                    .bind(next_id - 1)
                    .bind(format!("w{step}"))
            }
            2 => sqlx::query("UPDATE public.t SET v = $2 WHERE id = $1::int")
                .bind(some_id)
                .bind(format!("u{step}")),
            _ => sqlx::query("DELETE FROM public.t WHERE id = $1::int").bind(some_id),
        };
        match tokio::time::timeout(STEP_TIMEOUT, statement.execute(&mut *c)).await {
            Ok(Ok(_)) => {
                ok.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                failed.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
    if let Some(c) = conn {
        let _ = c.close().await;
    }
}
