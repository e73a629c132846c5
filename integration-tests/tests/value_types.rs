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
use integration_tests::{quote_ident, TestDb};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Row, ValueRef};

/// The session settings the replication and snapshot connections pin.
const PINNED: &str = "SET DateStyle = ISO; SET TimeZone = 'UTC'; SET IntervalStyle = postgres; \
                      SET extra_float_digits = 3; SET bytea_output = hex;";

const SETUP: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'a,b "q"', 'NULL');
CREATE DOMAIN dnum AS numeric(12,3);
CREATE DOMAIN ddnum AS dnum CHECK (VALUE > -1000);
CREATE DOMAIN dts AS timestamptz;
CREATE DOMAIN dtext AS varchar(10);
CREATE DOMAIN darr AS int4[];
CREATE DOMAIN dbox AS box;
CREATE DOMAIN djson AS jsonb;
"#;

/// A column: name, SQL type, and SQL expressions for its values (row `i`
/// gets `values[i]`, NULL where the list is shorter).
struct Col {
    name: &'static str,
    ty: &'static str,
    values: &'static [&'static str],
}

const fn col(name: &'static str, ty: &'static str, values: &'static [&'static str]) -> Col {
    Col { name, ty, values }
}

const COLUMNS: &[Col] = &[
    // --- scalars
    col("c_bool", "bool", &["true", "false"]),
    col("c_int2", "int2", &["-32768", "32767", "0"]),
    col("c_int4", "int4", &["-2147483648", "2147483647", "0"]),
    col(
        "c_int8",
        "int8",
        &["-9223372036854775808", "9223372036854775807", "0"],
    ),
    col(
        "c_float4",
        "float4",
        &[
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "'3.4028235e38'",
            "'1.4e-45'",
            "'-0'",
            "'0.1'",
            "'1e-10'",
            "'123456.7'",
            "'1.17549435e-38'",
        ],
    ),
    col(
        "c_float8",
        "float8",
        &[
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "'1.7976931348623157e308'",
            "'5e-324'",
            "'-0'",
            "'0.1'",
            "'1e22'",
            "'1e-7'",
            "'2.2250738585072014e-308'",
            "pi()",
            "'-123456789.125'",
        ],
    ),
    col(
        "c_numeric",
        "numeric",
        &[
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
            "'12.500'",
            "'0'",
            "'-0.000001'",
            "(repeat('9', 1000) || '.' || repeat('1', 100))::numeric",
            "'1e-300'",
            "'-1e300'",
            "'0.0'",
        ],
    ),
    col("c_numeric_scaled", "numeric(10,3)", &["1.5", "-0.0004", "0"]),
    col(
        "c_text",
        "text",
        &[
            "''",
            "'hello'",
            r"E'tab\there\nnewline\r'",
            r#"'quote " back \ slash'"#,
            "'NULL'",
            "'ünï €😀'",
            r"E'\x01ctl\x1f'",
            "' lead trail '",
            "repeat('long ', 2000)",
        ],
    ),
    col("c_varchar", "varchar(20)", &["'abc'", "' lead trail '", "''"]),
    col("c_bpchar", "char(5)", &["'ab'", "''", "'abcde'", "'a b'"]),
    col("c_bpchar1", "char", &["'x'", "' '"]),
    col("c_name", "name", &["'some_name'", "'Mixed Case'"]),
    col("c_char", "\"char\"", &["'a'", r"'\'", "'é'", "' '", "''"]),
    col(
        "c_bytea",
        "bytea",
        &[
            r"'\x'",
            r"'\xdeadbeef00'",
            "decode(repeat('ff', 100), 'hex')",
            r"'\x5c22'",
        ],
    ),
    col(
        "c_json",
        "json",
        &[
            r#"'{"a": [1, 2.50, "x"], "b": null}'"#,
            r#"'"str"'"#,
            "'[]'",
            r#"' {"sp" :  1 , "t": true} '"#,
            "'null'",
            r#"'{"a": 1, "a": 2}'"#,
            r#"'"\u00e9 \" \\"'"#,
        ],
    ),
    col(
        "c_jsonb",
        "jsonb",
        &[
            r#"'{"b": 1, "a": [true, null, 1.50]}'"#,
            r#"'"s"'"#,
            "'null'",
            "'1e2'",
            r#"'{"nested": {"x": "\u00e9", "e": -0.0}}'"#,
            "'12345678901234567890.000001'",
        ],
    ),
    col(
        "c_uuid",
        "uuid",
        &[
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
            "'00000000-0000-0000-0000-000000000000'",
            "'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF'",
        ],
    ),
    col(
        "c_date",
        "date",
        &[
            "'2024-02-29'",
            "'infinity'",
            "'-infinity'",
            "'0044-03-15 BC'",
            "'4713-01-01 BC'",
            "'5874897-12-31'",
            "'0001-01-01'",
            "'0001-12-31 BC'",
        ],
    ),
    col(
        "c_time",
        "time",
        &[
            "'00:00'",
            "'23:59:59.999999'",
            "'24:00:00'",
            "'12:34:56.5'",
        ],
    ),
    col(
        "c_time_p0",
        "time(0)",
        &["'12:34:56.7'"],
    ),
    col(
        "c_timetz",
        "timetz",
        &[
            "'00:00+00'",
            "'12:34:56.789+05:30'",
            "'23:59:59.999999-15:59'",
            "'01:02:03+01:02:03'",
            "'24:00:00-03'",
        ],
    ),
    col(
        "c_timestamp",
        "timestamp",
        &[
            "'2024-01-01 00:00'",
            "'2024-01-01 12:34:56.789'",
            "'infinity'",
            "'-infinity'",
            "'0044-03-15 12:00:00.5 BC'",
            "'294276-12-31 23:59:59.999999'",
            "'4713-01-01 00:00 BC'",
            "'1999-12-31 23:59:59.000001'",
            "'10000-01-01 00:00'",
        ],
    ),
    col(
        "c_timestamptz",
        "timestamptz",
        &[
            "'2024-01-01 00:00+00'",
            "'2024-06-01 12:34:56.789+05:30'",
            "'infinity'",
            "'-infinity'",
            "'0044-03-15 12:00:00 BC'",
            "'294276-12-31 23:59:59.999999+00'",
            "'1900-01-01 00:00:00+01:30:15'",
            "'4713-11-24 00:00:00+00 BC'",
            "'2000-01-01 00:00:00.1-08'",
        ],
    ),
    col(
        "c_interval",
        "interval",
        &[
            "'1 year 2 mons 3 days 04:05:06.7'",
            "'-1 day'",
            "'0'",
            "'1 day -00:00:01'",
            "'-178956970 years -8 mons -2147483648 days'::interval - '2562047788:00:54.775807' - '00:00:00.000001'",
            "'178956970 years 7 mons 2147483647 days 2562047788:00:54.775807'",
            "'100 years'",
            "'-00:00:00.000001'",
            "'1 mon'",
        ],
    ),
    col(
        "c_inet",
        "inet",
        &[
            "'192.168.0.1'",
            "'192.168.0.0/24'",
            "'::1'",
            "'2001:db8::1/64'",
        ],
    ),
    col("c_cidr", "cidr", &["'10.0.0.0/8'", "'2001:db8::/32'"]),
    col("c_macaddr", "macaddr", &["'08:00:2b:01:02:03'"]),
    col("c_macaddr8", "macaddr8", &["'08:00:2b:01:02:03:04:05'"]),
    col("c_money", "money", &["'1234.56'", "'-0.01'", "'0'"]),
    col("c_bit", "bit(4)", &["B'0101'"]),
    col("c_varbit", "varbit", &["B''", "B'1'", "B'1010101010'"]),
    col("c_box", "box", &["'((1,1),(0,0))'", "'((-1.5,2),(3,4e10))'"]),
    col("c_point", "point", &["'(1.5,-2)'"]),
    col("c_polygon", "polygon", &["'((0,0),(1,1),(1,0))'"]),
    col("c_int4range", "int4range", &["'[1,5)'", "'empty'"]),
    col(
        "c_tstzrange",
        "tstzrange",
        &["'[2024-01-01,infinity)'"],
    ),
    col("c_xml", "xml", &["'<a b=\"1\">x &amp; y</a>'"]),
    col("c_oid", "oid", &["12345", "4294967295"]),
    col("c_pg_lsn", "pg_lsn", &["'0/16B3748'", "'FFFFFFFF/FFFFFFFF'"]),
    col("c_tsvector", "tsvector", &["'a fat cat''s'"]),
    col("c_mood", "mood", &["'sad'", r#"'a,b "q"'"#, "'NULL'"]),
    col("c_dnum", "dnum", &["1.5", "-0.001", "123456789.123"]),
    col("c_ddnum", "ddnum", &["2"]),
    col(
        "c_dts",
        "dts",
        &["'2024-01-01 00:00+00'", "'0044-03-15 12:00:00 BC'"],
    ),
    col("c_dtext", "dtext", &["'x'", "' y '"]),
    col("c_darr", "darr", &["'{1,NULL}'", "'[0:1]={1,2}'", "'{}'"]),
    col("c_dbox", "dbox", &["'((1,1),(0,0))'"]),
    col("c_djson", "djson", &[r#"'{"k": [1, "v"]}'"#]),
    // --- arrays
    col(
        "a_int4",
        "int4[]",
        &[
            "'{}'",
            "'{1,NULL,3}'",
            "'[0:1]={1,2}'",
            "'{{1,NULL},{3,4}}'",
            "'[-1:0][2:3]={{1,2},{3,4}}'",
            "'{{{1},{2}},{{3},{4}}}'",
            "'{NULL}'",
        ],
    ),
    col("a_int2", "int2[]", &["'{-32768,32767}'"]),
    col("a_int8", "int8[]", &["'{1,-9223372036854775808,NULL}'"]),
    col("a_bool", "bool[]", &["'{t,f,NULL}'", "'{{t},{f}}'"]),
    col(
        "a_float4",
        "float4[]",
        &["'{NaN,Infinity,-Infinity,1.4e-45,0.1,-0}'"],
    ),
    col(
        "a_float8",
        "float8[]",
        &["'{1e300,-0,NaN,5e-324,NULL}'", "'{{1.5,2},{3,4}}'"],
    ),
    col(
        "a_numeric",
        "numeric[]",
        &["'{1.50,NaN,-Infinity,Infinity,NULL,0.000}'"],
    ),
    col(
        "a_text",
        "text[]",
        &[
            r#"ARRAY['', 'NULL', 'null', 'a b', 'x"y\z', NULL, '{', '}', ',', ';', ' lead', 'trail ', E'tab\t', 'ünï', 'plain']"#,
            r#"'{{a,b},{NULL,"c d"}}'"#,
            "'{}'",
            r#"ARRAY[E'new\nline', '"', '\', 'a\b']"#,
        ],
    ),
    col("a_varchar", "varchar(5)[]", &["ARRAY['a', 'b c', NULL]"]),
    col(
        "a_bpchar",
        "char(3)[]",
        &["ARRAY['a'::char(3), 'abc', NULL, '']"],
    ),
    col("a_name", "name[]", &["ARRAY['n1'::name, 'N 2']"]),
    col("a_char", "\"char\"[]", &[r#"'{a,b,"\\",","}'"#]),
    col(
        "a_bytea",
        "bytea[]",
        &[r"ARRAY['\x'::bytea, '\x00ff', NULL, '\x5c']"],
    ),
    col(
        "a_json",
        "json[]",
        &[r#"ARRAY['{"a": 1}'::json, '[1, "x"]', 'null', '"s"', NULL, '{"q": "\"\\"}']"#],
    ),
    col(
        "a_jsonb",
        "jsonb[]",
        &[r#"ARRAY['{"a": 1}'::jsonb, '[1, "x"]', 'null', '"s"', NULL, '1.50']"#],
    ),
    col(
        "a_uuid",
        "uuid[]",
        &["ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, NULL]"],
    ),
    col(
        "a_date",
        "date[]",
        &[r#"'{2024-01-01,infinity,-infinity,"0044-03-15 BC",NULL}'"#],
    ),
    col("a_time", "time[]", &["ARRAY['00:00'::time, '24:00', '12:00:00.25']"]),
    col(
        "a_timetz",
        "timetz[]",
        &["ARRAY['00:00+00'::timetz, '12:00+05:30', NULL]"],
    ),
    col(
        "a_timestamp",
        "timestamp[]",
        &["ARRAY['2024-01-01 00:00'::timestamp, '0044-03-15 12:00 BC', 'infinity', NULL]"],
    ),
    col(
        "a_timestamptz",
        "timestamptz[]",
        &[
            "ARRAY['2024-01-01 00:00+00'::timestamptz, '0044-03-15 12:00:00.5 BC', '-infinity', NULL]",
            "'[2:3][1:2]={{\"2024-01-01 00:00+00\",NULL},{infinity,\"2000-01-01 00:00:00.123+02\"}}'",
        ],
    ),
    col(
        "a_interval",
        "interval[]",
        &["ARRAY['1 day'::interval, '-00:00:01', '1 year 2 mons', NULL]"],
    ),
    col(
        "a_inet",
        "inet[]",
        &["ARRAY['192.168.0.1'::inet, '10.0.0.0/8', '::1']"],
    ),
    col("a_cidr", "cidr[]", &["ARRAY['10.0.0.0/8'::cidr]"]),
    col("a_macaddr", "macaddr[]", &["ARRAY['08:00:2b:01:02:03'::macaddr]"]),
    col("a_money", "money[]", &["ARRAY['1234.56'::money, '-1']"]),
    col("a_bit", "bit(2)[]", &["ARRAY[B'01', B'10', NULL]"]),
    col("a_varbit", "varbit[]", &["ARRAY[B'', B'1']"]),
    col(
        "a_box",
        "box[]",
        &[
            "ARRAY['((1,1),(0,0))'::box, '((3,3),(2,2))', NULL]",
            "'{{(1,1),(0,0);(2,2),(1,1)};{(3,3),(2,2);(4,4),(3,3)}}'",
        ],
    ),
    col("a_point", "point[]", &["ARRAY['(1,2)'::point, '(3.5,-4)']"]),
    col(
        "a_int4range",
        "int4range[]",
        &["ARRAY['[1,5)'::int4range, 'empty', NULL]"],
    ),
    col(
        "a_mood",
        "mood[]",
        &[r#"ARRAY['sad'::mood, 'a,b "q"', NULL, 'NULL']"#],
    ),
    col("a_dnum", "dnum[]", &["ARRAY[1.5::dnum, NULL, -2]"]),
    col(
        "a_dts",
        "dts[]",
        &["ARRAY['2024-01-01 00:00+00'::dts, '0001-01-01 00:00+00 BC']"],
    ),
    col(
        "a_dbox",
        "dbox[]",
        &["ARRAY['((1,1),(0,0))'::dbox, '((3,3),(2,2))']"],
    ),
    col("a_dtext", "dtext[]", &["ARRAY['a'::dtext, ' b ', NULL]"]),
    col("a_xml", "xml[]", &["ARRAY['<a/>'::xml]"]),
];

/// Columns of the `citext` extension, used when the server has it.
const CITEXT_COLUMNS: &[Col] = &[
    col("c_citext", "citext", &["'MiXeD'", "''"]),
    col("a_citext", "citext[]", &["ARRAY['a'::citext, 'B c', NULL]"]),
];

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
            let jsonb = raw(2).map(|b| String::from_utf8(b).unwrap());
            (id, raw(1), jsonb)
        })
        .collect()
}

#[tokio::test]
async fn every_type_renders_like_to_jsonb() {
    let db = TestDb::create("value_types").await;
    db.exec(SETUP).await;
    let mut columns: Vec<&Col> = COLUMNS.iter().collect();
    match db.try_exec("CREATE EXTENSION IF NOT EXISTS citext").await {
        Ok(()) => columns.extend(CITEXT_COLUMNS),
        Err(e) => eprintln!("citext not available, its columns are skipped: {e}"),
    }

    let defs: Vec<String> = columns
        .iter()
        .map(|c| format!("{} {}", quote_ident(c.name), c.ty))
        .collect();
    db.exec(&format!(
        "CREATE TABLE vt (id int PRIMARY KEY, {})",
        defs.join(", ")
    ))
    .await;
    let rows = columns.iter().map(|c| c.values.len()).max().unwrap_or(0);
    for i in 0..rows {
        let names: Vec<String> = columns.iter().map(|c| quote_ident(c.name)).collect();
        let values: Vec<&str> = columns
            .iter()
            .map(|c| c.values.get(i).copied().unwrap_or("NULL"))
            .collect();
        db.exec(&format!(
            "INSERT INTO vt (id, {}) VALUES ({i}, {})",
            names.join(", "),
            values.join(", ")
        ))
        .await;
    }

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
