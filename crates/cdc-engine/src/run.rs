//! `cdc-engine run`: build the source and sinks from a [`Config`] and run
//! the pipeline until a signal, the end of the source, or a fatal error.

use std::net::SocketAddr;
use std::sync::Arc;

use cdc_core::{DynSink, Phase, SourceStatus};
use cdc_postgres::{PgSource, PgSourceConfig};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use cdc_postgres::SnapshotSettings;

use crate::config::{
    ChunkRows, Chunking, Config, CopyConnection, CopyFormat, SinkConfig, SnapshotConfig,
    SnapshotMode,
};
use crate::engine_state::EngineState;
use crate::lag_poll::run_lag_poll;
use crate::metrics::{PipelineMetrics, SinkMetrics};
use crate::pipeline::{run_pipeline_observed, NamedSink, Outcome, PipelineError, PipelineOptions};
use crate::secrets::Secrets;
use crate::sinks::{FileSink, StdoutSink};

/// Why [`run`] failed. A source that cannot connect yet (a server still
/// starting) is retried inside `run` and is not one of these; a sink that
/// cannot be opened is, whatever its error's class.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The source could not start.
    #[error("source")]
    Source(#[from] cdc_postgres::PgError),
    /// A sink could not be opened.
    #[error("{sink}")]
    Sink {
        /// Which sink.
        sink: String,
        /// Why.
        #[source]
        error: cdc_core::SinkError,
    },
    /// The pipeline stopped with an error.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The pipeline stopped and the server had invalidated the slot: a
    /// new snapshot is needed (`cdc-engine resnapshot`).
    #[error(
        "{}",
        cdc_postgres::invalidation::invalidated_message(slot, Some(reason))
    )]
    SlotInvalidated {
        /// The slot.
        slot: String,
        /// Why the server invalidated it (`wal_removed`, …).
        reason: String,
    },
    /// The metrics endpoint could not listen on its address.
    #[error("metrics.listen: cannot listen on {addr}")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        #[source]
        error: std::io::Error,
    },
}

/// The source configuration the pipeline's settings describe.
pub(crate) fn source_config(config: &Config) -> PgSourceConfig {
    let src = &config.source;
    let mut pg = PgSourceConfig::new(
        src.url.clone(),
        src.tables.clone(),
        src.publication.name.clone(),
        src.slot.name.clone(),
    );
    pg.selection = src.selection();
    pg.subsets = src.subsets();
    pg.create_publication = src.publication.create;
    pg.create_slot = src.slot.create;
    pg.slot_failover = src.slot.failover;
    pg.primary_url = src.primary_url.clone();
    pg.replica_identity = src
        .replica_identity
        .iter()
        .map(|(t, r)| (t.clone(), (*r).into()))
        .collect();
    pg.max_batch_events = config.pipeline.max_batch_events;
    pg.max_batch_bytes = config.pipeline.max_batch_bytes;
    pg.max_batch_wait = config.pipeline.max_batch_wait;
    pg.reconnect_initial = config.retry.initial_backoff;
    pg.reconnect_max = config.retry.max_backoff;
    pg.reconnect_give_up_after = config.retry.give_up_after;
    pg.snapshot = snapshot_settings(&config.snapshot);
    pg.incremental.enabled = config.snapshot.incremental.enabled;
    pg.incremental.chunk_rows = config.snapshot.incremental.chunk_rows;
    pg.discovery_interval = src.discovery.enabled.then_some(src.discovery.interval);
    pg.heartbeat_interval = config
        .heartbeat
        .enabled
        .then_some(config.heartbeat.interval);
    pg.standby = src.slot.standby;
    pg.activity_check_interval = src.slot.activity_check_interval;
    pg
}

