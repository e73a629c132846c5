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
//!
//! # Tables rewritten under the snapshot
//!
//! `ALTER TABLE … TYPE`, `VACUUM FULL`, `CLUSTER` or pg_repack may rewrite
//! a table while it is being read; chunks read afterwards under the old
//! snapshot would see the new file (empty, or rows at other blocks). Each
//! read checks for that first, under the table's lock
//! ([`crate::snapshot::rewritten_since_snapshot`]). A reader that finds a
//! rewrite hands on nothing of the chunk and starts the table over in the
//! metadata ([`crate::snapshot::MetadataStore::reread_table`]: all its
//! chunks pending, the job's snapshot cleared); the coordinator, on
//! whichever instance, sees no recorded snapshot and exports a new one,
//! under which the whole table is read again. Rows already delivered are
//! delivered again; streaming from the consistent point makes them converge.
//! A rewrite that falls between two exports made for another reason (a
//! coordinator change) is seen by neither check: each chunk therefore
//! records the table's files it was read from when it is marked done, and
//! a table whose done chunks name different files is started over too
//! ([`crate::snapshot::MetadataStore::read_from_differs`]).

mod begin;
mod chunk_conn;
mod claims;
mod completion;
mod coordinator;
mod emitter;
mod export;
mod item;
mod phase;
mod planner;
mod request;
mod settings;
mod workers;

pub(crate) use phase::{SnapshotPhase, Transition};
pub(crate) use request::SnapshotRequest;
pub use settings::{ChunkRows, Chunking, SnapshotMode, SnapshotSettings};
