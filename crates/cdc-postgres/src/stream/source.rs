//! [`PgSource`]: a [`cdc_core::Source`] reading a logical replication slot.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use cdc_core::{
    AckHandle, Backoff, Batch, ChangeEvent, ControlEvent, ErrorClass, Event, Lsn, Op, Phase,
    ReplicaIdentity, Row, SnapshotMarker, Source, SourceError, SourceInfo, SourceStatus, TableName,
};
use sqlx::{Connection, PgConnection};

use super::heartbeat::{Heartbeat, HEARTBEAT_PREFIX};
use super::rows::{fill_unchanged_toast, old_row, parse_tuple};
use super::standby::{slot_activity, SlotActivity};
use crate::catalog::{describe_relation, RelationInfo};
use crate::conn::{for_role, ConnParams};
use crate::error::{is_slot_in_use, slot_in_use, PgError, StreamNames};
use crate::load::{SnapshotMode, SnapshotPhase, SnapshotRequest, SnapshotSettings, Transition};
use crate::pgoutput::{self, Message};
use crate::replication::{PgWireTransport, Recv, ReplicationTransport, WireEvent};
use crate::setup;

/// Everything [`PgSource::connect`] needs.
#[derive(Clone)]
pub struct PgSourceConfig {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// Tables to capture.
    pub tables: Vec<TableName>,
    /// Publication name.
    pub publication: String,
    /// Create the publication (or add missing tables) when needed.
    pub create_publication: bool,
    /// Replication slot name (`[a-z0-9_]`).
    pub slot: String,
    /// Create the slot when missing.
    pub create_slot: bool,
    /// Replica identities to set before streaming.
    pub replica_identity: Vec<(TableName, ReplicaIdentity)>,
    /// At most this many events per batch.
    pub max_batch_events: usize,
    /// At most about this many bytes of pgoutput data per batch.
    pub max_batch_bytes: usize,
    /// How long a non-empty batch waits for more events.
    pub max_batch_wait: Duration,
    /// How often the acknowledged position is reported to the server.
    pub status_interval: Duration,
    /// Replication events buffered by the protocol client.
    pub buffer_events: usize,
    /// First delay before reconnecting after a transient error.
    pub reconnect_initial: Duration,
    /// Longest delay between reconnection attempts.
    pub reconnect_max: Duration,
    /// Write a heartbeat (`pg_logical_emit_message`) after this long
    /// without a transaction of the captured tables, so the slot advances
    /// while only other tables write WAL; `None`: no heartbeats.
    pub heartbeat_interval: Option<Duration>,
    /// Several instances share the slot: while another session streams
    /// from it, wait (phase [`Phase::Standby`]) and take over when it is
    /// released. Without it, a slot in use is an error retried with backoff.
    pub standby: bool,
    /// How often a standby checks whether the slot became free.
    pub activity_check_interval: Duration,
    /// The initial snapshot, if any.
    pub snapshot: SnapshotSettings,
    /// Where the source reports its phase, positions and snapshot
    /// progress; pass a clone of a handle to watch it from elsewhere
    /// (e.g. before [`PgSource::connect`] returns).
    pub status: SourceStatus,
}

impl std::fmt::Debug for PgSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSourceConfig")
            .field("url", &"<redacted>")
            .field("tables", &self.tables)
            .field("publication", &self.publication)
            .field("slot", &self.slot)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("standby", &self.standby)
            .finish_non_exhaustive()
    }
}

impl PgSourceConfig {
    /// A configuration with the usual defaults for the tuning knobs.
    pub fn new(
        url: impl Into<String>,
        tables: Vec<TableName>,
        publication: impl Into<String>,
        slot: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            tables,
            publication: publication.into(),
            create_publication: true,
            slot: slot.into(),
            create_slot: true,
            replica_identity: Vec::new(),
            max_batch_events: 2048,
            max_batch_bytes: 8 << 20,
            max_batch_wait: Duration::from_millis(10),
            status_interval: Duration::from_secs(1),
            buffer_events: 1024,
            reconnect_initial: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(30),
            heartbeat_interval: Some(Duration::from_secs(10)),
            standby: false,
            activity_check_interval: Duration::from_secs(10),
            snapshot: SnapshotSettings::default(),
            status: SourceStatus::new(),
        }
    }
}

