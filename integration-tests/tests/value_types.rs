//! The value parsers against a real PostgreSQL: for a cell of every
//! supported type, `write_value(ValueType::parse(output text))` must be
//! the JSON `to_jsonb(cell)` prints; and so must every cell the snapshot
//! reader reads, in text and in binary `COPY` (`BinaryType::decode`), for
//! the awkward values of each type and for random values over each type's
//! range.
//!
//! The output text is read through the simple-query protocol, which returns
//! every column in its type's text output format: exactly what pgoutput
//! sends and what `COPY … TO STDOUT` prints (before COPY's own escaping).
//! (`col::text` is not always that: `bool::text` is `true`, `bpchar::text`
//! drops the padding, `inet::text` always shows the netmask.)

use std::collections::HashMap;
use std::sync::Arc;

use cdc_core::encode::write_value;
use cdc_core::{Row, TableName, TableSchema, Value};
use cdc_postgres::catalog::RelationInfo;
use cdc_postgres::snapshot::{describe_table, ChunkBounds, CopyFormat, ReadFormat};
use cdc_postgres::value::{load_value_types, BinaryType, ScalarKind, ValueType};
use integration_tests::chunk_reads::{read_chunk_rows_on, ChunkReader};
use integration_tests::value_columns::{create_value_table, SETUP};
use integration_tests::{quote_ident, TestDb};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Row as _, ValueRef};

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
    table: &str,
    column: &str,
) -> Vec<(i32, Option<Vec<u8>>, Option<String>)> {
    let c = quote_ident(column);
    let t = quote_ident(table);
    let sql = format!("SELECT id, {c}, to_jsonb({c})::text FROM {t} ORDER BY id");
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
        for (id, text, jsonb) in cells(&mut conn, "vt", column).await {
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

/// Every row of `info`'s columns read by the snapshot reader in `format`
/// on `reader` (one chunk: the whole table).
async fn read_table(reader: ChunkReader<'_>, info: &RelationInfo, format: ReadFormat) -> Vec<Row> {
    let bounds = ChunkBounds::Ctid {
        start_block: 0,
        end_block: None,
    };
    read_chunk_rows_on(reader, info, &bounds, format, 64).await
}

/// `info` with only the columns that have a binary decoder.
fn binary_columns(info: &RelationInfo) -> RelationInfo {
    let (columns, types) = info
        .schema
        .columns
        .iter()
        .zip(&info.types)
        .filter(|(c, _)| BinaryType::builtin(c.type_oid).is_some())
        .map(|(c, t)| (c.clone(), *t))
        .unzip();
    RelationInfo {
        schema: Arc::new(TableSchema {
            columns,
            ..(*info.schema).clone()
        }),
        types,
        row_filter: None,
        wire: None,
    }
}

/// Compares every cell `rows` hold (rows of `info`, the first column `id`)
/// with `to_jsonb` of the same cell; returns the differences and how many
/// cells were compared.
async fn diff_with_to_jsonb(
    conn: &mut PgConnection,
    table: &str,
    info: &RelationInfo,
    rows: &[Row],
) -> (Vec<String>, usize) {
    let mut by_id = HashMap::new();
    for row in rows {
        let Some(Value::Int4(id)) = row.values().first() else {
            panic!("{table}: a row without its int4 id: {row:?}");
        };
        by_id.insert(*id, row);
    }
    let mut failures = Vec::new();
    let mut compared = 0;
    for (i, column) in info.schema.columns.iter().enumerate().skip(1) {
        for (id, _, jsonb) in cells(conn, table, &column.name).await {
            let row = by_id
                .get(&id)
                .unwrap_or_else(|| panic!("{table}: row {id} was not read"));
            let mut ours = Vec::new();
            write_value(&mut ours, &row.values()[i]);
            let ours: serde_json::Value = serde_json::from_slice(&ours)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e})", String::from_utf8_lossy(&ours)));
            let want = jsonb.map_or(serde_json::Value::Null, |j| {
                serde_json::from_str(&j).unwrap()
            });
            compared += 1;
            if ours != want {
                failures.push(format!(
                    "{} ({}) row {id}: ours {ours}, to_jsonb {want}",
                    column.name, column.type_name
                ));
            }
        }
    }
    assert_eq!(by_id.len(), rows.len(), "{table}: an id read twice");
    (failures, compared)
}

/// Reads `table` (`info`'s columns) in `format`, on a driver connection
/// and on the readers' own COPY connection to `url`, and compares every
/// cell with `to_jsonb`: a report of the first 20 differences of each
/// read, if any, and how many cells each read compared.
async fn read_and_compare(
    conn: &mut PgConnection,
    url: &str,
    table: &str,
    info: &RelationInfo,
    format: ReadFormat,
) -> (Vec<String>, usize) {
    let driver = read_table(ChunkReader::Driver(conn), info, format).await;
    let own = read_table(ChunkReader::Own(url), info, format).await;
    let mut reports = Vec::new();
    let mut counts = Vec::new();
    for (via, rows) in [("driver", driver), ("own", own)] {
        let (failures, compared) = diff_with_to_jsonb(conn, table, info, &rows).await;
        counts.push(compared);
        if !failures.is_empty() {
            let first: Vec<&str> = failures.iter().take(20).map(String::as_str).collect();
            reports.push(format!(
                "{format:?} on the {via} connection: {} of {compared} cells differ, the first:\n{}",
                failures.len(),
                first.join("\n")
            ));
        }
    }
    assert_eq!(
        counts[0], counts[1],
        "{format:?}: cells compared per connection"
    );
    (reports, counts[0])
}

