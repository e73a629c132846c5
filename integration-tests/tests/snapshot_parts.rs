//! The snapshot building blocks (`cdc_postgres::snapshot`) against a real
//! PostgreSQL 15:
//!
//! * `describe_table` builds the same schema the stream builds from a
//!   pgoutput Relation message;
//! * for every chunking strategy and table shape, the union of all chunks
//!   read with `read_chunk` is exactly the table (no row missing, none
//!   twice), each row rendered with `write_value` equal to `to_jsonb`;
//! * chunks read under an imported snapshot see the exported state only;
//! * a table (or a partition of it) rewritten after the export is told
//!   apart, and a rewrite waits for a read that checked first;
//! * the coordination tables: claims, heartbeats, takeover, completion.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cdc_core::encode::{write_json_string, write_value};
use cdc_core::{Lsn, Row, TableName, TableSchema};
use cdc_postgres::catalog::{describe_relation, RelationInfo};
use cdc_postgres::conn::ConnParams;
use cdc_postgres::ident::quote_table;
use cdc_postgres::pgoutput::{decode, Message};
use cdc_postgres::snapshot::{
    chunk_query, describe_table, plan_chunks, read_chunk, rewritten_since_snapshot, ChunkBounds,
    ChunkStrategy, ClaimedChunk, CopyFormat, Job, JobState, MetadataStore, Progress,
};
use integration_tests::chunk_reads::read_chunk_rows;
use integration_tests::multiset::{canonical, multiset_diff};
use integration_tests::{quote_literal, TestDb};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};
use tokio::sync::mpsc;
use tokio_util::bytes::Bytes;

// ---------------------------------------------------------------- helpers

/// A connection with the session settings every source connection pins.
async fn connect(db: &TestDb) -> PgConnection {
    let opts = ConnParams::parse(db.url()).unwrap().sqlx_options();
    PgConnection::connect_with(&opts)
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", db.name()))
}

async fn exec(conn: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A connection holding an exported snapshot open, and the snapshot's name.
async fn export_snapshot(db: &TestDb) -> (PgConnection, String) {
    let mut exporter = connect(db).await;
    exec(&mut exporter, "BEGIN ISOLATION LEVEL REPEATABLE READ").await;
    let snapshot = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut exporter)
        .await
        .unwrap();
    (exporter, snapshot)
}

/// Begins the transaction a snapshot reader runs in, importing `snapshot`
/// when given.
async fn begin_reader(conn: &mut PgConnection, snapshot: Option<&str>) {
    exec(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await;
    if let Some(id) = snapshot {
        exec(
            conn,
            &format!("SET TRANSACTION SNAPSHOT {}", quote_literal(id)),
        )
        .await;
    }
}

/// A snapshot row as a JSON object `{column: write_value(value)}`, in
/// column order.
fn render(schema: &TableSchema, row: &Row) -> Vec<u8> {
    assert_eq!(row.values().len(), schema.columns.len());
    let mut out = vec![b'{'];
    for (i, (c, v)) in schema.columns.iter().zip(row.values()).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(&mut out, &c.name);
        out.push(b':');
        write_value(&mut out, v);
    }
    out.push(b'}');
    out
}

/// [`render`]ed rows in [`canonical`] form, sorted.
fn canonical_rows(rendered: &[Vec<u8>]) -> Vec<String> {
    let mut out: Vec<String> = rendered
        .iter()
        .map(|raw| {
            let v: serde_json::Value = serde_json::from_slice(raw)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(raw)));
            canonical(&v)
        })
        .collect();
    out.sort();
    out
}

/// Every row of `sql_from` (a quoted table name or a subquery with an
/// alias) as `to_jsonb`, canonical and sorted.
async fn expected_rows(conn: &mut PgConnection, sql_from: &str) -> Vec<String> {
    let sql = format!("SELECT to_jsonb(t)::text FROM {sql_from} t");
    let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql.clone()))
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out: Vec<String> = rows
        .iter()
        .map(|t| canonical(&serde_json::from_str(t).unwrap()))
        .collect();
    out.sort();
    out
}

/// Reads `chunks` one after the other on `conn`, returning the
/// [`render`]ed rows (unsorted). Checks the batch sizes and the returned counts.
async fn read_chunks(
    conn: &mut PgConnection,
    info: &RelationInfo,
    chunks: &[ChunkBounds],
    rows_per_batch: usize,
) -> Vec<Vec<u8>> {
    let format = CopyFormat::Auto.for_table(&info.schema);
    let mut out = Vec::new();
    for bounds in chunks {
        let rows = read_chunk_rows(conn, info, bounds, format, rows_per_batch).await;
        out.extend(rows.iter().map(|r| render(&info.schema, r)));
    }
    out
}

fn assert_same_rows(got: &[Vec<u8>], expected: &[String], what: &str) {
    let got = canonical_rows(got);
    assert_eq!(got.len(), expected.len(), "{what}: row count");
    if let Some(d) = multiset_diff(&got, expected) {
        panic!("{what}: rows differ: {d}");
    }
}

/// The first range is unbounded below, the last unbounded above, and
/// consecutive ranges meet.
fn assert_contiguous(chunks: &[ChunkBounds]) {
    assert!(!chunks.is_empty());
    for pair in chunks.windows(2) {
        match (&pair[0], &pair[1]) {
            (ChunkBounds::Ctid { end_block, .. }, ChunkBounds::Ctid { start_block, .. }) => {
                assert_eq!(*end_block, Some(*start_block))
            }
            (ChunkBounds::IntKey { end, .. }, ChunkBounds::IntKey { start, .. }) => {
                assert!(end.is_some());
                assert_eq!(end, start);
            }
            (ChunkBounds::Keyset { end, .. }, ChunkBounds::Keyset { start, .. }) => {
                assert!(end.is_some());
                assert_eq!(end, start);
            }
            other => panic!("mixed chunk kinds: {other:?}"),
        }
    }
    match (chunks.first().unwrap(), chunks.last().unwrap()) {
        (ChunkBounds::Ctid { start_block, .. }, ChunkBounds::Ctid { end_block, .. }) => {
            assert_eq!((*start_block, *end_block), (0, None));
        }
        (ChunkBounds::IntKey { start, .. }, ChunkBounds::IntKey { end, .. }) => {
            assert_eq!((start, end), (&None, &None));
        }
        (ChunkBounds::Keyset { start, .. }, ChunkBounds::Keyset { end, .. }) => {
            assert_eq!((start, end), (&None, &None));
        }
        other => panic!("mixed chunk kinds: {other:?}"),
    }
}

