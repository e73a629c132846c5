//! Incremental snapshots in the tests: the `snapshot:` section that turns
//! them on ([`incremental_snapshots`]), the signal row that asks for one
//! ([`request_snapshot`]), its progress row ([`progress`],
//! [`wait_snapshot_done`]), a workload that changes the table meanwhile
//! ([`workload`]), and the chunks a sink's reads came in ([`chunk_reads`],
//! [`reread_chunks`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::replay::{wait_converged_tables, Change};
use crate::{
    quote_ident, quote_literal, wait_until, Engine, Mix, RowChange, TestDb, Workload, Written,
};

/// `snapshot:` of a stream-only pipeline with incremental snapshots on,
/// `chunk_rows` rows per chunk.
pub fn incremental_snapshots(chunk_rows: u64) -> String {
    format!("{{ mode: never, incremental: {{ enabled: true, chunk_rows: {chunk_rows} }} }}")
}

/// A new database (name from `prefix`) with `public.t (id int PRIMARY
/// KEY, v int, note text)` holding ids 1 to `rows` as [`workload`]'s
/// writers expect them (`v = -id`).
pub async fn database_with_t(prefix: &str, rows: i32) -> TestDb {
    let db = TestDb::create(prefix).await;
    db.exec(&format!(
        "CREATE TABLE public.t (id int PRIMARY KEY, v int, note text);\
         INSERT INTO public.t SELECT g, -g, 'row ' || g FROM generate_series(1, {rows}) g"
    ))
    .await;
    db
}

/// Waits until the file at `out` rebuilds `tables` ([`wait_converged_tables`]),
/// then checks that the incremental reads of `public.t` (a table of `rows`
/// rows before the writers started) read no row twice (no restart
/// happened) and more than half of them; `written` is what the writers
/// did meanwhile.
pub async fn converged_reading_each_row_once(
    db: &TestDb,
    engine: &Engine,
    out: &std::path::Path,
    tables: &[&str],
    rows: i32,
    written: &Written,
) {
    assert!(
        written.committed > 50,
        "the writers committed only {}",
        written.committed
    );
    let mut tails = [crate::replay::Tail::new(0, out.to_owned())];
    wait_converged_tables(db, &mut tails, &[engine], tables).await;
    let (reads, distinct) = reads_of(&tails[0], "public.t");
    eprintln!(
        "{reads} reads of {distinct} rows of public.t; writers: {} transactions",
        written.committed
    );
    assert_eq!(reads, distinct, "a row was read twice without a restart");
    assert!(reads > rows as usize / 2, "only {reads} reads");
}

/// Asks for an incremental snapshot of `tables` (`schema.table`), in that
/// order, with a row in the signal table `cdc.signals`.
pub async fn request_snapshot(db: &TestDb, tables: &[&str]) {
    let payload = serde_json::json!({ "tables": tables }).to_string();
    db.exec(&format!(
        "INSERT INTO cdc.signals (kind, payload) VALUES ('snapshot', {})",
        quote_literal(&payload)
    ))
    .await;
}

/// The progress row of a table's latest incremental snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// `pending`, `running`, `done` or `failed`.
    pub state: String,
    /// Chunks whose reads are durable in every sink.
    pub chunks_done: i64,
    /// Rows those chunks delivered.
    pub rows_done: i64,
    /// The first column of the key of the last row delivered, as text.
    pub last_key: Option<String>,
}

/// The progress of the latest incremental snapshot of `table`
/// (`schema.table`) in `cdc.incremental_snapshots`, if any.
pub async fn progress(db: &TestDb, table: &str) -> Option<Progress> {
    let (schema, name) = table.split_once('.').expect("schema.table");
    let row = db
        .query_json(&format!(
            "SELECT state, chunks_done, rows_done, last_key[1] AS last_key \
             FROM cdc.incremental_snapshots WHERE table_schema = {} AND table_name = {} \
             ORDER BY snapshot_id DESC LIMIT 1",
            quote_literal(schema),
            quote_literal(name)
        ))
        .await
        .into_iter()
        .next()?;
    let int = |v: &serde_json::Value| v.to_string().parse::<i64>().expect("an integer");
    Some(Progress {
        state: row["state"].as_str().expect("a state").to_owned(),
        chunks_done: int(&row["chunks_done"]),
        rows_done: int(&row["rows_done"]),
        last_key: row["last_key"].as_str().map(str::to_owned),
    })
}

