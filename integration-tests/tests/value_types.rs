//! The text-value parser against a real PostgreSQL 15: for a cell of every
//! supported type, `write_value(ValueType::parse(output text))` must be
//! the JSON `to_jsonb(cell)` prints.
//!
//! The output text is read through the simple-query protocol, which returns
//! every column in its type's text output format: exactly what pgoutput
//! sends and what `COPY … TO STDOUT` prints (before COPY's own escaping).
//! (`col::text` is not always that: `bool::text` is `true`, `bpchar::text`
//! drops the padding, `inet::text` always shows the netmask.)

use std::collections::HashMap;

use cdc_core::encode::write_value;
use cdc_postgres::value::{load_value_types, ScalarKind, ValueType};
use integration_tests::value_columns::{create_value_table, SETUP};
use integration_tests::{quote_ident, TestDb};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Row, ValueRef};

/// The session settings the replication and snapshot connections pin.
const PINNED: &str = "SET DateStyle = ISO; SET TimeZone = 'UTC'; SET IntervalStyle = postgres; \
                      SET extra_float_digits = 3; SET bytea_output = hex;";

async fn pinned_connection(url: &str) -> PgConnection {
    let mut conn = PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    sqlx::raw_sql(PINNED).execute(&mut conn).await.unwrap();
    conn
}

/// `(output text, to_jsonb text)` of every row of one column, by id; `None`
/// for SQL NULL. Read with the simple-query protocol: text format.
async fn cells(
    conn: &mut PgConnection,
    column: &str,
) -> Vec<(i32, Option<Vec<u8>>, Option<String>)> {
    let c = quote_ident(column);
    let sql = format!("SELECT id, {c}, to_jsonb({c})::text FROM vt ORDER BY id");
    let rows = sqlx::raw_sql(AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("reading {column}: {e}"));
    rows.iter()
        .map(|row| {
            let raw = |i: usize| -> Option<Vec<u8>> {
                let v = row.try_get_raw(i).unwrap();
                if v.is_null() {
                    None
                } else {
                    Some(v.as_bytes().unwrap().to_vec())
                }
            };
            let id: i32 = std::str::from_utf8(&raw(0).unwrap())
                .unwrap()
                .parse()
                .unwrap();
            let jsonb = raw(2).map(jsonb_text);
            (id, raw(1), jsonb)
        })
        .collect()
}

/// `to_jsonb`'s text. PostgreSQL 14 prints a `"char"` byte of 128 or more
/// as the byte itself (not UTF-8: `"\xC3"`), 15 and later as `\ooo`: the
/// engine renders it as 15 does on every version, so that is expected.
fn jsonb_text(bytes: Vec<u8>) -> String {
    match bytes.as_slice() {
        &[b'"', byte, b'"'] if byte >= 0x80 => format!("\"\\\\{byte:03o}\""),
        _ => String::from_utf8(bytes).unwrap(),
    }
}

