//! Property tests for the pgoutput decoder: it must never panic, whatever the
//! input, and must reject every truncation of a valid message.
//!
//! Seeds are the messages captured from PostgreSQL 15 in
//! `tests/fixtures/pgoutput/pg15_capture.txt` (the SQL that produced each one
//! is recorded there), plus messages built by a small test-only encoder.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::{BufMut, Bytes, BytesMut};
use cdc_core::Lsn;
use cdc_postgres::pgoutput::{
    decode, Begin, Commit, Delete, Insert, LogicalMessage, Message, OldTuple, OldTupleKind, Origin,
    Relation, RelationColumn, Truncate, TupleData, TupleValue, TypeInfo, Update,
};
use proptest::prelude::*;
use std::sync::LazyLock;

const CAPTURE: &str = include_str!("fixtures/pgoutput/pg15_capture.txt");

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Every captured message, in file order.
fn captured() -> &'static [Bytes] {
    static MESSAGES: LazyLock<Vec<Bytes>> = LazyLock::new(|| {
        CAPTURE
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('|'))
            .map(|(_, hex)| Bytes::from(unhex(hex)))
            .collect()
    });
    &MESSAGES
}

#[test]
fn all_captured_messages_decode_and_cover_every_kind() {
    let messages = captured();
    assert!(messages.len() > 50);
    let mut kinds: Vec<&str> = messages.iter().map(|m| decode(m).unwrap().kind()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "Begin", "Commit", "Delete", "Insert", "Message", "Origin", "Relation", "Truncate",
            "Type", "Update"
        ]
    );
}

// ---- a test-only encoder, to round-trip generated messages ----------------

fn put_str(buf: &mut BytesMut, s: &str) {
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}

fn put_tuple(buf: &mut BytesMut, t: &TupleData) {
    buf.put_i16(i16::try_from(t.columns.len()).unwrap());
    for v in &t.columns {
        match v {
            TupleValue::Null => buf.put_u8(b'n'),
            TupleValue::UnchangedToast => buf.put_u8(b'u'),
            TupleValue::Text(b) | TupleValue::Binary(b) => {
                buf.put_u8(if matches!(v, TupleValue::Text(_)) {
                    b't'
                } else {
                    b'b'
                });
                buf.put_i32(i32::try_from(b.len()).unwrap());
                buf.put_slice(b);
            }
        }
    }
}

fn put_old(buf: &mut BytesMut, old: &OldTuple) {
    buf.put_u8(match old.kind {
        OldTupleKind::Key => b'K',
        OldTupleKind::Full => b'O',
    });
    put_tuple(buf, &old.tuple);
}

fn encode(m: &Message) -> Bytes {
    let mut b = BytesMut::new();
    match m {
        Message::Begin(x) => {
            b.put_u8(b'B');
            b.put_u64(x.final_lsn.0);
            b.put_i64(x.commit_time);
            b.put_u32(x.xid);
        }
        Message::Commit(x) => {
            b.put_u8(b'C');
            b.put_u8(x.flags);
            b.put_u64(x.commit_lsn.0);
            b.put_u64(x.end_lsn.0);
            b.put_i64(x.commit_time);
        }
        Message::Origin(x) => {
            b.put_u8(b'O');
            b.put_u64(x.commit_lsn.0);
            put_str(&mut b, &x.name);
        }
        Message::Relation(x) => {
            b.put_u8(b'R');
            b.put_u32(x.oid);
            put_str(&mut b, &x.namespace);
            put_str(&mut b, &x.name);
            b.put_u8(x.replica_identity);
            b.put_i16(i16::try_from(x.columns.len()).unwrap());
            for c in &x.columns {
                b.put_u8(u8::from(c.is_key));
                put_str(&mut b, &c.name);
                b.put_u32(c.type_oid);
                b.put_i32(c.type_modifier);
            }
        }
        Message::Type(x) => {
            b.put_u8(b'Y');
            b.put_u32(x.oid);
            put_str(&mut b, &x.namespace);
            put_str(&mut b, &x.name);
        }
        Message::Insert(x) => {
            b.put_u8(b'I');
            b.put_u32(x.relation_oid);
            b.put_u8(b'N');
            put_tuple(&mut b, &x.new);
        }
        Message::Update(x) => {
            b.put_u8(b'U');
            b.put_u32(x.relation_oid);
            if let Some(old) = &x.old {
                put_old(&mut b, old);
            }
            b.put_u8(b'N');
            put_tuple(&mut b, &x.new);
        }
        Message::Delete(x) => {
            b.put_u8(b'D');
            b.put_u32(x.relation_oid);
            put_old(&mut b, &x.old);
        }
        Message::Truncate(x) => {
            b.put_u8(b'T');
            b.put_i32(i32::try_from(x.relation_oids.len()).unwrap());
            b.put_u8(u8::from(x.cascade) | (u8::from(x.restart_identity) << 1));
            for oid in &x.relation_oids {
                b.put_u32(*oid);
            }
        }
        Message::Message(x) => {
            b.put_u8(b'M');
            b.put_u8(u8::from(x.transactional));
            b.put_u64(x.lsn.0);
            put_str(&mut b, &x.prefix);
            b.put_i32(i32::try_from(x.content.len()).unwrap());
            b.put_slice(&x.content);
        }
        other => panic!("this test has no encoder for a {} message", other.kind()),
    }
    b.freeze()
}

// ---- generators -----------------------------------------------------------

fn name() -> impl Strategy<Value = String> {
    // Any characters but NUL, including non-ASCII.
    "[^\u{0}]{0,12}"
}

