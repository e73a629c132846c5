//! Incremental snapshots in the tests: the `snapshot:` section that turns
//! them on ([`incremental_snapshots`]), the signal row that asks for one
//! ([`request_snapshot`]), its progress row ([`progress`],
//! [`wait_snapshot_done`]), a workload that changes the table meanwhile
//! ([`workload`]), the chunks a sink's reads came in ([`chunk_reads`],
//! [`reread_chunks`]), and an engine killed midway through a snapshot and
//! restarted ([`kill_midway_and_resume`], [`assert_resumed_after_durable`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cdc_core::Lsn;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::replay::{wait_converged_tables, Change};
use crate::{
    quote_ident, quote_literal, wait_streaming, wait_until, Engine, Mix, RowChange, TestDb,
    Workload, Writers, Written,
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

/// Checks that the incremental reads of `public.t` among `changes` came
/// in chunks each read once (no restart happened) and covered more than
/// half of the table's `rows`; returns (reads, chunks).
pub fn assert_each_chunk_read_once<'a>(
    changes: impl IntoIterator<Item = &'a Change>,
    rows: i32,
) -> (usize, usize) {
    let chunks = chunk_reads(changes, "public.t");
    let again = reread_chunks(&chunks);
    assert!(
        again.is_empty(),
        "chunks read twice without a restart: {again:?}"
    );
    let reads: usize = chunks.iter().map(|c| c.reads).sum();
    assert!(reads > rows as usize / 2, "only {reads} incremental reads");
    (reads, chunks.len())
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

/// An incremental snapshot whose engine was killed midway and which a
/// second engine finished ([`kill_midway_and_resume`]).
pub struct Resumed {
    /// The progress row right after the kill: what the first engine had
    /// made durable in every sink.
    pub at_kill: Progress,
    /// The server's WAL position right after the kill: every watermark of
    /// the first engine is below it, every one of the second above.
    pub killed_at: Lsn,
    /// The second engine, still running (the snapshot is done).
    pub engine: Engine,
    /// What the writers committed meanwhile.
    pub written: Written,
}

/// Starts the engine of `yaml` (streaming from `slot`, incremental
/// snapshots on) on `db`'s `public.t`, asks for an
/// incremental snapshot of it while `writers` (such as [`workload`]) and
/// a [`Chaser`] (`span` ids ahead) change it, SIGKILLs the engine once at least five
/// chunks are durable, and starts it again until the snapshot is done
/// (at most `timeout` for each half). The writers are finished when it
/// returns.
pub async fn kill_midway_and_resume(
    db: &TestDb,
    yaml: &str,
    slot: &str,
    writers: Workload,
    span: i64,
    timeout: Duration,
) -> Resumed {
    let mut first = Engine::start(yaml);
    wait_streaming(db, &mut first, slot, timeout).await;
    let writers = Writers::start(db.url(), writers).await;
    request_snapshot(db, &["public.t"]).await;
    let chaser = Chaser::start(db, "public.t", span).await;
    wait_progress(db, &first, "public.t", "5 chunks in", None, timeout, |p| {
        p.chunks_done >= 5
    })
    .await;
    first.sigkill();
    assert_eq!(first.wait_exit(Duration::from_secs(10)).await, 128 + 9);
    let at_kill = progress(db, "public.t").await.expect("a progress row");
    let killed_at = db.current_wal_lsn().await;
    let engine = Engine::start(yaml);
    wait_snapshot_done(db, &["public.t"], &[&engine], timeout).await;
    chaser.finish().await;
    let written = writers.finish().await;
    Resumed {
        at_kill,
        killed_at,
        engine,
        written,
    }
}

/// The chunks a sink received (`chunks`, of [`chunk_reads`] or grouped
/// likewise) after a [`kill_midway_and_resume`] with `chunk_rows` rows per
/// chunk: the second engine resumed right after the last durable key, read
/// no key of a durable chunk again, and only a handful of chunks (those
/// between the last durable one and the kill) were read twice. Returns
/// the chunks read again.
pub fn assert_resumed_after_durable(
    what: &str,
    resumed: &Resumed,
    chunks: &[ChunkRead],
    chunk_rows: u64,
) -> Vec<ChunkRead> {
    let again = reread_chunks(chunks);
    let at_kill = &resumed.at_kill;
    eprintln!(
        "{what}: killed at {at_kill:?}; {} chunks in the sink, {} read again after the \
         restart: {again:?}",
        chunks.len(),
        again.len()
    );
    if at_kill.state != "running" {
        return again;
    }
    let durable: i64 = at_kill
        .last_key
        .as_deref()
        .and_then(|k| k.parse().ok())
        .expect("a durable key");
    let resumed_chunks: Vec<_> = chunks
        .iter()
        .filter(|c| c.commit_lsn > resumed.killed_at.0)
        .collect();
    let first = resumed_chunks
        .first()
        .expect("chunks read by the second run");
    assert!(
        first.first > durable && first.first <= durable + chunk_rows as i64,
        "{what}: the second run did not resume right after the durable key {durable}: {first:?}"
    );
    assert!(
        resumed_chunks.iter().all(|c| c.first > durable),
        "{what}: the second run read keys of a durable chunk again: {resumed_chunks:?}"
    );
    assert!(
        again.iter().all(|c| c.first > durable) && again.len() <= 10,
        "{what}: {} chunks read again: {again:?}",
        again.len()
    );
    again
}