/// The transaction being received.
struct Tx {
    commit_lsn: Lsn,
    xid: u32,
    commit_time_us: i64,
    ordinal: u64,
}

struct Relation {
    info: RelationInfo,
    tracked: bool,
    /// Why a relation that is not tracked is published (for the warning).
    untracked_reason: Option<String>,
}

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
    cfg: PgSourceConfig,
    params: ConnParams,
    database: String,
    catalog: PgConnection,
    transport: Option<PgWireTransport>,
    ack: AckHandle,
    tracked: HashSet<TableName>,
    relations: HashMap<u32, Relation>,
    /// Untracked relations already warned about (once per relation).
    warned_untracked: HashSet<TableName>,
    tx: Option<Tx>,
    backoff: Backoff,
    /// The stream must be (re)started before reading on.
    reconnect_pending: bool,
    /// The stream failed: the next start is a reconnection (backoff first).
    stream_failed: bool,
    /// Wait while another session holds the slot instead of failing.
    standby: bool,
    /// The walsender last seen holding the slot (to log changes only).
    seen_holder: Option<Option<i32>>,
    /// When to write heartbeats.
    heartbeat: Heartbeat,
    /// The catalog connection may be broken (a heartbeat failed).
    catalog_suspect: bool,
    /// Highest WAL position received, published once per batch.
    received: Lsn,
    /// End of the last commit received.
    last_commit_end: Lsn,
    /// WAL end of the previous keepalive that asked for a reply.
    last_keepalive_end: Lsn,
    /// The snapshot being read, before streaming starts.
    snapshot: Option<SnapshotPhase>,
    /// Batches returned so far (batches are numbered from 1).
    returned: u64,
    /// `snapshot_only` finished: nothing more to read.
    ended: bool,
}

