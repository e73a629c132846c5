//! [`EsSink`] driven by hand-made batches against the servers that
//! `scripts/test.sh` starts (`CDC_TEST_ES_URL`: noida-db,
//! `CDC_TEST_OPENSEARCH_URL`: osmem-server): replays of exactly the
//! positions PostgreSQL would send again converge, across truncates and
//! TOAST partial updates too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use cdc_core::{Batch, Event, Lsn, Op, Row, Sink, SnapshotMarker, Value};
use cdc_es::{EsSink, EsSinkConfig};
use cdc_sink_conformance::fixture::{change, text, unique_name};
use support::{delete_index, docs, on_both_servers};

/// The test table `replay.<table>`.
fn schema(table: &str) -> std::sync::Arc<cdc_core::TableSchema> {
    cdc_sink_conformance::fixture::table("replay", table)
}

async fn sink(es: &str) -> EsSink {
    let config: EsSinkConfig = serde_json::from_value(serde_json::json!({
        "urls": [es],
        "index": "it-{schema}.{table}",
        "refresh": "true",
    }))
    .unwrap();
    assert!(config.validate().is_empty());
    EsSink::connect(&config, "replay_test").await.unwrap()
}

async fn replay_converges(es: &str) {
    let name = unique_name("t");
    let table = schema(&name);
    let index = format!("it-replay.{name}");
    let mut sink = sink(es).await;

    // Stream: row 1 inserted, updated with its TOASTed body unchanged,
    // table truncated, row 1 inserted again, row 2 inserted and deleted.
    let stream = vec![
        Batch {
            events: vec![
                change(
                    &table,
                    Op::Read,
                    100,
                    0,
                    Some((1, Value::Int4(0), text("big"))),
                ),
                change(
                    &table,
                    Op::Insert,
                    200,
                    0,
                    Some((2, Value::Int4(0), text("two"))),
                ),
            ],
            checkpoint: Some(Lsn(200)),
            seq: 0,
            fence: None,
        },
        Batch {
            events: vec![change(
                &table,
                Op::Update,
                300,
                0,
                Some((1, Value::Int4(1), Value::UnchangedToast)),
            )],
            checkpoint: Some(Lsn(300)),
            seq: 0,
            fence: None,
        },
        Batch {
            events: vec![
                change(&table, Op::Truncate, 400, 0, None),
                change(
                    &table,
                    Op::Insert,
                    500,
                    0,
                    Some((1, Value::Int4(5), text("again"))),
                ),
                change(
                    &table,
                    Op::Update,
                    500,
                    1,
                    Some((1, Value::Int4(6), Value::UnchangedToast)),
                ),
                change(
                    &table,
                    Op::Insert,
                    600,
                    0,
                    Some((3, Value::Int4(3), text("three"))),
                ),
                change(
                    &table,
                    Op::Delete,
                    600,
                    1,
                    Some((3, Value::Null, Value::Null)),
                ),
            ],
            checkpoint: Some(Lsn(600)),
            seq: 0,
            fence: None,
        },
    ];
    let expected = vec![(
        "1".to_owned(),
        serde_json::json!({"id": 1, "v": 6, "body": "again"}),
    )];

    for batch in &stream {
        sink.write_batch(batch).await.unwrap();
    }
    // The TOAST update kept the stored body before the truncate.
    assert_eq!(docs(es, &index).await, expected);

    // A crash before any acknowledgement: everything comes again, twice,
    // and then from the middle; documents never end up older.
    for start in [0, 0, 1, 2] {
        for batch in &stream[start..] {
            sink.write_batch(batch).await.unwrap();
        }
        assert_eq!(
            docs(es, &index).await,
            expected,
            "replay from batch {start}"
        );
    }

    // An older change on its own is refused by version.
    let stale = Batch {
        events: vec![change(
            &table,
            Op::Insert,
            250,
            0,
            Some((1, Value::Int4(-1), text("old"))),
        )],
        checkpoint: None,
        seq: 0,
        fence: None,
    };
    sink.write_batch(&stale).await.unwrap();
    assert_eq!(docs(es, &index).await, expected);

    // A key change with the TOASTed column unchanged: the document moves
    // to the new _id and keeps the stored value.
    let Event::Change(mut moved) = change(
        &table,
        Op::Update,
        700,
        0,
        Some((9, Value::Int4(7), Value::UnchangedToast)),
    ) else {
        unreachable!()
    };
    moved.before = Some(Row::key_only(vec![
        Value::Int4(1),
        Value::Null,
        Value::Null,
    ]));
    let batch = Batch {
        events: vec![Event::Change(moved)],
        checkpoint: Some(Lsn(700)),
        seq: 0,
        fence: None,
    };
    for _ in 0..2 {
        sink.write_batch(&batch).await.unwrap();
        assert_eq!(
            docs(es, &index).await,
            vec![(
                "9".to_owned(),
                serde_json::json!({"id": 9, "v": 7, "body": "again"})
            )]
        );
    }
    sink.close().await.unwrap();
    delete_index(es, &index).await;
}

