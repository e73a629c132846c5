//! Streaming correctness end to end: a real PostgreSQL 15 (`CDC_TEST_PG_URL`),
//! the real `cdc-engine` binary (`CDC_ENGINE_BIN`) and its file sink.
//!
//! Every test creates its own database, tables, slot, publication and output
//! file, lets the engine create the publication and the slot, changes rows,
//! waits for the JSON lines and stops the engine with SIGTERM (which must
//! exit 0). Row images are compared with PostgreSQL's own `to_jsonb`, as
//! exact JSON (`arbitrary_precision`: numbers compare as their text).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use integration_tests::pipelines::{yaml_str, Pipeline, STREAM_ONLY};
use integration_tests::snapshot_meta::parse_lsn;
use integration_tests::{
    read_jsonl, unique_suffix, wait_streaming, wait_until, Engine, TempDir, TestDb,
};
use serde_json::{json, Value};

/// How long to wait for the engine to start or for events to arrive.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERMed engine may take to drain and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(45);

// ---------------------------------------------------------------- helpers

/// One capture setup of a test: its slot, publication and output file.
struct Capture {
    slot: String,
    _out_dir: TempDir,
    out: PathBuf,
    yaml: String,
}

impl Capture {
    /// A pipeline for `tables` (names as written in the YAML, e.g.
    /// `public.t` or `"S"."T"`), with `replica_identity` entries
    /// `(table, default|full|nothing)`.
    fn new(db: &TestDb, tables: &[&str], replica_identity: &[(&str, &str)]) -> Capture {
        let suffix = unique_suffix();
        let slot = format!("slot_{suffix}");
        let publication = format!("pub_{suffix}");
        let out_dir = TempDir::new("streaming-out");
        let out = out_dir.join("changes.jsonl");
        let mut pipeline = Pipeline::new("streaming_test", db.url())
            .tables(tables)
            .publication(&publication)
            .slot(&slot)
            .create(true, true);
        if !replica_identity.is_empty() {
            let mut lines = String::from("  replica_identity:\n");
            for (t, r) in replica_identity {
                lines.push_str(&format!("    {}: {r}\n", yaml_str(t)));
            }
            pipeline = pipeline.source_lines(&lines);
        }
        // Stream-only: these tests check the changes made after the start.
        let yaml = pipeline
            .file_sink(&out)
            .snapshot(STREAM_ONLY)
            .log("{ level: info }")
            .yaml();
        Capture {
            slot,
            _out_dir: out_dir,
            out,
            yaml,
        }
    }

    /// Starts the engine and waits until it streams from its slot.
    async fn start(&self, db: &TestDb) -> Engine {
        let mut engine = Engine::start(&self.yaml);
        wait_streaming(db, &mut engine, &self.slot, TIMEOUT).await;
        engine
    }

    /// Complete lines in the output file so far (cheap: no JSON parsing).
    fn line_count(&self) -> usize {
        match std::fs::read(&self.out) {
            Ok(bytes) => bytes.iter().filter(|&&b| b == b'\n').count(),
            Err(_) => 0,
        }
    }

    /// Waits (up to `timeout`) until the file holds at least `n` lines and
    /// returns them all; panics, with the engine's output, when it does not.
    async fn wait_lines(&self, engine: &mut Engine, n: usize, timeout: Duration) -> Vec<Value> {
        let reached = wait_until(timeout, async || {
            self.line_count() >= n || !engine.is_running()
        })
        .await;
        let lines = read_jsonl(&self.out);
        assert!(
            reached && lines.len() >= n,
            "expected at least {n} lines in {}, got {} (engine running: {})\n{}",
            self.out.display(),
            lines.len(),
            engine.is_running(),
            engine.output_report()
        );
        lines
    }

    /// Every line of the output file.
    fn lines(&self) -> Vec<Value> {
        read_jsonl(&self.out)
    }
}

/// The rows of `sql` (a query) as `to_jsonb` objects; exactly one expected.
async fn one_row(db: &TestDb, sql: &str) -> Value {
    let mut rows = db.query_json(sql).await;
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows.pop().unwrap()
}

fn op(e: &Value) -> &str {
    e["op"]
        .as_str()
        .unwrap_or_else(|| panic!("no op in event {e}"))
}

fn table_of(e: &Value) -> (&str, &str) {
    (
        e["source"]["schema"].as_str().unwrap_or_default(),
        e["source"]["table"].as_str().unwrap_or_default(),
    )
}

fn source_u64(e: &Value, field: &str) -> u64 {
    e["source"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("source.{field} is not an unsigned integer in {e}"))
}

fn commit_lsn(e: &Value) -> u64 {
    source_u64(e, "commit_lsn")
}

fn ordinal(e: &Value) -> u64 {
    source_u64(e, "ordinal")
}

