//! The coordination tables through which any number of instances share
//! one snapshot: a job row per replication slot and a chunk row per chunk,
//! claimed with `FOR UPDATE SKIP LOCKED`, kept alive by heartbeats and
//! taken over when a heartbeat is older than the claim timeout.
//!
//! Every method is one statement (or one script), so it runs in its own
//! implicit transaction or, when the caller has begun one, as part of it;
//! not on the snapshot's read-only transaction, which cannot write. Schema
//! and table names are quoted; values are bind parameters.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cdc_core::{Lsn, TableName};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::plan::{ChunkBounds, ChunkPartition, PlannedChunk};
use crate::error::PgError;
use crate::ident::{quote_ident, quote_literal};

/// The schema of the coordination tables unless configured otherwise.
pub const DEFAULT_METADATA_SCHEMA: &str = "cdc";

/// First key of the advisory lock that serialises [`MetadataStore::ensure_schema`]
/// (the second is `hashtext(schema)`): the bytes `cdcm`.
const DDL_LOCK_CLASS: i32 = 0x6364_636d;

/// Where a snapshot job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// The coordinator is still inserting chunks: the chunk list may be
    /// incomplete.
    Planning,
    /// Every chunk is planned; workers claim and read them.
    Running,
    /// Every chunk was read and delivered.
    Done,
    /// Given up; the reason is in the coordinator's log.
    Failed,
}

impl JobState {
    /// The state as stored: `planning`, `running`, `done`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Planning => "planning",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    /// Parses the stored form.
    pub fn parse(text: &str) -> Option<JobState> {
        Some(match text {
            "planning" => JobState::Planning,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            _ => return None,
        })
    }
}

/// A snapshot job: one per replication slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The replication slot the snapshot belongs to (the job's key).
    pub slot_name: String,
    /// The exported snapshot readers import (`SET TRANSACTION SNAPSHOT`);
    /// replaced when a new coordinator re-exports.
    pub snapshot_name: Option<String>,
    /// The slot's consistent point: streaming starts here.
    pub snapshot_lsn: Option<Lsn>,
    /// Where the job is.
    pub state: JobState,
    /// The instance that holds the exported snapshot.
    pub coordinator: Option<String>,
    /// Tables with at least one chunk.
    pub tables_total: u32,
    /// Chunks planned.
    pub chunks_total: u32,
    /// Chunks marked done.
    pub chunks_done: u32,
    /// Rows of the chunks marked done.
    pub rows_done: u64,
    /// When the job row was created.
    pub created_at: SystemTime,
    /// Last change of the job row.
    pub updated_at: SystemTime,
    /// When the job reached `done` or `failed`.
    pub finished_at: Option<SystemTime>,
}

/// A chunk this instance has claimed and must read, heartbeat and mark done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedChunk {
    /// The chunk row's id (for [`MetadataStore::heartbeat`] and
    /// [`MetadataStore::mark_done`]).
    pub id: i64,
    /// The table the chunk belongs to.
    pub table: TableName,
    /// Position of the chunk within its table's plan, from 0.
    pub chunk_no: u32,
    /// Which rows to read.
    pub bounds: ChunkBounds,
    /// For a partitioned table: the partition `bounds` apply to.
    pub partition: Option<ChunkPartition>,
    /// How many times the chunk has been claimed, this claim included.
    pub attempts: u32,
    /// How many times the chunk has been handed out to be read, this
    /// time included (1 unless an earlier claimant stopped heartbeating).
    pub reads: u32,
}

/// Progress of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableProgress {
    /// The table.
    pub table: TableName,
    /// Chunks planned.
    pub chunks_total: u64,
    /// Chunks marked done.
    pub chunks_done: u64,
    /// Rows of the chunks marked done.
    pub rows: u64,
}

/// Chunks of one table that one instance holds (see [`MetadataStore::claims`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The table.
    pub table: TableName,
    /// The instance holding the chunks (`snapshot.instance_id`).
    pub instance: String,
    /// How many chunks of the table it holds.
    pub chunks: u64,
    /// How long ago the oldest of its heartbeats for these chunks was.
    pub heartbeat_age: Duration,
}

/// Progress of a job, per table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    /// One entry per table with chunks, ordered by schema and name.
    pub tables: Vec<TableProgress>,
}

impl Progress {
    /// `(chunks_done, chunks_total, rows)` summed over every table.
    pub fn totals(&self) -> (u64, u64, u64) {
        self.tables.iter().fold((0, 0, 0), |(d, t, r), p| {
            (d + p.chunks_done, t + p.chunks_total, r + p.rows)
        })
    }
}

/// The coordination tables `snapshot_jobs` and `snapshot_chunks` in one
/// schema of the source database.
///
/// Methods take a connection that is not in the snapshot's read-only
/// transaction; each is a single statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataStore {
    schema: String,
}

