//! `date`, `time`, `timetz`, `timestamp` and `timestamptz` from their
//! binary send format (big-endian, integer datetimes) to the text
//! [`super::super::datetime`] makes of the server's output text in a
//! session pinned to `DateStyle=ISO, TimeZone=UTC`.
//!
//! | type          | send format                                  | text                             |
//! |---------------|----------------------------------------------|----------------------------------|
//! | `date`        | `i32` days since 2000-01-01                  | `2024-01-01`, `0044-03-15 BC`    |
//! | `time`        | `i64` µs since midnight                      | `12:34:56.789`, `24:00:00`       |
//! | `timetz`      | `i64` µs, `i32` offset in seconds west of UTC | `12:34:56.789+05:30`            |
//! | `timestamp`   | `i64` µs since 2000-01-01 00:00:00           | `2024-01-01T12:34:56.5`          |
//! | `timestamptz` | `i64` µs since 2000-01-01 00:00:00 UTC       | `2024-01-01T12:34:56.5+00:00`    |
//!
//! The `i32`/`i64` minimum and maximum of `date`, `timestamp` and
//! `timestamptz` are `-infinity` and `infinity`. Dates are proleptic
//! Gregorian; years before 1 AD print as `1 - year` with a ` BC` suffix
//! (there is no year 0), zero-padded to four digits like later years.
//! Values outside the ranges the server accepts are errors.

use super::super::scalar::Reason;
use super::ascii::Ascii;
use cdc_core::Text;

const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SEC;

/// The first valid date, 4714-11-24 BC (Julian day 0), in days since
/// 2000-01-01.
const MIN_DATE: i32 = -2_451_545;
/// The day after the last valid date, 5874898-01-01, in days since
/// 2000-01-01.
const END_DATE: i32 = 2_145_031_949;
/// The first valid timestamp, 4714-11-24 00:00:00 BC.
const MIN_TIMESTAMP: i64 = -211_813_488_000_000_000;
/// The microsecond after the last valid timestamp, 294277-01-01 00:00:00.
const END_TIMESTAMP: i64 = 9_223_371_331_200_000_000;
/// The largest `timetz` offset the server accepts, in seconds.
const MAX_OFFSET: i32 = 16 * 3600;

const BAD_LENGTH: Reason = "wrong length for a binary date/time value";
const OUT_OF_RANGE: Reason = "binary date/time value out of range";

/// `date`: `i32` days since 2000-01-01 → `YYYY-MM-DD[ BC]`, `infinity`,
/// `-infinity`.
pub(crate) fn date(bytes: &[u8]) -> Result<Text, Reason> {
    date_ascii(bytes)?.finish()
}

/// [`date`] in a stack buffer.
pub(super) fn date_ascii(bytes: &[u8]) -> Result<Ascii, Reason> {
    let days = i32::from_be_bytes(exact(bytes)?);
    match days {
        i32::MIN => return Ok(Ascii::of("-infinity")),
        i32::MAX => return Ok(Ascii::of("infinity")),
        _ if !(MIN_DATE..END_DATE).contains(&days) => return Err(OUT_OF_RANGE),
        _ => {}
    }
    let mut out = Ascii::new();
    if push_date(&mut out, i64::from(days)) {
        out.push_str(" BC");
    }
    Ok(out)
}

/// `time`: `i64` microseconds since midnight → `HH:MM:SS[.f]`, with the
/// fraction's trailing zeros trimmed (`24:00:00` included).
pub(crate) fn time(bytes: &[u8]) -> Result<Text, Reason> {
    time_ascii(bytes)?.finish()
}

/// [`time`] in a stack buffer.
pub(super) fn time_ascii(bytes: &[u8]) -> Result<Ascii, Reason> {
    let micros = i64::from_be_bytes(exact(bytes)?);
    let mut out = Ascii::new();
    push_time_of_day(&mut out, micros)?;
    Ok(out)
}

/// `timetz`: `i64` microseconds since midnight, then the `i32` UTC offset in
/// seconds *west* of Greenwich → `HH:MM:SS[.f]±HH[:MM[:SS]]`, as
/// `timetz_out` prints it (minutes only when minutes or seconds are
/// nonzero, seconds only when nonzero; a zero offset is `+00`).
pub(crate) fn timetz(bytes: &[u8]) -> Result<Text, Reason> {
    timetz_ascii(bytes)?.finish()
}