/// The JSON text of a column of the event's row: `after` for inserts and
/// updates, `before` for deletes.
fn key_text(e: &Value, column: &str) -> String {
    let row = if op(e) == "d" {
        &e["before"]
    } else {
        &e["after"]
    };
    let v = row
        .get(column)
        .unwrap_or_else(|| panic!("no column {column:?} in the row of {e}"));
    v.to_string()
}

/// `obj` without `column`.
fn without(obj: &Value, column: &str) -> Value {
    let mut o = obj.clone();
    o.as_object_mut()
        .expect("a row is a JSON object")
        .remove(column);
    o
}

fn pretty(lines: &[Value]) -> String {
    lines
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `pg_class.relreplident` of a table (`d`, `f`, `n` or `i`).
async fn relreplident(db: &TestDb, table_sql: &str) -> String {
    db.query_text(&format!(
        "SELECT relreplident::text FROM pg_class WHERE oid = '{}'::regclass",
        table_sql.replace('\'', "''")
    ))
    .await
    .unwrap_or_default()
}

// ------------------------------------------------------------ 1. types

const TYPES_SETUP: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy "very", really');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE TABLE public.every (
    id int4 PRIMARY KEY,
    c_bool bool,
    c_int2 int2,
    c_int4 int4,
    c_int8 int8,
    c_float4 float4,
    c_float8 float8,
    c_numeric numeric,
    c_text text,
    c_varchar varchar(10),
    c_char char(5),
    c_name name,
    c_ci CI_TYPE,
    c_bytea bytea,
    c_json json,
    c_jsonb jsonb,
    c_uuid uuid,
    c_date date,
    c_time time,
    c_timetz timetz,
    c_timestamp timestamp,
    c_timestamptz timestamptz,
    c_interval interval,
    c_inet inet,
    c_cidr cidr,
    c_macaddr macaddr,
    c_money money,
    c_bit bit(4),
    c_varbit varbit,
    c_enum mood,
    c_posint posint,
    c_int4_arr int4[],
    c_text_arr text[],
    c_int4_2d int4[][],
    c_text_2d text[][],
    c_numeric_arr numeric[],
    c_tstz_arr timestamptz[],
    c_enum_arr mood[]
);
"#;

/// One step of the types test: a statement changing exactly the row `id`.
struct Step {
    op: &'static str,
    id: i32,
    /// For an update that changes the key: the old key.
    old_id: Option<i32>,
    sql: &'static str,
}

const fn step(op: &'static str, id: i32, sql: &'static str) -> Step {
    Step {
        op,
        id,
        old_id: None,
        sql,
    }
}

