//! [`PgSource`]: a [`cdc_core::Source`] reading a logical replication
//! slot, as a state machine over its phases. [`PgSource::next_batch_inner`]
//! makes every transition:
//!
//! | from | when | to |
//! |---|---|---|
//! | connecting | a snapshot is to be read | `Snapshot` |
//! | connecting | no snapshot; a standby | `Starting` |
//! | connecting | no snapshot | `Streaming` |
//! | connecting | `snapshot_only`, and no snapshot to read | `Ended` |
//! | `Snapshot` | done; this instance created the slot, and its session streams | `Streaming` |
//! | `Snapshot` | done; the slot's session is another instance's (or gone) | `Starting`, as a standby |
//! | `Snapshot` | `snapshot_only` done | `Ended` |
//! | `Starting`, `Standby` | the stream started | `Streaming` |
//! | `Starting`, `Standby` | another session holds the slot (standbys only) | `Standby` |
//! | `Starting` | a transient error | `Starting`, after a backoff delay |
//! | `Standby` | a transient error before the slot was seen free | `Standby`, after a backoff delay |
//! | `Standby` | a transient error after the slot was seen free | `Starting`, after a backoff delay |
//! | `Streaming` | the stream or the catalog connection failed | `Starting`, after a backoff delay |
//! | `Streaming` | the stream ended | `Ended` |
//!
//! The states and what each holds are in [`state`](super::state); the code
//! of each phase is in a file of its own:
//!
//! | phase | file |
//! |---|---|
//! | connecting (before any state) | [`connect`](super::connect) |
//! | `Snapshot`, and the handoff to streaming | [`handoff`](super::handoff) |
//! | `Starting` and `Standby`: attempts to start the stream | [`reconnect`](super::reconnect) |
//! | `Standby`: the check of who holds the slot | [`standby`](super::standby) |
//! | `Streaming`: batches, keepalives, heartbeats | [`streaming`](super::streaming) |
//! | `Streaming`: pgoutput messages into events | [`events`](super::events), over [`changes`](super::changes) |

use cdc_core::{AckHandle, Batch, ErrorClass, Lsn, Phase, Source, SourceError, SourceStatus};

use super::context::Context;
use super::state::{Starting, State};
use super::streaming::Streamed;
use crate::error::PgError;
use crate::replication::ReplicationTransport;

/// Streams changes of the configured tables from a logical replication
/// slot, as [`Batch`]es that end on size limits or when the stream goes
/// quiet. Reconnects by itself after transient errors, resuming from the
/// last acknowledged position.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use cdc_core::{Source, TableName};
/// use cdc_postgres::{PgSource, PgSourceConfig};
///
/// let cfg = PgSourceConfig::new(
///     "postgres://postgres:secret@127.0.0.1:5432/app",
///     vec![TableName::new("public", "users")],
///     "cdc_pub",
///     "cdc_slot",
/// );
/// let mut source = PgSource::connect(cfg).await?;
/// let ack = source.ack_handle();
/// while let Some(batch) = source.next_batch().await? {
///     // Right before writing: leave out snapshot rows whose claim ran out
///     // while this process stood still (another instance reads them again).
///     let batch = batch.without_lost_reads().unwrap_or(batch);
///     // ... make the batch durable somewhere, then acknowledge it (with a
///     // snapshot configured, this is also what marks its chunks done):
///     ack.durable(&batch);
/// }
/// # Ok(()) }
/// ```
pub struct PgSource {
    pub(super) state: State,
    pub(super) cx: Context,
}

impl PgSource {
    /// The position streaming resumes from after a reconnect: the last
    /// acknowledged one.
    pub fn acknowledged(&self) -> Lsn {
        self.cx.ack.get()
    }

