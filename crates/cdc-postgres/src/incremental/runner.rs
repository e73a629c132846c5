//! [`Incremental`]: the incremental snapshots of a streaming source. The
//! source calls it between transactions to read the next chunk (low
//! watermark, read, high watermark), hands it every change of the stream,
//! every watermark and every signal, and lets it record progress once the
//! sinks made a chunk's reads durable.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc_core::{
    ChangeEvent, ErrorClass, IncrementalProgress, IncrementalState, Lsn, Row, SourceStatus,
    TableName, TableSchema,
};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::chunks::{choose_key, read_chunk};
use super::progress::{ProgressStore, TableJob};
use super::request::{Mark, MarkKind};
use super::visibility::{running_xids, sync_waiters, Delivered, MAX_DELIVERED};
use super::window::{Closed, Window};
use super::WATERMARK_PREFIX;
use crate::error::PgError;
use crate::ident::quote_table;
use crate::local_subsets::LocalSubsets;
use crate::snapshot::describe_published_table;
use crate::stream::PgSourceConfig;

/// Wait before trying again after a chunk failed on a transient error.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Wait before reading a chunk again whose snapshot did not see a
/// transaction the stream delivered already.
const INVISIBLE_RETRY: Duration = Duration::from_millis(100);

/// The longest a chunk's read or high watermark waits for the table's
/// lock (behind a schema change waiting for its own lock, say): the
/// stream waits that long at most, then the chunk is tried again later.
const LOCK_TIMEOUT: &str = "2s";

/// The SQLSTATE of a lock not obtained within `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// `SET LOCAL lock_timeout …; LOCK TABLE … IN ACCESS SHARE MODE`.
fn lock_sql(table: &TableName) -> String {
    format!(
        "SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; LOCK TABLE {} IN ACCESS SHARE MODE",
        quote_table(table)
    )
}

/// The chunk between its read and its high watermark.
#[derive(Debug)]
pub(super) struct OpenChunk {
    /// The snapshot whose job the chunk is of.
    pub snapshot: i64,
    pub table: Arc<TableSchema>,
    window: Window,
    low: Mark,
    high: Mark,
    /// The key of the chunk's last row (`None`: no row).
    next_key: Option<Vec<String>>,
    /// Fewer rows than a chunk holds: the table ends here.
    last: bool,
}

/// What a high watermark releases into the stream, at its position.
#[derive(Debug)]
pub(crate) struct Release {
    /// The table's schema as the chunk was read with.
    pub table: Arc<TableSchema>,
    /// The snapshot this chunk belongs to.
    pub snapshot: i64,
    /// The first chunk of the table: a begin event goes first.
    pub begin: bool,
    /// The rows to emit as reads, in key order.
    pub rows: Vec<Row>,
    /// `Some(rows)`: the table is done (rows emitted in all); an end event
    /// goes last.
    pub end: Option<u64>,
}

/// Progress to store once the stream position after `after` is durable.
#[derive(Debug)]
struct Durable {
    after: Lsn,
    job: TableJob,
    done: bool,
}

/// The incremental snapshots of one source.
pub(crate) struct Incremental {
    pub(super) store: ProgressStore,
    pub(super) slot: String,
    /// Whose column list and row filter the chunks apply.
    publication: String,
    /// The configured column selections, applied after the publication's.
    local_subsets: LocalSubsets,
    database: String,
    options: PgConnectOptions,
    chunk_rows: u64,
    /// Told apart from the watermarks of an earlier run of this source.
    run: String,
    conn: Option<PgConnection>,
    pub(super) tracked: HashSet<TableName>,
    /// Tables to snapshot, in the order they are read (paused ones are
    /// passed over), with how far each got in memory (ahead of what is
    /// stored).
    pub(super) queue: VecDeque<TableJob>,
    pub(super) open: Option<OpenChunk>,
    pending: VecDeque<Durable>,
    retry_at: Option<Instant>,
    marks: u64,
    /// A chunk's read is under way: still set at the next step when the
    /// step was cancelled midway, and then the connection (perhaps inside
    /// a transaction) is replaced.
    reading: bool,
    /// Where progress is shown (`/status`, metrics).
    pub(super) status: SourceStatus,
    /// Transactions the stream delivered that may still be invisible to a
    /// chunk's read ([`super::visibility`]).
    delivered: Delivered,
    /// Since when chunks are held back for delivered transactions not yet
    /// visible.
    held_back: Option<Instant>,
}