/// [`timetz`] in a stack buffer.
pub(super) fn timetz_ascii(bytes: &[u8]) -> Result<Ascii, Reason> {
    let fields: [u8; 12] = exact(bytes)?;
    let (micros, zone) = fields.split_at(8);
    let micros = i64::from_be_bytes(exact(micros)?);
    let west = i32::from_be_bytes(exact(zone)?);
    if !(-MAX_OFFSET..=MAX_OFFSET).contains(&west) {
        return Err(OUT_OF_RANGE);
    }
    let mut out = Ascii::new();
    push_time_of_day(&mut out, micros)?;
    out.push(if west <= 0 { b'+' } else { b'-' });
    let offset = u64::from(west.unsigned_abs());
    let (hours, minutes, seconds) = (offset / 3600, offset / 60 % 60, offset % 60);
    out.push_padded(hours, 2);
    if minutes != 0 || seconds != 0 {
        out.push(b':');
        out.push_padded(minutes, 2);
    }
    if seconds != 0 {
        out.push(b':');
        out.push_padded(seconds, 2);
    }
    Ok(out)
}

/// `timestamp`: `i64` microseconds since 2000-01-01 00:00:00 →
/// `YYYY-MM-DDTHH:MM:SS[.f][ BC]`, `infinity`, `-infinity` (the form
/// `to_jsonb` prints).
pub(crate) fn timestamp(bytes: &[u8]) -> Result<Text, Reason> {
    timestamp_ascii(bytes)?.finish()
}

/// [`timestamp`] in a stack buffer.
pub(super) fn timestamp_ascii(bytes: &[u8]) -> Result<Ascii, Reason> {
    timestamp_text(bytes, "")
}

/// `timestamptz`: `i64` microseconds since 2000-01-01 00:00:00 UTC →
/// `YYYY-MM-DDTHH:MM:SS[.f]+00:00[ BC]` in UTC, `infinity`, `-infinity`
/// (the form `to_jsonb` prints in a `TimeZone=UTC` session).
pub(crate) fn timestamptz(bytes: &[u8]) -> Result<Text, Reason> {
    timestamptz_ascii(bytes)?.finish()
}

/// [`timestamptz`] in a stack buffer.
pub(super) fn timestamptz_ascii(bytes: &[u8]) -> Result<Ascii, Reason> {
    timestamp_text(bytes, "+00:00")
}

/// A timestamp with `offset` written after the time of day.
fn timestamp_text(bytes: &[u8], offset: &str) -> Result<Ascii, Reason> {
    let micros = i64::from_be_bytes(exact(bytes)?);
    match micros {
        i64::MIN => return Ok(Ascii::of("-infinity")),
        i64::MAX => return Ok(Ascii::of("infinity")),
        _ if !(MIN_TIMESTAMP..END_TIMESTAMP).contains(&micros) => return Err(OUT_OF_RANGE),
        _ => {}
    }
    let mut out = Ascii::new();
    let bc = push_date(&mut out, micros.div_euclid(USECS_PER_DAY));
    out.push(b'T');
    push_time_of_day(&mut out, micros.rem_euclid(USECS_PER_DAY))?;
    out.push_str(offset);
    if bc {
        out.push_str(" BC");
    }
    Ok(out)
}

/// Exactly `N` bytes, or an error.
fn exact<const N: usize>(bytes: &[u8]) -> Result<[u8; N], Reason> {
    bytes.try_into().map_err(|_| BAD_LENGTH)
}

/// Writes the proleptic Gregorian date `days` after 2000-01-01 as
/// `YYYY-MM-DD`; returns whether it is BC (the caller adds ` BC` at the
/// end, after any time of day).
fn push_date(out: &mut Ascii, days: i64) -> bool {
    let (year, month, day) = civil_date(days);
    if (1..=9999).contains(&year) {
        // The common case in one write.
        let y = year.unsigned_abs();
        out.push_bytes(&[
            digit(y / 1000),
            digit(y / 100),
            digit(y / 10),
            digit(y),
            b'-',
            digit(month / 10),
            digit(month),
            b'-',
            digit(day / 10),
            digit(day),
        ]);
        return false;
    }
    let bc = year <= 0;
    let shown = if bc { 1 - year } else { year };
    out.push_padded(shown.unsigned_abs(), 4);
    out.push(b'-');
    out.push_padded(month, 2);
    out.push(b'-');
    out.push_padded(day, 2);
    bc
}

