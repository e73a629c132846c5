//! The pgoutput protocol v1 decoder.

use bytes::Bytes;
use cdc_core::Lsn;

use super::error::DecodeError;
use super::message::{
    Begin, Commit, Delete, Insert, LogicalMessage, Message, OldTuple, OldTupleKind, Origin,
    Relation, RelationColumn, Truncate, TupleData, TupleValue, TypeInfo, Update,
};
use super::reader::Reader;

/// Microseconds from the Unix epoch (1970-01-01) to the PostgreSQL epoch
/// (2000-01-01), both UTC.
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// Converts a pgoutput timestamp (microseconds since 2000-01-01 UTC) to
/// microseconds since the Unix epoch. Saturates instead of overflowing (the
/// server's `infinity` timestamp is `i64::MAX`).
pub fn pgoutput_epoch_to_unix_micros(pg_micros: i64) -> i64 {
    pg_micros.saturating_add(PG_EPOCH_OFFSET_MICROS)
}

/// Decodes one pgoutput protocol v1 message: the payload of an `XLogData`
/// message, starting with its type byte.
///
/// The whole input must be one message: bytes left over are an error.
/// [`TupleValue::Text`] / [`TupleValue::Binary`] values and
/// [`LogicalMessage::content`] are zero-copy slices of `data`.
///
/// # Errors
///
/// A [`DecodeError`] when the input is truncated, has an unknown message tag
/// or column kind, a negative length or count, a name that is not UTF-8, or
/// trailing bytes. Never panics, whatever the input.
pub fn decode(data: &Bytes) -> Result<Message, DecodeError> {
    let mut r = Reader::new(data);
    let tag = r.u8("message tag")?;
    let message = match tag {
        b'B' => Message::Begin(begin(&mut r)?),
        b'C' => Message::Commit(commit(&mut r)?),
        b'O' => Message::Origin(origin(&mut r)?),
        b'R' => Message::Relation(relation(&mut r)?),
        b'Y' => Message::Type(type_info(&mut r)?),
        b'I' => Message::Insert(insert(&mut r)?),
        b'U' => Message::Update(update(&mut r)?),
        b'D' => Message::Delete(delete(&mut r)?),
        b'T' => Message::Truncate(truncate(&mut r)?),
        b'M' => Message::Message(logical_message(&mut r)?),
        _ => {
            return Err(match later_protocol_message(tag) {
                Some(name) => DecodeError::UnsupportedMessage { tag, name },
                None => DecodeError::UnknownMessageTag { tag },
            })
        }
    };
    let count = r.remaining();
    if count != 0 {
        return Err(DecodeError::TrailingBytes {
            message: message.kind(),
            offset: r.offset(),
            count,
        });
    }
    Ok(message)
}

/// Names the message types of protocol versions 2 and later.
fn later_protocol_message(tag: u8) -> Option<&'static str> {
    Some(match tag {
        b'S' => "Stream Start",
        b'E' => "Stream Stop",
        b'c' => "Stream Commit",
        b'A' => "Stream Abort",
        b'b' => "Begin Prepare",
        b'P' => "Prepare",
        b'K' => "Commit Prepared",
        b'r' => "Rollback Prepared",
        b'p' => "Stream Prepare",
        _ => return None,
    })
}

fn lsn(r: &mut Reader<'_>, what: &'static str) -> Result<Lsn, DecodeError> {
    r.u64(what).map(Lsn)
}

fn begin(r: &mut Reader<'_>) -> Result<Begin, DecodeError> {
    Ok(Begin {
        final_lsn: lsn(r, "Begin final LSN")?,
        commit_time: r.i64("Begin commit timestamp")?,
        xid: r.u32("Begin xid")?,
    })
}

fn commit(r: &mut Reader<'_>) -> Result<Commit, DecodeError> {
    Ok(Commit {
        flags: r.u8("Commit flags")?,
        commit_lsn: lsn(r, "Commit LSN")?,
        end_lsn: lsn(r, "Commit end LSN")?,
        commit_time: r.i64("Commit timestamp")?,
    })
}

fn origin(r: &mut Reader<'_>) -> Result<Origin, DecodeError> {
    Ok(Origin {
        commit_lsn: lsn(r, "Origin commit LSN")?,
        name: r.cstr("Origin name")?,
    })
}

/// Smallest encoding of one Relation column: flags, empty name's NUL, type
/// OID, type modifier.
const MIN_RELATION_COLUMN_LEN: usize = 1 + 1 + 4 + 4;

