//! Rendering a batch as JSON lines, shared by the stdout and file sinks.

use std::time::{SystemTime, UNIX_EPOCH};

use cdc_core::encode::DebeziumJson;
use cdc_core::{Batch, Event};

/// Appends one Debezium envelope per row change of `batch` to `out`, each
/// followed by a newline. Control events are not written.
pub fn render_batch(encoder: &DebeziumJson, batch: &Batch, out: &mut Vec<u8>) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    for event in &batch.events {
        if let Event::Change(change) = event {
            encoder.encode(change, now_ms, out);
            out.push(b'\n');
        }
    }
}