/// The astronomical year (0 = 1 BC), month and day of the date `days`
/// after 2000-01-01, proleptic Gregorian.
///
/// Counts in 400-year cycles of 146097 days from 0000-03-01, so that the
/// leap day falls at the end of each counted year.
fn civil_date(days: i64) -> (i64, u64, u64) {
    /// Days from 0000-03-01 to 2000-01-01.
    const SHIFT: i64 = 730_425;
    const CYCLE: i64 = 146_097;
    let from_march = days + SHIFT;
    let cycle = from_march.div_euclid(CYCLE);
    let day_of_cycle = from_march.rem_euclid(CYCLE); // 0..=146096
                                                     // Years into the cycle: 365-day years, plus a day every 4 years, less
                                                     // one every 100, plus one every 400 (the cycle's last day).
    let year_of_cycle =
        (day_of_cycle - day_of_cycle / 1460 + day_of_cycle / 36524 - day_of_cycle / 146_096) / 365;
    let day_of_year =
        day_of_cycle - (365 * year_of_cycle + year_of_cycle / 4 - year_of_cycle / 100);
    // Months from March: 153 days per 5 months (31, 30, 31, 30, 31).
    let month_from_march = (5 * day_of_year + 2) / 153; // 0..=11
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let (month, next_year) = if month_from_march < 10 {
        (month_from_march + 3, 0)
    } else {
        (month_from_march - 9, 1)
    };
    let year = cycle * 400 + year_of_cycle + next_year;
    (year, month.unsigned_abs(), day.unsigned_abs())
}

/// Writes `HH:MM:SS[.f]` for `micros` since midnight (0 through 24:00:00).
fn push_time_of_day(out: &mut Ascii, micros: i64) -> Result<(), Reason> {
    if !(0..=USECS_PER_DAY).contains(&micros) {
        return Err(OUT_OF_RANGE);
    }
    let micros = micros.unsigned_abs();
    let seconds = micros / 1_000_000;
    // Hours 0 to 24: two digits.
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    out.push_bytes(&[
        digit(hours / 10),
        digit(hours),
        b':',
        digit(minutes / 10),
        digit(minutes),
        b':',
        digit(seconds / 10),
        digit(seconds),
    ]);
    out.push_fraction(micros % 1_000_000);
    Ok(())
}

