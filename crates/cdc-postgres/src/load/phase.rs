//! The snapshot phase of a [`PgSource`](crate::PgSource) once started
//! ([`begin`](super::begin)): filling batches with what the readers hand
//! over, marking chunks done ([`completion`](super::completion)), keeping
//! the coordination alive ([`coordinator`](super::coordinator)), and the
//! handoff to streaming.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cdc_core::{AckHandle, Batch, ControlEvent, Event, Lsn, ReadFence, SourceStatus};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::claims::{ClaimFence, Claims};
use super::emitter::Emitter;
use super::export::Export;
use super::item::LoadItem;
use super::settings::{SnapshotMode, SnapshotSettings};
use crate::conn::{for_role, Reconnects};
use crate::error::PgError;
use crate::replication::PgWireTransport;
use crate::snapshot::{JobState, MetadataStore};

/// What the source does when the snapshot is complete.
pub(crate) enum Transition {
    /// Stream on this transport (the session that exported the snapshot).
    Stream(PgWireTransport),
    /// Start streaming from the slot's confirmed position (waiting as a
    /// standby while another instance holds the slot).
    Connect,
    /// `snapshot_only`: the source ends.
    End,
}

/// A snapshot in progress.
pub(crate) struct SnapshotPhase {
    pub(super) mode: SnapshotMode,
    pub(super) slot: String,
    pub(super) settings: SnapshotSettings,
    pub(super) options: PgConnectOptions,
    pub(super) store: MetadataStore,
    pub(super) meta: PgConnection,
    /// Holds the advisory lock while this instance coordinates.
    pub(super) lock: PgConnection,
    pub(super) export: Option<Export>,
    pub(super) snapshot_lsn: Lsn,
    pub(super) emitter: Emitter,
    pub(super) items: mpsc::Receiver<Result<LoadItem, PgError>>,
    pub(super) readers_done: bool,
    pub(super) claims: Claims,
    /// Bumped whenever chunks are marked done: wakes the readers that wait
    /// for the snapshot to finish.
    pub(super) chunks_done: watch::Sender<u64>,
    pub(super) stop: CancellationToken,
    pub(super) tasks: Vec<JoinHandle<()>>,
    pub(super) announce_begin: bool,
    pub(super) last_election: Instant,
    pub(super) status: SourceStatus,
    /// Readers' failed imports of the exported snapshot since last checked.
    pub(super) snapshot_gone: Arc<AtomicU64>,
    /// When the coordinator last looked at the job's recorded snapshot.
    pub(super) last_export_check: Instant,
    /// While the slot's session still holds the first export (and will
    /// start the stream): the transaction holding the snapshot exported
    /// since, because a table was rewritten.
    pub(super) reexport: Option<PgConnection>,
}

