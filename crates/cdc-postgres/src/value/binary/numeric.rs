//! `numeric` from its binary send format to `numeric_out`'s text.
//!
//! The send format is a header of four big-endian 16-bit fields, then the
//! digits:
//!
//! | field     | type  | meaning                                              |
//! |-----------|-------|------------------------------------------------------|
//! | `ndigits` | `i16` | number of base-10000 digits that follow              |
//! | `weight`  | `i16` | power of 10000 of the first digit                    |
//! | `sign`    | `u16` | `0x0000` +, `0x4000` −, `0xC000` NaN, `0xD000` +∞, `0xF000` −∞ |
//! | `dscale`  | `u16` | decimal digits shown after the point (at most 0x3FFF) |
//! | digits    | `i16` × `ndigits` | each in `0..10000`, most significant first |
//!
//! The text is `-?digits(.digits)?` with exactly `dscale` fractional digits
//! (trailing zeros included, digits beyond `dscale` cut off as the server's
//! `numeric_recv` does), `0` for a zero integer part, and `NaN`,
//! `Infinity`, `-Infinity`. A value that is zero at `dscale` has no minus
//! sign.

use super::super::scalar::Reason;
use cdc_core::Text;

const POSITIVE: u16 = 0x0000;
const NEGATIVE: u16 = 0x4000;
const NAN: u16 = 0xC000;
const PLUS_INFINITY: u16 = 0xD000;
const MINUS_INFINITY: u16 = 0xF000;
const DSCALE_MASK: u16 = 0x3FFF;

/// Decimal digits per base-10000 digit.
const DEC_DIGITS: usize = 4;

/// `numeric`: the send format → `numeric_out`'s text, e.g. `-123.4500`,
/// `0.0001`, `NaN`.
pub(crate) fn numeric(bytes: &[u8]) -> Result<Text, Reason> {
    numeric_string(bytes).map(Text::from)
}

/// The digits of a numeric, each checked to be in `0..10000`.
struct Digits<'a> {
    bytes: &'a [u8],
}

impl Digits<'_> {
    /// Digit `index` (0 = the most significant stored digit); zero outside
    /// the stored digits.
    fn get(&self, index: i64) -> u16 {
        let Ok(index) = usize::try_from(index) else {
            return 0;
        };
        match index
            .checked_mul(2)
            .and_then(|at| self.bytes.get(at..)?.first_chunk::<2>())
        {
            Some(pair) => u16::from_be_bytes(*pair),
            None => 0,
        }
    }

    fn len(&self) -> i64 {
        // At most `i16::MAX` digits: the length was checked against `ndigits`.
        i64::try_from(self.bytes.len() / 2).unwrap_or(0)
    }
}

