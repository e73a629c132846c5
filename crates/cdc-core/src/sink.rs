//! The [`Sink`] trait: where change events go.

use std::future::Future;
use std::pin::Pin;

use crate::batch::Batch;
use crate::error::SinkError;

/// A destination for change events.
///
/// # Contract
///
/// * The engine calls [`write_batch`](Sink::write_batch) with batches in
///   stream order, one call at a time.
/// * `write_batch` returns `Ok(())` **only when every event of the batch is
///   durable** in the destination: a Kafka delivery report came back, a
///   JetStream PubAck arrived, a file was `fsync`ed. The engine then lets the
///   replication slot move past the batch's checkpoint, and PostgreSQL may
///   discard that WAL. Returning early loses data on a crash.
/// * On error, nothing of the batch counts as written. A
///   [retryable](SinkError::retryable) error makes the engine call
///   `write_batch` again **with the same batch** after a backoff; a
///   [fatal](SinkError::fatal) error stops the pipeline.
/// * Delivery is at-least-once: after a crash or a retry the same events
///   (same [`SourceInfo`](crate::SourceInfo) position) arrive again. Write
///   them idempotently (keyed by primary key, de-duplicated by position) or
///   accept duplicates.
/// * A batch may hold no events (it then only moves the checkpoint); a sink
///   may return at once.
/// * When batches queue up behind a slow sink, the engine hands over
///   several at once with [`write_batches`](Sink::write_batches) (group
///   commit). Its default writes them one after another; a sink with a
///   fixed cost per call (an `fsync`, a round trip to wait for) overrides
///   it to pay that cost once per group.
///
/// # Example
///
/// ```
/// use cdc_core::{Batch, Event, Sink, SinkError};
///
/// /// Counts the row changes it sees.
/// struct Counter(u64);
///
/// impl Sink for Counter {
///     async fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
///         self.0 += batch.events.iter().filter(|e| matches!(e, Event::Change(_))).count() as u64;
///         Ok(()) // memory is as durable as a counter needs
///     }
/// }
/// ```
pub trait Sink: Send {
    /// Writes `batch` and returns once all of it is durable.
    fn write_batch(&mut self, batch: &Batch) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Writes consecutive batches, in order, and returns once all of them
    /// are durable. The contract of [`write_batch`](Sink::write_batch)
    /// applies to the group as a whole: on error nothing of it counts as
    /// written, and a retry hands over the same group again.
    ///
    /// The default calls `write_batch` for each batch in turn.
    fn write_batches(
        &mut self,
        batches: &[&Batch],
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        async move {
            for batch in batches {
                self.write_batch(batch).await?;
            }
            Ok(())
        }
    }

    /// Called once when the pipeline stops after the last successful
    /// `write_batch`: release connections, flush client buffers.
    fn close(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }
}

/// A boxed future returned by [`DynSink`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Object-safe form of [`Sink`], implemented for every `Sink`, so a
/// pipeline can hold different sinks as `Box<dyn DynSink>`.
pub trait DynSink: Send {
    /// See [`Sink::write_batch`].
    fn write_batch<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>>;
    /// See [`Sink::write_batches`].
    fn write_batches<'a>(
        &'a mut self,
        batches: &'a [&'a Batch],
    ) -> BoxFuture<'a, Result<(), SinkError>>;
    /// See [`Sink::close`].
    fn close(&mut self) -> BoxFuture<'_, Result<(), SinkError>>;
}

impl<S: Sink> DynSink for S {
    fn write_batch<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(Sink::write_batch(self, batch))
    }

    fn write_batches<'a>(
        &'a mut self,
        batches: &'a [&'a Batch],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(Sink::write_batches(self, batches))
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(Sink::close(self))
    }
}
