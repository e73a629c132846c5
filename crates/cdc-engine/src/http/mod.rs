//! The engine's HTTP endpoint: `GET /metrics`, `GET /status`, `GET /healthz`
//! (see `docs/operations-metrics.md`), and `POST /snapshot` when
//! `metrics.snapshot_requests` is on.

mod routes;
mod server;
mod snapshot;
mod status_doc;

pub use server::{bind, serve};

/// The state of an engine with one stdout sink, for the handlers' tests.
#[cfg(test)]
fn test_state(
    config: &crate::config::Config,
    shutdown: tokio_util::sync::CancellationToken,
) -> crate::engine_state::EngineState {
    use crate::metrics::{PipelineMetrics, SinkMetrics};
    crate::engine_state::EngineState::new(
        "p".into(),
        "s".into(),
        cdc_core::SourceStatus::new(),
        std::sync::Arc::new(PipelineMetrics::new(
            &config.source.tables,
            vec![SinkMetrics::new("sinks[0]", "stdout", 8)],
        )),
        crate::secrets::Secrets::from_config(config),
        shutdown,
    )
}
