//! PostgreSQL source.
