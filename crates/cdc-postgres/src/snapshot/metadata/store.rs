//! [`MetadataStore`]: the coordination tables, their schema, and the job
//! rows.

use cdc_core::Lsn;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, PgConnection, Postgres, Row};

use super::records::{
    decode_job, decode_table, Job, JobState, Progress, TableProgress, JOB_COLUMNS,
};
use crate::error::PgError;
use crate::schema_ddl::locked_schema_ddl;
use crate::ident::quote_ident;

/// The schema of the coordination tables unless configured otherwise.
pub const DEFAULT_METADATA_SCHEMA: &str = "cdc";

/// First key of the advisory lock that serialises [`MetadataStore::ensure_schema`]
/// (the second is `hashtext(schema)`): the bytes `cdcm`.
const DDL_LOCK_CLASS: i32 = 0x6364_636d;

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

    pub(crate) fn jobs(&self) -> String {
        format!("{}.\"snapshot_jobs\"", quote_ident(&self.schema))
    }

    pub(crate) fn chunks(&self) -> String {
        format!("{}.\"snapshot_chunks\"", quote_ident(&self.schema))
    }

    pub(super) fn ctx(&self, what: &str) -> impl Fn(sqlx::Error) -> PgError {
        let context = format!("snapshot metadata ({}): {what}", self.schema);
        move |e| PgError::sql(context.clone(), e)
    }

    /// Runs `query`: the row it returned, if any. `what` names it in the
    /// error.
    pub(super) async fn optional_row(
        &self,
        conn: &mut PgConnection,
        query: Query<'_, Postgres, PgArguments>,
        what: &str,
    ) -> Result<Option<PgRow>, PgError> {
        query
            .fetch_optional(&mut *conn)
            .await
            .map_err(self.ctx(what))
    }

    /// Runs `query`: every row it returned. `what` names it in the error.
    pub(super) async fn all_rows(
        &self,
        conn: &mut PgConnection,
        query: Query<'_, Postgres, PgArguments>,
        what: &str,
    ) -> Result<Vec<PgRow>, PgError> {
        query.fetch_all(&mut *conn).await.map_err(self.ctx(what))
    }

    /// Runs `query` (an `UPDATE` or `DELETE` of at most one row); `true`
    /// when it changed a row. `what` names it in the error.
    pub(super) async fn changes_one(
        &self,
        conn: &mut PgConnection,
        query: Query<'_, Postgres, PgArguments>,
        what: &str,
    ) -> Result<bool, PgError> {
        let done = query.execute(&mut *conn).await.map_err(self.ctx(what))?;
        Ok(done.rows_affected() == 1)
    }

    /// Creates the schema and both tables when they are missing. Safe to
    /// call from several instances at once (serialised by an advisory
    /// lock); one script, so it also works inside the caller's transaction.
    /// Needs the `CREATE` privilege on the database the first time.
    pub async fn ensure_schema(&self, conn: &mut PgConnection) -> Result<(), PgError> {
        // PostgreSQL checks the CREATE privilege before it looks at
        // `IF NOT EXISTS`: skip the DDL when the tables are there, so a
        // role without CREATE on the database can run once they exist.
        if self.exists(&mut *conn).await? {
            return Ok(());
        }
        let jobs = self.jobs();
        let chunks = self.chunks();
        let err = self.ctx("creating the coordination tables");
        let head = locked_schema_ddl(DDL_LOCK_CLASS, &self.schema);
        // One simple-query script runs as one transaction: the advisory
        // lock is held until every statement is done.
        let ddl = format!(
            r#"{head}CREATE TABLE IF NOT EXISTS {jobs} (
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
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM {} WHERE slot_name = $1",
            self.jobs()
        );
        let query = sqlx::query(AssertSqlSafe(sql)).bind(slot);
        let row = self.optional_row(conn, query, "reading the job").await?;
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
        let sql = format!(
            "UPDATE {} SET snapshot_name = $2, coordinator = $3, updated_at = pg_catalog.now()
             WHERE slot_name = $1",
            self.jobs()
        );
        let query = sqlx::query(AssertSqlSafe(sql))
            .bind(slot)
            .bind(snapshot_name)
            .bind(coordinator);
        self.changes_one(conn, query, "recording the exported snapshot")
            .await
    }

    /// Moves the job to `state`; `finished_at` is set for `done` and
    /// `failed` and cleared otherwise. `false` when `slot` has no job.
    pub async fn set_job_state(
        &self,
        conn: &mut PgConnection,
        slot: &str,
        state: JobState,
    ) -> Result<bool, PgError> {
        let sql = format!(
            "UPDATE {} SET state = $2, updated_at = pg_catalog.now(),
                 finished_at = CASE WHEN $2 IN ('done', 'failed') THEN pg_catalog.now() END
             WHERE slot_name = $1",
            self.jobs()
        );
        let query = sqlx::query(AssertSqlSafe(sql))
            .bind(slot)
            .bind(state.as_str());
        self.changes_one(conn, query, "changing the job state")
            .await
    }

    /// Deletes the job of `slot` and its chunks. `false` when there was none.
    pub async fn delete_job(&self, conn: &mut PgConnection, slot: &str) -> Result<bool, PgError> {
        let sql = format!("DELETE FROM {} WHERE slot_name = $1", self.jobs());
        let query = sqlx::query(AssertSqlSafe(sql)).bind(slot);
        self.changes_one(conn, query, "deleting the job").await
    }

    /// Chunks and rows per table of `slot`'s job.
    pub async fn progress(&self, conn: &mut PgConnection, slot: &str) -> Result<Progress, PgError> {
        let what = "reading progress";
        let err = self.ctx(what);
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
        let query = sqlx::query(AssertSqlSafe(sql)).bind(slot);
        let rows = self.all_rows(conn, query, what).await?;
        let tables = rows
            .iter()
            .map(|row| {
                let count = |name: &str| -> Result<u64, PgError> {
                    let v: i64 = row.try_get(name).map_err(&err)?;
                    Ok(u64::try_from(v).unwrap_or(0))
                };
                Ok(TableProgress {
                    table: decode_table(row, &err)?,
                    chunks_total: count("chunks_total")?,
                    chunks_done: count("chunks_done")?,
                    rows: count("done_rows")?,
                })
            })
            .collect::<Result<_, PgError>>()?;
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
}
