//! `PgSource` driven by hand, the way a library user following its docs
//! drives it: take a batch, handle it, acknowledge it with one call. With
//! a snapshot configured, the snapshot must complete and streaming follow;
//! an acknowledgement must reach the slot even while the consumer does not
//! ask for the next batch; a consumer that drops `next_batch` midway (a
//! timeout) must not lose a change.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cdc_core::{ControlEvent, Event, Op, Source, TableName, Value};
use cdc_postgres::{ChunkRows, Chunking, PgSource, PgSourceConfig, SnapshotMode};
use integration_tests::replay::{apply_keyed, changes_of, diff};
use integration_tests::{
    unique_suffix, url_with_address, wait_until, CutProxy, TestDb, Workload, Writers,
};

const TIMEOUT: Duration = Duration::from_secs(60);

fn id_of(row: &cdc_core::Row) -> Option<i64> {
    match row.values().first()? {
        Value::Int4(v) => Some(i64::from(*v)),
        Value::Int8(v) => Some(*v),
        _ => None,
    }
}

/// A source of `public.t` with a publication and slot of its own.
fn config_of_t(db: &TestDb) -> PgSourceConfig {
    let s = unique_suffix();
    PgSourceConfig::new(
        db.url(),
        vec![TableName::new("public", "t")],
        format!("lp_{s}"),
        format!("ls_{s}"),
    )
}

#[tokio::test]
async fn one_ack_call_per_batch_completes_the_snapshot_then_streams() {
    let db = TestDb::create("lib_source").await;
    db.exec(
        "CREATE TABLE public.t (id int PRIMARY KEY, v text);\
         INSERT INTO public.t SELECT g, 'v' || g FROM generate_series(1, 5000) g;\
         ANALYZE public.t",
    )
    .await;
    let mut cfg = config_of_t(&db);
    cfg.snapshot.mode = SnapshotMode::Initial;
    cfg.snapshot.chunk_rows = ChunkRows::Fixed(500);
    cfg.snapshot.workers = 2;
    let mut source = PgSource::connect(cfg).await.expect("connect");
    let ack = source.ack_handle();

    let mut read = BTreeSet::new();
    let mut snapshot_ended = false;
    let mut inserted = None;
    let deadline = Instant::now() + TIMEOUT;
    while inserted.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = tokio::time::timeout(left, source.next_batch())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no progress within {TIMEOUT:?}: {} rows read, snapshot ended: {snapshot_ended}",
                    read.len()
                )
            })
            .expect("next_batch")
            .expect("the source does not end");
        for event in &batch.events {
            match event {
                Event::Change(c) if c.op == Op::Read => {
                    read.insert(c.after.as_ref().and_then(id_of).expect("an id"));
                }
                Event::Change(c) if c.op == Op::Insert => {
                    inserted = c.after.as_ref().and_then(id_of);
                }
                Event::Control(ControlEvent::SnapshotEnd { table: None, .. }) => {
                    snapshot_ended = true;
                    db.exec("INSERT INTO public.t VALUES (5001, 'after')").await;
                }
                _ => {}
            }
        }
        // The batch is handled: one call acknowledges it.
        ack.durable(&batch);
    }
    assert!(snapshot_ended);
    assert_eq!(read.len(), 5000);
    assert_eq!(read.first(), Some(&1));
    assert_eq!(read.last(), Some(&5000));
    assert_eq!(inserted, Some(5001));
    assert_eq!(
        db.query_text("SELECT state FROM cdc.snapshot_jobs")
            .await
            .as_deref(),
        Some("done")
    );
    drop(source);
    db.cleanup().await;
}

