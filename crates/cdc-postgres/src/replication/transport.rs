//! The small seam between the source and the replication protocol client,
//! so the client library can be swapped without touching decoding or
//! acknowledgement logic.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use cdc_core::Lsn;

use crate::error::PgError;

/// One item from the replication connection.
#[derive(Debug, Clone, PartialEq)]
pub enum WireEvent {
    /// A transaction starts; its commit record will be at `final_lsn`.
    Begin {
        /// LSN of the commit record.
        final_lsn: Lsn,
        /// Transaction id.
        xid: u32,
        /// Commit time, µs since the Unix epoch.
        commit_time_us: i64,
    },
    /// A pgoutput message other than Begin/Commit/Message (Relation,
    /// Insert, …), raw, with the WAL position of its record.
    Data {
        /// WAL position of the change.
        wal_start: Lsn,
        /// The server's WAL end when it sent the message (0 when unknown).
        wal_end: Lsn,
        /// The pgoutput message.
        data: Bytes,
    },
    /// The transaction ended.
    Commit {
        /// LSN of the commit record.
        commit_lsn: Lsn,
        /// End of the commit record: the position to acknowledge.
        end_lsn: Lsn,
        /// Commit time, µs since the Unix epoch.
        commit_time_us: i64,
    },
    /// A `pg_logical_emit_message` message.
    Message {
        /// Inside a transaction or not.
        transactional: bool,
        /// Its WAL position.
        lsn: Lsn,
        /// Its prefix.
        prefix: String,
        /// Its payload.
        content: Bytes,
    },
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

    /// Makes sure `final_ack` reached the server (bounded wait), then ends
    /// the stream.
    fn shutdown(&mut self, final_ack: Lsn) -> impl Future<Output = Result<(), PgError>> + Send;
}
