//! The metadata tables of incremental snapshots, in the metadata schema:
//! `signals` (rows any SQL client inserts to ask for something; the table
//! is in the publication, so the source reads them from the stream) and
//! `incremental_snapshots` (one row per slot, snapshot and table: how far
//! it got, advanced only once the chunk's reads are durable).

use cdc_core::TableName;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use crate::error::PgError;
use crate::ident::{quote_ident, quote_literal};

/// First key of the advisory lock that serialises the DDL (the second is
/// `hashtext(schema)`): the bytes `cdci`.
const DDL_LOCK_CLASS: i32 = 0x6364_6369;

/// Name of the signal table in the metadata schema.
pub const SIGNAL_TABLE: &str = "signals";

/// Name of the progress table in the metadata schema.
pub const PROGRESS_TABLE: &str = "incremental_snapshots";

/// One table of an incremental snapshot as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableJob {
    /// The snapshot: the id of the signal that asked for it.
    pub snapshot: i64,
    pub table: TableName,
    /// The key of the last row durably delivered (`None`: none yet).
    pub last_key: Option<Vec<String>>,
    pub chunks_done: i64,
    pub rows_done: i64,
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
        let exists: bool = sqlx::query_scalar(
            "SELECT pg_catalog.to_regclass($1) IS NOT NULL AND pg_catalog.to_regclass($2) IS NOT NULL",
        )
        .bind(&signals)
        .bind(&progress)
        .fetch_one(&mut *conn)
        .await
        .map_err(self.ctx("looking for the tables"))?;
        if exists {
            return Ok(());
        }
        let schema = quote_ident(&self.schema);
        let lock_key = quote_literal(&self.schema);
        let ddl = format!(
            r#"SELECT pg_catalog.pg_advisory_xact_lock({DDL_LOCK_CLASS}, pg_catalog.hashtext({lock_key}));
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {signals} (
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
        CHECK (state IN ('pending', 'running', 'done', 'failed')),
    last_key text[],
    chunks_done bigint NOT NULL DEFAULT 0,
    rows_done bigint NOT NULL DEFAULT 0,
    error text,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (slot_name, snapshot_id, table_schema, table_name)
);"#
        );
        sqlx::raw_sql(AssertSqlSafe(ddl))
            .execute(&mut *conn)
            .await
            .map_err(self.ctx("creating the tables"))?;
        Ok(())
    }

    /// Records snapshot `snapshot` of `tables` for `slot`; returns the
    /// tables not recorded before (a signal read again after a restart
    /// adds nothing).
    pub async fn enqueue(
        &self,
        conn: &mut PgConnection,
        slot: &str,
        snapshot: i64,
        tables: &[TableName],
    ) -> Result<Vec<TableName>, PgError> {
        let sql = format!(
            "INSERT INTO {} (slot_name, snapshot_id, table_schema, table_name, position)
             SELECT $1, $2, s, t, o::pg_catalog.int4
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
            .fetch_all(&mut *conn)
            .await
            .map_err(self.ctx("recording a snapshot request"))?;
        let err = self.ctx("recording a snapshot request");
        let mut added = Vec::with_capacity(rows.len());
        for row in rows {
            let position: i32 = row.try_get("position").map_err(&err)?;
            added.push((
                position,
                TableName::new(
                    row.try_get::<String, _>("table_schema").map_err(&err)?,
                    row.try_get::<String, _>("table_name").map_err(&err)?,
                ),
            ));
        }
        added.sort();
        Ok(added.into_iter().map(|(_, t)| t).collect())
    }

    /// The unfinished tables of `slot`, in the order they were asked for.
    pub async fn unfinished(
        &self,
        conn: &mut PgConnection,
        slot: &str,
    ) -> Result<Vec<TableJob>, PgError> {
        let sql = format!(
            "SELECT snapshot_id, table_schema, table_name, last_key, chunks_done, rows_done
             FROM {} WHERE slot_name = $1 AND state IN ('pending', 'running')
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
                table: TableName::new(
                    row.try_get::<String, _>("table_schema").map_err(&err)?,
                    row.try_get::<String, _>("table_name").map_err(&err)?,
                ),
                last_key: row.try_get("last_key").map_err(&err)?,
                chunks_done: row.try_get("chunks_done").map_err(&err)?,
                rows_done: row.try_get("rows_done").map_err(&err)?,
            });
        }
        Ok(jobs)
    }

    /// Stores how far `job` got (its reads up to there are durable);
    /// `done`: the table is complete.
    pub async fn advance(
        &self,
        conn: &mut PgConnection,
        slot: &str,
        job: &TableJob,
        done: bool,
    ) -> Result<(), PgError> {
        let sql = format!(
            "UPDATE {} SET last_key = $5, chunks_done = $6, rows_done = $7,
                 state = CASE WHEN $8 THEN 'done' ELSE 'running' END, updated_at = pg_catalog.now()
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
}