/// Waits until the latest incremental snapshot of every table of `tables`
/// is `done`, at most `timeout`; panics with its progress and the
/// engines' output when it is not (or one failed).
pub async fn wait_snapshot_done(
    db: &TestDb,
    tables: &[&str],
    engines: &[&Engine],
    timeout: Duration,
) {
    let done = wait_until(timeout, async || {
        for table in tables {
            match progress(db, table).await {
                Some(p) if p.state == "done" => {}
                Some(p) if p.state == "failed" => return true,
                _ => return false,
            }
        }
        true
    })
    .await;
    let mut states = Vec::new();
    for table in tables {
        states.push((table, progress(db, table).await));
    }
    if !done
        || states
            .iter()
            .any(|(_, p)| p.as_ref().is_none_or(|p| p.state != "done"))
    {
        let reports: Vec<String> = engines.iter().map(|e| e.output_report()).collect();
        panic!(
            "the incremental snapshot is not done within {timeout:?}: {states:?}\n{}",
            reports.join("\n")
        );
    }
}

/// Waits until the latest incremental snapshot of `table` satisfies
/// `reached` (named `what` in the panic), at most `timeout`, running the
/// SQL `touch` before each look when given (a write to another table keeps
/// the stream moving); panics with the progress and the engine's output
/// when it does not.
pub async fn wait_progress(
    db: &TestDb,
    engine: &Engine,
    table: &str,
    what: &str,
    touch: Option<&str>,
    timeout: Duration,
    reached: impl Fn(&Progress) -> bool,
) {
    let ok = wait_until(timeout, async || {
        if let Some(sql) = touch {
            db.exec(sql).await;
        }
        progress(db, table).await.is_some_and(|p| reached(&p))
    })
    .await;
    assert!(
        ok,
        "the incremental snapshot of {table} is not {what} within {timeout:?}: {:?}\n{}",
        progress(db, table).await,
        engine.output_report()
    );
}

/// The incremental reads of `table` (keyed by an integer `id`) in `tail`:
/// (all, distinct ids). Panics on a read not marked incremental.
pub fn reads_of(tail: &crate::replay::Tail, table: &str) -> (usize, usize) {
    let ids = read_ids(tail, table);
    let distinct: std::collections::HashSet<i64> = ids.iter().copied().collect();
    (ids.len(), distinct.len())
}

/// The `id`s of the reads of `table` in `tail`, in arrival order. Panics on
/// a read not marked incremental.
pub fn read_ids(tail: &crate::replay::Tail, table: &str) -> Vec<i64> {
    tail.events
        .iter()
        .filter(|c| c.op == "r" && c.table == table)
        .map(|c| {
            assert_eq!(
                c.snapshot, "incremental",
                "a read not marked incremental: {c:?}"
            );
            c.after["id"].as_i64().expect("an integer id")
        })
        .collect()
}

/// Three [`crate::Writers`] on a `public.t` of `rows` rows while it is
/// snapshotted: inserts of new ids beyond it, upserts, updates and deletes
/// of ids all over it, a transaction every 2 ms each (`v` from 1: the
/// table's rows should have others, see [`writers_own`]).
pub fn workload(rows: i32) -> Workload {
    Workload {
        keys: rows,
        new_ids_from: Some(rows + 1),
        mix: Mix {
            insert: 2,
            upsert: 2,
            update: 4,
            delete: 2,
        },
        pause: Duration::from_millis(2),
        ..Workload::new(3)
    }
}

/// The reads of one chunk as a sink received them: the reads of a chunk
/// share the commit LSN of its high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRead {
    /// The high watermark's commit LSN.
    pub commit_lsn: u64,
    /// The smallest and largest `id` read.
    pub first: i64,
    pub last: i64,
    /// Reads received (a read delivered twice counts twice).
    pub reads: usize,
}