impl Incremental {
    /// Creates the metadata tables when missing and loads the unfinished
    /// snapshots of `cfg`'s slot, which resume from their last durable
    /// chunk. Chunks read what `cfg`'s publication publishes of a table
    /// (its column list and row filter), as the stream does.
    pub async fn start(
        conn: &mut PgConnection,
        cfg: &PgSourceConfig,
        database: &str,
        options: PgConnectOptions,
    ) -> Result<Self, PgError> {
        let settings = &cfg.incremental;
        let slot = cfg.slot.as_str();
        let tracked: HashSet<TableName> = cfg.tables.iter().cloned().collect();
        let store = ProgressStore::new(&cfg.snapshot.metadata_schema);
        store.ensure(conn).await?;
        // Filters are checked for standard strings (no backslash escapes).
        let options = options.options([("standard_conforming_strings", "on")]);
        let queue: VecDeque<TableJob> = store.unfinished(conn, slot).await?.into();
        // An earlier run may have delivered the transactions that still
        // wait for a synchronous standby.
        let mut delivered = Delivered::default();
        for xid in sync_waiters(conn).await? {
            delivered.record_any(xid);
        }
        for job in &queue {
            report(&cfg.status, job);
            tracing::info!(table = %job.table, snapshot = job.snapshot, chunks_done = job.chunks_done,
                paused = job.paused, "resuming an incremental snapshot");
        }
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Ok(Self {
            store,
            slot: slot.to_owned(),
            publication: cfg.publication.clone(),
            local_subsets: LocalSubsets::from_subsets(&cfg.subsets),
            database: database.to_owned(),
            options,
            chunk_rows: settings.chunk_rows.max(1),
            run: format!("{}-{started:x}", std::process::id()),
            conn: None,
            tracked,
            queue,
            open: None,
            pending: VecDeque::new(),
            retry_at: None,
            marks: 0,
            reading: false,
            status: cfg.status.clone(),
            delivered,
            held_back: None,
        })
    }

    /// This instance takes the slot over from another one (it stood by
    /// while the other streamed): what the other stored is what counts.
    /// Forgets the chunk and the progress held in memory and loads the
    /// unfinished snapshots again, which resume after their last durable
    /// chunk.
    pub async fn take_over(&mut self) -> Result<(), PgError> {
        let (store, slot) = (self.store.clone(), self.slot.clone());
        let loaded = match self.connection().await {
            Ok(conn) => store.unfinished(conn, &slot).await,
            Err(e) => Err(e),
        };
        let queue = match loaded {
            Ok(queue) => queue,
            Err(e) => {
                self.conn = None;
                return Err(e);
            }
        };
        for job in &queue {
            tracing::info!(table = %job.table, snapshot = job.snapshot, chunks_done = job.chunks_done,
                "taking over an incremental snapshot");
        }
        // What the other instance delivered is not known here: the
        // transactions waiting for a synchronous standby may be among it.
        let waiting = match self.connection().await {
            Ok(conn) => sync_waiters(conn).await,
            Err(e) => Err(e),
        };
        match waiting {
            Ok(xids) => xids.into_iter().for_each(|x| self.delivered.record_any(x)),
            Err(e) => {
                self.conn = None;
                return Err(e);
            }
        }
        self.queue = queue.into();
        self.open = None;
        self.pending.clear();
        self.retry_at = None;
        Ok(())
    }

    /// The signal table, which the publication must hold.
    pub fn signal_table(&self) -> TableName {
        self.store.signal_table()
    }

    /// `true` for the signal table.
    pub fn is_signal_table(&self, name: &TableName) -> bool {
        *name == self.store.signal_table()
    }

    /// Connects to another server from now on (the source followed a
    /// failover to it): the next step opens a new connection there.
    pub(crate) fn connect_to(&mut self, options: PgConnectOptions) {
        self.options = options.options([("standard_conforming_strings", "on")]);
        self.conn = None;
    }

    pub(super) async fn connection(&mut self) -> Result<&mut PgConnection, PgError> {
        connection(&mut self.conn, &self.options).await
    }