impl Default for MetadataStore {
    /// The store in schema [`DEFAULT_METADATA_SCHEMA`].
    fn default() -> Self {
        Self::new(DEFAULT_METADATA_SCHEMA)
    }
}

/// Columns a chunk row is returned with, `bounds` decoded by the server so
/// no JSON parser is needed here. `{t}` is the chunk table's alias.
const CHUNK_COLUMNS: &str = "\
{t}.id, {t}.table_schema, {t}.table_name, {t}.chunk_no, {t}.attempts, {t}.reads,
{t}.bounds->>'kind' AS kind,
({t}.bounds->>'start_block')::pg_catalog.int8 AS start_block,
({t}.bounds->>'end_block')::pg_catalog.int8 AS end_block,
{t}.bounds->>'column' AS key_column,
CASE WHEN pg_catalog.jsonb_typeof({t}.bounds->'start') = 'number'
     THEN ({t}.bounds->>'start')::pg_catalog.int8 END AS int_start,
CASE WHEN pg_catalog.jsonb_typeof({t}.bounds->'end') = 'number'
     THEN ({t}.bounds->>'end')::pg_catalog.int8 END AS int_end,
CASE WHEN pg_catalog.jsonb_typeof({t}.bounds->'columns') = 'array'
     THEN ARRAY(SELECT pg_catalog.jsonb_array_elements_text({t}.bounds->'columns')) END AS key_columns,
CASE WHEN pg_catalog.jsonb_typeof({t}.bounds->'start') = 'array'
     THEN ARRAY(SELECT pg_catalog.jsonb_array_elements_text({t}.bounds->'start')) END AS key_start,
CASE WHEN pg_catalog.jsonb_typeof({t}.bounds->'end') = 'array'
     THEN ARRAY(SELECT pg_catalog.jsonb_array_elements_text({t}.bounds->'end')) END AS key_end,
{t}.bounds->'partition'->>'schema' AS partition_schema,
{t}.bounds->'partition'->>'name' AS partition_name,
({t}.bounds->'partition'->>'last')::pg_catalog.bool AS partition_last";

/// Columns a job row is returned with.
const JOB_COLUMNS: &str = "\
slot_name, snapshot_name, snapshot_lsn::pg_catalog.text AS snapshot_lsn, state, coordinator,
tables_total, chunks_total, chunks_done, rows_done,
(EXTRACT(epoch FROM created_at) * 1000000)::pg_catalog.int8 AS created_us,
(EXTRACT(epoch FROM updated_at) * 1000000)::pg_catalog.int8 AS updated_us,
(EXTRACT(epoch FROM finished_at) * 1000000)::pg_catalog.int8 AS finished_us";

