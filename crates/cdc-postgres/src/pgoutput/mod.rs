//! A pure decoder for PostgreSQL's `pgoutput` logical replication protocol,
//! version 1.
//!
//! [`decode`] turns one pgoutput message (the payload of an `XLogData`
//! replication message, or one row of `pg_logical_slot_get_binary_changes`)
//! into a [`Message`]. It does no I/O, never panics, and never trusts a
//! length or count read from the wire: malformed input gives a
//! [`DecodeError`] saying what was being read and at which byte offset.
//!
//! Column values ([`TupleValue::Text`], [`TupleValue::Binary`]) are zero-copy
//! slices of the input buffer; turning them into typed values is the job of the
//! value parser, not of this module.
//!
//! Reference: PostgreSQL documentation, "Logical Replication Message Formats".

mod decode;
mod error;
mod message;
mod reader;
#[cfg(test)]
mod tests;

pub use decode::{decode, pgoutput_epoch_to_unix_micros, PG_EPOCH_OFFSET_MICROS};
pub use error::DecodeError;
pub use message::{
    Begin, Commit, Delete, Insert, LogicalMessage, Message, OldTuple, OldTupleKind, Origin,
    Relation, RelationColumn, Truncate, TupleData, TupleValue, TypeInfo, Update,
};
