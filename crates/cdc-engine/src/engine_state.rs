//! [`EngineState`]: everything `/metrics`, `/status` and `/healthz` report,
//! shared between the running pipeline and the HTTP endpoint.

use std::sync::{Arc, Mutex, PoisonError};

use cdc_core::{Phase, SourceStatus};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::lag_poll::LagState;
use crate::metrics::PipelineMetrics;
use crate::secrets::Secrets;

/// What the engine is doing, as far as the health check is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Starting, snapshotting, streaming, reconnecting or in standby.
    Ok,
    /// A shutdown was requested, or the pipeline stopped.
    Stopping,
    /// The pipeline failed.
    Failed,
}

/// The shared state of one engine run.
#[derive(Debug)]
pub struct EngineState {
    /// The pipeline's `name`.
    pub pipeline: String,
    /// The replication slot's name.
    pub slot: String,
    /// The source's live status.
    pub source: SourceStatus,
    /// The pipeline's counters.
    pub metrics: Arc<PipelineMetrics>,
    /// The lag poll's results.
    pub lag: Arc<LagState>,
    /// Masks secrets in texts shown to the outside.
    pub secrets: Secrets,
    /// The pipeline's configuration when `POST /snapshot` is accepted
    /// (`metrics.snapshot_requests`).
    pub snapshot_requests: Option<Arc<Config>>,
    shutdown: CancellationToken,
    failure: Mutex<Option<String>>,
}

impl EngineState {
    /// The state of a run; `shutdown` is the run's shutdown request.
    pub fn new(
        pipeline: String,
        slot: String,
        source: SourceStatus,
        metrics: Arc<PipelineMetrics>,
        secrets: Secrets,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            pipeline,
            slot,
            source,
            metrics,
            lag: Arc::new(LagState::default()),
            secrets,
            snapshot_requests: None,
            shutdown,
            failure: Mutex::new(None),
        }
    }

    /// Accepts `POST /snapshot` for the pipeline `config` describes.
    pub fn with_snapshot_requests(mut self, config: Config) -> Self {
        self.snapshot_requests = Some(Arc::new(config));
        self
    }

    /// Records the fatal error the run ended with.
    pub fn set_failed(&self, message: String) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(message);
    }

    /// The fatal error, secrets masked.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_deref()
            .map(|m| self.secrets.scrub(m).into_owned())
    }

    /// Whether a shutdown was requested.
    pub fn stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// The phase shown to users: the source's, or `failed`.
    pub fn phase_label(&self) -> &'static str {
        if self.failure().is_some() {
            "failed"
        } else {
            self.source.phase().as_str()
        }
    }

    /// The health check's verdict.
    pub fn health(&self) -> Health {
        if self.failure().is_some() {
            Health::Failed
        } else if self.stopping() || self.source.phase() == Phase::Stopped {
            Health::Stopping
        } else {
            Health::Ok
        }
    }
}
