//! Date/time output text (`DateStyle=ISO`, `IntervalStyle=postgres`) to
//! the string `to_jsonb` prints for the same value.
//!
//! What PostgreSQL 15's `to_jsonb` prints, checked against a server:
//!
//! | type          | output text (`::text`)        | `to_jsonb`                       |
//! |---------------|-------------------------------|----------------------------------|
//! | `date`        | `2024-01-01`, `0044-03-15 BC` | the same                         |
//! | `time`        | `12:34:56.789`, `24:00:00`    | the same                         |
//! | `timetz`      | `12:34:56.789+05:30`, `00:00:00+00` | the same (offset not padded) |
//! | `timestamp`   | `2024-01-01 12:34:56.5`       | `2024-01-01T12:34:56.5`          |
//! | `timestamptz` | `2024-01-01 00:00:00+00`      | `2024-01-01T00:00:00+00:00`      |
//! | BC            | `0044-03-15 12:00:00+00 BC`   | `0044-03-15T12:00:00+00:00 BC`   |
//! | infinities    | `infinity`, `-infinity` (`interval` from PostgreSQL 17) | the same  |
//! | `interval`    | `1 year 2 mons 3 days 04:05:06` | the same                       |
//!
//! `to_jsonb` formats only `date`, `timestamp` and `timestamptz` itself
//! (XSD style: `T` between date and time, the UTC offset always as
//! `±HH:MM`, plus `:SS` when the offset has seconds); `time`, `timetz` and
//! `interval` go through their ordinary output functions. Years stay
//! zero-padded to four digits with a ` BC` suffix (no negative years), and
//! fractional seconds keep only their significant digits in both forms.

use super::scalar::{utf8, Reason};
use cdc_core::Text;

const BAD_DATE: Reason = "not an ISO date";
const BAD_TIME: Reason = "not an ISO time";
const BAD_TIMESTAMP: Reason = "not an ISO timestamp";
const BAD_INTERVAL: Reason = "not a postgres-style interval";

/// `date`: checked and kept as is.
pub(crate) fn parse_date(text: &[u8]) -> Result<Text, Reason> {
    if is_infinity(text) {
        return Ok(utf8(text)?.into());
    }
    let end = scan_date(text, 0).ok_or(BAD_DATE)?;
    match text.get(end..) {
        Some(b"" | b" BC") => Ok(utf8(text)?.into()),
        _ => Err(BAD_DATE),
    }
}

/// `time`: checked and kept as is.
pub(crate) fn parse_time(text: &[u8]) -> Result<Text, Reason> {
    match scan_time(text, 0) {
        Some(end) if end == text.len() => Ok(utf8(text)?.into()),
        _ => Err(BAD_TIME),
    }
}

/// `timetz`: checked and kept as is (`to_jsonb` uses `timetz_out`).
pub(crate) fn parse_timetz(text: &[u8]) -> Result<Text, Reason> {
    let offset = scan_time(text, 0).ok_or(BAD_TIME)?;
    match scan_offset(text, offset) {
        Some((end, _)) if end == text.len() => Ok(utf8(text)?.into()),
        _ => Err(BAD_TIME),
    }
}

/// `timestamp`: `YYYY-MM-DD HH:MM:SS[.f][ BC]` → `YYYY-MM-DDTHH:MM:SS[.f][ BC]`.
pub(crate) fn parse_timestamp(text: &[u8]) -> Result<Text, Reason> {
    if is_infinity(text) {
        return Ok(utf8(text)?.into());
    }
    let date_end = scan_date(text, 0).ok_or(BAD_TIMESTAMP)?;
    if text.get(date_end) != Some(&b' ') {
        return Err(BAD_TIMESTAMP);
    }
    let time_end = scan_time(text, date_end + 1).ok_or(BAD_TIMESTAMP)?;
    if !matches!(text.get(time_end..), Some(b"" | b" BC")) {
        return Err(BAD_TIMESTAMP);
    }
    let s = utf8(text)?;
    // Every byte checked so far is ASCII, so these are char boundaries.
    let (date, time) = (
        s.get(..date_end).ok_or(BAD_TIMESTAMP)?,
        s.get(date_end + 1..).ok_or(BAD_TIMESTAMP)?,
    );
    let mut out = String::with_capacity(s.len());
    out.push_str(date);
    out.push('T');
    out.push_str(time);
    Ok(out.into())
}