/// The incremental reads of `table` among `changes` (keyed by an integer
/// `id`), grouped into chunks, in commit order. Panics on a read not
/// marked incremental.
pub fn chunk_reads<'a>(
    changes: impl IntoIterator<Item = &'a Change>,
    table: &str,
) -> Vec<ChunkRead> {
    let mut chunks: BTreeMap<u64, ChunkRead> = BTreeMap::new();
    for c in changes {
        if c.op != "r" || c.table != table {
            continue;
        }
        assert_eq!(
            c.snapshot, "incremental",
            "a read not marked incremental: {c:?}"
        );
        let id = c.after["id"]
            .to_string()
            .parse::<i64>()
            .unwrap_or_else(|e| panic!("a read without an integer id ({e}): {c:?}"));
        let chunk = chunks.entry(c.commit_lsn).or_insert(ChunkRead {
            commit_lsn: c.commit_lsn,
            first: id,
            last: id,
            reads: 0,
        });
        chunk.first = chunk.first.min(id);
        chunk.last = chunk.last.max(id);
        chunk.reads += 1;
    }
    chunks.into_values().collect()
}

/// Chunks (of [`chunk_reads`]) that read keys an earlier chunk had read
/// already: after a restart, the chunks read again from the last durable
/// one on. A snapshot that ran once, or resumed exactly where the last
/// delivered chunk ended, has none.
pub fn reread_chunks(chunks: &[ChunkRead]) -> Vec<ChunkRead> {
    let mut high = i64::MIN;
    let mut again = Vec::new();
    for c in chunks {
        if c.first <= high {
            again.push(*c);
        }
        high = high.max(c.last);
    }
    again
}

/// `written` without the deletes of rows that were in the table before
/// the writers started (`v` below the workload's first, 1): a row deleted
/// before its chunk was read never reached the sinks, so only the delete
/// of a row version the writers wrote can be asked of them
/// ([`Written::assert_no_loss`]).
pub fn writers_own(written: &Written) -> Written {
    Written {
        changes: written
            .changes
            .iter()
            .filter(|c| !matches!(c, RowChange::Delete(_, v) if *v < 1))
            .copied()
            .collect(),
        committed: written.committed,
        failed: written.failed,
    }
}

/// A client that keeps updating rows just ahead of the durable progress
/// of a table's incremental snapshot (`note` of a row whose `id` is at
/// most `span` past the last key stored), so that changes land in the
/// windows of the chunks being read, not only elsewhere in the table.
/// Its updates leave `id` and `v` alone.
pub struct Chaser {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<usize>,
}

impl Chaser {
    /// Starts chasing the snapshot of `table` (`schema.table`, with an
    /// integer `id` and a text `note`).
    pub async fn start(db: &TestDb, table: &str, span: i64) -> Chaser {
        let (schema, name) = table.split_once('.').expect("schema.table");
        let sql = format!(
            "UPDATE {}.{} SET note = 'chased ' || $1::int8 WHERE id = $2::int8 + COALESCE((\
             SELECT last_key[1]::int8 FROM cdc.incremental_snapshots \
             WHERE table_schema = {} AND table_name = {} ORDER BY snapshot_id DESC LIMIT 1), 0)",
            quote_ident(schema),
            quote_ident(name),
            quote_literal(schema),
            quote_literal(name)
        );
        let mut conn = PgConnection::connect(db.url())
            .await
            .expect("the chaser connects");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut n: i64 = 0;
            let mut updated = 0;
            while !stopped.load(Ordering::Relaxed) {
                n += 1;
                // Spread over 1..=span (a multiplicative walk, no RNG needed).
                let ahead = (n.wrapping_mul(7919) % span).abs() + 1;
                let done = sqlx::query(AssertSqlSafe(sql.clone()))
                    .bind(n)
                    .bind(ahead)
                    .execute(&mut conn)
                    .await
                    .expect("the chaser's update");
                updated += done.rows_affected() as usize;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            updated
        });
        Chaser { stop, task }
    }

    /// Stops; returns how many rows it updated.
    pub async fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the chaser panicked")
    }
}
