//! What the chunk readers hand to the source: a chunk's start, its rows
//! in batches, and its end or abort.

use std::sync::Arc;

use cdc_core::{Row, TableSchema};

/// A chunk this instance is reading, under one claim.
#[derive(Debug)]
pub(crate) struct ChunkInfo {
    pub id: i64,
    /// The claim's token: the chunk's `attempts` when it was claimed. A
    /// later claim of the same chunk (by anyone) has another.
    pub attempt: u32,
    pub table: Arc<TableSchema>,
    pub chunk_no: u32,
    /// The table's open-ended last chunk.
    pub is_last: bool,
    /// The table's files the chunk is read from ([`crate::snapshot::HeapFiles`]).
    pub files: String,
}

/// What readers hand to the source, in order per chunk and claim.
pub(crate) enum LoadItem {
    Start(Arc<ChunkInfo>),
    Rows(Arc<ChunkInfo>, Vec<Row>),
    End(Arc<ChunkInfo>, u64),
    /// The read stopped before its end (an error, or the claim was lost):
    /// what was handed over of it must not count; the chunk is read again.
    Abort(Arc<ChunkInfo>),
}
