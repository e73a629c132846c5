//! The steps of the states `Starting` and `Standby`: starting the stream
//! from the acknowledged position, the first time, after the snapshot, and
//! again after a failure (waiting with backoff and jitter first, and
//! retrying transient errors). With `standby` set, every attempt checks the
//! slot first ([`super::standby`]) and stands by while another session
//! holds it.

use std::time::Duration;

use cdc_core::{ErrorClass, Phase};

use super::context::Context;
use super::standby::SlotCheck;
use super::state::{PendingStart, Standby, Starting, State};
use crate::error::{is_slot_in_use, slot_in_use, PgError};
use crate::replication::{PgWireTransport, ReplicationTransport};

/// What an attempt to start the stream got to.
enum Attempted {
    /// The stream runs.
    Started(PgWireTransport),
    /// Another session holds the slot.
    Held(Standby),
}

impl Context {
    /// One step of [`State::Starting`]: shuts the failed stream down (for
    /// at most 2 s), waits, and tries to start the stream.
    pub async fn start(&mut self, starting: &mut Starting) -> Result<State, PgError> {
        if let Some(mut old) = starting.failed.take() {
            let _ =
                tokio::time::timeout(Duration::from_secs(2), old.shutdown(self.ack.get())).await;
        }
        // A deadline, so that a call dropped while it waited does not make
        // the next one wait the whole delay again.
        if let Some(delay) = starting.wait.take() {
            starting.until = Some(tokio::time::Instant::now() + delay);
        }
        if let Some(until) = starting.until {
            tokio::time::sleep_until(until).await;
            starting.until = None;
        }
        self.attempt_start(starting.reconnect, None, Some(&mut starting.pending))
            .await
    }

    /// One step of [`State::Standby`]: waits, then tries again to start
    /// the stream (which checks the slot first).
    pub async fn stand_by(&mut self, standby: &Standby) -> Result<State, PgError> {
        tokio::time::sleep(standby.wait).await;
        self.attempt_start(standby.reconnect, Some(*standby), None)
            .await
    }

    /// One attempt to start the stream from the acknowledged position,
    /// from [`State::Starting`] or (`standing` given) [`State::Standby`].
    /// Returns the state it leads to: streaming; standing by while another
    /// session holds the slot; or, after a transient error, another attempt
    /// after a backoff delay. Definite errors end it with
    /// [`PgError::explain`]'s advice. With `pending` given, the replication
    /// connection is started in a task kept there until it is done, so a
    /// call dropped while it waited leaves the start running for the next.
    async fn attempt_start(
        &mut self,
        reconnect: bool,
        standing: Option<Standby>,
        pending: Option<&mut Option<PendingStart>>,
    ) -> Result<State, PgError> {
        // Standing by until the slot is seen free.
        let mut standing = standing;
        let attempted = async {
            self.repick_host().await?;
            self.ensure_catalog().await?;
            if self.standby {
                match self.check_slot(standing.as_ref(), reconnect).await? {
                    SlotCheck::Held(standby) => return Ok(Attempted::Held(standby)),
                    SlotCheck::Free => standing = None,
                }
            }
            let start = PgWireTransport::start(
                PgWireTransport::replication_config(
                    &self.params,
                    &self.cfg.slot,
                    &self.cfg.publication,
                ),
                self.ack.get(),
                self.cfg.status_interval,
                self.cfg.buffer_events,
            );
            let Some(pending) = pending else {
                return start.await.map(Attempted::Started);
            };
            let task = pending.get_or_insert_with(|| PendingStart(tokio::spawn(start)));
            let started = (&mut task.0).await;
            *pending = None;
            started
                .map_err(|e| PgError::Protocol(format!("starting the replication stream: {e}")))?
                .map(Attempted::Started)
        }
        .await;
        match attempted {
            Ok(Attempted::Started(t)) => {
                if reconnect {
                    self.cfg.status.record_reconnect();
                    tracing::info!(slot = %self.cfg.slot, from = %self.ack.get(), "replication stream reconnected");
                } else {
                    tracing::info!(slot = %self.cfg.slot, start = %self.ack.get(), "streaming started");
                }
                self.changes.forget_transaction();
                self.heartbeat.activity();
                self.cfg.status.set_phase(Phase::Streaming);
                Ok(State::Streaming(t))
            }
            Ok(Attempted::Held(standby)) => Ok(State::Standby(standby)),
            Err(e) if self.standby && is_slot_in_use(&e) => {
                // Another standby took the slot first.
                tracing::info!(slot = %self.cfg.slot, "another instance took slot {} first; standing by", self.cfg.slot);
                self.cfg.status.set_phase(Phase::Standby);
                Ok(State::Standby(Standby {
                    reconnect,
                    holder: None,
                    wait: self.cfg.activity_check_interval,
                }))
            }
            Err(e) if e.class() == ErrorClass::Retryable => {
                let e = slot_in_use(e, &self.cfg.slot);
                let delay = self.backoff.next_delay();
                if self.backoff.exhausted() {
                    return Err(PgError::Stopped(format!(
                        "could not start the replication stream of slot {} for {:.1?} \
                         (the retry bound is {:?}); last error: {}",
                        self.cfg.slot,
                        self.backoff.failing_for().unwrap_or_default(),
                        self.backoff.bound().unwrap_or_default(),
                        cdc_core::error_chain(&e)
                    )));
                }
                tracing::warn!(error = %cdc_core::error_chain(&e), attempt = self.backoff.attempts(), retry_in = ?delay, "starting the replication stream failed; retrying");
                Ok(match standing {
                    Some(standby) => State::Standby(Standby {
                        wait: delay,
                        ..standby
                    }),
                    None => State::Starting(Starting {
                        failed: None,
                        reconnect,
                        wait: Some(delay),
                        until: None,
                        pending: None,
                    }),
                })
            }
            Err(e) => Err(e.explain(self.names())),
        }
    }
}
