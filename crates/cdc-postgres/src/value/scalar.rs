//! Parsers for one scalar's output text (no arrays, no date/time: see
//! [`super::datetime`]).

use cdc_core::Text;
use cdc_core::Value;

use super::datetime;
use super::kind::ScalarKind;

/// Why a scalar did not parse; turned into a [`super::ValueError`] by the caller.
pub(crate) type Reason = &'static str;

/// Parses one scalar of `kind` from its output text.
pub(crate) fn parse_scalar(kind: ScalarKind, text: &[u8]) -> Result<Value, Reason> {
    match kind {
        ScalarKind::Bool => parse_bool(text).map(Value::Bool),
        ScalarKind::Int2 => parse_int::<i16>(text).map(Value::Int2),
        ScalarKind::Int4 => parse_int::<i32>(text).map(Value::Int4),
        ScalarKind::Int8 => parse_int::<i64>(text).map(Value::Int8),
        ScalarKind::Float4 => parse_float4(text).map(Value::Float4),
        ScalarKind::Float8 => parse_float8(text).map(Value::Float8),
        ScalarKind::Numeric => parse_numeric(text).map(Value::Numeric),
        ScalarKind::Text => parse_text(text).map(Value::Text),
        ScalarKind::Bytea => parse_bytea(text).map(|b| Value::Bytea(b.into_boxed_slice())),
        ScalarKind::Json => utf8(text).map(|s| Value::Json(s.into())),
        ScalarKind::Uuid => parse_uuid(text).map(Value::Uuid),
        ScalarKind::Date => datetime::parse_date(text).map(Value::Date),
        ScalarKind::Time => datetime::parse_time(text).map(Value::Time),
        ScalarKind::TimeTz => datetime::parse_timetz(text).map(Value::TimeTz),
        ScalarKind::Timestamp => datetime::parse_timestamp(text).map(Value::Timestamp),
        ScalarKind::TimestampTz => datetime::parse_timestamptz(text).map(Value::TimestampTz),
        ScalarKind::Interval => datetime::parse_interval(text).map(Value::Interval),
        ScalarKind::Other => utf8(text).map(|s| Value::Other(s.into())),
    }
}

/// A string-category value. In a UTF-8 database only `"char"` can carry a
/// byte that is not UTF-8: PostgreSQL 15 and later print a byte of 128 or
/// more as `\ooo` (octal), PostgreSQL 14 prints the byte itself; that one
/// byte is rendered the way 15 prints it, so every version renders alike.
pub(crate) fn parse_text(text: &[u8]) -> Result<Text, Reason> {
    match (utf8(text), text) {
        (Ok(s), _) => Ok(s.into()),
        (Err(_), &[byte]) if byte >= 0x80 => Ok(format!("\\{byte:03o}").into()),
        (Err(e), _) => Err(e),
    }
}

/// The text as `&str`, or an error for invalid UTF-8.
pub(crate) fn utf8(text: &[u8]) -> Result<&str, Reason> {
    std::str::from_utf8(text).map_err(|_| "not valid UTF-8")
}

/// `boolout` prints `t` / `f`; the long spellings are accepted too.
fn parse_bool(text: &[u8]) -> Result<bool, Reason> {
    match text {
        b"t" | b"true" => Ok(true),
        b"f" | b"false" => Ok(false),
        _ => Err("expected t or f"),
    }
}

/// `int2out`/`int4out`/`int8out` print `-?[0-9]+`; a leading `+` is
/// accepted too (as Rust's parser does). Parsed straight from the bytes:
/// this runs for every integer column of every row.
fn parse_int<T: TryFrom<i64>>(text: &[u8]) -> Result<T, Reason> {
    const BAD: Reason = "not an integer in range";
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        return Err(BAD);
    }
    // Accumulate negatively so that i64::MIN fits.
    let mut v: i64 = 0;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return Err(BAD);
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_sub(i64::from(d)))
            .ok_or(BAD)?;
    }
    let v = if negative {
        v
    } else {
        v.checked_neg().ok_or(BAD)?
    };
    T::try_from(v).map_err(|_| BAD)
}

