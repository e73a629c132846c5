//! Property tests: no input panics, and numbers survive the round trip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cdc_core::Value;
use proptest::prelude::*;

use super::{ScalarKind, ValueType};

/// Every scalar kind, as a scalar and as arrays with both delimiters.
fn all_types() -> Vec<ValueType> {
    ScalarKind::ALL
        .iter()
        .flat_map(|&kind| {
            [
                ValueType::scalar(kind),
                ValueType::array_of(kind),
                ValueType {
                    scalar: kind,
                    array: true,
                    delimiter: b';',
                },
            ]
        })
        .collect()
}

/// Bytes biased towards the characters the parsers care about.
fn syntax_bytes() -> impl Strategy<Value = Vec<u8>> {
    let interesting =
        prop::sample::select(b"{}[]:=,;\"\\ NULLnul0123456789-+.eE:TtfBCx\xff\xc3".to_vec());
    prop::collection::vec(prop_oneof![any::<u8>(), interesting], 0..64)
}

fn render(v: &Value) -> String {
    let mut out = Vec::new();
    cdc_core::encode::write_value(&mut out, v);
    String::from_utf8(out).unwrap()
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        for ty in all_types() {
            let _ = ty.parse(&bytes);
        }
    }

    #[test]
    fn syntax_like_bytes_never_panic(bytes in syntax_bytes()) {
        for ty in all_types() {
            let _ = ty.parse(&bytes);
        }
    }

    #[test]
    fn valid_results_render_as_json(bytes in syntax_bytes()) {
        for ty in all_types() {
            if let Ok(v) = ty.parse(&bytes) {
                if ty.scalar != ScalarKind::Json {
                    let json = render(&v);
                    prop_assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok(), "{}", json);
                }
            }
        }
    }

    #[test]
    fn ints_round_trip(a in any::<i16>(), b in any::<i32>(), c in any::<i64>()) {
        prop_assert_eq!(ValueType::scalar(ScalarKind::Int2).parse(a.to_string().as_bytes()).unwrap(), Value::Int2(a));
        prop_assert_eq!(ValueType::scalar(ScalarKind::Int4).parse(b.to_string().as_bytes()).unwrap(), Value::Int4(b));
        prop_assert_eq!(ValueType::scalar(ScalarKind::Int8).parse(c.to_string().as_bytes()).unwrap(), Value::Int8(c));
    }

    #[test]
    fn float8_round_trips_through_shortest_text(v in any::<f64>().prop_filter("not NaN", |v| !v.is_nan())) {
        // PostgreSQL (extra_float_digits > 0) prints the shortest digits
        // that read back to the same value, with an exponent like 1e+30.
        let text = pg_float_text(&format!("{v:e}"));
        let parsed = ValueType::scalar(ScalarKind::Float8).parse(text.as_bytes()).unwrap();
        prop_assert_eq!(parsed, Value::Float8(v));
    }

    #[test]
    fn float4_round_trips_through_shortest_text(v in any::<f32>().prop_filter("not NaN", |v| !v.is_nan())) {
        let text = pg_float_text(&format!("{v:e}"));
        let parsed = ValueType::scalar(ScalarKind::Float4).parse(text.as_bytes()).unwrap();
        prop_assert_eq!(parsed, Value::Float4(v));
    }

    #[test]
    fn int_arrays_round_trip(items in prop::collection::vec(prop::option::of(any::<i32>()), 0..20)) {
        let text = format!(
            "{{{}}}",
            items.iter().map(|i| i.map_or("NULL".to_owned(), |i| i.to_string())).collect::<Vec<_>>().join(",")
        );
        let want = Value::Array(items.iter().map(|i| i.map_or(Value::Null, Value::Int4)).collect());
        prop_assert_eq!(ValueType::array_of(ScalarKind::Int4).parse(text.as_bytes()).unwrap(), want);
    }

    #[test]
    fn text_arrays_round_trip(items in prop::collection::vec(prop::option::of(".{0,8}"), 0..10)) {
        // Quote every element the way array_out does when it must.
        let text = format!(
            "{{{}}}",
            items
                .iter()
                .map(|i| match i {
                    None => "NULL".to_owned(),
                    Some(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
                })
                .collect::<Vec<_>>()
                .join(",")
        );
        let want = Value::Array(items.iter().map(|i| i.as_deref().map_or(Value::Null, |s| Value::Text(s.into()))).collect());
        prop_assert_eq!(ValueType::array_of(ScalarKind::Text).parse(text.as_bytes()).unwrap(), want);
    }
}

/// Rust's `{:e}` (`1e30`, `inf`) in PostgreSQL's spelling (`1e+30`, `Infinity`).
fn pg_float_text(rust: &str) -> String {
    match rust {
        "inf" => "Infinity".to_owned(),
        "-inf" => "-Infinity".to_owned(),
        _ => match rust.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => rust.to_owned(),
        },
    }
}