const TYPE_STEPS: &[Step] = &[
    // The first insert is in a transaction of its own; its snapshot is
    // checked separately below.
    step(
        "c",
        1,
        r##"INSERT INTO public.every VALUES (1, true, 32767, -2147483648, 9223372036854775807,
            'NaN', 'NaN',
            '123456789012345678901234567890.123456789012345678901234567890',
            E'tab\there "quoted" back\\slash\nnewline \u00fcn\u00ef \u20ac \U0001F600',
            'abcdefghij', 'ab', 'a_name', 'MiXeD Case',
            '\xdeadbeef00',
            '{"a": [1, 2.5, "x"],   "b": null, "c": {"d": "\u00e9", "e": -0.5}}',
            '{"n": 1.000, "big": 123456789012345678901234567890, "s": "x\"y", "arr": [true, null, {}], "neg": -1e-3}',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '23:59:59.999999',
            '12:34:56.789+05:30', '2024-01-02 03:04:05.678901', '2024-06-30 23:59:59.5+02',
            '1 year 2 mons 3 days 04:05:06.789', '192.168.0.1/24', '10.0.0.0/8',
            '08:00:2b:01:02:03', 1234.56, B'1010', B'110', 'happy "very", really', 42,
            '{1,NULL,3}', ARRAY['a"b', 'c,d', E'e\\f', ' sp ', NULL, 'NULL', '', '{x}'],
            '{{1,2},{3,4}}', '{{"a b",c},{NULL,"d\"e"}}',
            '{1.50,NaN,-0.001,123456789012345678901234567890.5}',
            ARRAY['2024-01-01 00:00:00+00', 'infinity', '1999-12-31 23:59:59.25-08']::timestamptz[],
            '{sad,ok}')"##,
    ),
    step(
        "c",
        2,
        r##"INSERT INTO public.every VALUES (2, false, -32768, 2147483647, -9223372036854775808,
            'Infinity', 'Infinity', '12.500', '', '', 'abcde', '', '',
            '\x', '[]', '"just a string"',
            '00000000-0000-0000-0000-000000000000', '0044-03-15 BC', '00:00:00',
            '23:59:59+14', '0100-01-01 12:00:00.5 BC', '0500-01-01 00:00:00+00 BC',
            '-1 days +02:03:04.5', '::1', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff', -0.01,
            B'0000', B'', 'sad', 1,
            '{}', '{}', '{{NULL,NULL},{NULL,7}}', '{{"",NULL}}', '{NULL}', '{}',
            ARRAY['happy "very", really']::mood[])"##,
    ),
    step(
        "c",
        3,
        r##"INSERT INTO public.every (id, c_float4, c_float8, c_numeric, c_date, c_timestamp,
            c_timestamptz, c_interval, c_text, c_text_arr, c_int4_arr)
            VALUES (3, '-Infinity', '-Infinity', 'NaN', 'infinity', 'infinity', '-infinity',
            '0', ' lead and trail ', '{"\\\\","\"",NULL}', '{NULL}')"##,
    ),
    step(
        "c",
        4,
        r##"INSERT INTO public.every (id, c_float4, c_float8, c_numeric, c_date, c_timestamp,
            c_timestamptz, c_jsonb, c_json)
            VALUES (4, 1.5e-7, 1e300, '-0.000000000000000000000000000001', '-infinity',
            '-infinity', 'infinity', '{"deep": {"deeper": [[1], [2, [3]]]}}', '{"k": "v"}')"##,
    ),
    step(
        "c",
        5,
        r##"INSERT INTO public.every (id, c_float4, c_float8, c_numeric)
            VALUES (5, 3.4e38, 1.5e-7, '100')"##,
    ),
    // A row of NULLs (all but the key).
    step("c", 6, "INSERT INTO public.every (id) VALUES (6)"),
    step(
        "u",
        1,
        r##"UPDATE public.every SET c_float8 = 1e300, c_float4 = 'Infinity',
            c_text = 'changed', c_jsonb = '{"z": [1.10, 2]}', c_int4_arr = '{NULL}',
            c_numeric = 'NaN', c_enum = NULL WHERE id = 1"##,
    ),
    step(
        "u",
        6,
        r##"UPDATE public.every SET c_bool = true, c_char = 'x', c_money = 0,
            c_text_2d = '{{a,b},{c,d}}', c_enum_arr = '{ok,NULL}', c_posint = 2147483647,
            c_date = '2000-01-01', c_timetz = '00:00:00.000001-15:59' WHERE id = 6"##,
    ),
    step(
        "u",
        2,
        r##"UPDATE public.every SET c_bool = NULL, c_text = NULL, c_int4_2d = NULL,
            c_interval = '-178000000 years' WHERE id = 2"##,
    ),
    step("d", 3, "DELETE FROM public.every WHERE id = 3"),
    Step {
        op: "u",
        id: 40,
        old_id: Some(4),
        sql: "UPDATE public.every SET id = 40, c_float4 = '-0' WHERE id = 4",
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_equals_to_jsonb() {
    let db = TestDb::create("stream_types").await;
    let has_citext = db
        .try_exec("CREATE EXTENSION IF NOT EXISTS citext")
        .await
        .is_ok();
    let ci_type = if has_citext {
        "citext"
    } else {
        db.exec("CREATE DOMAIN ci_text AS text").await;
        "ci_text"
    };
    db.exec(&TYPES_SETUP.replace("CI_TYPE", ci_type)).await;

    let cap = Capture::new(&db, &["public.every"], &[]);
    let mut engine = cap.start(&db).await;

    // Run each statement in a transaction of its own and take the row as
    // to_jsonb sees it right then.
    let mut expected: Vec<(&str, Option<Value>, Option<Value>)> = Vec::new();
    let mut first_insert_snapshot = None;
    for s in TYPE_STEPS {
        db.exec(s.sql).await;
        let after = match s.op {
            "d" => None,
            _ => Some(
                one_row(
                    &db,
                    &format!("SELECT * FROM public.every WHERE id = {}", s.id),
                )
                .await,
            ),
        };
        if first_insert_snapshot.is_none() {
            first_insert_snapshot = after.clone();
        }
        // Replica identity DEFAULT: a key-only `before` for deletes and
        // for updates that change the key, none for other updates.
        let before = match (s.op, s.old_id) {
            ("d", _) => Some(json!({ "id": s.id })),
            ("u", Some(old)) => Some(json!({ "id": old })),
            _ => None,
        };
        expected.push((s.op, before, after));
    }
    let final_rows = db.to_jsonb_rows("public.every", "id").await;

    cap.wait_lines(&mut engine, expected.len(), TIMEOUT).await;
    engine.stop_clean(STOP_TIMEOUT, "stop").await;
    let lines = cap.lines();
    assert_eq!(
        lines.len(),
        expected.len(),
        "one line per statement expected:\n{}",
        pretty(&lines)
    );

    // The first insert, against the snapshot taken before any update.
    let first = &lines[0];
    assert_eq!(op(first), "c");
    assert_eq!(
        first["after"],
        first_insert_snapshot.unwrap(),
        "first insert vs its to_jsonb"
    );
    assert!(first["before"].is_null(), "{first}");

    // Every event against the row as it was right after its statement.
    for (i, (line, (want_op, before, after))) in lines.iter().zip(&expected).enumerate() {
        let ctx = format!("event {i} (statement: {})", TYPE_STEPS[i].sql);
        assert_eq!(op(line), *want_op, "{ctx}: {line}");
        assert_eq!(table_of(line), ("public", "every"), "{ctx}");
        assert_eq!(
            line["before"],
            before.clone().unwrap_or(Value::Null),
            "{ctx}: before"
        );
        match after {
            Some(after) => {
                // Compare column by column first, for a readable failure.
                let got = line["after"].as_object().expect("after is an object");
                for (col, want) in after.as_object().unwrap() {
                    assert_eq!(
                        got.get(col),
                        Some(want),
                        "{ctx}: column {col}\n got row: {}\nwant row: {after}",
                        line["after"]
                    );
                }
                assert_eq!(&line["after"], after, "{ctx}: after");
            }
            None => assert!(line["after"].is_null(), "{ctx}: {line}"),
        }
        assert!(
            line["source"].get("unchanged_toast").is_none(),
            "{ctx}: {line}"
        );
    }

    // Applying the events in order gives the table's final state.
    let mut state = std::collections::BTreeMap::new();
    for line in &lines {
        match op(line) {
            "c" | "u" => {
                if let Some(old) = line["before"].get("id") {
                    state.remove(&old.to_string());
                }
                state.insert(key_text(line, "id"), line["after"].clone());
            }
            "d" => {
                state.remove(&key_text(line, "id"));
            }
            other => panic!("unexpected op {other}: {line}"),
        }
    }
    assert_eq!(state, final_rows, "events applied in order vs final table");
    db.cleanup().await;
}

// ------------------------------------------------- 2. replica identity

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_identity_default_and_full() {
    let db = TestDb::create("stream_ident").await;
    db.exec(
        r#"
        CREATE TABLE public.rid_default (region text, id int, name text, n numeric,
                                         PRIMARY KEY (region, id));
        CREATE TABLE public.rid_full (id int PRIMARY KEY, name text, n numeric, tags text[]);
        INSERT INTO public.rid_default VALUES ('eu', 1, 'a', 1.10), ('eu', 2, 'b', 2), ('us', 3, 'c', NULL);
        INSERT INTO public.rid_full VALUES (1, 'a', 1.10, '{x,y}'), (2, 'b', 2, NULL), (3, NULL, 3.000, '{"q \"r\""}');
        "#,
    )
    .await;
    assert_eq!(relreplident(&db, "public.rid_default").await, "d");
    assert_eq!(relreplident(&db, "public.rid_full").await, "d");

    let cap = Capture::new(
        &db,
        &["public.rid_default", "public.rid_full"],
        &[("public.rid_full", "full")],
    );
    let mut engine = cap.start(&db).await;
    assert_eq!(
        relreplident(&db, "public.rid_full").await,
        "f",
        "the engine did not set REPLICA IDENTITY FULL"
    );
    assert_eq!(relreplident(&db, "public.rid_default").await, "d");

    let row_d = |region: &str, id: i32| {
        format!("SELECT * FROM public.rid_default WHERE region = '{region}' AND id = {id}")
    };
    let row_f = |id: i32| format!("SELECT * FROM public.rid_full WHERE id = {id}");

    // DEFAULT
    db.exec("UPDATE public.rid_default SET name = 'a2', n = n * 2 WHERE region = 'eu' AND id = 1")
        .await;
    let d_upd_after = one_row(&db, &row_d("eu", 1)).await;
    db.exec("UPDATE public.rid_default SET id = 20, name = 'moved' WHERE region = 'eu' AND id = 2")
        .await;
    let d_key_after = one_row(&db, &row_d("eu", 20)).await;
    db.exec("DELETE FROM public.rid_default WHERE region = 'us' AND id = 3")
        .await;

    // FULL
    let f1_old = one_row(&db, &row_f(1)).await;
    db.exec("UPDATE public.rid_full SET name = 'a2', tags = NULL WHERE id = 1")
        .await;
    let f1_new = one_row(&db, &row_f(1)).await;
    let f2_old = one_row(&db, &row_f(2)).await;
    db.exec("UPDATE public.rid_full SET id = 20 WHERE id = 2")
        .await;
    let f2_new = one_row(&db, &row_f(20)).await;
    let f3_old = one_row(&db, &row_f(3)).await;
    db.exec("DELETE FROM public.rid_full WHERE id = 3").await;

    cap.wait_lines(&mut engine, 6, TIMEOUT).await;
    engine.stop_clean(STOP_TIMEOUT, "stop").await;
    let lines = cap.lines();
    assert_eq!(lines.len(), 6, "{}", pretty(&lines));

    let d = &lines[0..3];
    for l in d {
        assert_eq!(table_of(l), ("public", "rid_default"), "{l}");
    }
    assert_eq!(op(&d[0]), "u");
    assert!(
        d[0]["before"].is_null(),
        "DEFAULT update without key change: before must be null: {}",
        d[0]
    );
    assert_eq!(d[0]["after"], d_upd_after);
    assert_eq!(op(&d[1]), "u");
    assert_eq!(
        d[1]["before"],
        json!({"region": "eu", "id": 2}),
        "DEFAULT update changing the key: before = old key only"
    );
    assert_eq!(d[1]["after"], d_key_after);
    assert_eq!(op(&d[2]), "d");
    assert_eq!(
        d[2]["before"],
        json!({"region": "us", "id": 3}),
        "DEFAULT delete: before = key columns only"
    );
    assert!(d[2]["after"].is_null());

    let f = &lines[3..6];
    for l in f {
        assert_eq!(table_of(l), ("public", "rid_full"), "{l}");
    }
    assert_eq!(op(&f[0]), "u");
    assert_eq!(f[0]["before"], f1_old, "FULL update: before = old row");
    assert_eq!(f[0]["after"], f1_new);
    assert_eq!(op(&f[1]), "u");
    assert_eq!(
        f[1]["before"], f2_old,
        "FULL update changing the key: before = old row"
    );
    assert_eq!(f[1]["after"], f2_new);
    assert_eq!(op(&f[2]), "d");
    assert_eq!(f[2]["before"], f3_old, "FULL delete: before = old row");
    assert!(f[2]["after"].is_null());
    db.cleanup().await;
}

// ------------------------------------------------------------ 3. TOAST

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toast_default_and_full() {
    let db = TestDb::create("stream_toast").await;
    db.exec(
        r#"
        CREATE TABLE public.toast_default (id int PRIMARY KEY, small text, big text);
        ALTER TABLE public.toast_default ALTER COLUMN big SET STORAGE EXTERNAL;
        CREATE TABLE public.toast_full (id int PRIMARY KEY, small text, big text);
        ALTER TABLE public.toast_full ALTER COLUMN big SET STORAGE EXTERNAL;
        "#,
    )
    .await;
    let cap = Capture::new(
        &db,
        &["public.toast_default", "public.toast_full"],
        &[("public.toast_full", "full")],
    );
    let mut engine = cap.start(&db).await;

    let big_sql = "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 400))";
    db.exec(&format!(
        "INSERT INTO public.toast_default SELECT 1, 'small', {big_sql}"
    ))
    .await;
    db.exec(&format!(
        "INSERT INTO public.toast_full SELECT 1, 'small', {big_sql}"
    ))
    .await;
    for t in ["public.toast_default", "public.toast_full"] {
        // The value really is out of line.
        let len = db
            .query_text(&format!("SELECT octet_length(big)::text FROM {t}"))
            .await;
        assert_eq!(len.as_deref(), Some("12800"), "{t}");
        let toast_size = db
            .query_text(&format!(
                "SELECT pg_relation_size(reltoastrelid)::text FROM pg_class WHERE oid = '{t}'::regclass"
            ))
            .await
            .unwrap();
        assert!(
            toast_size.parse::<u64>().unwrap() > 8192,
            "{t}: TOAST table size {toast_size}"
        );
    }
    let d_ins = one_row(&db, "SELECT * FROM public.toast_default").await;
    let f_ins = one_row(&db, "SELECT * FROM public.toast_full").await;

    db.exec("UPDATE public.toast_default SET small = 'changed' WHERE id = 1")
        .await;
    let d_upd = one_row(&db, "SELECT * FROM public.toast_default").await;
    db.exec("UPDATE public.toast_full SET small = 'changed' WHERE id = 1")
        .await;
    let f_upd = one_row(&db, "SELECT * FROM public.toast_full").await;
    assert_eq!(d_upd["big"], d_ins["big"]);
    assert_eq!(f_upd["big"], f_ins["big"]);

    cap.wait_lines(&mut engine, 4, TIMEOUT).await;
    engine.stop_clean(STOP_TIMEOUT, "stop").await;
    let lines = cap.lines();
    assert_eq!(lines.len(), 4, "{}", pretty(&lines));

    // Inserts carry the big value.
    assert_eq!(op(&lines[0]), "c");
    assert_eq!(table_of(&lines[0]), ("public", "toast_default"));
    assert_eq!(lines[0]["after"], d_ins);
    assert!(lines[0]["source"].get("unchanged_toast").is_none());
    assert_eq!(op(&lines[1]), "c");
    assert_eq!(table_of(&lines[1]), ("public", "toast_full"));
    assert_eq!(lines[1]["after"], f_ins);

    // DEFAULT: big left out, named in unchanged_toast.
    let d = &lines[2];
    assert_eq!(op(d), "u");
    assert_eq!(table_of(d), ("public", "toast_default"));
    assert!(d["before"].is_null(), "{d}");
    assert!(
        d["after"].get("big").is_none(),
        "DEFAULT: unchanged TOAST value must be left out of after"
    );
    assert_eq!(d["after"], without(&d_upd, "big"));
    assert_eq!(d["source"]["unchanged_toast"], json!(["big"]), "{d}");

    // FULL: big filled in from the old row.
    let f = &lines[3];
    assert_eq!(op(f), "u");
    assert_eq!(table_of(f), ("public", "toast_full"));
    assert_eq!(
        f["after"], f_upd,
        "FULL: after must carry the stored big value"
    );
    assert!(
        f["source"].get("unchanged_toast").is_none(),
        "FULL: no unchanged_toast expected: {}",
        f["source"]
    );
    assert_eq!(f["before"], f_ins, "FULL: before = old row, big included");
    db.cleanup().await;
}

// --------------------------------------------------------- 4. truncate

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_gives_one_event_per_table() {
    let db = TestDb::create("stream_trunc").await;
    db.exec(
        r#"
        CREATE TABLE public.trunc_a (id int PRIMARY KEY, v text);
        CREATE TABLE public.trunc_b (id int PRIMARY KEY, v text);
        CREATE TABLE public.trunc_c (id int PRIMARY KEY, v text);
        INSERT INTO public.trunc_a SELECT g, 'a' FROM generate_series(1, 5) g;
        INSERT INTO public.trunc_b SELECT g, 'b' FROM generate_series(1, 5) g;
        INSERT INTO public.trunc_c SELECT g, 'c' FROM generate_series(1, 5) g;
        "#,
    )
    .await;
    let cap = Capture::new(&db, &["public.trunc_a", "public.trunc_b"], &[]);
    let mut engine = cap.start(&db).await;

    db.exec("TRUNCATE public.trunc_a, public.trunc_b").await;
    // A table that is not captured, then a marker row: nothing may come
    // between the truncates and the marker.
    db.exec("TRUNCATE public.trunc_c").await;
    db.exec("INSERT INTO public.trunc_a VALUES (100, 'marker')")
        .await;

    cap.wait_lines(&mut engine, 3, TIMEOUT).await;
    engine.stop_clean(STOP_TIMEOUT, "stop").await;
    let lines = cap.lines();
    assert_eq!(lines.len(), 3, "{}", pretty(&lines));

    let truncs = &lines[0..2];
    let mut tables: Vec<&str> = truncs.iter().map(|l| table_of(l).1).collect();
    tables.sort_unstable();
    assert_eq!(
        tables,
        ["trunc_a", "trunc_b"],
        "one truncate per table:\n{}",
        pretty(&lines)
    );
    for l in truncs {
        assert_eq!(op(l), "t", "{l}");
        assert_eq!(table_of(l).0, "public");
        assert!(l["before"].is_null() && l["after"].is_null(), "{l}");
        assert!(l["source"].get("unchanged_toast").is_none(), "{l}");
    }
    assert_eq!(
        commit_lsn(&truncs[0]),
        commit_lsn(&truncs[1]),
        "one transaction"
    );
    let mut ords: Vec<u64> = truncs.iter().map(ordinal).collect();
    ords.sort_unstable();
    assert_eq!(ords, [0, 1]);

    assert_eq!(op(&lines[2]), "c");
    assert_eq!(lines[2]["after"], json!({"id": 100, "v": "marker"}));
    db.cleanup().await;
}

// ------------------------------------------------------ 5. transactions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_boundaries_and_ordinals() {
    let db = TestDb::create("stream_tx").await;
    db.exec(
        r#"
        CREATE TABLE public.tx_a (id int PRIMARY KEY, v text);
        CREATE TABLE public.tx_b (id int PRIMARY KEY, v int);
        INSERT INTO public.tx_b VALUES (1, 1), (2, 2), (3, 3);
        "#,
    )
    .await;
    let cap = Capture::new(&db, &["public.tx_a", "public.tx_b"], &[]);
    let mut engine = cap.start(&db).await;

    db.exec(
        r#"
        BEGIN;
        INSERT INTO public.tx_a VALUES (1, 'one');
        INSERT INTO public.tx_b VALUES (10, 10);
        UPDATE public.tx_a SET v = 'uno' WHERE id = 1;
        DELETE FROM public.tx_b WHERE id = 2;
        INSERT INTO public.tx_a VALUES (2, 'two'), (3, 'three');
        UPDATE public.tx_b SET v = v + 100 WHERE id = 1;
        COMMIT;
        "#,
    )
    .await;
    db.exec(
        r#"
        BEGIN;
        INSERT INTO public.tx_b VALUES (20, 20);
        DELETE FROM public.tx_a WHERE id = 3;
        COMMIT;
        "#,
    )
    .await;
    let tx1 = [
        ("c", "tx_a", "1"),
        ("c", "tx_b", "10"),
        ("u", "tx_a", "1"),
        ("d", "tx_b", "2"),
        ("c", "tx_a", "2"),
        ("c", "tx_a", "3"),
        ("u", "tx_b", "1"),
    ];
    let tx2 = [("c", "tx_b", "20"), ("d", "tx_a", "3")];

    cap.wait_lines(&mut engine, tx1.len() + tx2.len(), TIMEOUT)
        .await;
    engine.stop_clean(STOP_TIMEOUT, "stop").await;
    let lines = cap.lines();
    assert_eq!(lines.len(), tx1.len() + tx2.len(), "{}", pretty(&lines));

    let got: Vec<(&str, &str, String)> = lines
        .iter()
        .map(|l| (op(l), table_of(l).1, key_text(l, "id")))
        .collect();
    let want: Vec<(&str, &str, String)> = tx1
        .iter()
        .chain(&tx2)
        .map(|(o, t, k)| (*o, *t, (*k).to_owned()))
        .collect();
    assert_eq!(got, want, "statement order:\n{}", pretty(&lines));

    let (l1, l2) = lines.split_at(tx1.len());
    let check_tx = |events: &[Value], name: &str| {
        let c = commit_lsn(&events[0]);
        let x = &events[0]["source"]["txId"];
        assert!(x.is_u64(), "{name}: txId {x}");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(commit_lsn(e), c, "{name}: event {i} commit_lsn: {e}");
            assert_eq!(&e["source"]["txId"], x, "{name}: event {i} txId: {e}");
            assert_eq!(ordinal(e), i as u64, "{name}: event {i} ordinal: {e}");
            assert!(
                source_u64(e, "lsn") <= c,
                "{name}: event {i}: lsn after commit_lsn: {e}"
            );
        }
        for w in events.windows(2) {
            assert!(
                source_u64(&w[0], "lsn") < source_u64(&w[1], "lsn"),
                "{name}: change lsns must increase: {} then {}",
                w[0],
                w[1]
            );
        }
        (c, x.clone())
    };
    let (c1, x1) = check_tx(l1, "first transaction");
    let (c2, x2) = check_tx(l2, "second transaction");
    assert!(c2 > c1, "second commit_lsn {c2} <= first {c1}");
    assert_ne!(x1, x2, "two transactions, one txId");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_transaction_arrives_whole_and_in_order() {
    const N: usize = 20_000;
    let db = TestDb::create("stream_bigtx").await;
    db.exec("CREATE TABLE public.tx_big (id int PRIMARY KEY, v text)")
        .await;
    let cap = Capture::new(&db, &["public.tx_big"], &[]);
    let mut engine = cap.start(&db).await;

    db.exec(&format!(
        "INSERT INTO public.tx_big SELECT g, md5(g::text) FROM generate_series(1, {N}) g ORDER BY g"
    ))
    .await;
    db.exec("INSERT INTO public.tx_big VALUES (0, 'after')")
        .await;

    let started = Instant::now();
    cap.wait_lines(&mut engine, N + 1, Duration::from_secs(120))
        .await;
    let took = started.elapsed();
    engine.stop_clean(STOP_TIMEOUT, "stop").await;
    let lines = cap.lines();
    assert_eq!(lines.len(), N + 1, "line count (waited {took:?})");

    let c = commit_lsn(&lines[0]);
    let x = lines[0]["source"]["txId"].clone();
    for (i, l) in lines[..N].iter().enumerate() {
        assert_eq!(op(l), "c", "line {i}: {l}");
        assert_eq!(key_text(l, "id"), (i + 1).to_string(), "line {i}: {l}");
        assert_eq!(ordinal(l), i as u64, "line {i}: {l}");
        assert_eq!(commit_lsn(l), c, "line {i}: {l}");
        assert_eq!(l["source"]["txId"], x, "line {i}: {l}");
    }
    let last = &lines[N];
    assert_eq!(last["after"], json!({"id": 0, "v": "after"}));
    assert_eq!(ordinal(last), 0);
    assert!(commit_lsn(last) > c);
    db.cleanup().await;
}

