//! `source.slot`: the replication slot's configuration.

use std::time::Duration;

use cdc_core::settings::deserialize_duration;
use serde::Deserialize;

use super::model::default_true;

/// `source.slot`: the logical replication slot (plugin `pgoutput`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SlotConfig {
    /// `name`: 1 to 63 characters among `a-z`, `0-9` and `_` (PostgreSQL's
    /// rule for slot names). Default `cdc_slot`.
    #[serde(default = "default_slot_name")]
    pub name: String,
    /// `create`: create the slot if it does not exist. With `false`, it must
    /// already exist. Default `true`.
    #[serde(default = "default_true")]
    pub create: bool,
    /// `standby`: several instances run for this slot (high availability).
    /// While another session streams from the slot, this instance waits
    /// (phase `standby`) and takes over from the slot's confirmed position
    /// when it is released. With `false`, a slot in use is an error retried
    /// with backoff. Default `false`.
    #[serde(default)]
    pub standby: bool,
    /// `failover`: create the slot as a failover slot (PostgreSQL 17 or
    /// later), which physical standbys with `sync_replication_slots = on`
    /// keep a synchronised copy of: after a failover the engine resumes
    /// from it on the new primary. An existing slot is used as it is (a
    /// warning says when it lacks the option). Default `false`.
    #[serde(default)]
    pub failover: bool,
    /// `activity_check_interval`: how often a standby checks whether the
    /// slot became free, a duration string greater than zero. Default `10s`.
    #[serde(
        default = "default_activity_check_interval",
        deserialize_with = "deserialize_duration"
    )]
    pub activity_check_interval: Duration,
}

impl Default for SlotConfig {
    fn default() -> Self {
        Self {
            name: default_slot_name(),
            create: true,
            standby: false,
            failover: false,
            activity_check_interval: default_activity_check_interval(),
        }
    }
}

const fn default_activity_check_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_slot_name() -> String {
    "cdc_slot".to_owned()
}
