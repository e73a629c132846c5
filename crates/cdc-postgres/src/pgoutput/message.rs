//! The decoded pgoutput protocol v1 messages.

use bytes::Bytes;
use cdc_core::Lsn;

/// One decoded pgoutput (protocol version 1) message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// `B`: a transaction starts.
    Begin(Begin),
    /// `C`: the transaction started by the last [`Message::Begin`] committed.
    Commit(Commit),
    /// `O`: the transaction originated on another node (replication origin).
    Origin(Origin),
    /// `R`: the description of a table, sent before its first change in a
    /// session and again whenever its definition (or relcache entry) changes.
    Relation(Relation),
    /// `Y`: the name of a non-built-in data type used by a relation.
    Type(TypeInfo),
    /// `I`: a row was inserted.
    Insert(Insert),
    /// `U`: a row was updated.
    Update(Update),
    /// `D`: a row was deleted.
    Delete(Delete),
    /// `T`: one or more tables were truncated.
    Truncate(Truncate),
    /// `M`: a logical decoding message (`pg_logical_emit_message`).
    Message(LogicalMessage),
}

impl Message {
    /// The message's name (`"Begin"`, `"Insert"`, …), for error messages and
    /// logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Begin(_) => "Begin",
            Message::Commit(_) => "Commit",
            Message::Origin(_) => "Origin",
            Message::Relation(_) => "Relation",
            Message::Type(_) => "Type",
            Message::Insert(_) => "Insert",
            Message::Update(_) => "Update",
            Message::Delete(_) => "Delete",
            Message::Truncate(_) => "Truncate",
            Message::Message(_) => "Message",
        }
    }
}

/// `B`: the start of a (committed) transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// The LSN of the transaction's commit record.
    pub final_lsn: Lsn,
    /// Commit time, in microseconds since 2000-01-01 00:00 UTC (the
    /// PostgreSQL epoch), as sent; see
    /// [`pgoutput_epoch_to_unix_micros`](super::pgoutput_epoch_to_unix_micros).
    pub commit_time: i64,
    /// The transaction id.
    pub xid: u32,
}

/// `C`: the end of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Flags; currently unused by PostgreSQL (always 0).
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The end LSN of the transaction: the position to acknowledge once the
    /// transaction is durable downstream.
    pub end_lsn: Lsn,
    /// Commit time, in microseconds since 2000-01-01 00:00 UTC, as sent.
    pub commit_time: i64,
}

/// `O`: the replication origin of the current transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The LSN of the commit on the origin server.
    pub commit_lsn: Lsn,
    /// The origin's name.
    pub name: String,
}

/// `R`: a table's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The table's OID; later row messages refer to it.
    pub oid: u32,
    /// The schema name; the protocol sends `""` for `pg_catalog`.
    pub namespace: String,
    /// The table name.
    pub name: String,
    /// The replica identity setting (`relreplident`): `b'd'` default
    /// (primary key), `b'n'` nothing, `b'f'` full row, `b'i'` index.
    pub replica_identity: u8,
    /// The published columns, in the order row tuples carry them.
    pub columns: Vec<RelationColumn>,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity key (flags bit 1). With replica identity
    /// full, every column is marked as key.
    pub is_key: bool,
    /// The column name.
    pub name: String,
    /// The OID of the column's data type.
    pub type_oid: u32,
    /// The type modifier (`atttypmod`), `-1` when there is none.
    pub type_modifier: i32,
}

/// `Y`: a data type's name (sent only for types that are not built in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    /// The type's OID.
    pub oid: u32,
    /// The schema name; the protocol sends `""` for `pg_catalog`.
    pub namespace: String,
    /// The type name.
    pub name: String,
}

/// `I`: an inserted row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// The OID of the table (described by an earlier [`Relation`]).
    pub relation_oid: u32,
    /// The new row.
    pub new: TupleData,
}

/// `U`: an updated row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The OID of the table (described by an earlier [`Relation`]).
    pub relation_oid: u32,
    /// The old row or its key: present with replica identity full (`Full`),
    /// or when the update changed the replica identity key (`Key`).
    pub old: Option<OldTuple>,
    /// The new row. Unchanged TOASTed values arrive as
    /// [`TupleValue::UnchangedToast`].
    pub new: TupleData,
}

/// `D`: a deleted row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// The OID of the table (described by an earlier [`Relation`]).
    pub relation_oid: u32,
    /// The deleted row's key or full old row.
    pub old: OldTuple,
}

/// The old version of a row in an [`Update`] or [`Delete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldTuple {
    /// Whether only the key or the whole row was sent.
    pub kind: OldTupleKind,
    /// The values. A `Key` tuple still carries one value per column; the
    /// columns outside the key are [`TupleValue::Null`].
    pub tuple: TupleData,
}

/// What an [`OldTuple`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OldTupleKind {
    /// `K`: the replica identity key columns only.
    Key,
    /// `O`: the whole old row (replica identity full).
    Full,
}

/// `T`: truncated tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// `TRUNCATE … CASCADE` (option bit 1).
    pub cascade: bool,
    /// `TRUNCATE … RESTART IDENTITY` (option bit 2).
    pub restart_identity: bool,
    /// The OIDs of the truncated tables.
    pub relation_oids: Vec<u32>,
}

/// `M`: a logical decoding message from `pg_logical_emit_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    /// Emitted as part of a transaction (between Begin and Commit) rather
    /// than immediately.
    pub transactional: bool,
    /// The LSN of the message.
    pub lsn: Lsn,
    /// The prefix given to `pg_logical_emit_message`.
    pub prefix: String,
    /// The content, a zero-copy slice of the input.
    pub content: Bytes,
}

/// The column values of one row, in the order of the [`Relation`]'s columns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TupleData {
    /// One value per column.
    pub columns: Vec<TupleValue>,
}

/// One column value of a [`TupleData`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// `n`: SQL NULL (also used for non-key columns of a key-only old tuple).
    Null,
    /// `u`: a TOASTed value that did not change; its value was not sent.
    UnchangedToast,
    /// `t`: the value in the type's text format (a zero-copy slice of the
    /// input).
    Text(Bytes),
    /// `b`: the value in the type's binary format (a zero-copy slice of the
    /// input); sent only when the `binary` option is on.
    Binary(Bytes),
}
