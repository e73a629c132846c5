//! The error for text that does not parse as its column's type.

use std::fmt;

use super::kind::ValueType;

/// How many bytes of the offending text an error keeps.
const EXCERPT_BYTES: usize = 48;

/// A column's text did not parse as its type.
///
/// Names the type, says what was wrong, and keeps a short excerpt of the
/// text (at most 48 bytes, invalid UTF-8 replaced), so logging it never
/// dumps a large value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse {} value ({reason}): {excerpt}", .value_type.describe())]
pub struct ValueError {
    value_type: ValueType,
    reason: &'static str,
    excerpt: Excerpt,
}

impl ValueError {
    /// An error for `text` of type `value_type`.
    pub(crate) fn new(value_type: ValueType, text: &[u8], reason: &'static str) -> ValueError {
        ValueError {
            value_type,
            reason,
            excerpt: Excerpt::of(text),
        }
    }

    /// The type the text was parsed as.
    pub fn value_type(&self) -> ValueType {
        self.value_type
    }

    /// What was wrong, in a few words.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The start of the offending text (lossy UTF-8, possibly truncated).
    pub fn excerpt(&self) -> &str {
        &self.excerpt.text
    }
}

/// A short, quoted, truncated copy of bad input.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Excerpt {
    text: String,
    truncated: bool,
}

impl Excerpt {
    fn of(text: &[u8]) -> Excerpt {
        let truncated = text.len() > EXCERPT_BYTES;
        let head = text.get(..EXCERPT_BYTES).unwrap_or(text);
        Excerpt {
            text: String::from_utf8_lossy(head).into_owned(),
            truncated,
        }
    }
}

impl fmt::Display for Excerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)?;
        if self.truncated {
            f.write_str("…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::ScalarKind;
    use super::*;

    #[test]
    fn message_names_type_and_truncates() {
        let long = vec![b'x'; 1000];
        let err = ValueError::new(ValueType::array_of(ScalarKind::Int4), &long, "bad digit");
        let msg = err.to_string();
        assert!(
            msg.starts_with("cannot parse int4[] value (bad digit): \"xxx"),
            "{msg}"
        );
        assert!(msg.ends_with("\"…"), "{msg}");
        assert!(msg.len() < 100, "{msg}");
        assert_eq!(err.excerpt().len(), EXCERPT_BYTES);
    }

    #[test]
    fn invalid_utf8_and_multibyte_cut_are_lossy_not_panics() {
        let mut text = vec![b'a'; EXCERPT_BYTES - 1];
        text.extend_from_slice("é".as_bytes());
        let err = ValueError::new(ValueType::scalar(ScalarKind::Text), &text, "x");
        assert!(err.excerpt().ends_with('\u{fffd}'));
        let err = ValueError::new(ValueType::scalar(ScalarKind::Text), b"\xff\xfe", "x");
        assert_eq!(
            err.to_string(),
            "cannot parse text value (x): \"\u{fffd}\u{fffd}\""
        );
    }
}
