//! `interval` from its binary send format to `interval_out`'s text with
//! `IntervalStyle=postgres`.
//!
//! The send format is `i64` microseconds, `i32` days, `i32` months. The text
//! is the nonzero `years`/`mons` (months split into whole years and the
//! rest, both with the sign of the months) and `days` fields, then a clock
//! part `[-]HH:MM:SS[.f]` when the microseconds are nonzero or nothing came
//! before:
//!
//! | fields (µs, days, months) | text                                   |
//! |---------------------------|----------------------------------------|
//! | 0, 0, 0                   | `00:00:00`                             |
//! | 7 380 000 000, -1, 0      | `-1 days +02:03:00`                    |
//! | -1 000 000, 0, 0          | `-00:00:01`                            |
//! | 0, -1, 1                  | `1 mon -1 days`                        |
//! | 1 000 000, 0, -12         | `-1 years +00:00:01`                   |
//! | `i64::MAX`, 0, 0          | `2562047788:00:54.775807`              |
//!
//! A field other than the first gets a `+` when it is positive and the one
//! before it was negative; units are plural unless the value is exactly 1.
//! All three fields at their minimum or maximum are PostgreSQL 17's
//! `-infinity` and `infinity`.

use super::super::scalar::Reason;
use super::ascii::Ascii;
use cdc_core::Text;

const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_MINUTE: i64 = 60 * USECS_PER_SEC;
const USECS_PER_HOUR: i64 = 60 * USECS_PER_MINUTE;

/// `interval`: `i64` microseconds, `i32` days, `i32` months → the
/// `IntervalStyle=postgres` text, e.g. `1 year 2 mons -3 days +04:05:06.7`.
///
/// `infinities`: the server is PostgreSQL 17 or later, where all three
/// fields at their minimum or maximum are `-infinity` and `infinity`;
/// before 17 they are ordinary (extreme) values.
pub(crate) fn interval(bytes: &[u8], infinities: bool) -> Result<Text, Reason> {
    interval_ascii(bytes, infinities)?.finish()
}

/// [`interval`] in a stack buffer.
pub(super) fn interval_ascii(bytes: &[u8], infinities: bool) -> Result<Ascii, Reason> {
    let fields: &[u8; 16] = bytes
        .try_into()
        .map_err(|_| "wrong length for a binary interval")?;
    let (time, rest) = fields.split_at(8);
    let (days, months) = rest.split_at(4);
    let (time, days, months) = (
        i64::from_be_bytes(time.try_into().map_err(|_| "short interval")?),
        i32::from_be_bytes(days.try_into().map_err(|_| "short interval")?),
        i32::from_be_bytes(months.try_into().map_err(|_| "short interval")?),
    );
    match (infinities, time, days, months) {
        (true, i64::MIN, i32::MIN, i32::MIN) => return Ok(Ascii::of("-infinity")),
        (true, i64::MAX, i32::MAX, i32::MAX) => return Ok(Ascii::of("infinity")),
        _ => {}
    }
    let mut out = Ascii::new();
    let mut state = Fields {
        empty: true,
        last_negative: false,
    };
    // Rust's `/` and `%` truncate toward zero, as C's do: every part keeps
    // the sign of the field it comes from.
    let months = i64::from(months);
    state.push(&mut out, months / 12, "year");
    state.push(&mut out, months % 12, "mon");
    state.push(&mut out, i64::from(days), "day");

    let hours = time / USECS_PER_HOUR;
    let minutes = time % USECS_PER_HOUR / USECS_PER_MINUTE;
    let seconds = time % USECS_PER_MINUTE / USECS_PER_SEC;
    let micros = time % USECS_PER_SEC;
    if state.empty || time != 0 {
        if !state.empty {
            out.push(b' ');
        }
        if time < 0 {
            out.push(b'-');
        } else if state.last_negative {
            out.push(b'+');
        }
        out.push_padded(hours.unsigned_abs(), 2);
        out.push(b':');
        out.push_padded(minutes.unsigned_abs(), 2);
        out.push(b':');
        out.push_padded(seconds.unsigned_abs(), 2);
        out.push_fraction(micros.unsigned_abs());
    }
    Ok(out)
}

/// What the fields written so far mean for the next one.
struct Fields {
    /// Nothing written yet.
    empty: bool,
    /// The last field written was negative.
    last_negative: bool,
}