/// What a table's rows must read as: every row as [`render`] printed it
/// in a read already compared with `to_jsonb`, sorted. Later reads are
/// compared with this (cheaply).
#[derive(Default)]
struct Reference {
    rendered: Option<Vec<Vec<u8>>>,
}

/// Plans `table` with `strategy` and reads every chunk in one
/// `REPEATABLE READ` transaction; the union must be the table exactly:
/// compared with `to_jsonb` the first time, with that read afterwards.
/// Returns the chunks.
async fn check_strategy(
    db: &TestDb,
    table: &TableName,
    strategy: ChunkStrategy,
    chunk_rows: u64,
    reference: &mut Reference,
) -> Vec<ChunkBounds> {
    let (mut conn, info, chunks) = plan(db, table, strategy, chunk_rows).await;
    assert_contiguous(&chunks);
    let mut got = read_chunks(&mut conn, &info, &chunks, 1000).await;
    let what = format!("{table} {strategy:?} ({} chunks)", chunks.len());
    match &reference.rendered {
        None => {
            let expected = expected_rows(&mut conn, &quote_table(table)).await;
            assert_same_rows(&got, &expected, &what);
            got.sort();
            reference.rendered = Some(got);
        }
        Some(rendered) => {
            got.sort();
            assert_eq!(got.len(), rendered.len(), "{what}: row count");
            assert!(got == *rendered, "{what}: rows differ from the first read");
        }
    }
    exec(&mut conn, "COMMIT").await;
    chunks
}

/// The chunks `strategy` plans for `table`, with the table as described
/// and the connection whose reader transaction planned them (still open).
async fn plan(
    db: &TestDb,
    table: &TableName,
    strategy: ChunkStrategy,
    chunk_rows: u64,
) -> (PgConnection, RelationInfo, Vec<ChunkBounds>) {
    let mut conn = connect(db).await;
    begin_reader(&mut conn, None).await;
    let info = describe_table(&mut conn, db.name(), table).await.unwrap();
    let chunks = plan_chunks(&mut conn, &info, strategy, chunk_rows)
        .await
        .unwrap_or_else(|e| panic!("planning {table} with {strategy:?}: {e}"));
    (conn, info, chunks)
}

/// The chunks `strategy` plans for `table`, in a transaction of its own.
async fn plan_only(
    db: &TestDb,
    table: &TableName,
    strategy: ChunkStrategy,
    chunk_rows: u64,
) -> Vec<ChunkBounds> {
    let (mut conn, _, chunks) = plan(db, table, strategy, chunk_rows).await;
    exec(&mut conn, "COMMIT").await;
    chunks
}

/// Columns with awkward values, for the tables of up to a few thousand rows.
const VALUE_COLUMNS: &str = "v_text text, v_arr text[], v_num numeric, v_ts timestamptz, \
                             v_null int, v_json jsonb, v_bytea bytea";

/// SQL expressions for [`VALUE_COLUMNS`] from the integer `i`.
const VALUE_EXPRS: &str = r#"
    CASE WHEN i % 11 = 0 THEN NULL
         ELSE 'r' || i || E'\ttab\nnl\\bs\rcr \\N ünï 😀 "q" ''s' END,
    CASE WHEN i % 13 = 0 THEN NULL
         ELSE ARRAY['a' || i, NULL, E'x\ty', 'q"uote', E'back\\slash', '', 'NULL', 'sp ace', '{}'] END,
    (i * 1.25)::numeric,
    '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 minute 0.5 seconds',
    NULL,
    jsonb_build_object('i', i, 's', E'a\tb\\c', 'f', 1.50),
    decode(md5(i::text), 'hex')"#;

/// Lighter columns for the 50k-row tables (parsing and comparing the
/// awkward ones 50k times only slows the debug-build test down).
const LIGHT_COLUMNS: &str = "v_text text, v_int int";

/// SQL expressions for [`LIGHT_COLUMNS`] from the integer `i`.
const LIGHT_EXPRS: &str = r#"
    CASE WHEN i % 11 = 0 THEN NULL ELSE 'r' || i || E'\t\\ ünï' END,
    CASE WHEN i % 5 = 0 THEN NULL ELSE i END"#;

/// Creates `name` with `key_columns` (a column list, possibly empty, with
/// the key constraint) and the value columns (light ones for more than
/// 10,000 rows), filled with rows 1..=n; autovacuum off, so statistics are
/// only there after an explicit `ANALYZE`.
async fn create_filled(db: &TestDb, name: &str, key_columns: &str, key_exprs: &str, n: i64) {
    let (columns, exprs) = if n > 10_000 {
        (LIGHT_COLUMNS, LIGHT_EXPRS)
    } else {
        (VALUE_COLUMNS, VALUE_EXPRS)
    };
    db.exec(&format!(
        "CREATE TABLE {name} ({key_columns}{columns}) WITH (autovacuum_enabled = false);
         INSERT INTO {name} SELECT {key_exprs}{exprs} FROM generate_series(1, {n}) AS i;"
    ))
    .await;
}