impl Drop for SnapshotPhase {
    fn drop(&mut self) {
        self.stop.cancel();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Now, in µs since the Unix epoch (0 before it).
pub(super) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl SnapshotPhase {
    /// The consistent point rows are read at.
    pub fn snapshot_lsn(&self) -> Lsn {
        self.snapshot_lsn
    }

    /// Fills `batch` (to be batch number `batch_seq`) with snapshot events.
    /// Returns a transition once the whole snapshot is complete. A batch
    /// with snapshot reads carries a fence on the claims they were read
    /// under ([`Batch::without_lost_reads`]).
    pub async fn fill(
        &mut self,
        batch: &mut Batch,
        batch_seq: u64,
        ack: &AckHandle,
        max_events: usize,
        max_wait: Duration,
    ) -> Result<Option<Transition>, PgError> {
        let mut read_under = Vec::new();
        let result = self
            .fill_reads(batch, batch_seq, ack, max_events, max_wait, &mut read_under)
            .await;
        if !read_under.is_empty() {
            batch.fence = Some(ReadFence::new(ClaimFence::new(
                self.claims.clone(),
                self.settings.claim_timeout,
                read_under,
            )));
        }
        result
    }

    /// [`fill`](Self::fill), adding to `read_under` the claim of every
    /// chunk whose rows it put in `batch`.
    async fn fill_reads(
        &mut self,
        batch: &mut Batch,
        batch_seq: u64,
        ack: &AckHandle,
        max_events: usize,
        max_wait: Duration,
        read_under: &mut Vec<(i64, u32)>,
    ) -> Result<Option<Transition>, PgError> {
        if self.announce_begin {
            self.announce_begin = false;
            batch
                .events
                .push(Event::Control(ControlEvent::SnapshotBegin {
                    table: None,
                    snapshot_lsn: self.snapshot_lsn,
                }));
        }
        let mut first_at: Option<Instant> = None;
        loop {
            self.metadata_round(ack).await?;
            if self.readers_done {
                if self.emitter.is_idle() {
                    return self.finish(batch).await.map(Some);
                }
                if !batch.events.is_empty() {
                    return Ok(None);
                }
                // Waiting for the sinks to make the last chunks durable.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let wait = match first_at {
                Some(t) => max_wait.saturating_sub(t.elapsed()),
                // Chunks wait for their rows to become durable: look again
                // soon, so they are marked done (and the readers, waiting
                // for the last ones, can finish) without a long pause.
                None if self.emitter.awaits_durability() => Duration::from_millis(10),
                None => Duration::from_millis(200),
            };
            match tokio::time::timeout(wait, self.items.recv()).await {
                Err(_) => {
                    if !batch.events.is_empty() {
                        return Ok(None);
                    }
                }
                Ok(None) => self.readers_done = true,
                Ok(Some(Err(e))) if e.class() == cdc_core::ErrorClass::Retryable => {
                    tracing::warn!(error = %cdc_core::error_chain(&e), "snapshot reader error; retrying");
                }
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(item))) => {
                    // Rows that waited in the channel while the claim ran
                    // out (a paused process) must not reach a sink either.
                    let item = match item {
                        LoadItem::Rows(chunk, _) | LoadItem::End(chunk, _)
                            if !self.claims.valid(
                                chunk.id,
                                chunk.attempt,
                                self.settings.claim_timeout,
                            ) =>
                        {
                            tracing::warn!(chunk = chunk.id, attempt = chunk.attempt, table = %chunk.table.name,
                                "the claim on a snapshot chunk ran out before its rows were handed on: dropping them; it is read again");
                            // Stop renewing it and give it back, so it is
                            // read again at once (here or elsewhere).
                            self.claims.forget(chunk.id, chunk.attempt);
                            let released = self
                                .store
                                .release_chunk(
                                    &mut self.meta,
                                    chunk.id,
                                    &self.settings.instance_id,
                                    chunk.attempt,
                                )
                                .await;
                            match released {
                                // Not released: it is claimed again once
                                // its heartbeat is older than claim_timeout.
                                Err(e) if e.class() == cdc_core::ErrorClass::Retryable => {
                                    self.reconnect_meta(e).await?;
                                }
                                other => {
                                    other?;
                                }
                            }
                            LoadItem::Abort(chunk)
                        }
                        item => item,
                    };
                    if let LoadItem::Rows(chunk, rows) = &item {
                        self.status
                            .snapshot_rows(&chunk.table.name, rows.len() as u64);
                    }
                    let claim = match &item {
                        LoadItem::Rows(chunk, _) | LoadItem::End(chunk, _) => {
                            Some((chunk.id, chunk.attempt))
                        }
                        _ => None,
                    };
                    let before = batch.events.len();
                    self.emitter.push(item, batch, batch_seq);
                    // Only a chunk with rows in this batch: an empty chunk
                    // may be marked done before this batch is written.
                    let read_here = batch.events[before..]
                        .iter()
                        .any(|e| matches!(e, Event::Change(_)));
                    if let Some(claim) = claim.filter(|c| read_here && !read_under.contains(c)) {
                        read_under.push(claim);
                    }
                    if first_at.is_none() && !batch.events.is_empty() {
                        first_at = Some(Instant::now());
                    }
                    if batch.events.len() >= max_events {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Runs the metadata steps of one round of [`fill`](Self::fill),
    /// connecting again after a retryable error (the round is repeated).
    async fn metadata_round(&mut self, ack: &AckHandle) -> Result<(), PgError> {
        let result = match self.complete_durable(ack).await {
            Ok(()) => match self.check_lock().await {
                Ok(()) => match self.maybe_take_over().await {
                    Ok(()) => self.check_export().await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match result {
            Err(e) if e.class() == cdc_core::ErrorClass::Retryable => self.reconnect_meta(e).await,
            other => other,
        }
    }

    /// After a retryable error on the metadata connection (terminated by
    /// an administrator, a dropped TCP connection, a server restart):
    /// connects again, with backoff, until it works or fails for good. Logs
    /// one line per attempt ([`Reconnects`]).
    async fn reconnect_meta(&mut self, error: PgError) -> Result<(), PgError> {
        let mut reconnects = Reconnects::new("metadata", Duration::from_secs(5));
        let mut delay = reconnects.failed(&error);
        loop {
            tokio::time::sleep(delay).await;
            match PgConnection::connect_with(&for_role(&self.options, "metadata")).await {
                Ok(conn) => {
                    self.meta = conn;
                    reconnects.restored();
                    return Ok(());
                }
                Err(e) => {
                    let e = PgError::sql("connecting again for snapshot metadata", e);
                    if e.class() != cdc_core::ErrorClass::Retryable {
                        return Err(e);
                    }
                    delay = reconnects.failed(&e);
                }
            }
        }
    }

    /// One step of finishing: the coordinator marks the job done; another
    /// instance waits for that (or takes over). `true` once the job is done.
    async fn finish_job(&mut self) -> Result<bool, PgError> {
        if self.export.is_none() {
            let done = self
                .store
                .job(&mut self.meta, &self.slot)
                .await?
                .is_some_and(|j| j.state == JobState::Done);
            if done {
                return Ok(true);
            }
            self.maybe_take_over().await?;
            if self.export.is_none() {
                return Ok(false);
            }
        }
        self.store
            .set_job_state(&mut self.meta, &self.slot, JobState::Done)
            .await?;
        tracing::info!(slot = %self.slot, "snapshot complete");
        Ok(true)
    }

    async fn finish(&mut self, batch: &mut Batch) -> Result<Transition, PgError> {
        // Every reader has stopped because every chunk is done; wait for
        // the job to say so too if another instance is coordinating.
        loop {
            match self.finish_job().await {
                Ok(true) => break,
                Ok(false) => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(e) if e.class() == cdc_core::ErrorClass::Retryable => {
                    self.reconnect_meta(e).await?;
                }
                Err(e) => return Err(e),
            }
        }
        batch.events.push(Event::Control(ControlEvent::SnapshotEnd {
            table: None,
            snapshot_lsn: self.snapshot_lsn,
        }));
        self.stop.cancel();
        self.reexport = None;
        self.status.snapshot_finished();
        if self.mode == SnapshotMode::SnapshotOnly {
            return Ok(Transition::End);
        }
        match self.export.take() {
            Some(Export::Slot(client)) => {
                match PgWireTransport::start_gated(client, self.snapshot_lsn).await {
                    Ok(t) => Ok(Transition::Stream(t)),
                    // The session that created the slot is gone (terminated
                    // after the last chunk was read): the slot itself still
                    // waits at its consistent point; stream from it.
                    Err(e) if e.class() == cdc_core::ErrorClass::Retryable => {
                        tracing::warn!(slot = %self.slot, error = %cdc_core::error_chain(&e),
                            "the session that created the slot is gone; streaming from the slot instead");
                        Ok(Transition::Connect)
                    }
                    Err(e) => Err(e),
                }
            }
            Some(Export::Transaction(conn)) => {
                drop(conn);
                Ok(Transition::Connect)
            }
            None => Ok(Transition::Connect),
        }
    }
}
