//! Tests of `snapshot::plan`: chunk bounds and plans.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use cdc_core::TableName;

fn blocks(v: &[ChunkBounds]) -> Vec<(u32, Option<u32>)> {
    v.iter()
        .map(|b| match b {
            ChunkBounds::Ctid {
                start_block,
                end_block,
            } => (*start_block, *end_block),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn ctid_ranges_are_contiguous_and_open_ended() {
    assert_eq!(blocks(&ctid_ranges(0, 50.0, 1000)), vec![(0, None)]);
    assert_eq!(blocks(&ctid_ranges(3, 50.0, 1000)), vec![(0, None)]);
    assert_eq!(
        blocks(&ctid_ranges(10, 100.0, 400)),
        vec![(0, Some(4)), (4, Some(8)), (8, None)]
    );
    // At least one block per chunk however small chunk_rows is.
    assert_eq!(
        blocks(&ctid_ranges(3, 200.0, 1)),
        vec![(0, Some(1)), (1, Some(2)), (2, None)]
    );
    // Exactly divisible: the last range still opens to the end.
    assert_eq!(
        blocks(&ctid_ranges(8, 1.0, 4)),
        vec![(0, Some(4)), (4, None)]
    );
}

fn ints(v: &[ChunkBounds]) -> Vec<(Option<i64>, Option<i64>)> {
    v.iter()
        .map(|b| match b {
            ChunkBounds::IntKey { start, end, .. } => (*start, *end),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn int_ranges_cover_everything() {
    assert_eq!(ints(&int_ranges("id", 5, 5, 1.0, 10)), vec![(None, None)]);
    assert_eq!(
        ints(&int_ranges("id", 1, 100, 100.0, 40)),
        vec![(None, Some(41)), (Some(41), Some(81)), (Some(81), None)]
    );
    // Sparse keys: width grows so a range still holds ~chunk_rows rows.
    assert_eq!(
        ints(&int_ranges("id", 0, 999, 10.0, 5)),
        vec![(None, Some(500)), (Some(500), None)]
    );
    // Extremes do not overflow, and the chunk count is capped.
    let r = int_ranges("id", i64::MIN, i64::MAX, 1e12, 1);
    assert!(r.len() as u64 <= MAX_INT_KEY_CHUNKS + 1);
    assert_eq!(ints(&r).first().unwrap().0, None);
    assert_eq!(ints(&r).last().unwrap().1, None);
    // Unknown estimate: keys taken as dense.
    assert_eq!(ints(&int_ranges("id", 1, 10, 0.0, 5)).len(), 2);
}

#[test]
fn json_forms() {
    assert_eq!(
        ChunkBounds::Ctid {
            start_block: 0,
            end_block: Some(128)
        }
        .to_json(),
        r#"{"kind":"ctid","start_block":0,"end_block":128}"#
    );
    assert_eq!(
        ChunkBounds::IntKey {
            column: "id".into(),
            start: None,
            end: Some(-1000)
        }
        .to_json(),
        r#"{"kind":"int_key","column":"id","start":null,"end":-1000}"#
    );
    assert_eq!(
        ChunkBounds::Keyset {
            columns: vec!["a".into(), "b\"".into()],
            start: Some(vec!["1".into(), "x\ty".into()]),
            end: None
        }
        .to_json(),
        r#"{"kind":"keyset","columns":["a","b\""],"start":["1","x\ty"],"end":null}"#
    );
}

#[test]
fn partition_chunks_carry_their_partition_and_the_last_flag() {
    let open = ChunkBounds::Ctid {
        start_block: 4,
        end_block: None,
    };
    let closed = ChunkBounds::Ctid {
        start_block: 0,
        end_block: Some(4),
    };
    let plain = PlannedChunk::from(open.clone());
    assert_eq!(plain.to_json(), open.to_json());
    assert!(plain.is_last());
    assert!(!PlannedChunk::from(closed.clone()).is_last());
    let of = |bounds: &ChunkBounds, last: bool| PlannedChunk {
        partition: Some(ChunkPartition {
            table: TableName::new("s", "p \"1\""),
            last,
        }),
        bounds: bounds.clone(),
    };
    assert_eq!(
        of(&open, true).to_json(),
        r#"{"kind":"ctid","start_block":4,"end_block":null,"partition":{"schema":"s","name":"p \"1\"","last":true}}"#
    );
    // Every partition's last chunk is open-ended; only the table's
    // last one is last.
    assert!(of(&open, true).is_last());
    assert!(!of(&open, false).is_last());
    assert!(!of(&closed, true).is_last());
    assert!(
        of(&closed, false).to_json().ends_with(r#""last":false}}"#),
        "{}",
        of(&closed, false).to_json()
    );
}
