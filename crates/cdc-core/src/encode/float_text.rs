//! `float4`/`float8` values as `to_jsonb` prints them: the digits of
//! PostgreSQL's `float4out`/`float8out`, in plain decimal notation.
//!
//! PostgreSQL prints the shortest decimal that lies *strictly* between the
//! value's rounding boundaries (the midpoints to its neighbours), the one
//! closest to the value, ties to an even last digit. The `ryu` crate does the
//! same except that, for a value with an even binary mantissa, it also accepts
//! a decimal lying exactly on a boundary (it still reads back as the value).
//! So `ryu` gives the answer unless its decimal is exactly a boundary; that
//! is checked exactly with integer arithmetic, and only then (rarely) is the
//! decimal worked out here. Integer values below 2^53 (`float8`) or 2^24
//! (`float4`), which PostgreSQL prints exactly, need nothing special: no
//! other integer lies within their boundaries.

use std::cmp::Ordering;

use super::json_text::u64_digits;

/// A float type both `ryu` and this module can print.
pub(super) trait PgFloat: ryu::Float + Copy {
    fn is_nan_(self) -> bool;
    fn is_finite_(self) -> bool;
    fn is_sign_negative_(self) -> bool;
    fn is_zero(self) -> bool;
    /// `(m, e, closer_below)`: the magnitude is `m·2^e` (`m` with the hidden
    /// bit), and `closer_below` when the value is a power of two whose lower
    /// neighbour is half as far away as its upper one.
    fn binary_parts(self) -> (u64, i32, bool);
}

macro_rules! pg_float {
    ($t:ty, $mantissa_bits:expr, $exp_bits:expr, $bias:expr) => {
        impl PgFloat for $t {
            fn is_nan_(self) -> bool {
                self.is_nan()
            }
            fn is_finite_(self) -> bool {
                self.is_finite()
            }
            fn is_sign_negative_(self) -> bool {
                self.is_sign_negative()
            }
            fn is_zero(self) -> bool {
                self == 0.0
            }
            fn binary_parts(self) -> (u64, i32, bool) {
                let bits = self.to_bits();
                let fraction = u64::from(bits & ((1 << $mantissa_bits) - 1));
                let biased = ((bits >> $mantissa_bits) & ((1 << $exp_bits) - 1)) as i32;
                if biased == 0 {
                    (fraction, 1 - $bias - $mantissa_bits, false)
                } else {
                    (
                        fraction | (1 << $mantissa_bits),
                        biased - $bias - $mantissa_bits,
                        fraction == 0 && biased > 1,
                    )
                }
            }
        }
    };
}

pg_float!(f64, 52, 11, 1023);
pg_float!(f32, 23, 8, 127);

/// Appends `v` as `to_jsonb(v)::text` prints it: a JSON number in plain
/// decimal notation, or `"NaN"`, `"Infinity"`, `"-Infinity"`.
pub(super) fn write_float<F: PgFloat>(out: &mut Vec<u8>, v: F) {
    if v.is_nan_() {
        out.extend_from_slice(b"\"NaN\"");
        return;
    }
    if !v.is_finite_() {
        out.extend_from_slice(if v.is_sign_negative_() {
            b"\"-Infinity\""
        } else {
            b"\"Infinity\""
        });
        return;
    }
    if v.is_zero() {
        out.push(b'0');
        return;
    }
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(v);
    let Some((negative, digits, exp10)) = parse_decimal(text) else {
        // Unreachable for ryu's output; its text is a JSON number anyway.
        out.extend_from_slice(text.as_bytes());
        return;
    };
    let (m, e, closer_below) = v.binary_parts();
    // ryu only accepts a boundary when the mantissa is even.
    let (digits, exp10) = if m & 1 == 0 {
        match boundary_hit(digits, exp10, m, e, closer_below) {
            Some(side) => {
                inside_boundaries(digits, exp10, side, e, closer_below).unwrap_or((digits, exp10))
            }
            None => (digits, exp10),
        }
    } else {
        (digits, exp10)
    };
    write_plain(out, negative, digits, exp10);
}