/// The spellings `float4out`/`float8out` use for the special values.
enum Special {
    NaN,
    Inf,
    NegInf,
}

fn special_float(text: &[u8]) -> Option<Special> {
    match text {
        b"NaN" => Some(Special::NaN),
        b"Infinity" => Some(Special::Inf),
        b"-Infinity" => Some(Special::NegInf),
        _ => None,
    }
}

/// Rust's float parser also takes `inf`/`nan` spellings PostgreSQL never
/// prints; only the characters of a decimal number are let through.
fn float_text(text: &[u8]) -> Result<&str, Reason> {
    if text.is_empty()
        || !text
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'+' | b'-' | b'.' | b'e' | b'E'))
    {
        return Err("not a floating-point number");
    }
    utf8(text)
}

fn parse_float4(text: &[u8]) -> Result<f32, Reason> {
    match special_float(text) {
        Some(Special::NaN) => Ok(f32::NAN),
        Some(Special::Inf) => Ok(f32::INFINITY),
        Some(Special::NegInf) => Ok(f32::NEG_INFINITY),
        None => float_text(text)?
            .parse()
            .map_err(|_| "not a floating-point number"),
    }
}

fn parse_float8(text: &[u8]) -> Result<f64, Reason> {
    match special_float(text) {
        Some(Special::NaN) => Ok(f64::NAN),
        Some(Special::Inf) => Ok(f64::INFINITY),
        Some(Special::NegInf) => Ok(f64::NEG_INFINITY),
        None => float_text(text)?
            .parse()
            .map_err(|_| "not a floating-point number"),
    }
}

/// `numeric_out` prints `-?digits(.digits)?` (never an exponent), `NaN`,
/// `Infinity` or `-Infinity`. Kept as text so no digit or trailing zero is
/// lost.
fn parse_numeric(text: &[u8]) -> Result<Text, Reason> {
    if matches!(text, b"NaN" | b"Infinity" | b"-Infinity") || is_plain_decimal(text) {
        Ok(utf8(text)?.into())
    } else {
        Err("not a decimal number")
    }
}

