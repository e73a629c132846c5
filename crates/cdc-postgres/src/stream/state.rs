//! The states of a [`PgSource`](super::PgSource) and what each holds; the
//! transitions are made in `source.rs`.

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::error::PgError;
use crate::load::SnapshotPhase;
use crate::replication::PgWireTransport;

/// Where a [`PgSource`](super::PgSource) is.
pub(super) enum State {
    /// Reading the initial snapshot (modes `initial` and `snapshot_only`).
    Snapshot(Box<SnapshotPhase>),
    /// The stream is to be started: the first time, after the snapshot, or
    /// again after a failure.
    Starting(Starting),
    /// Another session holds the slot; this instance waits to take it over.
    Standby(Standby),
    /// Streaming changes from the slot.
    Streaming(PgWireTransport),
    /// Nothing more to read: `snapshot_only` is done, or the stream ended.
    Ended,
}

impl State {
    /// The stream, taken out (the state becomes [`State::Ended`]).
    pub fn take_stream(&mut self) -> Option<PgWireTransport> {
        match std::mem::replace(self, State::Ended) {
            State::Streaming(t)
            | State::Starting(Starting {
                failed: Some(t), ..
            }) => Some(t),
            _ => None,
        }
    }
}

/// [`State::Starting`]: the stream is to be started.
pub(super) struct Starting {
    /// The stream that failed, shut down before the next attempt.
    pub failed: Option<PgWireTransport>,
    /// The stream ran and failed: its start is a reconnection.
    pub reconnect: bool,
    /// The wait before the next attempt.
    pub wait: Option<Duration>,
    /// When that wait ends, once it began.
    pub until: Option<tokio::time::Instant>,
    /// A start of the replication connection under way, left by a
    /// `next_batch` call dropped while it waited for it: the next call
    /// waits for the same start instead of beginning another, so a
    /// consumer whose calls time out sooner than a connection starts still
    /// gets the stream going.
    pub pending: Option<PendingStart>,
}

/// A spawned start of the replication connection; dropping it stops the
/// start (and closes what it had opened).
pub(super) struct PendingStart(pub JoinHandle<Result<PgWireTransport, PgError>>);

impl Drop for PendingStart {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Starting {
    /// The first start (at connect, or after the snapshot): at once.
    pub fn first() -> Self {
        Self {
            failed: None,
            reconnect: false,
            wait: None,
            until: None,
            pending: None,
        }
    }

    /// A restart of the stream a cancelled read left behind: at once.
    pub fn after_cancel(stream: Option<PgWireTransport>) -> Self {
        Self {
            failed: stream,
            reconnect: true,
            wait: None,
            until: None,
            pending: None,
        }
    }

    /// A restart after `failed` failed, in `wait` (a backoff delay).
    pub fn after_failure(failed: Option<PgWireTransport>, wait: Duration) -> Self {
        Self {
            failed,
            reconnect: true,
            wait: Some(wait),
            until: None,
            pending: None,
        }
    }
}

/// [`State::Standby`]: another session holds the slot.
#[derive(Debug, Clone, Copy)]
pub(super) struct Standby {
    /// The stream ran and failed before: its start is a reconnection.
    pub reconnect: bool,
    /// The walsender last seen holding the slot (`None`: not known), so
    /// that only a change is logged.
    pub holder: Option<i32>,
    /// The wait before the next check: `activity_check_interval`, or a
    /// backoff delay after an error.
    pub wait: Duration,
}
