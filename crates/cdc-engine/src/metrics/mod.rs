//! The engine's metrics: names ([`names`]), the counters the pipeline
//! updates ([`PipelineMetrics`], from `cdc-pipeline`), and the Prometheus
//! text rendering ([`render_metrics`]).

pub mod exposition;
pub mod names;
mod render;

pub use cdc_pipeline::metrics::histogram;
pub use cdc_pipeline::metrics::{op_label, PipelineMetrics, SinkMetrics, SinkState, OPS};
pub use render::render_metrics;