fn lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn tuple() -> impl Strategy<Value = TupleData> {
    let value = prop_oneof![
        Just(TupleValue::Null),
        Just(TupleValue::UnchangedToast),
        bytes(24).prop_map(TupleValue::Text),
        bytes(24).prop_map(TupleValue::Binary),
    ];
    proptest::collection::vec(value, 0..8).prop_map(|columns| TupleData { columns })
}

fn old_tuple() -> impl Strategy<Value = OldTuple> {
    (any::<bool>(), tuple()).prop_map(|(key, tuple)| OldTuple {
        kind: if key {
            OldTupleKind::Key
        } else {
            OldTupleKind::Full
        },
        tuple,
    })
}

fn message() -> impl Strategy<Value = Message> {
    let column = (any::<bool>(), name(), any::<u32>(), any::<i32>()).prop_map(
        |(is_key, name, type_oid, type_modifier)| RelationColumn {
            is_key,
            name,
            type_oid,
            type_modifier,
        },
    );
    prop_oneof![
        (lsn(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_time, xid)| {
            Message::Begin(Begin {
                final_lsn,
                commit_time,
                xid,
            })
        }),
        (any::<u8>(), lsn(), lsn(), any::<i64>()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_time)| Message::Commit(Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_time
            })
        ),
        (lsn(), name()).prop_map(|(commit_lsn, name)| Message::Origin(Origin { commit_lsn, name })),
        (
            any::<u32>(),
            name(),
            name(),
            any::<u8>(),
            proptest::collection::vec(column, 0..6)
        )
            .prop_map(|(oid, namespace, name, replica_identity, columns)| {
                Message::Relation(Relation {
                    oid,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                })
            }),
        (any::<u32>(), name(), name()).prop_map(|(oid, namespace, name)| Message::Type(TypeInfo {
            oid,
            namespace,
            name
        })),
        (any::<u32>(), tuple())
            .prop_map(|(relation_oid, new)| Message::Insert(Insert { relation_oid, new })),
        (any::<u32>(), proptest::option::of(old_tuple()), tuple()).prop_map(
            |(relation_oid, old, new)| Message::Update(Update {
                relation_oid,
                old,
                new
            })
        ),
        (any::<u32>(), old_tuple())
            .prop_map(|(relation_oid, old)| Message::Delete(Delete { relation_oid, old })),
        (
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(any::<u32>(), 0..6)
        )
            .prop_map(|(cascade, restart_identity, relation_oids)| {
                Message::Truncate(Truncate {
                    cascade,
                    restart_identity,
                    relation_oids,
                })
            }),
        (any::<bool>(), lsn(), name(), bytes(40)).prop_map(
            |(transactional, lsn, prefix, content)| Message::Message(LogicalMessage {
                transactional,
                lsn,
                prefix,
                content
            })
        ),
    ]
}

/// One edit to apply to a message.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip(i, bit)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
    ]
}

fn mutate(data: &[u8], edits: &[Mutation]) -> Bytes {
    let mut v = data.to_vec();
    for edit in edits {
        let len = v.len();
        match *edit {
            Mutation::Set(i, b) if len > 0 => v[i % len] = b,
            Mutation::Flip(i, bit) if len > 0 => v[i % len] ^= 1 << bit,
            Mutation::Insert(i, b) => v.insert(i % (len + 1), b),
            Mutation::Remove(i) if len > 0 => {
                v.remove(i % len);
            }
            _ => {}
        }
    }
    Bytes::from(v)
}

/// A handful of interesting 4-byte values to splice over length fields.
fn nasty_i32() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(-1),
        Just(i32::MIN),
        Just(i32::MAX),
        Just(0),
        Just(0x7fff),
        Just(0x8000),
        any::<i32>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&Bytes::from(data));
    }

    #[test]
    fn random_bodies_after_every_valid_tag_never_panic(
        tag in proptest::sample::select(b"BCORYIUDTMSEcAbPKrp".to_vec()),
        body in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut data = vec![tag];
        data.extend_from_slice(&body);
        let _ = decode(&Bytes::from(data));
    }

    #[test]
    fn mutated_captures_never_panic(
        index in any::<proptest::sample::Index>(),
        edits in proptest::collection::vec(mutation(), 1..6),
    ) {
        let messages = captured();
        let original = index.get(messages);
        let _ = decode(&mutate(original, &edits));
    }

    #[test]
    fn length_fields_overwritten_in_captures_never_panic(
        index in any::<proptest::sample::Index>(),
        at in any::<usize>(),
        value in nasty_i32(),
    ) {
        let messages = captured();
        let mut v = index.get(messages).to_vec();
        if v.len() >= 4 {
            let at = at % (v.len() - 3);
            v[at..at + 4].copy_from_slice(&value.to_be_bytes());
        }
        let _ = decode(&Bytes::from(v));
    }

    #[test]
    fn truncated_captures_are_errors(index in any::<proptest::sample::Index>(), cut in any::<usize>()) {
        let messages = captured();
        let original = index.get(messages);
        let len = cut % original.len();
        prop_assert!(decode(&original.slice(..len)).is_err());
    }

    #[test]
    fn generated_messages_round_trip(m in message()) {
        let data = encode(&m);
        prop_assert_eq!(decode(&data).unwrap(), m);
    }

    #[test]
    fn generated_messages_truncated_anywhere_are_errors(m in message()) {
        let data = encode(&m);
        for len in 0..data.len() {
            prop_assert!(decode(&data.slice(..len)).is_err(), "{} bytes of {:?}", len, m);
        }
        let mut longer = data.to_vec();
        longer.push(0);
        prop_assert!(decode(&Bytes::from(longer)).is_err());
    }

    #[test]
    fn mutated_generated_messages_never_panic(
        m in message(),
        edits in proptest::collection::vec(mutation(), 1..6),
    ) {
        let _ = decode(&mutate(&encode(&m), &edits));
    }
}