/// A consumer that acknowledges a batch and then stays idle (it does not
/// call `next_batch` again, as one waiting for its own downstream would):
/// the slot must still be confirmed up to the batch's checkpoint, because
/// the acknowledgement itself wakes the source.
#[tokio::test]
async fn an_acknowledgement_reaches_the_slot_while_the_consumer_is_idle() {
    let db = TestDb::create("lib_ack_idle").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
        .await;
    let cfg = config_of_t(&db);
    let slot = cfg.slot.clone();
    let mut source = PgSource::connect(cfg).await.expect("connect");
    let ack = source.ack_handle();
    let started = db
        .slot_confirmed_flush_lsn(&slot)
        .await
        .expect("the slot has a position");
    db.exec("INSERT INTO public.t VALUES (1, 'one')").await;

    let deadline = Instant::now() + TIMEOUT;
    let batch = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = tokio::time::timeout(left, source.next_batch())
            .await
            .unwrap_or_else(|_| panic!("the insert did not arrive within {TIMEOUT:?}"))
            .expect("next_batch")
            .expect("the source does not end");
        let has_insert = batch
            .events
            .iter()
            .any(|e| matches!(e, Event::Change(c) if c.op == Op::Insert));
        if has_insert && batch.checkpoint.is_some() {
            break batch;
        }
        ack.durable(&batch);
    };
    let checkpoint = batch.checkpoint.expect("a checkpoint");
    assert!(checkpoint > started, "{checkpoint} <= {started}");

    // Handled: acknowledge it, then stay idle (no next_batch call).
    ack.durable(&batch);
    let confirmed = wait_until(Duration::from_secs(20), async || {
        db.slot_confirmed_flush_lsn(&slot)
            .await
            .is_some_and(|lsn| lsn >= checkpoint)
    })
    .await;
    let now = db.slot_confirmed_flush_lsn(&slot).await.unwrap_or_default();
    assert!(
        confirmed,
        "the slot was not confirmed up to the acknowledged {checkpoint} while the consumer \
         was idle: confirmed_flush_lsn is {now} (it started at {started})"
    );
    source.shutdown().await.expect("shutdown");
    drop(source);
    db.cleanup().await;
}

/// A consumer whose `next_batch` calls all time out (100 ms) sooner than
/// the server accepts a connection (300 ms, through a proxy that holds
/// each new connection), when the stream has to start again (its walsender
/// was terminated): the restart must go on between the calls instead of
/// starting over in each, or the stream never comes back. (It never did:
/// each call dropped the backoff wait and the connection it was making.)
#[tokio::test]
async fn next_batch_calls_shorter_than_a_connection_start_still_restart_the_stream() {
    let db = TestDb::create("lib_slowstart").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY, v int, note text)")
        .await;
    let params = cdc_postgres::conn::ConnParams::parse(db.url()).expect("the test URL");
    let server = tokio::net::lookup_host((params.host.as_str(), params.port))
        .await
        .expect("resolve the server")
        .next()
        .expect("an address");
    let proxy = CutProxy::start(server).await;
    let mut cfg = config_of_t(&db);
    cfg.url = url_with_address(db.url(), proxy.addr());
    cfg.snapshot.mode = SnapshotMode::Never;
    let slot = cfg.slot.clone();
    let mut source = PgSource::connect(cfg).await.expect("connect");
    let ack = source.ack_handle();

    // Streaming works: the first insert arrives.
    db.exec("INSERT INTO public.t VALUES (1, 1, 'one')").await;
    let inserts = |b: &cdc_core::Batch| {
        b.events
            .iter()
            .filter(|e| matches!(e, Event::Change(c) if c.op == Op::Insert))
            .count()
    };
    let mut seen = 0;
    while seen == 0 {
        let batch = tokio::time::timeout(TIMEOUT, source.next_batch())
            .await
            .expect("the first insert in time")
            .expect("next_batch")
            .expect("the source does not end");
        seen += inserts(&batch);
        ack.durable(&batch);
    }

    // New connections are slow from here on; the stream must start again.
    proxy.delay_connects(Duration::from_millis(300));
    let terminated = db
        .query_text(&format!(
            "SELECT count(pg_terminate_backend(active_pid))::text FROM pg_replication_slots \
             WHERE slot_name = '{slot}' AND active_pid IS NOT NULL"
        ))
        .await;
    assert_eq!(terminated.as_deref(), Some("1"), "the walsender of {slot}");
    db.exec("INSERT INTO public.t VALUES (2, 2, 'two')").await;

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut dropped = 0;
    while seen < 2 {
        assert!(
            Instant::now() < deadline,
            "the second insert did not come within 20 s: the stream never started again \
             ({dropped} calls dropped)"
        );
        match tokio::time::timeout(Duration::from_millis(100), source.next_batch()).await {
            Ok(batch) => {
                let batch = batch.expect("next_batch").expect("the source does not end");
                seen += inserts(&batch);
                ack.durable(&batch);
            }
            Err(_) => dropped += 1,
        }
    }
    assert!(
        dropped >= 2,
        "only {dropped} calls dropped: the restart was not slow"
    );
    source.shutdown().await.expect("shutdown");
    drop(source);
    db.cleanup().await;
}

