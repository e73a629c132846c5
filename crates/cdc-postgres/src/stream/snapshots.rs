//! The streaming side of incremental snapshots ([`crate::incremental`]):
//! signal rows read from the stream, watermarks turned into reads at their
//! position, changes handed to the open chunk's window.

use cdc_core::{Batch, ChangeEvent, ControlEvent, Event, Lsn, Op, SnapshotMarker, Value};

use super::context::Context;
use super::rows::parse_tuple;
use crate::error::PgError;
use crate::pgoutput::TupleData;

impl Context {
    /// `true` when relation `oid` is the signal table.
    pub fn is_signal(&self, oid: u32) -> bool {
        match (&self.incremental, self.changes.described(oid)) {
            (Some(inc), Some(rel)) => inc.is_signal_table(&rel.schema.name),
            _ => false,
        }
    }

    /// A row inserted into the signal table (relation `oid`).
    pub async fn signal(&mut self, oid: u32, tuple: &TupleData) -> Result<(), PgError> {
        let Some(rel) = self.changes.described(oid) else {
            return Ok(());
        };
        let values = parse_tuple(rel, tuple)?;
        let column = |name: &str| {
            rel.schema
                .column_index(name)
                .and_then(|i| values.get(i))
                .cloned()
        };
        let id = match column("id") {
            Some(Value::Int8(v)) => v,
            Some(Value::Int4(v)) => i64::from(v),
            _ => {
                tracing::warn!("ignoring a signal row without an integer id");
                return Ok(());
            }
        };
        let kind = match column("kind") {
            Some(Value::Text(k)) => k,
            _ => {
                tracing::warn!(signal = id, "ignoring a signal row without a kind");
                return Ok(());
            }
        };
        let payload = match column("payload") {
            Some(Value::Json(p) | Value::Text(p)) => Some(p),
            _ => None,
        };
        match self.incremental.as_mut() {
            Some(inc) => inc.on_signal(id, &kind, payload.as_deref()).await,
            None => Ok(()),
        }
    }

    /// A change of a captured table, on its way into a batch.
    pub fn observe(&mut self, change: &ChangeEvent) {
        if let Some(inc) = self.incremental.as_mut() {
            inc.observe(change);
        }
    }

    /// A watermark message at `lsn`: the open chunk's high watermark adds
    /// its reads to `batch`, at the watermark's position.
    pub fn watermark(
        &mut self,
        content: &[u8],
        lsn: Lsn,
        batch: &mut Batch,
    ) -> Result<(), PgError> {
        let (Some(inc), Some(commit_lsn)) = (self.incremental.as_mut(), self.changes.commit_lsn())
        else {
            return Ok(());
        };
        let Some(release) = inc.on_mark(content, commit_lsn) else {
            return Ok(());
        };
        let name = release.table.name.clone();
        if release.begin {
            batch
                .events
                .push(Event::Control(ControlEvent::IncrementalSnapshotBegin {
                    table: name.clone(),
                    snapshot: release.snapshot,
                }));
        }
        for row in release.rows {
            let mut source = self.changes.source_info(lsn)?;
            source.snapshot = SnapshotMarker::Incremental;
            batch.events.push(Event::Change(ChangeEvent {
                op: Op::Read,
                table: release.table.clone(),
                before: None,
                after: Some(row),
                source,
            }));
        }
        if let Some(rows) = release.end {
            batch
                .events
                .push(Event::Control(ControlEvent::IncrementalSnapshotEnd {
                    table: name,
                    snapshot: release.snapshot,
                    rows,
                }));
        }
        Ok(())
    }
}
