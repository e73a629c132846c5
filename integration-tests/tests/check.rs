//! `cdc-engine check` against real servers: each finding reproduced, its
//! line and fix asserted; and `run` refusing to start on the same findings.
//!
//! Every test has its own database, role, publication and slot names, so
//! the tests run in any order and in parallel. Besides `CDC_TEST_PG_URL`
//! they use the clusters `CDC_TEST_PG_NOLOGICAL_URL` (`wal_level = replica`)
//! and `CDC_TEST_PG_FEWSLOTS_URL` (`max_replication_slots = 2`).
//! Findings that need other server settings (`max_wal_senders`,
//! `max_slot_wal_keep_size`) run on a cluster of the test's own.
//! A server older than PostgreSQL 14 cannot be reproduced here (only 15 is
//! installed): the version rule has unit tests in cdc-postgres.

use std::time::Duration;

use integration_tests::pipelines::{Names, Pipeline};
use integration_tests::{
    extra_cluster_url, quote_ident, quote_literal, run_engine, unique_suffix, Cluster, Engine,
    ExtraDb, SlotsLock, TestDb, TestRole, TEST_ROLE_PASSWORD,
};

fn names() -> Names {
    Names::unique("chk")
}

/// The pipeline config of a test: `tables` at `url`, the publication and
/// slot of `n` (created when missing), one stdout sink, stream-only; a test
/// changes what it checks.
fn pipeline(url: &str, tables: &[&str], n: &Names) -> Pipeline {
    n.stdout_pipeline("check_test", url, tables)
}

/// What `cdc-engine check` printed.
struct Checked {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Checked {
    /// `cdc-engine check` of `pipeline`.
    fn of(pipeline: Pipeline) -> Checked {
        Checked::run(&pipeline.yaml())
    }

    fn run(yaml: &str) -> Checked {
        let (code, stdout, stderr) = run_engine(&["check"], yaml);
        assert!(
            !stdout.contains(TEST_ROLE_PASSWORD) && !stderr.contains(TEST_ROLE_PASSWORD),
            "the password was printed:\n{stdout}\n{stderr}"
        );
        Checked {
            code,
            stdout,
            stderr,
        }
    }

    fn report(&self) -> String {
        format!(
            "exit {}\n--- stdout:\n{}--- stderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// The one line that starts with `start` (`"FAIL wal_level:"`).
    fn line(&self, start: &str) -> &str {
        let lines: Vec<&str> = self
            .stdout
            .lines()
            .filter(|l| l.starts_with(start))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one line starting with {start:?}\n{}",
            self.report()
        );
        lines[0]
    }

    /// Asserts the line starting with `start` contains every one of `needles`.
    fn assert_line(&self, start: &str, needles: &[&str]) {
        let line = self.line(start);
        for n in needles {
            assert!(line.contains(n), "{line:?} lacks {n:?}\n{}", self.report());
        }
    }

    fn assert_exit(&self, code: i32) {
        assert_eq!(self.code, code, "{}", self.report());
    }

    fn assert_no(&self, start: &str) {
        assert!(
            !self.stdout.lines().any(|l| l.starts_with(start)),
            "unexpected line starting with {start:?}\n{}",
            self.report()
        );
    }
}

#[tokio::test]
async fn a_healthy_pipeline_passes_with_exit_0() {
    let db = TestDb::create("chk_ok").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY, n int8)")
        .await;
    let n = names();
    let config = pipeline(db.url(), &["public.t"], &n).yaml();
    let c = Checked::run(&config);
    // The JSON form says the same.
    let (jcode, json, _) = run_engine(&["check", "--json"], &config);
    let slots = db.slot_names().await;
    db.cleanup().await;
    c.assert_exit(0);
    c.assert_line("ok   server version:", &["(14 or newer needed)"]);
    c.assert_line("ok   wal_level:", &["logical"]);
    c.assert_line("ok   table public.t:", &["ready"]);
    c.assert_line("ok   publication ", &["will be created"]);
    c.assert_line("ok   slot ", &["will be created"]);
    c.assert_no("FAIL");
    c.assert_no("WARN");
    assert!(
        c.stdout
            .ends_with("0 blocking problem(s), 0 warning(s), 7 ok: ready\n"),
        "{}",
        c.report()
    );
    assert!(slots.is_empty(), "check created a slot: {slots:?}");
    assert_eq!(jcode, 0, "{json}");
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["ready"], true, "{json}");
}

