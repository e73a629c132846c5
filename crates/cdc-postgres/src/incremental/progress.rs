//! The metadata tables of incremental snapshots, in the metadata schema:
//! `signals` (rows any SQL client inserts to ask for something; the table
//! is in the publication, so the source reads them from the stream) and
//! `incremental_snapshots` (one row per slot, snapshot and table: how far
//! it got, advanced only once the chunk's reads are durable; its state:
//! `pending`, `running`, `paused`, `done`, `stopped` or `failed`).

use cdc_core::{IncrementalState, TableName};
use sqlx::{AssertSqlSafe, PgConnection, Row};

use crate::error::PgError;
use crate::ident::quote_ident;
use crate::schema_ddl::locked_schema_ddl;

/// First key of the advisory lock that serialises the DDL (the second is
/// `hashtext(schema)`): the bytes `cdci`.
const DDL_LOCK_CLASS: i32 = 0x6364_6369;

/// Name of the signal table in the metadata schema.
pub const SIGNAL_TABLE: &str = "signals";

/// Name of the progress table in the metadata schema.
pub const PROGRESS_TABLE: &str = "incremental_snapshots";

/// First key of the advisory lock that serialises the recording of
/// tables new to a slot (the second is `hashtext(slot)`): the bytes `cdcn`.
const NEW_TABLES_LOCK_CLASS: i32 = 0x6364_636e;

/// The states a progress row can be in.
const STATES: &str = "'pending', 'running', 'paused', 'done', 'stopped', 'failed'";

/// One table of an incremental snapshot as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableJob {
    /// The snapshot: the id of the signal that asked for it.
    pub snapshot: i64,
    pub table: TableName,
    /// Only rows matching this SQL condition are read (`None`: all).
    pub filter: Option<String>,
    /// The key of the last row durably delivered (`None`: none yet).
    pub last_key: Option<Vec<String>>,
    pub chunks_done: i64,
    pub rows_done: i64,
    /// Paused by a signal: no chunk is read until it is resumed.
    pub paused: bool,
}

impl TableJob {
    /// A job not started yet.
    pub fn new(snapshot: i64, table: TableName, filter: Option<String>) -> Self {
        Self {
            snapshot,
            table,
            filter,
            last_key: None,
            chunks_done: 0,
            rows_done: 0,
            paused: false,
        }
    }

    /// `true` for the job of `snapshot` and `table`.
    pub fn is(&self, snapshot: i64, table: &TableName) -> bool {
        self.snapshot == snapshot && self.table == *table
    }
}

/// What a stop, pause or resume signal does to the progress rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// `pending`, `running` or `paused` to `stopped`.
    Stop,
    /// `pending` or `running` to `paused`.
    Pause,
    /// `paused` to `running` (or `pending` when no chunk is done).
    Resume,
}

/// The two tables in `schema`.
#[derive(Debug, Clone)]
pub(crate) struct ProgressStore {
    schema: String,
}

impl ProgressStore {
    pub fn new(schema: &str) -> Self {
        Self {
            schema: schema.to_owned(),
        }
    }

    /// The signal table's name.
    pub fn signal_table(&self) -> TableName {
        TableName::new(&self.schema, SIGNAL_TABLE)
    }

