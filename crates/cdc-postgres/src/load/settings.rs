//! Snapshot settings.

use std::time::Duration;

use cdc_core::TableName;

use crate::snapshot::CopyFormat;

/// When existing rows are copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SnapshotMode {
    /// Stream only.
    #[default]
    Never,
    /// Copy once (unless a completed snapshot exists for the slot), then stream.
    Initial,
    /// Copy and end; no slot, no publication.
    SnapshotOnly,
}

/// How tables are split into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Chunking {
    /// CTID block ranges.
    #[default]
    Auto,
    /// CTID block ranges.
    Ctid,
    /// Primary-key ranges (integer or keyset); CTID without a primary key.
    Key,
}

/// How many rows a snapshot chunk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ChunkRows {
    /// Sized per table when it is planned, from its estimated rows
    /// (`pg_class` statistics and its current size) and
    /// [`SnapshotSettings::workers`]: the rows / (8 × workers), at least
    /// 10,000 and at most 250,000 rows per chunk.
    #[default]
    Auto,
    /// About this many rows per chunk, whatever the table's size (at
    /// least 1).
    Fixed(u64),
}

impl ChunkRows {
    /// Rows per chunk for a table of `estimated_rows` rows read by
    /// `workers` readers.
    pub fn for_table(self, estimated_rows: f64, workers: usize) -> u64 {
        match self {
            ChunkRows::Auto => crate::snapshot::auto_chunk_rows(estimated_rows, workers),
            ChunkRows::Fixed(rows) => rows.max(1),
        }
    }
}

impl From<u64> for ChunkRows {
    fn from(rows: u64) -> Self {
        ChunkRows::Fixed(rows)
    }
}

/// Everything about the snapshot.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SnapshotSettings {
    /// The mode.
    pub mode: SnapshotMode,
    /// Tables to copy; `None`: every streamed table.
    pub tables: Option<Vec<TableName>>,
    /// Chunking strategy.
    pub chunking: Chunking,
    /// Rows per chunk: sized from each table (the default) or fixed.
    pub chunk_rows: ChunkRows,
    /// Chunks read in parallel by this instance.
    pub workers: usize,
    /// A chunk without heartbeat for this long is claimed again.
    pub claim_timeout: Duration,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// This instance's name in the metadata tables.
    pub instance_id: String,
    /// Schema of the metadata tables.
    pub metadata_schema: String,
    /// Rows handed over from a reader at a time.
    pub rows_per_batch: usize,
    /// The `COPY` format of the readers: binary where every column of a
    /// table has a binary decoder (the default), or always text.
    pub copy_format: CopyFormat,
    /// Read each chunk on a connection of the reader's own that speaks
    /// the protocol directly (large reads, each row decoded where it was
    /// read; the default), or on the driver's connection. The own
    /// connection authenticates with a password or SCRAM-SHA-256 over TCP,
    /// with TLS as the replication connection; when the server asks for
    /// another method, or the URL names a Unix-domain socket, chunks are
    /// read on the driver's connection.
    pub own_copy_connection: bool,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        Self {
            mode: SnapshotMode::Never,
            tables: None,
            chunking: Chunking::Auto,
            chunk_rows: ChunkRows::Auto,
            workers: 4,
            claim_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            instance_id: default_instance_id(),
            metadata_schema: "cdc".into(),
            rows_per_batch: 512,
            copy_format: CopyFormat::Auto,
            own_copy_connection: true,
        }
    }
}

/// `<hostname>-<pid>`.
pub fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    format!("{host}-{}", std::process::id())
}