impl PgSource {
    /// Runs the preflight check ([`setup::run_check`]: fails naming every
    /// blocking problem, logs the warnings), prepares replica identities, the publication and
    /// the slot as configured, then either starts the snapshot (modes
    /// `initial` and `snapshot_only`, see [`crate::load`]) or streams from
    /// the slot's confirmed position.
    pub async fn connect(cfg: PgSourceConfig) -> Result<Self, PgError> {
        let params = ConnParams::parse(&cfg.url)?;
        let options = params.sqlx_options();
        let mut catalog = PgConnection::connect_with(&for_role(&options, "catalog"))
            .await
            .map_err(|e| PgError::sql("connecting to PostgreSQL", e))?;
        // Every problem at once, before anything is changed.
        let report = setup::run_check(&mut catalog, &setup::CheckRequest::from(&cfg)).await?;
        for finding in &report.findings {
            match finding.severity {
                setup::Severity::Ok => tracing::debug!("check: {}", finding.message()),
                setup::Severity::Warning => tracing::warn!("{}", finding.message()),
                setup::Severity::Blocking => {}
            }
        }
        report.blocking_error()?;
        let mode = cfg.snapshot.mode;
        let snapshot_tables = cfg
            .snapshot
            .tables
            .clone()
            .unwrap_or_else(|| cfg.tables.clone());
        let streams = mode != SnapshotMode::SnapshotOnly;
        let checked = if streams {
            &cfg.tables
        } else {
            &snapshot_tables
        };
        let (server, tables) = setup::preflight(&mut catalog, checked, streams).await?;
        if mode != SnapshotMode::Never {
            setup::check_select(&mut catalog, &server, &snapshot_tables).await?;
        }
        if streams {
            // (The check above warned about identities that break updates.)
            setup::ensure_replica_identity(&mut catalog, &tables, &cfg.replica_identity).await?;
            setup::ensure_publication(
                &mut catalog,
                &cfg.publication,
                &cfg.tables,
                cfg.create_publication,
            )
            .await?;
        }

        let ack = AckHandle::new();
        let status = cfg.status.clone();
        let mut snapshot = None;
        if mode != SnapshotMode::Never {
            let replication = PgWireTransport::client_config(
                params.replication_config(&cfg.slot, &cfg.publication),
                Lsn::ZERO,
                cfg.status_interval,
                cfg.buffer_events,
            );
            status.set_phase(Phase::Snapshot);
            snapshot = SnapshotPhase::begin(SnapshotRequest {
                mode,
                settings: cfg.snapshot.clone(),
                tables: snapshot_tables,
                options: options.clone(),
                server: server.clone(),
                slot: cfg.slot.clone(),
                create_slot: cfg.create_slot,
                replication,
                status: status.clone(),
            })
            .await?;
            match &snapshot {
                Some(phase) => ack.advance(phase.snapshot_lsn()),
                None => status.set_phase(Phase::Starting),
            }
        }
        let names = StreamNames {
            user: &params.user,
            slot: &cfg.slot,
            publication: &cfg.publication,
        };
        let mut reconnect_pending = false;
        let transport = if snapshot.is_none() && streams {
            let slot =
                setup::ensure_slot(&mut catalog, &server, &cfg.slot, cfg.create_slot).await?;
            ack.advance(slot.confirmed_flush_lsn);
            if cfg.standby {
                // The first start checks who holds the slot (see `start_stream`).
                reconnect_pending = true;
                None
            } else {
                let t = PgWireTransport::start(
                    params.replication_config(&cfg.slot, &cfg.publication),
                    slot.confirmed_flush_lsn,
                    cfg.status_interval,
                    cfg.buffer_events,
                )
                .await
                .map_err(|e| slot_in_use(e, &cfg.slot).explain(names))?;
                tracing::info!(slot = %cfg.slot, start = %slot.confirmed_flush_lsn, "streaming started");
                status.set_phase(Phase::Streaming);
                Some(t)
            }
        } else {
            None
        };
        Ok(Self {
            tracked: cfg.tables.iter().cloned().collect(),
            backoff: Backoff::new(cfg.reconnect_initial, cfg.reconnect_max),
            ended: !streams && snapshot.is_none(),
            standby: cfg.standby,
            heartbeat: Heartbeat::new(cfg.heartbeat_interval),
            cfg,
            params,
            database: server.database,
            catalog,
            transport,
            ack,
            relations: HashMap::new(),
            warned_untracked: HashSet::new(),
            tx: None,
            reconnect_pending,
            stream_failed: false,
            seen_holder: None,
            catalog_suspect: false,
            received: Lsn::ZERO,
            last_commit_end: Lsn::ZERO,
            last_keepalive_end: Lsn::ZERO,
            snapshot,
            returned: 0,
        })
    }

    /// Runs the snapshot phase for one batch; `None` once it is over.
    async fn snapshot_batch(&mut self) -> Result<Option<Option<Batch>>, PgError> {
        let Some(phase) = self.snapshot.as_mut() else {
            return Ok(None);
        };
        let mut batch = Batch::default();
        let transition = phase
            .fill(
                &mut batch,
                self.returned + 1,
                &self.ack,
                self.cfg.max_batch_events,
                self.cfg.max_batch_wait,
            )
            .await?;
        match transition {
            None => {}
            Some(Transition::End) => {
                self.snapshot = None;
                self.ended = true;
                self.cfg.status.set_phase(Phase::Stopped);
            }
            Some(Transition::Stream(t)) => {
                self.snapshot = None;
                tracing::info!(slot = %self.cfg.slot, start = %self.ack.get(), "snapshot done; streaming started");
                self.transport = Some(t);
                self.heartbeat.activity();
                self.cfg.status.set_phase(Phase::Streaming);
            }
            Some(Transition::Connect) => {
                self.snapshot = None;
                tracing::info!(slot = %self.cfg.slot, "snapshot done; starting to stream");
                // The instance that exported the snapshot streams; the
                // others wait for the slot like standbys.
                self.standby = true;
                self.reconnect_pending = true;
            }
        }
        if batch.is_empty() {
            return Ok(if self.ended { Some(None) } else { None });
        }
        Ok(Some(Some(batch)))
    }