/// A consumer that gives up on `next_batch` after a few milliseconds, over
/// and over (a timeout, or a `select!` with a timer), while writers change
/// the table: the calls it drops midway had taken changes off the stream;
/// none may be lost. What the completed calls returned, replayed by key,
/// must equal the table.
#[tokio::test]
async fn a_next_batch_dropped_midway_loses_no_change() {
    let db = TestDb::create("lib_cancel").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY, v int, note text)")
        .await;
    let mut cfg = config_of_t(&db);
    cfg.snapshot.mode = SnapshotMode::Never;
    cfg.max_batch_wait = Duration::from_millis(10);
    cfg.max_batch_events = 64;
    let mut source = PgSource::connect(cfg).await.expect("connect");
    let ack = source.ack_handle();
    let started = Instant::now();
    let mut writers = Some(
        Writers::start(
            db.url(),
            Workload {
                pause: Duration::from_millis(1),
                ..Workload::new(2)
            },
        )
        .await,
    );

    // Patience from 2 to 200 ms, in turn (a consumer's flush timer, say):
    // many calls are dropped after the batch's first change arrived,
    // others complete.
    let patience = [2, 5, 10, 20, 50, 200].map(Duration::from_millis);
    let (mut changes, mut seq, mut dropped, mut completed) = (Vec::new(), 0, 0, 0);
    let mut written = None;
    let deadline = Instant::now() + TIMEOUT;
    for wait in patience.iter().cycle() {
        match tokio::time::timeout(*wait, source.next_batch()).await {
            Ok(batch) => {
                let batch = batch.expect("next_batch").expect("the source does not end");
                changes.extend(changes_of(&batch.events, &mut seq));
                ack.durable(&batch);
                completed += 1;
            }
            Err(_) => dropped += 1,
        }
        if started.elapsed() > Duration::from_secs(3) {
            if let Some(w) = writers.take() {
                written = Some(w.finish().await);
            }
        }
        if let Some(w) = &written {
            let want = db.to_jsonb_rows("public.t", "id").await;
            let refs: Vec<_> = changes.iter().collect();
            let got = apply_keyed(&refs, "public.t", &["id"]);
            if got == want {
                eprintln!(
                    "{} changes in {completed} batches, {dropped} calls dropped; writers: {} \
                     transactions",
                    changes.len(),
                    w.committed
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the changes do not rebuild the table ({dropped} calls dropped): {}",
                diff(&got, &want).unwrap_or_default()
            );
        }
    }
    assert!(dropped > 0, "no call was dropped");
    drop(source);
    db.cleanup().await;
}

/// With the default `chunk_rows` (automatic) a table is cut into chunks
/// sized from its estimated rows and the workers: 200,000 rows read by 2
/// workers give 16 chunks of about 12,500 rows (not the 20 chunks of
/// 10,000 a fixed size would give), by CTID and by integer key alike, and
/// every row is read once.
#[tokio::test]
async fn automatic_chunks_are_sized_from_the_table_and_the_workers() {
    let db = TestDb::create("lib_auto_chunks").await;
    db.exec(
        "CREATE TABLE public.t (id int PRIMARY KEY, v text);\
         INSERT INTO public.t SELECT g, 'v' || g FROM generate_series(1, 200000) g;\
         ANALYZE public.t",
    )
    .await;
    for chunking in [Chunking::Ctid, Chunking::Key] {
        let mut cfg = config_of_t(&db);
        let slot = cfg.slot.clone();
        cfg.snapshot.mode = SnapshotMode::SnapshotOnly;
        cfg.snapshot.tables = Some(vec![TableName::new("public", "t")]);
        cfg.snapshot.chunking = chunking;
        cfg.snapshot.workers = 2;
        assert_eq!(cfg.snapshot.chunk_rows, ChunkRows::Auto);
        let mut source = PgSource::connect(cfg).await.expect("connect");
        let ack = source.ack_handle();
        let mut read = BTreeSet::new();
        let mut reads = 0usize;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let batch = tokio::time::timeout(left, source.next_batch())
                .await
                .unwrap_or_else(|_| panic!("{chunking:?}: {} rows within {TIMEOUT:?}", reads))
                .expect("next_batch");
            let Some(batch) = batch else { break };
            for event in &batch.events {
                if let Event::Change(c) = event {
                    read.insert(c.after.as_ref().and_then(id_of).expect("an id"));
                    reads += 1;
                }
            }
            ack.durable(&batch);
        }
        assert_eq!((reads, read.len()), (200_000, 200_000), "{chunking:?}");
        let chunks: i64 = db
            .query_text(&format!(
                "SELECT count(*)::text FROM cdc.snapshot_chunks WHERE slot_name = '{slot}'"
            ))
            .await
            .and_then(|n| n.parse().ok())
            .expect("a count");
        assert!(
            (15..=16).contains(&chunks),
            "{chunking:?}: {chunks} chunks, want 2 workers x 8"
        );
        drop(source);
    }
    db.cleanup().await;
}
