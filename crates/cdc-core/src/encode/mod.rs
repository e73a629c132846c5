//! Encoders: turn events into bytes for a sink.
//!
//! [`DebeziumJson`] writes the Debezium-style envelope every built-in sink
//! uses; [`write_value`] renders one column value exactly as PostgreSQL's
//! `to_jsonb` does, for sinks with an envelope of their own.

mod debezium;
mod float_text;
mod json_text;
mod value_json;

pub use debezium::DebeziumJson;
pub use json_text::write_json_string;
pub use value_json::{write_json_array, write_value};