/// Which rounding boundary a decimal lies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// The midpoint to the next larger magnitude.
    Upper,
    /// The midpoint to the next smaller magnitude.
    Lower,
}

/// Whether `digits·10^exp10` is exactly a rounding boundary of `m·2^e`:
/// `(2m+1)·2^(e-1)` above, `(2m-1)·2^(e-1)` below, or `(4m-1)·2^(e-2)` below
/// a power of two whose lower neighbour is closer.
///
/// Each boundary is an odd number times a power of two, so the decimal's
/// 2-adic part must match the power and its 5-adic part times its odd rest
/// the odd number. Both fit in `u128` whenever they can be equal.
fn boundary_hit(digits: u64, exp10: i32, m: u64, e: i32, closer_below: bool) -> Option<Side> {
    let twos = digits.trailing_zeros() as i32;
    let odd = u128::from(digits >> twos);
    let two_adic = twos + exp10;
    let m = u128::from(m);
    // odd·5^exp10 == n, without fractions; an overflow means "not equal".
    let odd_part_is = |n: u128| -> bool {
        if exp10 >= 0 {
            pow5(exp10).and_then(|p| odd.checked_mul(p)) == Some(n)
        } else {
            pow5(-exp10).and_then(|p| n.checked_mul(p)) == Some(odd)
        }
    };
    if two_adic == e - 1 {
        if odd_part_is(2 * m + 1) {
            return Some(Side::Upper);
        }
        if !closer_below && odd_part_is(2 * m - 1) {
            return Some(Side::Lower);
        }
    } else if closer_below && two_adic == e - 2 && odd_part_is(4 * m - 1) {
        return Some(Side::Lower);
    }
    None
}

/// The decimal PostgreSQL prints when ryu's `digits·10^exp10` (call it `B`)
/// is the `side` boundary of `v = m·2^e`: the shortest decimal strictly
/// between the boundaries, the closest to `v`, ties to an even last digit.
///
/// With `δ = 2^(e-2)` the open interval is `W·δ` wide (4, or 3 below a power
/// of two with a closer lower neighbour) and `v` lies `off·δ` from `B`. `B`
/// is a multiple of `10^p` for every `p ≤ exp10`, so the interval holds a
/// multiple of `10^p` exactly when `10^p < W·δ`: the longest such `p` gives
/// the length, and `v` rounded to a multiple of `10^p` the digits (moved one
/// step into the interval if it rounds onto or past the far boundary).
///
/// `None` only if a number overflows `u128`, which the ranges where ryu can
/// hit a boundary rule out (`|exp10| ≤ 24` and `−24 ≤ e ≤ 81` for `f64`,
/// less for `f32`: the boundary's odd factor, below 2^55, must equal the
/// decimal's odd digits times a power of five).
fn inside_boundaries(
    digits: u64,
    exp10: i32,
    side: Side,
    e: i32,
    closer_below: bool,
) -> Option<(u64, i32)> {
    let g = e - 2;
    let width: u128 = if closer_below { 3 } else { 4 };
    let off: u128 = if side == Side::Lower && closer_below {
        1
    } else {
        2
    };
    // Longest digit position p (≤ exp10) with a multiple of 10^p inside.
    let mut p = exp10;
    while compare(1, p, width, g)? != Ordering::Less {
        p = p.checked_sub(1)?;
        if exp10 - p > 64 {
            return None;
        }
    }
    let base = u128::from(digits).checked_mul(10u128.checked_pow((exp10 - p) as u32)?)?;
    // off·δ / 10^p = num / den.
    let num = mul_pow2(mul_pow5(off, (-p).max(0))?, (g - p).max(0))?;
    let den = mul_pow2(mul_pow5(1, p.max(0))?, (p - g).max(0))?;
    let (q, r) = (num / den, num % den);
    // v / 10^p = lower + frac; pick the nearest integer, ties to even.
    let (lower, frac_num) = match side {
        Side::Upper if r == 0 => (base.checked_sub(q)?, 0),
        Side::Upper => (base.checked_sub(q)?.checked_sub(1)?, den - r),
        Side::Lower => (base.checked_add(q)?, r),
    };
    let mut out = match frac_num.checked_mul(2)?.cmp(&den) {
        Ordering::Less => lower,
        Ordering::Greater => lower.checked_add(1)?,
        Ordering::Equal if lower % 2 == 0 => lower,
        Ordering::Equal => lower.checked_add(1)?,
    };
    // Keep it strictly inside the interval.
    match side {
        Side::Upper => {
            if out >= base {
                out = base.checked_sub(1)?;
            }
            if compare(base.checked_sub(out)?, p, width, g)? != Ordering::Less {
                out = out.checked_add(1)?;
            }
        }
        Side::Lower => {
            if out <= base {
                out = base.checked_add(1)?;
            }
        }
    }
    Some((u64::try_from(out).ok()?, p))
}