/// `timestamptz`: `YYYY-MM-DD HH:MM:SS[.f]+HH[:MM[:SS]][ BC]` →
/// `YYYY-MM-DDTHH:MM:SS[.f]+HH:MM[:SS][ BC]`.
pub(crate) fn parse_timestamptz(text: &[u8]) -> Result<Text, Reason> {
    if is_infinity(text) {
        return Ok(utf8(text)?.into());
    }
    let date_end = scan_date(text, 0).ok_or(BAD_TIMESTAMP)?;
    if text.get(date_end) != Some(&b' ') {
        return Err(BAD_TIMESTAMP);
    }
    let time_end = scan_time(text, date_end + 1).ok_or(BAD_TIMESTAMP)?;
    let (offset_end, hours_only) = scan_offset(text, time_end).ok_or(BAD_TIMESTAMP)?;
    if !matches!(text.get(offset_end..), Some(b"" | b" BC")) {
        return Err(BAD_TIMESTAMP);
    }
    let s = utf8(text)?;
    let date = s.get(..date_end).ok_or(BAD_TIMESTAMP)?;
    let time_and_offset = s.get(date_end + 1..offset_end).ok_or(BAD_TIMESTAMP)?;
    let era = s.get(offset_end..).ok_or(BAD_TIMESTAMP)?;
    let mut out = String::with_capacity(s.len() + if hours_only { 3 } else { 0 });
    out.push_str(date);
    out.push('T');
    out.push_str(time_and_offset);
    if hours_only {
        out.push_str(":00");
    }
    out.push_str(era);
    Ok(out.into())
}

/// `interval` in `IntervalStyle=postgres`: checked and kept as is.
///
/// The form is space-separated `<int> year(s)|mon(s)|day(s)` fields and an
/// optional `[-]H+:MM:SS[.f]` clock part, or just the clock part; or
/// `infinity`, `-infinity` (PostgreSQL 17 and later).
pub(crate) fn parse_interval(text: &[u8]) -> Result<Text, Reason> {
    let s = utf8(text)?;
    if is_infinity(text) {
        return Ok(s.into());
    }
    let mut tokens = s.split(' ');
    let mut any = false;
    let mut clock_seen = false;
    while let Some(token) = tokens.next() {
        if clock_seen {
            return Err(BAD_INTERVAL); // the clock part comes last
        }
        any = true;
        if token.contains(':') {
            let b = token.as_bytes();
            let start = usize::from(matches!(b.first(), Some(b'-' | b'+')));
            let hours = b
                .get(start..)
                .unwrap_or_default()
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if hours == 0 {
                return Err(BAD_INTERVAL);
            }
            // Minutes and seconds look like a time of day after the hours.
            let rest = start + hours;
            match scan_min_sec(b, rest) {
                Some(end) if end == b.len() => clock_seen = true,
                _ => return Err(BAD_INTERVAL),
            }
        } else {
            let number = token.strip_prefix(['-', '+']).unwrap_or(token);
            if number.is_empty() || !number.bytes().all(|c| c.is_ascii_digit()) {
                return Err(BAD_INTERVAL);
            }
            match tokens.next() {
                Some("year" | "years" | "mon" | "mons" | "day" | "days") => {}
                _ => return Err(BAD_INTERVAL),
            }
        }
    }
    if any {
        Ok(s.into())
    } else {
        Err(BAD_INTERVAL)
    }
}

fn is_infinity(text: &[u8]) -> bool {
    matches!(text, b"infinity" | b"-infinity")
}

/// Exactly `n` ASCII digits at `i`; returns the index after them.
fn digits(text: &[u8], i: usize, n: usize) -> Option<usize> {
    let end = i.checked_add(n)?;
    let run = text.get(i..end)?;
    run.iter().all(u8::is_ascii_digit).then_some(end)
}

/// One byte `b` at `i`.
fn byte(text: &[u8], i: usize, b: u8) -> Option<usize> {
    (text.get(i) == Some(&b)).then_some(i + 1)
}

/// `YYYY-MM-DD` (four or more year digits) at `i`.
fn scan_date(text: &[u8], i: usize) -> Option<usize> {
    let year = text
        .get(i..)?
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if year < 4 {
        return None;
    }
    let i = byte(text, i + year, b'-')?;
    let i = digits(text, i, 2)?;
    let i = byte(text, i, b'-')?;
    digits(text, i, 2)
}

/// `HH:MM:SS[.f]` at `i`.
fn scan_time(text: &[u8], i: usize) -> Option<usize> {
    let i = digits(text, i, 2)?;
    scan_min_sec(text, i)
}

/// `:MM:SS[.f]` at `i`.
fn scan_min_sec(text: &[u8], i: usize) -> Option<usize> {
    let i = byte(text, i, b':')?;
    let i = digits(text, i, 2)?;
    let i = byte(text, i, b':')?;
    let i = digits(text, i, 2)?;
    match byte(text, i, b'.') {
        Some(frac) => {
            let n = text
                .get(frac..)?
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            (n > 0).then_some(frac + n)
        }
        None => Some(i),
    }
}

