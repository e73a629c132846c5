//! Bad configuration and unprepared servers, through the `cdc-engine`
//! binary: every case must end with a non-zero exit and a message that says
//! what is wrong (and, for the server cases, what to do about it), quickly —
//! these are fatal errors, not something to retry.
//!
//! Besides `CDC_TEST_PG_URL`, two clusters of their own (started by
//! `scripts/test.sh`):
//! - `CDC_TEST_PG_NOLOGICAL_URL`: `wal_level = replica`;
//! - `CDC_TEST_PG_FEWSLOTS_URL`: `wal_level = logical`, `max_replication_slots = 2`.

use std::time::Duration;

use integration_tests::pipelines::{Names, Pipeline, STREAM_ONLY};
use integration_tests::{
    extra_cluster_url, quote_ident, quote_literal, run_engine, run_engine_validate, unique_suffix,
    Engine, ExtraDb, SlotsLock, TestDb, TestRole, TEST_ROLE_PASSWORD,
};

/// A runtime setup error must end the engine within this.
const FATAL_EXIT_WITHIN: Duration = Duration::from_secs(20);

fn names() -> Names {
    Names::unique("bad")
}

/// A pipeline config: `table` at `url`, the publication and slot of `n`
/// (created when missing), one stdout sink, stream-only.
fn pipeline(url: &str, table: &str, n: &Names) -> Pipeline {
    n.stdout_pipeline("bad_input", url, &[table])
}

/// What a `cdc-engine run` that is expected to fail left behind.
struct Failed {
    code: Option<i32>,
    elapsed: Duration,
    stderr: String,
    report: String,
}

impl Failed {
    /// Asserts a non-zero exit within [`FATAL_EXIT_WITHIN`] and that stderr
    /// contains every one of `needles`.
    fn assert_fatal(&self, case: &str, needles: &[&str]) {
        let code = self.code.unwrap_or_else(|| {
            panic!(
                "{case}: the engine was still running after {FATAL_EXIT_WITHIN:?} \
                 (a fatal setup error must not be retried)\n{}",
                self.report
            )
        });
        assert_ne!(code, 0, "{case}: exit code 0\n{}", self.report);
        assert!(
            code != 128 + 9,
            "{case}: killed by a signal ({code})\n{}",
            self.report
        );
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "{case}: stderr does not mention {needle:?} (exit {code} after {:?})\n{}",
                self.elapsed,
                self.report
            );
        }
    }
}

/// Runs `cdc-engine run` with `yaml` until it exits or
/// [`FATAL_EXIT_WITHIN`] has passed (then it is killed).
async fn run_expecting_failure(yaml: &str) -> Failed {
    let started = std::time::Instant::now();
    let mut engine = Engine::start(yaml);
    let code = engine.try_wait_exit(FATAL_EXIT_WITHIN).await;
    let elapsed = started.elapsed();
    if code.is_none() {
        engine.sigkill();
    }
    Failed {
        code,
        elapsed,
        stderr: engine.stderr_text(),
        report: engine.output_report(),
    }
}

// ------------------------------------------------------------ config errors

const VALID: &str =
    "source:\n  url: postgres://cdc@127.0.0.1:5432/shop\n  tables: [public.users]\n\
                     sinks:\n  - type: stdout\n";

#[test]
fn validate_accepts_a_valid_config() {
    let (code, stdout, stderr) = run_engine_validate(VALID);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("valid"), "stdout:\n{stdout}");
}

#[test]
fn validate_names_an_unknown_top_level_key() {
    let yaml = format!("{VALID}sinkz:\n  - type: stdout\n");
    let (code, _, stderr) = run_engine_validate(&yaml);
    assert_eq!(code, 2, "stderr:\n{stderr}");
    assert!(stderr.contains("sinkz"), "stderr:\n{stderr}");
    assert!(stderr.contains("unknown field"), "stderr:\n{stderr}");
}

#[test]
fn validate_names_an_unknown_nested_key() {
    let yaml = "source:\n  url: postgres://cdc@127.0.0.1:5432/shop\n  tables: [public.users]\n\
                sinks:\n  - type: file\n    pathh: out.jsonl\n";
    let (code, _, stderr) = run_engine_validate(yaml);
    assert_eq!(code, 2, "stderr:\n{stderr}");
    assert!(stderr.contains("sinks[0].pathh"), "stderr:\n{stderr}");
}

#[test]
fn validate_names_a_missing_source_url() {
    let yaml = "source:\n  tables: [public.users]\nsinks:\n  - type: stdout\n";
    let (code, _, stderr) = run_engine_validate(yaml);
    assert_eq!(code, 2, "stderr:\n{stderr}");
    assert!(stderr.contains("source.url"), "stderr:\n{stderr}");
    assert!(stderr.contains("missing"), "stderr:\n{stderr}");
}

#[test]
fn run_with_a_bad_config_exits_2_without_connecting() {
    // The URL points nowhere: a config error must come first.
    let yaml = "source:\n  url: postgres://cdc@127.0.0.1:1/shop\n  tables: [public.users]\n\
                sinks:\n  - type: stdout\n    pathh: x\n";
    let (code, _, stderr) = run_engine(&["run"], yaml);
    assert_eq!(code, 2, "stderr:\n{stderr}");
    assert!(stderr.contains("sinks[0]"), "stderr:\n{stderr}");
    assert!(stderr.contains("pathh"), "stderr:\n{stderr}");
}

// ------------------------------------------------------------ server not ready

