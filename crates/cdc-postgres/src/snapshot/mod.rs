//! Building blocks of the initial snapshot: chunked, parallel, resumable.
//!
//! # Design
//!
//! **Consistency.** The replication slot is created with an exported
//! snapshot; its consistent point is where streaming starts. Every reader
//! opens `BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY`, imports the
//! snapshot (`SET TRANSACTION SNAPSHOT`) and only then plans or reads, so
//! all chunks see exactly the rows committed before the consistent point.
//! Orchestrating that (exporting, electing the coordinator, handing over to
//! streaming) is not done here.
//!
//! **Same rows as the stream.** [`describe_table`] builds the table's
//! schema from the catalog with the same rules
//! [`crate::catalog::describe_relation`] applies to a Relation message
//! (generated and dropped columns left out, same keys, same type names), and
//! [`read_chunk`] parses every value with the column's
//! [`crate::value::ValueType`], so a snapshot row renders exactly like a
//! streamed row.
//!
//! **Chunks, never `LIMIT/OFFSET`.** [`plan_chunks`] splits a table into
//! ranges that each cost the same to read:
//! * CTID block ranges (the default; every table has them): the block
//!   count from the relation's size, rows per block from `pg_class`
//!   (`reltuples / relpages`, or [`DEFAULT_ROWS_PER_BLOCK`] when the table
//!   was never analyzed), the last range open-ended. Read with TID range
//!   scans (PostgreSQL 14+).
//!
//! How many rows a chunk holds is the caller's choice; [`auto_chunk_rows`]
//! sizes it from the table's [`estimated_rows`] and the number of workers
//! (larger chunks for larger tables, enough of them for every worker).
//! * ranges of a single integer key, from `min`/`max` under the snapshot;
//! * keyset ranges of a composite or non-integer key, boundaries from one
//!   ordered pass over the key's index.
//!
//! The first range is unbounded below and the last unbounded above, so the
//! chunks partition every row the snapshot can see.
//!
//! A partitioned table has no storage: its chunks are planned on each of
//! its [`leaf_partitions`] (a [`PlannedChunk`] names the partition it
//! reads, [`ChunkPartition`]) and read from it with the partitioned
//! table's columns ([`chunk_query_from`], [`read_chunk_from`]), so its rows
//! are rows of the partitioned table, as the stream sends them with
//! `publish_via_partition_root`.
//!
//! **Reading.** [`chunk_query`] is a `COPY (SELECT …) TO STDOUT` with every
//! identifier quoted and every bound a literal (COPY takes no parameters),
//! in binary when every column has a binary decoder ([`CopyFormat`],
//! [`ReadFormat`]). Binary output is cut into tuples by [`copy_binary`] and
//! decoded by [`crate::value::BinaryType`]; text output is cut into lines
//! and values by [`copy_text`] and parsed by [`crate::value::ValueType`];
//! both give the stream's values. Rows are sent on in bounded batches; a
//! chunk is never held in memory whole. Before it,
//! [`rewritten_since_snapshot`] locks the table and tells whether it was
//! rewritten (a new `relfilenode`) after the snapshot was taken, in which
//! case it cannot be read under that snapshot.
//!
//! **Coordination.** [`MetadataStore`] keeps a job row per slot and a chunk
//! row per chunk in the source database. Workers claim chunks with one
//! `UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)`, heartbeat while
//! reading, and mark a chunk done (only while they still hold the claim)
//! after the sinks have accepted its rows. A chunk whose heartbeat is older
//! than the claim timeout is claimed again by someone else; its `reads`
//! counter shows how often it was handed out. A table found rewritten is
//! started over ([`MetadataStore::reread_table`]).

pub mod copy_binary;
mod copy_conn;
pub mod copy_text;
mod decode;
mod format;
mod metadata;
mod plan;
mod published;
mod query;
mod read;
mod stats;
mod table;

pub use metadata::{
    Claim, ClaimedChunk, Job, JobState, MetadataStore, Progress, TableProgress,
    DEFAULT_METADATA_SCHEMA,
};
pub use plan::{
    has_rows, leaf_partitions, plan_chunks, ChunkBounds, ChunkPartition, ChunkStrategy,
    LeafPartition, PlannedChunk, MAX_INT_KEY_CHUNKS,
};
pub use published::{describe_published_table, published, Published};
pub(crate) use published::{published_row, server_version};
pub use format::{CopyFormat, ReadFormat};
pub use query::{chunk_query, chunk_query_from};
pub(crate) use query::{row_value, string_literal};
pub(crate) use copy_conn::{ConnectError, CopyConn, CopyTarget};
pub(crate) use read::{
    heap_files, heap_files_text, read_chunk_own, read_copy, rewrite_check_context,
    rewrite_check_sql,
};
pub use read::{read_chunk, read_chunk_from, rewritten_since_snapshot, ChunkConnection, HeapFiles};
pub use stats::{
    auto_chunk_rows, estimated_rows, AUTO_CHUNKS_PER_WORKER, AUTO_MAX_CHUNK_ROWS,
    AUTO_MIN_CHUNK_ROWS, DEFAULT_ROWS_PER_BLOCK,
};
pub use table::describe_table;