/// The snapshot reader renders every cell like `to_jsonb` in both `COPY`
/// formats: text for every column, binary for every column of a built-in
/// type with a binary decoder (the value table's awkward values: NaN,
/// infinities, BC dates, huge numerics, multi-dimensional arrays, …).
#[tokio::test]
async fn snapshot_reads_render_every_type_like_to_jsonb_in_both_copy_formats() {
    let db = TestDb::create("value_copy").await;
    create_value_table(&db, "vt").await;
    let mut conn = pinned_connection(db.url()).await;
    let table = TableName::new("public", "vt");
    let info = describe_table(&mut conn, db.name(), &table).await.unwrap();
    let binary = binary_columns(&info);
    assert!(
        binary.schema.columns.len() > 40,
        "only {} columns with a binary decoder",
        binary.schema.columns.len()
    );
    assert_eq!(CopyFormat::Auto.for_table(&info.schema), ReadFormat::Text);
    assert_eq!(
        CopyFormat::Auto.for_table(&binary.schema),
        ReadFormat::Binary
    );

    let mut report = Vec::new();
    for (info, format) in [(&info, ReadFormat::Text), (&binary, ReadFormat::Binary)] {
        let (problems, compared) = read_and_compare(&mut conn, db.url(), "vt", info, format).await;
        assert!(compared > 200, "{format:?}: only {compared} cells compared");
        report.extend(problems);
    }
    let _ = conn.close().await;
    db.cleanup().await;
    assert!(report.is_empty(), "{}", report.join("\n"));
}

/// Random values over each type's range (timestamps from 4656 BC to
/// 293536 AD, dates, times, offsets, intervals of every sign, numerics of
/// every scale and weight, floats), read in both `COPY` formats: every cell
/// equals `to_jsonb`.
#[tokio::test]
async fn random_values_over_each_types_range_render_alike_in_both_copy_formats() {
    let db = TestDb::create("value_random").await;
    db.exec(
        "SELECT setseed(0.42);
         CREATE TABLE rnd AS
         SELECT g::int AS id,
                timestamptz '2000-01-01 00:00:00+00' + make_interval(secs => CASE g % 3
                    WHEN 0 THEN -random() * 2.1e11
                    WHEN 1 THEN random() * 9.2e12
                    ELSE (random() - 0.5) * 2e9 END) AS tstz,
                timestamp '2000-01-01' + make_interval(secs => CASE g % 3
                    WHEN 0 THEN -random() * 2.1e11
                    WHEN 1 THEN random() * 9.2e12
                    ELSE (random() - 0.5) * 2e9 END) AS ts,
                date '4713-01-01 BC' + (random() * 2147000000)::int AS d,
                time '00:00' + random() * interval '24 hours' AS t,
                (time '00:00' + random() * interval '24 hours')::timetz
                    AT TIME ZONE (((random() * 1559)::int - 779) * interval '1 minute') AS ttz,
                make_interval(
                    (random() * 2000 - 1000)::int, (random() * 30 - 15)::int, 0,
                    (random() * 200 - 100)::int, (random() * 100 - 50)::int, 0,
                    (random() * 200000 - 100000)::float8 / 1000) AS iv,
                round(((random() - 0.5) * 10 ^ (random() * 60 - 20))::numeric, (random() * 40)::int) AS n,
                ((random() - 0.5) * 10 ^ (random() * 600 - 300))::float8 AS f8,
                ((random() - 0.5) * 10 ^ (random() * 70 - 35))::float4 AS f4
         FROM generate_series(1, 20000) g;",
    )
    .await;
    let mut conn = pinned_connection(db.url()).await;
    let table = TableName::new("public", "rnd");
    let info = describe_table(&mut conn, db.name(), &table).await.unwrap();
    assert_eq!(CopyFormat::Auto.for_table(&info.schema), ReadFormat::Binary);
    let mut report = Vec::new();
    for format in [ReadFormat::Text, ReadFormat::Binary] {
        let (problems, compared) =
            read_and_compare(&mut conn, db.url(), "rnd", &info, format).await;
        assert_eq!(compared, 20_000 * 9, "{format:?}");
        report.extend(problems);
    }
    let _ = conn.close().await;
    db.cleanup().await;
    assert!(report.is_empty(), "{}", report.join("\n"));
}

/// Every built-in type with a binary decoder is what the catalog says it
/// is: its send function is the one the decoder reads (`array_send` for
/// the arrays).
#[tokio::test]
async fn binary_decoders_match_the_catalogs_send_functions() {
    let db = TestDb::create("value_send").await;
    let mut conn = pinned_connection(db.url()).await;
    let rows = sqlx::query(
        "SELECT oid::int8, typname::text, typsend::text FROM pg_type WHERE oid < 16384",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let scalar_sends = [
        "boolsend",
        "int2send",
        "int4send",
        "int8send",
        "float4send",
        "float8send",
        "numeric_send",
        "textsend",
        "varcharsend",
        "bpcharsend",
        "namesend",
        "charsend",
        "byteasend",
        "json_send",
        "jsonb_send",
        "uuid_send",
        "date_send",
        "time_send",
        "timetz_send",
        "timestamp_send",
        "timestamptz_send",
        "interval_send",
    ];
    let mut checked = 0;
    for row in &rows {
        let oid = u32::try_from(row.get::<i64, _>(0)).unwrap();
        let name: String = row.get(1);
        let send: String = row.get(2);
        let Some(_) = BinaryType::builtin(oid) else {
            continue;
        };
        checked += 1;
        let want_array = ValueType::builtin(oid).unwrap().array;
        if want_array {
            assert_eq!(send, "array_send", "{name} ({oid})");
        } else {
            assert!(
                scalar_sends.contains(&send.as_str()),
                "{name} ({oid}): {send}"
            );
        }
    }
    assert_eq!(checked, 2 * 22, "built-in types with a binary decoder");
    let _ = conn.close().await;
    db.cleanup().await;
}
