//! Named points where fault tests stop a sink worker deterministically,
//! in builds with the `failpoints` feature only (the engine's test build;
//! the process sets the `fail` crate up from the `FAILPOINTS` environment
//! variable). The action `return` makes the worker wait there forever while
//! the rest of the process carries on, `return(MS)` makes it wait `MS`
//! milliseconds.
//!
//! | name | where |
//! |---|---|
//! | `sink::before_write_reads` | before a sink writes a group of batches holding snapshot reads |
//! | `sink::before_ack` | after a sink wrote a group of batches with events, before they count as durable |

use std::time::Duration;

use cdc_core::{Batch, Event, Op};

/// Evaluates the failpoint `name`: `return(MS)` waits `MS` ms, `return`
/// never returns.
pub(crate) async fn reached(name: &str) {
    if let Some(arg) = fail::eval(name, |arg| arg) {
        match arg.as_deref().map(str::parse::<u64>) {
            Some(Ok(ms)) => {
                tracing::warn!(failpoint = name, ms, "failpoint reached: waiting");
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            _ => {
                tracing::warn!(failpoint = name, "failpoint reached: this task stops here");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// `true` when `batch` holds rows read by a snapshot.
pub(crate) fn has_snapshot_reads(batch: &Batch) -> bool {
    batch
        .events
        .iter()
        .any(|e| matches!(e, Event::Change(c) if c.op == Op::Read))
}
