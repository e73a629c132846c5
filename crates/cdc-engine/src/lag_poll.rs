//! The lag poll: every few seconds, on a connection of its own, ask the
//! server for its WAL position and the slot's `confirmed_flush_lsn`; the
//! difference is the WAL the server keeps for this pipeline.
//!
//! The poll never touches the pipeline: a failure (server down, timeout,
//! slot gone) is recorded for `/status` and logged once per outage, and
//! the next poll connects again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use cdc_core::Lsn;
use cdc_postgres::conn::ConnParams;
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};
use tokio_util::sync::CancellationToken;

/// The longest a connection attempt or a query may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's WAL position (the replay position on a standby) and the
/// slot's state, with why it was invalidated
/// ([`cdc_postgres::invalidation::INVALIDATION_SQL`]). Always one row, with
/// NULLs when the slot does not exist.
fn poll_sql() -> String {
    format!(
        "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
         ELSE pg_current_wal_lsn() END)::text, s.confirmed_flush_lsn::text, s.active, ({}) \
         FROM (SELECT 1) AS one LEFT JOIN pg_catalog.pg_replication_slots AS s ON s.slot_name = $1",
        cdc_postgres::invalidation::INVALIDATION_SQL
    )
}

/// What one successful poll read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Polled {
    server_wal: Lsn,
    confirmed_flush: Option<Lsn>,
    slot_active: Option<bool>,
    invalidation: Option<String>,
}

/// The result of the latest poll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LagSample {
    /// The server's WAL position, from the last successful poll.
    pub server_wal: Option<Lsn>,
    /// The slot's `confirmed_flush_lsn`, from the last successful poll
    /// (`None` when the slot does not exist or has none).
    pub confirmed_flush: Option<Lsn>,
    /// Whether a connection holds the slot (`None`: slot not found).
    pub slot_active: Option<bool>,
    /// Why the server invalidated the slot (`wal_removed`, `rows_removed`,
    /// …), from the last successful poll; `None`: not invalidated (or not
    /// found).
    pub invalidation: Option<String>,
    /// When the last successful poll finished.
    pub polled_at: Option<SystemTime>,
    /// Why the latest poll failed; `None` after a success.
    pub error: Option<String>,
}

impl LagSample {
    /// Bytes of WAL between the slot's confirmed position and the server's
    /// position; `None` when either is unknown.
    pub fn lag_bytes(&self) -> Option<u64> {
        Some(self.server_wal?.0.saturating_sub(self.confirmed_flush?.0))
    }
}

/// The poll's results, shared with `/metrics` and `/status`.
#[derive(Debug, Default)]
pub struct LagState {
    sample: Mutex<LagSample>,
    errors: AtomicU64,
}

impl LagState {
    /// A copy of the latest sample.
    pub fn sample(&self) -> LagSample {
        self.sample
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Failed polls so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn succeeded(&self, polled: Polled) {
        let mut s = self.sample.lock().unwrap_or_else(PoisonError::into_inner);
        *s = LagSample {
            server_wal: Some(polled.server_wal),
            confirmed_flush: polled.confirmed_flush,
            slot_active: polled.slot_active,
            invalidation: polled.invalidation,
            polled_at: Some(SystemTime::now()),
            error: None,
        };
    }

    fn failed(&self, error: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.sample
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .error = Some(error);
    }
}

/// Why one poll failed. Messages never include the connection URL.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("source.url cannot be used for the lag poll")]
    Url,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("the server returned an invalid LSN: {0}")]
    Lsn(#[from] cdc_core::ParseLsnError),
}

