//! A table with a column of every type the value parser handles, and the
//! awkward values of each (NaN, infinities, BC dates, huge numerics, JSON
//! with duplicate keys, multi-dimensional arrays, ...): shared by the value
//! tests (`tests/value_types.rs`, against `to_jsonb`) and the sink tests
//! that index such rows (`tests/es_sink.rs`).

use crate::{quote_ident, TestDb};

/// Types and domains the columns use; run once per database.
pub const SETUP: &str = r#"
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
pub struct Col {
    /// Column name.
    pub name: &'static str,
    /// SQL type.
    pub ty: &'static str,
    /// SQL expressions of its values by row.
    pub values: &'static [&'static str],
}

pub const fn col(name: &'static str, ty: &'static str, values: &'static [&'static str]) -> Col {
    Col { name, ty, values }
}

pub const COLUMNS: &[Col] = &[
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
            r#"'{"a": [1, 2.50, null]}'"#,
            r#"'{"o": {"k": 1, "k": [2]}, "z": "x", "\u007a": 0}'"#,
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
pub const CITEXT_COLUMNS: &[Col] = &[
    col("c_citext", "citext", &["'MiXeD'", "''"]),
    col("a_citext", "citext[]", &["ARRAY['a'::citext, 'B c', NULL]"]),
];

/// The extreme intervals of PostgreSQL 15 and 16: every field at its
/// limit.
pub const INTERVAL_EDGES_15: &[Col] = &[col(
    "c_interval_edge",
    "interval",
    &[
        "'-178956970 years -8 mons -2147483648 days'::interval - '2562047788:00:54.775807' - '00:00:00.000001'",
        "'178956970 years 7 mons 2147483647 days 2562047788:00:54.775807'",
    ],
)];

/// PostgreSQL 14 reads no hours field past 2^31 (and its interval
/// arithmetic refuses to get there): the largest it takes as text.
pub const INTERVAL_EDGES_14: &[Col] = &[col(
    "c_interval_edge",
    "interval",
    &[
        "'-178956970 years -8 mons -2147483648 days -2147483647:59:59.999999'",
        "'178956970 years 7 mons 2147483647 days 2147483647:59:59.999999'",
    ],
)];

/// From PostgreSQL 17 the extreme values are the infinite intervals
/// (`infinity`, `-infinity`, new in 17): the finite ones next to them,
/// and the infinities, alone and in an array.
pub const INTERVAL_EDGES_17: &[Col] = &[
    col(
        "c_interval_edge",
        "interval",
        &[
            "'-178956970 years -8 mons -2147483648 days'::interval - '2562047788:00:54.775807'",
            "'178956970 years 7 mons 2147483647 days 2562047788:00:54.775806'",
            "'infinity'",
            "'-infinity'",
        ],
    ),
    col(
        "a_interval_edge",
        "interval[]",
        &["ARRAY['infinity'::interval, '-infinity', '1 day', NULL]"],
    ),
];

/// The columns a table built by [`create_value_table`] has on this server:
/// [`COLUMNS`], the extreme intervals of its version
/// ([`INTERVAL_EDGES_14`], [`INTERVAL_EDGES_15`], [`INTERVAL_EDGES_17`]),
/// plus [`CITEXT_COLUMNS`] when the `citext` extension can be created.
pub async fn value_columns(db: &TestDb) -> Vec<&'static Col> {
    let mut columns: Vec<&Col> = COLUMNS.iter().collect();
    columns.extend(match db.server_version_num().await {
        ..150_000 => INTERVAL_EDGES_14,
        150_000..170_000 => INTERVAL_EDGES_15,
        _ => INTERVAL_EDGES_17,
    });
    match db.try_exec("CREATE EXTENSION IF NOT EXISTS citext").await {
        Ok(()) => columns.extend(CITEXT_COLUMNS),
        Err(e) => eprintln!("citext not available, its columns are skipped: {e}"),
    }
    columns
}

/// Runs [`SETUP`], creates `table` (`id int PRIMARY KEY` and every column
/// of [`value_columns`]) and fills it with [`insert_value_rows`] from id
/// 0. Returns the columns.
pub async fn create_value_table(db: &TestDb, table: &str) -> Vec<&'static Col> {
    db.exec(SETUP).await;
    let columns = value_columns(db).await;
    let defs: Vec<String> = columns
        .iter()
        .map(|c| format!("{} {}", quote_ident(c.name), c.ty))
        .collect();
    db.exec(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, {})",
        defs.join(", ")
    ))
    .await;
    insert_value_rows(db, table, &columns, 0).await;
    columns
}

/// Inserts the value rows into `table`: row `i` gets id `first_id + i` and
/// the `i`-th value of each column (NULL where a column has fewer), one
/// statement per row.
pub async fn insert_value_rows(db: &TestDb, table: &str, columns: &[&Col], first_id: i32) {
    let rows = columns.iter().map(|c| c.values.len()).max().unwrap_or(0);
    let names: Vec<String> = columns.iter().map(|c| quote_ident(c.name)).collect();
    for i in 0..rows {
        let values: Vec<&str> = columns
            .iter()
            .map(|c| c.values.get(i).copied().unwrap_or("NULL"))
            .collect();
        let id = first_id + i32::try_from(i).unwrap_or(i32::MAX);
        db.exec(&format!(
            "INSERT INTO {table} (id, {}) VALUES ({id}, {})",
            names.join(", "),
            values.join(", ")
        ))
        .await;
    }
}
