//! The engine's YAML configuration: the model ([`Config`] and the structs it
//! holds, whose field docs are the reference for each key), loading
//! ([`load_config`], [`parse_config`]: `${VAR}` interpolation, parsing,
//! validation) and errors ([`ConfigError`]) that name the field they are
//! about, e.g. `source.slot.name: invalid replication slot name …`.
//!
//! Unknown keys are errors at every level. Parsing stops at the first syntax
//! or type error; the semantic checks that follow ([`validate`]) report every
//! problem at once. `docs/configuration.md` is the user-facing reference.

mod columns;
mod discovery;
mod error;
mod interpolate;
mod load;
mod model;
mod redact;
mod sink;
mod size;
mod slot;
mod snapshot;
mod table_name;
#[cfg(test)]
mod tests;
mod validate;

pub use discovery::DiscoveryConfig;
pub use error::{ConfigError, ConfigProblem};
pub use load::{load_config, parse_config};
pub use model::{
    ColumnsConfig, Config, HeartbeatConfig, LogConfig, LogFormat, LogLevel, MetricsConfig,
    PipelineConfig, PublicationConfig, ReplicaIdentitySetting, RetryConfig, SourceConfig,
};
pub use sink::{FileSinkConfig, SinkConfig, StdoutSinkConfig};
pub use slot::SlotConfig;
pub use snapshot::{
    ChunkRows, Chunking, CopyConnection, CopyFormat, IncrementalConfig, SnapshotConfig,
    SnapshotMode,
};
pub use table_name::{parse_table_name, TableNameError};
pub use validate::validate;
