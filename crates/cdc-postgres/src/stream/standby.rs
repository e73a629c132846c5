//! Who holds the replication slot: what a standby instance checks before
//! it tries to take the slot over.

use cdc_core::Lsn;
use sqlx::{PgConnection, Row};

use crate::error::PgError;

/// The slot as seen in `pg_replication_slots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SlotActivity {
    /// No slot of that name.
    Missing,
    /// The server removed WAL the slot needed (`wal_status = 'lost'`).
    Lost,
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
    let row = sqlx::query(
        "SELECT active, active_pid, confirmed_flush_lsn::text AS lsn, wal_status::text AS wal_status
         FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| PgError::sql(ctx(), e))?;
    let Some(row) = row else {
        return Ok(SlotActivity::Missing);
    };
    let wal_status: Option<String> = row
        .try_get("wal_status")
        .map_err(|e| PgError::sql(ctx(), e))?;
    if wal_status.as_deref() == Some("lost") {
        return Ok(SlotActivity::Lost);
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
