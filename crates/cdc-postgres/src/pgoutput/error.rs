//! Errors from decoding pgoutput messages.

/// Why a pgoutput message could not be decoded.
///
/// Offsets are byte positions within the message, counting its tag byte as
/// offset 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message ended before a field was complete.
    #[error("pgoutput message truncated: reading {what} at offset {offset} needs {needed} byte(s), only {available} left")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Where the field starts.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the message.
        available: usize,
    },
    /// A NUL-terminated string had no terminating NUL before the end of the
    /// message.
    #[error("pgoutput message truncated: {what} starting at offset {offset} has no terminating NUL byte")]
    UnterminatedString {
        /// The field being read.
        what: &'static str,
        /// Where the string starts.
        offset: usize,
    },
    /// A name or prefix was not valid UTF-8.
    #[error("pgoutput {what} at offset {offset} is not valid UTF-8 (the replication connection must use client_encoding UTF8)")]
    InvalidUtf8 {
        /// The field being read.
        what: &'static str,
        /// Where the string starts.
        offset: usize,
    },
    /// The first byte is not a pgoutput protocol v1 message type.
    #[error("unknown pgoutput message tag {tag:#04x} ({})", printable(*tag))]
    UnknownMessageTag {
        /// The tag byte.
        tag: u8,
    },
    /// The first byte is a message type of a later protocol version (streamed
    /// or two-phase transactions), which protocol v1 never sends.
    #[error("pgoutput {name} message ({}) is not part of protocol version 1", printable(*tag))]
    UnsupportedMessage {
        /// The tag byte.
        tag: u8,
        /// The message's name.
        name: &'static str,
    },
    /// A column value had a kind byte other than `n`, `u`, `t` or `b`.
    #[error("unknown pgoutput tuple column kind {kind:#04x} ({}) for column {column} at offset {offset}", printable(*kind))]
    UnknownTupleKind {
        /// The kind byte.
        kind: u8,
        /// The zero-based column index.
        column: usize,
        /// Where the kind byte is.
        offset: usize,
    },
    /// A row message had an unexpected tuple marker (`N`, `K` or `O`).
    #[error("pgoutput {message} message: expected {expected} at offset {offset}, found {found:#04x} ({})", printable(*found))]
    UnexpectedTupleMarker {
        /// The message being decoded.
        message: &'static str,
        /// What markers were allowed.
        expected: &'static str,
        /// The byte found.
        found: u8,
        /// Where the byte is.
        offset: usize,
    },
    /// A length field was negative.
    #[error("pgoutput {what} at offset {offset} is negative ({value})")]
    NegativeLength {
        /// The field being read.
        what: &'static str,
        /// Where the field starts.
        offset: usize,
        /// The value read.
        value: i32,
    },
    /// A count field was negative.
    #[error("pgoutput {what} at offset {offset} is negative ({value})")]
    NegativeCount {
        /// The field being read.
        what: &'static str,
        /// Where the field starts.
        offset: usize,
        /// The value read.
        value: i32,
    },
    /// Bytes were left over after a complete message.
    #[error("pgoutput {message} message has {count} trailing byte(s) at offset {offset}")]
    TrailingBytes {
        /// The message decoded.
        message: &'static str,
        /// Where the trailing bytes start.
        offset: usize,
        /// How many bytes are left over.
        count: usize,
    },
}

/// A byte as a quoted ASCII character when printable, for error messages.
fn printable(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", char::from(b))
    } else {
        "non-printable".to_owned()
    }
}