/// [`numeric`] into a `String` whose capacity is exactly its length.
fn numeric_string(bytes: &[u8]) -> Result<String, Reason> {
    let (header, body) = bytes
        .split_first_chunk::<8>()
        .ok_or("binary numeric shorter than its header")?;
    let [n0, n1, w0, w1, s0, s1, d0, d1] = *header;
    let ndigits = usize::try_from(i16::from_be_bytes([n0, n1]))
        .map_err(|_| "binary numeric with a negative digit count")?;
    let weight = i64::from(i16::from_be_bytes([w0, w1]));
    let sign = u16::from_be_bytes([s0, s1]);
    let dscale = u16::from_be_bytes([d0, d1]);
    if body.len() != ndigits * 2 {
        return Err("binary numeric length does not match its digit count");
    }
    if body
        .chunks_exact(2)
        .any(|pair| !matches!(pair, [hi, lo] if u16::from_be_bytes([*hi, *lo]) < 10_000))
    {
        return Err("binary numeric digit out of range");
    }
    if dscale & DSCALE_MASK != dscale {
        return Err("binary numeric scale out of range");
    }
    match sign {
        NAN => return Ok("NaN".into()),
        PLUS_INFINITY => return Ok("Infinity".into()),
        MINUS_INFINITY => return Ok("-Infinity".into()),
        POSITIVE | NEGATIVE => {}
        _ => return Err("binary numeric with an invalid sign"),
    }
    let digits = Digits { bytes: body };
    let dscale = usize::from(dscale);

    // The integer part: digits 0..=weight, from the first nonzero one.
    let int_digits = (weight + 1).max(0);
    let first_nonzero = (0..int_digits.min(digits.len())).find(|&i| digits.get(i) != 0);
    let int_len = match first_nonzero {
        None => 1,
        Some(i) => {
            let rest = usize::try_from(int_digits - i - 1).unwrap_or(0);
            decimal_len(digits.get(i)) + DEC_DIGITS * rest
        }
    };
    let negative =
        sign == NEGATIVE && (first_nonzero.is_some() || fraction_nonzero(&digits, weight, dscale));
    let len = usize::from(negative) + int_len + if dscale > 0 { 1 + dscale } else { 0 };

    let mut out = String::with_capacity(len);
    if negative {
        out.push('-');
    }
    match first_nonzero {
        None => out.push('0'),
        Some(first) => {
            push_leading(&mut out, digits.get(first));
            for i in first + 1..int_digits {
                push_first(&mut out, digits.get(i), DEC_DIGITS);
            }
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut left = dscale;
        let mut index = weight + 1;
        while left > 0 {
            let take = left.min(DEC_DIGITS);
            push_first(&mut out, digits.get(index), take);
            left -= take;
            index += 1;
        }
    }
    Ok(out)
}

/// Whether any of the first `dscale` fractional decimal digits is nonzero.
fn fraction_nonzero(digits: &Digits<'_>, weight: i64, dscale: usize) -> bool {
    let first = (weight + 1).max(0);
    (first..digits.len()).any(|index| {
        // Fractional decimal digits before this base-10000 digit.
        let before = usize::try_from(index - weight - 1).unwrap_or(0);
        let Some(shown) = before
            .checked_mul(DEC_DIGITS)
            .and_then(|before| dscale.checked_sub(before))
            .filter(|&shown| shown > 0)
        else {
            return false;
        };
        let cut = 10_u16.pow(u32::try_from(DEC_DIGITS.saturating_sub(shown)).unwrap_or(0));
        digits.get(index) / cut != 0
    })
}

/// Number of decimal digits of `digit` (1 to 4) without leading zeros.
fn decimal_len(digit: u16) -> usize {
    match digit {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        _ => 4,
    }
}

/// `0000` to `9999`, four ASCII digits each, built at compile time.
static FOUR_DIGITS: &str = match std::str::from_utf8(&DIGIT_TABLE) {
    Ok(digits) => digits,
    Err(_) => "",
};

static DIGIT_TABLE: [u8; 40_000] = {
    let mut table = [0_u8; 40_000];
    let mut i = 0;
    while i < 10_000 {
        table[4 * i] = b'0' + (i / 1000) as u8;
        table[4 * i + 1] = b'0' + (i / 100 % 10) as u8;
        table[4 * i + 2] = b'0' + (i / 10 % 10) as u8;
        table[4 * i + 3] = b'0' + (i % 10) as u8;
        i += 1;
    }
    table
};

/// Pushes `digit` without leading zeros.
fn push_leading(out: &mut String, digit: u16) {
    let at = usize::from(digit) * DEC_DIGITS;
    let skip = DEC_DIGITS - decimal_len(digit);
    out.push_str(
        FOUR_DIGITS
            .get(at + skip..at + DEC_DIGITS)
            .unwrap_or_default(),
    );
}

/// Pushes the first `width` (at most 4) of the four zero-padded decimal
/// digits of `digit`.
fn push_first(out: &mut String, digit: u16, width: usize) {
    let at = usize::from(digit) * DEC_DIGITS;
    out.push_str(
        FOUR_DIGITS
            .get(at..at + width.min(DEC_DIGITS))
            .unwrap_or_default(),
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::hex;
    use super::*;

    fn decode(bytes: &[u8]) -> String {
        let text = numeric_string(bytes).unwrap();
        assert_eq!(text.capacity(), text.len(), "{text}");
        text
    }

    #[test]
    fn numerics_from_the_server() {
        // (SQL literal, `numeric_send` bytes, `::text`) from PostgreSQL 15.
        let vectors = [
            ("0", "0000000000000000", "0"),
            ("-0.00", "0000000000000002", "0.00"),
            ("0.0", "0000000000000001", "0.0"),
            ("1", "00010000000000000001", "1"),
            ("-1", "00010000400000000001", "-1"),
            ("0.0001", "0001ffff000000040001", "0.0001"),
            ("-0.0001", "0001ffff400000040001", "-0.0001"),
            (
                "1e100",
                "00010019000000000001",
                "10000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
            ),
            (
                "-1e-100",
                "0001ffe7400000640001",
                "-0.0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001",
            ),
            ("123.45000", "0002000000000005007b1194", "123.45000"),
            ("9999", "0001000000000000270f", "9999"),
            ("10000", "00010001000000000001", "10000"),
            ("10001", "000200010000000000010001", "10001"),
            ("0.1", "0001ffff0000000103e8", "0.1"),
            ("0.12345", "0002ffff0000000504d21388", "0.12345"),
            (
                "12345.678901234567890123",
                "0007000100000012000109291a85007b11d722c508fc",
                "12345.678901234567890123",
            ),
            ("1.00000000000000000000", "00010000000000140001", "1.00000000000000000000"),
            ("NaN", "00000000c0000000", "NaN"),
            ("Infinity", "00000000d0000020", "Infinity"),
            ("-Infinity", "00000000f0000020", "-Infinity"),
            ("3.14159", "0003000000000005000305872328", "3.14159"),
            ("-99999999.99999999", "0004000140000008270f270f270f270f", "-99999999.99999999"),
            ("0.00000000000000000001", "0001fffb000000140001", "0.00000000000000000001"),
            ("100000000", "00010002000000000001", "100000000"),
            ("0.000100", "0001ffff000000060001", "0.000100"),
            (
                "12345678901234567890.5",
                "000600040000000104d2162e23340d801ed21388",
                "12345678901234567890.5",
            ),
        ];
        for (literal, bytes, want) in vectors {
            assert_eq!(decode(&hex(bytes)), want, "{literal}");
        }
        // 1e1000 and 1e-1000.
        let big = decode(&hex("000100fa000000000001"));
        assert_eq!(big.len(), 1001);
        assert!(big.starts_with('1') && big[1..].bytes().all(|b| b == b'0'));
        let small = decode(&hex("0001ff06000003e80001"));
        assert_eq!(small.len(), 1002);
        assert!(small.starts_with("0.000") && small.ends_with("0001"));
        assert_eq!(small.bytes().filter(|&b| b == b'1').count(), 1);
    }

    #[test]
    fn unnormalized_input_prints_its_value() {
        // Leading and trailing zero digits, a negative zero, digits cut off
        // by the scale: what `numeric_recv` would store, printed.
        let cases = [
            ("000200010000000000000005", "5"),         // 0000 0005 weight 1
            ("00010000400000020000", "0.00"),          // -0 at scale 2
            ("0001ffff40000002000a", "0.00"),          // -0.001 cut to scale 2
            ("0001ffff40000003000a", "-0.001"),        // -0.001 at scale 3
            ("000200000000000100010d80", "1.3"),       // 1.3456 at scale 1
            ("0001fffe00000002270f", "0.00"),          // 0.00009999 at scale 2
            ("00010003000000000001", "1000000000000"), // weight 3
            ("0001000000003fff0001", &format!("1.{}", "0".repeat(16383))),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode(&hex(bytes)), want, "{bytes}");
        }
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bytes in [
            "",
            "00000000000000",           // short header
            "0001000000000000",         // one digit announced, none sent
            "00010000000000000001ff",   // odd trailing byte
            "000000000000000000010000", // a digit not announced
            "00010000000000002710",     // digit 10000
            "0001000000000000ffff",     // digit -1
            "ffff000000000000",         // ndigits -1
            "0000000080000000",         // bad sign
            "0000000000004000",         // dscale above 0x3fff
        ] {
            assert!(numeric(&hex(bytes)).is_err(), "{bytes}");
        }
    }
}
