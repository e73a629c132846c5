//! One value as PostgreSQL's `to_jsonb` renders it.

use super::float_text::write_float;
use super::json_text::{write_i64, write_json_string, HEX};
use crate::value::Value;

/// Appends `value` to `out` as JSON, byte-for-byte what PostgreSQL's
/// `to_jsonb(value)::text` prints (session `TimeZone=UTC`):
///
/// * integers, `numeric`, `float4`/`float8` as JSON numbers in plain
///   decimal notation (`1e+30` becomes `1000000000000000000000000000000`,
///   as jsonb's numeric does); `NaN` and `±Infinity` as strings;
/// * `bytea` as `"\\x…"` (lowercase hex), `uuid` in its canonical form;
/// * `json`/`jsonb` embedded as the document itself;
/// * arrays as (nested) JSON arrays;
/// * everything else as a JSON string of the value's rendering.
///
/// [`Value::UnchangedToast`] has no JSON form; callers leave such columns
/// out. Here it renders as `null`.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null | Value::UnchangedToast => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int2(v) => write_int(out, i64::from(*v)),
        Value::Int4(v) => write_int(out, i64::from(*v)),
        Value::Int8(v) => write_int(out, *v),
        Value::Float4(v) => write_float(out, *v),
        Value::Float8(v) => write_float(out, *v),
        Value::Numeric(text) => {
            if is_json_number(text) {
                out.extend_from_slice(text.as_bytes());
            } else {
                write_json_string(out, text);
            }
        }
        Value::Json(text) => out.extend_from_slice(text.as_bytes()),
        Value::Bytea(bytes) => {
            out.extend_from_slice(b"\"\\\\x");
            for b in bytes.iter() {
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
            out.push(b'"');
        }
        Value::Uuid(bytes) => {
            out.push(b'"');
            for (i, b) in bytes.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    out.push(b'-');
                }
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
            out.push(b'"');
        }
        Value::Array(items) => write_json_array(out, items, write_value),
        Value::Text(s)
        | Value::Date(s)
        | Value::Time(s)
        | Value::TimeTz(s)
        | Value::Timestamp(s)
        | Value::TimestampTz(s)
        | Value::Interval(s)
        | Value::Other(s) => write_json_string(out, s),
    }
}

/// Appends `items` to `out` as a JSON array the way `to_jsonb` prints one
/// (`[1, 2]`: a comma and a space between items), each item written by
/// `write` ([`write_value`], or a sink's own rendering of some values).
pub fn write_json_array(out: &mut Vec<u8>, items: &[Value], write: impl Fn(&mut Vec<u8>, &Value)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        write(out, item);
    }
    out.push(b']');
}

fn write_int(out: &mut Vec<u8>, v: i64) {
    write_i64(out, v);
}

/// `true` when `text` is a JSON number (PostgreSQL's `numeric` output always
/// is, apart from `NaN` and the infinities).
fn is_json_number(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_len = i - int_start;
    if int_len == 0 || (int_len > 1 && b[int_start] == b'0') {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == frac_start {
            return false;
        }
    }
    i == b.len()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn render(v: &Value) -> String {
        let mut out = Vec::new();
        write_value(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_render_as_jsonb_numerics() {
        let cases: &[(f64, &str)] = &[
            (1e30, "1000000000000000000000000000000"),
            (1.5e-7, "0.00000015"),
            (-1.5e-7, "-0.00000015"),
            (123.0, "123"),
            (0.1, "0.1"),
            (-0.0, "0"),
            (
                1.7976931348623157e308,
                &format!("17976931348623157{}", "0".repeat(292)),
            ),
            (5e-324, &format!("0.{}5", "0".repeat(323))),
            (123456.789, "123456.789"),
            (100.0, "100"),
            (0.000123, "0.000123"),
        ];
        for (v, want) in cases {
            assert_eq!(render(&Value::Float8(*v)), *want, "{v:e}");
        }
        assert_eq!(render(&Value::Float4(1.1)), "1.1");
        assert_eq!(
            render(&Value::Float4(3.4028235e38)),
            format!("34028235{}", "0".repeat(31))
        );
        assert_eq!(render(&Value::Float8(f64::NAN)), "\"NaN\"");
        assert_eq!(render(&Value::Float8(f64::NEG_INFINITY)), "\"-Infinity\"");
        assert_eq!(render(&Value::Float4(f32::INFINITY)), "\"Infinity\"");
    }

    #[test]
    fn other_values() {
        assert_eq!(render(&Value::Numeric("12.500".into())), "12.500");
        assert_eq!(render(&Value::Numeric("NaN".into())), "\"NaN\"");
        assert_eq!(render(&Value::Numeric("-Infinity".into())), "\"-Infinity\"");
        assert_eq!(
            render(&Value::Bytea(vec![0xde, 0xad, 0x01].into())),
            r#""\\xdead01""#
        );
        assert_eq!(
            render(&Value::Uuid([
                0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
                0x0a, 0x11
            ])),
            "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\""
        );
        let nested = Value::Array(
            vec![
                Value::Array(vec![Value::Int4(1), Value::Null].into()),
                Value::Array(vec![Value::Text("a\"b".into()), Value::Bool(true)].into()),
            ]
            .into(),
        );
        assert_eq!(render(&nested), r#"[[1, null], ["a\"b", true]]"#);
        assert_eq!(
            render(&Value::Json(r#"{"a": [1, 2]}"#.into())),
            r#"{"a": [1, 2]}"#
        );
        assert_eq!(render(&Value::Int8(i64::MIN)), "-9223372036854775808");
    }

    #[test]
    fn json_number_check() {
        for ok in ["0", "-1", "12.500", "0.001", "100"] {
            assert!(is_json_number(ok), "{ok}");
        }
        for bad in ["", "-", "NaN", "Infinity", "01", "1.", ".5", "1e5", "1 "] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn float8_plain_decimal_round_trips(v in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL) {
            let text = render(&Value::Float8(v));
            proptest::prop_assert!(!text.contains('e'));
            let back: f64 = text.parse().unwrap();
            proptest::prop_assert_eq!(back, v);
        }
    }
}
