//! The chunk rows: planned, claimed, heartbeated, released, marked done,
//! and started over with their table.

use std::time::Duration;

use cdc_core::TableName;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::records::{decode_chunk, decode_table, Claim, ClaimedChunk, CHUNK_COLUMNS};
use super::store::MetadataStore;
use crate::error::PgError;
use crate::snapshot::plan::{ChunkBounds, PlannedChunk};

impl MetadataStore {
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
        let row = self
            .claim_row(conn, slot, instance_id, claim_timeout, "")
            .await?;
        row.map(|r| decode_chunk(&r)).transpose()
    }

    /// [`claim_chunk`](Self::claim_chunk), and in the same statement the
    /// name of the snapshot the job records (`None`: none recorded, or no
    /// job), as it was when the statement started: what a reader imports
    /// to read the chunk, one round trip fewer than claiming and then
    /// reading [`job`](Self::job). The name may be outdated by the time it
    /// is imported either way (a new export can be recorded at any time);
    /// the rewrite check before the read and the files compared once the
    /// chunks are done are what keep such reads right.
    pub async fn claim_chunk_with_snapshot(
        &self,
        conn: &mut PgConnection,
        slot: &str,
        instance_id: &str,
        claim_timeout: Duration,
    ) -> Result<Option<(ClaimedChunk, Option<String>)>, PgError> {
        let snapshot = format!(
            ", (SELECT j.snapshot_name FROM {} j WHERE j.slot_name = c.slot_name) AS job_snapshot",
            self.jobs()
        );
        let row = self
            .claim_row(conn, slot, instance_id, claim_timeout, &snapshot)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let chunk = decode_chunk(&row)?;
        let snapshot: Option<String> = row
            .try_get("job_snapshot")
            .map_err(self.ctx("claiming a chunk"))?;
        Ok(Some((chunk, snapshot)))
    }

    /// The claiming statement, returning the chunk's columns and `more`.
    async fn claim_row(
        &self,
        conn: &mut PgConnection,
        slot: &str,
        instance_id: &str,
        claim_timeout: Duration,
        more: &str,
    ) -> Result<Option<sqlx::postgres::PgRow>, PgError> {
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
             RETURNING {}{more}",
            CHUNK_COLUMNS.replace("{t}", "c")
        );
        let timeout_us = i64::try_from(claim_timeout.as_micros()).unwrap_or(i64::MAX);
        let query = sqlx::query(AssertSqlSafe(sql))
            .bind(slot)
            .bind(instance_id)
            .bind(timeout_us);
        self.optional_row(conn, query, "claiming a chunk").await
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
        let sql = format!(
            "UPDATE {} SET {set}
             WHERE id = $1 AND claimed_by = $2 AND attempts = $3 AND status = 'in_progress'",
            self.chunks()
        );
        let query = sqlx::query(AssertSqlSafe(sql))
            .bind(chunk_id)
            .bind(instance_id)
            .bind(i32::try_from(attempt).unwrap_or(i32::MAX));
        self.changes_one(conn, query, what).await
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

    /// The chunks of `slot`'s job that instances hold right now: per table
    /// and instance, how many chunks and how long ago the oldest of their
    /// heartbeats was.
    pub async fn claims(&self, conn: &mut PgConnection, slot: &str) -> Result<Vec<Claim>, PgError> {
        let what = "reading claims";
        let err = self.ctx(what);
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
        let query = sqlx::query(AssertSqlSafe(sql)).bind(slot);
        let rows = self.all_rows(conn, query, what).await?;
        rows.iter()
            .map(|row| {
                let chunks: i64 = row.try_get("chunks").map_err(&err)?;
                let age: f64 = row.try_get("heartbeat_age").map_err(&err)?;
                Ok(Claim {
                    table: decode_table(row, &err)?,
                    instance: row.try_get("instance").map_err(&err)?,
                    chunks: u64::try_from(chunks).unwrap_or(0),
                    heartbeat_age: Duration::try_from_secs_f64(age.max(0.0)).unwrap_or_default(),
                })
            })
            .collect()
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