fn snapshot_settings(s: &SnapshotConfig) -> SnapshotSettings {
    let mut settings = SnapshotSettings::default();
    settings.mode = match s.mode {
        SnapshotMode::Never => cdc_postgres::SnapshotMode::Never,
        SnapshotMode::Initial => cdc_postgres::SnapshotMode::Initial,
        SnapshotMode::SnapshotOnly => cdc_postgres::SnapshotMode::SnapshotOnly,
    };
    settings.tables = s.tables.clone();
    settings.chunking = match s.chunking {
        Chunking::Auto => cdc_postgres::Chunking::Auto,
        Chunking::Ctid => cdc_postgres::Chunking::Ctid,
        Chunking::Key => cdc_postgres::Chunking::Key,
    };
    settings.chunk_rows = match s.chunk_rows {
        ChunkRows::Rows(rows) => cdc_postgres::ChunkRows::Fixed(rows),
        ChunkRows::Auto => cdc_postgres::ChunkRows::Auto,
    };
    settings.copy_format = match s.copy_format {
        CopyFormat::Auto => cdc_postgres::CopyFormat::Auto,
        CopyFormat::Text => cdc_postgres::CopyFormat::Text,
    };
    settings.own_copy_connection = s.copy_connection == CopyConnection::Own;
    settings.workers = s.workers;
    settings.claim_timeout = s.claim_timeout;
    settings.heartbeat_interval = s.heartbeat_interval;
    if let Some(id) = &s.instance_id {
        settings.instance_id = id.clone();
    }
    settings.metadata_schema = s.metadata_schema.clone();
    settings
}

/// Opens every configured sink.
async fn open_sinks(config: &Config) -> Result<Vec<NamedSink>, RunError> {
    let mut sinks = Vec::with_capacity(config.sinks.len());
    for (i, sink) in config.sinks.iter().enumerate() {
        let name = sink_name(i, sink);
        let pipeline = config.name.as_str();
        let span = tracing::info_span!("sink", name = %name);
        let opened: Result<Box<dyn DynSink>, cdc_core::SinkError> = async {
            match sink {
                SinkConfig::Stdout(_) => {
                    Ok(Box::new(StdoutSink::new(pipeline)) as Box<dyn DynSink>)
                }
                SinkConfig::File(f) => boxed(FileSink::open(&f.path, pipeline).await),
                SinkConfig::Crate(c) => c.settings.open(pipeline).await,
            }
        }
        .instrument(span)
        .await;
        match opened {
            Ok(sink) => sinks.push(NamedSink::new(name, sink)),
            Err(error) => return Err(RunError::Sink { sink: name, error }),
        }
    }
    Ok(sinks)
}

/// The name of the sink at `index` in logs and errors: `sinks[0] (file)`.
fn sink_name(index: usize, sink: &SinkConfig) -> String {
    format!("{} ({})", sink_id(index), sink.kind())
}

/// The id of the sink at `index` in metrics and `/status`: `sinks[0]`.
fn sink_id(index: usize) -> String {
    format!("sinks[{index}]")
}

fn boxed<S: cdc_core::Sink + 'static>(
    opened: Result<S, cdc_core::SinkError>,
) -> Result<Box<dyn DynSink>, cdc_core::SinkError> {
    opened.map(|s| Box::new(s) as Box<dyn DynSink>)
}

