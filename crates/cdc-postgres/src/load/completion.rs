//! Marking chunks done once the sinks made their rows durable, and
//! starting a table over when its done chunks were read from different
//! files of it.

use cdc_core::AckHandle;

use super::emitter::Completion;
use super::phase::SnapshotPhase;
use crate::error::PgError;

impl SnapshotPhase {
    /// Marks done the chunks whose rows are durable. On an error the
    /// chunks not yet marked wait for the next call.
    pub(super) async fn complete_durable(&mut self, ack: &AckHandle) -> Result<(), PgError> {
        let mut completed = self.emitter.take_completed(ack.durable_batches());
        if completed.is_empty() {
            return Ok(());
        }
        let mut marked_any = false;
        while !completed.is_empty() {
            let c = completed.remove(0);
            if !self.claims.holds(c.chunk_id, c.attempt) {
                // Its claim was given up before its rows were written (a
                // sink found it lost and dropped them) or taken over: the
                // chunk is read again, never marked done from here.
                let released = self
                    .store
                    .release_chunk(
                        &mut self.meta,
                        c.chunk_id,
                        &self.settings.instance_id,
                        c.attempt,
                    )
                    .await;
                if let Err(e) = released {
                    completed.insert(0, c);
                    self.emitter.requeue(completed);
                    if marked_any {
                        self.chunks_done.send_modify(|n| *n += 1);
                    }
                    return Err(e);
                }
                continue;
            }
            let marked = self
                .store
                .mark_done(
                    &mut self.meta,
                    c.chunk_id,
                    &self.settings.instance_id,
                    c.attempt,
                    c.rows,
                    Some(&c.files),
                )
                .await;
            // `restarted`: its table was started over just now.
            let marked = match marked {
                Ok(true) => self
                    .check_read_from(&c)
                    .await
                    .map(|restarted| (true, restarted)),
                Ok(false) => Ok((false, false)),
                Err(e) => Err(e),
            };
            let (mine, restarted) = match marked {
                Ok(m) => m,
                // Marked, but not checked: marked again (which changes
                // nothing) and checked in the next round.
                Err(e) => {
                    completed.insert(0, c);
                    self.emitter.requeue(completed);
                    if marked_any {
                        self.chunks_done.send_modify(|n| *n += 1);
                    }
                    return Err(e);
                }
            };
            marked_any = true;
            // Stop heartbeating (a heartbeat racing the update would find
            // the chunk done and report a takeover that did not happen).
            self.claims.forget(c.chunk_id, c.attempt);
            if mine {
                if !restarted {
                    self.status.snapshot_chunk_done(&c.table);
                }
                crate::failpoint::failpoint!("snapshot::after_mark_done");
            } else {
                tracing::warn!(chunk = c.chunk_id, attempt = c.attempt, "chunk was claimed again before its rows were durable here; it is read again under the new claim");
            }
        }
        self.chunks_done.send_modify(|n| *n += 1);
        Ok(())
    }

    /// After chunk `c` was marked done: when the done chunks of its table
    /// were read from different files of it, a rewrite came between their
    /// reads unseen (each read under a snapshot that saw the file it read:
    /// a new export came between them, after the rewrite), so rows moved
    /// by it may be missing; the table is started over, as a reader does
    /// when it sees a rewrite. `true` when it was started over.
    async fn check_read_from(&mut self, c: &Completion) -> Result<bool, PgError> {
        if !self
            .store
            .read_from_differs(&mut self.meta, c.chunk_id)
            .await?
        {
            return Ok(false);
        }
        let table = &c.table;
        match self
            .store
            .reread_table(&mut self.meta, &self.slot, table)
            .await?
        {
            Some(chunks) => {
                self.status.snapshot_table_reread(table, chunks);
                tracing::warn!(table = %table, chunks,
                    "table {table} was rewritten while the snapshot was running (ALTER TABLE … TYPE, VACUUM FULL, \
                     CLUSTER, pg_repack or TRUNCATE): its chunks were read from different files of it, under \
                     snapshots exported before and after, so rows may be missing; all {chunks} of its chunks are \
                     read again under a new exported snapshot (rows of it already delivered are delivered again)");
            }
            None => {
                tracing::info!(table = %table, "table {table} was rewritten while the snapshot was running; \
                    it is already being read again");
            }
        }
        Ok(true)
    }
}
