//! PostgreSQL's `COPY … TO STDOUT (FORMAT binary)` framing: an 11-byte
//! signature (`PGCOPY\n\xff\r\n\0`), a 32-bit flags word, a 32-bit header
//! extension length and that many bytes; then one tuple after another, each
//! a 16-bit field count followed by, per field, a 32-bit length (`-1` for
//! NULL) and that many bytes of the column type's binary send format; and
//! a 16-bit `-1` as the trailer. Every integer is big-endian.
//!
//! [`TupleAssembler`] cuts the byte chunks the server sends (one
//! `CopyData` message per tuple, the header in front of the first) into
//! tuples, wherever the chunk boundaries fall. It never panics on any
//! input: a malformed stream is a [`CopyBinaryError`].

use std::fmt;
use std::ops::Range;

/// The signature every binary COPY stream starts with.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Bit 16 of the flags word: OIDs are included in the data (servers
/// before PostgreSQL 12 only). Bits 17–31 are critical: an unknown one
/// must stop the reader. Bits 0–15 may be ignored.
const FLAG_OIDS: u32 = 1 << 16;
const CRITICAL_FLAGS: u32 = 0xffff_0000;

/// A binary COPY stream that is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CopyBinaryError {
    reason: &'static str,
}

impl CopyBinaryError {
    fn new(reason: &'static str) -> Self {
        Self { reason }
    }

    /// What was wrong, in a few words.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for CopyBinaryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed binary COPY data: {}", self.reason)
    }
}

/// One field of a tuple: `None` for NULL, otherwise the range of its bytes
/// in the tuple buffer handed to the callback of [`TupleAssembler::push`].
pub type FieldRange = Option<Range<usize>>;

/// Where the assembler is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the signature, flags and header extension.
    Header,
    /// Reading tuples.
    Tuples,
    /// The trailer came: no more bytes are allowed.
    Done,
}

/// Reassembles tuples from the chunks of a binary COPY stream.
///
/// A tuple held whole by one chunk is handed out as a slice of that chunk;
/// only a tuple (or header) spanning chunks is copied.
#[derive(Debug)]
pub struct TupleAssembler {
    stage: Stage,
    /// Bytes of an incomplete header or tuple.
    partial: Vec<u8>,
    /// Field ranges of the current tuple, reused between tuples.
    fields: Vec<FieldRange>,
}

impl Default for TupleAssembler {
    fn default() -> Self {
        Self::new()
    }
}

/// What one parse step found at the start of a buffer.
enum Step {
    /// The buffer ends before the item does.
    Incomplete,
    /// The header, `n` bytes long.
    Header(usize),
    /// A tuple of `n` bytes (fields in `fields`).
    Tuple(usize),
    /// The trailer (2 bytes).
    Trailer,
}