    /// Between two transactions of the stream: stores the progress the
    /// sinks made durable (everything up to `acknowledged`), then reads
    /// the next chunk if none is open. Never fails: a transient error is
    /// logged and the chunk tried again a second later; a table that cannot
    /// be snapshotted is marked failed (with the reason) and skipped.
    pub async fn step(&mut self, acknowledged: Lsn) {
        if std::mem::take(&mut self.reading) {
            self.conn = None;
        }
        // After a failure, the next try waits for the retry delay too (a
        // server going down must not get a connection attempt per batch).
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        if let Err(e) = self.store_durable(acknowledged).await {
            tracing::warn!(error = %cdc_core::error_chain(&e), "cannot record incremental snapshot progress; trying again in {RETRY_DELAY:?}");
            self.conn = None;
            self.retry_at = Some(Instant::now() + RETRY_DELAY);
            return;
        }
        if self.delivered.len() > MAX_DELIVERED {
            if let Err(e) = self.forget_visible().await {
                tracing::warn!(error = %cdc_core::error_chain(&e), "cannot look up running transactions; trying again in {RETRY_DELAY:?}");
                self.conn = None;
                self.retry_at = Some(Instant::now() + RETRY_DELAY);
                return;
            }
        }
        if self.open.is_some() || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let Some(job) = self.queue.iter().find(|j| !j.paused).cloned() else {
            return;
        };
        self.retry_at = None;
        let result = if self.tracked.contains(&job.table) {
            self.reading = true;
            let read = self.read_next(&job).await;
            self.reading = false;
            read
        } else {
            Err(PgError::Setup(format!(
                "table {} is not in source.tables: its changes are not captured, so it cannot \
                 be snapshotted while streaming",
                job.table
            )))
        };
        match result {
            Ok(open) => self.open = open,
            Err(e)
                if e.class() == ErrorClass::Retryable
                    || e.sqlstate().as_deref() == Some(LOCK_NOT_AVAILABLE) =>
            {
                tracing::warn!(table = %job.table, error = %cdc_core::error_chain(&e),
                    "incremental snapshot chunk failed; trying again");
                self.conn = None;
                self.retry_at = Some(Instant::now() + RETRY_DELAY);
            }
            Err(e) => {
                let reason = cdc_core::error_chain(&e).to_string();
                tracing::error!(table = %job.table, snapshot = job.snapshot, "incremental snapshot of {} failed: {reason}", job.table);
                self.queue.retain(|j| !j.is(job.snapshot, &job.table));
                self.status.incremental_state(
                    &job.table,
                    job.snapshot,
                    IncrementalState::Failed,
                    Some(reason.clone()),
                );
                let (store, slot) = (self.store.clone(), self.slot.clone());
                if let Ok(conn) = self.connection().await {
                    if let Err(e) = store
                        .fail(conn, &slot, job.snapshot, &job.table, &reason)
                        .await
                    {
                        tracing::warn!(error = %cdc_core::error_chain(&e), "cannot record the failure");
                    }
                }
            }
        }
    }

    /// Forgets the delivered transactions a new snapshot sees.
    async fn forget_visible(&mut self) -> Result<(), PgError> {
        let conn = connection(&mut self.conn, &self.options).await?;
        let running = running_xids(conn).await?;
        self.delivered.still_running(&running, None);
        Ok(())
    }

