//! [`Incremental`]: the incremental snapshots of a streaming source. The
//! source calls it between transactions to read the next chunk (low
//! watermark, read, high watermark), hands it every change of the stream,
//! every watermark and every signal, and lets it record progress once the
//! sinks made a chunk's reads durable.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc_core::{ChangeEvent, ErrorClass, Lsn, Row, TableName, TableSchema};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::chunks::{choose_key, read_chunk};
use super::progress::{ProgressStore, TableJob};
use super::request::{parse_signal, Mark, MarkKind, Signal};
use super::window::{Closed, Window};
use super::WATERMARK_PREFIX;
use crate::error::PgError;
use crate::snapshot::describe_published_table;
use crate::stream::PgSourceConfig;

/// Wait before trying again after a chunk failed on a transient error.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The chunk between its read and its high watermark.
#[derive(Debug)]
struct OpenChunk {
    table: Arc<TableSchema>,
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
    store: ProgressStore,
    slot: String,
    /// Whose column list and row filter the chunks apply.
    publication: String,
    database: String,
    options: PgConnectOptions,
    chunk_rows: u64,
    /// Told apart from the watermarks of an earlier run of this source.
    run: String,
    conn: Option<PgConnection>,
    tracked: HashSet<TableName>,
    /// Tables to snapshot, the one in progress first, with how far it got
    /// in memory (ahead of what is stored).
    queue: VecDeque<TableJob>,
    open: Option<OpenChunk>,
    pending: VecDeque<Durable>,
    retry_at: Option<Instant>,
    marks: u64,
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
        let queue: VecDeque<TableJob> = store.unfinished(conn, slot).await?.into();
        for job in &queue {
            tracing::info!(table = %job.table, snapshot = job.snapshot, chunks_done = job.chunks_done,
                "resuming an incremental snapshot");
        }
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Ok(Self {
            store,
            slot: slot.to_owned(),
            publication: cfg.publication.clone(),
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

    async fn connection(&mut self) -> Result<&mut PgConnection, PgError> {
        connection(&mut self.conn, &self.options).await
    }

    /// Between two transactions of the stream: stores the progress the
    /// sinks made durable (everything up to `acknowledged`), then reads
    /// the next chunk if none is open. Never fails: a transient error is
    /// logged and the chunk tried again a second later; a table that cannot
    /// be snapshotted is marked failed (with the reason) and skipped.
    pub async fn step(&mut self, acknowledged: Lsn) {
        if let Err(e) = self.store_durable(acknowledged).await {
            tracing::warn!(error = %cdc_core::error_chain(&e), "cannot record incremental snapshot progress; trying again");
            self.conn = None;
        }
        if self.open.is_some() || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let Some(job) = self.queue.front().cloned() else {
            return;
        };
        self.retry_at = None;
        let result = if self.tracked.contains(&job.table) {
            self.read_next(&job).await
        } else {
            Err(PgError::Setup(format!(
                "table {} is not in source.tables: its changes are not captured, so it cannot \
                 be snapshotted while streaming",
                job.table
            )))
        };
        match result {
            Ok(open) => self.open = Some(open),
            Err(e) if e.class() == ErrorClass::Retryable => {
                tracing::warn!(table = %job.table, error = %cdc_core::error_chain(&e),
                    "incremental snapshot chunk failed; trying again");
                self.conn = None;
                self.retry_at = Some(Instant::now() + RETRY_DELAY);
            }
            Err(e) => {
                let reason = cdc_core::error_chain(&e).to_string();
                tracing::error!(table = %job.table, snapshot = job.snapshot, "incremental snapshot of {} failed: {reason}", job.table);
                self.queue.pop_front();
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

    /// Low watermark, the chunk after `job`'s last key in a transaction of
    /// its own, high watermark.
    async fn read_next(&mut self, job: &TableJob) -> Result<OpenChunk, PgError> {
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
        let limit = self.chunk_rows;
        let conn = self.connection().await?;
        emit(conn, &low).await?;
        let read = async {
            sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *conn)
                .await
                .map_err(|e| PgError::sql("starting a chunk read", e))?;
            let info = describe_published_table(conn, &database, &job.table, &publication).await?;
            let key = choose_key(conn, &info.schema).await?;
            let rows = read_chunk(conn, &info, &key, job.last_key.as_deref(), limit).await?;
            sqlx::raw_sql("COMMIT")
                .execute(&mut *conn)
                .await
                .map_err(|e| PgError::sql("ending a chunk read", e))?;
            Ok::<_, PgError>((info, key, rows))
        };
        let (info, key, rows) = match read.await {
            Ok(r) => r,
            Err(e) => {
                // Leaves no transaction open behind a failed read.
                let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
                return Err(e);
            }
        };
        emit(conn, &high).await?;
        let last = (rows.rows.len() as u64) < limit;
        // How long the stream waited for the chunk.
        let read_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::debug!(table = %job.table, chunk, rows = rows.rows.len(), read_ms, "incremental snapshot chunk read");
        Ok(OpenChunk {
            table: info.schema,
            window: Window::new(key.positions, rows.rows),
            low,
            high,
            next_key: rows.last_key,
            last,
        })
    }

    /// A change of the stream: collected when it is of the open chunk's
    /// table.
    pub fn observe(&mut self, change: &ChangeEvent) {
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
        let job = self.queue.front_mut()?;
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
                self.pending.push_back(Durable {
                    after: commit_lsn,
                    job: job.clone(),
                    done: open.last,
                });
                let snapshot = job.snapshot;
                if open.last {
                    tracing::info!(table = %job.table, snapshot, rows = job.rows_done, "incremental snapshot of the table read");
                    self.queue.pop_front();
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

    /// A row inserted into the signal table: `id`, `kind` and `payload`
    /// (JSON text). A snapshot request is recorded and queued; a malformed
    /// signal is logged and ignored. Fails only when it cannot be recorded
    /// (then the stream is started over and the signal read again).
    pub async fn on_signal(
        &mut self,
        id: i64,
        kind: &str,
        payload: Option<&str>,
    ) -> Result<(), PgError> {
        let tables = match parse_signal(kind, payload) {
            Ok(Signal::Snapshot(tables)) => tables,
            Err(reason) => {
                tracing::warn!(signal = id, "ignoring signal {id}: {reason}");
                return Ok(());
            }
        };
        let (store, slot) = (self.store.clone(), self.slot.clone());
        let conn = self.connection().await?;
        let added = store.enqueue(conn, &slot, id, &tables).await?;
        for table in added {
            tracing::info!(table = %table, snapshot = id, "incremental snapshot requested");
            self.queue.push_back(TableJob {
                snapshot: id,
                table,
                last_key: None,
                chunks_done: 0,
                rows_done: 0,
            });
        }
        Ok(())
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
