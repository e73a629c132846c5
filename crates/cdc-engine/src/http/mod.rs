//! The engine's HTTP endpoint: `GET /metrics`, `GET /status`, `GET /healthz`
//! (see `docs/operations-metrics.md`), and `POST /snapshot` when
//! `metrics.snapshot_requests` is on.

mod routes;
mod server;
mod snapshot;
mod status_doc;

pub use server::{bind, serve};
