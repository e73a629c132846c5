//! Harness for the integration tests in `integration-tests/tests/*.rs`.
//!
//! The tests run against real servers that `scripts/test.sh` starts and
//! describes through environment variables:
//!
//! - `CDC_TEST_PG_URL`: superuser URL of a PostgreSQL 15 cluster with
//!   `wal_level=logical` (see [`pg_url`]);
//! - `CDC_ENGINE_BIN`: the `cdc-engine` binary (see [`engine_bin`]).
//!
//! What it offers:
//!
//! - [`TestDb`]: a uniquely named database per test, dropped again together
//!   with its replication slots;
//! - [`Cluster`]: a PostgreSQL cluster of a test's own, for tests that
//!   restart the server or need other server settings;
//! - [`Engine`]: the engine binary as a child process, its output captured to
//!   files; [`run_engine_validate`] for one-shot `validate` runs;
//!   [`wait_streaming`] until it streams from its slot;
//! - [`ExtraDb`] / [`extra_cluster_url`]: a database on one of the
//!   misconfigured clusters (`CDC_TEST_PG_NOLOGICAL_URL`, `CDC_TEST_PG_FEWSLOTS_URL`);
//! - [`TestRole`]: a login role of a test's own;
//! - [`CutProxy`]: a TCP relay whose connections a test can cut (from the
//!   sinks' test kit, `cdc-sink-conformance`);
//! - [`KafkaProxy`]: a proxy in front of a Kafka broker that a test can
//!   cut or stall;
//! - [`Writers`]: concurrent clients changing `public.t` in small
//!   transactions (a [`Workload`]), through server restarts, logging what
//!   committed ([`Written`]);
//! - [`pipelines`]: the pipeline YAML of a test ([`pipelines::Pipeline`]);
//! - [`replay`]: what a sink wrote rebuilt into rows by key and compared
//!   with the table's `to_jsonb` (the file sink's files read with
//!   [`replay::Tail`]; any other output through
//!   [`cdc_sink_conformance::replay`]);
//! - [`multiset`]: rows compared as multisets of canonical JSON;
//! - [`snapshot_meta`]: the snapshot's coordination tables;
//! - [`incremental`]: incremental snapshots (the signal, their progress,
//!   the chunks a sink's reads came in);
//! - [`nats`]: the nats-server binary, JetStream stream counts;
//! - [`http`]: the engine's `/status` and other endpoints;
//! - [`value_columns`]: a table with a column of every type and its
//!   awkward values;
//! - [`TempDir`], [`read_jsonl`], [`wait_until`] / [`wait_for`],
//!   [`quote_ident`] / [`quote_literal`].
//!
//! Set `CDC_TEST_KEEP_DB=1` to keep the test databases and
//! `CDC_TEST_KEEP_TMP=1` to keep the temporary directories after a run.
//! Temporary directories of a test that panicked are always kept, and their
//! paths printed.

pub mod chunk_reads;
mod cluster;
mod db;
mod engine;
pub mod http;
pub mod incremental;
mod kafka_proxy;
pub mod multiset;
pub mod nats;
mod other_cluster;
pub mod pipelines;
pub mod replay;
mod role;
pub mod snapshot_meta;
mod stream_start;
mod util;
pub mod value_columns;
mod writers;

pub use cdc_sink_conformance::poll::{wait_for, wait_until};
pub use cdc_sink_conformance::CutProxy;
pub use cluster::{pg_bin, Cluster};
pub use db::{pg_url, url_with_address, url_with_database, TestDb};
pub use engine::{engine_bin, run_engine, run_engine_validate, Engine};
pub use kafka_proxy::{KafkaProxy, Released};
pub use other_cluster::{extra_cluster_url, ExtraDb, SlotsLock};
pub use role::{TestRole, TEST_ROLE_PASSWORD};
pub use stream_start::wait_streaming;
pub use util::{quote_ident, quote_literal, read_jsonl, unique_suffix, TempDir};
pub use writers::{Mix, RowChange, Workload, Writers, Written};
