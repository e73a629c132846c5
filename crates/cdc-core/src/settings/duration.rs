//! Durations written as an integer and a unit: `10ms`, `30s`, `5m`, `1h`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// What a duration looks like, for error messages.
const EXPECTED: &str = "a duration such as `10ms`, `30s`, `5m` or `1h`";

/// Parses `<integer><unit>` with unit `ms`, `s`, `m` or `h`; spaces between
/// the number and the unit are allowed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let invalid = || format!("invalid duration `{text}`, expected {EXPECTED}");
    if digits.is_empty() {
        return Err(invalid());
    }
    let value: u64 = digits.parse().map_err(|_| invalid())?;
    let millis_per_unit: u64 = match unit.trim_start() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => {
            return Err(format!(
                "duration `{text}` has no unit, expected {EXPECTED}"
            ))
        }
        _ => return Err(invalid()),
    };
    value
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration `{text}` is too large"))
}

/// `#[serde(deserialize_with = "deserialize_duration")]` for a
/// [`Duration`] field written as text (see [`parse_duration`]). A bare
/// number is refused: its unit would be a guess.
pub fn deserialize_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(EXPECTED)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "duration `{value}` has no unit, expected {EXPECTED}"
            )))
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "invalid duration `{value}`, expected {EXPECTED}"
            )))
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "invalid duration `{value}`, expected {EXPECTED}"
            )))
        }
    }

    deserializer.deserialize_any(DurationVisitor)
}

/// `#[serde(default, deserialize_with = "deserialize_optional_duration")]`
/// for an `Option<Duration>` field: absent or `null` is `None`, text is
/// read as [`deserialize_duration`] reads it.
pub fn deserialize_optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    struct Text(Duration);

    impl<'de> serde::Deserialize<'de> for Text {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserialize_duration(deserializer).map(Text)
        }
    }

    Ok(<Option<Text> as serde::Deserialize>::deserialize(deserializer)?.map(|t| t.0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5 m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn refuses_malformed_durations() {
        for text in ["", "ms", "10", "1.5s", "-1s", "10 parsecs", "10sec", "s10"] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
        assert!(parse_duration("18446744073709551615h").is_err());
    }

    #[test]
    fn a_bare_number_names_the_missing_unit() {
        #[derive(serde::Deserialize, Debug)]
        struct C {
            #[serde(deserialize_with = "deserialize_duration")]
            #[allow(dead_code)]
            t: Duration,
        }
        let err = serde_json::from_str::<C>(r#"{"t": 5}"#).unwrap_err();
        assert!(err.to_string().contains("no unit"), "{err}");
    }
}