/// The last decimal digit of `n`, as ASCII.
fn digit(n: u64) -> u8 {
    b'0' + (n % 10) as u8
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::hex;
    use super::*;

    type Decoder = fn(&[u8]) -> Result<Text, Reason>;

    /// (SQL literal, `<type>_send` bytes, the text path's result), from a
    /// PostgreSQL 15 server with the pinned session settings; for `date`,
    /// `timestamp` and `timestamptz` the result is `to_jsonb`'s string.
    fn check(decode: Decoder, vectors: &[(&str, &str, &str)]) {
        for &(literal, bytes, want) in vectors {
            assert_eq!(&*decode(&hex(bytes)).unwrap(), want, "{literal}");
        }
    }

    #[test]
    fn dates_from_the_server() {
        check(
            date,
            &[
                ("2000-01-01", "00000000", "2000-01-01"),
                ("1970-01-01", "ffffd533", "1970-01-01"),
                ("1999-12-31", "ffffffff", "1999-12-31"),
                ("2024-02-29", "00002279", "2024-02-29"),
                ("1900-02-28", "ffff718e", "1900-02-28"),
                ("1900-03-01", "ffff718f", "1900-03-01"),
                ("2000-02-29", "0000003b", "2000-02-29"),
                ("2100-03-01", "00008ee8", "2100-03-01"),
                ("4713-11-24 BC", "ffda9915", "4713-11-24 BC"),
                ("4714-11-24 BC", "ffda97a7", "4714-11-24 BC"),
                ("0001-01-01 BC", "fff4da8b", "0001-01-01 BC"),
                ("0001-12-31 BC", "fff4dbf8", "0001-12-31 BC"),
                ("0001-01-01", "fff4dbf9", "0001-01-01"),
                ("0044-03-15 BC", "fff49d7b", "0044-03-15 BC"),
                ("0005-02-29 BC", "fff4d511", "0005-02-29 BC"),
                ("0999-12-31", "fffa6d45", "0999-12-31"),
                ("9999-12-31", "002c95d3", "9999-12-31"),
                ("10000-01-01", "002c95d4", "10000-01-01"),
                ("294276-12-31", "065ce7ee", "294276-12-31"),
                ("5874897-12-31", "7fda970c", "5874897-12-31"),
                ("infinity", "7fffffff", "infinity"),
                ("-infinity", "80000000", "-infinity"),
                ("1582-10-10", "fffdacbb", "1582-10-10"),
            ],
        );
    }

    #[test]
    fn times_from_the_server() {
        check(
            time,
            &[
                ("00:00:00", "0000000000000000", "00:00:00"),
                ("12:34:56.789", "0000000a8be62608", "12:34:56.789"),
                ("24:00:00", "000000141dd76000", "24:00:00"),
                ("23:59:59.999999", "000000141dd75fff", "23:59:59.999999"),
                ("00:00:00.000001", "0000000000000001", "00:00:00.000001"),
                ("01:02:03.1", "00000000dde9ff60", "01:02:03.1"),
                ("13:14:15.123", "0000000b18777838", "13:14:15.123"),
                ("10:00:00.100000", "0000000861c5eea0", "10:00:00.1"),
            ],
        );
    }

    #[test]
    fn timetzs_from_the_server() {
        check(
            timetz,
            &[
                ("12:00+05:30", "0000000a0eebb000ffffb2a8", "12:00:00+05:30"),
                ("12:00+00", "0000000a0eebb00000000000", "12:00:00+00"),
                (
                    "12:00-00:00:30",
                    "0000000a0eebb0000000001e",
                    "12:00:00-00:00:30",
                ),
                (
                    "12:00+00:00:30",
                    "0000000a0eebb000ffffffe2",
                    "12:00:00+00:00:30",
                ),
                ("00:00-15:59", "00000000000000000000e0c4", "00:00:00-15:59"),
                (
                    "24:00:00+15:59",
                    "000000141dd76000ffff1f3c",
                    "24:00:00+15:59",
                ),
                (
                    "23:59:59.999999-01:02:03",
                    "000000141dd75fff00000e8b",
                    "23:59:59.999999-01:02:03",
                ),
                (
                    "12:34:56.789+01",
                    "0000000a8be62608fffff1f0",
                    "12:34:56.789+01",
                ),
                (
                    "00:00:00.000001-08",
                    "000000000000000100007080",
                    "00:00:00.000001-08",
                ),
                ("06:00:00.5+14", "00000005077d7920ffff3b20", "06:00:00.5+14"),
            ],
        );
    }

    /// `timestamp` and `timestamptz` send the same microseconds: the
    /// vectors are for `timestamp`, `timestamptz` adds `+00:00` (checked
    /// against the server too).
    const TIMESTAMPS: &[(&str, &str, &str)] = &[
        (
            "2000-01-01 00:00:00",
            "0000000000000000",
            "2000-01-01T00:00:00",
        ),
        (
            "1970-01-01 00:00:00",
            "fffca2fec4c82000",
            "1970-01-01T00:00:00",
        ),
        (
            "1999-12-31 23:59:59.999999",
            "ffffffffffffffff",
            "1999-12-31T23:59:59.999999",
        ),
        (
            "2024-02-29 12:34:56.789",
            "0002b58341728608",
            "2024-02-29T12:34:56.789",
        ),
        (
            "2024-01-01 12:34:56.5",
            "0002b0e060cafd20",
            "2024-01-01T12:34:56.5",
        ),
        (
            "2024-01-01 00:00:00.123",
            "0002b0d5d4eb2078",
            "2024-01-01T00:00:00.123",
        ),
        (
            "1900-01-01 00:00:00.000001",
            "fff4c9ee7c0b8001",
            "1900-01-01T00:00:00.000001",
        ),
        (
            "4713-11-24 00:00:00 BC",
            "fd0f9983eb0ae000",
            "4713-11-24T00:00:00 BC",
        ),
        (
            "4714-11-24 00:00:00 BC",
            "fd0f7cc1411fa000",
            "4714-11-24T00:00:00 BC",
        ),
        (
            "0001-01-01 00:00:00 BC",
            "ff1fc63d1bb12000",
            "0001-01-01T00:00:00 BC",
        ),
        (
            "0001-12-31 23:59:59.9 BC",
            "ff1fe2ffc59ad960",
            "0001-12-31T23:59:59.9 BC",
        ),
        (
            "0044-03-15 12:00:00 BC",
            "ff1af9e8fb46d000",
            "0044-03-15T12:00:00 BC",
        ),
        (
            "0001-01-01 00:00:00",
            "ff1fe2ffc59c6000",
            "0001-01-01T00:00:00",
        ),
        (
            "9999-12-31 23:59:59",
            "0380e70b912c3dc0",
            "9999-12-31T23:59:59",
        ),
        (
            "10000-01-01 00:00:00",
            "0380e70b913b8000",
            "10000-01-01T00:00:00",
        ),
        (
            "294276-12-31 23:59:59.999999",
            "7fffff5bb3b29fff",
            "294276-12-31T23:59:59.999999",
        ),
        ("infinity", "7fffffffffffffff", "infinity"),
        ("-infinity", "8000000000000000", "-infinity"),
    ];

    #[test]
    fn timestamps_from_the_server() {
        check(timestamp, TIMESTAMPS);
    }

    #[test]
    fn timestamptzs_from_the_server() {
        check(
            timestamptz,
            &[
                (
                    "2000-01-01 00:00:00+00",
                    "0000000000000000",
                    "2000-01-01T00:00:00+00:00",
                ),
                (
                    "1970-01-01 00:00:00+00",
                    "fffca2fec4c82000",
                    "1970-01-01T00:00:00+00:00",
                ),
                (
                    "1999-12-31 23:59:59.999999+00",
                    "ffffffffffffffff",
                    "1999-12-31T23:59:59.999999+00:00",
                ),
                (
                    "2024-02-29 12:34:56.789+00",
                    "0002b58341728608",
                    "2024-02-29T12:34:56.789+00:00",
                ),
                (
                    "2024-06-01 12:00:00+05:30",
                    "0002bcccff89ea00",
                    "2024-06-01T06:30:00+00:00",
                ),
                (
                    "2024-01-01 00:00:00.123-03",
                    "0002b0d858a60c78",
                    "2024-01-01T03:00:00.123+00:00",
                ),
                (
                    "1900-01-01 00:00:00.000001+00",
                    "fff4c9ee7c0b8001",
                    "1900-01-01T00:00:00.000001+00:00",
                ),
                (
                    "4713-11-24 00:00:00+00 BC",
                    "fd0f9983eb0ae000",
                    "4713-11-24T00:00:00+00:00 BC",
                ),
                (
                    "4714-11-24 00:00:00+00 BC",
                    "fd0f7cc1411fa000",
                    "4714-11-24T00:00:00+00:00 BC",
                ),
                (
                    "0001-01-01 00:00:00+00 BC",
                    "ff1fc63d1bb12000",
                    "0001-01-01T00:00:00+00:00 BC",
                ),
                (
                    "0001-12-31 23:59:59.9+00 BC",
                    "ff1fe2ffc59ad960",
                    "0001-12-31T23:59:59.9+00:00 BC",
                ),
                (
                    "0044-03-15 12:00:00+00 BC",
                    "ff1af9e8fb46d000",
                    "0044-03-15T12:00:00+00:00 BC",
                ),
                (
                    "0001-01-01 00:00:00+00",
                    "ff1fe2ffc59c6000",
                    "0001-01-01T00:00:00+00:00",
                ),
                (
                    "9999-12-31 23:59:59+00",
                    "0380e70b912c3dc0",
                    "9999-12-31T23:59:59+00:00",
                ),
                (
                    "10000-01-01 00:00:00+00",
                    "0380e70b913b8000",
                    "10000-01-01T00:00:00+00:00",
                ),
                (
                    "294276-12-31 23:59:59.999999+00",
                    "7fffff5bb3b29fff",
                    "294276-12-31T23:59:59.999999+00:00",
                ),
                ("infinity", "7fffffffffffffff", "infinity"),
                ("-infinity", "8000000000000000", "-infinity"),
            ],
        );
    }

    #[test]
    fn wrong_lengths_and_out_of_range_values_are_errors() {
        for decode in [date, time, timetz, timestamp, timestamptz] {
            assert!(decode(&[]).is_err());
            assert!(decode(&[0; 3]).is_err());
            assert!(decode(&[0; 13]).is_err());
        }
        assert!(date(&[0; 8]).is_err());
        assert!(timestamp(&[0; 4]).is_err());
        assert!(timetz(&[0; 8]).is_err());
        // One day before Julian day 0, and 5874898-01-01.
        assert!(date(&(MIN_DATE - 1).to_be_bytes()).is_err());
        assert!(date(&END_DATE.to_be_bytes()).is_err());
        assert!(timestamp(&(MIN_TIMESTAMP - 1).to_be_bytes()).is_err());
        assert!(timestamptz(&END_TIMESTAMP.to_be_bytes()).is_err());
        assert!(time(&(-1_i64).to_be_bytes()).is_err());
        assert!(time(&(USECS_PER_DAY + 1).to_be_bytes()).is_err());
        let far_zone = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xe1, 0x01];
        assert!(timetz(&far_zone).is_err());
    }

    #[test]
    fn every_day_of_four_centuries_counts_up() {
        // Day by day across 1600..2000, a leap day every fourth year except
        // 1700, 1800, 1900.
        let (mut y, mut m, mut d) = (1600, 1, 1);
        let start = -146_097;
        for days in start..0 {
            assert_eq!(civil_date(days), (y, m, d), "{days}");
            let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
            let month_days = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > month_days {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
        assert_eq!((y, m, d), (2000, 1, 1));
    }
}
