//! Streaming: batches filled from the replication stream, cut on size
//! limits or when the stream goes quiet.

use std::time::{Duration, Instant};

use cdc_core::{Batch, ErrorClass, Lsn};
use sqlx::{Connection, PgConnection};

use super::context::Context;
use crate::error::PgError;
use crate::pgoutput;
use crate::replication::{PgWireTransport, Recv, ReplicationTransport, WireEvent};

/// What one streaming step came to.
pub(super) enum Streamed {
    /// A batch is ready; streaming goes on.
    Batch(Batch),
    /// The stream, or the catalog connection, failed: the stream is started
    /// over from the acknowledged position. `batch` holds what arrived
    /// before; `bytes` counts the pgoutput bytes received into it.
    Failed { batch: Batch, bytes: usize },
    /// The stream ended (a stop was requested): the batch, if anything
    /// arrived.
    Ended(Option<Batch>),
}

/// The batch being filled, kept in the [`Context`] between the awaits of
/// [`Context::fill_batch`] so that a call dropped midway loses nothing:
/// the next call goes on filling it.
#[derive(Default)]
pub(super) struct Filling {
    batch: Batch,
    /// pgoutput bytes received into `batch`.
    bytes: usize,
    /// When the first event of `batch` arrived.
    first_at: Option<Instant>,
    /// An event taken off the stream is being handled: set when a dropped
    /// call left it half handled (the event is lost to this stream, which
    /// must then start over).
    pub handling: bool,
}

impl Filling {
    /// The batch, leaving an empty one.
    fn take(&mut self) -> (Batch, usize) {
        self.first_at = None;
        (
            std::mem::take(&mut self.batch),
            std::mem::take(&mut self.bytes),
        )
    }
}

impl Context {
    /// Fills a batch from `transport` until a size limit is reached or the
    /// stream goes quiet; writes a heartbeat first when one is due. `bytes`:
    /// pgoutput bytes already counted toward this batch (received before a
    /// restart into a batch that stayed empty).
    ///
    /// Cancel-safe: the batch under way lives in `self.filling`, and events
    /// come from a channel; only a call dropped while it handles an event
    /// loses that event, which `filling.handling` then says.
    pub async fn fill_batch(
        &mut self,
        transport: &mut PgWireTransport,
        bytes: usize,
    ) -> Result<Streamed, PgError> {
        if self.filling.first_at.is_none() {
            self.filling.bytes += bytes;
        }
        let idle_poll = Duration::from_millis(200);
        loop {
            if self.filling.first_at.is_none()
                && !self.changes.in_transaction()
                && self.heartbeat.due()
            {
                self.write_heartbeat().await;
            }
            // At most one chunk of an incremental snapshot per batch, read
            // between two transactions of the stream.
            if self.filling.first_at.is_none() && !self.changes.in_transaction() {
                if let Some(inc) = self.incremental.as_mut() {
                    inc.step(self.ack.get()).await;
                }
                // Tables created or dropped since the last check.
                let mut batch = std::mem::take(&mut self.filling.batch);
                self.discover(&mut batch).await;
                self.filling.batch = batch;
                if !self.filling.batch.is_empty() {
                    self.filling.first_at = Some(Instant::now());
                }
            }
            transport.follow(&self.ack);
            let first_at = self.filling.first_at;
            // A batch ends on time only between transactions (the rest of
            // a transaction is already on its way: pgoutput v1 sends it at
            // commit), so an acknowledged batch never ends inside one
            // unless a size limit cut it.
            let wait = match first_at {
                Some(t) if !self.changes.in_transaction() => {
                    self.cfg.max_batch_wait.saturating_sub(t.elapsed())
                }
                _ => idle_poll,
            };
            match transport.recv(wait).await {
                Ok(Recv::Idle) => {
                    if first_at.is_some() && !self.changes.in_transaction() {
                        return Ok(Streamed::Batch(self.filling.take().0));
                    }
                }
                Ok(Recv::Ended) => {
                    let (batch, _) = self.filling.take();
                    return Ok(Streamed::Ended(first_at.is_some().then_some(batch)));
                }
                Ok(Recv::Event(ev)) => {
                    self.backoff.reset();
                    if let WireEvent::Data { data, .. } = &ev {
                        self.filling.bytes += data.len();
                    }
                    self.filling.handling = true;
                    let mut batch = std::mem::take(&mut self.filling.batch);
                    let handled = self.handle(transport, ev, &mut batch).await;
                    self.filling.batch = batch;
                    self.filling.handling = false;
                    match handled {
                        Ok(()) => {}
                        // The catalog connection failed and could not be
                        // replaced right now (the server is restarting,
                        // say): start the stream over, with backoff, from
                        // the acknowledged position, as after a stream
                        // error (the start connects the catalog again
                        // first). The change is sent again.
                        Err(e) if e.class() == ErrorClass::Retryable => {
                            tracing::warn!(error = %cdc_core::error_chain(&e), "catalog connection failed while streaming; restarting the replication stream");
                            let (batch, bytes) = self.filling.take();
                            return Ok(Streamed::Failed { batch, bytes });
                        }
                        Err(e) => return Err(e),
                    }
                    let batch = &self.filling.batch;
                    if first_at.is_none() && (!batch.is_empty() || batch.checkpoint.is_some()) {
                        self.filling.first_at = Some(Instant::now());
                    }
                    if batch.events.len() >= self.cfg.max_batch_events
                        || self.filling.bytes >= self.cfg.max_batch_bytes
                    {
                        return Ok(Streamed::Batch(self.filling.take().0));
                    }
                }
                Err(e) if e.class() == ErrorClass::Retryable => {
                    tracing::warn!(error = %cdc_core::error_chain(&e), "replication stream failed; reconnecting");
                    let (batch, bytes) = self.filling.take();
                    return Ok(Streamed::Failed { batch, bytes });
                }
                Err(e) => return Err(e.explain(self.names())),
            }
        }
    }