fn relation(r: &mut Reader<'_>) -> Result<Relation, DecodeError> {
    let oid = r.u32("Relation OID")?;
    let namespace = r.cstr("Relation namespace")?;
    let name = r.cstr("Relation name")?;
    let replica_identity = r.u8("Relation replica identity")?;
    let count = count16(r, "Relation column count")?;
    let mut columns = Vec::with_capacity(count.min(r.remaining() / MIN_RELATION_COLUMN_LEN));
    for _ in 0..count {
        let flags = r.u8("Relation column flags")?;
        columns.push(RelationColumn {
            is_key: flags & 1 != 0,
            name: r.cstr("Relation column name")?,
            type_oid: r.u32("Relation column type OID")?,
            type_modifier: r.i32("Relation column type modifier")?,
        });
    }
    Ok(Relation {
        oid,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn type_info(r: &mut Reader<'_>) -> Result<TypeInfo, DecodeError> {
    Ok(TypeInfo {
        oid: r.u32("Type OID")?,
        namespace: r.cstr("Type namespace")?,
        name: r.cstr("Type name")?,
    })
}

fn insert(r: &mut Reader<'_>) -> Result<Insert, DecodeError> {
    let relation_oid = r.u32("Insert relation OID")?;
    expect_new_marker(r, "Insert", "'N'")?;
    Ok(Insert {
        relation_oid,
        new: tuple_data(r)?,
    })
}

fn update(r: &mut Reader<'_>) -> Result<Update, DecodeError> {
    let relation_oid = r.u32("Update relation OID")?;
    let offset = r.offset();
    let marker = r.u8("Update tuple marker")?;
    let kind = match marker {
        b'K' => Some(OldTupleKind::Key),
        b'O' => Some(OldTupleKind::Full),
        b'N' => None,
        found => {
            return Err(DecodeError::UnexpectedTupleMarker {
                message: "Update",
                expected: "'K', 'O' or 'N'",
                found,
                offset,
            })
        }
    };
    let old = match kind {
        Some(kind) => {
            let tuple = tuple_data(r)?;
            expect_new_marker(r, "Update", "'N' after the old tuple")?;
            Some(OldTuple { kind, tuple })
        }
        None => None,
    };
    Ok(Update {
        relation_oid,
        old,
        new: tuple_data(r)?,
    })
}

fn delete(r: &mut Reader<'_>) -> Result<Delete, DecodeError> {
    let relation_oid = r.u32("Delete relation OID")?;
    let offset = r.offset();
    let kind = match r.u8("Delete tuple marker")? {
        b'K' => OldTupleKind::Key,
        b'O' => OldTupleKind::Full,
        found => {
            return Err(DecodeError::UnexpectedTupleMarker {
                message: "Delete",
                expected: "'K' or 'O'",
                found,
                offset,
            })
        }
    };
    Ok(Delete {
        relation_oid,
        old: OldTuple {
            kind,
            tuple: tuple_data(r)?,
        },
    })
}

fn expect_new_marker(
    r: &mut Reader<'_>,
    message: &'static str,
    expected: &'static str,
) -> Result<(), DecodeError> {
    let offset = r.offset();
    match r.u8("new tuple marker")? {
        b'N' => Ok(()),
        found => Err(DecodeError::UnexpectedTupleMarker {
            message,
            expected,
            found,
            offset,
        }),
    }
}

fn truncate(r: &mut Reader<'_>) -> Result<Truncate, DecodeError> {
    let offset = r.offset();
    let raw = r.i32("Truncate relation count")?;
    let count = usize::try_from(raw).map_err(|_| DecodeError::NegativeCount {
        what: "Truncate relation count",
        offset,
        value: raw,
    })?;
    let options = r.u8("Truncate options")?;
    let mut relation_oids = Vec::with_capacity(count.min(r.remaining() / 4));
    for _ in 0..count {
        relation_oids.push(r.u32("Truncate relation OID")?);
    }
    Ok(Truncate {
        cascade: options & 1 != 0,
        restart_identity: options & 2 != 0,
        relation_oids,
    })
}

fn logical_message(r: &mut Reader<'_>) -> Result<LogicalMessage, DecodeError> {
    let flags = r.u8("Message flags")?;
    Ok(LogicalMessage {
        transactional: flags & 1 != 0,
        lsn: lsn(r, "Message LSN")?,
        prefix: r.cstr("Message prefix")?,
        content: r.len_prefixed("Message content length", "Message content")?,
    })
}

/// Reads an `Int16` count that must not be negative.
fn count16(r: &mut Reader<'_>, what: &'static str) -> Result<usize, DecodeError> {
    let offset = r.offset();
    let raw = r.i16(what)?;
    usize::try_from(raw).map_err(|_| DecodeError::NegativeCount {
        what,
        offset,
        value: i32::from(raw),
    })
}

fn tuple_data(r: &mut Reader<'_>) -> Result<TupleData, DecodeError> {
    let count = count16(r, "tuple column count")?;
    // Every column takes at least its kind byte.
    let mut columns = Vec::with_capacity(count.min(r.remaining()));
    for column in 0..count {
        let offset = r.offset();
        let value = match r.u8("tuple column kind")? {
            b'n' => TupleValue::Null,
            b'u' => TupleValue::UnchangedToast,
            b't' => TupleValue::Text(r.len_prefixed("text value length", "text value")?),
            b'b' => TupleValue::Binary(r.len_prefixed("binary value length", "binary value")?),
            kind => {
                return Err(DecodeError::UnknownTupleKind {
                    kind,
                    column,
                    offset,
                })
            }
        };
        columns.push(value);
    }
    Ok(TupleData { columns })
}
