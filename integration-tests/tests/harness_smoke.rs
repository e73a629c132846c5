//! Checks the test harness itself against the cluster of `CDC_TEST_PG_URL`.

use std::time::Duration;

use integration_tests::{pg_url, quote_ident, quote_literal, unique_suffix, wait_until, TestDb};
use serde_json::json;
use sqlx::Connection;

#[tokio::test]
async fn cluster_is_set_up_for_logical_replication() {
    let db = TestDb::create("harness_wal").await;
    let wal_level = db.query_text("SHOW wal_level").await;
    assert_eq!(wal_level.as_deref(), Some("logical"));
    let slots: i32 = db
        .query_text("SHOW max_replication_slots")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(slots >= 10, "max_replication_slots = {slots}");
    db.cleanup().await;
}

#[tokio::test]
async fn test_db_is_created_and_dropped_with_its_slots() {
    let db = TestDb::create("Harness Drop!").await;
    let name = db.name().to_owned();
    assert!(name.starts_with("harness_drop__"), "{name}");
    assert!(db.url().ends_with(&format!("/{name}")), "{}", db.url());

    // A slot of the database, held active by a replication connection, must
    // not keep cleanup from dropping it.
    let slot = format!("s_{}", unique_suffix());
    db.exec("CREATE PUBLICATION p FOR ALL TABLES").await;
    db.exec(&format!(
        "SELECT pg_create_logical_replication_slot({}, 'pgoutput')",
        quote_literal(&slot)
    ))
    .await;
    assert!(db.slot_exists(&slot).await);
    assert_eq!(db.slot_names().await, vec![slot.clone()]);
    let lsn = db.slot_confirmed_flush_lsn(&slot).await.expect("slot LSN");
    assert!(!lsn.is_zero());
    assert!(db.current_wal_lsn().await >= lsn);
    assert_eq!(db.slot_confirmed_flush_lsn("no_such_slot").await, None);

    // The builds of majors other than 15 have no client programs: Debian's
    // pg_recvlogical 15 talks to all of them.
    let mut recv_bin = format!("{}/pg_recvlogical", integration_tests::pg_bin());
    if !std::path::Path::new(&recv_bin).exists() {
        recv_bin = "/usr/lib/postgresql/15/bin/pg_recvlogical".into();
    }
    let mut recv = std::process::Command::new(recv_bin)
        .args([
            "--no-loop",
            "--start",
            "-f",
            "/dev/null",
            "-o",
            "proto_version=1",
        ])
        .args(["-o", "publication_names=p", "-S", &slot, "-d", db.url()])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pg_recvlogical");
    assert!(
        wait_until(Duration::from_secs(20), async || db
            .slot_active(&slot)
            .await)
        .await,
        "pg_recvlogical did not take the slot"
    );

    // Another connection to the database that cleanup must terminate.
    let mut other = sqlx::PgConnection::connect(db.url()).await.unwrap();
    sqlx::query("SELECT 1").execute(&mut other).await.unwrap();

    db.cleanup().await;

    let mut admin = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
    let still_there: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert!(!still_there, "database {name} was not dropped");
    let slot_left: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
    )
    .bind(&slot)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(!slot_left, "slot {slot} was not dropped");
    let _ = recv.kill();
    let _ = recv.wait();
}

#[tokio::test]
async fn dropping_a_test_db_without_cleanup_still_drops_it() {
    let name = {
        let db = TestDb::create("harness_implicit").await;
        db.name().to_owned()
    };
    let mut admin = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
    let gone = wait_until(Duration::from_secs(10), async || {
        !sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
        )
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
    })
    .await;
    assert!(gone, "database {name} was not dropped on drop");
}

#[tokio::test]
async fn to_jsonb_rows_keys_rows_by_json_text() {
    let db = TestDb::create("harness_jsonb").await;
    db.exec(
        r#"
        CREATE TABLE public.items (id int PRIMARY KEY, name text, price numeric(10,2), tags text[]);
        INSERT INTO public.items VALUES (1, 'apple', 1.50, '{red,fruit}'), (2, NULL, 10, '{}');
        CREATE SCHEMA "My Schema";
        CREATE TABLE "My Schema"."Codes" (code text PRIMARY KEY, n bigint);
        INSERT INTO "My Schema"."Codes" VALUES ('a"b', 9007199254740993);
        "#,
    )
    .await;

    let rows = db.to_jsonb_rows("public.items", "id").await;
    assert_eq!(rows.len(), 2);
    let expected: serde_json::Value = serde_json::from_str(
        r#"{"id": 1, "name": "apple", "price": 1.50, "tags": ["red", "fruit"]}"#,
    )
    .unwrap();
    assert_eq!(rows["1"], expected);
    // numeric keeps its scale (arbitrary_precision).
    assert_eq!(rows["1"]["price"].to_string(), "1.50");
    assert_eq!(rows["2"]["name"], serde_json::Value::Null);

    let table = format!("{}.{}", quote_ident("My Schema"), quote_ident("Codes"));
    let codes = db.to_jsonb_rows(&table, "code").await;
    let key = r#""a\"b""#;
    assert_eq!(codes.keys().collect::<Vec<_>>(), vec![key]);
    assert_eq!(codes[key]["n"].to_string(), "9007199254740993");

    let q = db
        .query_json("SELECT id, name FROM public.items ORDER BY id")
        .await;
    assert_eq!(
        q,
        vec![
            json!({"id": 1, "name": "apple"}),
            json!({"id": 2, "name": null})
        ]
    );

    let err = db.try_exec("SELECT * FROM no_such_table").await;
    assert!(err.is_err());
    db.cleanup().await;
}