#[tokio::test]
async fn every_missing_piece_is_reported_at_once() {
    let db = TestDb::create("chk_missing").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY); CREATE VIEW public.v AS SELECT * FROM public.t")
        .await;
    let n = names();
    let c = Checked::of(
        pipeline(db.url(), &["public.t", "public.nope", "public.v"], &n).create(false, false),
    );
    let name = db.name().to_owned();
    db.cleanup().await;
    c.assert_exit(1);
    c.assert_line(
        "FAIL table public.nope:",
        &[
            &format!("`public.nope` does not exist in database `{name}`"),
            "fix: check source.tables",
        ],
    );
    c.assert_line("FAIL table public.v:", &["is not a table (relkind `v`)"]);
    c.assert_line(
        &format!("FAIL publication {}:", n.publication),
        &[&format!(
            "fix: run CREATE PUBLICATION \"{}\" FOR TABLE \"public\".\"t\", \"public\".\"nope\", \"public\".\"v\" WITH (publish_via_partition_root = true); or set source.publication.create: true",
            n.publication
        )],
    );
    c.assert_line(
        &format!("FAIL slot {}:", n.slot),
        &[&format!(
            "fix: run SELECT pg_create_logical_replication_slot('{}', 'pgoutput'); or set source.slot.create: true",
            n.slot
        )],
    );
    assert!(c.stdout.contains("4 blocking problem(s)"), "{}", c.report());
}

#[tokio::test]
async fn replica_identity_and_toast() {
    let db = TestDb::create("chk_ident").await;
    db.exec(
        "CREATE TABLE public.nokey (a int, b int);
         CREATE TABLE public.doc (id int PRIMARY KEY, body text);
         CREATE TABLE public.gone (id int PRIMARY KEY, b int);
         ALTER TABLE public.gone REPLICA IDENTITY NOTHING;",
    )
    .await;
    let n = names();
    let tables = ["public.nokey", "public.doc", "public.gone"];
    let c = Checked::of(pipeline(db.url(), &tables, &n));
    // The configured identities are what run sets: FULL fixes both; an
    // explicit `default` is a choice, reported as a warning.
    let configured = Checked::of(pipeline(db.url(), &tables, &n).source_lines(
        "  replica_identity: { public.nokey: default, public.doc: full, public.gone: full }\n",
    ));
    db.cleanup().await;
    c.assert_exit(1);
    c.assert_line(
        "FAIL table public.nokey:",
        &[
            "has no primary key and replica identity DEFAULT",
            "every UPDATE and DELETE on it fails on the server",
            "fix: ALTER TABLE \"public\".\"nokey\" REPLICA IDENTITY FULL;",
            "source.replica_identity: { public.nokey: full }",
        ],
    );
    c.assert_line(
        "FAIL table public.gone:",
        &[
            "has replica identity NOTHING",
            "fix: ALTER TABLE \"public\".\"gone\" REPLICA IDENTITY FULL;",
        ],
    );
    c.assert_line(
        "WARN table public.doc:",
        &[
            "column(s) body can be stored out of line (TOAST)",
            "source.unchanged_toast",
            "fix: ALTER TABLE \"public\".\"doc\" REPLICA IDENTITY FULL;",
        ],
    );
    configured.assert_exit(0);
    configured.assert_line(
        "WARN table public.nokey:",
        &["as source.replica_identity sets it"],
    );
    configured.assert_no("WARN table public.doc:");
    configured.assert_line("ok   table public.gone:", &["ready"]);
}