fn is_plain_decimal(text: &[u8]) -> bool {
    let unsigned = text.strip_prefix(b"-").unwrap_or(text);
    let (int, frac) = match unsigned.iter().position(|&b| b == b'.') {
        Some(dot) => (
            unsigned.get(..dot).unwrap_or_default(),
            unsigned.get(dot + 1..),
        ),
        None => (unsigned, None),
    };
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    let int_ok = digits(int) && (int.len() == 1 || int.first() != Some(&b'0'));
    int_ok && frac.is_none_or(digits)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `byteaout` with `bytea_output=hex` prints `\x` and two hex digits per
/// byte; the older `escape` format (printable bytes as is, `\\` and
/// `\ooo` octal) is accepted too.
fn parse_bytea(text: &[u8]) -> Result<Vec<u8>, Reason> {
    match text.strip_prefix(b"\\x") {
        Some(hex) => parse_bytea_hex(hex),
        None => parse_bytea_escape(text),
    }
}

fn parse_bytea_hex(hex: &[u8]) -> Result<Vec<u8>, Reason> {
    let mut out = Vec::with_capacity(hex.len() / 2);
    let mut iter = hex.iter().copied();
    while let Some(hi) = iter.next() {
        if hi.is_ascii_whitespace() {
            continue; // byteain skips whitespace between digit pairs
        }
        let lo = iter.next().ok_or("odd number of hex digits")?;
        match (hex_digit(hi), hex_digit(lo)) {
            (Some(h), Some(l)) => out.push((h << 4) | l),
            _ => return Err("invalid hex digit"),
        }
    }
    Ok(out)
}

fn parse_bytea_escape(text: &[u8]) -> Result<Vec<u8>, Reason> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some((&b, tail)) = rest.split_first() {
        if b != b'\\' {
            out.push(b);
            rest = tail;
            continue;
        }
        match tail {
            [b'\\', more @ ..] => {
                out.push(b'\\');
                rest = more;
            }
            [a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7', more @ ..] => {
                out.push(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'));
                rest = more;
            }
            _ => return Err("invalid escape in bytea"),
        }
    }
    Ok(out)
}

/// `uuid_out` prints the canonical `8-4-4-4-12` lowercase form; uppercase
/// and the 32-digit form without hyphens are accepted too.
fn parse_uuid(text: &[u8]) -> Result<[u8; 16], Reason> {
    const BAD: Reason = "not a uuid";
    let hyphenated = text.len() == 36;
    if !hyphenated && text.len() != 32 {
        return Err(BAD);
    }
    let mut out = [0u8; 16];
    let mut digits = text.iter().enumerate().filter_map(|(i, &b)| {
        if hyphenated && matches!(i, 8 | 13 | 18 | 23) {
            None
        } else {
            Some(b)
        }
    });
    if hyphenated
        && [8usize, 13, 18, 23]
            .iter()
            .any(|&i| text.get(i) != Some(&b'-'))
    {
        return Err(BAD);
    }
    for byte in out.iter_mut() {
        let hi = digits.next().and_then(hex_digit).ok_or(BAD)?;
        let lo = digits.next().and_then(hex_digit).ok_or(BAD)?;
        *byte = (hi << 4) | lo;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_char_byte_of_postgresql_14_renders_as_15_prints_it() {
        // PostgreSQL 14's "char" output of 'é' (its first byte).
        assert_eq!(parse_text(&[0xC3]).unwrap().as_ref(), "\\303");
        assert_eq!(parse_text(b"\\").unwrap().as_ref(), "\\");
        assert_eq!(parse_text("é".as_bytes()).unwrap().as_ref(), "é");
        assert!(parse_text(&[b'a', 0xC3]).is_err());
    }

    #[test]
    fn integers_parse_like_rusts_parser() {
        let inputs: &[&[u8]] = &[
            b"0",
            b"-0",
            b"+0",
            b"7",
            b"-7",
            b"+7",
            b"32767",
            b"32768",
            b"-32768",
            b"-32769",
            b"2147483647",
            b"2147483648",
            b"-2147483648",
            b"-2147483649",
            b"9223372036854775807",
            b"9223372036854775808",
            b"-9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999999",
            b"",
            b"-",
            b"+",
            b"1a",
            b" 1",
            b"1 ",
            b"--1",
            b"+-1",
            b"0001",
            b"-0001",
            b"1.0",
            b"\xff",
        ];
        for &text in inputs {
            let s = std::str::from_utf8(text).unwrap_or("\u{fffd}");
            assert_eq!(parse_int::<i16>(text).ok(), s.parse::<i16>().ok(), "{s:?}");
            assert_eq!(parse_int::<i32>(text).ok(), s.parse::<i32>().ok(), "{s:?}");
            assert_eq!(parse_int::<i64>(text).ok(), s.parse::<i64>().ok(), "{s:?}");
        }
    }

    fn ok(kind: ScalarKind, text: &str) -> Value {
        parse_scalar(kind, text.as_bytes()).unwrap()
    }

    fn bad(kind: ScalarKind, text: &[u8]) {
        assert!(
            parse_scalar(kind, text).is_err(),
            "{kind:?} accepted {:?}",
            String::from_utf8_lossy(text)
        );
    }

    #[test]
    fn bools() {
        assert_eq!(ok(ScalarKind::Bool, "t"), Value::Bool(true));
        assert_eq!(ok(ScalarKind::Bool, "f"), Value::Bool(false));
        for b in [&b""[..], b"T", b"yes", b"t "] {
            bad(ScalarKind::Bool, b);
        }
    }

    #[test]
    fn ints_and_their_ranges() {
        assert_eq!(ok(ScalarKind::Int2, "-32768"), Value::Int2(i16::MIN));
        assert_eq!(ok(ScalarKind::Int4, "2147483647"), Value::Int4(i32::MAX));
        assert_eq!(
            ok(ScalarKind::Int8, "-9223372036854775808"),
            Value::Int8(i64::MIN)
        );
        bad(ScalarKind::Int2, b"32768");
        bad(ScalarKind::Int4, b"1.0");
        bad(ScalarKind::Int8, b"");
        bad(ScalarKind::Int8, b" 1");
    }

    #[test]
    fn floats_and_specials() {
        assert_eq!(ok(ScalarKind::Float8, "1e+30"), Value::Float8(1e30));
        assert_eq!(ok(ScalarKind::Float8, "5e-324"), Value::Float8(5e-324));
        assert_eq!(ok(ScalarKind::Float4, "1e-45"), Value::Float4(1e-45));
        assert_eq!(
            ok(ScalarKind::Float4, "3.4028235e+38"),
            Value::Float4(f32::MAX)
        );
        assert_eq!(
            ok(ScalarKind::Float8, "-Infinity"),
            Value::Float8(f64::NEG_INFINITY)
        );
        assert_eq!(
            ok(ScalarKind::Float4, "Infinity"),
            Value::Float4(f32::INFINITY)
        );
        assert!(matches!(ok(ScalarKind::Float8, "NaN"), Value::Float8(v) if v.is_nan()));
        assert!(
            matches!(ok(ScalarKind::Float4, "-0"), Value::Float4(v) if v == 0.0 && v.is_sign_negative())
        );
        for b in [&b""[..], b"inf", b"nan", b"infinity", b"1,5", b"0x10"] {
            bad(ScalarKind::Float8, b);
        }
    }

    #[test]
    fn numerics_stay_exact() {
        for text in [
            "0",
            "-1",
            "12.500",
            "0.00000000000000000001",
            "NaN",
            "Infinity",
            "-Infinity",
        ] {
            assert_eq!(ok(ScalarKind::Numeric, text), Value::Numeric(text.into()));
        }
        let big = format!("{}.{}", "9".repeat(1000), "1".repeat(100));
        assert_eq!(
            ok(ScalarKind::Numeric, &big),
            Value::Numeric(big.as_str().into())
        );
        for b in [
            &b""[..],
            b"-",
            b"1.",
            b".5",
            b"1e5",
            b"01",
            b"+1",
            b"nan",
            b"1 ",
        ] {
            bad(ScalarKind::Numeric, b);
        }
    }

    #[test]
    fn text_keeps_everything_but_rejects_bad_utf8() {
        assert_eq!(ok(ScalarKind::Text, "ab   "), Value::Text("ab   ".into()));
        assert_eq!(ok(ScalarKind::Text, ""), Value::Text("".into()));
        assert_eq!(
            ok(ScalarKind::Other, "$1,234.50"),
            Value::Other("$1,234.50".into())
        );
        assert_eq!(
            ok(ScalarKind::Json, r#"{"a": 1}"#),
            Value::Json(r#"{"a": 1}"#.into())
        );
        bad(ScalarKind::Text, b"a\xff");
        bad(ScalarKind::Other, b"a\xc3");
        bad(ScalarKind::Other, b"\xc3");
    }

    #[test]
    fn bytea_hex_and_escape() {
        assert_eq!(
            ok(ScalarKind::Bytea, "\\xdeAD01"),
            Value::Bytea(vec![0xde, 0xad, 0x01].into())
        );
        assert_eq!(
            ok(ScalarKind::Bytea, "\\x"),
            Value::Bytea(Vec::new().into())
        );
        assert_eq!(ok(ScalarKind::Bytea, ""), Value::Bytea(Vec::new().into()));
        assert_eq!(
            ok(ScalarKind::Bytea, "a\\\\\\000\\377"),
            Value::Bytea(vec![b'a', b'\\', 0, 0xff].into())
        );
        for b in [&b"\\x1"[..], b"\\xzz", b"\\", b"\\400", b"\\12"] {
            bad(ScalarKind::Bytea, b);
        }
    }

    #[test]
    fn uuids() {
        let want = Value::Uuid([
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ]);
        assert_eq!(
            ok(ScalarKind::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            want
        );
        assert_eq!(
            ok(ScalarKind::Uuid, "A0EEBC999C0B4EF8BB6D6BB9BD380A11"),
            want
        );
        for b in [
            &b""[..],
            b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            b"a0eebc999-c0b-4ef8-bb6d-6bb9bd380a11",
            b"g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ] {
            bad(ScalarKind::Uuid, b);
        }
    }
}
