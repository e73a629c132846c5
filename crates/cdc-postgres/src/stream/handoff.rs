//! The snapshot phase seen from the source: one batch of snapshot reads
//! per step, and the handoff to streaming once the snapshot is complete
//! (see [`crate::load`] for the snapshot itself).

use cdc_core::{Batch, Phase};

use super::context::Context;
use super::state::{Starting, State};
use crate::error::PgError;
use crate::load::{SnapshotPhase, Transition};

impl Context {
    /// Fills one batch with snapshot events; returns it with the
    /// transition once the whole snapshot is complete.
    pub async fn read_snapshot(
        &mut self,
        phase: &mut SnapshotPhase,
    ) -> Result<(Batch, Option<Transition>), PgError> {
        let mut batch = Batch::default();
        let transition = phase
            .fill(
                &mut batch,
                self.returned + 1,
                &self.ack,
                self.cfg.max_batch_events,
                self.cfg.max_batch_wait,
            )
            .await?;
        Ok((batch, transition))
    }

    /// Where the source goes once the snapshot is complete.
    pub fn after_snapshot(&mut self, transition: Transition) -> State {
        match transition {
            Transition::End => {
                self.cfg.status.set_phase(Phase::Stopped);
                State::Ended
            }
            Transition::Stream(t) => {
                tracing::info!(slot = %self.cfg.slot, start = %self.ack.get(), "snapshot done; streaming started");
                self.heartbeat.activity();
                self.cfg.status.set_phase(Phase::Streaming);
                State::Streaming(t)
            }
            Transition::Connect => {
                tracing::info!(slot = %self.cfg.slot, "snapshot done; starting to stream");
                // The instance that exported the snapshot streams; the
                // others wait for the slot like standbys.
                self.standby = true;
                State::Starting(Starting::first())
            }
        }
    }
}