#[tokio::test]
async fn wal_level_not_logical_says_to_change_it_and_restart() {
    let admin = extra_cluster_url("CDC_TEST_PG_NOLOGICAL_URL");
    let db = ExtraDb::create(&admin, "bad_wal").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY)").await;
    let yaml = pipeline(&db.url, "public.t", &names()).yaml();
    let failed = run_expecting_failure(&yaml).await;
    db.drop_db().await;
    failed.assert_fatal("wal_level = replica", &["wal_level", "logical", "restart"]);
}

#[tokio::test]
async fn too_few_replication_slots_names_max_replication_slots() {
    let admin = extra_cluster_url("CDC_TEST_PG_FEWSLOTS_URL");
    // Other tests fill this cluster's slots too: one at a time.
    let lock = SlotsLock::acquire(&admin).await;
    // Fill both slots, each in a database of its own.
    let mut fillers = Vec::new();
    for _ in 0..2 {
        let filler = ExtraDb::create(&admin, "bad_fill").await;
        filler
            .exec(&format!(
                "SELECT pg_create_logical_replication_slot({}, 'pgoutput')",
                quote_literal(&format!("fill_{}", unique_suffix()))
            ))
            .await;
        fillers.push(filler);
    }
    let db = ExtraDb::create(&admin, "bad_slots").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY)").await;
    let yaml = pipeline(&db.url, "public.t", &names()).yaml();
    let failed = run_expecting_failure(&yaml).await;
    db.drop_db().await;
    for f in fillers {
        f.drop_db().await;
    }
    lock.release().await;
    failed.assert_fatal("all slots in use", &["max_replication_slots"]);
}

#[tokio::test]
async fn role_without_replication_says_alter_role() {
    let db = TestDb::create("bad_role").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY)").await;
    let role = TestRole::create(&db, "norepl", "NOREPLICATION").await;
    db.exec(&format!(
        "GRANT SELECT ON public.t TO {}",
        quote_ident(role.name())
    ))
    .await;
    let yaml = pipeline(role.url(), "public.t", &names()).yaml();
    let failed = run_expecting_failure(&yaml).await;
    let name = role.name().to_owned();
    db.cleanup().await;
    role.drop_role().await;
    failed.assert_fatal(
        "role without REPLICATION",
        &["REPLICATION", "ALTER ROLE", &name],
    );
    assert!(
        !failed.stderr.contains(TEST_ROLE_PASSWORD),
        "the password was printed\n{}",
        failed.report
    );
}

#[tokio::test]
async fn missing_table_is_named() {
    let db = TestDb::create("bad_table").await;
    db.exec("CREATE TABLE public.present (id int PRIMARY KEY)")
        .await;
    let yaml = pipeline(db.url(), "public.no_such_table", &names()).yaml();
    let failed = run_expecting_failure(&yaml).await;
    let slots = db.slot_names().await;
    db.cleanup().await;
    failed.assert_fatal("missing table", &["public.no_such_table", "does not exist"]);
    assert!(
        slots.is_empty(),
        "a slot was created for a pipeline that cannot run: {slots:?}"
    );
}

#[tokio::test]
async fn missing_publication_without_create_names_the_sql() {
    let db = TestDb::create("bad_pub").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY)").await;
    let n = names();
    let publication = &n.publication;
    let yaml = pipeline(db.url(), "public.t", &n)
        .create(false, true)
        .yaml();
    let failed = run_expecting_failure(&yaml).await;
    let slots = db.slot_names().await;
    db.cleanup().await;
    failed.assert_fatal(
        "missing publication",
        &[
            publication,
            &format!("CREATE PUBLICATION \"{publication}\" FOR TABLE \"public\".\"t\""),
        ],
    );
    assert!(
        slots.is_empty(),
        "a slot was created for a pipeline that cannot run: {slots:?}"
    );
}

#[tokio::test]
async fn missing_slot_without_create_says_how_to_create_it() {
    let db = TestDb::create("bad_slot").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY)").await;
    let n = names();
    let slot = &n.slot;
    db.exec(&format!(
        "CREATE PUBLICATION {} FOR TABLE public.t",
        quote_ident(&n.publication)
    ))
    .await;
    let yaml = pipeline(db.url(), "public.t", &n)
        .create(false, false)
        .yaml();
    let failed = run_expecting_failure(&yaml).await;
    let slot_exists = db.slot_exists(slot).await;
    db.cleanup().await;
    failed.assert_fatal(
        "missing slot",
        &[
            slot,
            &format!("pg_create_logical_replication_slot('{slot}', 'pgoutput')"),
        ],
    );
    assert!(
        !slot_exists,
        "slot {slot} was created despite create: false"
    );
}

/// A server that cannot be reached is retried (it may be starting), but
/// with `retry.give_up_after` only that long: then the engine exits with
/// an error that says what it was trying and for how long.
#[tokio::test]
async fn unreachable_server_is_given_up_after_the_retry_bound() {
    let port = integration_tests::http::free_port();
    let url = format!("postgres://cdc@127.0.0.1:{port}/nowhere");
    let s = unique_suffix();
    let yaml = Pipeline::new("bad_input", &url)
        .table("public.t")
        .publication(&format!("p_{s}"))
        .slot(&format!("s_{s}"))
        .sink("{ type: stdout }")
        .snapshot(STREAM_ONLY)
        .retry("{ initial_backoff: 100ms, max_backoff: 400ms, give_up_after: 2s }")
        .yaml();
    let failed = run_expecting_failure(&yaml).await;
    failed.assert_fatal(
        "unreachable server",
        &["could not start the source", "retry.give_up_after 2s"],
    );
    assert!(
        failed.elapsed >= Duration::from_secs(2),
        "gave up after {:?}, before the bound\n{}",
        failed.elapsed,
        failed.report
    );
}