/// Polls every `interval` until `stop` is cancelled.
pub async fn run_lag_poll(
    url: String,
    slot: String,
    interval: Duration,
    state: std::sync::Arc<LagState>,
    stop: CancellationToken,
) {
    let mut conn: Option<PgConnection> = None;
    let mut in_outage = false;
    let mut reported_invalidation = false;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let result = tokio::select! {
            _ = stop.cancelled() => break,
            r = poll_once(&url, &slot, &mut conn) => r,
        };
        match result {
            Ok(polled) => {
                tracing::debug!(server_wal = %polled.server_wal, confirmed_flush = ?polled.confirmed_flush.map(|l| l.to_string()), slot_active = ?polled.slot_active, invalidation = ?polled.invalidation, "lag poll");
                if polled.invalidation.is_some() && !reported_invalidation {
                    tracing::error!(
                        "{}",
                        cdc_postgres::invalidation::invalidated_message(
                            &slot,
                            polled.invalidation.as_deref()
                        )
                    );
                    reported_invalidation = true;
                }
                state.succeeded(polled);
                if in_outage {
                    tracing::info!("lag poll succeeded again");
                    in_outage = false;
                }
            }
            Err(e) => {
                // Start afresh next time: the connection may be broken.
                conn = None;
                let message = cdc_core::error_chain(&e);
                if !in_outage {
                    tracing::warn!(error = %message, "lag poll failed; the replication lag is unknown until it succeeds");
                    in_outage = true;
                }
                state.failed(message);
            }
        }
    }
    if let Some(c) = conn {
        let _ = tokio::time::timeout(POLL_TIMEOUT, c.close()).await;
    }
}

/// One poll, connecting first when there is no connection.
async fn poll_once(
    url: &str,
    slot: &str,
    conn: &mut Option<PgConnection>,
) -> Result<Polled, PollError> {
    let c = match conn {
        Some(c) => c,
        None => {
            // The parse error is not passed on: it may quote the URL.
            let params = ConnParams::parse(url).map_err(|_| PollError::Url)?;
            let options = match tokio::time::timeout(POLL_TIMEOUT, params.pick_host()).await {
                Ok(Ok(picked)) => picked.sqlx_options_for("lag-poll"),
                // The poll reports the connection failure below.
                _ => params.sqlx_options_for("lag-poll"),
            };
            let connected =
                tokio::time::timeout(POLL_TIMEOUT, PgConnection::connect_with(&options))
                    .await
                    .map_err(|_| PollError::Timeout(POLL_TIMEOUT))??;
            conn.insert(connected)
        }
    };
    let sql = poll_sql();
    let row = tokio::time::timeout(
        POLL_TIMEOUT,
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(slot)
            .fetch_one(c),
    )
    .await
    .map_err(|_| PollError::Timeout(POLL_TIMEOUT))??;
    let server_wal: Option<String> = row.try_get(0)?;
    let confirmed: Option<String> = row.try_get(1)?;
    let active: Option<bool> = row.try_get(2)?;
    let invalidation: Option<String> = row.try_get(3)?;
    // NULL only on a standby that has replayed nothing yet.
    let server_wal = server_wal.as_deref().unwrap_or("0/0").parse::<Lsn>()?;
    let confirmed = confirmed.as_deref().map(str::parse::<Lsn>).transpose()?;
    Ok(Polled {
        server_wal,
        confirmed_flush: confirmed,
        slot_active: active,
        invalidation,
    })
}

/// One poll now, outside the loop (after the pipeline failed: was the
/// slot invalidated?); its result goes into `state` like the loop's.
/// Returns why the slot was invalidated, if it was.
pub async fn poll_now(url: &str, slot: &str, state: &LagState) -> Option<String> {
    let mut conn = None;
    let result = poll_once(url, slot, &mut conn).await;
    if let Some(c) = conn {
        let _ = tokio::time::timeout(POLL_TIMEOUT, c.close()).await;
    }
    match result {
        Ok(polled) => {
            let invalidation = polled.invalidation.clone();
            state.succeeded(polled);
            invalidation
        }
        Err(e) => {
            state.failed(cdc_core::error_chain(&e));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_needs_both_positions_and_never_goes_negative() {
        let mut s = LagSample {
            server_wal: Some(Lsn(1000)),
            confirmed_flush: Some(Lsn(400)),
            ..LagSample::default()
        };
        assert_eq!(s.lag_bytes(), Some(600));
        s.confirmed_flush = Some(Lsn(2000));
        assert_eq!(s.lag_bytes(), Some(0));
        s.confirmed_flush = None;
        assert_eq!(s.lag_bytes(), None);
    }
}