impl MetadataStore {
    /// A store in `schema` (taken verbatim, quoted in SQL).
    pub fn new(schema: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
        }
    }

    /// The schema the tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    fn jobs(&self) -> String {
        format!("{}.\"snapshot_jobs\"", quote_ident(&self.schema))
    }

    fn chunks(&self) -> String {
        format!("{}.\"snapshot_chunks\"", quote_ident(&self.schema))
    }

    fn ctx(&self, what: &str) -> impl Fn(sqlx::Error) -> PgError {
        let context = format!("snapshot metadata ({}): {what}", self.schema);
        move |e| PgError::sql(context.clone(), e)
    }

    /// Creates the schema and both tables when they are missing. Safe to
    /// call from several instances at once (serialised by an advisory
    /// lock); one script, so it also works inside the caller's transaction.
    /// Needs the `CREATE` privilege on the database the first time.
    pub async fn ensure_schema(&self, conn: &mut PgConnection) -> Result<(), PgError> {
        let jobs = self.jobs();
        let chunks = self.chunks();
        // PostgreSQL checks the CREATE privilege before it looks at
        // `IF NOT EXISTS`: skip the DDL when the tables are there, so a
        // role without CREATE on the database can run once they exist.
        let exists: bool = sqlx::query_scalar(
            "SELECT pg_catalog.to_regclass($1) IS NOT NULL AND pg_catalog.to_regclass($2) IS NOT NULL",
        )
        .bind(&jobs)
        .bind(&chunks)
        .fetch_one(&mut *conn)
        .await
        .map_err(self.ctx("looking for the coordination tables"))?;
        if exists {
            return Ok(());
        }
        let err = self.ctx("creating the coordination tables");
        let schema = quote_ident(&self.schema);
        let lock_key = quote_literal(&self.schema);
        // One simple-query script runs as one transaction: the advisory
        // lock is held until every statement is done.
        let ddl = format!(
            r#"SELECT pg_catalog.pg_advisory_xact_lock({DDL_LOCK_CLASS}, pg_catalog.hashtext({lock_key}));
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {jobs} (
    slot_name text PRIMARY KEY,
    snapshot_name text,
    snapshot_lsn pg_catalog.pg_lsn,
    state text NOT NULL DEFAULT 'planning'
        CHECK (state IN ('planning', 'running', 'done', 'failed')),
    coordinator text,
    tables_total int NOT NULL DEFAULT 0,
    chunks_total int NOT NULL DEFAULT 0,
    chunks_done int NOT NULL DEFAULT 0,
    rows_done bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finished_at timestamptz
);
CREATE TABLE IF NOT EXISTS {chunks} (
    id bigserial PRIMARY KEY,
    slot_name text NOT NULL REFERENCES {jobs} (slot_name) ON DELETE CASCADE,
    table_schema text NOT NULL,
    table_name text NOT NULL,
    chunk_no int NOT NULL,
    strategy text NOT NULL,
    bounds jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'in_progress', 'done')),
    claimed_by text,
    claimed_at timestamptz,
    heartbeat_at timestamptz,
    "rows" bigint,
    attempts int NOT NULL DEFAULT 0,
    reads int NOT NULL DEFAULT 0,
    done_at timestamptz,
    UNIQUE (slot_name, table_schema, table_name, chunk_no)
);
CREATE INDEX IF NOT EXISTS "snapshot_chunks_open" ON {chunks} (slot_name, id)
    WHERE status <> 'done';"#
        );
        sqlx::raw_sql(AssertSqlSafe(ddl))
            .execute(&mut *conn)
            .await
            .map_err(&err)?;
        Ok(())
    }

    /// The job of `slot`, if there is one.
    pub async fn job(&self, conn: &mut PgConnection, slot: &str) -> Result<Option<Job>, PgError> {
        let err = self.ctx("reading the job");
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM {} WHERE slot_name = $1",
            self.jobs()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(slot)
            .fetch_optional(&mut *conn)
            .await
            .map_err(&err)?;
        row.map(|r| decode_job(&r)).transpose()
    }

    /// Creates the job of `slot` in state `planning`, or, when it exists,
    /// replaces its snapshot name, snapshot LSN and coordinator (state and
    /// counters are kept). Returns the job as stored.
    pub async fn create_job(
        &self,
        conn: &mut PgConnection,
        slot: &str,
        snapshot_name: &str,
        snapshot_lsn: Lsn,
        coordinator: &str,
    ) -> Result<Job, PgError> {
        let err = self.ctx("creating the job");
        let sql = format!(
            "INSERT INTO {} AS j (slot_name, snapshot_name, snapshot_lsn, coordinator)
             VALUES ($1, $2, $3::pg_catalog.pg_lsn, $4)
             ON CONFLICT (slot_name) DO UPDATE
             SET snapshot_name = excluded.snapshot_name, snapshot_lsn = excluded.snapshot_lsn,
                 coordinator = excluded.coordinator, updated_at = pg_catalog.now()
             RETURNING {JOB_COLUMNS}",
            self.jobs()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(slot)
            .bind(snapshot_name)
            .bind(snapshot_lsn.to_string())
            .bind(coordinator)
            .fetch_one(&mut *conn)
            .await
            .map_err(&err)?;
        decode_job(&row)
    }

    /// Records a newly exported snapshot and the coordinator holding it
    /// (after the previous coordinator died with its snapshot). `false`
    /// when `slot` has no job.
    pub async fn set_snapshot(
        &self,
        conn: &mut PgConnection,
        slot: &str,
        snapshot_name: &str,
        coordinator: &str,
    ) -> Result<bool, PgError> {
        let err = self.ctx("recording the exported snapshot");
        let sql = format!(
            "UPDATE {} SET snapshot_name = $2, coordinator = $3, updated_at = pg_catalog.now()
             WHERE slot_name = $1",
            self.jobs()
        );
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(slot)
            .bind(snapshot_name)
            .bind(coordinator)
            .execute(&mut *conn)
            .await
            .map_err(&err)?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves the job to `state`; `finished_at` is set for `done` and
    /// `failed` and cleared otherwise. `false` when `slot` has no job.
    pub async fn set_job_state(
        &self,
        conn: &mut PgConnection,
        slot: &str,
        state: JobState,
    ) -> Result<bool, PgError> {
        let err = self.ctx("changing the job state");
        let sql = format!(
            "UPDATE {} SET state = $2, updated_at = pg_catalog.now(),
                 finished_at = CASE WHEN $2 IN ('done', 'failed') THEN pg_catalog.now() END
             WHERE slot_name = $1",
            self.jobs()
        );
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(slot)
            .bind(state.as_str())
            .execute(&mut *conn)
            .await
            .map_err(&err)?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes the job of `slot` and its chunks. `false` when there was none.
    pub async fn delete_job(&self, conn: &mut PgConnection, slot: &str) -> Result<bool, PgError> {
        let err = self.ctx("deleting the job");
        let sql = format!("DELETE FROM {} WHERE slot_name = $1", self.jobs());
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(slot)
            .execute(&mut *conn)
            .await
            .map_err(&err)?;
        Ok(done.rows_affected() == 1)
    }

    /// Inserts the planned chunks of `table` as `pending`, numbered from 0
    /// in the order given. Idempotent: chunk numbers already present are
    /// left as they are (so a coordinator that died while planning can plan
    /// again). Updates the job's `chunks_total` and `tables_total`. The job
    /// must exist. Returns how many chunks were new.
    pub async fn insert_chunks(
        &self,
        conn: &mut PgConnection,
        slot: &str,
        table: &TableName,
        chunks: &[ChunkBounds],
    ) -> Result<u64, PgError> {
        let planned: Vec<PlannedChunk> = chunks.iter().cloned().map(PlannedChunk::from).collect();
        self.insert_planned_chunks(conn, slot, table, &planned)
            .await
    }

    /// [`insert_chunks`](Self::insert_chunks) of chunks that may each read
    /// a partition of `table`.
    pub async fn insert_planned_chunks(
        &self,
        conn: &mut PgConnection,
        slot: &str,
        table: &TableName,
        chunks: &[PlannedChunk],
    ) -> Result<u64, PgError> {
        let err = self.ctx("inserting chunks");
        let numbers = (0..chunks.len())
            .map(|n| {
                i32::try_from(n).map_err(|_| {
                    PgError::Setup(format!("{table}: too many chunks ({})", chunks.len()))
                })
            })
            .collect::<Result<Vec<i32>, PgError>>()?;
        let strategies: Vec<&str> = chunks.iter().map(|c| c.bounds.strategy_name()).collect();
        let bounds: Vec<String> = chunks.iter().map(PlannedChunk::to_json).collect();
        // One statement, so it composes with a transaction of the caller.
        // The subqueries see the chunk table as it was before the insert:
        // the new rows are added from `n`.
        let sql = format!(
            "WITH ins AS (
                 INSERT INTO {chunks} (slot_name, table_schema, table_name, chunk_no, strategy, bounds)
                 SELECT $1, $2, $3, u.n, u.s, u.b::pg_catalog.jsonb
                 FROM ROWS FROM (pg_catalog.unnest($4::int4[]), pg_catalog.unnest($5::text[]), pg_catalog.unnest($6::text[])) AS u(n, s, b)
                 ON CONFLICT (slot_name, table_schema, table_name, chunk_no) DO NOTHING
                 RETURNING 1),
             n AS (SELECT pg_catalog.count(*) AS c FROM ins)
             UPDATE {jobs} j SET
                 chunks_total = (SELECT pg_catalog.count(*) FROM {chunks} c WHERE c.slot_name = $1) + n.c,
                 tables_total =
                     (SELECT pg_catalog.count(DISTINCT (c.table_schema, c.table_name)) FROM {chunks} c
                      WHERE c.slot_name = $1 AND (c.table_schema, c.table_name) <> ($2, $3))
                     + CASE WHEN n.c > 0 OR EXISTS (
                                SELECT 1 FROM {chunks} c
                                WHERE c.slot_name = $1 AND c.table_schema = $2 AND c.table_name = $3)
                            THEN 1 ELSE 0 END,
                 updated_at = pg_catalog.now()
             FROM n WHERE j.slot_name = $1
             RETURNING n.c",
            jobs = self.jobs(),
            chunks = self.chunks()
        );
        let inserted: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(slot)
            .bind(&table.schema)
            .bind(&table.name)
            .bind(numbers)
            .bind(strategies)
            .bind(bounds)
            .fetch_optional(&mut *conn)
            .await
            .map_err(&err)?;
        Ok(inserted.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    /// Claims the next chunk of `slot` for `instance_id`: the lowest-id
    /// chunk that is pending, or in progress with a heartbeat older than
    /// `claim_timeout` (its claimant is taken to be dead). One statement;
    /// concurrent claimers skip each other's locked rows, so each gets a
    /// different chunk. `None` when nothing is left to claim.
    pub async fn claim_chunk(
        &self,
        conn: &mut PgConnection,
        slot: &str,
        instance_id: &str,
        claim_timeout: Duration,
    ) -> Result<Option<ClaimedChunk>, PgError> {
        let err = self.ctx("claiming a chunk");
        let chunks = self.chunks();
        let sql = format!(
            "UPDATE {chunks} AS c
             SET status = 'in_progress', claimed_by = $2, claimed_at = pg_catalog.now(),
                 heartbeat_at = pg_catalog.now(), attempts = c.attempts + 1, reads = c.reads + 1
             WHERE c.id = (
                 SELECT o.id FROM {chunks} o
                 WHERE o.slot_name = $1
                   AND (o.status = 'pending'
                        OR (o.status = 'in_progress'
                            AND o.heartbeat_at < pg_catalog.now() - $3::int8 * interval '1 microsecond'))
                 ORDER BY o.id
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED)
             RETURNING {}",
            CHUNK_COLUMNS.replace("{t}", "c")
        );
        let timeout_us = i64::try_from(claim_timeout.as_micros()).unwrap_or(i64::MAX);
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(slot)
            .bind(instance_id)
            .bind(timeout_us)
            .fetch_optional(&mut *conn)
            .await
            .map_err(&err)?;
        row.map(|r| decode_chunk(&r)).transpose()
    }

    /// Renews the claim `attempt` of chunk `chunk_id`. `false` when the
    /// chunk is no longer in progress under that claim (another reader,
    /// of this instance or another, claimed it again): the caller must
    /// stop, drop what it read, and must not mark it done.
    pub async fn heartbeat(
        &self,
        conn: &mut PgConnection,
        chunk_id: i64,
        instance_id: &str,
        attempt: u32,
    ) -> Result<bool, PgError> {
        self.update_held_chunk(
            conn,
            chunk_id,
            instance_id,
            attempt,
            "heartbeat_at = pg_catalog.now()",
            "renewing a chunk claim",
        )
        .await
    }

    /// Gives chunk `chunk_id` back (pending, unclaimed) so another reader
    /// can claim it at once, e.g. after a failed read. `false` when the
    /// claim `attempt` of `instance_id` no longer held it.
    pub async fn release_chunk(
        &self,
        conn: &mut PgConnection,
        chunk_id: i64,
        instance_id: &str,
        attempt: u32,
    ) -> Result<bool, PgError> {
        self.update_held_chunk(
            conn,
            chunk_id,
            instance_id,
            attempt,
            "status = 'pending', claimed_by = NULL, claimed_at = NULL, heartbeat_at = NULL",
            "releasing a chunk claim",
        )
        .await
    }

    /// Starts `table` over after it was found rewritten under the
    /// exported snapshot: every chunk of it (done ones too: a rewrite moves
    /// rows between blocks) goes back to pending and unclaimed (so no
    /// claim held on one can mark it done any more), the job's counters
    /// lose what those chunks had counted, and the job's snapshot name is
    /// cleared, so that readers wait and the coordinator exports a new
    /// snapshot, taken after the rewrite. One statement, so all of it or
    /// nothing. Returns how many chunks the table has.
    ///
    /// `None`, changing nothing, when the job is not running, or when its
    /// snapshot is already cleared and no chunk of the table is done: the
    /// table was started over since the last export (by another reader
    /// that found the same rewrite, after it had committed: the claim this
    /// caller read under is no longer held, and the next export comes after
    /// that rewrite too).
    pub async fn reread_table(
        &self,
        conn: &mut PgConnection,
        slot: &str,
        table: &TableName,
    ) -> Result<Option<u64>, PgError> {
        let err = self.ctx("starting a rewritten table over");
        // Chunk rows are locked before the job row, in id order, as
        // `mark_done` and the claims do: no deadlock with them. The counts
        // taken off the job are those of the chunks as locked, so two
        // callers at once take each chunk's count off once.
        let sql = format!(
            "WITH j0 AS (
                 SELECT slot_name FROM {jobs}
                 WHERE slot_name = $1 AND state = 'running'
                   AND (snapshot_name IS NOT NULL
                        OR EXISTS (SELECT 1 FROM {chunks} d
                                   WHERE d.slot_name = $1 AND d.table_schema = $2
                                     AND d.table_name = $3 AND d.status = 'done'))),
             r AS (
                 SELECT c.id, c.status, c.\"rows\" FROM {chunks} c
                 WHERE c.slot_name = (SELECT slot_name FROM j0)
                   AND c.table_schema = $2 AND c.table_name = $3
                 ORDER BY c.id
                 FOR UPDATE),
             u AS (
                 UPDATE {chunks} c
                 SET status = 'pending', claimed_by = NULL, claimed_at = NULL,
                     heartbeat_at = NULL, \"rows\" = NULL, done_at = NULL,
                     bounds = c.bounds - 'read_from'
                 FROM r WHERE c.id = r.id
                 RETURNING c.id),
             j AS (
                 UPDATE {jobs} j
                 SET snapshot_name = NULL,
                     chunks_done = j.chunks_done
                         - (SELECT pg_catalog.count(*) FROM r WHERE r.status = 'done')::int,
                     rows_done = j.rows_done
                         - (SELECT COALESCE(pg_catalog.sum(r.\"rows\"), 0) FROM r WHERE r.status = 'done')::int8,
                     updated_at = pg_catalog.now()
                 WHERE j.slot_name = (SELECT slot_name FROM j0) AND j.state = 'running'
                 RETURNING 1)
             SELECT (SELECT pg_catalog.count(*) FROM u)::pg_catalog.int8 AS chunks,
                    (SELECT pg_catalog.count(*) FROM j)::pg_catalog.int8 AS jobs",
            jobs = self.jobs(),
            chunks = self.chunks()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(slot)
            .bind(&table.schema)
            .bind(&table.name)
            .fetch_one(&mut *conn)
            .await
            .map_err(&err)?;
        let chunks: i64 = row.try_get("chunks").map_err(&err)?;
        let jobs: i64 = row.try_get("jobs").map_err(&err)?;
        Ok((jobs == 1).then(|| u64::try_from(chunks).unwrap_or(0)))
    }

    /// Applies `set` (a fixed SQL `SET` list) to chunk `chunk_id` if
    /// `instance_id` still holds it in progress under claim `attempt`;
    /// `true` when it did.
    async fn update_held_chunk(
        &self,
        conn: &mut PgConnection,
        chunk_id: i64,
        instance_id: &str,
        attempt: u32,
        set: &'static str,
        what: &'static str,
    ) -> Result<bool, PgError> {
        let err = self.ctx(what);
        let sql = format!(
            "UPDATE {} SET {set}
             WHERE id = $1 AND claimed_by = $2 AND attempts = $3 AND status = 'in_progress'",
            self.chunks()
        );
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(chunk_id)
            .bind(instance_id)
            .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
            .execute(&mut *conn)
            .await
            .map_err(&err)?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks chunk `chunk_id` done with `rows` rows, adding them to the
    /// job's counters, but only while `instance_id` still holds the claim
    /// `attempt`. `true` when the chunk is done under that claim (also when
    /// it already was: a retried call counts once); `false` when the chunk
    /// was claimed again since (by another instance or another reader of
    /// this one). `read_from`: the table's files the chunk was read from
    /// ([`crate::snapshot::HeapFiles::files`]), kept with the chunk for
    /// [`MetadataStore::read_from_differs`].
    pub async fn mark_done(
        &self,
        conn: &mut PgConnection,
        chunk_id: i64,
        instance_id: &str,
        attempt: u32,
        rows: u64,
        read_from: Option<&str>,
    ) -> Result<bool, PgError> {
        let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
        let err = self.ctx("marking a chunk done");
        let rows = i64::try_from(rows).unwrap_or(i64::MAX);
        let sql = format!(
            "WITH d AS (
                 UPDATE {chunks}
                 SET status = 'done', \"rows\" = $3, done_at = pg_catalog.now(),
                     heartbeat_at = pg_catalog.now(),
                     bounds = CASE WHEN $5::text IS NULL THEN bounds
                                   ELSE bounds || pg_catalog.jsonb_build_object('read_from', $5::text) END
                 WHERE id = $1 AND claimed_by = $2 AND attempts = $4 AND status = 'in_progress'
                 RETURNING slot_name)
             UPDATE {jobs} j
             SET chunks_done = j.chunks_done + 1, rows_done = j.rows_done + $3,
                 updated_at = pg_catalog.now()
             FROM d WHERE j.slot_name = d.slot_name
             RETURNING 1",
            chunks = self.chunks(),
            jobs = self.jobs()
        );
        let marked = sqlx::query(AssertSqlSafe(sql))
            .bind(chunk_id)
            .bind(instance_id)
            .bind(rows)
            .bind(attempt)
            .bind(read_from)
            .fetch_optional(&mut *conn)
            .await
            .map_err(&err)?;
        if marked.is_some() {
            return Ok(true);
        }
        let sql = format!(
            "SELECT status = 'done' AND claimed_by = $2 AND attempts = $3 FROM {} WHERE id = $1",
            self.chunks()
        );
        let already: Option<Option<bool>> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(chunk_id)
            .bind(instance_id)
            .bind(attempt)
            .fetch_optional(&mut *conn)
            .await
            .map_err(&err)?;
        Ok(already.flatten().unwrap_or(false))
    }

    /// `true` when the done chunks of the table of chunk `chunk_id` were
    /// read from different files of it (recorded by
    /// [`mark_done`](Self::mark_done)): a rewrite came between their reads,
    /// each under a snapshot that saw the file it read (a new export
    /// between them, taken after the rewrite), so the rows moved between
    /// them may be missed; the table must be read again
    /// ([`reread_table`](Self::reread_table)). Called after each chunk is
    /// marked done, so of two chunks marked at once the later call sees
    /// both.
    pub async fn read_from_differs(
        &self,
        conn: &mut PgConnection,
        chunk_id: i64,
    ) -> Result<bool, PgError> {
        let err = self.ctx("comparing the files chunks were read from");
        let sql = format!(
            "SELECT pg_catalog.count(DISTINCT o.bounds->>'read_from') > 1
             FROM {chunks} c
             JOIN {chunks} o ON o.slot_name = c.slot_name AND o.table_schema = c.table_schema
                 AND o.table_name = c.table_name
             WHERE c.id = $1 AND o.status = 'done'",
            chunks = self.chunks()
        );
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(chunk_id)
            .fetch_one(&mut *conn)
            .await
            .map_err(&err)
    }

    /// Chunks and rows per table of `slot`'s job.
    pub async fn progress(&self, conn: &mut PgConnection, slot: &str) -> Result<Progress, PgError> {
        let err = self.ctx("reading progress");
        let sql = format!(
            "SELECT table_schema, table_name,
                    pg_catalog.count(*) AS chunks_total,
                    pg_catalog.count(*) FILTER (WHERE status = 'done') AS chunks_done,
                    COALESCE(pg_catalog.sum(\"rows\") FILTER (WHERE status = 'done'), 0)::pg_catalog.int8 AS done_rows
             FROM {} WHERE slot_name = $1
             GROUP BY table_schema, table_name
             ORDER BY table_schema, table_name",
            self.chunks()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(slot)
            .fetch_all(&mut *conn)
            .await
            .map_err(&err)?;
        let mut tables = Vec::with_capacity(rows.len());
        for row in rows {
            let count = |name: &str| -> Result<u64, PgError> {
                let v: i64 = row.try_get(name).map_err(&err)?;
                Ok(u64::try_from(v).unwrap_or(0))
            };
            tables.push(TableProgress {
                table: TableName::new(
                    row.try_get::<String, _>("table_schema").map_err(&err)?,
                    row.try_get::<String, _>("table_name").map_err(&err)?,
                ),
                chunks_total: count("chunks_total")?,
                chunks_done: count("chunks_done")?,
                rows: count("done_rows")?,
            });
        }
        Ok(Progress { tables })
    }

    /// `true` when both coordination tables exist in this store's schema.
    pub async fn exists(&self, conn: &mut PgConnection) -> Result<bool, PgError> {
        sqlx::query_scalar(
            "SELECT pg_catalog.to_regclass($1) IS NOT NULL AND pg_catalog.to_regclass($2) IS NOT NULL",
        )
        .bind(self.jobs())
        .bind(self.chunks())
        .fetch_one(&mut *conn)
        .await
        .map_err(self.ctx("looking for the coordination tables"))
    }

    /// The chunks of `slot`'s job that instances hold right now: per table
    /// and instance, how many chunks and how long ago the oldest of their
    /// heartbeats was.
    pub async fn claims(&self, conn: &mut PgConnection, slot: &str) -> Result<Vec<Claim>, PgError> {
        let err = self.ctx("reading claims");
        let sql = format!(
            "SELECT table_schema, table_name, COALESCE(claimed_by, '') AS instance,
                    pg_catalog.count(*) AS chunks,
                    COALESCE(EXTRACT(epoch FROM pg_catalog.now()
                        - pg_catalog.min(COALESCE(heartbeat_at, claimed_at))), 0)::pg_catalog.float8
                        AS heartbeat_age
             FROM {} WHERE slot_name = $1 AND status = 'in_progress'
             GROUP BY table_schema, table_name, claimed_by
             ORDER BY table_schema, table_name, claimed_by",
            self.chunks()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(slot)
            .fetch_all(&mut *conn)
            .await
            .map_err(&err)?;
        let mut claims = Vec::with_capacity(rows.len());
        for row in rows {
            let chunks: i64 = row.try_get("chunks").map_err(&err)?;
            let age: f64 = row.try_get("heartbeat_age").map_err(&err)?;
            claims.push(Claim {
                table: TableName::new(
                    row.try_get::<String, _>("table_schema").map_err(&err)?,
                    row.try_get::<String, _>("table_name").map_err(&err)?,
                ),
                instance: row.try_get("instance").map_err(&err)?,
                chunks: u64::try_from(chunks).unwrap_or(0),
                heartbeat_age: Duration::try_from_secs_f64(age.max(0.0)).unwrap_or_default(),
            });
        }
        Ok(claims)
    }

    /// `true` when the job of `slot` is past planning (`running` or `done`)
    /// and every one of its chunks is done. `false` while planning (the
    /// chunk list may be incomplete) and when there is no job.
    pub async fn all_done(&self, conn: &mut PgConnection, slot: &str) -> Result<bool, PgError> {
        let err = self.ctx("checking for completion");
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {jobs} WHERE slot_name = $1 AND state IN ('running', 'done'))
                AND NOT EXISTS (SELECT 1 FROM {chunks} WHERE slot_name = $1 AND status <> 'done')",
            jobs = self.jobs(),
            chunks = self.chunks()
        );
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(slot)
            .fetch_one(&mut *conn)
            .await
            .map_err(&err)
    }
}

fn bad_row(what: impl std::fmt::Display) -> PgError {
    PgError::Protocol(format!("snapshot metadata: {what}"))
}

fn micros_to_time(us: i64) -> SystemTime {
    if us >= 0 {
        UNIX_EPOCH + Duration::from_micros(us.unsigned_abs())
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_micros(us.unsigned_abs()))
            .unwrap_or(UNIX_EPOCH)
    }
}

fn decode_job(row: &PgRow) -> Result<Job, PgError> {
    let err = |e| PgError::sql("snapshot metadata: decoding a job row", e);
    let count = |name: &str| -> Result<u32, PgError> {
        let v: i32 = row.try_get(name).map_err(err)?;
        u32::try_from(v).map_err(|_| bad_row(format!("negative {name} {v}")))
    };
    let state: String = row.try_get("state").map_err(err)?;
    let lsn: Option<String> = row.try_get("snapshot_lsn").map_err(err)?;
    let rows_done: i64 = row.try_get("rows_done").map_err(err)?;
    Ok(Job {
        slot_name: row.try_get("slot_name").map_err(err)?,
        snapshot_name: row.try_get("snapshot_name").map_err(err)?,
        snapshot_lsn: lsn.map(|t| t.parse::<Lsn>().map_err(bad_row)).transpose()?,
        state: JobState::parse(&state)
            .ok_or_else(|| bad_row(format!("unknown state {state:?}")))?,
        coordinator: row.try_get("coordinator").map_err(err)?,
        tables_total: count("tables_total")?,
        chunks_total: count("chunks_total")?,
        chunks_done: count("chunks_done")?,
        rows_done: u64::try_from(rows_done).unwrap_or(0),
        created_at: micros_to_time(row.try_get("created_us").map_err(err)?),
        updated_at: micros_to_time(row.try_get("updated_us").map_err(err)?),
        finished_at: row
            .try_get::<Option<i64>, _>("finished_us")
            .map_err(err)?
            .map(micros_to_time),
    })
}

fn decode_chunk(row: &PgRow) -> Result<ClaimedChunk, PgError> {
    let err = |e| PgError::sql("snapshot metadata: decoding a chunk row", e);
    let id: i64 = row.try_get("id").map_err(err)?;
    let small = |name: &str| -> Result<u32, PgError> {
        let v: i32 = row.try_get(name).map_err(err)?;
        u32::try_from(v).map_err(|_| bad_row(format!("chunk {id}: negative {name} {v}")))
    };
    let block = |v: Option<i64>| -> Result<Option<u32>, PgError> {
        v.map(|b| {
            u32::try_from(b).map_err(|_| bad_row(format!("chunk {id}: block {b} out of range")))
        })
        .transpose()
    };
    let kind: Option<String> = row.try_get("kind").map_err(err)?;
    let bounds = match kind.as_deref() {
        Some("ctid") => ChunkBounds::Ctid {
            start_block: block(row.try_get("start_block").map_err(err)?)?
                .ok_or_else(|| bad_row(format!("chunk {id}: ctid bounds without start_block")))?,
            end_block: block(row.try_get("end_block").map_err(err)?)?,
        },
        Some("int_key") => ChunkBounds::IntKey {
            column: row
                .try_get::<Option<String>, _>("key_column")
                .map_err(err)?
                .ok_or_else(|| bad_row(format!("chunk {id}: int_key bounds without column")))?,
            start: row.try_get("int_start").map_err(err)?,
            end: row.try_get("int_end").map_err(err)?,
        },
        Some("keyset") => ChunkBounds::Keyset {
            columns: row
                .try_get::<Option<Vec<String>>, _>("key_columns")
                .map_err(err)?
                .ok_or_else(|| bad_row(format!("chunk {id}: keyset bounds without columns")))?,
            start: row.try_get("key_start").map_err(err)?,
            end: row.try_get("key_end").map_err(err)?,
        },
        other => {
            return Err(bad_row(format!(
                "chunk {id}: unknown bounds kind {other:?}"
            )))
        }
    };
    let partition_schema: Option<String> = row.try_get("partition_schema").map_err(err)?;
    let partition_name: Option<String> = row.try_get("partition_name").map_err(err)?;
    let partition = match (partition_schema, partition_name) {
        (Some(schema), Some(name)) => Some(ChunkPartition {
            table: TableName::new(schema, name),
            last: row
                .try_get::<Option<bool>, _>("partition_last")
                .map_err(err)?
                .unwrap_or(false),
        }),
        (None, None) => None,
        _ => {
            return Err(bad_row(format!(
                "chunk {id}: partition without schema or name"
            )))
        }
    };
    Ok(ClaimedChunk {
        id,
        table: TableName::new(
            row.try_get::<String, _>("table_schema").map_err(err)?,
            row.try_get::<String, _>("table_name").map_err(err)?,
        ),
        chunk_no: small("chunk_no")?,
        bounds,
        partition,
        attempts: small("attempts")?,
        reads: small("reads")?,
    })
}