    /// Low watermark, the chunk after `job`'s last key in a transaction of
    /// its own, high watermark. `None`: the table was changed (a column
    /// added, dropped or retyped, the publication's column list or row
    /// filter changed) between the read and the high watermark; the rows
    /// would not be what the stream describes at the watermark, so they are
    /// dropped and the chunk is read again. `None` too when the read's
    /// snapshot counts as running a transaction the stream delivered
    /// already that changed the table ([`super::visibility`]): the chunk is
    /// read again after [`INVISIBLE_RETRY`].
    ///
    /// The read and the high watermark each take the table's `ACCESS SHARE`
    /// lock first (waiting at most [`LOCK_TIMEOUT`]): the read's snapshot,
    /// the description it reads with and the rows agree, and the
    /// description read in the high watermark's transaction is the table's
    /// at the watermark's commit (a schema change commits before it, seen,
    /// or after it).
    async fn read_next(&mut self, job: &TableJob) -> Result<Option<OpenChunk>, PgError> {
        let started = Instant::now();
        let chunk = u64::try_from(job.chunks_done).unwrap_or(0);
        self.marks += 1;
        let mark = |kind| Mark {
            snapshot: job.snapshot,
            table: job.table.clone(),
            chunk,
            kind,
            run: format!("{}-{}", self.run, self.marks),
        };
        let (low, high) = (mark(MarkKind::Low), mark(MarkKind::High));
        let database = self.database.clone();
        let publication = self.publication.clone();
        let local = self.local_subsets.clone();
        let limit = self.chunk_rows;
        let lock = lock_sql(&job.table);
        let delivered = &mut self.delivered;
        let conn = connection(&mut self.conn, &self.options).await?;
        emit(conn, &low).await?;
        let read = async {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; {lock}"
            )))
            .execute(&mut *conn)
            .await
            .map_err(|e| PgError::sql("starting a chunk read", e))?;
            let info =
                describe_published_table(conn, &database, &job.table, &publication, &local).await?;
            let key = choose_key(conn, &info.schema).await?;
            let rows = read_chunk(
                conn,
                &info,
                &key,
                job.last_key.as_deref(),
                job.filter.as_deref(),
                limit,
            )
            .await?;
            // The same snapshot as the rows': its running transactions.
            let running = running_xids(conn).await?;
            sqlx::raw_sql("COMMIT")
                .execute(&mut *conn)
                .await
                .map_err(|e| PgError::sql("ending a chunk read", e))?;
            // Everything recorded was delivered before the read: a
            // delivered transaction the snapshot counts as running
            // committed before the stream's position but was invisible.
            let invisible = delivered.still_running(&running, Some(info.schema.oid));
            if !invisible.is_empty() {
                return Ok(Err(invisible));
            }
            crate::failpoint::failpoint!("incremental::before_high_mark");
            sqlx::raw_sql(AssertSqlSafe(format!("BEGIN; {lock}")))
                .execute(&mut *conn)
                .await
                .map_err(|e| PgError::sql("starting a high watermark", e))?;
            let now =
                describe_published_table(conn, &database, &job.table, &publication, &local).await?;
            emit(conn, &high).await?;
            sqlx::raw_sql("COMMIT")
                .execute(&mut *conn)
                .await
                .map_err(|e| PgError::sql("committing a high watermark", e))?;
            Ok::<_, PgError>(Ok((info, now, key, rows)))
        };
        let (info, now, key, rows) = match read.await {
            Ok(Ok(r)) => r,
            Ok(Err(invisible)) => {
                eprintln!(
                    "DEBUG held back {invisible:?} delivered={}",
                    self.delivered.len()
                );
                let since = *self.held_back.get_or_insert_with(Instant::now);
                if since.elapsed() < INVISIBLE_RETRY {
                    tracing::info!(table = %job.table, chunk, ?invisible,
                        "the chunk's snapshot does not see transactions the stream delivered already \
                         (waiting for a synchronous standby?); reading it again once they are visible");
                } else {
                    tracing::debug!(table = %job.table, chunk, ?invisible, waiting_ms = since.elapsed().as_millis() as u64,
                        "chunk held back for delivered transactions not yet visible");
                }
                self.retry_at = Some(Instant::now() + INVISIBLE_RETRY);
                return Ok(None);
            }
            Err(e) => {
                // Leaves no transaction open behind a failed read.
                let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
                return Err(e);
            }
        };
        if now.schema != info.schema || now.row_filter != info.row_filter {
            tracing::info!(table = %job.table, chunk,
                "the table changed between the chunk's read and its high watermark; reading the chunk again");
            return Ok(None);
        }
        self.held_back = None;
        let last = (rows.rows.len() as u64) < limit;
        // How long the stream waited for the chunk.
        let read_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::debug!(table = %job.table, chunk, rows = rows.rows.len(), read_ms, "incremental snapshot chunk read");
        Ok(Some(OpenChunk {
            snapshot: job.snapshot,
            window: Window::new(info.schema.clone(), key.positions, rows.rows),
            table: info.schema,
            low,
            high,
            next_key: rows.last_key,
            last,
        }))
    }

    /// A change of the stream: collected when it is of the open chunk's
    /// table.
    pub fn observe(&mut self, change: &ChangeEvent) {
        if let Some(xid) = change.source.txid {
            self.delivered.record(xid, change.table.oid);
        }
        if let Some(open) = self.open.as_mut() {
            if change.table.name == open.table.name {
                open.window.observe(change);
            }
        }
    }

    /// A watermark message (prefix [`WATERMARK_PREFIX`]) of the
    /// transaction with commit LSN `commit_lsn`: the open chunk's high
    /// watermark releases its rows; anything else (its low watermark, the
    /// watermarks of an earlier run read again) releases nothing.
    pub fn on_mark(&mut self, content: &[u8], commit_lsn: Lsn) -> Option<Release> {
        let mark = Mark::parse(content)?;
        let open = self.open.as_ref()?;
        if mark == open.low {
            tracing::trace!(table = %open.table.name, chunk = mark.chunk, "low watermark");
            return None;
        }
        if mark != open.high {
            return None;
        }
        let open = self.open.take()?;
        let index = self
            .queue
            .iter()
            .position(|j| j.is(open.snapshot, &open.table.name))?;
        let job = self.queue.get_mut(index)?;
        let read = open.window.len();
        match open.window.close() {
            Closed::Reread => {
                tracing::info!(table = %job.table, chunk = mark.chunk,
                    "a change inside the chunk's window could not be matched to a key; reading the chunk again");
                None
            }
            Closed::Rows { rows, dropped } => {
                tracing::debug!(table = %job.table, chunk = mark.chunk, read, dropped, "incremental snapshot chunk released");
                let begin = job.chunks_done == 0;
                if let Some(k) = open.next_key {
                    job.last_key = Some(k);
                }
                job.chunks_done += 1;
                job.rows_done += rows.len() as i64;
                let end = open.last.then(|| u64::try_from(job.rows_done).unwrap_or(0));
                self.status.incremental_chunk(
                    &job.table,
                    job.snapshot,
                    rows.len() as u64,
                    job.last_key.clone(),
                    open.last,
                );
                self.pending.push_back(Durable {
                    after: commit_lsn,
                    job: job.clone(),
                    done: open.last,
                });
                let snapshot = job.snapshot;
                if open.last {
                    tracing::info!(table = %job.table, snapshot, rows = job.rows_done, "incremental snapshot of the table read");
                    self.queue.remove(index);
                }
                Some(Release {
                    table: open.table,
                    snapshot,
                    begin,
                    rows,
                    end,
                })
            }
        }
    }

    /// Stores the progress of every released chunk whose high watermark's
    /// transaction is durable.
    async fn store_durable(&mut self, acknowledged: Lsn) -> Result<(), PgError> {
        while self.pending.front().is_some_and(|d| acknowledged > d.after) {
            let conn = connection(&mut self.conn, &self.options).await?;
            let Some(d) = self.pending.front() else { break };
            self.store.advance(conn, &self.slot, &d.job, d.done).await?;
            self.pending.pop_front();
        }
        Ok(())
    }
}

