//! Property tests: no input panics, and well-formed input decodes to text
//! the text parser accepts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cdc_core::Text;
use proptest::prelude::*;

use super::super::datetime as text;
use super::super::scalar::Reason;
use super::datetime::{date, time, timestamp, timestamptz, timetz};
use super::interval::interval;
use super::numeric::numeric;

type Decoder = fn(&[u8]) -> Result<Text, Reason>;

fn interval_17(bytes: &[u8]) -> Result<Text, Reason> {
    interval(bytes, true)
}

fn interval_before_17(bytes: &[u8]) -> Result<Text, Reason> {
    interval(bytes, false)
}

const DECODERS: [Decoder; 8] = [
    date,
    time,
    timetz,
    timestamp,
    timestamptz,
    interval_17,
    interval_before_17,
    numeric,
];

/// A slow reference for `numeric_out`: all digits as one decimal string,
/// the point placed by the weight, then the scale applied.
fn reference_numeric(negative: bool, weight: i16, dscale: u16, digits: &[u16]) -> String {
    let groups: String = digits.iter().map(|d| format!("{d:04}")).collect();
    // Pad so the point falls inside: `lead` zero groups before the digits.
    let weight = i64::from(weight);
    let lead = usize::try_from((-weight - 1).max(0)).unwrap();
    let padded = format!("{}{groups}", "0000".repeat(lead));
    let int_len = usize::try_from((weight + 1).max(0)).unwrap() * 4;
    let padded = if padded.len() < int_len {
        format!("{padded}{}", "0".repeat(int_len - padded.len()))
    } else {
        padded
    };
    let (int, frac) = padded.split_at(int_len);
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let scale = usize::from(dscale);
    let mut frac: String = frac.chars().take(scale).collect();
    while frac.len() < scale {
        frac.push('0');
    }
    let zero = int == "0" && frac.bytes().all(|b| b == b'0');
    let sign = if negative && !zero { "-" } else { "" };
    if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        for decode in DECODERS {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn right_lengths_never_panic(bytes in any::<[u8; 16]>()) {
        for decode in DECODERS {
            for len in [4, 8, 12, 16] {
                let _ = decode(&bytes[..len]);
            }
        }
    }

    #[test]
    fn numeric_with_any_header_never_panics(
        header in any::<[u8; 6]>(),
        digits in prop::collection::vec(any::<u16>(), 0..8),
    ) {
        let mut bytes = i16::try_from(digits.len()).unwrap().to_be_bytes().to_vec();
        bytes.extend_from_slice(&header);
        for d in &digits {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        if let Ok(text) = numeric(&bytes) {
            prop_assert!(!text.is_empty());
        }
    }

    #[test]
    fn numeric_matches_a_slow_reference(
        weight in any::<i16>(),
        negative in any::<bool>(),
        dscale in prop_oneof![0_u16..40, 0_u16..=0x3fff],
        digits in prop::collection::vec(
            prop_oneof![0_u16..10_000, Just(0_u16), Just(9999_u16)], 0..12),
    ) {
        // Keep the reference's padding small.
        let weight = weight % 300;
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&i16::try_from(digits.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(&weight.to_be_bytes());
        bytes.extend_from_slice(&if negative { 0x4000_u16 } else { 0 }.to_be_bytes());
        bytes.extend_from_slice(&dscale.to_be_bytes());
        for d in &digits {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        let got = numeric(&bytes).unwrap();
        prop_assert_eq!(&*got, reference_numeric(negative, weight, dscale, &digits));
    }

    #[test]
    fn in_range_datetimes_satisfy_the_text_parser(
        days in -2_451_545_i32..2_145_031_949,
        micros in -211_813_488_000_000_000_i64..9_223_371_331_200_000_000,
        time_of_day in 0_i64..=86_400_000_000,
        zone in -57_599_i32..=57_599,
    ) {
        let d = date(&days.to_be_bytes()).unwrap();
        prop_assert_eq!(&text::parse_date(d.as_bytes()).unwrap(), &d);
        let t = time(&time_of_day.to_be_bytes()).unwrap();
        prop_assert_eq!(&text::parse_time(t.as_bytes()).unwrap(), &t);
        let mut tz = time_of_day.to_be_bytes().to_vec();
        tz.extend_from_slice(&zone.to_be_bytes());
        let tz = timetz(&tz).unwrap();
        prop_assert_eq!(&text::parse_timetz(tz.as_bytes()).unwrap(), &tz);
        // The text parser's input has a space where the output has a `T`,
        // and `+00` where it has `+00:00`.
        let ts = timestamp(&micros.to_be_bytes()).unwrap();
        let server = ts.replacen('T', " ", 1);
        prop_assert_eq!(text::parse_timestamp(server.as_bytes()).unwrap(), ts);
        let tstz = timestamptz(&micros.to_be_bytes()).unwrap();
        let server = tstz.replacen('T', " ", 1).replacen("+00:00", "+00", 1);
        prop_assert_eq!(text::parse_timestamptz(server.as_bytes()).unwrap(), tstz);
    }

    #[test]
    fn every_interval_satisfies_the_text_parser(bytes in any::<[u8; 16]>(), infinities: bool) {
        let i = interval(&bytes, infinities).unwrap();
        prop_assert_eq!(&text::parse_interval(i.as_bytes()).unwrap(), &i);
    }
}

/// Every built-in type with a binary decoder, as PostgreSQL 15 and 17 send
/// it (their `interval`s differ).
fn every_binary_type() -> Vec<super::BinaryType> {
    let oids = (0..4000).filter(|&oid| super::BinaryType::builtin(oid).is_some());
    oids.flat_map(|oid| [150_000, 170_000].map(|v| super::BinaryType::for_server(oid, v)))
        .flatten()
        .collect()
}

/// One value decoded into a [`RowsBuilder`] as a row of its own.
fn decoded_into(
    ty: &super::BinaryType,
    bytes: &[u8],
) -> Result<cdc_core::Value, super::ValueError> {
    let mut rows = cdc_core::RowsBuilder::new();
    ty.decode_into(bytes, &mut rows)?;
    rows.end_row();
    let mut out = Vec::new();
    rows.finish_into(&mut out);
    let mut values = out
        .pop()
        .map(cdc_core::Row::into_values)
        .unwrap_or_default();
    assert!(out.is_empty() && values.len() == 1, "one row of one value");
    Ok(values.remove(0))
}

proptest! {
    #[test]
    fn decoding_into_a_builder_gives_what_decode_gives(
        bytes in prop::collection::vec(any::<u8>(), 0..40),
        len in prop::sample::select(vec![1usize, 2, 4, 8, 12, 16]),
    ) {
        for ty in every_binary_type() {
            for input in [&bytes[..], &bytes[..len.min(bytes.len())]] {
                let direct = ty.decode(input);
                let into = decoded_into(&ty, input);
                prop_assert_eq!(direct.is_ok(), into.is_ok(), "{:?} {:?}", ty, input);
                if let (Ok(a), Ok(b)) = (direct, into) {
                    prop_assert_eq!(a, b);
                }
            }
        }
    }
}

#[test]
fn every_type_with_a_binary_decoder_is_checked_above() {
    // Scalars and arrays of the 19 scalar types, twice.
    assert!(every_binary_type().len() >= 2 * 2 * 19);
}
