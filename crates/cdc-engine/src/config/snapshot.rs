//! `snapshot`: copying the rows that already exist before streaming changes.

use std::time::Duration;

use cdc_core::TableName;
use serde::{Deserialize, Deserializer};

use super::error::ConfigProblem;
use cdc_core::settings::deserialize_duration;

use super::table_name;

/// A value of `snapshot.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SnapshotMode {
    /// `never`: stream changes only; existing rows are not copied.
    Never,
    /// `initial` (the default): copy the tables once (unless a completed
    /// snapshot exists for this slot), then stream every change committed
    /// after the copy.
    #[default]
    Initial,
    /// `snapshot_only`: copy the tables and exit; needs no slot and no
    /// publication.
    SnapshotOnly,
}

/// A value of `snapshot.chunking`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Chunking {
    /// `auto`: CTID block ranges (works for every table).
    #[default]
    Auto,
    /// `ctid`: CTID block ranges sized from `pg_class.relpages`.
    Ctid,
    /// `key`: ranges of the primary key (integer ranges for a single
    /// integer key, keyset ranges otherwise); tables without a primary key
    /// fall back to CTID ranges.
    Key,
}

/// A value of `snapshot.copy_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CopyFormat {
    /// `auto` (the default): binary `COPY` for every table whose columns
    /// are all of built-in types with a binary decoder, text for the
    /// others.
    #[default]
    Auto,
    /// `text`: text `COPY` for every table.
    Text,
}

/// A value of `snapshot.copy_connection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CopyConnection {
    /// `own` (the default): each reader reads its chunks on a connection
    /// of its own that speaks the protocol directly (large reads, each row
    /// decoded where it was read). It authenticates with a password or
    /// SCRAM-SHA-256 over TCP (with TLS as `source.url` says); when the
    /// server asks for another method, or `source.url` names a
    /// Unix-domain socket, the reader uses the driver's connection.
    #[default]
    Own,
    /// `driver`: chunks are read on the reader's driver connection.
    Driver,
}

/// A value of `snapshot.chunk_rows`: `auto` or a number of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ChunkRows {
    /// `auto` (the default): sized per table from its estimated rows and
    /// `workers`, between 10,000 and 250,000 rows per chunk.
    #[default]
    Auto,
    /// A number: about this many rows per chunk, for every table.
    Rows(u64),
}

impl<'de> Deserialize<'de> for ChunkRows {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChunkRowsVisitor;

        impl serde::de::Visitor<'_> for ChunkRowsVisitor {
            type Value = ChunkRows;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`auto` or a number of rows")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ChunkRows, E> {
                match text.trim() {
                    "auto" => Ok(ChunkRows::Auto),
                    other => other.parse().map(ChunkRows::Rows).map_err(|_| {
                        E::custom(format!(
                            "invalid `{text}`, expected `auto` or a number of rows"
                        ))
                    }),
                }
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<ChunkRows, E> {
                Ok(ChunkRows::Rows(value))
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<ChunkRows, E> {
                u64::try_from(value).map(ChunkRows::Rows).map_err(|_| {
                    E::custom(format!(
                        "invalid `{value}`, expected `auto` or a number of rows"
                    ))
                })
            }
        }

        deserializer.deserialize_any(ChunkRowsVisitor)
    }
}