    /// [`Self::run_to_batch`], safe to cancel: a call dropped before it
    /// returned (a timeout, a `select!`) leaves the batch it was filling
    /// in the context, and the next call goes on with it. Only a call
    /// dropped while it handled an event taken off the stream (describing
    /// a new relation, say) lost that event: the next call then starts the
    /// stream over from the acknowledged position (the batch under way is
    /// dropped: all of it comes again), so events may come twice, never
    /// go missing. A start (or restart) of the stream goes on between
    /// calls: its backoff wait is a deadline, and the replication
    /// connection is made in a task the source keeps, so calls that time
    /// out sooner than a connection starts still get the stream going.
    ///
    /// While the initial snapshot is read, a dropped call may have taken
    /// rows (and their chunks' claims) with it: the next call fails
    /// instead (fatal), and a new source resumes the snapshot from its
    /// durable chunks.
    async fn next_batch_inner(&mut self) -> Result<Option<Batch>, PgError> {
        let interrupted = std::mem::replace(&mut self.cx.reading, true);
        if interrupted && matches!(self.state, State::Snapshot(_)) {
            self.cx.reading = false;
            return Err(PgError::Stopped(
                "a next_batch call was dropped while it read the initial snapshot: rows it had \
                 taken are gone from this source; connect a new one (the snapshot resumes from its \
                 durable chunks)"
                    .into(),
            ));
        }
        if interrupted && std::mem::take(&mut self.cx.filling.handling) {
            if let State::Streaming(_) = self.state {
                tracing::info!(slot = %self.cx.cfg.slot, from = %self.cx.ack.get(),
                    "a read of the stream was cancelled while it handled a message; restarting the stream from the acknowledged position");
                drop(std::mem::take(&mut self.cx.filling));
                self.state = State::Starting(Starting::after_cancel(self.state.take_stream()));
            }
        }
        let result = self.run_to_batch().await;
        self.cx.reading = false;
        result
    }

    /// Runs the state machine until a batch is ready (`None`: the source
    /// ended). Every transition between states is made here.
    async fn run_to_batch(&mut self) -> Result<Option<Batch>, PgError> {
        // pgoutput bytes received into a batch that a restart of the stream
        // left empty: they count toward the batch filled after it.
        let mut carried_bytes = 0;
        let batch = loop {
            match &mut self.state {
                State::Snapshot(phase) => {
                    let (batch, transition) = self.cx.read_snapshot(phase).await?;
                    if let Some(transition) = transition {
                        self.state = self.cx.after_snapshot(transition);
                    }
                    if !batch.is_empty() {
                        break Some(batch);
                    }
                }
                State::Starting(starting) => self.state = self.cx.start(starting).await?,
                State::Standby(standby) => self.state = self.cx.stand_by(standby).await?,
                State::Streaming(transport) => {
                    let bytes = std::mem::take(&mut carried_bytes);
                    match self.cx.fill_batch(transport, bytes).await? {
                        Streamed::Batch(batch) => break Some(batch),
                        Streamed::Failed { batch, bytes } => {
                            self.cx.cfg.status.set_phase(Phase::Reconnecting);
                            let wait = self.cx.backoff.next_delay();
                            self.state = State::Starting(Starting::after_failure(
                                self.state.take_stream(),
                                wait,
                            ));
                            if !batch.is_empty() || batch.checkpoint.is_some() {
                                break Some(batch);
                            }
                            carried_bytes = bytes;
                        }
                        Streamed::Ended(batch) => {
                            self.state = State::Ended;
                            break batch;
                        }
                    }
                }
                State::Ended => break None,
            }
        };
        self.cx.cfg.status.record_received(self.cx.changes.received);
        let mut batch = batch;
        if let Some(b) = batch.as_mut() {
            self.cx.returned += 1;
            b.seq = self.cx.returned;
        } else {
            self.cx.cfg.status.set_phase(Phase::Stopped);
        }
        Ok(batch)
    }
}

impl Source for PgSource {
    async fn next_batch(&mut self) -> Result<Option<Batch>, SourceError> {
        match self.next_batch_inner().await {
            Ok(b) => Ok(b),
            Err(e) => {
                if e.class() == ErrorClass::Fatal {
                    self.cx.cfg.status.set_phase(Phase::Stopped);
                }
                Err(e.into())
            }
        }
    }

    fn ack_handle(&self) -> AckHandle {
        self.cx.ack.clone()
    }

    fn status(&self) -> SourceStatus {
        self.cx.cfg.status.clone()
    }

    async fn shutdown(&mut self) -> Result<(), SourceError> {
        // Stops the snapshot readers (dropping the phase); an unfinished
        // snapshot resumes on the next start.
        let stream = self.state.take_stream();
        self.cx.cfg.status.set_phase(Phase::Stopped);
        if let Some(mut t) = stream {
            t.shutdown(self.cx.ack.get()).await?;
        }
        Ok(())
    }
}
