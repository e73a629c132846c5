//! Logical decoding on a hot standby (PostgreSQL 16 and later): the engine
//! streams from a slot on the standby, writes its heartbeats on the primary
//! (`source.primary_url`; a standby is read-only) and gets them back through
//! the standby's slot. What a standby cannot do is refused with one clear
//! line: heartbeats without `primary_url`, and any standby before 16.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration_tests::http::{free_port, get};
use integration_tests::pipelines::Pipeline;
use integration_tests::replay::{self, apply, read_changes};
use integration_tests::{run_engine, unique_suffix, wait_until, Cluster, Engine, TempDir};
use sqlx::Connection;

const TIMEOUT: Duration = Duration::from_secs(90);

/// A stream-only pipeline of `public.t` on the standby `url`, through the
/// publication `p_<s>` made on the primary, heartbeats every second.
fn pipeline(url: &str, s: &str, out: &Path) -> Pipeline {
    Pipeline::streaming(
        "sb",
        url,
        "public.t",
        &format!("p_{s}"),
        &format!("s_{s}"),
        64,
    )
    .create(false, true)
    .set("heartbeat", "{ interval: 1s }")
    .file_sink(out)
}

/// The value of the unlabelled sample `name` on the engine's `/metrics`.
async fn metric(port: u16, name: &str) -> Option<f64> {
    let (_, body) = get(port, "/metrics").await?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_engine_streams_from_a_standby_with_heartbeats_on_the_primary() {
    let primary = Cluster::start("").await;
    let s = unique_suffix();
    primary
        .exec(
            "postgres",
            &format!(
                "CREATE TABLE public.t (id int PRIMARY KEY, v int NOT NULL);
                 CREATE TABLE public.u (pad text);
                 CREATE PUBLICATION p_{s} FOR TABLE public.t;"
            ),
        )
        .await;
    let standby = primary.start_standby(&format!("sb_{s}"), "").await;
    let dir = TempDir::new("standby-decoding");
    let out = dir.join("out.jsonl");
    let standby_url = standby.url("postgres");

    // Heartbeats on (the default) without primary_url: refused.
    let mut refused = Engine::start(&pipeline(&standby_url, &s, &out).yaml());
    let code = refused.try_wait_exit(TIMEOUT).await;
    assert!(
        code.is_some_and(|c| c != 0),
        "exit {code:?}\n{}",
        refused.output_report()
    );
    let err = refused.stderr_text();
    assert!(
        err.contains("source.url is a hot standby"),
        "{}",
        refused.output_report()
    );
    // `check` says the same, with the fix, before anything runs.
    let (code, stdout, stderr) = run_engine(&["check"], &pipeline(&standby_url, &s, &out).yaml());
    assert_ne!(
        code, 0,
        "check passed on a standby without primary_url\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("FAIL hot standby")
            && (stdout.contains("source.primary_url") || stdout.contains("PostgreSQL 16 or later")),
        "check does not name the standby's problem:\n{stdout}\n{stderr}"
    );
    let mut c = primary.connect("postgres").await;
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int4")
        .fetch_one(&mut c)
        .await
        .expect("server_version_num");
    let _ = c.close().await;
    if version < 160_000 {
        assert!(err.contains("needs PostgreSQL 16 or later"), "{err}");
        return;
    }
    assert!(err.contains("set source.primary_url"), "{err}");

    // With primary_url: the slot is made on the standby, heartbeats on the
    // primary.
    let port = free_port();
    let yaml = pipeline(&standby_url, &s, &out)
        .source_lines(&format!("  primary_url: {}\n", primary.url("postgres")))
        .extra(&format!(
            "metrics:\n  listen: '127.0.0.1:{port}'\n  lag_poll_interval: 1s\n"
        ))
        .yaml();
    let mut engine = Engine::start(&yaml);
    // Creating a slot on a standby waits for the primary to log its running
    // transactions (every 15 s when busy): ask for it until the slot streams.
    let slot = format!("s_{s}");
    let nudge = Arc::new(AtomicBool::new(true));
    let nudger = {
        let (url, nudge) = (primary.url("postgres"), nudge.clone());
        tokio::spawn(async move {
            while nudge.load(Ordering::Relaxed) {
                if let Ok(mut c) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::query("SELECT pg_log_standby_snapshot()")
                        .execute(&mut c)
                        .await;
                    let _ = c.close().await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let streaming = wait_until(TIMEOUT, async || standby.slot_streaming(&slot).await).await;
    nudge.store(false, Ordering::Relaxed);
    let _ = nudger.await;
    assert!(
        streaming,
        "no stream from the standby\n{}",
        engine.output_report()
    );

    for sql in [
        "INSERT INTO public.t SELECT g, g FROM generate_series(1, 200) AS g",
        "UPDATE public.t SET v = v * 10 WHERE id % 3 = 0",
        "DELETE FROM public.t WHERE id % 7 = 0",
        "INSERT INTO public.u SELECT 'x' FROM generate_series(1, 100)",
    ] {
        primary.exec("postgres", sql).await;
    }
    let want = primary.to_jsonb_rows("public.t", "id").await;
    let converged = replay::converge(TIMEOUT, Duration::ZERO, &want, async || {
        apply(&read_changes(&out).iter().collect::<Vec<_>>(), "public.t")
    })
    .await;
    if let Err(d) = converged {
        panic!(
            "the standby's stream does not rebuild the table: {d}\n{}",
            engine.output_report()
        );
    }
    let beating = wait_until(TIMEOUT, async || {
        metric(port, "cdc_source_heartbeats_total")
            .await
            .is_some_and(|n| n >= 1.0)
    })
    .await;
    assert!(
        beating,
        "no heartbeat was written on the primary\n{}",
        engine.output_report()
    );
    engine.stop_clean(TIMEOUT, "stop").await;
}
