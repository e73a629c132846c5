//! What one change becomes on the wire: subject, headers, payload.

use std::fmt::Write as _;

use async_nats::HeaderMap;
use cdc_core::encode::write_value;
use cdc_core::{ChangeEvent, Op};

/// Header carrying the change's stable id; JetStream drops a second
/// message with the same id inside the stream's duplicate window.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// Header with the Debezium op code (`c`, `u`, `d`, `r`, `t`).
pub const OP_HEADER: &str = "Cdc-Op";
/// Header with the table as `schema.table` (unquoted).
pub const TABLE_HEADER: &str = "Cdc-Table";
/// Header with the transaction's commit LSN (`16/B374D848`).
pub const COMMIT_LSN_HEADER: &str = "Cdc-Commit-Lsn";
/// Header naming the id of the message that must be the stream's last one
/// for JetStream to store this message (set with `exclusive_stream`).
pub const EXPECTED_LAST_ID_HEADER: &str = "Nats-Expected-Last-Msg-Id";

/// The stable id of a change:
/// `<pipeline>:<database>:<table oid>:<op>:<commit LSN>:<ordinal>`, e.g.
/// `orders:app:16384:u:0/1A2B3C8:2`.
///
/// `(commit LSN, ordinal)` is the change's position, the same on every
/// delivery. The table OID keeps multi-table truncates apart. The pipeline
/// and database keep two pipelines writing into one stream apart. Control
/// characters and `:` in the names become `_`.
///
/// A snapshot read is identified by its row, not its position: a chunk
/// read again (after its reader's instance died, under a new export) may
/// hold other rows at the same positions, and a position id would make
/// JetStream drop such a row as a duplicate of another. For a table with
/// a key: `<pipeline>:<database>:<oid>:r:<commit LSN>:k:<key values as
/// JSON>` (a read's commit LSN is the snapshot LSN minus one), e.g.
/// `orders:app:16384:r:0/1A2B3C7:k:[42]`; for a table without one:
/// `…:r:<commit LSN>:<ordinal>:<64-bit FNV-1a of the row's values as JSON,
/// hex>`. The op (`r`) keeps reads apart from streamed changes.
pub fn message_id(pipeline: &str, event: &ChangeEvent, out: &mut String) {
    out.clear();
    push_id_part(out, pipeline);
    out.push(':');
    push_id_part(out, &event.table.database);
    let src = &event.source;
    let _ = write!(
        out,
        ":{}:{}:{}:",
        event.table.oid,
        event.op.code(),
        src.commit_lsn
    );
    let Some(row) = event.after.as_ref().filter(|_| event.op == Op::Read) else {
        let _ = write!(out, "{}", src.ordinal);
        return;
    };
    // The row's values are rendered into the id's own buffer: no
    // allocation per message once the buffer has grown.
    let mut bytes = std::mem::take(out).into_bytes();
    let columns = &event.table.columns;
    if columns.iter().any(|c| c.is_key) {
        bytes.extend_from_slice(b"k:[");
        let keys = columns.iter().zip(row.values()).filter(|(c, _)| c.is_key);
        for (i, (_, value)) in keys.enumerate() {
            if i > 0 {
                bytes.push(b',');
            }
            write_value(&mut bytes, value);
        }
        bytes.push(b']');
    } else {
        let mark = bytes.len();
        for value in row.values() {
            write_value(&mut bytes, value);
            bytes.push(b',');
        }
        let hash = fnv1a(&bytes[mark..]);
        bytes.truncate(mark);
        let _ = std::io::Write::write_fmt(&mut bytes, format_args!("{}:{hash:016x}", src.ordinal));
    }
    *out = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
}

/// 64-bit FNV-1a: stable across builds and platforms, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The start every message id of `pipeline` shares (`<pipeline>:`).
pub fn id_prefix(pipeline: &str) -> String {
    let mut out = String::new();
    push_id_part(&mut out, pipeline);
    out.push(':');
    out
}

fn push_id_part(out: &mut String, s: &str) {
    out.extend(
        s.chars()
            .map(|c| if c.is_control() || c == ':' { '_' } else { c }),
    );
}

/// The headers of a change's message; `expected_last` is the id of the
/// message that must precede it in the stream, if any.
pub fn headers(msg_id: &str, expected_last: Option<&str>, event: &ChangeEvent) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(MSG_ID_HEADER, msg_id);
    if let Some(last) = expected_last {
        h.insert(EXPECTED_LAST_ID_HEADER, last);
    }
    h.insert(OP_HEADER, event.op.code());
    let table: String = event
        .table
        .name
        .to_string()
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    h.insert(TABLE_HEADER, table);
    h.insert(COMMIT_LSN_HEADER, event.source.commit_lsn.to_string());
    h
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::Arc;

    use cdc_core::{Lsn, Op, ReplicaIdentity, SourceInfo, TableName, TableSchema};

    use super::*;

    fn event(oid: u32, lsn: u64, ordinal: u64) -> ChangeEvent {
        ChangeEvent {
            op: Op::Update,
            table: Arc::new(TableSchema {
                database: "app".into(),
                oid,
                name: TableName::new("public", "t\nx"),
                columns: Vec::new(),
                replica_identity: ReplicaIdentity::Default,
            }),
            before: None,
            after: None,
            source: SourceInfo {
                commit_lsn: Lsn(lsn),
                ordinal,
                ..SourceInfo::default()
            },
        }
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let mut a = String::new();
        message_id("pipe:1", &event(16384, 0x1_0000_00FF, 2), &mut a);
        assert_eq!(a, "pipe_1:app:16384:u:1/FF:2");
        let mut b = String::new();
        message_id("pipe:1", &event(16385, 0x1_0000_00FF, 2), &mut b);
        assert_ne!(a, b);
        message_id("pipe:1", &event(16384, 0x1_0000_00FF, 2), &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn snapshot_read_and_streamed_change_at_the_same_position_differ() {
        let mut read = event(7, 0x100, 1);
        read.op = Op::Read;
        let streamed = event(7, 0x100, 1);
        let (mut a, mut b) = (String::new(), String::new());
        message_id("p", &read, &mut a);
        message_id("p", &streamed, &mut b);
        assert_ne!(a, b);
        assert!(a.starts_with(&id_prefix("p")));
        assert_eq!(id_prefix("a:b"), "a_b:");
    }

    #[test]
    fn header_values() {
        let ev = event(1, 0x10, 0);
        let h = headers("x", None, &ev);
        assert_eq!(h.get(MSG_ID_HEADER).unwrap().as_str(), "x");
        assert!(h.get(EXPECTED_LAST_ID_HEADER).is_none());
        let chained = headers("y", Some("x"), &ev);
        assert_eq!(chained.get(EXPECTED_LAST_ID_HEADER).unwrap().as_str(), "x");
        assert_eq!(h.get(OP_HEADER).unwrap().as_str(), "u");
        assert_eq!(h.get(TABLE_HEADER).unwrap().as_str(), "public.t_x");
        assert_eq!(h.get(COMMIT_LSN_HEADER).unwrap().as_str(), "0/10");
    }
}
