//! Connecting a [`PgSource`]: the checks, the setup of replica identities,
//! publication and slot, and the state the source starts in.

use cdc_core::{AckHandle, Backoff, Lsn, Phase, TableName};
use sqlx::{Connection, PgConnection};

use super::changes::Changes;
use super::config::PgSourceConfig;
use super::context::Context;
use super::discovery::Discovery;
use super::heartbeat::Heartbeat;
use super::source::PgSource;
use super::state::{Starting, State};
use crate::conn::{for_role, ConnParams};
use crate::error::{slot_in_use, PgError, StreamNames};
use crate::incremental::Incremental;
use crate::load::{SnapshotMode, SnapshotPhase, SnapshotRequest};
use crate::local_subsets::LocalSubsets;
use crate::replication::PgWireTransport;
use crate::setup::{self, ServerInfo};
use crate::snapshot::MetadataStore;

impl PgSource {
    /// Runs the preflight check ([`setup::run_check`]: fails naming every
    /// blocking problem, logs the warnings), prepares replica identities,
    /// the publication and the slot as configured, then either starts the
    /// snapshot (modes `initial` and `snapshot_only`, see
    /// [`SnapshotMode`](crate::SnapshotMode) and the crate documentation)
    /// or streams from the slot's confirmed position.
    pub async fn connect(cfg: PgSourceConfig) -> Result<Self, PgError> {
        let params = ConnParams::parse(&cfg.url)?.pick_host().await?;
        if params.hosts.len() > 1 {
            tracing::info!(host = %params.host, port = params.port, "using {}:{} of the servers of source.url", params.host, params.port);
        }
        let mut catalog = PgConnection::connect_with(&for_role(&params.sqlx_options(), "catalog"))
            .await
            .map_err(|e| PgError::sql("connecting to PostgreSQL", e))?;
        let exact = cfg.tables.clone();
        let cfg = select_tables(&mut catalog, cfg).await?;
        cfg.status.set_tables(cfg.tables.iter().cloned());
        let (server, snapshot_tables, mut incremental) =
            prepare(&mut catalog, &cfg, &params).await?;
        let ack = AckHandle::new();
        let mode = cfg.snapshot.mode;
        let snapshot = if mode == SnapshotMode::Never {
            None
        } else {
            begin_snapshot(&cfg, &params, &server, snapshot_tables.clone(), &ack).await?
        };
        if let (Some(inc), SnapshotMode::Initial) = (incremental.as_mut(), mode) {
            // The initial snapshot is planned or done now: a table it does
            // not hold (added to source.tables since) is read while
            // streaming.
            let metadata = MetadataStore::new(cfg.snapshot.metadata_schema.clone());
            inc.add_new_tables(&mut catalog, &metadata, &snapshot_tables)
                .await?;
        }
        let discovery = match cfg.discovery_interval {
            Some(interval)
                if !cfg.selection.include.is_empty() && mode != SnapshotMode::SnapshotOnly =>
            {
                if incremental.is_none() {
                    tracing::warn!(
                        "tables created while streaming that match source.tables are captured from \
                         when they are noticed (within {interval:?}); the rows written to them before \
                         are not copied unless snapshot.incremental.enabled is true"
                    );
                }
                Some(
                    Discovery::start(
                        &mut catalog,
                        interval,
                        exact,
                        cfg.selection.clone(),
                        &cfg.tables,
                        &cfg.snapshot.metadata_schema,
                    )
                    .await?,
                )
            }
            _ => None,
        };
        let state = match snapshot {
            Some(phase) => State::Snapshot(Box::new(phase)),
            None if mode == SnapshotMode::SnapshotOnly => State::Ended,
            None => first_stream(&cfg, &params, &mut catalog, &server, &ack).await?,
        };
        let cx = Context {
            changes: Changes::new(cfg.tables.iter().cloned().collect()),
            backoff: Backoff::new(cfg.reconnect_initial, cfg.reconnect_max)
                .give_up_after(cfg.reconnect_give_up_after),
            standby: cfg.standby,
            heartbeat: Heartbeat::new(cfg.heartbeat_interval),
            local_subsets: LocalSubsets::from_subsets(&cfg.subsets),
            primary: None,
            cfg,
            params,
            database: server.database,
            catalog,
            catalog_suspect: false,
            ack,
            returned: 0,
            incremental,
            reading: false,
            filling: Default::default(),
            discovery,
        };
        Ok(Self { state, cx })
    }
}

/// Resolves `cfg`'s table selection against the catalog (see
/// [`crate::selection`]) into `cfg.tables`, warns about patterns that match
/// nothing and logs what is captured.
async fn select_tables(
    catalog: &mut PgConnection,
    mut cfg: PgSourceConfig,
) -> Result<PgSourceConfig, PgError> {
    if !cfg.selection.is_empty() {
        let resolved = crate::selection::resolve(
            catalog,
            &cfg.tables,
            &cfg.selection,
            &cfg.snapshot.metadata_schema,
        )
        .await?;
        for pattern in &resolved.unmatched {
            tracing::warn!(pattern = %pattern, "table pattern {pattern} matches no table");
        }
        if resolved.tables.is_empty() {
            return Err(PgError::Setup(
                "the table selection (source.tables minus source.exclude_tables) matches no table: \
                 check the patterns and exclusions"
                    .into(),
            ));
        }
        cfg.tables = resolved.tables;
    }
    let names: Vec<String> = cfg.tables.iter().map(ToString::to_string).collect();
    tracing::info!(tables = %names.join(", "), "capturing {} table(s)", names.len());
    Ok(cfg)
}