    /// Handles one event of the stream: positions, keepalives, and the
    /// pgoutput messages that make up `batch` (raw ones decoded here).
    async fn handle(
        &mut self,
        transport: &mut PgWireTransport,
        ev: WireEvent,
        batch: &mut Batch,
    ) -> Result<(), PgError> {
        match ev {
            WireEvent::KeepAlive {
                wal_end,
                reply_requested,
            } => {
                self.cfg.status.record_server_wal_end(wal_end);
                if reply_requested {
                    self.confirm_quiet_position(transport, wal_end, batch);
                    tracing::debug!(wal_end = %wal_end, "the server asked for a reply");
                }
            }
            WireEvent::Data {
                wal_start,
                wal_end,
                data,
            } => {
                self.changes.received = self.changes.received.max(wal_start);
                if !wal_end.is_zero() {
                    self.cfg.status.record_server_wal_end(wal_end);
                }
                let msg = pgoutput::decode(&data)?;
                self.handle_message(msg, wal_start, batch).await?;
            }
            WireEvent::Decoded(msg) => self.handle_message(msg, Lsn::ZERO, batch).await?,
        }
        Ok(())
    }

    /// Confirms the server's WAL end when it asks for a reply twice in a
    /// row with the same WAL end (the server stopping, or idle) and
    /// everything received is durable.
    ///
    /// A logical walsender only exits at server shutdown once the client
    /// reported the position it sent up to (its shutdown checkpoint
    /// included), so without this a fast shutdown waits for this client
    /// forever. It is safe: the server decodes WAL in order, so every
    /// transaction and message before a keepalive's WAL end was sent before
    /// it; when nothing is open or pending, the last commit received is
    /// acknowledged and every batch handed out is durable, there is nothing
    /// left before that position. Keepalives
    /// asking for a reply come at shutdown, or when the client did not
    /// report for half of `wal_sender_timeout`; the keepalives sent while
    /// the server merely waits for WAL do not ask, so otherwise the slot
    /// moves with acknowledged transactions and heartbeats only.
    fn confirm_quiet_position(
        &mut self,
        transport: &mut PgWireTransport,
        wal_end: Lsn,
        batch: &Batch,
    ) {
        let previous = std::mem::replace(&mut self.changes.last_keepalive_end, wal_end);
        // Every batch handed out is durable, not only every commit: a
        // non-transactional logical message has no commit and would
        // otherwise be confirmed past while a sink still holds it.
        let caught_up = !self.changes.in_transaction()
            && batch.is_empty()
            && batch.checkpoint.is_none()
            && self.ack.get() >= self.changes.last_commit_end
            && self.ack.durable_batches() >= self.returned;
        if caught_up && wal_end == previous && wal_end > self.ack.get() {
            tracing::debug!(position = %wal_end, "confirming the server's quiet WAL end: everything before it is durable");
            transport.ack(wal_end);
        }
    }

    /// Writes a heartbeat; failures are logged by
    /// [`Heartbeat`](super::heartbeat::Heartbeat) and retried
    /// after the next interval, never fatal.
    async fn write_heartbeat(&mut self) {
        if let Some(url) = self.cfg.primary_url.clone() {
            self.write_heartbeat_on_primary(&url).await;
            return;
        }
        if self.catalog_suspect {
            if let Err(e) = self.ensure_catalog().await {
                self.heartbeat.failed(&self.cfg.slot, &e);
                return;
            }
        }
        if self
            .heartbeat
            .write(&mut self.catalog, &self.cfg.slot, &self.cfg.status)
            .await
            .is_err()
        {
            self.catalog_suspect = true;
        }
    }

    /// [`Self::write_heartbeat`] on the primary of a hot standby
    /// (`primary_url`), connecting first when needed.
    async fn write_heartbeat_on_primary(&mut self, url: &str) {
        let conn = match self.primary.take() {
            Some(c) => c,
            None => {
                let connected = match crate::conn::ConnParams::parse(url) {
                    Ok(p) => match p.pick_host().await {
                        Ok(p) => PgConnection::connect_with(&p.sqlx_options_for("heartbeat"))
                            .await
                            .map_err(|e| PgError::sql("connecting to source.primary_url", e)),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                match connected {
                    Ok(c) => c,
                    Err(e) => {
                        self.heartbeat.failed(&self.cfg.slot, &e);
                        return;
                    }
                }
            }
        };
        let mut conn = conn;
        if self
            .heartbeat
            .write(&mut conn, &self.cfg.slot, &self.cfg.status)
            .await
            .is_ok()
        {
            self.primary = Some(conn);
        }
    }
}