#[tokio::test]
async fn every_type_renders_like_to_jsonb() {
    let db = TestDb::create("value_types").await;
    let columns = create_value_table(&db, "vt").await;

    let mut conn = pinned_connection(db.url()).await;
    let atts = sqlx::query(
        "SELECT attname::text, atttypid::int8 FROM pg_attribute \
         WHERE attrelid = 'vt'::regclass AND attnum > 1 AND NOT attisdropped ORDER BY attnum",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let atts: Vec<(String, u32)> = atts
        .iter()
        .map(|r| {
            let oid: i64 = r.get(1);
            (r.get(0), u32::try_from(oid).unwrap())
        })
        .collect();
    let oids: Vec<u32> = atts.iter().map(|(_, oid)| *oid).collect();
    let types = load_value_types(&mut conn, &oids).await.unwrap();
    assert_eq!(atts.len(), columns.len());

    let mut failures = Vec::new();
    let mut compared = 0;
    for (column, oid) in &atts {
        let (type_name, value_type) = types
            .get(oid)
            .unwrap_or_else(|| panic!("no type loaded for {column} (oid {oid})"));
        if let Some(builtin) = ValueType::builtin(*oid) {
            assert_eq!(&builtin, value_type, "{column}: builtin vs catalog");
        }
        for (id, text, jsonb) in cells(&mut conn, column).await {
            let Some(text) = text else {
                assert_eq!(
                    jsonb, None,
                    "{column} row {id}: NULL text, non-NULL to_jsonb"
                );
                continue;
            };
            let jsonb = jsonb.unwrap_or_else(|| panic!("{column} row {id}: to_jsonb is NULL"));
            let shown = String::from_utf8_lossy(&text);
            let value = match value_type.parse(&text) {
                Ok(v) => v,
                Err(e) => {
                    failures.push(format!("{column} ({type_name}) row {id}: {e}"));
                    continue;
                }
            };
            let mut ours = Vec::new();
            write_value(&mut ours, &value);
            let ours_json: serde_json::Value = match serde_json::from_slice(&ours) {
                Ok(v) => v,
                Err(e) => {
                    failures.push(format!(
                        "{column} ({type_name}) row {id}: our output is not JSON ({e}): {}",
                        String::from_utf8_lossy(&ours)
                    ));
                    continue;
                }
            };
            let want: serde_json::Value = serde_json::from_str(&jsonb).unwrap();
            compared += 1;
            if ours_json != want {
                failures.push(format!(
                    "{column} ({type_name}) row {id}: text {shown:?}\n    ours:     {}\n    to_jsonb: {jsonb}",
                    String::from_utf8_lossy(&ours)
                ));
            }
        }
    }
    let _ = conn.close().await;
    db.cleanup().await;
    assert!(
        failures.is_empty(),
        "{} of {compared} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(compared > 200, "only {compared} cells compared");
}

/// The parser kind `ValueType::builtin` must give a built-in scalar type,
/// by `typname`.
fn expected_kind(typname: &str) -> ScalarKind {
    match typname {
        "bool" => ScalarKind::Bool,
        "int2" => ScalarKind::Int2,
        "int4" => ScalarKind::Int4,
        "int8" => ScalarKind::Int8,
        "float4" => ScalarKind::Float4,
        "float8" => ScalarKind::Float8,
        "numeric" => ScalarKind::Numeric,
        "text" | "varchar" | "bpchar" | "name" | "char" => ScalarKind::Text,
        "bytea" => ScalarKind::Bytea,
        "json" | "jsonb" => ScalarKind::Json,
        "uuid" => ScalarKind::Uuid,
        "date" => ScalarKind::Date,
        "time" => ScalarKind::Time,
        "timetz" => ScalarKind::TimeTz,
        "timestamp" => ScalarKind::Timestamp,
        "timestamptz" => ScalarKind::TimestampTz,
        "interval" => ScalarKind::Interval,
        _ => ScalarKind::Other,
    }
}

/// Every OID in `ValueType::builtin`'s table is checked against the
/// server's `pg_type`: right type, right array-ness, right delimiter.
#[tokio::test]
async fn builtin_table_matches_the_catalog() {
    let db = TestDb::create("value_builtin").await;
    let mut conn = pinned_connection(db.url()).await;
    let rows = sqlx::query(
        "SELECT t.oid::int8, t.typname::text, (t.typelem <> 0 AND t.typlen = -1) AS is_array, \
                coalesce(e.typname::text, ''), t.typdelim::text, coalesce(e.typdelim::text, '') \
         FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem \
         WHERE t.oid < 16384",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut checked = 0;
    let mut seen = HashMap::new();
    for row in &rows {
        let oid = u32::try_from(row.get::<i64, _>(0)).unwrap();
        let name: String = row.get(1);
        let is_array: bool = row.get(2);
        let elem_name: String = row.get(3);
        let delim: String = row.get(4);
        let elem_delim: String = row.get(5);
        seen.insert(oid, name.clone());
        let Some(vt) = ValueType::builtin(oid) else {
            continue;
        };
        checked += 1;
        assert_eq!(vt.array, is_array, "{name} ({oid})");
        if is_array {
            assert_eq!(vt.scalar, expected_kind(&elem_name), "{name} ({oid})");
            assert_eq!(vt.delimiter, elem_delim.as_bytes()[0], "{name} ({oid})");
        } else {
            assert_eq!(vt.scalar, expected_kind(&name), "{name} ({oid})");
            assert_eq!(vt.delimiter, delim.as_bytes()[0], "{name} ({oid})");
        }
    }
    // Every type the parser has a dedicated kind for, and its array, is in
    // the table.
    for (oid, name) in &seen {
        let base = name.strip_prefix('_').unwrap_or(name);
        if expected_kind(base) != ScalarKind::Other {
            assert!(
                ValueType::builtin(*oid).is_some(),
                "{name} ({oid}) is missing from ValueType::builtin"
            );
        }
    }
    assert!(checked > 100, "only {checked} built-in OIDs checked");
    let _ = conn.close().await;
    db.cleanup().await;
}

/// `load_value_types` resolves user-defined types through one catalog
/// query: enums, domains (also over domains and arrays), arrays of domains,
/// and leaves out OIDs that do not exist.
#[tokio::test]
async fn load_value_types_resolves_user_types() {
    let db = TestDb::create("value_catalog").await;
    db.exec(SETUP).await;
    let mut conn = pinned_connection(db.url()).await;
    let names = [
        "mood", "_mood", "dnum", "_dnum", "ddnum", "dts", "_dts", "dtext", "darr", "dbox", "_dbox",
        "djson", "int4", "_box",
    ];
    let mut oids = Vec::new();
    for name in names {
        let oid: i64 = sqlx::query_scalar("SELECT oid::int8 FROM pg_type WHERE typname = $1")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        oids.push(u32::try_from(oid).unwrap());
    }
    oids.push(4_000_000_000); // no such type
    let types = load_value_types(&mut conn, &oids).await.unwrap();
    assert_eq!(types.len(), names.len());
    let get = |name: &str| {
        let i = names.iter().position(|n| *n == name).unwrap();
        let (typname, vt) = types.get(&oids[i]).unwrap();
        assert_eq!(typname, name);
        *vt
    };
    use ScalarKind as K;
    let semi = |scalar, array| ValueType {
        scalar,
        array,
        delimiter: b';',
    };
    assert_eq!(get("mood"), ValueType::scalar(K::Other));
    assert_eq!(get("_mood"), ValueType::array_of(K::Other));
    assert_eq!(get("dnum"), ValueType::scalar(K::Numeric));
    assert_eq!(get("_dnum"), ValueType::array_of(K::Numeric));
    assert_eq!(get("ddnum"), ValueType::scalar(K::Numeric));
    assert_eq!(get("dts"), ValueType::scalar(K::TimestampTz));
    assert_eq!(get("_dts"), ValueType::array_of(K::TimestampTz));
    assert_eq!(get("dtext"), ValueType::scalar(K::Text));
    assert_eq!(get("darr"), ValueType::array_of(K::Int4));
    assert_eq!(get("dbox"), semi(K::Other, false));
    assert_eq!(get("_dbox"), semi(K::Other, true));
    assert_eq!(get("djson"), ValueType::scalar(K::Json));
    assert_eq!(get("int4"), ValueType::scalar(K::Int4));
    assert_eq!(get("_box"), semi(K::Other, true));
    assert!(load_value_types(&mut conn, &[]).await.unwrap().is_empty());
    let _ = conn.close().await;
    db.cleanup().await;
}
