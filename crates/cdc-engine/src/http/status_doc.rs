//! The `/status` JSON document.

use std::time::{SystemTime, UNIX_EPOCH};

use cdc_core::{ErrorClass, Lsn};
use serde_json::{json, Value};

use crate::engine_state::EngineState;

/// The `/status` document for `state` (secrets masked in every error text).
pub fn status_document(state: &EngineState) -> Value {
    let source = &state.source;
    let lag = state.lag.sample();
    let sinks: Vec<Value> = state
        .metrics
        .sinks()
        .iter()
        .map(|s| {
            json!({
                "name": s.id(),
                "type": s.kind(),
                "state": s.state().as_str(),
                "events_written": s.events(),
                "batches_written": s.batches(),
                "errors": s.errors(ErrorClass::Retryable) + s.errors(ErrorClass::Fatal),
                "retryable_errors": s.errors(ErrorClass::Retryable),
                "fatal_errors": s.errors(ErrorClass::Fatal),
                "last_error": s.last_error().map(|e| state.secrets.scrub(&e).into_owned()),
                "channel_queued": s.queued(),
                "channel_capacity": s.capacity(),
            })
        })
        .collect();
    let progress = source.snapshot_progress();
    let snapshot = if progress.tables.is_empty() && progress.started_at.is_none() {
        Value::Null
    } else {
        let tables: Vec<Value> = progress
            .tables
            .iter()
            .map(|(t, p)| {
                json!({
                    "table": t.to_string(),
                    "rows": p.rows,
                    "chunks_done": p.chunks_done,
                    "chunks_total": p.chunks_total,
                })
            })
            .collect();
        json!({
            "started_at_ms": progress.started_at.map(unix_ms),
            "finished_at_ms": progress.finished_at.map(unix_ms),
            "duration_seconds": progress.duration_secs(),
            "exports_replaced": progress.exports_replaced,
            "coordination_lost": progress.coordination_lost,
            "tables_reread": progress.tables_reread,
            "tables": tables,
        })
    };
    let incremental: Vec<Value> = source
        .incremental_progress()
        .iter()
        .map(|(t, p)| {
            json!({
                "table": t.to_string(),
                "snapshot": p.snapshot,
                "state": p.state.as_str(),
                "chunks": p.chunks,
                "rows": p.rows,
                "last_key": p.last_key,
                "where": p.filter,
                "error": p.error.as_deref().map(|e| state.secrets.scrub(e).into_owned()),
            })
        })
        .collect();
    json!({
        "pipeline": state.pipeline,
        "phase": state.phase_label(),
        "source_phase": source.phase().as_str(),
        "stopping": state.stopping(),
        "error": state.failure(),
        "slot": state.slot,
        "received_lsn": lsn_text(source.received()),
        "acknowledged_lsn": lsn_text(state.metrics.acknowledged()),
        "confirmed_flush_lsn": lag.confirmed_flush.map(|l| l.to_string()),
        "server_wal_lsn": lag.server_wal.map(|l| l.to_string()),
        "server_wal_end_reported": lsn_text(source.server_wal_end()),
        "lag_bytes": lag.lag_bytes(),
        "slot_active": lag.slot_active,
        "slot_invalidation": lag.invalidation,
        "lag_polled_at_ms": lag.polled_at.map(unix_ms),
        "lag_poll_error": lag.error.as_deref().map(|e| state.secrets.scrub(e).into_owned()),
        "reconnects": source.reconnects(),
        "heartbeats": source.heartbeats(),
        "untracked_changes": source
            .untracked_changes()
            .into_iter()
            .map(|(relation, n)| (relation.to_string(), json!(n)))
            .collect::<serde_json::Map<String, serde_json::Value>>(),
        "tables": source.tables().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "tables_dropped": source
            .dropped_tables()
            .into_iter()
            .map(|(t, at)| json!({"table": t.to_string(), "noticed_at_ms": unix_ms(at)}))
            .collect::<Vec<_>>(),
        "sinks": sinks,
        "snapshot": snapshot,
        "incremental_snapshots": incremental,
    })
}

/// An LSN as PostgreSQL writes it; `null` for `0/0` (nothing yet).
fn lsn_text(lsn: Lsn) -> Option<String> {
    (lsn != Lsn::ZERO).then(|| lsn.to_string())
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
