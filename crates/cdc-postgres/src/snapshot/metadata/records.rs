//! The rows of the coordination tables as this crate sees them, and how
//! they are read back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cdc_core::{Lsn, TableName};
use sqlx::postgres::PgRow;
use sqlx::Row;

#[cfg(doc)]
use super::MetadataStore;
use crate::error::PgError;
use crate::snapshot::plan::{ChunkBounds, ChunkPartition};

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

/// Chunks of one table that one instance holds (as
/// [`crate::inspect::inspect`] reports them).
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

/// Columns a chunk row is returned with, `bounds` decoded by the server so
/// no JSON parser is needed here. `{t}` is the chunk table's alias.
pub(super) const CHUNK_COLUMNS: &str = "\
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
pub(super) const JOB_COLUMNS: &str = "\
slot_name, snapshot_name, snapshot_lsn::pg_catalog.text AS snapshot_lsn, state, coordinator,
tables_total, chunks_total, chunks_done, rows_done,
(EXTRACT(epoch FROM created_at) * 1000000)::pg_catalog.int8 AS created_us,
(EXTRACT(epoch FROM updated_at) * 1000000)::pg_catalog.int8 AS updated_us,
(EXTRACT(epoch FROM finished_at) * 1000000)::pg_catalog.int8 AS finished_us";

pub(super) fn bad_row(what: impl std::fmt::Display) -> PgError {
    PgError::Protocol(format!("snapshot metadata: {what}"))
}

/// The table a chunk row (or a row grouped by table) is of: its
/// `table_schema` and `table_name` columns; `err` wraps a decoding error.
pub(super) fn decode_table(
    row: &PgRow,
    err: impl Fn(sqlx::Error) -> PgError,
) -> Result<TableName, PgError> {
    Ok(TableName::new(
        row.try_get::<String, _>("table_schema").map_err(&err)?,
        row.try_get::<String, _>("table_name").map_err(&err)?,
    ))
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

pub(super) fn decode_job(row: &PgRow) -> Result<Job, PgError> {
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

pub(super) fn decode_chunk(row: &PgRow) -> Result<ClaimedChunk, PgError> {
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
        table: decode_table(row, err)?,
        chunk_no: small("chunk_no")?,
        bounds,
        partition,
        attempts: small("attempts")?,
        reads: small("reads")?,
    })
}
