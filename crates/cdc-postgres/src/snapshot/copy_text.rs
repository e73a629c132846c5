//! PostgreSQL's `COPY … TO STDOUT` text format, in its default flavour:
//! one row per line ending in `\n`, columns separated by a tab, `\N` for
//! NULL, and backslash escapes inside a value.
//!
//! Two pieces: [`LineAssembler`] cuts the byte chunks the server sends into
//! lines (a line may span chunks), and [`split_line`] cuts one line into its
//! column values, undoing the escapes. Neither panics on any input.
//!
//! Escapes, as the server's COPY reader understands them: `\\ \b \f \n \r
//! \t \v`, `\ddd` (one to three octal digits), `\xH` / `\xHH` (one or two hex
//! digits; a `\x` not followed by a hex digit is `x`), and `\c` = `c` for any
//! other byte `c`. A value is NULL only when its raw text is exactly `\N`;
//! elsewhere `\N` is just `N`.

use std::borrow::Cow;
use std::fmt;

/// A line of COPY text output that is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CopyTextError {
    /// Which column (0-based) was being read.
    column: usize,
    /// What was wrong.
    reason: &'static str,
}

impl CopyTextError {
    /// Which column (0-based) was being read when the error was found.
    pub fn column(&self) -> usize {
        self.column
    }

    /// What was wrong, in a few words.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for CopyTextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed COPY text in column {}: {}",
            self.column + 1,
            self.reason
        )
    }
}

/// One column value of a line: `None` for NULL, the bytes otherwise
/// (borrowed from the line when the value holds no escape).
pub type CopyField<'a> = Option<Cow<'a, [u8]>>;

/// Splits one line of COPY text output (without its trailing newline) into
/// its column values, clearing `out` first.
///
/// A line always has at least one value (an empty line is one empty
/// string); a table without columns therefore has to be special-cased by the
/// caller. Errors, never panics: the only malformed input is a line ending
/// inside an escape (a lone backslash at its very end).
pub fn split_line<'a>(line: &'a [u8], out: &mut Vec<CopyField<'a>>) -> Result<(), CopyTextError> {
    out.clear();
    let mut start = 0;
    loop {
        let column = out.len();
        // Find the end of the raw field: the first tab that is not the
        // byte right after a backslash.
        let mut i = start;
        let mut escaped = false;
        let end = loop {
            let rest = line.get(i..).unwrap_or_default();
            let Some(at) = memchr::memchr2(b'\t', b'\\', rest).map(|off| i + off) else {
                break line.len();
            };
            if line.get(at) == Some(&b'\t') {
                break at;
            }
            escaped = true;
            if at + 1 >= line.len() {
                return Err(CopyTextError {
                    column,
                    reason: "line ends with a lone backslash",
                });
            }
            i = at + 2;
        };
        let raw = line.get(start..end).unwrap_or_default();
        out.push(if raw == b"\\N" {
            None
        } else if escaped {
            Some(Cow::Owned(unescape(raw)))
        } else {
            Some(Cow::Borrowed(raw))
        });
        if end >= line.len() {
            return Ok(());
        }
        start = end + 1;
    }
}

/// Undoes the backslash escapes of one raw field. The field never ends in
/// a lone backslash ([`split_line`] checks that first).
fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let Some(&c) = raw.get(i) else {
            break;
        };
        i += 1;
        match c {
            b'0'..=b'7' => {
                let mut value = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                // Three octal digits reach 0o777; the server keeps the low byte.
                out.push((value & 0xff) as u8);
            }
            b'x' => match raw.get(i).and_then(|&h| hex_digit(h)) {
                Some(first) => {
                    i += 1;
                    let mut value = first;
                    if let Some(second) = raw.get(i).and_then(|&h| hex_digit(h)) {
                        value = (value << 4) | second;
                        i += 1;
                    }
                    out.push(value);
                }
                None => out.push(b'x'),
            },
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            other => out.push(other),
        }
    }
    out
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Reassembles lines from the byte chunks of a COPY stream
/// (`PgConnection::copy_out_raw`), where a line may be split across chunks
/// and a chunk may hold several lines.
///
/// Complete lines inside a chunk are handed out as slices of the chunk;
/// only a line that spans chunks is copied.
#[derive(Debug, Default)]
pub struct LineAssembler {
    partial: Vec<u8>,
}

