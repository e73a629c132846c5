//! Incremental snapshots while streaming: a signal row asks for a table,
//! its chunks are read between watermarks while writers change it, and
//! what a keyed consumer rebuilds from the events equals the table.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cdc_core::encode::DebeziumJson;
use cdc_core::{ControlEvent, Event, Source, TableName};
use cdc_postgres::{PgSource, PgSourceConfig};
use integration_tests::replay::{apply_keyed, diff, Change};
use integration_tests::{unique_suffix, wait_until, Mix, TestDb, Workload, Writers};

const TIMEOUT: Duration = Duration::from_secs(90);

/// What a library consumer of the source saw.
#[derive(Default)]
struct Seen {
    changes: Vec<Change>,
    begins: usize,
    ends: Vec<u64>,
}

impl Seen {
    fn take(&mut self, events: &[Event]) {
        let enc = DebeziumJson::default();
        for event in events {
            match event {
                Event::Change(c) => {
                    let mut out = Vec::new();
                    enc.encode(c, 0, &mut out);
                    let json = serde_json::from_slice(&out).expect("the envelope is JSON");
                    let n = self.changes.len() + 1;
                    self.changes
                        .push(Change::from_json(0, n, json).expect("a complete envelope"));
                }
                Event::Control(ControlEvent::IncrementalSnapshotBegin { .. }) => self.begins += 1,
                Event::Control(ControlEvent::IncrementalSnapshotEnd { rows, .. }) => {
                    self.ends.push(*rows)
                }
                _ => {}
            }
        }
    }

    fn reads(&self) -> Vec<&Change> {
        self.changes.iter().filter(|c| c.op == "r").collect()
    }

    fn rebuilt(&self) -> BTreeMap<String, serde_json::Value> {
        let all: Vec<&Change> = self.changes.iter().collect();
        apply_keyed(&all, "public.t", &["id"])
    }
}

fn config(db: &TestDb, chunk_rows: u64) -> PgSourceConfig {
    let s = unique_suffix();
    let mut cfg = PgSourceConfig::new(
        db.url(),
        vec![TableName::new("public", "t")],
        format!("ip_{s}"),
        format!("is_{s}"),
    );
    cfg.incremental.enabled = true;
    cfg.incremental.chunk_rows = chunk_rows;
    cfg.max_batch_wait = Duration::from_millis(5);
    cfg
}

/// Takes batches (acknowledging each) until `done` holds, at most
/// [`TIMEOUT`].
async fn drive(source: &mut PgSource, seen: &mut Seen, mut done: impl FnMut(&Seen) -> bool) {
    let ack = source.ack_handle();
    let deadline = Instant::now() + TIMEOUT;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no progress within {TIMEOUT:?}: {} events, {} reads, ends {:?}",
            seen.changes.len(),
            seen.reads().len(),
            seen.ends
        );
        let batch =
            match tokio::time::timeout(Duration::from_millis(300).min(left), source.next_batch())
                .await
            {
                Ok(b) => b.expect("next_batch").expect("the source does not end"),
                Err(_) => continue,
            };
        seen.take(&batch.events);
        ack.durable(&batch);
    }
}

#[tokio::test]
async fn a_signal_snapshots_a_table_chunk_by_chunk_while_writers_change_it() {
    let db = TestDb::create("incr_lib").await;
    db.exec(
        "CREATE TABLE public.t (id int PRIMARY KEY, v int, note text);\
         INSERT INTO public.t SELECT g, -g, 'row ' || g FROM generate_series(1, 3000) g",
    )
    .await;
    let cfg = config(&db, 250);
    let mut source = PgSource::connect(cfg).await.expect("connect");
    let mut seen = Seen::default();
    let writers = Writers::start(
        db.url(),
        Workload {
            keys: 3000,
            new_ids_from: Some(3001),
            mix: Mix {
                insert: 2,
                upsert: 2,
                update: 4,
                delete: 2,
            },
            ..Workload::new(3)
        },
    )
    .await;
    db.exec(r#"INSERT INTO cdc.signals (kind, payload) VALUES ('snapshot', '{"tables": ["public.t"]}')"#)
        .await;
    drive(&mut source, &mut seen, |s| !s.ends.is_empty()).await;
    let written = writers.finish().await;
    assert!(written.committed > 0, "the writers committed nothing");

    // Every read is marked, and sits at a high watermark: above the
    // changes before it in the stream.
    let reads = seen.reads();
    assert!(reads.len() > 2000, "only {} reads", reads.len());
    assert!(
        reads.iter().all(|r| r.snapshot == "incremental"),
        "reads not marked incremental"
    );
    assert_eq!(seen.begins, 1);
    assert_eq!(seen.ends, vec![reads.len() as u64]);
    let mut last = (0, 0);
    for c in &seen.changes {
        assert!(c.position() > last, "events out of position order at {c:?}");
        last = c.position();
    }

    // A keyed consumer converges on the table.
    let want = db.to_jsonb_rows("public.t", "id").await;
    drive(&mut source, &mut seen, |s| {
        diff(&s.rebuilt(), &want).is_none()
    })
    .await;
    if let Some(d) = diff(&seen.rebuilt(), &want) {
        panic!("the rebuilt table differs from the source: {d}");
    }

    // Progress is stored once the reads are acknowledged.
    let ok = wait_until(TIMEOUT, async || {
        // Batches keep coming (heartbeats, nothing else): the source stores
        // progress between them.
        let _ = tokio::time::timeout(Duration::from_millis(200), source.next_batch()).await;
        db.query_text(
            "SELECT state || ' ' || chunks_done || ' ' || rows_done FROM cdc.incremental_snapshots",
        )
        .await
        .is_some_and(|s| s.starts_with("done "))
    })
    .await;
    assert!(
        ok,
        "progress: {:?}",
        db.query_text("SELECT to_jsonb(i)::text FROM cdc.incremental_snapshots i")
            .await
    );
    drop(source);
    db.cleanup().await;
}