impl Fields {
    /// Writes ` <value> <unit>[s]` unless `value` is zero.
    fn push(&mut self, out: &mut Ascii, value: i64, unit: &str) {
        if value == 0 {
            return;
        }
        if !self.empty {
            out.push(b' ');
        }
        if value < 0 {
            out.push(b'-');
        } else if self.last_negative {
            out.push(b'+');
        }
        out.push_u64(value.unsigned_abs());
        out.push(b' ');
        out.push_str(unit);
        if value != 1 {
            out.push(b's');
        }
        self.empty = false;
        self.last_negative = value < 0;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::hex;
    use super::*;

    #[test]
    fn intervals_from_the_server() {
        // (SQL literal, `interval_send` bytes, `::text`) from PostgreSQL 15
        // with `IntervalStyle=postgres`.
        let vectors = [
            ("0", "00000000000000000000000000000000", "00:00:00"),
            (
                "-1 days +02:03:00",
                "00000001b7e1dd00ffffffff00000000",
                "-1 days +02:03:00",
            ),
            ("10 mons", "0000000000000000000000000000000a", "10 mons"),
            ("-1 sec", "fffffffffff0bdc00000000000000000", "-00:00:01"),
            (
                "1 mon -1 day",
                "0000000000000000ffffffff00000001",
                "1 mon -1 days",
            ),
            (
                "-1 year -2 mons +3 days -04:05:06.5",
                "fffffffc936c9e6000000003fffffff2",
                "-1 years -2 mons +3 days -04:05:06.5",
            ),
            (
                "1 day -00:00:01",
                "fffffffffff0bdc00000000100000000",
                "1 day -00:00:01",
            ),
            (
                "-178956970 years -8 mons -2147483648 days",
                "00000000000000008000000080000000",
                "-178956970 years -8 mons -2147483648 days",
            ),
            (
                "-2562047788:00:54.775807",
                "80000000000000010000000000000000",
                "-2562047788:00:54.775807",
            ),
            (
                "0.000001 sec",
                "00000000000000010000000000000000",
                "00:00:00.000001",
            ),
            (
                "-0.001 sec",
                "fffffffffffffc180000000000000000",
                "-00:00:00.001",
            ),
            ("1 year", "0000000000000000000000000000000c", "1 year"),
            ("-1 mon", "000000000000000000000000ffffffff", "-1 mons"),
            (
                "13 mons",
                "0000000000000000000000000000000d",
                "1 year 1 mon",
            ),
            (
                "-13 mons",
                "000000000000000000000000fffffff3",
                "-1 years -1 mons",
            ),
            ("1 day", "00000000000000000000000100000000", "1 day"),
            ("25:00:00", "00000014f46b04000000000000000000", "25:00:00"),
            (
                "-1 day -1 sec",
                "fffffffffff0bdc0ffffffff00000000",
                "-1 days -00:00:01",
            ),
            (
                "1 year 1 sec",
                "00000000000f4240000000000000000c",
                "1 year 00:00:01",
            ),
            (
                "-1 year +1 sec",
                "00000000000f424000000000fffffff4",
                "-1 years +00:00:01",
            ),
            (
                "1 year -1 day",
                "0000000000000000ffffffff0000000c",
                "1 year -1 days",
            ),
            (
                "-1 mon -1 day",
                "0000000000000000ffffffffffffffff",
                "-1 mons -1 days",
            ),
            (
                "100 years 1.123 sec",
                "00000000001122b800000000000004b0",
                "100 years 00:00:01.123",
            ),
            (
                "-00:00:00.1",
                "fffffffffffe79600000000000000000",
                "-00:00:00.1",
            ),
            (
                "1 year 1 mon 1 day 01:01:01.000001",
                "00000000da366d41000000010000000d",
                "1 year 1 mon 1 day 01:01:01.000001",
            ),
            (
                "-1 year -1 mons -1 days -01:01:01.000001",
                "ffffffff25c992bffffffffffffffff3",
                "-1 years -1 mons -1 days -01:01:01.000001",
            ),
            (
                "1 mons -1 days +1 sec",
                "00000000000f4240ffffffff00000001",
                "1 mon -1 days +00:00:01",
            ),
            // PostgreSQL 17's infinities.
            ("infinity", "7fffffffffffffff7fffffff7fffffff", "infinity"),
            ("-infinity", "80000000000000008000000080000000", "-infinity"),
        ];
        for (literal, bytes, want) in vectors {
            assert_eq!(&*interval(&hex(bytes), true).unwrap(), want, "{literal}");
        }
    }

    #[test]
    fn the_extremes_are_values_before_postgresql_17() {
        // What PostgreSQL 15 prints for the bytes 17 reads as infinities.
        let max = hex("7fffffffffffffff7fffffff7fffffff");
        assert_eq!(
            &*interval(&max, false).unwrap(),
            "178956970 years 7 mons 2147483647 days 2562047788:00:54.775807"
        );
        let min = hex("80000000000000008000000080000000");
        assert_eq!(
            &*interval(&min, false).unwrap(),
            "-178956970 years -8 mons -2147483648 days -2562047788:00:54.775808"
        );
    }

    #[test]
    fn a_field_short_of_infinity_is_finite() {
        // PostgreSQL 15 prints these; 17 rejects them on input.
        let mut max = hex("7fffffffffffffff7fffffff7fffffff");
        max[15] = 0xfe;
        assert_eq!(
            &*interval(&max, true).unwrap(),
            "178956970 years 6 mons 2147483647 days 2562047788:00:54.775807"
        );
        let mut min = hex("80000000000000008000000080000000");
        min[7] = 1;
        assert_eq!(
            &*interval(&min, true).unwrap(),
            "-178956970 years -8 mons -2147483648 days -2562047788:00:54.775807"
        );
    }

    #[test]
    fn wrong_lengths_are_errors() {
        for len in [0, 8, 12, 15, 17] {
            assert!(interval(&vec![0; len], true).is_err());
        }
    }
}