impl LineAssembler {
    /// An assembler with no pending bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk, calling `on_line` with every line it completes
    /// (without the newline), in order. Stops at the first error `on_line`
    /// returns; the assembler should then be dropped.
    pub fn push<E>(
        &mut self,
        chunk: &[u8],
        mut on_line: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut rest = chunk;
        if !self.partial.is_empty() {
            match memchr::memchr(b'\n', rest) {
                None => {
                    self.partial.extend_from_slice(rest);
                    return Ok(());
                }
                Some(nl) => {
                    self.partial
                        .extend_from_slice(rest.get(..nl).unwrap_or_default());
                    rest = rest.get(nl + 1..).unwrap_or_default();
                    let line = std::mem::take(&mut self.partial);
                    on_line(&line)?;
                    // Keep the allocation for the next spanning line.
                    self.partial = line;
                    self.partial.clear();
                }
            }
        }
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            on_line(rest.get(..nl).unwrap_or_default())?;
            rest = rest.get(nl + 1..).unwrap_or_default();
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    /// Bytes received after the last newline (a line still incomplete).
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Ends the stream: an error when the last line had no newline (the
    /// server always ends every line with one, so the stream was cut).
    pub fn finish(&self) -> Result<(), CopyTextError> {
        if self.partial.is_empty() {
            Ok(())
        } else {
            Err(CopyTextError {
                column: 0,
                reason: "the COPY data ends inside a line",
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(line: &[u8]) -> Result<Vec<Option<Vec<u8>>>, CopyTextError> {
        let mut out = Vec::new();
        split_line(line, &mut out)?;
        Ok(out.into_iter().map(|f| f.map(Cow::into_owned)).collect())
    }

    fn some(b: &[u8]) -> Option<Vec<u8>> {
        Some(b.to_vec())
    }

    #[test]
    fn plain_fields_and_nulls() {
        assert_eq!(split(b"").unwrap(), vec![some(b"")]);
        assert_eq!(
            split(b"1\t\\N\tabc\t").unwrap(),
            vec![some(b"1"), None, some(b"abc"), some(b"")]
        );
        assert_eq!(split(b"\\N").unwrap(), vec![None]);
        // `\N` inside a longer value is just N.
        assert_eq!(
            split(b"a\\Nb\t\\N\\N").unwrap(),
            vec![some(b"aNb"), some(b"NN")]
        );
    }

    #[test]
    fn borrows_when_nothing_is_escaped() {
        let mut out = Vec::new();
        split_line(b"abc\tx\\ty", &mut out).unwrap();
        assert!(matches!(out[0], Some(Cow::Borrowed(b"abc"))));
        assert!(matches!(out[1], Some(Cow::Owned(_))));
    }

    #[test]
    fn escapes() {
        assert_eq!(
            split(b"\\\\\\b\\f\\n\\r\\t\\v").unwrap(),
            vec![some(b"\\\x08\x0c\n\r\t\x0b")]
        );
        assert_eq!(
            split(b"\\0\\101\\7777\\08").unwrap(),
            vec![some(b"\0A\xff7\x008")]
        );
        assert_eq!(
            split(b"\\x41\\x4\\xzz\\xFFf\\x").unwrap(),
            vec![some(b"A\x04xzz\xfffx")]
        );
        assert_eq!(split(b"\\q\\\"").unwrap(), vec![some(b"q\"")]);
        // An escaped raw tab is data, not a delimiter.
        assert_eq!(
            split(b"a\\\tb\tc").unwrap(),
            vec![some(b"a\tb"), some(b"c")]
        );
        // Multi-byte UTF-8 passes through untouched.
        assert_eq!(
            split("é\\t😀".as_bytes()).unwrap(),
            vec![Some("é\t😀".as_bytes().to_vec())]
        );
    }

    #[test]
    fn lone_trailing_backslash_is_an_error() {
        let err = split(b"ok\tbad\\").unwrap_err();
        assert_eq!(err.column(), 1);
        assert_eq!(
            err.to_string(),
            "malformed COPY text in column 2: line ends with a lone backslash"
        );
        assert!(split(b"\\").is_err());
        assert!(split(b"\\\\").is_ok());
    }

    fn assemble(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, usize) {
        let mut lines = Vec::new();
        let mut a = LineAssembler::new();
        for c in chunks {
            a.push(c, |l| {
                lines.push(l.to_vec());
                Ok::<_, ()>(())
            })
            .unwrap();
        }
        (lines, a.pending())
    }

    #[test]
    fn assembles_lines_across_chunks() {
        let (lines, pending) = assemble(&[b"a\tb\nc", b"d", b"\n\ne\n", b"f"]);
        assert_eq!(
            lines,
            vec![
                b"a\tb".to_vec(),
                b"cd".to_vec(),
                b"".to_vec(),
                b"e".to_vec()
            ]
        );
        assert_eq!(pending, 1);
        let mut a = LineAssembler::new();
        a.push(b"x", |_| Ok::<_, ()>(())).unwrap();
        assert!(a.finish().is_err());
        a.push(b"\n", |_| Ok::<_, ()>(())).unwrap();
        assert!(a.finish().is_ok());
    }

    #[test]
    fn stops_at_the_callbacks_error() {
        let mut a = LineAssembler::new();
        let mut seen = 0;
        let r = a.push(b"1\n2\n3\n", |_| {
            seen += 1;
            if seen == 2 {
                Err("stop")
            } else {
                Ok(())
            }
        });
        assert_eq!(r, Err("stop"));
        assert_eq!(seen, 2);
    }

    /// An encoder as the server's COPY writer works, with a choice of
    /// equivalent spellings for each byte so every escape form is exercised.
    fn encode_field(field: &Option<Vec<u8>>, style: &[u8], out: &mut Vec<u8>) {
        let Some(bytes) = field else {
            out.extend_from_slice(b"\\N");
            return;
        };
        for (i, &b) in bytes.iter().enumerate() {
            let s = style.get(i).copied().unwrap_or(0) % 4;
            let next_is_digit = bytes.get(i + 1).is_some_and(|n| n.is_ascii_hexdigit());
            match (b, s) {
                (_, 1) if !next_is_digit => out.extend_from_slice(format!("\\{b:o}").as_bytes()),
                (_, 1) => out.extend_from_slice(format!("\\{b:03o}").as_bytes()),
                (_, 2) if !next_is_digit => out.extend_from_slice(format!("\\x{b:x}").as_bytes()),
                (_, 2) => out.extend_from_slice(format!("\\x{b:02X}").as_bytes()),
                (b'\\', _) => out.extend_from_slice(b"\\\\"),
                (b'\t', _) => out.extend_from_slice(b"\\t"),
                (b'\n', _) => out.extend_from_slice(b"\\n"),
                (b'\r', _) => out.extend_from_slice(b"\\r"),
                (0x08, 3) => out.extend_from_slice(b"\\b"),
                (0x0c, 3) => out.extend_from_slice(b"\\f"),
                (0x0b, 3) => out.extend_from_slice(b"\\v"),
                // `\c` = c for a byte with no special meaning after a backslash.
                (c, 3) if !b"0123456789xbfnrtvN".contains(&c) => {
                    out.push(b'\\');
                    out.push(c);
                }
                (c, _) => out.push(c),
            }
        }
    }

    fn encode_line(fields: &[Option<Vec<u8>>], style: &[u8]) -> Vec<u8> {
        let mut line = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                line.push(b'\t');
            }
            encode_field(f, style, &mut line);
        }
        line
    }

    fn field() -> impl Strategy<Value = Option<Vec<u8>>> {
        prop_oneof![
            1 => Just(None),
            2 => proptest::collection::vec(any::<u8>(), 0..24).prop_map(Some),
            2 => proptest::collection::vec(
                prop::sample::select(b"\\\t\n\r\x08\x0c\x0bNx01aZ".to_vec()),
                0..12
            )
            .prop_map(Some),
        ]
    }

    proptest! {
        #[test]
        fn encoded_fields_round_trip(
            fields in proptest::collection::vec(field(), 1..8),
            style in proptest::collection::vec(any::<u8>(), 0..24),
        ) {
            let line = encode_line(&fields, &style);
            prop_assert_eq!(split(&line).unwrap(), fields);
        }

        #[test]
        fn lines_survive_any_chunking(
            rows in proptest::collection::vec(proptest::collection::vec(field(), 1..4), 0..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut stream = Vec::new();
            for row in &rows {
                stream.extend_from_slice(&encode_line(row, &[]));
                stream.push(b'\n');
            }
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            points.push(0);
            points.push(stream.len());
            points.sort_unstable();
            let chunks: Vec<&[u8]> = points.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
            let (lines, pending) = assemble(&chunks);
            prop_assert_eq!(pending, 0);
            let parsed: Vec<_> = lines.iter().map(|l| split(l).unwrap()).collect();
            prop_assert_eq!(parsed, rows);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = split(&bytes);
            let mut a = LineAssembler::new();
            let _ = a.push(&bytes, |l| split(l).map(|_| ()));
            let _ = a.finish();
        }
    }
}
