//! `source.discovery`: tables created and dropped while the engine runs.

use std::time::Duration;

use cdc_core::settings::deserialize_duration;
use serde::Deserialize;

use super::model::default_true;

/// `source.discovery`: when `source.tables` holds patterns (`schema.*`,
/// globs, regular expressions), the catalog is checked every `interval`
/// while streaming: a table created since that matches is added to the
/// publication and captured from its first row (the rows written before
/// it was noticed by an incremental snapshot, which needs
/// `snapshot.incremental.enabled`), a captured table that was dropped is
/// noted (logged, listed in `/status`) and the stream goes on. Tables named
/// exactly are not affected by new tables. No effect without patterns.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// `enabled`: check for new and dropped tables. With `false`, the tables
    /// the patterns matched at start are the ones captured until the next
    /// start. Default `true`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `interval`: how often the catalog is checked, a duration string
    /// greater than zero; a new table is noticed within about this long (at
    /// once when the publication already sends its changes). Default `10s`.
    #[serde(
        default = "default_discovery_interval",
        deserialize_with = "deserialize_duration"
    )]
    pub interval: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_discovery_interval(),
        }
    }
}

const fn default_discovery_interval() -> Duration {
    Duration::from_secs(10)
}
