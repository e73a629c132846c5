//! Orchestration of the initial load: who exports the snapshot, who reads
//! which chunk, when a chunk counts as done, and the handoff to streaming.
//!
//! # How the handoff stays exact
//!
//! With `mode: initial` and no slot yet, the coordinator creates the slot on
//! a replication connection with `SNAPSHOT 'export'`. PostgreSQL returns the
//! slot's consistent point and a snapshot that sees exactly the
//! transactions committed before it. Every chunk is read under that
//! snapshot (`SET TRANSACTION SNAPSHOT`), and streaming later starts at the
//! consistent point: each row committed before arrives once as a snapshot
//! read, each later change once as a stream event. The connection that
//! exported the snapshot stays idle until every chunk (of every instance)
//! is done, then starts the stream itself.
//!
//! # Sharing and resuming
//!
//! Instances coordinate through two tables (see [`crate::snapshot`]): the
//! coordinator (winner of `pg_try_advisory_lock` on a hash of the slot name)
//! plans chunks; every instance claims chunks with `FOR UPDATE SKIP LOCKED`,
//! heartbeats them while it reads and until their rows are durable, and
//! marks them done only once every sink has accepted those rows (the
//! pipeline's durable batch count). A chunk whose heartbeat stops is claimed
//! again after `claim_timeout`.
//!
//! If the coordinator dies its snapshot dies with it. The next instance to
//! win the lock exports a new snapshot from an ordinary `REPEATABLE READ`
//! transaction and records it; the remaining chunks are read under it,
//! completed chunks are never read again, and streaming still starts at the
//! slot's consistent point, so changes after it are replayed over the
//! re-read rows and keyed sinks converge to the source state.

mod emitter;
mod export;
mod phase;
mod settings;
mod workers;

pub(crate) use phase::{SnapshotPhase, StreamStart, Transition};
pub use settings::{Chunking, SnapshotMode, SnapshotSettings};
