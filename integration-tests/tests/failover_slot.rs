//! Failover slots (PostgreSQL 17 and later): with `source.slot.failover:
//! true` the engine creates its slot with the `failover` option; a physical
//! standby with `sync_replication_slots = on` keeps a synchronised copy,
//! and the primary (`synchronized_standby_slots`) never sends the engine a
//! change the standby has not received. The engine's URL lists both
//! servers (`target_session_attrs=read-write`). The primary crashes, the
//! standby is promoted, and the same engine finds it, reconnects and
//! resumes from the synchronised slot: replayed by key, the events equal
//! the promoted server's table (`to_jsonb`), nothing lost. On an older
//! server the test only checks that the option is refused.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use integration_tests::pipelines::{Pipeline, FAST_RETRY};
use integration_tests::replay::{self, apply, read_changes, Change};
use integration_tests::snapshot_meta::parse_lsn;
use integration_tests::{unique_suffix, wait_until, Cluster, Engine, TempDir};

const TIMEOUT: Duration = Duration::from_secs(90);

/// The engine's pipeline of `public.t` on `url` into `out`: an initial
/// snapshot, then the stream, from the failover slot `slot`.
fn pipeline(url: &str, s: &str, out: &Path) -> String {
    Pipeline::streaming(
        "fo",
        url,
        "public.t",
        &format!("p_{s}"),
        &format!("s_{s}"),
        64,
    )
    .create(true, true)
    .retry(FAST_RETRY)
    .slot_options("failover: true")
    .snapshot("{ mode: initial }")
    .file_sink(out)
    .yaml()
}

/// The row events of `files`, de-duplicated by position, in commit order.
fn merged(files: &[&Path]) -> Vec<Change> {
    let mut by_pos = BTreeMap::new();
    for f in files {
        for ev in read_changes(f) {
            by_pos.entry(ev.position()).or_insert(ev);
        }
    }
    by_pos.into_values().collect()
}

/// Writes a round of changes: inserts of `ids`, an update of every third
/// row, a delete of every seventh (of those inserted).
async fn write_round(cluster: &Cluster, ids: std::ops::RangeInclusive<i32>) {
    let (a, b) = (ids.start(), ids.end());
    for sql in [
        format!("INSERT INTO public.t SELECT g, g FROM generate_series({a}, {b}) AS g"),
        format!("UPDATE public.t SET v = v * 10 WHERE id BETWEEN {a} AND {b} AND id % 3 = 0"),
        format!("DELETE FROM public.t WHERE id BETWEEN {a} AND {b} AND id % 7 = 0"),
    ] {
        cluster.exec("postgres", &sql).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_engine_resumes_from_the_synchronised_slot_after_a_failover() {
    let primary = Cluster::start("").await;
    let version: i32 = primary
        .query_text("SELECT current_setting('server_version_num')")
        .await
        .and_then(|v| v.parse().ok())
        .expect("server_version_num");
    primary
        .exec(
            "postgres",
            "CREATE TABLE public.t (id int PRIMARY KEY, v int NOT NULL);
             INSERT INTO public.t SELECT g, g FROM generate_series(1, 100) AS g;",
        )
        .await;
    let s = unique_suffix();
    let slot = format!("s_{s}");
    let dir = TempDir::new("failover");
    let out = dir.join("out.jsonl");

    if version < 170_000 {
        let mut engine = Engine::start(&pipeline(&primary.url("postgres"), &s, &out));
        let code = engine.try_wait_exit(TIMEOUT).await;
        assert!(code.is_some_and(|c| c != 0), "exit {code:?}");
        assert!(
            engine
                .stderr_text()
                .contains("source.slot.failover needs PostgreSQL 17 or later"),
            "{}",
            engine.output_report()
        );
        return;
    }

    let standby = primary
        .start_standby(
            &format!("sb_{s}"),
            "sync_replication_slots = on\nhot_standby_feedback = on\n",
        )
        .await;
    // The primary holds logical changes back until the standby has them.
    // (Each its own statement: ALTER SYSTEM runs outside a transaction.)
    for sql in [
        format!("ALTER SYSTEM SET synchronized_standby_slots = 'sb_{s}'"),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        primary.exec("postgres", &sql).await;
    }

    // Both servers in one URL: the engine uses the one accepting writes,
    // and looks again whenever it reconnects.
    let url = format!(
        "postgres://postgres:postgres@127.0.0.1:{},127.0.0.1:{}/postgres\
         ?target_session_attrs=read-write",
        primary.port(),
        standby.port()
    );
    let mut a = Engine::start(&pipeline(&url, &s, &out));
    let copied = wait_until(TIMEOUT, async || {
        read_changes(&out).iter().filter(|e| e.op == "r").count() == 100
    })
    .await;
    assert!(copied, "no snapshot\n{}", a.output_report());
    let failover = primary
        .query_text(&format!(
            "SELECT failover::text FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ))
        .await;
    assert_eq!(failover.as_deref(), Some("true"), "not a failover slot");

    write_round(&primary, 101..=200).await;
    // The standby's copy is usable once it is synchronised and persistent
    // (its position follows the engine's acknowledgements).
    let synced_sql = format!(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots \
         WHERE slot_name = '{slot}' AND synced AND NOT temporary"
    );
    let synced = wait_until(TIMEOUT, async || {
        standby.query_text(&synced_sql).await.is_some()
    })
    .await;
    assert!(
        synced,
        "the standby did not synchronise the slot\n{}",
        a.output_report()
    );

    write_round(&primary, 201..=300).await;
    let synced_at = standby
        .query_text(&synced_sql)
        .await
        .map(|l| parse_lsn(&l))
        .expect("the synchronised slot's position");
    let delivered = wait_until(TIMEOUT, async || {
        read_changes(&out)
            .iter()
            .any(|e| e.op == "c" && e.after["id"] == 300)
    })
    .await;
    assert!(delivered, "A did not stream round 2\n{}", a.output_report());

    // The primary dies; the standby is promoted; the same engine finds
    // it among the URL's servers and resumes from the synchronised slot.
    let before_failover = read_changes(&out).len();
    primary.crash().await;
    standby.promote().await;
    write_round(&standby, 301..=400).await;

    let want = standby.to_jsonb_rows("public.t", "id").await;
    let converged = replay::converge(TIMEOUT, Duration::ZERO, &want, async || {
        apply(
            &merged(&[out.as_path()]).iter().collect::<Vec<_>>(),
            "public.t",
        )
    })
    .await;
    if let Err(d) = converged {
        panic!(
            "the events do not rebuild the promoted server's table: {d}\n{}",
            a.output_report()
        );
    }
    let log = a.stderr_text();
    assert!(
        log.contains(&format!("now using 127.0.0.1:{}", standby.port())),
        "the engine did not move to the promoted server\n{}",
        a.output_report()
    );
    assert!(
        log.matches("created the slot").count() == 1 && !log.contains("creating replication slot"),
        "a new slot instead of the synchronised one\n{}",
        a.output_report()
    );
    // Duplicates are bounded by what the standby's copy had not caught up
    // with: nothing of the initial snapshot is sent again, nor anything
    // committed before the copy's position when round 2 began.
    let after_failover = read_changes(&out).split_off(before_failover);
    assert!(
        after_failover.iter().all(|e| e.op != "r"),
        "a new snapshot after the failover\n{}",
        a.output_report()
    );
    assert!(
        after_failover.iter().all(|e| e.commit_lsn >= synced_at),
        "changes from before the synchronised position sent again\n{}",
        a.output_report()
    );
    a.stop_clean(TIMEOUT, "stop the engine").await;
}
