//! A small bounds-checked big-endian cursor over one message.

use bytes::Bytes;

use super::error::DecodeError;

/// Reads network-order fields from a message, failing (never panicking) when
/// the input is too short.
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `buf`.
    pub(crate) fn new(buf: &'a Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    /// The current offset from the start of the message.
    pub(crate) fn offset(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes as a borrowed slice, advancing past them.
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let truncated = || DecodeError::Truncated {
            what,
            offset: self.pos,
            needed: n,
            available: self.remaining(),
        };
        let end = self.pos.checked_add(n).ok_or_else(truncated)?;
        let slice = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(slice)
    }

    /// The next `N` bytes as an array.
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let offset = self.pos;
        let available = self.remaining();
        self.take(N, what)?
            .try_into()
            .map_err(|_| DecodeError::Truncated {
                what,
                offset,
                needed: N,
                available,
            })
    }

    /// `Byte1` / `Int8`.
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array(what)?))
    }

    /// `Int16`, signed.
    pub(crate) fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    /// `Int32`, signed.
    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    /// `Int32`, unsigned (OIDs, transaction ids).
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// `Int64`, signed (timestamps).
    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    /// `Int64`, unsigned (LSNs).
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A NUL-terminated UTF-8 `String`; the NUL is consumed, not returned.
    pub(crate) fn cstr(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let offset = self.pos;
        let rest = self.buf.get(offset..).unwrap_or_default();
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::UnterminatedString { what, offset })?;
        let bytes = rest.get(..len).unwrap_or_default();
        let s =
            std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { what, offset })?;
        // `len < rest.len()`, so `len + 1` cannot overflow or run past the end.
        self.pos = offset.saturating_add(len).saturating_add(1);
        Ok(s.to_owned())
    }

    /// An `Int32` length (which must not be negative) followed by that many
    /// bytes, returned as a zero-copy slice of the input.
    pub(crate) fn len_prefixed(
        &mut self,
        len_what: &'static str,
        what: &'static str,
    ) -> Result<Bytes, DecodeError> {
        let offset = self.pos;
        let len = self.i32(len_what)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::NegativeLength {
            what: len_what,
            offset,
            value: len,
        })?;
        let start = self.pos;
        self.take(len, what)?;
        Ok(self.buf.slice(start..self.pos))
    }
}
