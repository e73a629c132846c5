//! [`ReplicationTransport`] over the `pgwire-replication` crate.
//!
//! Acknowledgements reach the client without waiting for the next read: a
//! small task (the follower) hands the client the position to report
//! whenever the consumer's [`AckHandle`] advances or
//! [`ack`](ReplicationTransport::ack) raises it, so the slot is confirmed
//! while the consumer holds its batches and does not read. The client sits
//! behind an async mutex that a read holds while it waits; the follower
//! takes it between two reads (at once while nobody reads), and every read
//! reports the position first too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cdc_core::{AckHandle, Lsn};

use crate::conn::{ConnParams, SslMode, PINNED_SETTINGS};
use pgwire_replication::{ReplicationClient, ReplicationConfig, ReplicationEvent};
use tokio::sync::{Mutex, Notify};
use tokio::task::AbortHandle;

use super::transport::{Recv, ReplicationTransport, WireEvent};
use crate::error::PgError;
use crate::pgoutput;

/// A replication stream served by `pgwire-replication`.
pub struct PgWireTransport {
    shared: Arc<Shared>,
    /// The task reporting acknowledgements, once [`follow`](ReplicationTransport::follow) started it.
    follower: Option<AbortHandle>,
}

/// What the transport and its follower share.
struct Shared {
    client: Mutex<ReplicationClient>,
    /// The position to report as flushed; only ever raised.
    wanted: AtomicU64,
    /// `wanted` was raised by [`ReplicationTransport::ack`].
    raised: Notify,
}

impl Shared {
    fn new(client: ReplicationClient, acked: Lsn) -> Arc<Self> {
        Arc::new(Self {
            client: Mutex::new(client),
            wanted: AtomicU64::new(acked.0),
            raised: Notify::new(),
        })
    }

    fn wanted(&self) -> Lsn {
        Lsn(self.wanted.load(Ordering::Acquire))
    }

    /// Hands `wanted` to the client (monotonic there too).
    fn report(&self, client: &ReplicationClient) {
        client.update_applied_lsn(pgwire_replication::Lsn::from_u64(self.wanted().0));
    }
}

/// Reports `ack`'s position, and whatever `ack()` raised, each time either
/// moves, until aborted.
async fn follow(shared: Arc<Shared>, ack: AckHandle) {
    let mut advanced = ack.watch();
    loop {
        shared.wanted.fetch_max(ack.get().0, Ordering::AcqRel);
        shared.report(&*shared.client.lock().await);
        tokio::select! {
            _ = advanced.advanced() => {}
            _ = shared.raised.notified() => {}
        }
    }
}

impl Drop for PgWireTransport {
    fn drop(&mut self) {
        // The follower holds the client: without this a dropped transport
        // would keep its connection until the next acknowledgement.
        if let Some(f) = self.follower.take() {
            f.abort();
        }
    }
}

impl PgWireTransport {
    /// The client configuration for a replication connection with
    /// `params` on `slot` / `publication`, with the pinned session settings.
    pub fn replication_config(
        params: &ConnParams,
        slot: &str,
        publication: &str,
    ) -> pgwire_replication::ReplicationConfig {
        use pgwire_replication::{config::SslMode as W, TlsConfig};
        let tls = match params.ssl_mode {
            SslMode::Disable => TlsConfig::disabled(),
            SslMode::Prefer => TlsConfig {
                mode: W::Prefer,
                ..TlsConfig::disabled()
            },
            SslMode::Require => TlsConfig::require(),
            SslMode::VerifyCa => TlsConfig::verify_ca(params.ssl_root_cert.clone()),
            SslMode::VerifyFull => TlsConfig::verify_full(params.ssl_root_cert.clone()),
        };
        let options = PINNED_SETTINGS
            .iter()
            .map(|(k, v)| format!("-c {k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        pgwire_replication::ReplicationConfig::new(
            params.host.clone(),
            params.user.clone(),
            params.password.clone(),
            params.database.clone(),
            slot,
            publication,
        )
        .with_port(params.port)
        .with_tls(tls)
        .with_options(options)
        .with_application_name(params.application_name.clone())
    }

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
            .map_err(PgError::from)?;
        client.wait_started().await.map_err(PgError::from)?;
        Ok(Self {
            shared: Shared::new(client, start),
            follower: None,
        })
    }

    /// Starts streaming on a gated session (one that ran
    /// `CREATE_REPLICATION_SLOT` first); `acked` is the position already
    /// durable (the slot's consistent point).
    pub async fn start_gated(mut client: ReplicationClient, acked: Lsn) -> Result<Self, PgError> {
        // The session was configured before the slot (and so this position)
        // existed: report it now, so shutdown can confirm it reached the server.
        client.update_applied_lsn(pgwire_replication::Lsn::from_u64(acked.0));
        client.start().await.map_err(PgError::from)?;
        client.wait_started().await.map_err(PgError::from)?;
        Ok(Self {
            shared: Shared::new(client, acked),
            follower: None,
        })
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
        let mut client = self.shared.client.lock().await;
        self.shared.report(&client);
        loop {
            let got = match tokio::time::timeout(wait, client.recv()).await {
                Err(_elapsed) => return Ok(Recv::Idle),
                Ok(got) => got.map_err(PgError::from)?,
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
        if self.shared.wanted.fetch_max(lsn.0, Ordering::AcqRel) < lsn.0 {
            // Reported by the follower, or by the next read, whichever
            // takes the client first.
            self.shared.raised.notify_one();
        }
    }

    fn follow(&mut self, ack: &AckHandle) {
        self.ack(ack.get());
        if self.follower.is_none() {
            let task = tokio::spawn(follow(self.shared.clone(), ack.clone()));
            self.follower = Some(task.abort_handle());
        }
    }

    async fn shutdown(&mut self, final_ack: Lsn) -> Result<(), PgError> {
        if let Some(f) = self.follower.take() {
            f.abort();
        }
        self.shared.wanted.fetch_max(final_ack.0, Ordering::AcqRel);
        let mut client = self.shared.client.lock().await;
        self.shared.report(&client);
        let acked = self.shared.wanted();
        let metrics = client.metrics();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while metrics.last_applied_lsn().as_u64() < acked.0
            && client.is_running()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if metrics.last_applied_lsn().as_u64() < acked.0 {
            tracing::warn!(
                acked = %acked,
                "could not confirm the final acknowledgement reached the server; \
                 changes after the last confirmed position will be delivered again on restart"
            );
        }
        client.shutdown().await.map_err(PgError::from)
    }
}
