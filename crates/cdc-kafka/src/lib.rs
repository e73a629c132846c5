//! Kafka sink for the PostgreSQL CDC toolkit.
//!
//! Not implemented yet: this crate reserves its place in the workspace. The
//! sink (rdkafka, keyed by primary key, durable on delivery reports) is
//! tracked in its own issue.
