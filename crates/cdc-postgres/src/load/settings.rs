//! Snapshot settings.

use std::time::Duration;

use cdc_core::TableName;

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
    /// About this many rows per chunk.
    pub chunk_rows: u64,
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
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        Self {
            mode: SnapshotMode::Never,
            tables: None,
            chunking: Chunking::Auto,
            chunk_rows: 10_000,
            workers: 4,
            claim_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            instance_id: default_instance_id(),
            metadata_schema: "cdc".into(),
            rows_per_batch: 512,
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