    /// The position streaming resumes from after a reconnect: the last
    /// acknowledged one.
    pub fn acknowledged(&self) -> Lsn {
        self.ack.get()
    }

    fn names(&self) -> StreamNames<'_> {
        StreamNames {
            user: &self.params.user,
            slot: &self.cfg.slot,
            publication: &self.cfg.publication,
        }
    }

    /// Replaces the catalog connection when it no longer answers.
    async fn ensure_catalog(&mut self) -> Result<(), PgError> {
        if self.catalog.ping().await.is_err() {
            self.catalog = PgConnection::connect_with(&self.params.sqlx_options_for("catalog"))
                .await
                .map_err(|e| PgError::sql("reconnecting to PostgreSQL", e))?;
        }
        self.catalog_suspect = false;
        Ok(())
    }

    /// Writes a heartbeat; failures are logged by [`Heartbeat`] and retried
    /// after the next interval, never fatal.
    async fn write_heartbeat(&mut self) {
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

    /// One check of a standby: `Ok(true)` when the slot is free (the
    /// acknowledged position moved to its confirmed one), `Ok(false)` while
    /// another session holds it.
    async fn slot_is_free(&mut self) -> Result<bool, PgError> {
        let slot = self.cfg.slot.clone();
        match slot_activity(&mut self.catalog, &slot).await? {
            SlotActivity::Missing => Err(PgError::Stopped(format!(
                "replication slot `{slot}` no longer exists (dropped while the pipeline ran?): changes \
                 since the last confirmed position may be lost. Start again with snapshot.mode: initial \
                 (it creates the slot)"
            ))),
            SlotActivity::Lost => Err(PgError::Stopped(format!(
                "replication slot `{slot}` was invalidated: the server removed WAL it still needed \
                 (max_slot_wal_keep_size), so changes were lost. Raise max_slot_wal_keep_size, drop the \
                 slot (SELECT pg_drop_replication_slot({}); ) and start again with snapshot.mode: initial",
                crate::ident::quote_literal(&slot)
            ))),
            SlotActivity::Active { pid } => {
                self.cfg.status.set_phase(Phase::Standby);
                if self.seen_holder != Some(pid) {
                    self.seen_holder = Some(pid);
                    let pid = pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
                    tracing::info!(
                        slot = %slot,
                        "standing by: slot {slot} is active (pid {pid}); checking again every {:?}",
                        self.cfg.activity_check_interval
                    );
                }
                Ok(false)
            }
            SlotActivity::Free {
                confirmed_flush_lsn,
            } => {
                self.ack.advance(confirmed_flush_lsn);
                if self.seen_holder.take().is_some() {
                    tracing::info!(slot = %slot, "slot {slot} is free: taking over from LSN {}", self.ack.get());
                }
                Ok(true)
            }
        }
    }

    /// Starts (or restarts) the stream from the acknowledged position.
    /// After a failure it first waits with backoff (and jitter) and retries
    /// transient errors; a standby waits while another session holds the
    /// slot, checking every `activity_check_interval`. Definite errors end
    /// it with [`PgError::explain`]'s advice.
    async fn start_stream(&mut self) -> Result<(), PgError> {
        let mut wait = self.stream_failed.then(|| self.backoff.next_delay());
        loop {
            if let Some(mut old) = self.transport.take() {
                let _ = tokio::time::timeout(Duration::from_secs(2), old.shutdown(self.ack.get()))
                    .await;
            }
            if let Some(delay) = wait.take() {
                tokio::time::sleep(delay).await;
            }
            let attempt = async {
                self.ensure_catalog().await?;
                if self.standby && !self.slot_is_free().await? {
                    return Ok(None);
                }
                PgWireTransport::start(
                    self.params
                        .replication_config(&self.cfg.slot, &self.cfg.publication),
                    self.ack.get(),
                    self.cfg.status_interval,
                    self.cfg.buffer_events,
                )
                .await
                .map(Some)
            };
            match attempt.await {
                Ok(Some(t)) => {
                    if self.stream_failed {
                        self.cfg.status.record_reconnect();
                        tracing::info!(slot = %self.cfg.slot, from = %self.ack.get(), "replication stream reconnected");
                    } else {
                        tracing::info!(slot = %self.cfg.slot, start = %self.ack.get(), "streaming started");
                    }
                    self.transport = Some(t);
                    self.tx = None;
                    self.reconnect_pending = false;
                    self.stream_failed = false;
                    self.seen_holder = None;
                    self.heartbeat.activity();
                    self.cfg.status.set_phase(Phase::Streaming);
                    return Ok(());
                }
                Ok(None) => wait = Some(self.cfg.activity_check_interval),
                Err(e) if self.standby && is_slot_in_use(&e) => {
                    // Another standby took the slot first.
                    tracing::info!(slot = %self.cfg.slot, "another instance took slot {} first; standing by", self.cfg.slot);
                    self.cfg.status.set_phase(Phase::Standby);
                    self.seen_holder = Some(None);
                    wait = Some(self.cfg.activity_check_interval);
                }
                Err(e) if e.class() == ErrorClass::Retryable => {
                    let e = slot_in_use(e, &self.cfg.slot);
                    let delay = self.backoff.next_delay();
                    tracing::warn!(error = %cdc_core::error_chain(&e), attempt = self.backoff.attempts(), retry_in = ?delay, "starting the replication stream failed; retrying");
                    wait = Some(delay);
                }
                Err(e) => return Err(e.explain(self.names())),
            }
        }
    }

    async fn handle(&mut self, ev: WireEvent, batch: &mut Batch) -> Result<(), PgError> {
        match ev {
            WireEvent::Begin {
                final_lsn,
                xid,
                commit_time_us,
            } => {
                self.tx = Some(Tx {
                    commit_lsn: final_lsn,
                    xid,
                    commit_time_us,
                    ordinal: 0,
                });
            }
            WireEvent::Commit { end_lsn, .. } => {
                self.tx = None;
                self.heartbeat.activity();
                self.received = self.received.max(end_lsn);
                self.last_commit_end = self.last_commit_end.max(end_lsn);
                batch.checkpoint = Some(end_lsn);
            }
            WireEvent::Message {
                transactional,
                lsn,
                prefix,
                content,
            } => {
                self.received = self.received.max(lsn);
                push_message(batch, transactional, lsn, prefix, &content);
            }
            WireEvent::KeepAlive {
                wal_end,
                reply_requested,
            } => {
                self.cfg.status.record_server_wal_end(wal_end);
                if reply_requested {
                    self.confirm_quiet_position(wal_end, batch);
                    tracing::debug!(wal_end = %wal_end, "the server asked for a reply");
                }
            }
            WireEvent::Data {
                wal_start,
                wal_end,
                data,
            } => {
                self.received = self.received.max(wal_start);
                if !wal_end.is_zero() {
                    self.cfg.status.record_server_wal_end(wal_end);
                }
                let msg = pgoutput::decode(&data)?;
                self.handle_message(msg, wal_start, batch).await?;
            }
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
    fn confirm_quiet_position(&mut self, wal_end: Lsn, batch: &Batch) {
        let previous = std::mem::replace(&mut self.last_keepalive_end, wal_end);
        // Every batch handed out is durable, not only every commit: a
        // non-transactional logical message has no commit and would
        // otherwise be confirmed past while a sink still holds it.
        let caught_up = self.tx.is_none()
            && batch.is_empty()
            && batch.checkpoint.is_none()
            && self.ack.get() >= self.last_commit_end
            && self.ack.durable_batches() >= self.returned;
        if caught_up && wal_end == previous && wal_end > self.ack.get() {
            if let Some(t) = self.transport.as_mut() {
                tracing::debug!(position = %wal_end, "confirming the server's quiet WAL end: everything before it is durable");
                t.ack(wal_end);
            }
        }
    }

    fn source_info(&mut self, lsn: Lsn) -> Result<SourceInfo, PgError> {
        let tx = self.tx.as_mut().ok_or_else(|| {
            PgError::Protocol("a row change arrived outside a transaction".into())
        })?;
        let ordinal = tx.ordinal;
        tx.ordinal += 1;
        Ok(SourceInfo {
            commit_lsn: tx.commit_lsn,
            lsn: if lsn.is_zero() { tx.commit_lsn } else { lsn },
            ordinal,
            txid: Some(tx.xid),
            commit_time_us: tx.commit_time_us,
            snapshot: SnapshotMarker::False,
        })
    }

    /// The tracked relation `oid`; `None` for one that is not tracked,
    /// whose change is counted and skipped (warned about the first time).
    fn relation(&mut self, oid: u32) -> Result<Option<&RelationInfo>, PgError> {
        let skipped = match self.relations.get(&oid) {
            Some(r) if r.tracked => None,
            Some(r) => Some((r.info.schema.name.clone(), r.untracked_reason.clone())),
            None => {
                return Err(PgError::Protocol(format!(
                    "a change for relation {oid} arrived before its Relation message"
                )))
            }
        };
        if let Some((name, reason)) = skipped {
            self.cfg.status.record_untracked(&name);
            if self.warned_untracked.insert(name.clone()) {
                tracing::warn!(relation = %name, "skipping the changes of {name}: {}",
                    reason.as_deref().unwrap_or("it is not in source.tables"));
            }
            return Ok(None);
        }
        Ok(self.relations.get(&oid).map(|r| &r.info))
    }

    /// Why publication changes of `name` (OID `oid`) reach the engine,
    /// which does not track it: for the warning about its skipped changes.
    async fn untracked_reason(&mut self, oid: u32, name: &TableName) -> String {
        let publication = &self.cfg.publication;
        let root = sqlx::query(
            "SELECT n.nspname::pg_catalog.text AS s, c.relname::pg_catalog.text AS t
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = pg_catalog.pg_partition_root($1::pg_catalog.oid::pg_catalog.regclass)
               AND c.oid <> $1::pg_catalog.oid",
        )
        .bind(i64::from(oid))
        .fetch_optional(&mut self.catalog)
        .await;
        let root = match root {
            Ok(Some(row)) => match (
                sqlx::Row::try_get::<String, _>(&row, "s"),
                sqlx::Row::try_get::<String, _>(&row, "t"),
            ) {
                (Ok(s), Ok(t)) => Some(TableName::new(s, t)),
                _ => None,
            },
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, relation = %name, "could not look up the partition root");
                None
            }
        };
        match root {
            Some(root) if self.tracked.contains(&root) => format!(
                "{name} is a partition of {root}, and publication `{publication}` sends its changes \
                 under the partition's name (it does not set publish_via_partition_root): they are not \
                 captured as changes of {root}; run ALTER PUBLICATION {} SET (publish_via_partition_root = true); \
                 and take a new snapshot of {root}",
                crate::ident::quote_ident(publication)
            ),
            Some(root) => format!(
                "{name} is a partition of {root}, which is not in source.tables either, but publication \
                 `{publication}` publishes it; add {root} to source.tables, or remove it from the publication"
            ),
            None => format!(
                "{name} is not in source.tables, but publication `{publication}` publishes it (FOR ALL \
                 TABLES, or added to it outside the engine); add it to source.tables, or remove it from \
                 the publication"
            ),
        }
    }

    async fn handle_message(
        &mut self,
        msg: Message,
        wal_start: Lsn,
        batch: &mut Batch,
    ) -> Result<(), PgError> {
        let change = match msg {
            Message::Relation(rel) => {
                crate::failpoint::failpoint!("stream::before_describe");
                let info = match describe_relation(&mut self.catalog, &self.database, &rel).await {
                    // The catalog connection may have been terminated (by
                    // an administrator, a dropped TCP connection) while it
                    // sat idle: connect again and ask once more.
                    Err(e) if e.class() == ErrorClass::Retryable => {
                        tracing::warn!(error = %cdc_core::error_chain(&e), "catalog connection failed; connecting again");
                        self.ensure_catalog().await?;
                        describe_relation(&mut self.catalog, &self.database, &rel).await?
                    }
                    other => other?,
                };
                let tracked = self.tracked.contains(&info.schema.name);
                let untracked_reason = if tracked {
                    None
                } else {
                    Some(self.untracked_reason(rel.oid, &info.schema.name).await)
                };
                let previous = self.relations.remove(&rel.oid);
                if tracked && previous.as_ref().map(|p| &p.info.schema) != Some(&info.schema) {
                    batch
                        .events
                        .push(Event::Control(ControlEvent::SchemaChange {
                            table: info.schema.clone(),
                            previous: previous.map(|p| p.info.schema),
                        }));
                }
                self.relations.insert(
                    rel.oid,
                    Relation {
                        info,
                        tracked,
                        untracked_reason,
                    },
                );
                return Ok(());
            }
            Message::Insert(ins) => {
                let Some(rel) = self.relation(ins.relation_oid)? else {
                    return Ok(());
                };
                let after = parse_tuple(rel, &ins.new)?;
                (Op::Insert, rel.schema.clone(), None, Some(Row::new(after)))
            }
            Message::Update(upd) => {
                let Some(rel) = self.relation(upd.relation_oid)? else {
                    return Ok(());
                };
                let before = upd.old.as_ref().map(|o| old_row(rel, o)).transpose()?;
                let mut after = parse_tuple(rel, &upd.new)?;
                fill_unchanged_toast(&mut after, before.as_ref());
                (
                    Op::Update,
                    rel.schema.clone(),
                    before,
                    Some(Row::new(after)),
                )
            }
            Message::Delete(del) => {
                let Some(rel) = self.relation(del.relation_oid)? else {
                    return Ok(());
                };
                let before = old_row(rel, &del.old)?;
                (Op::Delete, rel.schema.clone(), Some(before), None)
            }
            Message::Truncate(tr) => {
                for oid in &tr.relation_oids {
                    let Some(rel) = self.relation(*oid)? else {
                        continue;
                    };
                    let table = rel.schema.clone();
                    let source = self.source_info(wal_start)?;
                    batch.events.push(Event::Change(ChangeEvent {
                        op: Op::Truncate,
                        table,
                        before: None,
                        after: None,
                        source,
                    }));
                }
                return Ok(());
            }
            Message::Message(m) => {
                push_message(batch, m.transactional, m.lsn, m.prefix, &m.content);
                return Ok(());
            }
            // Begin/Commit are handled by the transport; type names and
            // origins come from the catalog / are not needed.
            Message::Begin(_) | Message::Commit(_) | Message::Origin(_) | Message::Type(_) => {
                return Ok(())
            }
        };
        let (op, table, before, after) = change;
        let source = self.source_info(wal_start)?;
        batch.events.push(Event::Change(ChangeEvent {
            op,
            table,
            before,
            after,
            source,
        }));
        Ok(())
    }

    async fn fill_batch(&mut self) -> Result<Option<Batch>, PgError> {
        let mut batch = Batch::default();
        let mut bytes = 0usize;
        let mut first_at: Option<Instant> = None;
        let idle_poll = Duration::from_millis(200);
        loop {
            if self.reconnect_pending {
                if !batch.is_empty() || batch.checkpoint.is_some() {
                    return Ok(Some(batch));
                }
                self.start_stream().await?;
            }
            if first_at.is_none() && self.tx.is_none() && self.heartbeat.due() {
                self.write_heartbeat().await;
            }
            let Some(transport) = self.transport.as_mut() else {
                return Ok(None);
            };
            transport.ack(self.ack.get());
            // A batch ends on time only between transactions (the rest of
            // a transaction is already on its way: pgoutput v1 sends it at
            // commit), so an acknowledged batch never ends inside one
            // unless a size limit cut it.
            let wait = match first_at {
                Some(t) if self.tx.is_none() => self.cfg.max_batch_wait.saturating_sub(t.elapsed()),
                _ => idle_poll,
            };
            match transport.recv(wait).await {
                Ok(Recv::Idle) => {
                    if first_at.is_some() && self.tx.is_none() {
                        return Ok(Some(batch));
                    }
                }
                Ok(Recv::Ended) => {
                    self.transport = None;
                    return Ok((first_at.is_some()).then_some(batch));
                }
                Ok(Recv::Event(ev)) => {
                    self.backoff.reset();
                    if let WireEvent::Data { data, .. } = &ev {
                        bytes += data.len();
                    }
                    match self.handle(ev, &mut batch).await {
                        Ok(()) => {}
                        // The catalog connection failed and could not be
                        // replaced right now (the server is restarting,
                        // say): start the stream over, with backoff, from
                        // the acknowledged position, as after a stream
                        // error (`start_stream` connects the catalog again
                        // first). The change is sent again.
                        Err(e) if e.class() == ErrorClass::Retryable => {
                            tracing::warn!(error = %cdc_core::error_chain(&e), "catalog connection failed while streaming; restarting the replication stream");
                            self.reconnect_pending = true;
                            self.stream_failed = true;
                            self.cfg.status.set_phase(Phase::Reconnecting);
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                    if first_at.is_none() && (!batch.is_empty() || batch.checkpoint.is_some()) {
                        first_at = Some(Instant::now());
                    }
                    if batch.events.len() >= self.cfg.max_batch_events
                        || bytes >= self.cfg.max_batch_bytes
                    {
                        return Ok(Some(batch));
                    }
                }
                Err(e) if e.class() == ErrorClass::Retryable => {
                    tracing::warn!(error = %cdc_core::error_chain(&e), "replication stream failed; reconnecting");
                    self.reconnect_pending = true;
                    self.stream_failed = true;
                    self.cfg.status.set_phase(Phase::Reconnecting);
                }
                Err(e) => return Err(e.explain(self.names())),
            }
        }
    }
}

/// Adds a logical decoding message to `batch`: our own heartbeats as
/// [`ControlEvent::Heartbeat`], anyone else's as [`ControlEvent::Message`].
fn push_message(batch: &mut Batch, transactional: bool, lsn: Lsn, prefix: String, content: &[u8]) {
    let event = if prefix == HEARTBEAT_PREFIX {
        ControlEvent::Heartbeat { lsn }
    } else {
        ControlEvent::Message {
            transactional,
            lsn,
            prefix,
            content: content.to_vec(),
        }
    };
    batch.events.push(Event::Control(event));
}

impl PgSource {
    async fn next_batch_inner(&mut self) -> Result<Option<Batch>, PgError> {
        let batch = loop {
            if self.ended {
                return Ok(None);
            }
            if self.snapshot.is_some() {
                if let Some(b) = self.snapshot_batch().await? {
                    break b;
                }
                continue;
            }
            break self.fill_batch().await?;
        };
        self.cfg.status.record_received(self.received);
        let mut batch = batch;
        if let Some(b) = batch.as_mut() {
            self.returned += 1;
            b.seq = self.returned;
        } else {
            self.cfg.status.set_phase(Phase::Stopped);
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
                    self.cfg.status.set_phase(Phase::Stopped);
                }
                Err(e.into())
            }
        }
    }

    fn ack_handle(&self) -> AckHandle {
        self.ack.clone()
    }

    fn status(&self) -> SourceStatus {
        self.cfg.status.clone()
    }

    async fn shutdown(&mut self) -> Result<(), SourceError> {
        // Stops the snapshot readers; an unfinished snapshot resumes on the next start.
        self.snapshot = None;
        self.cfg.status.set_phase(Phase::Stopped);
        if let Some(mut t) = self.transport.take() {
            t.shutdown(self.ack.get()).await?;
        }
        Ok(())
    }
}
