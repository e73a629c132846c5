//! Heartbeats: a logical decoding message written while the tracked
//! tables are idle, so the slot can advance past WAL written by other
//! tables or databases.
//!
//! The message is transactional, so pgoutput sends it as
//! BEGIN / MESSAGE / COMMIT; the commit's end LSN becomes a batch
//! checkpoint and is acknowledged once the sinks made everything before it
//! durable. The message itself is recognised by [`HEARTBEAT_PREFIX`] and
//! never passed on as user data.

use std::time::{Duration, Instant};

use cdc_core::SourceStatus;
use sqlx::PgConnection;

use crate::error::PgError;

/// Prefix of the heartbeat messages written by this crate.
pub const HEARTBEAT_PREFIX: &str = "cdc_heartbeat";

/// Longest a heartbeat statement may take before it counts as failed.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// When to write the next heartbeat, and whether the last one failed.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    /// `None`: heartbeats are off.
    interval: Option<Duration>,
    /// A transaction arrived, or a heartbeat was written (or tried).
    last_activity: Instant,
    /// The last attempt failed (an outage is being reported).
    failing: bool,
}

impl Heartbeat {
    /// Heartbeats every `interval` of idleness; `None` turns them off.
    pub fn new(interval: Option<Duration>) -> Self {
        Self {
            interval,
            last_activity: Instant::now(),
            failing: false,
        }
    }

    /// A transaction arrived: the stream is not idle.
    pub fn activity(&mut self) {
        self.last_activity = Instant::now();
    }

    /// `true` when a heartbeat should be written now.
    pub fn due(&self) -> bool {
        self.interval
            .is_some_and(|i| self.last_activity.elapsed() >= i)
    }

    /// Writes one heartbeat message (content: the slot name). A failure is
    /// logged once per outage and returned so the caller can repair the
    /// connection; it is never fatal.
    pub async fn write(
        &mut self,
        conn: &mut PgConnection,
        slot: &str,
        status: &SourceStatus,
    ) -> Result<(), PgError> {
        self.last_activity = Instant::now();
        let query = sqlx::query("SELECT pg_catalog.pg_logical_emit_message(true, $1, $2)::text")
            .bind(HEARTBEAT_PREFIX)
            .bind(slot)
            .execute(conn);
        let result = match tokio::time::timeout(STATEMENT_TIMEOUT, query).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(PgError::sql(
                "writing a heartbeat (pg_logical_emit_message)",
                e,
            )),
            Err(_) => Err(PgError::Protocol(format!(
                "writing a heartbeat took longer than {STATEMENT_TIMEOUT:?}"
            ))),
        };
        match &result {
            Ok(()) => {
                status.record_heartbeat();
                if std::mem::take(&mut self.failing) {
                    tracing::info!(slot, "heartbeats work again");
                }
            }
            Err(e) => self.failed(slot, e),
        }
        result
    }

    /// Reports a failed heartbeat: logged once per outage.
    pub fn failed(&mut self, slot: &str, error: &PgError) {
        self.last_activity = Instant::now();
        if !self.failing {
            self.failing = true;
            tracing::warn!(
                slot,
                error = %cdc_core::error_chain(error),
                "cannot write a heartbeat; retrying every interval (the slot does not advance \
                 while the captured tables are idle; the role needs REPLICATION or superuser, \
                 and the server must not be read-only)"
            );
        }
    }
}