/// Runs the pipeline described by `config` until `shutdown` is cancelled,
/// the source ends, or a fatal error.
///
/// With a `metrics` section, the HTTP endpoint listens before anything
/// connects (so that a waiting instance answers too), and the lag poll
/// runs beside the pipeline. After a fatal error the endpoint keeps
/// answering for `metrics.hold_after_failure` (`/healthz` says `503`,
/// `/status` shows the error; a shutdown request ends the wait), then the
/// error is returned.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
) -> Result<Outcome, RunError> {
    let status = SourceStatus::new();
    let metrics = Arc::new(PipelineMetrics::new(
        &config.source.tables,
        config
            .sinks
            .iter()
            .enumerate()
            .map(|(i, s)| SinkMetrics::new(sink_id(i), s.kind(), config.pipeline.channel_capacity))
            .collect(),
    ));
    let mut state = EngineState::new(
        config.name.clone(),
        config.source.slot.name.clone(),
        status.clone(),
        metrics.clone(),
        Secrets::from_config(&config),
        shutdown.clone(),
    );
    if config.metrics.as_ref().is_some_and(|m| m.snapshot_requests) {
        state = state.with_snapshot_requests(config.clone());
    }
    let state = Arc::new(state);
    let endpoint_stop = CancellationToken::new();
    tokio::spawn(crate::progress::report_snapshot(
        status.clone(),
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        crate::progress::LOG_INTERVAL,
        endpoint_stop.clone(),
    ));
    if let Some(m) = &config.metrics {
        let listener = crate::http::bind(m.listen)
            .await
            .map_err(|error| RunError::Listen {
                addr: m.listen,
                error,
            })?;
        let addr = listener.local_addr().unwrap_or(m.listen);
        tracing::info!(%addr, "serving /metrics, /status and /healthz");
        tokio::spawn(crate::http::serve(
            listener,
            state.clone(),
            endpoint_stop.clone(),
        ));
        tokio::spawn(run_lag_poll(
            config.source.url.clone(),
            config.source.slot.name.clone(),
            m.lag_poll_interval,
            state.lag.clone(),
            endpoint_stop.clone(),
        ));
    }
    let result = connect_and_run(
        &config,
        status.clone(),
        metrics,
        shutdown.clone(),
        hard_stop,
    )
    .await;
    if let Err(e) = &result {
        state.set_failed(cdc_core::error_chain(e));
    }
    let result = match result {
        // Whatever the error looked like, an invalidated slot is what the
        // user must hear about (and never answered with a new slot).
        Err(e) => match crate::lag_poll::poll_now(
            &config.source.url,
            &config.source.slot.name,
            &state.lag,
        )
        .await
        {
            Some(reason) => {
                tracing::error!(error = %state.secrets.scrub(&cdc_core::error_chain(&e)), "the pipeline stopped");
                Err(RunError::SlotInvalidated {
                    slot: config.source.slot.name.clone(),
                    reason,
                })
            }
            None => Err(e),
        },
        ok => ok,
    };
    if let Err(e) = &result {
        state.set_failed(cdc_core::error_chain(e));
    }
    status.set_phase(Phase::Stopped);
    if let (Err(e), Some(m)) = (&result, &config.metrics) {
        if !m.hold_after_failure.is_zero() && !shutdown.is_cancelled() {
            tracing::error!(
                error = %state.secrets.scrub(&cdc_core::error_chain(e)),
                hold = ?m.hold_after_failure,
                "pipeline failed; /healthz reports it until the engine exits"
            );
            tokio::select! {
                _ = tokio::time::sleep(m.hold_after_failure) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }
    endpoint_stop.cancel();
    result
}

/// Opens the sinks, connects (retrying transient failures such as a server
/// that is still starting), then runs the pipeline until `shutdown` is
/// cancelled.
async fn connect_and_run(
    config: &Config,
    status: SourceStatus,
    metrics: Arc<PipelineMetrics>,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
) -> Result<Outcome, RunError> {
    // Stopped before anything was read: nothing acknowledged.
    let stopped = Outcome::default();
    let sinks = open_sinks(config).await?;
    tracing::debug!(url = %config.source.redacted_url(), slot = %config.source.slot.name, "connecting to the source");
    let mut pg_config = source_config(config);
    pg_config.status = status.clone();
    let mut backoff =
        cdc_core::Backoff::new(config.retry.initial_backoff, config.retry.max_backoff)
            .give_up_after(config.retry.give_up_after);
    let source = loop {
        status.set_phase(Phase::Starting);
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return Ok(stopped),
            r = PgSource::connect(pg_config.clone()) => r,
        };
        match attempt {
            Ok(s) => break s,
            Err(e) if e.class() == cdc_core::ErrorClass::Retryable => {
                let delay = backoff.next_delay();
                if backoff.exhausted() {
                    return Err(cdc_postgres::PgError::Stopped(format!(
                        "could not start the source for {:.1?} (retry.give_up_after {:?}); last error: {}",
                        backoff.failing_for().unwrap_or_default(),
                        config.retry.give_up_after.unwrap_or_default(),
                        cdc_core::error_chain(&e)
                    ))
                    .into());
                }
                status.set_phase(Phase::Reconnecting);
                tracing::warn!(error = %cdc_core::error_chain(&e), retry_in = ?delay, "cannot start streaming yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(stopped),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut opts = PipelineOptions::default();
    opts.channel_capacity = config.pipeline.channel_capacity;
    opts.retry_initial = config.retry.initial_backoff;
    opts.retry_max = config.retry.max_backoff;
    opts.give_up_after = config.retry.give_up_after;
    Ok(run_pipeline_observed(source, sinks, opts, metrics, shutdown, hard_stop).await?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_settings_carry_the_copy_format() {
        let mut config = SnapshotConfig::default();
        let auto = snapshot_settings(&config).copy_format;
        assert_eq!(auto, cdc_postgres::CopyFormat::Auto);
        config.copy_format = CopyFormat::Text;
        let text = snapshot_settings(&config).copy_format;
        assert_eq!(text, cdc_postgres::CopyFormat::Text);
    }

    #[test]
    fn snapshot_settings_carry_the_copy_connection() {
        let mut config = SnapshotConfig::default();
        assert!(snapshot_settings(&config).own_copy_connection);
        config.copy_connection = CopyConnection::Driver;
        assert!(!snapshot_settings(&config).own_copy_connection);
    }
}