/// `snapshot`: how existing rows are copied. Several engine instances
/// with the same slot share one snapshot through metadata tables in the
/// source database.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SnapshotConfig {
    /// `mode`: `never`, `initial` or `snapshot_only`. Default `initial`:
    /// the rows that already exist come first (docs/configuration.md says
    /// why).
    #[serde(default)]
    pub mode: SnapshotMode,
    /// `tables`: which tables to copy. With `initial`: a subset of
    /// `source.tables` (default: all of them). With `snapshot_only`:
    /// required.
    #[serde(default, deserialize_with = "deserialize_tables")]
    pub tables: Option<Vec<TableName>>,
    /// `chunking`: `auto`, `ctid` or `key`. Default `auto`.
    #[serde(default)]
    pub chunking: Chunking,
    /// `chunk_rows`: about how many rows one chunk holds, or `auto`
    /// (the default) to size the chunks of each table from its estimated
    /// rows and `workers`.
    #[serde(default)]
    pub chunk_rows: ChunkRows,
    /// `copy_format`: `auto` (binary where every column's type allows)
    /// or `text`. Default `auto`; both give the same values.
    #[serde(default)]
    pub copy_format: CopyFormat,
    /// `copy_connection`: `own` (a connection of each reader's own, the
    /// default) or `driver`. Both give the same values.
    #[serde(default)]
    pub copy_connection: CopyConnection,
    /// `workers`: chunks read in parallel by this instance, 1 to 64.
    /// Default `4`.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// `claim_timeout`: a chunk whose reader has not sent a heartbeat for
    /// this long is claimed again by another reader. Default `30s`.
    #[serde(
        default = "default_claim_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub claim_timeout: Duration,
    /// `heartbeat_interval`: how often a reader confirms its chunks; less
    /// than half of `claim_timeout`. Default `5s`.
    #[serde(
        default = "default_heartbeat_interval",
        deserialize_with = "deserialize_duration"
    )]
    pub heartbeat_interval: Duration,
    /// `instance_id`: this instance's name in the metadata tables.
    /// Default `<hostname>-<pid>`.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// `metadata_schema`: schema of the metadata tables
    /// (`snapshot_jobs`, `snapshot_chunks`), created if missing.
    /// Default `cdc`.
    #[serde(default = "default_metadata_schema")]
    pub metadata_schema: String,
    /// `incremental`: snapshots of single tables while streaming, asked
    /// for by a row in `<metadata_schema>.signals`.
    #[serde(default)]
    pub incremental: IncrementalConfig,
}

/// `snapshot.incremental`: tables read again chunk by chunk while the
/// stream flows (watermarks in the WAL keep the reads and the changes in
/// order).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct IncrementalConfig {
    /// `enabled`: create `<metadata_schema>.signals` and
    /// `<metadata_schema>.incremental_snapshots` when missing, add the
    /// signal table to the publication, and run the snapshots its rows ask
    /// for. Default `false`.
    #[serde(default)]
    pub enabled: bool,
    /// `chunk_rows`: rows per chunk, the longest the stream waits and the
    /// most held in memory. Default `1024`.
    #[serde(default = "default_incremental_chunk_rows")]
    pub chunk_rows: u64,
}

impl Default for IncrementalConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            chunk_rows: default_incremental_chunk_rows(),
        }
    }
}

const fn default_incremental_chunk_rows() -> u64 {
    1024
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            mode: SnapshotMode::default(),
            tables: None,
            chunking: Chunking::default(),
            chunk_rows: ChunkRows::default(),
            copy_format: CopyFormat::default(),
            copy_connection: CopyConnection::default(),
            workers: default_workers(),
            claim_timeout: default_claim_timeout(),
            heartbeat_interval: default_heartbeat_interval(),
            instance_id: None,
            metadata_schema: default_metadata_schema(),
            incremental: IncrementalConfig::default(),
        }
    }
}

const fn default_workers() -> usize {
    4
}

const fn default_claim_timeout() -> Duration {
    Duration::from_secs(30)
}

const fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_metadata_schema() -> String {
    "cdc".to_owned()
}

fn deserialize_tables<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<TableName>>, D::Error> {
    table_name::deserialize_list(deserializer).map(Some)
}