    fn progress(&self) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.schema),
            quote_ident(PROGRESS_TABLE)
        )
    }

    fn ctx(&self, what: &str) -> impl Fn(sqlx::Error) -> PgError {
        let context = format!("incremental snapshot metadata ({}): {what}", self.schema);
        move |e| PgError::sql(context.clone(), e)
    }

    /// Creates the schema and both tables when missing (serialised between
    /// instances by an advisory lock).
    pub async fn ensure(&self, conn: &mut PgConnection) -> Result<(), PgError> {
        let signals = format!(
            "{}.{}",
            quote_ident(&self.schema),
            quote_ident(SIGNAL_TABLE)
        );
        let progress = self.progress();
        // The `filter` column came with stop, pause and resume: a table
        // without it is upgraded below.
        let exists: bool = sqlx::query_scalar(
            "SELECT pg_catalog.to_regclass($1) IS NOT NULL AND EXISTS (
                 SELECT 1 FROM pg_catalog.pg_attribute
                 WHERE attrelid = pg_catalog.to_regclass($2) AND attname = 'filter'
                   AND NOT attisdropped)",
        )
        .bind(&signals)
        .bind(&progress)
        .fetch_one(&mut *conn)
        .await
        .map_err(self.ctx("looking for the tables"))?;
        if exists {
            return Ok(());
        }
        let head = locked_schema_ddl(DDL_LOCK_CLASS, &self.schema);
        let ddl = format!(
            r#"{head}CREATE TABLE IF NOT EXISTS {signals} (
    id bigserial PRIMARY KEY,
    kind text NOT NULL,
    payload jsonb,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE TABLE IF NOT EXISTS {progress} (
    slot_name text NOT NULL,
    snapshot_id bigint NOT NULL,
    table_schema text NOT NULL,
    table_name text NOT NULL,
    position int NOT NULL,
    state text NOT NULL DEFAULT 'pending'
        CONSTRAINT incremental_snapshots_state_check CHECK (state IN ({STATES})),
    filter text,
    last_key text[],
    chunks_done bigint NOT NULL DEFAULT 0,
    rows_done bigint NOT NULL DEFAULT 0,
    error text,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (slot_name, snapshot_id, table_schema, table_name)
);
ALTER TABLE {progress} ADD COLUMN IF NOT EXISTS filter text;
ALTER TABLE {progress} DROP CONSTRAINT IF EXISTS incremental_snapshots_state_check;
ALTER TABLE {progress} ADD CONSTRAINT incremental_snapshots_state_check
    CHECK (state IN ({STATES}));"#
        );
        sqlx::raw_sql(AssertSqlSafe(ddl))
            .execute(&mut *conn)
            .await
            .map_err(self.ctx("creating the tables"))?;
        Ok(())
    }

    /// Records snapshot `snapshot` of `tables` for `slot`, reading only
    /// the rows matching `filter`; returns the tables not recorded before
    /// (a signal read again after a restart adds nothing).
    pub async fn enqueue(
        &self,
        conn: &mut PgConnection,
        slot: &str,
        snapshot: i64,
        tables: &[TableName],
        filter: Option<&str>,
    ) -> Result<Vec<TableName>, PgError> {
        let sql = format!(
            "INSERT INTO {} (slot_name, snapshot_id, table_schema, table_name, position, filter)
             SELECT $1, $2, s, t, o::pg_catalog.int4, $5
             FROM ROWS FROM (pg_catalog.unnest($3::pg_catalog.text[]),
                             pg_catalog.unnest($4::pg_catalog.text[]))
                  WITH ORDINALITY AS x(s, t, o)
             ON CONFLICT DO NOTHING
             RETURNING table_schema, table_name, position",
            self.progress()
        );
        let schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
        let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(slot)
            .bind(snapshot)
            .bind(&schemas)
            .bind(&names)
            .bind(filter)
            .fetch_all(&mut *conn)
            .await
            .map_err(self.ctx("recording a snapshot request"))?;
        let err = self.ctx("recording a snapshot request");
        let mut added = Vec::with_capacity(rows.len());
        for row in rows {
            let position: i32 = row.try_get("position").map_err(&err)?;
            added.push((position, table_of(&row).map_err(&err)?));
        }
        added.sort();
        Ok(added.into_iter().map(|(_, t)| t).collect())
    }

    /// The unfinished tables of `slot` (pending, running or paused), in the
    /// order they were asked for.
    pub async fn unfinished(
        &self,
        conn: &mut PgConnection,
        slot: &str,
    ) -> Result<Vec<TableJob>, PgError> {
        let sql = format!(
            "SELECT snapshot_id, table_schema, table_name, filter, last_key, chunks_done,
                    rows_done, state = 'paused' AS paused
             FROM {} WHERE slot_name = $1 AND state IN ('pending', 'running', 'paused')
             ORDER BY snapshot_id, position",
            self.progress()
        );
        let err = self.ctx("reading unfinished snapshots");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(slot)
            .fetch_all(&mut *conn)
            .await
            .map_err(&err)?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            jobs.push(TableJob {
                snapshot: row.try_get("snapshot_id").map_err(&err)?,
                table: table_of(&row).map_err(&err)?,
                filter: row.try_get("filter").map_err(&err)?,
                last_key: row.try_get("last_key").map_err(&err)?,
                chunks_done: row.try_get("chunks_done").map_err(&err)?,
                rows_done: row.try_get("rows_done").map_err(&err)?,
                paused: row.try_get("paused").map_err(&err)?,
            });
        }
        Ok(jobs)
    }

    /// Stores how far `job` got (its reads up to there are durable);
    /// `done`: the table is complete. A paused or stopped table keeps its
    /// state (a chunk released before the signal becomes durable after it).
    pub async fn advance(
        &self,
        conn: &mut PgConnection,
        slot: &str,
        job: &TableJob,
        done: bool,
    ) -> Result<(), PgError> {
        let sql = format!(
            "UPDATE {} SET last_key = $5, chunks_done = $6, rows_done = $7,
                 state = CASE WHEN $8 THEN 'done'
                              WHEN state IN ('paused', 'stopped') THEN state
                              ELSE 'running' END,
                 updated_at = pg_catalog.now()
             WHERE slot_name = $1 AND snapshot_id = $2 AND table_schema = $3 AND table_name = $4",
            self.progress()
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(slot)
            .bind(job.snapshot)
            .bind(&job.table.schema)
            .bind(&job.table.name)
            .bind(&job.last_key)
            .bind(job.chunks_done)
            .bind(job.rows_done)
            .bind(done)
            .execute(&mut *conn)
            .await
            .map_err(self.ctx("recording progress"))?;
        Ok(())
    }

    /// Marks `table` of snapshot `snapshot` failed with `error`.
    pub async fn fail(
        &self,
        conn: &mut PgConnection,
        slot: &str,
        snapshot: i64,
        table: &TableName,
        error: &str,
    ) -> Result<(), PgError> {
        let sql = format!(
            "UPDATE {} SET state = 'failed', error = $5, updated_at = pg_catalog.now()
             WHERE slot_name = $1 AND snapshot_id = $2 AND table_schema = $3 AND table_name = $4",
            self.progress()
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(slot)
            .bind(snapshot)
            .bind(&table.schema)
            .bind(&table.name)
            .bind(error)
            .execute(&mut *conn)
            .await
            .map_err(self.ctx("recording a failure"))?;
        Ok(())
    }

    /// Stops, pauses or resumes the snapshots of `slot` asked for before
    /// signal `signal` (a signal read again after a restart leaves later
    /// snapshots alone), of the tables in `tables` (all when empty).
    /// Returns the (snapshot, table) pairs whose state changed.
    pub async fn control(
        &self,
        conn: &mut PgConnection,
        slot: &str,
        signal: i64,
        tables: &[TableName],
        control: Control,
    ) -> Result<Vec<(i64, TableName)>, PgError> {
        let (from, to) = match control {
            Control::Stop => ("'pending', 'running', 'paused'", "'stopped'"),
            Control::Pause => ("'pending', 'running'", "'paused'"),
            Control::Resume => (
                "'paused'",
                "CASE WHEN chunks_done > 0 THEN 'running' ELSE 'pending' END",
            ),
        };
        let sql = format!(
            "UPDATE {} SET state = {to}, updated_at = pg_catalog.now()
             WHERE slot_name = $1 AND snapshot_id < $2 AND state IN ({from})
               AND (pg_catalog.cardinality($3::pg_catalog.text[]) = 0
                    OR (table_schema, table_name) IN (
                        SELECT s, t FROM ROWS FROM (pg_catalog.unnest($3::pg_catalog.text[]),
                                                    pg_catalog.unnest($4::pg_catalog.text[])) AS x(s, t)))
             RETURNING snapshot_id, table_schema, table_name",
            self.progress()
        );
        let schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
        let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        let err = self.ctx("recording a stop, pause or resume");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(slot)
            .bind(signal)
            .bind(&schemas)
            .bind(&names)
            .fetch_all(&mut *conn)
            .await
            .map_err(&err)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push((
                row.try_get("snapshot_id").map_err(&err)?,
                table_of(&row).map_err(&err)?,
            ));
        }
        Ok(out)
    }

    /// Inserts a signal row of kind `snapshot` with `payload`; returns its
    /// id. The source reads it from the stream like any other signal.
    pub async fn insert_signal(
        &self,
        conn: &mut PgConnection,
        payload: &serde_json::Value,
    ) -> Result<i64, PgError> {
        let insert = format!(
            "INSERT INTO {}.{} (kind, payload) VALUES ('snapshot', $1::pg_catalog.jsonb) RETURNING id",
            quote_ident(&self.schema),
            quote_ident(SIGNAL_TABLE)
        );
        sqlx::query_scalar(AssertSqlSafe(insert))
            .bind(payload.to_string())
            .fetch_one(&mut *conn)
            .await
            .map_err(self.ctx("asking for an incremental snapshot"))
    }

    /// Records an incremental snapshot of the tables of `candidates` that
    /// are new to `slot`: planned in none of the slot's initial snapshot
    /// chunks (in `chunks`, the initial snapshot's chunk table) and in no
    /// incremental snapshot of the slot, whatever its state. Only once the
    /// slot's initial snapshot is planned (its job is `running` or `done`).
    /// The request is a signal row of kind `snapshot` (so it shows among
    /// the signals, and its id numbers the snapshot) with the progress rows
    /// written in the same transaction, under an advisory lock per slot so
    /// that instances starting together record the tables once. Returns
    /// the snapshot's id and its tables; `None` when no table is new.
    pub async fn add_new_tables(
        &self,
        conn: &mut PgConnection,
        slot: &str,
        jobs: &str,
        chunks: &str,
        candidates: &[TableName],
    ) -> Result<Option<(i64, Vec<TableName>)>, PgError> {
        let err = self.ctx("recording the tables new to the slot");
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(&err)?;
        sqlx::query("SELECT pg_catalog.pg_advisory_xact_lock($1, pg_catalog.hashtext($2))")
            .bind(NEW_TABLES_LOCK_CLASS)
            .bind(slot)
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
        let sql = format!(
            "SELECT s AS table_schema, t AS table_name
             FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]),
                             pg_catalog.unnest($3::pg_catalog.text[])) WITH ORDINALITY AS x(s, t, o)
             WHERE EXISTS (SELECT 1 FROM {jobs} j
                           WHERE j.slot_name = $1 AND j.state IN ('running', 'done'))
               AND NOT EXISTS (SELECT 1 FROM {chunks} c
                               WHERE c.slot_name = $1 AND c.table_schema = s AND c.table_name = t)
               AND NOT EXISTS (SELECT 1 FROM {progress} p
                               WHERE p.slot_name = $1 AND p.table_schema = s AND p.table_name = t)
             ORDER BY o",
            progress = self.progress()
        );
        let schemas: Vec<&str> = candidates.iter().map(|t| t.schema.as_str()).collect();
        let names: Vec<&str> = candidates.iter().map(|t| t.name.as_str()).collect();
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(slot)
            .bind(&schemas)
            .bind(&names)
            .fetch_all(&mut *tx)
            .await
            .map_err(&err)?;
        let new = rows
            .iter()
            .map(table_of)
            .collect::<Result<Vec<_>, _>>()
            .map_err(&err)?;
        if new.is_empty() {
            return Ok(None);
        }
        let payload = serde_json::json!({
            "tables": new.iter().map(|t| serde_json::json!({"schema": t.schema, "table": t.name})).collect::<Vec<_>>(),
            "reason": "added to source.tables",
        });
        let id = self.insert_signal(&mut tx, &payload).await?;
        let added = self.enqueue(&mut tx, slot, id, &new, None).await?;
        tx.commit().await.map_err(&err)?;
        Ok(Some((id, added)))
    }
}