/// Checks everything at once, then prepares what streaming needs (replica
/// identities, the publication). Returns the server as the preflight found
/// it and the tables the snapshot copies.
async fn prepare(
    catalog: &mut PgConnection,
    cfg: &PgSourceConfig,
    params: &ConnParams,
) -> Result<(ServerInfo, Vec<TableName>, Option<Incremental>), PgError> {
    // A standby can stream, not write: refuse what needs the primary.
    setup::check_hot_standby(catalog, cfg).await?;
    // Every problem at once, before anything is changed.
    let report = setup::run_check(catalog, &setup::CheckRequest::from(cfg)).await?;
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
    let (server, tables) = setup::preflight(catalog, checked, streams).await?;
    if mode != SnapshotMode::Never {
        setup::check_select(catalog, &server, &snapshot_tables).await?;
    }
    let mut incremental = None;
    if streams {
        // (The check above warned about identities that break updates.)
        setup::ensure_replica_identity(catalog, &tables, &cfg.replica_identity).await?;
        let mut published = cfg.tables.clone();
        if cfg.incremental.enabled {
            let inc = Incremental::start(
                catalog,
                cfg,
                &server.database,
                params.sqlx_options_for("incremental"),
            )
            .await?;
            // Signals arrive through the slot like any other change.
            published.push(inc.signal_table());
            incremental = Some(inc);
        }
        if cfg.slot_failover && server.version_num < 170_000 {
            return Err(PgError::Setup(format!(
                "source.slot.failover needs PostgreSQL 17 or later (failover slots); this server \
                 is {}: leave it out",
                server.version_num
            )));
        }
        // Before PostgreSQL 15 a publication has no column lists: the
        // reader drops the excluded columns itself (LocalSubsets).
        let server_subsets = server.version_num >= 150_000;
        if !cfg.subsets.is_empty() {
            if !server_subsets && cfg.subsets.iter().any(|(_, s)| s.row_filter.is_some()) {
                return Err(PgError::Setup(format!(
                    "row filters (source.row_filters) need PostgreSQL 15 or later; this server is \
                     {}: leave them out (source.columns works on every version)",
                    server.version_num
                )));
            }
            if !cfg.create_publication {
                return Err(PgError::Setup(
                    "column lists and row filters (source.columns, source.row_filters) are set on \
                     a publication the engine manages (source.publication.create: true); with a \
                     publication made by hand, put them on the publication: the snapshot reads \
                     them from there"
                        .into(),
                ));
            }
        }
        setup::ensure_publication(
            catalog,
            &cfg.publication,
            &published,
            &cfg.subsets,
            cfg.create_publication,
        )
        .await?;
    }
    Ok((server, snapshot_tables, incremental))
}

/// Starts the snapshot phase ([`SnapshotPhase::begin`]); `None` when no
/// snapshot is needed (a completed one stands for the slot). The
/// acknowledged position starts at the snapshot's consistent point.
async fn begin_snapshot(
    cfg: &PgSourceConfig,
    params: &ConnParams,
    server: &ServerInfo,
    tables: Vec<TableName>,
    ack: &AckHandle,
) -> Result<Option<SnapshotPhase>, PgError> {
    let status = &cfg.status;
    let replication = PgWireTransport::client_config(
        PgWireTransport::replication_config(params, &cfg.slot, &cfg.publication),
        Lsn::ZERO,
        cfg.status_interval,
        cfg.buffer_events,
    );
    status.set_phase(Phase::Snapshot);
    let snapshot = SnapshotPhase::begin(SnapshotRequest {
        mode: cfg.snapshot.mode,
        settings: cfg.snapshot.clone(),
        tables,
        options: params.sqlx_options(),
        server: server.clone(),
        slot: cfg.slot.clone(),
        publication: cfg.publication.clone(),
        local_subsets: LocalSubsets::from_subsets(&cfg.subsets),
        create_slot: cfg.create_slot,
        slot_failover: cfg.slot_failover,
        replication,
        status: status.clone(),
    })
    .await?;
    match &snapshot {
        Some(phase) => ack.advance(phase.snapshot_lsn()),
        None => status.set_phase(Phase::Starting),
    }
    Ok(snapshot)
}

/// The first state of a source that streams without a snapshot: streaming
/// from the slot's confirmed position, or, for a standby, a first start
/// that checks who holds the slot ([`State::Starting`]).
async fn first_stream(
    cfg: &PgSourceConfig,
    params: &ConnParams,
    catalog: &mut PgConnection,
    server: &ServerInfo,
    ack: &AckHandle,
) -> Result<State, PgError> {
    let slot = setup::ensure_slot(
        catalog,
        server,
        &cfg.slot,
        setup::SlotCreation {
            create: cfg.create_slot,
            failover: cfg.slot_failover,
        },
    )
    .await?;
    ack.advance(slot.confirmed_flush_lsn);
    if cfg.standby {
        return Ok(State::Starting(Starting::first()));
    }
    let names = StreamNames {
        user: &params.user,
        slot: &cfg.slot,
        publication: &cfg.publication,
    };
    let t = PgWireTransport::start(
        PgWireTransport::replication_config(params, &cfg.slot, &cfg.publication),
        slot.confirmed_flush_lsn,
        cfg.status_interval,
        cfg.buffer_events,
    )
    .await
    .map_err(|e| slot_in_use(e, &cfg.slot).explain(names))?;
    tracing::info!(slot = %cfg.slot, start = %slot.confirmed_flush_lsn, "streaming started");
    cfg.status.set_phase(Phase::Streaming);
    Ok(State::Streaming(t))
}
