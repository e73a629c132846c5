//! Incremental snapshots: a table read again, chunk by chunk, while the
//! stream keeps flowing (the DBLog watermark algorithm).
//!
//! For each chunk of a table, walked by its primary key (or a unique index
//! on `NOT NULL` columns) with `WHERE (key) > (last) ORDER BY key LIMIT n`:
//!
//! 1. a **low watermark** is committed into the WAL
//!    (`pg_logical_emit_message(true, 'cdc_incremental', …)`) in a
//!    transaction of its own;
//! 2. the chunk is read in a new transaction (the table's `ACCESS SHARE`
//!    lock taken before its snapshot), its rows parsed by the snapshot's
//!    COPY reader with the table described as the stream describes it, so
//!    a read renders exactly like a streamed row;
//! 3. a **high watermark** is committed in a transaction that takes the
//!    same lock and describes the table again: when the description
//!    changed since the read (a column added or dropped in between), the
//!    rows are dropped and the chunk is read again, so the rows emitted at
//!    the watermark always have the columns the table has there.
//!
//! The source does this between two transactions of the stream, so the
//! stream waits for one chunk at most. From then on, every change of the
//! table the stream delivers is collected by key; when the
//! high watermark arrives, rows whose key changed are dropped from the
//! chunk (the stream delivered or will deliver their newer state; one whose
//! last change left a TOASTed value unchanged, which the stream does not
//! carry, is emitted completed instead: `window`) and the
//! rest are emitted as reads (`op: r`, `source.snapshot: incremental`)
//! at the high watermark's position: their commit LSN is the watermark's,
//! above every change committed before the low watermark and below every
//! change after the high one, so keyed sinks version them correctly. Keys
//! are collected from the moment the chunk is read, not only from the low
//! watermark on: a transaction whose commit reached the WAL before the low
//! watermark but was not yet visible to the read is caught too. One the
//! stream delivered before the read while still invisible to it (waiting
//! for a synchronous standby) makes the chunk be read again later
//! (`visibility`).
//!
//! The next chunk is read only once the high watermark of the previous
//! one was processed: memory holds one chunk at most.
//!
//! A snapshot is asked for by inserting a row into the signal table
//! (`<metadata schema>.signals`, in the publication, read through the
//! slot like any other change and never passed on):
//! `INSERT INTO cdc.signals (kind, payload) VALUES ('snapshot',
//! '{"tables": ["public.t"], "where": "id > 10"}')` (the optional `where`
//! filters the chunk reads), by [`request_snapshot`] (which checks the
//! request against the database first), or, when the source starts, for the
//! tables new to the slot (in none of its initial snapshot's chunks and no
//! incremental snapshot). Signals of kinds `stop-snapshot`,
//! `pause-snapshot` and `resume-snapshot` stop, pause and resume them. Its
//! progress (state, last key, chunks, rows) is stored in
//! `<metadata schema>.incremental_snapshots`, advanced only when the
//! acknowledged position passed the chunk's high watermark (every sink
//! made its reads durable); after a restart a snapshot resumes after its
//! last durable chunk.

mod chunks;
mod filter;
mod progress;
mod request;
mod runner;
mod signals;
mod submit;
mod visibility;
mod window;

pub(crate) use runner::Incremental;

pub use filter::{check_filter_text, validate_filter, MAX_FILTER_LEN};
pub(crate) use progress::ProgressStore;
pub use progress::{StoredIncremental, PROGRESS_TABLE, SIGNAL_TABLE};
pub use request::{snapshot_payload, SIGNAL_KINDS};
pub use submit::{request_snapshot, IncrementalRequest};

/// Prefix of the watermark messages of incremental snapshots.
pub const WATERMARK_PREFIX: &str = "cdc_incremental";

/// Incremental snapshots of a streaming source
/// ([`PgSourceConfig::incremental`](crate::PgSourceConfig::incremental));
/// start from `Default` and set the fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IncrementalSettings {
    /// Read the signal table and run the snapshots it asks for: the signal
    /// and progress tables are created in the metadata schema (when
    /// missing) and the signal table is added to the publication.
    pub enabled: bool,
    /// Rows per chunk: the most the stream waits for, and the most held in
    /// memory.
    pub chunk_rows: u64,
}

impl Default for IncrementalSettings {
    /// Off; 1024 rows per chunk.
    fn default() -> Self {
        Self {
            enabled: false,
            chunk_rows: 1024,
        }
    }
}
