//! Byte sizes written as an integer or an integer and a unit: `1048576`,
//! `512KiB`, `8MiB`, `1GB`.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// What a size looks like, for error messages.
const EXPECTED: &str = "a number of bytes or a size such as `512KiB` or `8MiB`";

/// Parses an integer with an optional unit: `B`, `KB`/`MB`/`GB` (powers of
/// 1000) or `KiB`/`MiB`/`GiB` (powers of 1024), case-insensitive, with
/// optional spaces before the unit.
pub(crate) fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let invalid = || format!("invalid size `{text}`, expected {EXPECTED}");
    if digits.is_empty() {
        return Err(invalid());
    }
    let value: usize = digits.parse().map_err(|_| invalid())?;
    let multiplier: usize = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(invalid()),
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size `{text}` is too large"))
}

/// `deserialize_with` for a size in bytes.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = usize;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(EXPECTED)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<usize, E> {
            parse_size(text).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<usize, E> {
            usize::try_from(value).map_err(|_| E::custom(format!("size `{value}` is too large")))
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<usize, E> {
            usize::try_from(value)
                .map_err(|_| E::custom(format!("invalid size `{value}`, expected {EXPECTED}")))
        }
    }

    deserializer.deserialize_any(SizeVisitor)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn parses_bytes_and_units() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("10B"), Ok(10));
        assert_eq!(parse_size("8MiB"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_size("512 KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("1gib"), Ok(1 << 30));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
    }

    #[test]
    fn refuses_malformed_sizes() {
        for text in ["", "MiB", "1.5MiB", "-1", "8 megabytes", "8M"] {
            assert!(parse_size(text).is_err(), "{text}");
        }
    }
}