/// Semantic checks of `snapshot` against `source.tables`.
pub(crate) fn check_snapshot(
    snapshot: &SnapshotConfig,
    source: &super::model::SourceConfig,
    problems: &mut Vec<ConfigProblem>,
) {
    match (&snapshot.tables, snapshot.mode) {
        (None, SnapshotMode::SnapshotOnly) => problems.push(ConfigProblem::new(
            "snapshot.tables",
            "required with mode `snapshot_only`: list the tables to copy",
        )),
        (Some(tables), mode) => {
            if tables.is_empty() {
                problems.push(ConfigProblem::new(
                    "snapshot.tables",
                    "must list at least one table (or be left out to copy all of source.tables)",
                ));
            }
            for (i, table) in tables.iter().enumerate() {
                if tables[..i].contains(table) {
                    problems.push(ConfigProblem::new(
                        format!("snapshot.tables[{i}]"),
                        format!("table `{table}` is listed twice"),
                    ));
                }
                if mode == SnapshotMode::Initial && !source.selects(table) {
                    problems.push(ConfigProblem::new(
                        format!("snapshot.tables[{i}]"),
                        format!(
                            "table `{table}` is not listed in source.tables (by name or pattern), \
                     or source.exclude_tables leaves it out"
                        ),
                    ));
                }
            }
        }
        (None, _) => {}
    }
    if snapshot.incremental.chunk_rows == 0 {
        problems.push(ConfigProblem::new(
            "snapshot.incremental.chunk_rows",
            "must be at least 1",
        ));
    }
    if snapshot.chunk_rows == ChunkRows::Rows(0) {
        problems.push(ConfigProblem::new(
            "snapshot.chunk_rows",
            "must be at least 1",
        ));
    }
    if !(1..=64).contains(&snapshot.workers) {
        problems.push(ConfigProblem::new(
            "snapshot.workers",
            "must be between 1 and 64",
        ));
    }
    if snapshot.heartbeat_interval.is_zero() {
        problems.push(ConfigProblem::new(
            "snapshot.heartbeat_interval",
            "must be greater than zero",
        ));
    }
    if snapshot.claim_timeout < snapshot.heartbeat_interval * 2 {
        problems.push(ConfigProblem::new(
            "snapshot.claim_timeout",
            "must be at least twice snapshot.heartbeat_interval, or live readers lose their chunks",
        ));
    }
    if let Some(id) = &snapshot.instance_id {
        if id.is_empty() || id.len() > 200 {
            problems.push(ConfigProblem::new(
                "snapshot.instance_id",
                "must be 1 to 200 characters",
            ));
        }
    }
    if snapshot.metadata_schema.is_empty() || snapshot.metadata_schema.len() > 63 {
        problems.push(ConfigProblem::new(
            "snapshot.metadata_schema",
            "must be a schema name of 1 to 63 bytes",
        ));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use crate::config::parse_config;

    const BASE: &str = "source:\n  url: postgres://u@h/db\n  tables: [public.a, public.b]\nsinks:\n  - type: stdout\n";

    fn problems(extra: &str) -> String {
        match parse_config(&format!("{BASE}{extra}")) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_and_full_section() {
        let c = parse_config(BASE).unwrap();
        assert_eq!(c.snapshot.mode, super::SnapshotMode::Initial);
        let c = parse_config(&format!("{BASE}snapshot:\n  mode: never\n")).unwrap();
        assert_eq!(c.snapshot.mode, super::SnapshotMode::Never);
        let c = parse_config(&format!(
            "{BASE}snapshot:\n  mode: initial\n  tables: [public.b]\n  chunking: key\n  chunk_rows: 500\n  workers: 2\n  claim_timeout: 10s\n  heartbeat_interval: 1s\n  instance_id: node-1\n  metadata_schema: cdc_meta\n"
        ))
        .unwrap();
        assert_eq!(c.snapshot.mode, super::SnapshotMode::Initial);
        assert_eq!(c.snapshot.tables.as_ref().unwrap().len(), 1);
        assert_eq!(c.snapshot.chunking, super::Chunking::Key);
        assert_eq!(c.snapshot.chunk_rows, super::ChunkRows::Rows(500));
        assert_eq!(c.snapshot.workers, 2);
    }

    #[test]
    fn copy_connection_is_own_unless_driver_is_given() {
        let c = parse_config(BASE).unwrap();
        assert_eq!(c.snapshot.copy_connection, super::CopyConnection::Own);
        let c = parse_config(&format!("{BASE}snapshot:\n  copy_connection: driver\n")).unwrap();
        assert_eq!(c.snapshot.copy_connection, super::CopyConnection::Driver);
        let found = problems("snapshot:\n  copy_connection: fast\n");
        assert!(
            found.contains("snapshot.copy_connection") && found.contains("own"),
            "copy_connection: fast gave {found:?}"
        );
    }

    #[test]
    fn copy_format_is_auto_unless_text_is_given() {
        let c = parse_config(BASE).unwrap();
        assert_eq!(c.snapshot.copy_format, super::CopyFormat::Auto);
        let c = parse_config(&format!("{BASE}snapshot:\n  copy_format: text\n")).unwrap();
        assert_eq!(c.snapshot.copy_format, super::CopyFormat::Text);
        let c = parse_config(&format!("{BASE}snapshot:\n  copy_format: auto\n")).unwrap();
        assert_eq!(c.snapshot.copy_format, super::CopyFormat::Auto);
        let found = problems("snapshot:\n  copy_format: binary\n");
        assert!(
            found.contains("snapshot.copy_format") && found.contains("auto"),
            "copy_format: binary gave {found:?}"
        );
    }

    #[test]
    fn chunk_rows_is_auto_unless_a_number_is_given() {
        let c = parse_config(BASE).unwrap();
        assert_eq!(c.snapshot.chunk_rows, super::ChunkRows::Auto);
        let c = parse_config(&format!("{BASE}snapshot:\n  chunk_rows: auto\n")).unwrap();
        assert_eq!(c.snapshot.chunk_rows, super::ChunkRows::Auto);
        let c = parse_config(&format!("{BASE}snapshot:\n  chunk_rows: 10000\n")).unwrap();
        assert_eq!(c.snapshot.chunk_rows, super::ChunkRows::Rows(10_000));
        let c = parse_config(&format!("{BASE}snapshot:\n  chunk_rows: \"2000\"\n")).unwrap();
        assert_eq!(c.snapshot.chunk_rows, super::ChunkRows::Rows(2_000));
        for bad in ["0", "-5", "many", "1.5", "[1]"] {
            let found = problems(&format!("snapshot:\n  chunk_rows: {bad}\n"));
            assert!(
                found.contains("snapshot.chunk_rows"),
                "chunk_rows: {bad} gave {found:?}"
            );
        }
    }

    #[test]
    fn bad_snapshot_settings_name_the_field() {
        assert!(problems("snapshot:\n  mode: snapshot_only\n").contains("snapshot.tables"));
        assert!(
            problems("snapshot:\n  mode: initial\n  tables: [public.zzz]\n")
                .contains("snapshot.tables[0]")
        );
        assert!(problems("snapshot:\n  workers: 0\n").contains("snapshot.workers"));
        assert!(
            problems("snapshot:\n  claim_timeout: 1s\n  heartbeat_interval: 1s\n")
                .contains("snapshot.claim_timeout")
        );
        assert!(problems("snapshot:\n  mode: sometimes\n").contains("snapshot.mode"));
        assert!(problems("snapshot:\n  chunk_size: 5\n").contains("snapshot.chunk_size"));
        // snapshot_only may copy tables that are not streamed.
        assert_eq!(
            problems("snapshot:\n  mode: snapshot_only\n  tables: [public.zzz]\n"),
            ""
        );
    }

    #[test]
    fn incremental_snapshots_are_off_unless_enabled() {
        let c = parse_config(BASE).unwrap();
        assert_eq!(c.snapshot.incremental, super::IncrementalConfig::default());
        assert!(!c.snapshot.incremental.enabled);
        let c = parse_config(&format!(
            "{BASE}snapshot:\n  incremental: {{ enabled: true, chunk_rows: 10 }}\n"
        ))
        .unwrap();
        assert_eq!(
            c.snapshot.incremental,
            super::IncrementalConfig {
                enabled: true,
                chunk_rows: 10
            }
        );
        assert!(problems("snapshot:\n  incremental: { chunk_rows: 0 }\n")
            .contains("snapshot.incremental.chunk_rows"));
        assert!(problems("snapshot:\n  incremental: { size: 1 }\n").contains("size"));
    }
}
