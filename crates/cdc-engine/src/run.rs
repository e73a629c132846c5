//! `cdc-engine run`: build the source and sinks from a [`Config`] and run
//! the pipeline until a signal, the end of the source, or a fatal error.

use std::time::Duration;

use cdc_core::DynSink;
use cdc_postgres::{PgSource, PgSourceConfig};
use tokio_util::sync::CancellationToken;

use cdc_postgres::SnapshotSettings;

use crate::config::{Chunking, Config, SinkConfig, SnapshotConfig, SnapshotMode};
use crate::pipeline::{run_pipeline, NamedSink, Outcome, PipelineError, PipelineOptions};
use crate::sinks::{FileSink, StdoutSink};

/// How long sinks may take to drain after SIGINT/SIGTERM before the engine
/// gives up on them (a second signal gives up at once).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why `run` failed.
#[derive(Debug, thiserror::Error)]
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
}

/// The source configuration the pipeline's settings describe.
pub fn source_config(config: &Config) -> PgSourceConfig {
    let src = &config.source;
    let mut pg = PgSourceConfig::new(
        src.url.clone(),
        src.tables.clone(),
        src.publication.name.clone(),
        src.slot.name.clone(),
    );
    pg.create_publication = src.publication.create;
    pg.create_slot = src.slot.create;
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
    pg.snapshot = snapshot_settings(&config.snapshot);
    pg.heartbeat_interval = config
        .heartbeat
        .enabled
        .then_some(config.heartbeat.interval);
    pg.standby = src.slot.standby;
    pg.activity_check_interval = src.slot.activity_check_interval;
    pg
}

fn snapshot_settings(s: &SnapshotConfig) -> SnapshotSettings {
    let defaults = SnapshotSettings::default();
    SnapshotSettings {
        mode: match s.mode {
            SnapshotMode::Never => cdc_postgres::SnapshotMode::Never,
            SnapshotMode::Initial => cdc_postgres::SnapshotMode::Initial,
            SnapshotMode::SnapshotOnly => cdc_postgres::SnapshotMode::SnapshotOnly,
        },
        tables: s.tables.clone(),
        chunking: match s.chunking {
            Chunking::Auto => cdc_postgres::Chunking::Auto,
            Chunking::Ctid => cdc_postgres::Chunking::Ctid,
            Chunking::Key => cdc_postgres::Chunking::Key,
        },
        chunk_rows: s.chunk_rows,
        workers: s.workers,
        claim_timeout: s.claim_timeout,
        heartbeat_interval: s.heartbeat_interval,
        instance_id: s.instance_id.clone().unwrap_or(defaults.instance_id),
        metadata_schema: s.metadata_schema.clone(),
        rows_per_batch: defaults.rows_per_batch,
    }
}

/// Opens every configured sink.
pub async fn open_sinks(config: &Config) -> Result<Vec<NamedSink>, RunError> {
    let mut sinks = Vec::with_capacity(config.sinks.len());
    for (i, sink) in config.sinks.iter().enumerate() {
        let name = format!("sinks[{i}] ({})", sink.kind());
        let pipeline = config.name.as_str();
        let opened: Result<Box<dyn DynSink>, cdc_core::SinkError> = match sink {
            SinkConfig::Stdout(_) => Ok(Box::new(StdoutSink::new(pipeline))),
            SinkConfig::File(f) => boxed(FileSink::open(&f.path, pipeline).await),
            #[cfg(feature = "kafka")]
            SinkConfig::Kafka(c) => boxed(cdc_kafka::KafkaSink::connect(c, pipeline).await),
            #[cfg(feature = "nats")]
            SinkConfig::Nats(c) => boxed(cdc_nats::NatsSink::connect(c, pipeline).await),
            #[cfg(feature = "elasticsearch")]
            SinkConfig::Elasticsearch(c) => boxed(cdc_es::EsSink::connect(c, pipeline).await),
        };
        match opened {
            Ok(sink) => sinks.push(NamedSink { name, sink }),
            Err(error) => return Err(RunError::Sink { sink: name, error }),
        }
    }
    Ok(sinks)
}

fn boxed<S: cdc_core::Sink + 'static>(
    opened: Result<S, cdc_core::SinkError>,
) -> Result<Box<dyn DynSink>, cdc_core::SinkError> {
    opened.map(|s| Box::new(s) as Box<dyn DynSink>)
}

/// Connects (retrying transient failures such as a server that is still
/// starting), then runs the pipeline until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
) -> Result<Outcome, RunError> {
    let sinks = open_sinks(&config).await?;
    let pg_config = source_config(&config);
    let mut backoff =
        cdc_core::Backoff::new(config.retry.initial_backoff, config.retry.max_backoff);
    let source = loop {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return Ok(Outcome { acknowledged: cdc_core::Lsn::ZERO, source_ended: false }),
            r = PgSource::connect(pg_config.clone()) => r,
        };
        match attempt {
            Ok(s) => break s,
            Err(e) if e.class() == cdc_core::ErrorClass::Retryable => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %cdc_core::error_chain(&e), retry_in = ?delay, "cannot start streaming yet; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(Outcome { acknowledged: cdc_core::Lsn::ZERO, source_ended: false }),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    let opts = PipelineOptions {
        channel_capacity: config.pipeline.channel_capacity,
        retry_initial: config.retry.initial_backoff,
        retry_max: config.retry.max_backoff,
    };
    Ok(run_pipeline(source, sinks, opts, shutdown, hard_stop).await?)
}