impl TupleAssembler {
    /// An assembler expecting the stream's header.
    pub fn new() -> Self {
        Self {
            stage: Stage::Header,
            partial: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// Feeds the next chunk, calling `on_tuple(bytes, fields)` for every
    /// tuple it completes, in order: `fields` are ranges into `bytes`.
    /// Stops at the first error (of the stream, or `on_tuple`'s); the
    /// assembler should then be dropped.
    pub fn push<E: From<CopyBinaryError>>(
        &mut self,
        chunk: &[u8],
        mut on_tuple: impl FnMut(&[u8], &[FieldRange]) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.partial.is_empty() {
            let used = self.drain(chunk, &mut on_tuple)?;
            self.partial
                .extend_from_slice(chunk.get(used..).unwrap_or_default());
            return Ok(());
        }
        // Complete the pending item first (it may take bytes from several
        // chunks), then go on in the same buffer.
        let mut pending = std::mem::take(&mut self.partial);
        pending.extend_from_slice(chunk);
        let used = self.drain(&pending, &mut on_tuple)?;
        pending.drain(..used.min(pending.len()));
        self.partial = pending;
        Ok(())
    }

    /// Parses every complete item at the start of `buf`; returns how many
    /// bytes they took.
    fn drain<E: From<CopyBinaryError>>(
        &mut self,
        buf: &[u8],
        on_tuple: &mut impl FnMut(&[u8], &[FieldRange]) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut at = 0;
        loop {
            let rest = buf.get(at..).unwrap_or_default();
            if rest.is_empty() {
                return Ok(at);
            }
            match self.step(rest)? {
                Step::Incomplete => return Ok(at),
                Step::Header(n) => {
                    self.stage = Stage::Tuples;
                    at += n;
                }
                Step::Tuple(n) => {
                    on_tuple(rest.get(..n).unwrap_or_default(), &self.fields)?;
                    at += n;
                }
                Step::Trailer => {
                    self.stage = Stage::Done;
                    at += 2;
                }
            }
        }
    }

    fn step(&mut self, buf: &[u8]) -> Result<Step, CopyBinaryError> {
        match self.stage {
            Stage::Header => header(buf),
            Stage::Tuples => tuple(buf, &mut self.fields),
            Stage::Done => Err(CopyBinaryError::new("data after the trailer")),
        }
    }

    /// Ends the stream: an error unless the header and the trailer came
    /// and nothing is pending (the server always sends both, so the stream
    /// was cut).
    pub fn finish(&self) -> Result<(), CopyBinaryError> {
        match (self.stage, self.partial.is_empty()) {
            (Stage::Done, true) => Ok(()),
            (Stage::Header, _) => Err(CopyBinaryError::new("the stream ends in its header")),
            _ => Err(CopyBinaryError::new("the stream ends before its trailer")),
        }
    }
}

fn be_u16(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes(bytes.try_into().ok()?))
}

fn be_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

fn header(buf: &[u8]) -> Result<Step, CopyBinaryError> {
    let fixed = SIGNATURE.len() + 8;
    let seen = buf.len().min(SIGNATURE.len());
    if buf.get(..seen) != SIGNATURE.get(..seen) {
        return Err(CopyBinaryError::new("no binary COPY signature"));
    }
    let (Some(flags), Some(ext)) = (be_u32(buf, 11), be_u32(buf, 15)) else {
        return Ok(Step::Incomplete);
    };
    if flags & FLAG_OIDS != 0 {
        return Err(CopyBinaryError::new("the data includes OIDs"));
    }
    if flags & CRITICAL_FLAGS != 0 {
        return Err(CopyBinaryError::new("an unknown critical header flag"));
    }
    let len = usize::try_from(ext)
        .ok()
        .and_then(|e| fixed.checked_add(e))
        .ok_or(CopyBinaryError::new("a header extension too long"))?;
    if buf.len() < len {
        return Ok(Step::Incomplete);
    }
    Ok(Step::Header(len))
}

fn tuple(buf: &[u8], fields: &mut Vec<FieldRange>) -> Result<Step, CopyBinaryError> {
    let Some(count) = be_u16(buf, 0) else {
        return Ok(Step::Incomplete);
    };
    if count == 0xffff {
        return Ok(Step::Trailer);
    }
    if count > 0x7fff {
        return Err(CopyBinaryError::new("a negative field count"));
    }
    fields.clear();
    let mut at = 2usize;
    for _ in 0..count {
        let Some(len) = be_u32(buf, at) else {
            return Ok(Step::Incomplete);
        };
        at += 4;
        if len == u32::MAX {
            fields.push(None);
            continue;
        }
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= i32::MAX as usize)
            .ok_or(CopyBinaryError::new("a negative field length"))?;
        let end = at
            .checked_add(len)
            .ok_or(CopyBinaryError::new("a field too long"))?;
        if buf.len() < end {
            return Ok(Step::Incomplete);
        }
        fields.push(Some(at..end));
        at = end;
    }
    Ok(Step::Tuple(at))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stream(tuples: &[Vec<Option<&[u8]>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&3u32.to_be_bytes());
        out.extend_from_slice(b"ext");
        for t in tuples {
            out.extend_from_slice(&(t.len() as u16).to_be_bytes());
            for f in t {
                match f {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(b) => {
                        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
                        out.extend_from_slice(b);
                    }
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    type Owned = Vec<Vec<Option<Vec<u8>>>>;

    fn feed(chunks: &[&[u8]]) -> Result<Owned, CopyBinaryError> {
        let mut a = TupleAssembler::new();
        let mut out = Vec::new();
        for c in chunks {
            a.push(c, |bytes, fields| {
                out.push(
                    fields
                        .iter()
                        .map(|f| f.clone().map(|r| bytes[r].to_vec()))
                        .collect(),
                );
                Ok::<_, CopyBinaryError>(())
            })?;
        }
        a.finish()?;
        Ok(out)
    }

    fn sample() -> (Vec<u8>, Owned) {
        let rows: Vec<Vec<Option<&[u8]>>> = vec![
            vec![Some(b"\0\0\0\x01"), None, Some(b"")],
            vec![Some(b"abc"), Some(b"de"), None],
            vec![],
        ];
        let want = rows
            .iter()
            .map(|r| r.iter().map(|f| f.map(<[u8]>::to_vec)).collect())
            .collect();
        (stream(&rows), want)
    }

    #[test]
    fn whole_stream_in_one_chunk() {
        let (bytes, want) = sample();
        assert_eq!(feed(&[&bytes]).unwrap(), want);
    }

    #[test]
    fn every_split_point_gives_the_same_tuples() {
        let (bytes, want) = sample();
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(feed(&[a, b]).unwrap(), want, "cut at {cut}");
        }
        let single: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(feed(&single).unwrap(), want);
    }

    #[test]
    fn malformed_streams_are_errors() {
        let (bytes, _) = sample();
        let err = |chunks: &[&[u8]]| feed(chunks).unwrap_err().reason();
        assert_eq!(err(&[b"PGCOPX\n\xff\r\n\0"]), "no binary COPY signature");
        assert_eq!(err(&[&bytes[..5]]), "the stream ends in its header");
        assert_eq!(
            err(&[&bytes[..bytes.len() - 2]]),
            "the stream ends before its trailer"
        );
        assert_eq!(err(&[&bytes, b"x"]), "data after the trailer");
        let mut oids = bytes.clone();
        oids[12] = 1; // flags bit 16
        assert_eq!(err(&[&oids]), "the data includes OIDs");
        let mut critical = bytes.clone();
        critical[11] = 0x80;
        assert_eq!(err(&[&critical]), "an unknown critical header flag");
        let mut negative = stream(&[vec![Some(b"x")]]);
        let at = SIGNATURE.len() + 8 + 3 + 2;
        negative[at..at + 4].copy_from_slice(&(-2i32).to_be_bytes());
        assert_eq!(err(&[&negative]), "a negative field length");
    }

    proptest! {
        #[test]
        fn any_bytes_in_any_chunks_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..200),
            cut in 0usize..200,
        ) {
            let cut = cut.min(data.len());
            let (a, b) = data.split_at(cut);
            let _ = feed(&[a, b]);
            let mut with_header = stream(&[]);
            with_header.truncate(SIGNATURE.len() + 11);
            with_header.extend_from_slice(&data);
            let _ = feed(&[&with_header]);
        }
    }
}