#[tokio::test]
async fn a_role_without_privileges_gets_every_grant_it_needs() {
    let db = TestDb::create("chk_role").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY, n int)")
        .await;
    let role = TestRole::create(&db, "chk_norepl", "NOREPLICATION").await;
    let r = quote_ident(role.name());
    let role_name = role.name().to_owned();
    let n = names();
    // Snapshot with its metadata schema missing: needs CREATE on the database.
    let c = Checked::of(
        pipeline(role.url(), &["public.t"], &n)
            .snapshot("{ mode: initial, metadata_schema: chk_meta }"),
    );
    // The schema exists, but the role may not create in it.
    db.exec("CREATE SCHEMA chk_meta").await;
    let c2 = Checked::of(
        pipeline(role.url(), &["public.t"], &n)
            .snapshot("{ mode: initial, metadata_schema: chk_meta }"),
    );
    let dbq = quote_ident(db.name());
    db.cleanup().await;
    role.drop_role().await;
    c.assert_exit(1);
    c.assert_line(
        &format!("FAIL role {role_name}:"),
        &[&format!(
            "fix: as a superuser run ALTER ROLE {r} WITH REPLICATION; (on Amazon RDS/Aurora: GRANT rds_replication TO {r};)"
        )],
    );
    c.assert_line(
        "FAIL table public.t:",
        &[
            "may not read `public.t`, which the snapshot copies",
            &format!("fix: GRANT SELECT ON \"public\".\"t\" TO {r};"),
        ],
    );
    c.assert_line(
        &format!("FAIL publication {}:", n.publication),
        &[
            "the role does not own public.t (owner `postgres`)",
            &format!("fix: ALTER TABLE \"public\".\"t\" OWNER TO {r};"),
            &format!(
                "or have the tables' owner run CREATE PUBLICATION \"{}\" FOR TABLE \"public\".\"t\" WITH (publish_via_partition_root = true);",
                n.publication
            ),
        ],
    );
    c.assert_line(
        "FAIL metadata schema chk_meta:",
        &[&format!("fix: GRANT CREATE ON DATABASE {dbq} TO {r};")],
    );
    c2.assert_line(
        "FAIL metadata schema chk_meta:",
        &[&format!(
            "GRANT CREATE, USAGE ON SCHEMA \"chk_meta\" TO {r};"
        )],
    );
}

#[tokio::test]
async fn an_existing_publication_without_a_table() {
    let db = TestDb::create("chk_pubtab").await;
    db.exec(
        "CREATE TABLE public.a (id int PRIMARY KEY); CREATE TABLE public.b (id int PRIMARY KEY)",
    )
    .await;
    let n = names();
    db.exec(&format!(
        "CREATE PUBLICATION {} FOR TABLE public.a",
        quote_ident(&n.publication)
    ))
    .await;
    let c = Checked::of(pipeline(db.url(), &["public.a", "public.b"], &n).create(false, true));
    let with_create = Checked::of(pipeline(db.url(), &["public.a", "public.b"], &n));
    db.cleanup().await;
    c.assert_exit(1);
    c.assert_line(
        &format!("FAIL publication {}:", n.publication),
        &[
            "does not include public.b",
            &format!(
                "fix: run ALTER PUBLICATION \"{}\" ADD TABLE \"public\".\"b\";",
                n.publication
            ),
        ],
    );
    with_create.assert_exit(0);
    with_create.assert_line(
        &format!("ok   publication {}:", n.publication),
        &["will be added"],
    );
}

#[tokio::test]
async fn slots_of_another_plugin_and_in_use() {
    let db = TestDb::create("chk_slot").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY)").await;
    let n = names();
    db.exec(&format!(
        "SELECT pg_create_logical_replication_slot({}, 'test_decoding')",
        quote_literal(&n.slot)
    ))
    .await;
    let c = Checked::of(pipeline(db.url(), &["public.t"], &n));
    db.cleanup().await;
    c.assert_exit(1);
    c.assert_line(
        &format!("FAIL slot {}:", n.slot),
        &[
            "is a logical slot with plugin `test_decoding`",
            &format!(
                "fix: choose another source.slot.name, or drop it (if nothing else uses it): SELECT pg_drop_replication_slot('{}');",
                n.slot
            ),
        ],
    );
}

