//! Renders the engine's state as a `/metrics` document.

use cdc_core::{ErrorClass, IncrementalProgress, IncrementalState, Phase, TableProgress};

use super::exposition::TextEncoder;
use super::names;
use super::{op_label, SinkState, OPS};
use crate::engine_state::EngineState;

/// The `/metrics` document for `state`.
pub fn render_metrics(state: &EngineState) -> String {
    let mut enc = TextEncoder::new();
    let source = &state.source;

    enc.family(&names::SOURCE_EVENTS);
    for (table, counts) in state.metrics.source_events() {
        let table = table.to_string();
        for (op, n) in OPS.iter().zip(counts) {
            enc.sample_u64(
                names::SOURCE_EVENTS.name,
                &[("table", &table), ("op", op_label(*op))],
                n,
            );
        }
    }
    enc.family(&names::SOURCE_RECONNECTS);
    enc.sample_u64(names::SOURCE_RECONNECTS.name, &[], source.reconnects());
    enc.family(&names::SOURCE_HEARTBEATS);
    enc.sample_u64(names::SOURCE_HEARTBEATS.name, &[], source.heartbeats());
    enc.family(&names::SOURCE_UNTRACKED_CHANGES);
    for (relation, n) in source.untracked_changes() {
        let relation = relation.to_string();
        enc.sample_u64(
            names::SOURCE_UNTRACKED_CHANGES.name,
            &[("relation", &relation)],
            n,
        );
    }

    enc.family(&names::PHASE);
    let current = state.phase_label();
    let labels = Phase::all()
        .iter()
        .map(|p| p.as_str())
        .chain(std::iter::once("failed"));
    for label in labels {
        enc.sample_u64(
            names::PHASE.name,
            &[("phase", label)],
            u64::from(label == current),
        );
    }

    enc.family(&names::RECEIVED_LSN);
    enc.sample_u64(names::RECEIVED_LSN.name, &[], source.received().0);
    enc.family(&names::ACKNOWLEDGED_LSN);
    enc.sample_u64(
        names::ACKNOWLEDGED_LSN.name,
        &[],
        state.metrics.acknowledged().0,
    );

    let lag = state.lag.sample();
    let optional = [
        (
            &names::CONFIRMED_FLUSH_LSN,
            lag.confirmed_flush.map(|l| l.0),
        ),
        (&names::SERVER_WAL_LSN, lag.server_wal.map(|l| l.0)),
        (&names::REPLICATION_LAG_BYTES, lag.lag_bytes()),
        (&names::SLOT_ACTIVE, lag.slot_active.map(u64::from)),
        (
            &names::SLOT_INVALIDATED,
            lag.polled_at.map(|_| u64::from(lag.invalidation.is_some())),
        ),
    ];
    for (metric, value) in optional {
        // Unknown values are left out rather than shown as 0.
        if let Some(v) = value {
            enc.family(metric);
            enc.sample_u64(metric.name, &[], v);
        }
    }
    enc.family(&names::LAG_POLL_ERRORS);
    enc.sample_u64(names::LAG_POLL_ERRORS.name, &[], state.lag.errors());

    render_sinks(state, &mut enc);
    render_snapshot(state, &mut enc);
    render_incremental(state, &mut enc);
    enc.finish()
}

fn render_sinks(state: &EngineState, enc: &mut TextEncoder) {
    let sinks = state.metrics.sinks();
    let each = |enc: &mut TextEncoder, metric: &names::Metric, value: &dyn Fn(usize) -> u64| {
        enc.family(metric);
        for (i, s) in sinks.iter().enumerate() {
            enc.sample_u64(
                metric.name,
                &[("sink", s.id()), ("type", s.kind())],
                value(i),
            );
        }
    };
    each(enc, &names::SINK_EVENTS, &|i| sinks[i].events());
    each(enc, &names::SINK_BATCHES, &|i| sinks[i].batches());
    enc.family(&names::SINK_ERRORS);
    for s in sinks {
        for class in [ErrorClass::Retryable, ErrorClass::Fatal] {
            let class_label = class.to_string();
            enc.sample_u64(
                names::SINK_ERRORS.name,
                &[
                    ("sink", s.id()),
                    ("type", s.kind()),
                    ("class", &class_label),
                ],
                s.errors(class),
            );
        }
    }
    enc.family(&names::SINK_WRITE_SECONDS);
    for s in sinks {
        enc.histogram(
            &names::SINK_WRITE_SECONDS,
            &[("sink", s.id()), ("type", s.kind())],
            &s.write_seconds().snapshot(),
        );
    }
    each(enc, &names::SINK_CHANNEL_QUEUED, &|i| sinks[i].queued());
    each(enc, &names::SINK_CHANNEL_CAPACITY, &|i| sinks[i].capacity());
    enc.family(&names::SINK_STATE);
    for s in sinks {
        let current = s.state();
        for st in SinkState::ALL {
            enc.sample_u64(
                names::SINK_STATE.name,
                &[("sink", s.id()), ("type", s.kind()), ("state", st.as_str())],
                u64::from(st == current),
            );
        }
    }
}

/// Reads one number of a table's snapshot progress.
type ProgressField = fn(&TableProgress) -> u64;

fn render_snapshot(state: &EngineState, enc: &mut TextEncoder) {
    let progress = state.source.snapshot_progress();
    if progress.tables.is_empty() && progress.started_at.is_none() {
        return;
    }
    let tables: Vec<(String, TableProgress)> = progress
        .tables
        .iter()
        .map(|(t, p)| (t.to_string(), *p))
        .collect();
    let per_table: [(&names::Metric, ProgressField); 3] = [
        (&names::SNAPSHOT_ROWS, |p| p.rows),
        (&names::SNAPSHOT_CHUNKS_DONE, |p| p.chunks_done),
        (&names::SNAPSHOT_CHUNKS_PLANNED, |p| p.chunks_total),
    ];
    for (metric, value) in per_table {
        enc.family(metric);
        for (table, p) in &tables {
            enc.sample_u64(metric.name, &[("table", table)], value(p));
        }
    }
    if let Some(secs) = progress.duration_secs() {
        enc.family(&names::SNAPSHOT_DURATION_SECONDS);
        enc.sample_f64(names::SNAPSHOT_DURATION_SECONDS.name, &[], secs);
    }
}

/// The incremental snapshots' families, left out before the first one.
fn render_incremental(state: &EngineState, enc: &mut TextEncoder) {
    let progress = state.source.incremental_progress();
    if progress.is_empty() {
        return;
    }
    let tables: Vec<(String, &IncrementalProgress)> =
        progress.iter().map(|(t, p)| (t.to_string(), p)).collect();
    enc.family(&names::INCREMENTAL_ROWS);
    for (table, p) in &tables {
        enc.sample_u64(
            names::INCREMENTAL_ROWS.name,
            &[("table", table)],
            p.rows_emitted,
        );
    }
    enc.family(&names::INCREMENTAL_CHUNKS);
    for (table, p) in &tables {
        enc.sample_u64(
            names::INCREMENTAL_CHUNKS.name,
            &[("table", table)],
            p.chunks_emitted,
        );
    }
    enc.family(&names::INCREMENTAL_STATE);
    for (table, p) in &tables {
        for st in IncrementalState::ALL {
            enc.sample_u64(
                names::INCREMENTAL_STATE.name,
                &[("table", table), ("state", st.as_str())],
                u64::from(st == p.state),
            );
        }
    }
}
