//! The engine's metrics: names ([`names`]), the counters the pipeline
//! updates ([`PipelineMetrics`]), and the Prometheus text rendering
//! ([`render_metrics`]).

pub mod exposition;
pub mod histogram;
pub mod names;
mod pipeline;
mod render;

pub use pipeline::{change_count, op_label, PipelineMetrics, SinkMetrics, SinkState, OPS};
pub use render::render_metrics;