// ------------------------------------------------- 6. quoted table name

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quoted_schema_and_table_names() {
    let db = TestDb::create("stream_quoted").await;
    db.exec(
        r#"
        CREATE SCHEMA "Odd Schema";
        CREATE TABLE "Odd Schema"."Mixed ""Case"" Table" ("Id" int PRIMARY KEY, "Some Col" text);
        "#,
    )
    .await;
    let table_sql = r#""Odd Schema"."Mixed ""Case"" Table""#;
    let cap = Capture::new(&db, &[table_sql], &[]);
    let mut engine = cap.start(&db).await;

    db.exec(&format!("INSERT INTO {table_sql} VALUES (1, 'first')"))
        .await;
    let ins = db.to_jsonb_rows(table_sql, "Id").await["1"].clone();
    db.exec(&format!(
        r#"UPDATE {table_sql} SET "Some Col" = 'second' WHERE "Id" = 1"#
    ))
    .await;
    let upd = db.to_jsonb_rows(table_sql, "Id").await["1"].clone();
    db.exec(&format!(r#"DELETE FROM {table_sql} WHERE "Id" = 1"#))
        .await;

    cap.wait_lines(&mut engine, 3, TIMEOUT).await;
    engine.stop_clean(STOP_TIMEOUT, "stop").await;
    let lines = cap.lines();
    assert_eq!(lines.len(), 3, "{}", pretty(&lines));
    for l in &lines {
        assert_eq!(l["source"]["schema"], "Odd Schema", "{l}");
        assert_eq!(l["source"]["table"], "Mixed \"Case\" Table", "{l}");
    }
    assert_eq!(op(&lines[0]), "c");
    assert_eq!(lines[0]["after"], json!({"Id": 1, "Some Col": "first"}));
    assert_eq!(lines[0]["after"], ins);
    assert_eq!(op(&lines[1]), "u");
    assert!(lines[1]["before"].is_null());
    assert_eq!(lines[1]["after"], upd);
    assert_eq!(op(&lines[2]), "d");
    assert_eq!(lines[2]["before"], json!({"Id": 1}));
    assert!(lines[2]["after"].is_null());
    db.cleanup().await;
}

// --------------------------------------------- 7. resume after restart

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_restart_resumes_without_duplicates() {
    let db = TestDb::create("stream_resume").await;
    db.exec("CREATE TABLE public.resume (id int PRIMARY KEY, v text)")
        .await;
    let cap = Capture::new(&db, &["public.resume"], &[]);
    let mut engine = cap.start(&db).await;

    // 100 rows in 10 transactions.
    for t in 0..10 {
        db.exec(&format!(
            "INSERT INTO public.resume SELECT g, 'first run ' || g FROM generate_series({}, {}) g",
            t * 10 + 1,
            t * 10 + 10
        ))
        .await;
    }
    cap.wait_lines(&mut engine, 100, TIMEOUT).await;
    engine.stop_clean(STOP_TIMEOUT, "stop").await;
    let first_run = cap.lines();
    assert_eq!(first_run.len(), 100, "{}", pretty(&first_run));

    let last_commit = first_run.iter().map(commit_lsn).max().unwrap();
    assert_eq!(commit_lsn(first_run.last().unwrap()), last_commit);
    let confirmed = db
        .query_text(&format!(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{}'",
            cap.slot
        ))
        .await
        .expect("the slot and its confirmed_flush_lsn");
    let confirmed_u64 = parse_lsn(&confirmed);
    assert!(
        confirmed_u64 >= last_commit,
        "confirmed_flush_lsn {confirmed} ({confirmed_u64}) is before the last delivered commit {last_commit}\n{}",
        engine.output_report()
    );
    // The harness's parser agrees.
    assert_eq!(
        db.slot_confirmed_flush_lsn(&cap.slot).await.map(|l| l.0),
        Some(confirmed_u64)
    );

    // 50 more while the engine is stopped.
    for t in 10..15 {
        db.exec(&format!(
            "INSERT INTO public.resume SELECT g, 'while stopped ' || g FROM generate_series({}, {}) g",
            t * 10 + 1,
            t * 10 + 10
        ))
        .await;
    }

    let mut engine = cap.start(&db).await;
    cap.wait_lines(&mut engine, 150, TIMEOUT).await;
    // A fence row committed after them: the stream is in commit order, so
    // once it is delivered any duplicate of an earlier row would be too.
    db.exec("INSERT INTO public.resume VALUES (1000, 'fence')")
        .await;
    cap.wait_lines(&mut engine, 151, TIMEOUT).await;
    engine.stop_clean(STOP_TIMEOUT, "stop").await;
    let mut all = cap.lines();
    assert_eq!(
        all.last().map(|l| key_text(l, "id")).as_deref(),
        Some("1000"),
        "the fence row must come last; new lines:\n{}",
        pretty(&all[100.min(all.len())..])
    );
    all.pop();
    assert_eq!(
        all.len(),
        150,
        "exactly the 50 new rows expected after the restart; new lines:\n{}",
        pretty(&all[100.min(all.len())..])
    );
    assert_eq!(all[..100], first_run[..], "the first run's lines changed");
    let new_ids: Vec<String> = all[100..].iter().map(|l| key_text(l, "id")).collect();
    let want: Vec<String> = (101..=150).map(|i: i32| i.to_string()).collect();
    assert_eq!(new_ids, want);
    for l in &all[100..] {
        assert_eq!(op(l), "c", "{l}");
        assert!(commit_lsn(l) > last_commit, "{l}");
    }
    db.cleanup().await;
}