/// A transaction whose commit record starts exactly at the snapshot LSN C
/// is streamed (PostgreSQL skips only commits that start before the
/// consistent point), with commit LSN C and small ordinals. Snapshot rows
/// carry C − 1, as the source labels them, with ordinals
/// `chunk_no << 32 | index`: they must rank below that transaction's
/// changes, whichever arrives last.
async fn snapshot_reads_rank_below_changes_committed_at_the_snapshot_lsn(es: &str) {
    const C: u64 = 0x1_6B37_4D80;
    let name = unique_name("t");
    let table = schema(&name);
    let index = format!("it-replay.{name}");
    let mut sink = sink(es).await;
    let read = |id: i32, chunk: u64| {
        let Event::Change(mut ev) = change(
            &table,
            Op::Read,
            C - 1,
            chunk << 32,
            Some((id, Value::Int4(0), text("snapshot"))),
        ) else {
            unreachable!()
        };
        ev.source.snapshot = SnapshotMarker::True;
        Event::Change(ev)
    };
    let batch = |events| Batch {
        events,
        checkpoint: None,
        seq: 0,
        fence: None,
    };
    let streamed = batch(vec![
        change(
            &table,
            Op::Update,
            C,
            0,
            Some((1, Value::Int4(1), text("streamed"))),
        ),
        change(
            &table,
            Op::Delete,
            C,
            1,
            Some((2, Value::Null, Value::Null)),
        ),
    ]);
    let reads = batch(vec![read(1, 1), read(2, 1), read(3, 0)]);
    let want = vec![
        (
            "1".to_owned(),
            serde_json::json!({"id": 1, "v": 1, "body": "streamed"}),
        ),
        (
            "3".to_owned(),
            serde_json::json!({"id": 3, "v": 0, "body": "snapshot"}),
        ),
    ];
    // In stream order; then the read of the updated row replayed after the
    // change (a chunk read again after a takeover). (A read replayed after
    // the delete of its row relies on the server's delete tombstones, which
    // Elasticsearch keeps for `index.gc_deletes`: not tested here.)
    for b in [&reads, &streamed, &batch(vec![read(1, 1)])] {
        sink.write_batch(b).await.unwrap();
        if !std::ptr::eq(b, &reads) {
            assert_eq!(docs(es, &index).await, want);
        }
    }
    sink.close().await.unwrap();
    delete_index(es, &index).await;
}

on_both_servers!(snapshot_reads_rank_below_changes_committed_at_the_snapshot_lsn: snapshot_reads_rank_below_changes_at_the_snapshot_lsn_noida, snapshot_reads_rank_below_changes_at_the_snapshot_lsn_osmem);
on_both_servers!(replay_converges: replay_converges_noida, replay_converges_osmem);
