//! The snapshot's coordination tables (`cdc.snapshot_jobs`,
//! `cdc.snapshot_chunks`) as tests read them.

use std::time::{Duration, Instant};

use sqlx::Row;

use crate::{Engine, TestDb};

/// `X/Y` (hex) as the 64-bit position `(X << 32) + Y`.
pub fn parse_lsn(text: &str) -> u64 {
    let (hi, lo) = text
        .split_once('/')
        .unwrap_or_else(|| panic!("bad LSN {text:?}"));
    let hi = u64::from_str_radix(hi, 16).unwrap_or_else(|e| panic!("bad LSN {text:?}: {e}"));
    let lo = u64::from_str_radix(lo, 16).unwrap_or_else(|e| panic!("bad LSN {text:?}: {e}"));
    (hi << 32) + lo
}

/// A row of `cdc.snapshot_jobs`.
#[derive(Debug, Clone)]
pub struct Job {
    pub state: String,
    pub snapshot_name: Option<String>,
    pub snapshot_lsn: Option<String>,
    pub coordinator: Option<String>,
    pub chunks_total: i32,
    pub chunks_done: i32,
    pub rows_done: i64,
}

/// The job of `slot`; `None` while the coordination tables or the job row
/// do not exist yet.
pub async fn job(db: &TestDb, slot: &str) -> Option<Job> {
    let exists = db
        .query_text("SELECT to_regclass('cdc.snapshot_jobs')::text")
        .await;
    exists.as_ref()?;
    let row = sqlx::query(
        "SELECT state, snapshot_name, snapshot_lsn::text AS snapshot_lsn, coordinator, \
         chunks_total, chunks_done, rows_done FROM cdc.snapshot_jobs WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(db.pool())
    .await
    .unwrap_or_else(|e| panic!("reading cdc.snapshot_jobs: {e}"))?;
    Some(Job {
        state: row.get("state"),
        snapshot_name: row.get("snapshot_name"),
        snapshot_lsn: row.get("snapshot_lsn"),
        coordinator: row.get("coordinator"),
        chunks_total: row.get("chunks_total"),
        chunks_done: row.get("chunks_done"),
        rows_done: row.get("rows_done"),
    })
}

/// Waits at most `timeout` for the job of `slot` to be in `state`
/// (`running`, `done`, …); whether it got there.
pub async fn job_reaches(db: &TestDb, slot: &str, state: &str, timeout: Duration) -> bool {
    crate::wait_until(timeout, async || {
        job(db, slot).await.is_some_and(|j| j.state == state)
    })
    .await
}

/// Waits until the job of `slot` is `done` and returns it; panics with the
/// engines' output when it is not within `timeout` or every engine exited.
pub async fn wait_job_done(
    db: &TestDb,
    slot: &str,
    engines: &mut [&mut Engine],
    timeout: Duration,
) -> Job {
    let deadline = Instant::now() + timeout;
    loop {
        let j = job(db, slot).await;
        if let Some(j) = j.as_ref().filter(|j| j.state == "done") {
            return j.clone();
        }
        let all_exited = engines.iter_mut().all(|e| !e.is_running());
        if all_exited || Instant::now() >= deadline {
            let reports: Vec<String> = engines.iter().map(|e| e.output_report()).collect();
            panic!(
                "the snapshot job of {slot} is not done (job: {j:?}, all engines exited: {all_exited})\n{}",
                reports.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A row of `cdc.snapshot_chunks`.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub id: i64,
    pub table: String,
    pub chunk_no: i32,
    pub strategy: String,
    pub status: String,
    pub claimed_by: Option<String>,
    pub rows: Option<i64>,
    pub attempts: i32,
    pub reads: i32,
}

/// Every chunk of `slot`'s job, by id.
pub async fn chunks(db: &TestDb, slot: &str) -> Vec<Chunk> {
    let rows = sqlx::query(
        "SELECT id, table_schema || '.' || table_name AS t, chunk_no, strategy, status, claimed_by, \
         \"rows\", attempts, reads FROM cdc.snapshot_chunks WHERE slot_name = $1 ORDER BY id",
    )
    .bind(slot)
    .fetch_all(db.pool())
    .await
    .unwrap_or_else(|e| panic!("reading cdc.snapshot_chunks: {e}"));
    rows.iter()
        .map(|r| Chunk {
            id: r.get("id"),
            table: r.get("t"),
            chunk_no: r.get("chunk_no"),
            strategy: r.get("strategy"),
            status: r.get("status"),
            claimed_by: r.get("claimed_by"),
            rows: r.get("rows"),
            attempts: r.get("attempts"),
            reads: r.get("reads"),
        })
        .collect()
}
