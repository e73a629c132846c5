//! [`Text`]: the string a [`Value`](crate::Value) holds.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// An immutable string, as the text-like [`Value`](crate::Value) variants
/// hold it. It derefs to `str`, so it is read like one (`&*text`,
/// `text.len()`, `text == "abc"`), and is made from one with `into()`.
///
/// A text is a range of a reference-counted buffer. Made from a `&str` or
/// a `String` it has a buffer of its own; the rows a [`RowsBuilder`]
/// builds share one buffer for the texts of a block of rows (up to 32 KiB
/// of text, or one larger row), so a block costs one allocation for its
/// texts instead of one per value. Such a buffer is freed when the last
/// text in it is dropped: a text kept longer than its row keeps the whole
/// buffer alive; `Text::from(&*text)` copies it out.
///
/// Cloning is cheap (a reference count); equality, ordering and hashing are
/// those of the `str`.
///
/// [`RowsBuilder`]: crate::RowsBuilder
#[derive(Clone)]
pub struct Text {
    buf: Arc<str>,
    start: u32,
    /// The end of the range, or [`TO_THE_END`].
    end: u32,
}

/// The `end` of a text that runs to the end of its buffer: a text of its
/// own longer than `u32` can count (no PostgreSQL value is).
const TO_THE_END: u32 = u32::MAX;

impl Text {
    /// The range `start..end` of `buf`; `None` unless it is a range of
    /// whole characters of `buf` that ends before `u32::MAX`.
    pub(crate) fn slice(buf: &Arc<str>, start: usize, end: usize) -> Option<Text> {
        buf.get(start..end)?;
        let end = u32::try_from(end).ok().filter(|&e| e != TO_THE_END)?;
        Some(Text {
            buf: Arc::clone(buf),
            start: u32::try_from(start).ok()?,
            end,
        })
    }

    /// A text with a buffer of its own.
    fn owned(buf: Arc<str>) -> Text {
        let end = u32::try_from(buf.len())
            .ok()
            .filter(|&e| e != TO_THE_END)
            .unwrap_or(TO_THE_END);
        Text { buf, start: 0, end }
    }

    /// The text as a `str`.
    pub fn as_str(&self) -> &str {
        let range = if self.end == TO_THE_END {
            self.buf.get(self.start as usize..)
        } else {
            self.buf.get(self.start as usize..self.end as usize)
        };
        range.unwrap_or_default()
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Default for Text {
    fn default() -> Self {
        Text::from("")
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text::owned(Arc::from(s))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text::owned(Arc::from(s))
    }
}

impl From<Box<str>> for Text {
    fn from(s: Box<str>) -> Self {
        Text::owned(Arc::from(s))
    }
}

impl From<&Text> for String {
    fn from(t: &Text) -> Self {
        t.as_str().to_owned()
    }
}

impl From<Text> for String {
    fn from(t: Text) -> Self {
        t.as_str().to_owned()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == other.as_str()
    }
}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Text {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_text_reads_as_its_str() {
        let t = Text::from("héllo");
        assert_eq!(&*t, "héllo");
        assert_eq!(t, "héllo");
        assert_eq!(t.len(), 6);
        assert_eq!(format!("{t} {t:?}"), "héllo \"héllo\"");
        assert_eq!(
            Text::from(String::from("a")),
            Text::from(Box::<str>::from("a"))
        );
        assert_eq!(Text::default(), "");
    }

    #[test]
    fn slices_share_their_buffer_and_compare_by_content() {
        let buf: Arc<str> = Arc::from("abcabc");
        let a = Text::slice(&buf, 0, 3).unwrap();
        let b = Text::slice(&buf, 3, 6).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, Text::from("abc"));
        assert_eq!(Arc::strong_count(&buf), 3);
        drop((a, b));
        assert_eq!(Arc::strong_count(&buf), 1);
    }

    #[test]
    fn a_slice_must_be_whole_characters_in_range() {
        let buf: Arc<str> = Arc::from("é");
        assert!(Text::slice(&buf, 0, 1).is_none());
        assert!(Text::slice(&buf, 0, 3).is_none());
        assert_eq!(Text::slice(&buf, 0, 2).unwrap(), "é");
    }
}