/// Shows `job` as stored (or queued) in `status`.
pub(super) fn report(status: &SourceStatus, job: &TableJob) {
    let state = if job.paused {
        IncrementalState::Paused
    } else if job.chunks_done > 0 {
        IncrementalState::Running
    } else {
        IncrementalState::Pending
    };
    let mut p = IncrementalProgress::new(job.snapshot, state);
    p.chunks = u64::try_from(job.chunks_done).unwrap_or(0);
    p.rows = u64::try_from(job.rows_done).unwrap_or(0);
    p.last_key = job.last_key.clone();
    p.filter = job.filter.clone();
    status.incremental_snapshot(&job.table, p);
}

/// The connection in `slot`, connected first when there is none.
async fn connection<'c>(
    slot: &'c mut Option<PgConnection>,
    options: &PgConnectOptions,
) -> Result<&'c mut PgConnection, PgError> {
    if slot.is_none() {
        let conn = PgConnection::connect_with(options)
            .await
            .map_err(|e| PgError::sql("connecting for an incremental snapshot", e))?;
        *slot = Some(conn);
    }
    slot.as_mut()
        .ok_or_else(|| PgError::Protocol("no incremental snapshot connection".into()))
}

/// Commits a watermark into the WAL, in a transaction of its own.
async fn emit(conn: &mut PgConnection, mark: &Mark) -> Result<(), PgError> {
    sqlx::query("SELECT pg_catalog.pg_logical_emit_message(true, $1, $2)::pg_catalog.text")
        .bind(WATERMARK_PREFIX)
        .bind(mark.to_json())
        .execute(conn)
        .await
        .map_err(|e| PgError::sql("writing an incremental snapshot watermark", e))?;
    Ok(())
}