#[tokio::test]
async fn partitioned_tables_need_publish_via_partition_root() {
    let db = TestDb::create("chk_part").await;
    db.exec(
        "CREATE TABLE public.m (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE TABLE public.m_2024 PARTITION OF public.m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');",
    )
    .await;
    let n = names();
    let c = Checked::of(pipeline(db.url(), &["public.m"], &n));
    let c_no_create = Checked::of(pipeline(db.url(), &["public.m"], &n).create(false, true));
    db.exec(&format!(
        "CREATE PUBLICATION {} FOR TABLE public.m",
        quote_ident(&n.publication)
    ))
    .await;
    let plain = Checked::of(pipeline(db.url(), &["public.m"], &n));
    let plain_no_create = Checked::of(pipeline(db.url(), &["public.m"], &n).create(false, true));
    db.exec(&format!(
        "ALTER PUBLICATION {} SET (publish_via_partition_root = true)",
        quote_ident(&n.publication)
    ))
    .await;
    let via_root = Checked::of(pipeline(db.url(), &["public.m"], &n));
    db.cleanup().await;
    // The engine creates the publication with publish_via_partition_root.
    c.assert_exit(0);
    c.assert_line(
        "ok   table public.m:",
        &["will be created with publish_via_partition_root"],
    );
    c_no_create.assert_exit(1);
    c_no_create.assert_line(
        "FAIL table public.m:",
        &[
            "is partitioned",
            &format!(
                "fix: create the publication with it: CREATE PUBLICATION \"{}\" FOR TABLE \"public\".\"m\" WITH (publish_via_partition_root = true);",
                n.publication
            ),
        ],
    );
    // An existing publication without it: run sets it, or, when it may
    // not change the publication, refuses.
    plain.assert_exit(0);
    plain.assert_line(
        "WARN table public.m:",
        &[
            "run sets it",
            &format!(
                "fix: ALTER PUBLICATION \"{}\" SET (publish_via_partition_root = true); (what run does)",
                n.publication
            ),
        ],
    );
    plain_no_create.assert_exit(1);
    plain_no_create.assert_line(
        "FAIL table public.m:",
        &[&format!(
            "fix: ALTER PUBLICATION \"{}\" SET (publish_via_partition_root = true);",
            n.publication
        )],
    );
    // The publication lists the parent (pg_publication_tables shows the partition).
    plain.assert_line(
        &format!("ok   publication {}:", n.publication),
        &["exists and includes every table"],
    );
    via_root.assert_exit(0);
    via_root.assert_line("ok   table public.m:", &["publish_via_partition_root"]);
}

#[tokio::test]
async fn wal_level_replica_is_blocking() {
    let admin = extra_cluster_url("CDC_TEST_PG_NOLOGICAL_URL");
    let db = ExtraDb::create(&admin, "chk_wal").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY)").await;
    let n = names();
    let c = Checked::of(pipeline(&db.url, &["public.t"], &n));
    db.drop_db().await;
    c.assert_exit(1);
    assert_eq!(
        c.line("FAIL wal_level:"),
        "FAIL wal_level: is `replica`, but change data capture needs `logical`; fix: \
         ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
    );
}

#[tokio::test]
async fn no_free_replication_slot_is_blocking() {
    let admin = extra_cluster_url("CDC_TEST_PG_FEWSLOTS_URL");
    // Other tests fill this cluster's two slots too: one at a time.
    let lock = SlotsLock::acquire(&admin).await;
    let db = ExtraDb::create(&admin, "chk_fewslots").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY)").await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    // Fill every free slot (creation fails once none is left).
    let mut filled = 0;
    while filled < 10 {
        let fill = format!("chk_fill_{}_{filled}", unique_suffix());
        let created = sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
            .bind(&fill)
            .execute(&mut conn)
            .await;
        if created.is_err() {
            break;
        }
        filled += 1;
    }
    drop(conn);
    let n = names();
    let c = Checked::of(pipeline(&db.url, &["public.t"], &n));
    db.drop_db().await;
    lock.release().await;
    c.assert_exit(1);
    c.assert_line(
        &format!("FAIL slot {}:", n.slot),
        &[
            "all 2 replication slots are in use (max_replication_slots = 2)",
            "fix: ALTER SYSTEM SET max_replication_slots = 12; then restart PostgreSQL, or drop unused slots",
        ],
    );
}

#[test]
fn an_invalid_config_or_an_unreachable_server_exits_2() {
    let (code, _, stderr) = run_engine(
        &["check"],
        "source:\n  url: postgres://cdc@127.0.0.1:1/shop\n  tables: [public.t]\nsinkz: []\n",
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("invalid configuration"), "{stderr}");
    let (code, stdout, stderr) = run_engine(
        &["check"],
        "source:\n  url: postgres://cdc:pw_not_shown@127.0.0.1:1/shop\n  tables: [public.t]\nsinks:\n  - type: stdout\n",
    );
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("error: cannot check"), "{stderr}");
    assert!(!stderr.contains("pw_not_shown"), "{stderr}");
}

