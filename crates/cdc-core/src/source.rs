//! The [`Source`] trait: where change events come from.

use std::future::Future;

use crate::batch::{AckHandle, Batch};
use crate::error::SourceError;
use crate::status::SourceStatus;

/// A producer of change events, e.g. a PostgreSQL replication slot.
///
/// # Contract
///
/// * [`next_batch`](Source::next_batch) returns batches in stream order;
///   `Ok(None)` means the source has ended (a finished `snapshot_only` run,
///   or a requested stop) and will not be called again.
/// * Memory stays bounded: a batch holds at most a configured number of
///   events and bytes, so a huge transaction arrives as several batches.
/// * The source reports to its server only what the consumer made durable:
///   the position in its [`AckHandle`], never what it merely handed out.
///   After a restart it resumes after the last acknowledged position, so
///   events between that position and the crash are delivered again.
/// * Batches are numbered 1, 2, 3, … in the order `next_batch` returns
///   them; [`AckHandle::durable_batches`] says how many are durable, for
///   progress that is not a WAL position (snapshot chunks).
/// * Cancelling `next_batch` (dropping its future: a timeout, a `select!`
///   branch that lost) never loses an event silently: what the dropped
///   call had taken is delivered by a later call (possibly twice), or,
///   where the source cannot do that, the next call fails with an error
///   saying so (`PgSource` while it reads its initial snapshot: connect a
///   new one, which resumes from the durable chunks).
pub trait Source: Send {
    /// The next batch, waiting as long as needed.
    fn next_batch(&mut self) -> impl Future<Output = Result<Option<Batch>, SourceError>> + Send;

    /// The handle through which the consumer reports durable positions.
    fn ack_handle(&self) -> AckHandle;

    /// The source's live status (phase, positions, snapshot progress).
    /// Sources that do not track one return a detached, default status.
    fn status(&self) -> SourceStatus {
        SourceStatus::default()
    }

    /// Stops reading and reports the final acknowledged position to the
    /// server before returning.
    fn shutdown(&mut self) -> impl Future<Output = Result<(), SourceError>> + Send;
}