/// A UTC offset `±HH[:MM[:SS]]` at `i`: the index after it, and whether it
/// had only hours.
fn scan_offset(text: &[u8], i: usize) -> Option<(usize, bool)> {
    if !matches!(text.get(i), Some(b'+' | b'-')) {
        return None;
    }
    let i = digits(text, i + 1, 2)?;
    let Some(min) = byte(text, i, b':') else {
        return Some((i, true));
    };
    let i = digits(text, min, 2)?;
    match byte(text, i, b':') {
        Some(sec) => Some((digits(text, sec, 2)?, false)),
        None => Some((i, false)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn conv(f: fn(&[u8]) -> Result<Text, Reason>, text: &str) -> String {
        f(text.as_bytes()).unwrap().into()
    }

    fn rejects(f: fn(&[u8]) -> Result<Text, Reason>, text: &str) {
        assert!(f(text.as_bytes()).is_err(), "accepted {text:?}");
    }

    #[test]
    fn dates() {
        for d in [
            "2024-01-01",
            "0044-03-15 BC",
            "4713-01-01 BC",
            "5874897-12-31",
            "infinity",
            "-infinity",
        ] {
            assert_eq!(conv(parse_date, d), d);
        }
        for d in [
            "24-01-01",
            "2024-1-01",
            "2024-01-01 AD",
            "01/01/2024",
            "",
            "2024-01-01 ",
        ] {
            rejects(parse_date, d);
        }
    }

    #[test]
    fn times() {
        for t in ["00:00:00", "12:34:56.789", "24:00:00", "23:59:59.999999"] {
            assert_eq!(conv(parse_time, t), t);
        }
        for t in ["12:00:00+00", "12:00", "12:00:00.", "1:00:00"] {
            rejects(parse_time, t);
        }
        for t in [
            "00:00:00+00",
            "12:34:56.789+05:30",
            "24:00:00-15:59",
            "23:59:59.999999+01:02:03",
        ] {
            assert_eq!(conv(parse_timetz, t), t);
        }
        for t in ["12:00:00", "12:00:00+5", "12:00:00+05:3", "12:00:00 UTC"] {
            rejects(parse_timetz, t);
        }
    }

    #[test]
    fn timestamps_get_a_t() {
        let cases = [
            ("2024-01-01 00:00:00", "2024-01-01T00:00:00"),
            ("2024-01-01 12:34:56.789", "2024-01-01T12:34:56.789"),
            ("0044-03-15 12:00:00.5 BC", "0044-03-15T12:00:00.5 BC"),
            (
                "294276-12-31 23:59:59.999999",
                "294276-12-31T23:59:59.999999",
            ),
            ("infinity", "infinity"),
            ("-infinity", "-infinity"),
        ];
        for (text, want) in cases {
            assert_eq!(conv(parse_timestamp, text), want);
        }
        for t in [
            "2024-01-01T00:00:00",
            "2024-01-01 00:00:00+00",
            "Mon Jan 01 00:00:00 2024",
            "2024-01-01",
        ] {
            rejects(parse_timestamp, t);
        }
    }

    #[test]
    fn timestamptzs_get_a_t_and_a_full_offset() {
        let cases = [
            ("2024-01-01 00:00:00+00", "2024-01-01T00:00:00+00:00"),
            (
                "2024-01-01 07:04:56.789+00",
                "2024-01-01T07:04:56.789+00:00",
            ),
            ("0044-03-15 12:00:00+00 BC", "0044-03-15T12:00:00+00:00 BC"),
            ("2024-06-01 12:00:00+05:30", "2024-06-01T12:00:00+05:30"),
            (
                "1900-01-01 00:00:00+00:19:32",
                "1900-01-01T00:00:00+00:19:32",
            ),
            ("2024-01-01 00:00:00-03", "2024-01-01T00:00:00-03:00"),
            ("10000-01-01 00:00:00+00", "10000-01-01T00:00:00+00:00"),
            ("infinity", "infinity"),
            ("-infinity", "-infinity"),
        ];
        for (text, want) in cases {
            assert_eq!(conv(parse_timestamptz, text), want);
        }
        for t in [
            "2024-01-01 00:00:00",
            "2024-01-01 00:00:00 UTC",
            "2024-01-01 00:00:00+0",
            "2024-01-01 00:00:00+00 AD",
        ] {
            rejects(parse_timestamptz, t);
        }
    }

    #[test]
    fn intervals() {
        for i in [
            "00:00:00",
            "1 year 2 mons 3 days 04:05:06.7",
            "-1 days",
            "1 day -00:00:01",
            "-178956970 years -8 mons -2147483648 days -2562047788:00:54.775808",
            "1 mon",
            // PostgreSQL 17's infinite intervals.
            "infinity",
            "-infinity",
        ] {
            assert_eq!(conv(parse_interval, i), i);
        }
        for i in [
            "",
            "P1Y2M",
            "@ 1 year",
            "1-2 3 4:05:06",
            "1 year 1 week",
            "00:00:00 1 day",
            "1",
            ":00:00",
            "+infinity",
            "Infinity",
        ] {
            rejects(parse_interval, i);
        }
    }
}
