//! [`ReplicationTransport`] over the `pgwire-replication` crate.

use std::time::Duration;

use cdc_core::Lsn;
use pgwire_replication::{ReplicationClient, ReplicationConfig, ReplicationEvent};

use super::transport::{Recv, ReplicationTransport, WireEvent};
use crate::error::PgError;
use crate::pgoutput;

/// A replication stream served by `pgwire-replication`.
pub struct PgWireTransport {
    client: ReplicationClient,
    acked: Lsn,
}

impl PgWireTransport {
    /// The client configuration for streaming from `start` (`Lsn::ZERO`:
    /// from the slot's confirmed position), reporting `start` as flushed
    /// until told otherwise.
    pub fn client_config(
        cfg: ReplicationConfig,
        start: Lsn,
        status_interval: Duration,
        buffer_events: usize,
    ) -> ReplicationConfig {
        cfg.with_start_lsn(pgwire_replication::Lsn::from_u64(start.0))
            .with_ack_lsn(pgwire_replication::Lsn::from_u64(start.0))
            .with_status_interval(status_interval)
            .with_wakeup_interval(status_interval)
            .with_buffer_size(buffer_events)
    }

    /// Connects and starts streaming from `start` (the slot's confirmed
    /// position), reporting `start` as flushed until told otherwise.
    pub async fn start(
        cfg: ReplicationConfig,
        start: Lsn,
        status_interval: Duration,
        buffer_events: usize,
    ) -> Result<Self, PgError> {
        let cfg = Self::client_config(cfg, start, status_interval, buffer_events);
        let mut client = ReplicationClient::connect(cfg)
            .await
            .map_err(PgError::Replication)?;
        client.wait_started().await.map_err(PgError::Replication)?;
        Ok(Self {
            client,
            acked: start,
        })
    }

    /// Starts streaming on a gated session (one that ran
    /// `CREATE_REPLICATION_SLOT` first); `acked` is the position already
    /// durable (the slot's consistent point).
    pub async fn start_gated(mut client: ReplicationClient, acked: Lsn) -> Result<Self, PgError> {
        // The session was configured before the slot (and so this position)
        // existed: report it now, so shutdown can confirm it reached the server.
        client.update_applied_lsn(pgwire_replication::Lsn::from_u64(acked.0));
        client.start().await.map_err(PgError::Replication)?;
        client.wait_started().await.map_err(PgError::Replication)?;
        Ok(Self { client, acked })
    }

    /// The crate's event as ours. pgwire-replication decodes the pgoutput
    /// `Begin`, `Commit` and `Message` messages itself and hands on their
    /// fields, not their bytes (0.5 has no option to keep them raw): they
    /// are carried over field by field into [`pgoutput`]'s types, as
    /// [`pgoutput::decode`] would read them (times stay in microseconds
    /// since 2000-01-01). The crate drops the Commit's flags, which
    /// PostgreSQL always sends as 0. Every other message comes as bytes.
    fn map(ev: ReplicationEvent) -> Option<WireEvent> {
        let lsn = |l: pgwire_replication::Lsn| Lsn(l.as_u64());
        Some(match ev {
            ReplicationEvent::Begin {
                final_lsn,
                xid,
                commit_time_micros,
            } => WireEvent::Decoded(pgoutput::Message::Begin(pgoutput::Begin {
                final_lsn: lsn(final_lsn),
                commit_time: commit_time_micros,
                xid,
            })),
            ReplicationEvent::XLogData {
                wal_start,
                wal_end,
                data,
                ..
            } => WireEvent::Data {
                wal_start: lsn(wal_start),
                wal_end: lsn(wal_end),
                data,
            },
            ReplicationEvent::Commit {
                lsn: commit_lsn,
                end_lsn,
                commit_time_micros,
            } => WireEvent::Decoded(pgoutput::Message::Commit(pgoutput::Commit {
                flags: 0,
                commit_lsn: lsn(commit_lsn),
                end_lsn: lsn(end_lsn),
                commit_time: commit_time_micros,
            })),
            ReplicationEvent::Message {
                transactional,
                lsn: message_lsn,
                prefix,
                content,
            } => WireEvent::Decoded(pgoutput::Message::Message(pgoutput::LogicalMessage {
                transactional,
                lsn: lsn(message_lsn),
                prefix,
                content,
            })),
            ReplicationEvent::KeepAlive {
                wal_end,
                reply_requested,
                ..
            } => WireEvent::KeepAlive {
                wal_end: lsn(wal_end),
                reply_requested,
            },
            // We never set a stop LSN; anything newer is not ours to interpret.
            _ => return None,
        })
    }
}

impl ReplicationTransport for PgWireTransport {
    async fn recv(&mut self, wait: Duration) -> Result<Recv, PgError> {
        loop {
            let got = match tokio::time::timeout(wait, self.client.recv()).await {
                Err(_elapsed) => return Ok(Recv::Idle),
                Ok(got) => got.map_err(PgError::Replication)?,
            };
            match got {
                None => return Ok(Recv::Ended),
                Some(ev) => {
                    if let Some(ev) = Self::map(ev) {
                        return Ok(Recv::Event(ev));
                    }
                }
            }
        }
    }

    fn ack(&mut self, lsn: Lsn) {
        if lsn > self.acked {
            self.acked = lsn;
            self.client
                .update_applied_lsn(pgwire_replication::Lsn::from_u64(lsn.0));
        }
    }

    async fn shutdown(&mut self, final_ack: Lsn) -> Result<(), PgError> {
        self.ack(final_ack);
        let metrics = self.client.metrics();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while metrics.last_applied_lsn().as_u64() < self.acked.0
            && self.client.is_running()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if metrics.last_applied_lsn().as_u64() < self.acked.0 {
            tracing::warn!(
                acked = %self.acked,
                "could not confirm the final acknowledgement reached the server; \
                 changes after the last confirmed position will be delivered again on restart"
            );
        }
        self.client.shutdown().await.map_err(PgError::Replication)
    }
}
