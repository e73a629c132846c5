//! Standing by: while another session streams from the slot, an instance
//! with `standby` set waits, checks who holds the slot every
//! `activity_check_interval`, and takes it over once it is free. This is
//! the check; the attempts around it are in [`super::reconnect`].

use cdc_core::{Lsn, Phase};
use sqlx::{PgConnection, Row};

use super::context::Context;
use super::state::Standby;
use crate::error::PgError;

/// What a standby's check of the slot found.
pub(super) enum SlotCheck {
    /// Nobody streams from it: the acknowledged position moved to its
    /// confirmed one.
    Free,
    /// Another session streams from it: stand by (again).
    Held(Standby),
}

impl Context {
    /// The check a standby makes before it starts the stream. `standing`:
    /// the standby state it is in, if any (for logging only what changed);
    /// `reconnect` is carried into the standby state it returns.
    pub async fn check_slot(
        &mut self,
        standing: Option<&Standby>,
        reconnect: bool,
    ) -> Result<SlotCheck, PgError> {
        let slot = self.cfg.slot.clone();
        match slot_activity(&mut self.catalog, &slot).await? {
            SlotActivity::Missing => Err(PgError::Stopped(format!(
                "replication slot `{slot}` no longer exists (dropped while the pipeline ran?): changes \
                 since the last confirmed position may be lost. Start again with snapshot.mode: initial \
                 (it creates the slot)"
            ))),
            SlotActivity::Invalidated { reason } => Err(PgError::SlotInvalidated {
                slot: slot.clone(),
                reason: Some(reason),
            }),
            SlotActivity::Active { pid } => {
                self.cfg.status.set_phase(Phase::Standby);
                if standing.map(|s| s.holder) != Some(pid) {
                    let pid = pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
                    tracing::info!(
                        slot = %slot,
                        "standing by: slot {slot} is active (pid {pid}); checking again every {:?}",
                        self.cfg.activity_check_interval
                    );
                }
                Ok(SlotCheck::Held(Standby {
                    reconnect,
                    holder: pid,
                    wait: self.cfg.activity_check_interval,
                }))
            }
            SlotActivity::Free {
                confirmed_flush_lsn,
            } => {
                self.ack.advance(confirmed_flush_lsn);
                if standing.is_some() {
                    tracing::info!(slot = %slot, "slot {slot} is free: taking over from LSN {}", self.ack.get());
                    // The instance that streamed may have left incremental
                    // snapshots unfinished: resume them from what it stored.
                    if let Some(inc) = self.incremental.as_mut() {
                        inc.take_over().await?;
                    }
                }
                Ok(SlotCheck::Free)
            }
        }
    }
}

/// The slot as seen in `pg_replication_slots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SlotActivity {
    /// No slot of that name.
    Missing,
    /// The server invalidated the slot; why
    /// ([`crate::invalidation::INVALIDATION_SQL`]).
    Invalidated {
        /// `wal_removed`, `rows_removed`, …
        reason: String,
    },
    /// Another session streams from it.
    Active {
        /// Its walsender's process id, when known.
        pid: Option<i32>,
    },
    /// Nobody streams from it; streaming would resume at `confirmed_flush_lsn`.
    Free {
        /// The slot's confirmed position.
        confirmed_flush_lsn: Lsn,
    },
}

/// Reads the slot's state.
pub(crate) async fn slot_activity(
    conn: &mut PgConnection,
    slot: &str,
) -> Result<SlotActivity, PgError> {
    let ctx = || format!("checking whether replication slot {slot} is in use");
    let sql = format!(
        "SELECT active, active_pid, confirmed_flush_lsn::text AS lsn, ({}) AS invalidation
         FROM pg_catalog.pg_replication_slots AS s WHERE slot_name = $1",
        crate::invalidation::INVALIDATION_SQL
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(slot)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| PgError::sql(ctx(), e))?;
    let Some(row) = row else {
        return Ok(SlotActivity::Missing);
    };
    let invalidation: Option<String> = row
        .try_get("invalidation")
        .map_err(|e| PgError::sql(ctx(), e))?;
    if let Some(reason) = invalidation {
        return Ok(SlotActivity::Invalidated { reason });
    }
    let active: bool = row.try_get("active").map_err(|e| PgError::sql(ctx(), e))?;
    if active {
        let pid: Option<i32> = row
            .try_get("active_pid")
            .map_err(|e| PgError::sql(ctx(), e))?;
        return Ok(SlotActivity::Active { pid });
    }
    let lsn: Option<String> = row.try_get("lsn").map_err(|e| PgError::sql(ctx(), e))?;
    let confirmed_flush_lsn = match lsn {
        Some(text) => text.parse::<Lsn>().map_err(|e| {
            PgError::Protocol(format!("slot {slot}: unreadable confirmed_flush_lsn: {e}"))
        })?,
        None => Lsn::ZERO,
    };
    Ok(SlotActivity::Free {
        confirmed_flush_lsn,
    })
}
