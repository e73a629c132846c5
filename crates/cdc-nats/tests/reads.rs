//! [`NatsSink`] against the nats-server that `scripts/test.sh` starts
//! (`CDC_TEST_NATS_URL`), driven by hand-made batches of snapshot reads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use cdc_core::{
    ChangeEvent, Event, Lsn, Op, ReplicaIdentity, Row, Sink, SnapshotMarker, SourceInfo,
    TableSchema, Value,
};
use cdc_nats::{NatsSink, NatsSinkConfig};
use cdc_sink_conformance::fixture::{batch, column, table_of, unique_name};

fn nats_url() -> String {
    match std::env::var("CDC_TEST_NATS_URL") {
        Ok(u) if !u.trim().is_empty() => u.trim().to_owned(),
        _ => panic!("CDC_TEST_NATS_URL is not set: run ./scripts/test.sh"),
    }
}

fn table(key: bool) -> Arc<TableSchema> {
    let columns = vec![
        column("id", 23, "int4", key),
        column("v", 23, "int4", false),
    ];
    let identity = match key {
        true => ReplicaIdentity::Default,
        false => ReplicaIdentity::Full,
    };
    table_of("public", "t", columns, identity)
}

/// A snapshot read of row `(id, v)` at index `index` of chunk 0.
fn read(table: &Arc<TableSchema>, id: i32, v: i32, index: u64) -> Event {
    Event::Change(ChangeEvent {
        op: Op::Read,
        table: table.clone(),
        before: None,
        after: Some(Row::new(vec![Value::Int4(id), Value::Int4(v)])),
        source: SourceInfo {
            commit_lsn: Lsn(0x100),
            lsn: Lsn(0x100),
            ordinal: index,
            snapshot: SnapshotMarker::True,
            ..SourceInfo::default()
        },
    })
}

/// The `after.id` of every message in stream `name`; deletes the stream.
async fn ids_in_stream(name: &str) -> Vec<i64> {
    let client = async_nats::connect(nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(name).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut ids = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        ids.push(body["after"]["id"].as_i64().unwrap());
    }
    let _ = js.delete_stream(name).await;
    ids
}

/// A chunk is read partly (rows 1 and 2 at indexes 0 and 1), its reader's
/// instance dies, row 2 is deleted, and the chunk is read again: now row 3
/// is at index 1. Row 3 was never delivered: it must not be dropped as a
/// duplicate of row 2 (the ids of reads used to be positions).
async fn a_row_read_again_at_another_rows_position_is_kept(key: bool) {
    let s = unique_name("");
    let stream = format!("READS_{s}");
    let config: NatsSinkConfig = serde_json::from_value(serde_json::json!({
        "url": nats_url(),
        "subject": format!("reads_{s}.{{table}}"),
        "stream": { "name": stream, "create": true },
    }))
    .unwrap();
    let mut sink = NatsSink::connect(&config, "reads").await.unwrap();
    let t = table(key);
    sink.write_batch(&batch(vec![read(&t, 1, 10, 0), read(&t, 2, 20, 1)], None))
        .await
        .unwrap();
    sink.write_batch(&batch(vec![read(&t, 1, 10, 0), read(&t, 3, 30, 1)], None))
        .await
        .unwrap();
    sink.close().await.unwrap();
    let ids = ids_in_stream(&stream).await;
    assert!(
        ids.contains(&3),
        "row 3 was dropped as a duplicate: the stream holds rows {ids:?}"
    );
    // The same row read again at the same position is still a duplicate.
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 1, "{ids:?}");
}

#[tokio::test]
async fn a_row_read_again_at_another_rows_position_is_kept_keyed() {
    a_row_read_again_at_another_rows_position_is_kept(true).await;
}

#[tokio::test]
async fn a_row_read_again_at_another_rows_position_is_kept_keyless() {
    a_row_read_again_at_another_rows_position_is_kept(false).await;
}
