//! The engine's HTTP endpoint: `GET /metrics`, `GET /status`, `GET /healthz`
//! (see `docs/operations-metrics.md`).

mod routes;
mod server;
mod status_doc;

pub use server::{bind, serve};