#[tokio::test]
async fn run_refuses_to_start_naming_every_blocking_problem() {
    let db = TestDb::create("chk_run").await;
    db.exec(
        "CREATE TABLE public.nokey (a int); CREATE TABLE public.t (id int PRIMARY KEY, body text)",
    )
    .await;
    let n = names();
    let yaml = pipeline(db.url(), &["public.nokey", "public.t", "public.nope"], &n)
        .create(true, false)
        .yaml();
    let mut engine = Engine::start(&yaml);
    let code = engine.try_wait_exit(Duration::from_secs(20)).await;
    if code.is_none() {
        engine.sigkill();
    }
    let stderr = engine.stderr_text();
    let report = engine.output_report();
    let slots = db.slot_names().await;
    db.cleanup().await;
    let code = code.unwrap_or_else(|| panic!("run kept running\n{report}"));
    assert_ne!(code, 0, "{report}");
    for needle in [
        "3 problem(s)",
        "ALTER TABLE \"public\".\"nokey\" REPLICA IDENTITY FULL;",
        "`public.nope` does not exist",
        &format!(
            "SELECT pg_create_logical_replication_slot('{}', 'pgoutput');",
            n.slot
        ),
        // The warning is logged.
        "column(s) body can be stored out of line (TOAST)",
    ] {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}\n{report}");
    }
    assert!(slots.is_empty(), "a slot was created: {slots:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_in_use_elsewhere_is_a_warning() {
    let db = TestDb::create("chk_busy").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY, n int)")
        .await;
    let n = names();
    let config = pipeline(db.url(), &["public.t"], &n).yaml();
    let mut engine = Engine::start(&config);
    let streaming = integration_tests::wait_until(Duration::from_secs(30), async || {
        db.slot_active(&n.slot).await
    })
    .await;
    let c = if streaming {
        Some(Checked::run(&config))
    } else {
        None
    };
    engine.stop(Duration::from_secs(20)).await;
    let report = engine.output_report();
    db.cleanup().await;
    let c = c.unwrap_or_else(|| panic!("the engine did not start streaming\n{report}"));
    c.assert_exit(0);
    c.assert_line(
        &format!("WARN slot {}:", n.slot),
        &[
            "is in use by another process (pid ",
            "run keeps retrying until it is released",
            "fix: stop the other process, or set source.slot.standby: true",
        ],
    );
}

#[tokio::test]
async fn a_publication_without_some_operations_is_a_warning() {
    let db = TestDb::create("chk_pubops").await;
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY)").await;
    let n = names();
    db.exec(&format!(
        "CREATE PUBLICATION {} FOR TABLE public.t WITH (publish = 'insert, update')",
        quote_ident(&n.publication)
    ))
    .await;
    let c = Checked::of(pipeline(db.url(), &["public.t"], &n).create(false, true));
    db.cleanup().await;
    c.assert_exit(0);
    c.assert_line(
        &format!("WARN publication {}:", n.publication),
        &[
            "does not publish delete, truncate",
            &format!(
                "fix: ALTER PUBLICATION \"{}\" SET (publish = 'insert, update, delete, truncate');",
                n.publication
            ),
        ],
    );
}

#[tokio::test]
async fn no_wal_sender_at_all_is_blocking() {
    let cluster = Cluster::start("max_wal_senders = 0").await;
    cluster
        .exec("postgres", "CREATE TABLE public.t (id int PRIMARY KEY)")
        .await;
    let n = names();
    let c = Checked::of(pipeline(&cluster.url("postgres"), &["public.t"], &n));
    c.assert_exit(1);
    c.assert_line(
        "FAIL max_wal_senders:",
        &[
            "is 0",
            "fix: ALTER SYSTEM SET max_wal_senders = 10; then restart PostgreSQL",
        ],
    );
}

#[tokio::test]
async fn every_wal_sender_in_use_is_a_warning() {
    let cluster = Cluster::start("max_wal_senders = 1").await;
    cluster
        .exec("postgres", "CREATE TABLE public.t (id int PRIMARY KEY)")
        .await;
    let url = cluster.url("postgres");
    // An engine streams and holds the only WAL sender.
    let busy = names();
    let engine = Engine::start(&pipeline(&url, &["public.t"], &busy).yaml());
    let streaming = integration_tests::wait_until(Duration::from_secs(60), async || {
        cluster.slot_streaming(&busy.slot).await
    })
    .await;
    assert!(streaming, "{}", engine.output_report());
    let n = names();
    let c = Checked::of(pipeline(&url, &["public.t"], &n));
    drop(engine);
    c.assert_exit(0);
    c.assert_line(
        "WARN max_wal_senders:",
        &[
            "all 1 WAL senders are in use",
            "fix: ALTER SYSTEM SET max_wal_senders = 10;",
        ],
    );
}

