//! The coordination tables through which any number of instances share
//! one snapshot: a job row per replication slot and a chunk row per chunk,
//! claimed with `FOR UPDATE SKIP LOCKED`, kept alive by heartbeats and
//! taken over when a heartbeat is older than the claim timeout.
//!
//! Every method is one statement (or one script), so it runs in its own
//! implicit transaction or, when the caller has begun one, as part of it;
//! not on the snapshot's read-only transaction, which cannot write. Schema
//! and table names are quoted; values are bind parameters.

mod chunks;
mod records;
mod store;

pub use records::{Claim, ClaimedChunk, Job, JobState, Progress, TableProgress};
pub use store::{MetadataStore, DEFAULT_METADATA_SCHEMA};
