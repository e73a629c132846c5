//! What every phase of a [`PgSource`](super::PgSource) works with, apart
//! from the phase's own state ([`State`](super::state::State)).

use cdc_core::{AckHandle, Backoff};
use sqlx::{Connection, PgConnection};

use super::changes::Changes;
use super::config::PgSourceConfig;
use super::discovery::Discovery;
use super::heartbeat::Heartbeat;
use crate::conn::ConnParams;
use crate::error::{PgError, StreamNames};
use crate::incremental::Incremental;

/// The source's configuration, connections and bookkeeping, shared by
/// all its phases.
pub(super) struct Context {
    pub cfg: PgSourceConfig,
    pub params: ConnParams,
    /// `current_database()`, for describing relations.
    pub database: String,
    /// The ordinary connection: Relation lookups, heartbeats, slot checks.
    pub catalog: PgConnection,
    /// The catalog connection may be broken (a heartbeat failed).
    pub catalog_suspect: bool,
    /// The position the sinks made durable, and the count of durable batches.
    pub ack: AckHandle,
    /// What the stream said so far: relations, the open transaction,
    /// positions received.
    pub changes: Changes,
    /// Delays between attempts to start the stream after a failure.
    pub backoff: Backoff,
    /// Wait while another session holds the slot instead of failing.
    pub standby: bool,
    /// When to write heartbeats.
    pub heartbeat: Heartbeat,
    /// The configured column selections, applied to every Relation
    /// message (before PostgreSQL 15 the server sends every column).
    pub local_subsets: crate::local_subsets::LocalSubsets,
    /// The connection to `cfg.primary_url` heartbeats are written on
    /// (connected on first use, dropped after a failure).
    pub primary: Option<PgConnection>,
    /// Batches returned so far (batches are numbered from 1).
    pub returned: u64,
    /// Incremental snapshots, when enabled.
    pub incremental: Option<Incremental>,
    /// A `next_batch` is under way: still set when the next call begins
    /// if that one was dropped midway.
    pub reading: bool,
    /// The batch the stream is filling (kept across dropped calls).
    pub filling: super::streaming::Filling,
    /// Tables created and dropped while streaming, for a selection with
    /// patterns.
    pub discovery: Option<Discovery>,
}

impl Context {
    /// The names [`PgError::explain`] uses in its advice.
    pub fn names(&self) -> StreamNames<'_> {
        StreamNames {
            user: &self.params.user,
            slot: &self.cfg.slot,
            publication: &self.cfg.publication,
        }
    }

    /// With several servers in `source.url` (or a `target_session_attrs`
    /// other than `any`): picks the server again before the stream
    /// starts, so that after a failover the source follows the promoted
    /// server; a new server gets a new catalog connection.
    pub async fn repick_host(&mut self) -> Result<(), PgError> {
        if self.params.hosts.len() <= 1
            && self.params.target_session == crate::conn::TargetSession::Any
        {
            return Ok(());
        }
        let picked = self.params.pick_host().await?;
        if (picked.host.as_str(), picked.port) != (self.params.host.as_str(), self.params.port) {
            tracing::warn!(from = %format!("{}:{}", self.params.host, self.params.port), to = %format!("{}:{}", picked.host, picked.port),
                "source.url: now using {}:{} ({})", picked.host, picked.port, picked.target_session.as_str());
            self.catalog = PgConnection::connect_with(&picked.sqlx_options_for("catalog"))
                .await
                .map_err(|e| PgError::sql("connecting to PostgreSQL", e))?;
            if let Some(inc) = self.incremental.as_mut() {
                inc.connect_to(picked.sqlx_options_for("incremental"));
            }
            self.params = picked;
        }
        Ok(())
    }

    /// Replaces the catalog connection when it no longer answers.
    pub async fn ensure_catalog(&mut self) -> Result<(), PgError> {
        if self.catalog.ping().await.is_err() {
            self.catalog = PgConnection::connect_with(&self.params.sqlx_options_for("catalog"))
                .await
                .map_err(|e| PgError::sql("reconnecting to PostgreSQL", e))?;
        }
        self.catalog_suspect = false;
        Ok(())
    }
}