/// One table of an incremental snapshot as stored, for reports
/// ([`crate::inspect`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIncremental {
    /// The snapshot's id (its signal row's).
    pub snapshot: i64,
    /// The table.
    pub table: TableName,
    /// Where it stands.
    pub state: IncrementalState,
    /// Its filter (SQL), if any.
    pub filter: Option<String>,
    /// The key of the last row durably delivered, as text.
    pub last_key: Option<Vec<String>>,
    /// Chunks durably delivered.
    pub chunks_done: i64,
    /// Rows durably delivered.
    pub rows_done: i64,
    /// Why it failed.
    pub error: Option<String>,
    /// When the row last changed.
    pub updated_at: std::time::SystemTime,
}

impl ProgressStore {
    /// The unfinished snapshots of `slot` and its `finished` most recent
    /// finished ones, in the order they were asked for; nothing when the
    /// progress table does not exist.
    pub async fn recent(
        &self,
        conn: &mut PgConnection,
        slot: &str,
        finished: i64,
    ) -> Result<Vec<StoredIncremental>, PgError> {
        let err = self.ctx("reading incremental snapshots");
        let exists: bool = sqlx::query_scalar("SELECT pg_catalog.to_regclass($1) IS NOT NULL")
            .bind(self.progress())
            .fetch_one(&mut *conn)
            .await
            .map_err(&err)?;
        if !exists {
            return Ok(Vec::new());
        }
        let sql = format!(
            "WITH p AS (SELECT * FROM {} WHERE slot_name = $1),
                  latest AS (SELECT snapshot_id, table_schema, table_name FROM p
                             WHERE state NOT IN ('pending', 'running', 'paused')
                             ORDER BY snapshot_id DESC, position DESC LIMIT $2)
             SELECT snapshot_id, table_schema, table_name, state, filter, last_key, chunks_done,
                    rows_done, error,
                    (EXTRACT(EPOCH FROM updated_at) * 1000)::int8 AS updated_ms
             FROM p
             WHERE state IN ('pending', 'running', 'paused')
                OR (snapshot_id, table_schema, table_name) IN (SELECT * FROM latest)
             ORDER BY snapshot_id, position",
            self.progress()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(slot)
            .bind(finished)
            .fetch_all(&mut *conn)
            .await
            .map_err(&err)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let state: String = row.try_get("state").map_err(&err)?;
            let updated_ms: i64 = row.try_get("updated_ms").map_err(&err)?;
            out.push(StoredIncremental {
                snapshot: row.try_get("snapshot_id").map_err(&err)?,
                table: table_of(&row).map_err(&err)?,
                state: IncrementalState::ALL
                    .into_iter()
                    .find(|s| s.as_str() == state)
                    .unwrap_or(IncrementalState::Failed),
                filter: row.try_get("filter").map_err(&err)?,
                last_key: row.try_get("last_key").map_err(&err)?,
                chunks_done: row.try_get("chunks_done").map_err(&err)?,
                rows_done: row.try_get("rows_done").map_err(&err)?,
                error: row.try_get("error").map_err(&err)?,
                updated_at: std::time::UNIX_EPOCH
                    + std::time::Duration::from_millis(u64::try_from(updated_ms).unwrap_or(0)),
            });
        }
        Ok(out)
    }
}

/// The table named by a row's `table_schema` and `table_name`.
fn table_of(row: &sqlx::postgres::PgRow) -> Result<TableName, sqlx::Error> {
    Ok(TableName::new(
        row.try_get::<String, _>("table_schema")?,
        row.try_get::<String, _>("table_name")?,
    ))
}
