//! The small seam between the source and the replication protocol client,
//! so the client library can be swapped without touching decoding or
//! acknowledgement logic.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use cdc_core::{AckHandle, Lsn};

use crate::error::PgError;
use crate::pgoutput;

/// One item from the replication connection.
///
/// Every pgoutput message reaches the source as a [`pgoutput::Message`]
/// and is handled in one place. A transport hands a message on as
/// [`WireEvent::Data`], its bytes as the server sent them, for the source
/// to decode with [`pgoutput::decode`]; only a message whose bytes its
/// protocol client does not hand on (pgwire-replication decodes `Begin`,
/// `Commit` and `Message` itself) comes as [`WireEvent::Decoded`], already
/// in the decoder's types.
#[derive(Debug, Clone, PartialEq)]
pub enum WireEvent {
    /// A pgoutput message, raw, with the WAL position of its record.
    Data {
        /// WAL position of the change.
        wal_start: Lsn,
        /// The server's WAL end when it sent the message (0 when unknown).
        wal_end: Lsn,
        /// The pgoutput message.
        data: Bytes,
    },
    /// A pgoutput message the protocol client decoded itself.
    Decoded(pgoutput::Message),
    /// The server is alive and has sent WAL up to `wal_end`.
    KeepAlive {
        /// Server's WAL position.
        wal_end: Lsn,
        /// The server asked for a reply (the protocol client already sent it).
        reply_requested: bool,
    },
}

/// What [`ReplicationTransport::recv`] found.
#[derive(Debug)]
pub enum Recv {
    /// An event.
    Event(WireEvent),
    /// Nothing arrived within the wait.
    Idle,
    /// The stream ended cleanly (stop requested).
    Ended,
}

/// A running replication stream.
pub trait ReplicationTransport: Send {
    /// The next event, waiting at most `wait`. Cancel safe.
    fn recv(&mut self, wait: Duration) -> impl Future<Output = Result<Recv, PgError>> + Send;

    /// Reports `lsn` as flushed (the slot may advance to it). Cheap,
    /// monotonic; sent to the server within the status interval.
    fn ack(&mut self, lsn: Lsn);

    /// Reports `ack`'s position as flushed now, and from now on each time
    /// it advances, also while nobody calls [`recv`](Self::recv) (the
    /// consumer holds its batches). Calling it again changes nothing but
    /// reporting the position now.
    fn follow(&mut self, ack: &AckHandle);

    /// Makes sure `final_ack` reached the server (bounded wait), then ends
    /// the stream.
    fn shutdown(&mut self, final_ack: Lsn) -> impl Future<Output = Result<(), PgError>> + Send;
}