/// Compares `a·10^p10` with `b·2^p2`.
fn compare(a: u128, p10: i32, b: u128, p2: i32) -> Option<Ordering> {
    // a·5^p10·2^p10 against b·2^p2, each power moved to the side where it is
    // a whole number.
    let twos = p10 - p2;
    let left = mul_pow2(mul_pow5(a, p10.max(0))?, twos.max(0))?;
    let right = mul_pow2(mul_pow5(b, (-p10).max(0))?, (-twos).max(0))?;
    Some(left.cmp(&right))
}

fn pow5(n: i32) -> Option<u128> {
    5u128.checked_pow(u32::try_from(n).ok()?)
}

fn mul_pow5(x: u128, n: i32) -> Option<u128> {
    x.checked_mul(pow5(n)?)
}

fn mul_pow2(x: u128, n: i32) -> Option<u128> {
    let n = u32::try_from(n).ok()?;
    if n >= 127 {
        return None;
    }
    x.checked_mul(1u128 << n)
}

/// Splits ryu's text (`-1.5e-7`, `1e30`, `123.0`, `0.25`) into sign, digits
/// (without trailing zeros: `123.0` gives 123, not 1230) and the power of ten
/// they are multiplied by. `None` if it is not of that form or has more
/// digits than fit in a `u64`.
fn parse_decimal(text: &str) -> Option<(bool, u64, i32)> {
    let bytes = text.as_bytes();
    let negative = bytes.first() == Some(&b'-');
    let mut i = usize::from(negative);
    let mut digits: u64 = 0;
    let mut significant = 0;
    let mut exp10: i32 = 0;
    let mut seen_point = false;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'0'..=b'9' => {
                exp10 -= i32::from(seen_point);
                if digits != 0 || b != b'0' {
                    significant += 1;
                    // 19 digits always fit in a u64.
                    if significant > 19 {
                        return None;
                    }
                    digits = digits * 10 + u64::from(b - b'0');
                }
            }
            b'.' if !seen_point => seen_point = true,
            b'e' => break,
            _ => return None,
        }
        i += 1;
    }
    if bytes.get(i) == Some(&b'e') {
        let exp: i32 = text.get(i + 1..)?.parse().ok()?;
        exp10 = exp10.checked_add(exp)?;
    }
    // Keeps all exponent arithmetic downstream far from overflowing.
    if !(-1000..=1000).contains(&exp10) {
        return None;
    }
    while digits != 0 && digits.is_multiple_of(10) {
        digits /= 10;
        exp10 += 1;
    }
    Some((negative, digits, exp10))
}