async fn reltuples(db: &TestDb, name: &str) -> f64 {
    let t = db
        .query_text(&format!(
            "SELECT reltuples::text FROM pg_class WHERE oid = {}::regclass",
            quote_literal(name)
        ))
        .await
        .unwrap();
    t.parse().unwrap()
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn describe_table_matches_the_relation_message() {
    let db = TestDb::create("snap_describe").await;
    db.exec(
        r#"
        CREATE TYPE mood AS ENUM ('sad', 'ok');
        CREATE DOMAIN posint AS int CHECK (VALUE > 0);
        CREATE SCHEMA "Odd Schema";
        CREATE TABLE t_pk (
            id int8 PRIMARY KEY, drop_me int, name text NOT NULL, tags text[], m mood,
            d posint, g int8 GENERATED ALWAYS AS (id * 2) STORED, ts timestamptz(3),
            v varchar(12), n numeric(10,2), c char(4), arr_m mood[]);
        ALTER TABLE t_pk DROP COLUMN drop_me;
        CREATE TABLE t_full (a int, b text NOT NULL);
        ALTER TABLE t_full REPLICA IDENTITY FULL;
        CREATE TABLE t_idx (a int NOT NULL, b text NOT NULL, c int);
        CREATE UNIQUE INDEX t_idx_ba ON t_idx (b, a);
        ALTER TABLE t_idx REPLICA IDENTITY USING INDEX t_idx_ba;
        CREATE TABLE t_none (a int, b text);
        CREATE TABLE t_nothing (a int PRIMARY KEY, b text);
        ALTER TABLE t_nothing REPLICA IDENTITY NOTHING;
        CREATE TABLE t_pk_full (k1 int, k2 text, v text, PRIMARY KEY (k2, k1));
        ALTER TABLE t_pk_full REPLICA IDENTITY FULL;
        CREATE TABLE "Odd Schema"."Mixed ""Case""" ("Weird ""col""" int PRIMARY KEY, "x y" text);
        CREATE PUBLICATION p FOR ALL TABLES;
        "#,
    )
    .await;
    db.exec("SELECT pg_create_logical_replication_slot('snap_describe', 'pgoutput')")
        .await;
    db.exec(
        r#"
        INSERT INTO t_pk (id, name, tags, m, d) VALUES (1, 'x', '{a}', 'ok', 3);
        INSERT INTO t_full VALUES (1, 'x');
        INSERT INTO t_idx VALUES (1, 'x', 2);
        INSERT INTO t_none VALUES (1, 'x');
        INSERT INTO t_nothing VALUES (1, 'x');
        INSERT INTO t_pk_full VALUES (1, 'x', 'y');
        INSERT INTO "Odd Schema"."Mixed ""Case""" VALUES (1, 'x');
        "#,
    )
    .await;

    let mut conn = connect(&db).await;
    let changes: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT data FROM pg_logical_slot_peek_binary_changes('snap_describe', NULL, NULL, \
         'proto_version', '1', 'publication_names', 'p')",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let relations: Vec<_> = changes
        .into_iter()
        .filter_map(|data| match decode(&Bytes::from(data)).unwrap() {
            Message::Relation(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(relations.len(), 7, "{relations:#?}");

    for rel in &relations {
        let from_stream = describe_relation(&mut conn, db.name(), rel).await.unwrap();
        let table = TableName::new(rel.namespace.clone(), rel.name.clone());
        let from_catalog = describe_table(&mut conn, db.name(), &table).await.unwrap();
        assert_eq!(*from_catalog.schema, *from_stream.schema, "{table}");
        assert_eq!(from_catalog.types, from_stream.types, "{table}");
    }

    // Spot checks of what equality above covers.
    let pk = describe_table(&mut conn, db.name(), &TableName::new("public", "t_pk"))
        .await
        .unwrap();
    let names: Vec<&str> = pk.schema.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["id", "name", "tags", "m", "d", "ts", "v", "n", "c", "arr_m"]
    );
    let keys: Vec<usize> = pk.schema.key_indices().collect();
    assert_eq!(keys, [0]);
    let idx = describe_table(&mut conn, db.name(), &TableName::new("public", "t_idx"))
        .await
        .unwrap();
    let keys: Vec<usize> = idx.schema.key_indices().collect();
    assert_eq!(keys, [0, 1]);

    let err = describe_table(&mut conn, db.name(), &TableName::new("public", "nope"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    drop(conn);
    db.cleanup().await;
}

#[tokio::test]
async fn every_strategy_reads_every_row_once() {
    let db = TestDb::create("snap_strategies").await;
    let sizes = [("0", 0), ("1", 1), ("mid", 3_000), ("big", 50_000)];
    for (suffix, n) in sizes {
        create_filled(&db, &format!("nokey_{suffix}"), "i int, ", "i, ", n).await;
        create_filled(
            &db,
            &format!("intkey_{suffix}"),
            "id int8 PRIMARY KEY, ",
            "i * 3 - 100, ",
            n,
        )
        .await;
        create_filled(
            &db,
            &format!("comp_{suffix}"),
            "a int, b text, PRIMARY KEY (a, b), ",
            r"i % 97, 'k' || i || E' \\ '' \t,', ",
            n,
        )
        .await;
        create_filled(
            &db,
            &format!("uuidk_{suffix}"),
            "u uuid PRIMARY KEY, ",
            "md5(i::text)::uuid, ",
            n,
        )
        .await;
    }
    let t = |name: &str| TableName::new("public", name);
    let mut references: HashMap<String, Reference> = HashMap::new();

    for analyzed in [false, true] {
        if analyzed {
            db.exec("ANALYZE").await;
            assert_eq!(reltuples(&db, "nokey_big").await, 50_000.0);
        } else {
            // Never analyzed: planning falls back to its default density.
            assert_eq!(reltuples(&db, "nokey_big").await, -1.0);
            assert_eq!(reltuples(&db, "intkey_big").await, -1.0);
        }
        for (suffix, rows) in sizes {
            let chunk_rows = match rows {
                50_000 => 7_000,
                3_000 => 400,
                _ => 1_000,
            };
            let many = |chunks: &[ChunkBounds], what: &str| {
                if rows > 1 {
                    let n = chunks.len();
                    assert!(n >= 3, "{what}: only {n} chunks (analyzed: {analyzed})");
                }
            };
            let [nokey, intkey, comp, uuidk] =
                ["nokey", "intkey", "comp", "uuidk"].map(|p| t(&format!("{p}_{suffix}")));

            // CTID ranges (size estimates depend on the statistics), and
            // Auto plans exactly the same.
            for table in [&nokey, &intkey, &comp, &uuidk] {
                let reference = references.entry(table.name.clone()).or_default();
                let chunks =
                    check_strategy(&db, table, ChunkStrategy::Ctid, chunk_rows, reference).await;
                many(&chunks, &table.name);
                let auto = plan_only(&db, table, ChunkStrategy::Auto, chunk_rows).await;
                assert_eq!(auto, chunks, "{table}: Auto is CTID");
            }
            // Integer ranges (width from the statistics too).
            let reference = references.entry(intkey.name.clone()).or_default();
            let chunks =
                check_strategy(&db, &intkey, ChunkStrategy::IntKey, chunk_rows, reference).await;
            many(&chunks, "intkey int_key");
            // Keyset boundaries come from the data, not the statistics:
            // once is enough.
            if analyzed {
                for table in [&intkey, &comp, &uuidk] {
                    let reference = references.entry(table.name.clone()).or_default();
                    let chunks =
                        check_strategy(&db, table, ChunkStrategy::Keyset, chunk_rows, reference)
                            .await;
                    many(&chunks, &format!("{} keyset", table.name));
                }
            }
        }
    }

    // Strategies that need a key refuse tables without a fitting one.
    let mut conn = connect(&db).await;
    for (table, strategy) in [
        ("nokey_1", ChunkStrategy::IntKey),
        ("nokey_1", ChunkStrategy::Keyset),
        ("comp_1", ChunkStrategy::IntKey),
        ("uuidk_1", ChunkStrategy::IntKey),
    ] {
        let info = describe_table(&mut conn, db.name(), &t(table))
            .await
            .unwrap();
        let err = plan_chunks(&mut conn, &info, strategy, 100)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("cannot chunk public.") && msg.contains(table),
            "{table} {strategy:?}: {msg}"
        );
    }
    drop(conn);
    db.cleanup().await;
}

#[tokio::test]
async fn quoted_names_and_a_toasted_value() {
    let db = TestDb::create("snap_odd").await;
    db.exec(
        r#"
        CREATE SCHEMA "Odd Schema";
        CREATE TABLE "Odd Schema"."Mixed ""Case""" (
            "Weird ""col""" int PRIMARY KEY, "x y" text, "Tab	Col" text[]);
        INSERT INTO "Odd Schema"."Mixed ""Case"""
            SELECT i, 'v' || i || E'\t\n\\', ARRAY[E'\\N', NULL, i::text]
            FROM generate_series(1, 500) AS i;
        CREATE TABLE big (id int PRIMARY KEY, body text);
        INSERT INTO big
            SELECT 1, string_agg(md5(g::text) || E'\t\\\n', '') FROM generate_series(1, 145000) g;
        INSERT INTO big VALUES (2, 'small'), (3, NULL);
        "#,
    )
    .await;
    let odd = TableName::new("Odd Schema", "Mixed \"Case\"");
    let mut reference = Reference::default();
    for strategy in [
        ChunkStrategy::Auto,
        ChunkStrategy::Ctid,
        ChunkStrategy::IntKey,
        ChunkStrategy::Keyset,
    ] {
        let chunks = check_strategy(&db, &odd, strategy, 100, &mut reference).await;
        assert!(chunks.len() >= 2, "{strategy:?}: {chunks:?}");
    }

    let size: i64 = db
        .query_text("SELECT octet_length(body)::text FROM big WHERE id = 1")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(size > 5_000_000, "{size}");
    let toast: i64 = db
        .query_text(
            "SELECT pg_relation_size(reltoastrelid)::text FROM pg_class WHERE relname = 'big'",
        )
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(toast > 0, "the value is not TOASTed");
    let big = TableName::new("public", "big");
    let mut reference = Reference::default();
    for strategy in [
        ChunkStrategy::Ctid,
        ChunkStrategy::IntKey,
        ChunkStrategy::Keyset,
    ] {
        check_strategy(&db, &big, strategy, 1, &mut reference).await;
    }

    // The statement itself: every identifier quoted.
    let mut conn = connect(&db).await;
    let info = describe_table(&mut conn, db.name(), &odd).await.unwrap();
    let sql = chunk_query(
        &info.schema,
        &ChunkBounds::Keyset {
            columns: vec!["Weird \"col\"".into()],
            start: Some(vec!["1".into()]),
            end: None,
        },
    );
    assert_eq!(
        sql,
        "COPY (SELECT \"Weird \"\"col\"\"\", \"x y\", \"Tab\tCol\" FROM \"Odd Schema\".\"Mixed \"\"Case\"\"\" \
         WHERE \"Weird \"\"col\"\"\" >= '1') TO STDOUT"
    );
    drop(conn);
    db.cleanup().await;
}

#[tokio::test]
async fn chunks_read_under_an_exported_snapshot_see_only_its_rows() {
    let db = TestDb::create("snap_export").await;
    db.exec(
        "CREATE TABLE exp (id int PRIMARY KEY, v text);
         INSERT INTO exp SELECT i, 'v' || i FROM generate_series(1, 20000) AS i;",
    )
    .await;
    let (mut exporter, snapshot) = export_snapshot(&db).await;
    let mut plain = connect(&db).await;
    let expected = expected_rows(&mut plain, "exp").await;

    // Changes after the export: none of them may be seen.
    db.exec("INSERT INTO exp SELECT i, 'new' FROM generate_series(20001, 26000) AS i")
        .await;
    db.exec("UPDATE exp SET v = 'changed' WHERE id % 10 = 0")
        .await;
    db.exec("DELETE FROM exp WHERE id % 7 = 0").await;
    assert_ne!(expected_rows(&mut plain, "exp").await, expected);

    let table = TableName::new("public", "exp");
    for strategy in [
        ChunkStrategy::Ctid,
        ChunkStrategy::IntKey,
        ChunkStrategy::Keyset,
    ] {
        let mut a = connect(&db).await;
        let mut b = connect(&db).await;
        begin_reader(&mut a, Some(&snapshot)).await;
        begin_reader(&mut b, Some(&snapshot)).await;
        let info = describe_table(&mut a, db.name(), &table).await.unwrap();
        let chunks = plan_chunks(&mut a, &info, strategy, 2_000).await.unwrap();
        assert!(chunks.len() >= 4, "{strategy:?}: {} chunks", chunks.len());
        assert_contiguous(&chunks);
        let even: Vec<ChunkBounds> = chunks.iter().step_by(2).cloned().collect();
        let odd: Vec<ChunkBounds> = chunks.iter().skip(1).step_by(2).cloned().collect();
        let (mut got, more) = tokio::join!(
            read_chunks(&mut a, &info, &even, 700),
            read_chunks(&mut b, &info, &odd, 700)
        );
        got.extend(more);
        assert_same_rows(&got, &expected, &format!("exported snapshot, {strategy:?}"));
        exec(&mut a, "COMMIT").await;
        exec(&mut b, "COMMIT").await;
    }
    exec(&mut exporter, "COMMIT").await;
    drop((exporter, plain));
    db.cleanup().await;
}

/// `rewritten_since_snapshot` under a snapshot exported before `ALTER …
/// TYPE`, `VACUUM FULL` of a partition two levels down, and `TRUNCATE`
/// finds each table (the partitioned one through its partition) rewritten,
/// and not a table whose change did not rewrite it; under a snapshot taken
/// later, none. A rewrite issued after the check waits for the reading
/// transaction, which reads every row of the old file.
#[tokio::test]
async fn rewrites_after_the_export_are_found_and_later_ones_wait() {
    let db = TestDb::create("snap_rewrite").await;
    db.exec(
        "CREATE TABLE rw (id int, v text);
         INSERT INTO rw SELECT i, 'v' FROM generate_series(1, 1000) AS i;
         CREATE TABLE pt (id int, v text) PARTITION BY RANGE (id);
         CREATE TABLE pt_a PARTITION OF pt FOR VALUES FROM (0) TO (500);
         CREATE TABLE pt_b PARTITION OF pt FOR VALUES FROM (500) TO (2000) PARTITION BY RANGE (id);
         CREATE TABLE pt_b1 PARTITION OF pt_b FOR VALUES FROM (500) TO (2000);
         INSERT INTO pt SELECT i, 'v' FROM generate_series(1, 1000) AS i;
         CREATE TABLE tr (id int);
         INSERT INTO tr SELECT generate_series(1, 10);
         CREATE TABLE other (id int, v text);
         INSERT INTO other SELECT i, 'v' FROM generate_series(1, 1000) AS i;",
    )
    .await;
    let names = ["rw", "pt", "tr", "other"];
    let (mut exporter, snapshot) = export_snapshot(&db).await;
    let mut reader = connect(&db).await;
    let mut infos = Vec::new();
    let mut files = Vec::new();
    for name in names {
        begin_reader(&mut reader, Some(&snapshot)).await;
        let info = describe_table(&mut reader, db.name(), &TableName::new("public", name))
            .await
            .unwrap();
        let heap = rewritten_since_snapshot(&mut reader, &info.schema)
            .await
            .unwrap();
        assert!(!heap.rewritten, "{name} before any rewrite");
        // The partitioned table's two leaves; each other table itself.
        let leaves = if name == "pt" { 2 } else { 1 };
        assert_eq!(heap.files.split(',').count(), leaves, "{name}: {heap:?}");
        exec(&mut reader, "COMMIT").await;
        infos.push(info);
        files.push(heap.files);
    }

    db.exec("ALTER TABLE rw ALTER COLUMN id TYPE bigint").await;
    db.exec("VACUUM FULL pt_b1").await;
    db.exec("TRUNCATE tr").await;
    db.exec("ALTER TABLE other ALTER COLUMN v SET DEFAULT 'x'")
        .await;
    for ((name, info), before) in names.iter().zip(&infos).zip(&files) {
        begin_reader(&mut reader, Some(&snapshot)).await;
        let rewritten = rewritten_since_snapshot(&mut reader, &info.schema)
            .await
            .unwrap()
            .rewritten;
        assert_eq!(rewritten, *name != "other", "{name} under the old snapshot");
        exec(&mut reader, "COMMIT").await;
        begin_reader(&mut reader, None).await;
        let heap = rewritten_since_snapshot(&mut reader, &info.schema)
            .await
            .unwrap();
        assert!(!heap.rewritten, "{name} under a later snapshot");
        // Reads before and after the rewrite name other files.
        assert_eq!(heap.files != *before, *name != "other", "{name}: {heap:?}");
        exec(&mut reader, "COMMIT").await;
    }
    // What the old snapshot sees of the rewritten table: nothing.
    begin_reader(&mut reader, Some(&snapshot)).await;
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM rw")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    assert_eq!(seen, 0);
    exec(&mut reader, "COMMIT").await;

    // A rewrite after the check waits for the reading transaction.
    let other = &infos[3].schema;
    begin_reader(&mut reader, Some(&snapshot)).await;
    assert!(
        !rewritten_since_snapshot(&mut reader, other)
            .await
            .unwrap()
            .rewritten
    );
    let mut rewriter = connect(&db).await;
    let vacuum = tokio::spawn(async move {
        exec(&mut rewriter, "VACUUM FULL other").await;
        rewriter
    });
    let waiting = integration_tests::wait_until(Duration::from_secs(30), async || {
        db.query_text(
            "SELECT count(*)::text FROM pg_locks WHERE NOT granted AND relation = 'public.other'::regclass",
        )
        .await
        .as_deref()
            == Some("1")
    })
    .await;
    assert!(waiting, "VACUUM FULL did not wait for the reader's lock");
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM other")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    assert_eq!(seen, 1000);
    assert!(
        !rewritten_since_snapshot(&mut reader, other)
            .await
            .unwrap()
            .rewritten
    );
    exec(&mut reader, "COMMIT").await;
    let rewriter = vacuum.await.unwrap();
    exec(&mut exporter, "COMMIT").await;
    drop((exporter, reader, rewriter));
    db.cleanup().await;
}

// ---------------------------------------------------------- metadata

fn sample_chunks() -> Vec<ChunkBounds> {
    vec![
        ChunkBounds::Ctid {
            start_block: 0,
            end_block: Some(10),
        },
        ChunkBounds::Ctid {
            start_block: u32::MAX - 1,
            end_block: None,
        },
        ChunkBounds::IntKey {
            column: "id".into(),
            start: Some(i64::MIN),
            end: Some(i64::MAX),
        },
        ChunkBounds::IntKey {
            column: "Odd \"c\"".into(),
            start: None,
            end: None,
        },
        ChunkBounds::Keyset {
            columns: vec!["a\"b".into(), "c d".into()],
            start: Some(vec!["1".into(), "it's \t \\ \"q\" \n ünï 😀 \u{1}".into()]),
            end: None,
        },
        ChunkBounds::Keyset {
            columns: vec!["k".into()],
            start: None,
            end: Some(vec![String::new()]),
        },
    ]
}

/// Once the coordination tables exist, a role without `CREATE` on the
/// database can use them: PostgreSQL checks that privilege before it looks
/// at `IF NOT EXISTS`, so the store must not run its DDL again.
#[tokio::test]
async fn metadata_tables_need_create_only_the_first_time() {
    let db = TestDb::create("snap_meta_priv").await;
    let mut admin = connect(&db).await;
    let store = MetadataStore::new("cdc");
    store.ensure_schema(&mut admin).await.unwrap();
    let role = format!("nocreate_{}", integration_tests::unique_suffix());
    let password = "Pw_nocreate_1";
    exec(
        &mut admin,
        &format!(
            "CREATE ROLE {r} LOGIN PASSWORD '{password}';
             REVOKE CREATE ON DATABASE {d} FROM PUBLIC;
             GRANT USAGE ON SCHEMA cdc TO {r};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA cdc TO {r};
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA cdc TO {r};",
            r = integration_tests::quote_ident(&role),
            d = integration_tests::quote_ident(db.name()),
        ),
    )
    .await;
    let url = format!(
        "postgres://{role}:{password}@{}",
        db.url().split_once('@').map(|(_, rest)| rest).unwrap()
    );
    let opts = ConnParams::parse(&url).unwrap().sqlx_options();
    let mut limited = PgConnection::connect_with(&opts).await.unwrap();
    let can_create: bool =
        sqlx::query_scalar("SELECT has_database_privilege(current_database(), 'CREATE')")
            .fetch_one(&mut limited)
            .await
            .unwrap();
    assert!(!can_create, "the test role must not have CREATE");
    store.ensure_schema(&mut limited).await.unwrap();
    store
        .create_job(&mut limited, "slot_p", "snap", Lsn(1), "a")
        .await
        .unwrap();
    drop(limited);
    exec(
        &mut admin,
        &format!(
            "DROP OWNED BY {r}; DROP ROLE {r};",
            r = integration_tests::quote_ident(&role)
        ),
    )
    .await;
    db.cleanup().await;
}

/// A [`MetadataStore`] on a connection of its own, for the job of one
/// slot: what the store's tests call (see [`store_calls`]).
struct Meta {
    store: MetadataStore,
    conn: PgConnection,
    slot: &'static str,
}

impl Meta {
    async fn new(db: &TestDb, store: MetadataStore, slot: &'static str) -> Meta {
        Meta {
            store,
            conn: connect(db).await,
            slot,
        }
    }
}

/// Methods of [`Meta`], each calling the store's method of the same name
/// on the connection (`[slot] fn`: with the slot first) and unwrapping its
/// answer.
macro_rules! store_calls {
    ($($([$slot:ident])? fn $name:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {
        impl Meta {
            $(async fn $name(&mut self, $($arg: $ty),*) -> $out {
                let answer = self.store.$name(&mut self.conn, $(self.$slot,)? $($arg),*).await;
                answer.unwrap()
            })*
        }
    };
}

store_calls! {
    [slot] fn create_job(snapshot_name: &str, lsn: Lsn, coordinator: &str) -> Job;
    [slot] fn job() -> Option<Job>;
    [slot] fn set_job_state(state: JobState) -> bool;
    [slot] fn set_snapshot(snapshot_name: &str, coordinator: &str) -> bool;
    [slot] fn delete_job() -> bool;
    [slot] fn insert_chunks(table: &TableName, chunks: &[ChunkBounds]) -> u64;
    [slot] fn claim_chunk(instance: &str, timeout: Duration) -> Option<ClaimedChunk>;
    fn heartbeat(id: i64, instance: &str, attempt: u32) -> bool;
    fn release_chunk(id: i64, instance: &str, attempt: u32) -> bool;
    fn mark_done(id: i64, instance: &str, attempt: u32, rows: u64, read_from: Option<&str>) -> bool;
    [slot] fn reread_table(table: &TableName) -> Option<u64>;
    [slot] fn progress() -> Progress;
    [slot] fn all_done() -> bool;
}

#[tokio::test]
async fn metadata_claims_heartbeats_and_completion() {
    let db = TestDb::create("snap_meta").await;
    let mut meta = Meta::new(&db, MetadataStore::new("Meta \"Schema\""), "slot_a").await;
    meta.store.ensure_schema(&mut meta.conn).await.unwrap();
    meta.store.ensure_schema(&mut meta.conn).await.unwrap();

    assert_eq!(meta.job().await, None);
    let lsn: Lsn = "16/B374D848".parse().unwrap();
    let job = meta.create_job("00000003-00000002-1", lsn, "inst-a").await;
    assert_eq!(job.state, JobState::Planning);
    assert_eq!(job.snapshot_lsn, Some(lsn));
    assert_eq!(job.snapshot_name.as_deref(), Some("00000003-00000002-1"));
    assert_eq!(job.coordinator.as_deref(), Some("inst-a"));
    assert_eq!(job.finished_at, None);

    let t1 = TableName::new("public", "t1");
    let t2 = TableName::new("Odd Schema", "Mixed \"Case\"");
    let chunks = sample_chunks();
    assert_eq!(meta.insert_chunks(&t1, &chunks).await, chunks.len() as u64);
    // Idempotent by chunk number.
    assert_eq!(meta.insert_chunks(&t1, &chunks).await, 0);
    let t2_chunks = [ChunkBounds::Ctid {
        start_block: 0,
        end_block: None,
    }];
    meta.insert_chunks(&t2, &t2_chunks).await;
    let job = meta.job().await.unwrap();
    assert_eq!((job.tables_total, job.chunks_total), (2, 7));
    assert!(!meta.all_done().await);

    // Claims come in id order, with their bounds intact through jsonb.
    let timeout = Duration::from_secs(60);
    let mut claimed = Vec::new();
    for (i, expected) in chunks.iter().enumerate() {
        let c = meta.claim_chunk("inst-a", timeout).await.unwrap();
        assert_eq!(&c.bounds, expected);
        assert_eq!(c.table, t1);
        assert_eq!(c.chunk_no as usize, i);
        assert_eq!((c.attempts, c.reads), (1, 1));
        claimed.push(c);
    }
    let last = meta.claim_chunk("inst-b", timeout).await.unwrap();
    assert_eq!(last.table, t2);
    assert_eq!(meta.claim_chunk("inst-b", timeout).await, None);

    // Heartbeat and mark_done only work for the claimant, under its claim.
    let first = claimed[0].id;
    assert!(meta.heartbeat(first, "inst-a", 1).await);
    assert!(!meta.heartbeat(first, "inst-b", 1).await);
    assert!(!meta.heartbeat(first, "inst-a", 2).await);
    assert!(!meta.mark_done(first, "inst-b", 1, 5, None).await);
    assert!(!meta.mark_done(first, "inst-a", 2, 5, None).await);
    assert!(meta.mark_done(first, "inst-a", 1, 5, None).await);
    // A retried mark_done is accepted and counted once.
    assert!(meta.mark_done(first, "inst-a", 1, 5, None).await);
    assert!(!meta.heartbeat(first, "inst-a", 1).await);

    // A released chunk goes back to the pool at once.
    let second = claimed[1].id;
    assert!(!meta.release_chunk(second, "inst-b", 1).await);
    assert!(meta.release_chunk(second, "inst-a", 1).await);
    let again = meta.claim_chunk("inst-b", timeout).await.unwrap();
    assert_eq!(again.id, second);
    assert_eq!((again.attempts, again.reads), (2, 2));
    claimed[1] = again.clone();

    // A chunk claimed again by another reader of the same instance fences
    // the first claim: same instance, new attempt.
    let third = claimed[2].id;
    let schema = integration_tests::quote_ident(meta.store.schema());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "UPDATE {schema}.snapshot_chunks SET heartbeat_at = now() - interval '1 hour' WHERE id = {third}"
    )))
    .execute(&mut meta.conn)
    .await
    .unwrap();
    let reclaimed = meta.claim_chunk("inst-a", timeout).await.unwrap();
    assert_eq!((reclaimed.id, reclaimed.attempts), (third, 2));
    assert!(!meta.heartbeat(third, "inst-a", 1).await);
    assert!(!meta.mark_done(third, "inst-a", 1, 10, None).await);
    assert!(!meta.release_chunk(third, "inst-a", 1).await);
    assert!(meta.heartbeat(third, "inst-a", 2).await);
    claimed[2] = reclaimed;

    for c in claimed.iter().skip(1) {
        let owner = if c.id == second { "inst-b" } else { "inst-a" };
        assert!(meta.mark_done(c.id, owner, c.attempts, 10, None).await);
    }
    let progress = meta.progress().await;
    assert_eq!(progress.tables.len(), 2);
    assert_eq!(progress.totals(), (6, 7, 55));
    // Still planning: never "all done", whatever the chunks say.
    assert!(meta.mark_done(last.id, "inst-b", 1, 1, None).await);
    assert!(!meta.all_done().await);
    assert!(meta.set_job_state(JobState::Running).await);
    assert!(meta.all_done().await);
    let progress = meta.progress().await;
    assert_eq!(progress.totals(), (7, 7, 56));
    let by_table: Vec<_> = progress
        .tables
        .iter()
        .map(|p| (p.table.clone(), p.chunks_done, p.chunks_total, p.rows))
        .collect();
    assert_eq!(
        by_table,
        vec![(t2.clone(), 1, 1, 1), (t1.clone(), 6, 6, 55)]
    );

    // A table found rewritten starts over: every chunk of it pending again
    // (done ones too), their counts off the job, the snapshot name cleared
    // (for the coordinator to export a new one); the other table is kept.
    assert_eq!(meta.reread_table(&t1).await, Some(6));
    let job = meta.job().await.unwrap();
    assert_eq!(job.snapshot_name, None);
    assert_eq!(job.state, JobState::Running);
    assert_eq!((job.chunks_done, job.rows_done), (1, 1));
    assert_eq!(meta.progress().await.totals(), (1, 7, 1));
    assert!(!meta.all_done().await);
    // Until a new snapshot is recorded, another reader finding the same
    // rewrite changes nothing; one finding another table rewritten starts
    // that one over too.
    assert_eq!(meta.reread_table(&t1).await, None);
    assert_eq!(meta.progress().await.totals(), (1, 7, 1));
    assert_eq!(meta.reread_table(&t2).await, Some(1));
    let job = meta.job().await.unwrap();
    assert_eq!((job.chunks_done, job.rows_done), (0, 0));
    assert!(meta.set_snapshot("00000004-00000002-1", "inst-a").await);
    // A claim held when the table starts over (again) can no longer
    // complete or renew its chunk.
    let held = meta.claim_chunk("inst-a", timeout).await.unwrap();
    assert_eq!(held.table, t1);
    assert_eq!(meta.reread_table(&t1).await, Some(6));
    assert!(
        !meta
            .mark_done(held.id, "inst-a", held.attempts, 5, None)
            .await
    );
    assert!(!meta.heartbeat(held.id, "inst-a", held.attempts).await);
    assert_eq!(
        meta.store
            .reread_table(&mut meta.conn, "no_such_slot", &t1)
            .await
            .unwrap(),
        None
    );
    // Read again, the job is complete with the same counts as before.
    while let Some(c) = meta.claim_chunk("inst-a", timeout).await {
        let rows = match (c.table == t2, c.chunk_no) {
            (true, _) => 1,
            (false, 0) => 5,
            (false, _) => 10,
        };
        assert!(meta.mark_done(c.id, "inst-a", c.attempts, rows, None).await);
    }
    assert!(meta.all_done().await);
    let job = meta.job().await.unwrap();
    assert_eq!((job.chunks_done, job.rows_done), (7, 56));

    // A new coordinator re-exports; the upsert keeps state and counters.
    assert!(meta.set_snapshot("00000004-00000001-1", "inst-b").await);
    assert!(!meta
        .store
        .set_snapshot(&mut meta.conn, "no_such_slot", "x", "inst-b")
        .await
        .unwrap());
    let job = meta.job().await.unwrap();
    assert_eq!(job.snapshot_name.as_deref(), Some("00000004-00000001-1"));
    assert_eq!(job.coordinator.as_deref(), Some("inst-b"));
    assert_eq!((job.chunks_done, job.rows_done), (7, 56));
    let job = meta.create_job("s2", Lsn(7), "inst-c").await;
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.snapshot_lsn, Some(Lsn(7)));
    assert_eq!((job.chunks_total, job.chunks_done), (7, 7));

    assert!(meta.set_job_state(JobState::Done).await);
    let job = meta.job().await.unwrap();
    assert_eq!(job.state, JobState::Done);
    assert!(job.finished_at.is_some());
    assert!(job.created_at <= job.updated_at);

    assert!(meta.delete_job().await);
    assert_eq!(meta.job().await, None);
    assert_eq!(meta.progress().await.tables, vec![]);
    drop(meta);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_get_distinct_chunks() {
    let db = TestDb::create("snap_claims").await;
    let store = MetadataStore::default();
    // Creating the tables concurrently is safe too.
    let mut setup = Vec::new();
    for _ in 0..4 {
        let mut conn = connect(&db).await;
        let store = store.clone();
        setup.push(tokio::spawn(async move {
            store.ensure_schema(&mut conn).await.unwrap();
        }));
    }
    for s in setup {
        s.await.unwrap();
    }

    let slot = "slot_c";
    let mut meta = Meta::new(&db, store.clone(), slot).await;
    meta.create_job("snap", Lsn(1), "coord").await;
    let chunks: Vec<ChunkBounds> = (0..60)
        .map(|i| ChunkBounds::Ctid {
            start_block: i * 10,
            end_block: if i == 59 { None } else { Some(i * 10 + 10) },
        })
        .collect();
    meta.insert_chunks(&TableName::new("public", "t"), &chunks)
        .await;
    meta.set_job_state(JobState::Running).await;

    let mut workers = Vec::new();
    for w in 0..4 {
        let mut meta = Meta::new(&db, store.clone(), slot).await;
        workers.push(tokio::spawn(async move {
            let me = format!("worker-{w}");
            let mut got = Vec::new();
            while let Some(c) = meta.claim_chunk(&me, Duration::from_secs(60)).await {
                assert_eq!(c.reads, 1);
                assert!(meta.heartbeat(c.id, &me, c.attempts).await);
                tokio::task::yield_now().await;
                assert!(meta.mark_done(c.id, &me, c.attempts, 3, None).await);
                got.push(c.id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    let mut per_worker = Vec::new();
    for w in workers {
        let got = w.await.unwrap();
        per_worker.push(got.len());
        all.extend(got);
    }
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 60, "per worker: {per_worker:?}");
    assert_eq!(distinct.len(), 60, "a chunk was claimed twice");
    let reread: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM cdc.snapshot_chunks WHERE slot_name = $1 AND (reads <> 1 OR status <> 'done')",
    )
    .bind(slot)
    .fetch_one(&mut meta.conn)
    .await
    .unwrap();
    assert_eq!(reread, 0);
    let job = meta.job().await.unwrap();
    assert_eq!((job.chunks_done, job.rows_done), (60, 180));
    assert!(meta.all_done().await);
    drop(meta);
    db.cleanup().await;
}

#[tokio::test]
async fn an_expired_claim_is_taken_over() {
    let db = TestDb::create("snap_takeover").await;
    let mut meta = Meta::new(&db, MetadataStore::new("coord"), "slot_t").await;
    meta.store.ensure_schema(&mut meta.conn).await.unwrap();
    meta.create_job("snap", Lsn(1), "a").await;
    meta.insert_chunks(
        &TableName::new("public", "t"),
        &[ChunkBounds::Ctid {
            start_block: 0,
            end_block: None,
        }],
    )
    .await;
    let timeout = Duration::from_secs(1);
    let a = meta.claim_chunk("a", timeout).await.unwrap();
    assert_eq!(a.reads, 1);
    // Fresh heartbeat: nothing to take over.
    assert_eq!(meta.claim_chunk("b", timeout).await, None);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(meta.heartbeat(a.id, "a", a.attempts).await);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The heartbeat kept it alive past the first second.
    assert_eq!(meta.claim_chunk("b", timeout).await, None);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let b = meta
        .claim_chunk("b", timeout)
        .await
        .expect("the expired claim is taken over");
    assert_eq!(b.id, a.id);
    assert_eq!((b.attempts, b.reads), (2, 2));
    assert_eq!(b.bounds, a.bounds);
    // The old claimant finds out and cannot complete the chunk.
    assert!(!meta.heartbeat(a.id, "a", a.attempts).await);
    assert!(!meta.mark_done(a.id, "a", a.attempts, 9, None).await);
    assert!(meta.mark_done(b.id, "b", b.attempts, 9, None).await);
    let job = meta.job().await.unwrap();
    assert_eq!((job.chunks_done, job.rows_done), (1, 9));
    let reads: i32 = sqlx::query_scalar("SELECT reads FROM coord.snapshot_chunks WHERE id = $1")
        .bind(a.id)
        .fetch_one(&mut meta.conn)
        .await
        .unwrap();
    assert_eq!(reads, 2);
    drop(meta);
    db.cleanup().await;
}

/// Rows arrive in batches of the requested size through a bounded channel
/// (the reader waits for the consumer), and a reader whose consumer has
/// gone stops with an error, leaving the connection usable.
#[tokio::test]
async fn rows_arrive_in_bounded_batches() {
    let db = TestDb::create("snap_batches").await;
    db.exec("CREATE TABLE s (id int PRIMARY KEY); INSERT INTO s SELECT generate_series(1, 2500);")
        .await;
    let mut conn = connect(&db).await;
    begin_reader(&mut conn, None).await;
    let info = describe_table(&mut conn, db.name(), &TableName::new("public", "s"))
        .await
        .unwrap();
    let chunks = plan_chunks(&mut conn, &info, ChunkStrategy::Auto, 1_000_000)
        .await
        .unwrap();
    assert_eq!(
        chunks,
        vec![ChunkBounds::Ctid {
            start_block: 0,
            end_block: None
        }]
    );
    let (tx, mut rx) = mpsc::channel(1);
    let reader = async {
        let n = read_chunk(&mut conn, &info, &chunks[0], 1000, &tx)
            .await
            .unwrap();
        drop(tx);
        n
    };
    let consumer = async {
        let mut sizes = Vec::new();
        while let Some(rows) = rx.recv().await {
            sizes.push(rows.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sizes
    };
    let (n, sizes) = tokio::join!(reader, consumer);
    assert_eq!(n, 2500);
    assert_eq!(sizes, vec![1000, 1000, 500]);

    let (tx, rx) = mpsc::channel(1);
    drop(rx);
    let err = read_chunk(&mut conn, &info, &chunks[0], 10, &tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("gone away"), "{err}");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    exec(&mut conn, "COMMIT").await;
    drop(conn);
    db.cleanup().await;
}