#[tokio::test]
async fn an_invalidated_slot_is_blocking() {
    let cluster = Cluster::start("max_slot_wal_keep_size = 1MB").await;
    cluster
        .exec(
            "postgres",
            "CREATE TABLE public.t (id int PRIMARY KEY); CREATE TABLE public.pad (x text)",
        )
        .await;
    let n = names();
    cluster
        .exec(
            "postgres",
            &format!(
                "SELECT pg_create_logical_replication_slot({}, 'pgoutput')",
                quote_literal(&n.slot)
            ),
        )
        .await;
    let lost = integration_tests::wait_until(Duration::from_secs(90), async || {
        cluster
            .exec(
                "postgres",
                "INSERT INTO public.pad SELECT repeat('x', 500) FROM generate_series(1, 5000);
                 SELECT pg_switch_wal(); CHECKPOINT;",
            )
            .await;
        let mut c = cluster.connect("postgres").await;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT wal_status::text FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&n.slot)
        .fetch_optional(&mut c)
        .await
        .unwrap_or(None);
        let _ = sqlx::Connection::close(c).await;
        status.as_deref() == Some("lost")
    })
    .await;
    assert!(lost, "the slot was not invalidated");
    let c = Checked::of(pipeline(&cluster.url("postgres"), &["public.t"], &n));
    c.assert_exit(1);
    c.assert_line(
        &format!("FAIL slot {}:", n.slot),
        &[
            "was invalidated",
            &format!("fix: SELECT pg_drop_replication_slot('{}');", n.slot),
        ],
    );
}

#[tokio::test]
async fn a_metadata_schema_without_usage_is_blocking() {
    let db = TestDb::create("chk_metausage").await;
    db.exec(
        "CREATE TABLE public.t (id int PRIMARY KEY);\
         CREATE SCHEMA chk_m; CREATE TABLE chk_m.snapshot_jobs (x int);\
         CREATE TABLE chk_m.snapshot_chunks (x int)",
    )
    .await;
    let role = TestRole::create(&db, "chk_nousage", "REPLICATION").await;
    let r = quote_ident(role.name());
    let n = names();
    let c = Checked::of(
        pipeline(role.url(), &["public.t"], &n)
            .snapshot("{ mode: initial, metadata_schema: chk_m }"),
    );
    db.cleanup().await;
    role.drop_role().await;
    c.assert_exit(1);
    c.assert_line(
        "FAIL metadata schema chk_m:",
        &[
            "has no USAGE on schema `chk_m`",
            &format!("fix: GRANT USAGE ON SCHEMA \"chk_m\" TO {r};"),
        ],
    );
}

/// Column lists and row filters: a column that does not exist, a key
/// column left out and a filter the server cannot parse are each one
/// blocking line; a pattern that matches nothing is a warning.
#[tokio::test]
async fn columns_row_filters_and_patterns_are_checked() {
    let db = TestDb::create("chk_subset").await;
    db.exec(
        "CREATE TABLE public.t (id int PRIMARY KEY, a int, b text);
         CREATE TABLE public.u (id int PRIMARY KEY, a int);",
    )
    .await;
    let n = names();
    let c = Checked::of(
        pipeline(db.url(), &["public.t", "public.u", "nowhere.*"], &n).source_lines(
            "  columns: { public.t: { exclude: [nope] }, public.u: { include: [a] } }\n  \
         row_filters: { public.t: \"a >>> 1\" }\n",
        ),
    );
    let version = db.server_version_num().await;
    db.cleanup().await;
    c.assert_exit(1);
    c.assert_line("WARN table pattern nowhere.*:", &["matches no table"]);
    // Patterns without incremental snapshots: a table created while the
    // engine runs loses the rows written before it is noticed.
    c.assert_line(
        "WARN source.discovery:",
        &[
            "created while the engine runs",
            "snapshot.incremental.enabled: true",
        ],
    );
    // Columns are checked on every version (before PostgreSQL 15 the
    // reader drops them itself).
    c.assert_line(
        "FAIL columns of public.t:",
        &["column(s) nope", "does not have"],
    );
    c.assert_line(
        "FAIL columns of public.u:",
        &["leaves out its key column(s) id"],
    );
    if version < 150_000 {
        // No row filters before PostgreSQL 15: one line says so instead
        // of checking them.
        c.assert_line("FAIL source.row_filters:", &["need PostgreSQL 15 or later"]);
        return;
    }
    c.assert_line(
        "FAIL row filter of public.t:",
        &["a >>> 1", "operator does not exist"],
    );
}