/// Appends `±digits·10^exp10` in plain decimal notation, without an
/// exponent and without trailing zeros after the point (`-0.00000015`,
/// `1000…0`, `123`, `0.25`), as jsonb's `numeric` prints it.
fn write_plain(out: &mut Vec<u8>, negative: bool, mut digits: u64, mut exp10: i32) {
    if digits == 0 {
        out.push(b'0');
        return;
    }
    while digits.is_multiple_of(10) {
        digits /= 10;
        exp10 += 1;
    }
    let mut buf = [0u8; 20];
    let digits = u64_digits(digits, &mut buf);
    let len = digits.len() as i64;
    let point = len + i64::from(exp10);
    if negative {
        out.push(b'-');
    }
    if point <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-point) as usize));
        out.extend_from_slice(digits);
    } else if point >= len {
        out.extend_from_slice(digits);
        out.extend(std::iter::repeat_n(b'0', (point - len) as usize));
    } else {
        let (int, frac) = digits.split_at(point as usize);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn render<F: PgFloat>(v: F) -> String {
        let mut out = Vec::new();
        write_float(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    /// `(float8out text, to_jsonb text)` pairs from PostgreSQL 15
    /// (`extra_float_digits=3`) where ryu's shortest digits lie exactly on a
    /// rounding boundary, so PostgreSQL prints other, longer digits. Some
    /// need one digit more than ryu's, some up to five.
    const FLOAT8_ON_BOUNDARY: &[(&str, &str)] = &[
        ("-6.4975939757259104e+16", "-64975939757259104"),
        ("2.8449794967538272e+16", "28449794967538272"),
        ("3.4389253697021363e+17", "343892536970213630"),
        ("2.9714768290888048e+16", "29714768290888048"),
        ("7.1266528945848864e+16", "71266528945848864"),
        ("2.4648181235556922e+17", "246481812355569220"),
        ("-4.6440427023184563e+17", "-464404270231845630"),
        ("-2.6445419116139802e+17", "-264454191161398020"),
        ("-4.5756850515020096e+16", "-45756850515020096"),
        ("8.486327718890801e+17", "848632771889080100"),
        ("5.1846380547655696e+16", "51846380547655696"),
        ("2.9417937057302003e+17", "294179370573020030"),
        ("3.5608273774473997e+17", "356082737744739970"),
        ("7.817800088494001e+17", "781780008849400100"),
        ("-1.6730089232959002e+17", "-167300892329590020"),
        ("8.471007355489999e+17", "847100735548999900"),
        ("3.0855455924230003e+17", "308554559242300030"),
        ("-4.1246589894849997e+17", "-412465898948499970"),
        ("2.4405486952852482e+20", "244054869528524820000"),
        ("3.2803492426577923e+20", "328034924265779230000"),
    ];

    /// As [`FLOAT8_ON_BOUNDARY`], for `float4out`.
    const FLOAT4_ON_BOUNDARY: &[(&str, &str)] = &[
        ("5.0213318e+08", "502133180"),
        ("3.6950632e+07", "36950632"),
        ("7.7577664e+07", "77577664"),
        ("-5.9826483e+08", "-598264830"),
        ("-4.5663728e+07", "-45663728"),
        ("8.5521696e+07", "85521696"),
        ("-9.3428237e+08", "-934282370"),
        ("6.9827056e+07", "69827056"),
        ("8.9393203e+08", "893932030"),
        ("-9.0055104e+07", "-90055104"),
        ("-1.30294704e+08", "-130294704"),
        ("4.7368998e+08", "473689980"),
        ("6.3783997e+09", "6378399700"),
        ("-8.3265997e+08", "-832659970"),
        ("9.1550003e+08", "915500030"),
        ("-6.6910003e+08", "-669100030"),
        ("9.2809997e+08", "928099970"),
        ("4.2300001e+09", "4230000100"),
        ("3.3500001e+09", "3350000100"),
        ("2.6499999e+09", "2649999900"),
        ("1.06158083e+12", "1061580830000"),
        ("8.6179844e+13", "86179844000000"),
    ];

    #[test]
    fn boundary_decimals_are_never_printed() {
        for (text, want) in FLOAT8_ON_BOUNDARY {
            let v: f64 = text.parse().unwrap();
            assert_eq!(render(v), *want, "float8 {text}");
        }
        for (text, want) in FLOAT4_ON_BOUNDARY {
            let v: f32 = text.parse().unwrap();
            assert_eq!(render(v), *want, "float4 {text}");
        }
    }

    #[test]
    fn edges_match_postgres() {
        // Integers below 2^53 (2^24 for float4) print exactly, as
        // PostgreSQL's small-integer path does; above, the shortest digits.
        let f8: &[(f64, &str)] = &[
            (9007199254740991.0, "9007199254740991"),
            (9007199254740992.0, "9007199254740992"),
            (9007199254740994.0, "9007199254740994"),
            (18014398509481984.0, "18014398509481984"),
            (18014398509481988.0, "18014398509481988"),
            (36028797018963976.0, "36028797018963976"),
            (9223372036854775808.0, "9223372036854776000"),
            (123456789012345678.0, "123456789012345680"),
            (-1e-323, &format!("-0.{}1", "0".repeat(322))),
            (1.5e-323, &format!("0.{}15", "0".repeat(322))),
            (
                2.2250738585072014e-308,
                &format!("0.{}22250738585072014", "0".repeat(307)),
            ),
            (
                2.225073858507201e-308,
                &format!("0.{}2225073858507201", "0".repeat(307)),
            ),
            (
                8.98846567431158e307,
                &format!("898846567431158{}", "0".repeat(293)),
            ),
        ];
        for (v, want) in f8 {
            assert_eq!(render(*v), *want, "float8 {v:e}");
        }
        let f4: &[(f32, &str)] = &[
            (16777215.0, "16777215"),
            (16777216.0, "16777216"),
            (16777218.0, "16777218"),
            (33554436.0, "33554436"),
            (33554440.0, "33554440"),
            (67108872.0, "67108870"),
            (2147483648.0, "2147483600"),
            (987654340.0, "987654340"),
            (3.4028235e38, "340282350000000000000000000000000000000"),
            (1.7014118e38, "170141180000000000000000000000000000000"),
            (
                1.1754944e-38,
                "0.000000000000000000000000000000000000011754944",
            ),
            (
                1.1754942e-38,
                "0.000000000000000000000000000000000000011754942",
            ),
            (1e-45, "0.000000000000000000000000000000000000000000001"),
            (-3e-45, "-0.000000000000000000000000000000000000000000003"),
        ];
        for (v, want) in f4 {
            assert_eq!(render(*v), *want, "float4 {v:e}");
        }
    }

    /// The printed decimal reads back as the value and is not a boundary.
    fn check_round_trip<F: PgFloat + std::str::FromStr + PartialEq + std::fmt::Debug>(v: F) {
        let text = render(v);
        let back: F = text.parse().ok().unwrap();
        assert_eq!(back, v, "{text}");
        // Plain decimal to digits·10^exp10.
        let unsigned = text.trim_start_matches('-');
        let (digits, exp10) = match unsigned.split_once('.') {
            Some((int, frac)) => (format!("{int}{frac}"), -(frac.len() as i32)),
            None => {
                let int = unsigned.trim_end_matches('0');
                (int.to_string(), (unsigned.len() - int.len()) as i32)
            }
        };
        let digits: u64 = digits.trim_start_matches('0').parse().unwrap();
        let (m, e, closer_below) = v.binary_parts();
        assert_eq!(
            boundary_hit(digits, exp10, m, e, closer_below),
            None,
            "{text}"
        );
    }

    proptest::proptest! {
        #[test]
        fn float8_never_on_a_boundary(
            bits in proptest::num::u64::ANY,
            int in proptest::num::i64::ANY,
        ) {
            let v = f64::from_bits(bits);
            if v.is_finite() && v != 0.0 {
                check_round_trip(v);
            }
            if int != 0 {
                check_round_trip(int as f64);
            }
        }

        /// The boundary arithmetic gives up (`None`) rather than overflow,
        /// whatever it is given.
        #[test]
        fn boundary_arithmetic_never_panics(
            digits in 1u64..,
            exp10 in -1000i32..=1000,
            m in 1u64..(1 << 55),
            e in -1100i32..=1100,
            closer_below in proptest::bool::ANY,
        ) {
            let _ = boundary_hit(digits, exp10, m, e, closer_below);
            for side in [Side::Upper, Side::Lower] {
                let _ = inside_boundaries(digits, exp10, side, e, closer_below);
            }
        }

        #[test]
        fn float4_never_on_a_boundary(
            bits in proptest::num::u32::ANY,
            int in proptest::num::i64::ANY,
        ) {
            let v = f32::from_bits(bits);
            if v.is_finite() && v != 0.0 {
                check_round_trip(v);
            }
            if int != 0 {
                check_round_trip(int as f32);
            }
        }
    }
}
