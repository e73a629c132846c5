//! A replication slot the server invalidated: it can never stream again,
//! the changes after its confirmed position are lost, and only a new
//! snapshot (into a new slot) brings the targets back in line.
//!
//! How a server shows it differs by version, so the state is read from
//! `to_jsonb(pg_replication_slots)` (columns a server lacks read as
//! NULL): `wal_status = 'lost'` (13+: `max_slot_wal_keep_size`
//! exceeded), `conflicting` (16+: a conflict with recovery on a standby),
//! `invalidation_reason` (17+: `wal_removed`, `rows_removed`,
//! `wal_level_insufficient`, and from 18 `idle_timeout`).

use sqlx::{PgConnection, Row};

use crate::error::PgError;

/// An SQL expression over `pg_replication_slots AS s`: why the slot was
/// invalidated (`wal_removed`, `rows_removed`, `wal_level_insufficient`,
/// `idle_timeout`, `conflict with recovery`), or NULL when it was not.
/// (PostgreSQL 16 also sets `conflicting` for a slot whose WAL was
/// removed: `wal_status` is looked at first.)
pub const INVALIDATION_SQL: &str = "CASE \
     WHEN to_jsonb(s)->>'invalidation_reason' IS NOT NULL THEN to_jsonb(s)->>'invalidation_reason' \
     WHEN s.wal_status = 'lost' THEN 'wal_removed' \
     WHEN (to_jsonb(s)->>'conflicting')::bool THEN 'conflict with recovery' END";

/// Why the slot was invalidated, as the server names it
/// ([`INVALIDATION_SQL`]); `None`: it exists and was not invalidated, or
/// it does not exist.
pub async fn slot_invalidation(
    conn: &mut PgConnection,
    slot: &str,
) -> Result<Option<String>, PgError> {
    let sql = format!(
        "SELECT ({INVALIDATION_SQL}) AS reason FROM pg_catalog.pg_replication_slots AS s \
         WHERE s.slot_name = $1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(slot)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| PgError::sql(format!("reading the state of replication slot {slot}"), e))?;
    match row {
        Some(r) => r
            .try_get("reason")
            .map_err(|e| PgError::sql(format!("reading the state of replication slot {slot}"), e)),
        None => Ok(None),
    }
}

/// What happened, in words, for a reason of [`INVALIDATION_SQL`]
/// (`None`: not known, e.g. from the walsender's error alone).
fn what_happened(reason: Option<&str>) -> String {
    match reason {
        Some("wal_removed") | None => "the server removed WAL it still needed \
             (max_slot_wal_keep_size exceeded while the slot was behind)"
            .to_owned(),
        Some("rows_removed") => "the primary removed catalog rows it still needed \
             (a conflict with recovery on this standby; hot_standby_feedback on with a physical \
             slot avoids it)"
            .to_owned(),
        Some("wal_level_insufficient") => {
            "wal_level on the primary was lowered below logical".to_owned()
        }
        Some("idle_timeout") => {
            "it was unused for longer than idle_replication_slot_timeout".to_owned()
        }
        Some(other) => format!("invalidation_reason {other}"),
    }
}

/// The one message for an invalidated slot: what happened, that the
/// changes since its confirmed position are lost, and what to do.
pub fn invalidated_message(slot: &str, reason: Option<&str>) -> String {
    format!(
        "replication slot `{slot}` was invalidated: {}. It can never stream again and the changes \
         after its last confirmed position are lost, so a new snapshot is needed: drop the slot \
         (`cdc-engine resnapshot --config <file>` does it, or SELECT pg_drop_replication_slot({});) \
         and start the engine with snapshot.mode: initial and slot.create: true, which creates a \
         new slot and copies the tables anew",
        what_happened(reason),
        crate::ident::quote_literal(slot)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_the_cause_and_the_way_out() {
        let m = invalidated_message("cdc_slot", Some("wal_removed"));
        assert!(
            m.starts_with("replication slot `cdc_slot` was invalidated"),
            "{m}"
        );
        assert!(m.contains("max_slot_wal_keep_size"), "{m}");
        assert!(m.contains("cdc-engine resnapshot --config"), "{m}");
        assert!(m.contains("pg_drop_replication_slot('cdc_slot')"), "{m}");
        let conflict = invalidated_message("s", Some("rows_removed"));
        assert!(conflict.contains("conflict with recovery"), "{conflict}");
        let unknown = invalidated_message("s", Some("something_new"));
        assert!(
            unknown.contains("invalidation_reason something_new"),
            "{unknown}"
        );
    }
}
