//! JSON string escaping.

/// `true` for the bytes a JSON string must escape: `"`, `\\` and the
/// control characters below 0x20.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Appends `s` to `out` as a JSON string literal, quotes included.
///
/// Runs of bytes that need no escape (nearly all text) are copied in one
/// piece; only `"`, `\\` and control characters are looked at one by one.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    while let Some(offset) = bytes.get(start..).and_then(first_escape) {
        let i = start + offset;
        out.extend_from_slice(&bytes[start..i]);
        let b = bytes[i];
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
    out.push(b'"');
}

/// The index of the first byte of `bytes` that needs an escape. Looks at
/// eight bytes at a time (a word with no `"`, no `\\` and no byte below
/// 0x20 is skipped whole) and pins the byte down one by one only in a word
/// that may hold one.
fn first_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Non-zero when some byte of `x` is zero.
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let control = x.wrapping_sub(0x20 * ONES) & !x & HIGHS;
        let quote = has_zero(x ^ (u64::from(b'"') * ONES));
        let backslash = has_zero(x ^ (u64::from(b'\\') * ONES));
        if control | quote | backslash != 0 {
            if let Some(i) = chunk.iter().position(|&b| NEEDS_ESCAPE[b as usize]) {
                return Some(offset + i);
            }
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| NEEDS_ESCAPE[b as usize])
        .map(|i| offset + i)
}

/// Two ASCII digits for each of 0..100.
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Appends the decimal digits of `v` (no `fmt` machinery: this runs
/// several times per event).
pub(crate) fn write_u64(out: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; 20];
    out.extend_from_slice(u64_digits(v, &mut buf));
}

/// The decimal digits of `v`, written at the end of `buf`.
pub(crate) fn u64_digits(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut pos = buf.len();
    while v >= 100 {
        let pair = (v % 100) as usize * 2;
        v /= 100;
        pos -= 2;
        buf[pos..pos + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if v >= 10 {
        let pair = v as usize * 2;
        pos -= 2;
        buf[pos..pos + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        pos -= 1;
        buf[pos] = b'0' + v as u8;
    }
    &buf[pos..]
}

/// Appends the decimal digits of `v`, with a `-` when negative.
pub(crate) fn write_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    write_u64(out, v.unsigned_abs());
}

pub(crate) const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_json() {
        for s in [
            "",
            "plain",
            "quote \" back \\ slash",
            "ctl \u{1} \n\t\r\u{8}\u{c}",
            "ünï €",
        ] {
            let mut out = Vec::new();
            write_json_string(&mut out, s);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn escapes_every_control_character_and_keeps_the_rest() {
        let all: String = (0u32..0x80)
            .filter_map(char::from_u32)
            .chain("é€𝄞".chars())
            .collect();
        let mut out = Vec::new();
        write_json_string(&mut out, &all);
        assert_eq!(out, serde_json::to_vec(&all).unwrap());
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, all);
    }

    #[test]
    fn finds_an_escape_at_every_position() {
        for len in 0..40 {
            for pos in 0..len {
                for special in ['"', '\\', '\n', '\u{1}', '\u{1f}'] {
                    let s: String = (0..len)
                        .map(|i| if i == pos { special } else { 'é' })
                        .collect::<String>();
                    let mut out = Vec::new();
                    write_json_string(&mut out, &s);
                    assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
                    let ascii: String = (0..len)
                        .map(|i| {
                            if i == pos {
                                special
                            } else {
                                (b' ' + (i % 90) as u8) as char
                            }
                        })
                        .collect();
                    let mut out = Vec::new();
                    write_json_string(&mut out, &ascii);
                    assert_eq!(out, serde_json::to_vec(&ascii).unwrap(), "{ascii:?}");
                }
            }
        }
    }

    #[test]
    fn integers_print_like_display() {
        let mut cases: Vec<i64> = vec![
            0,
            1,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            i64::MAX,
            i64::MIN,
            -1,
            -10,
            -100,
        ];
        let mut p: i64 = 1;
        for _ in 0..18 {
            p *= 10;
            cases.extend([p - 1, p, p + 1, -p, -(p - 1)]);
        }
        for v in cases {
            let mut out = Vec::new();
            write_i64(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
        for v in [0u64, 7, 42, 12345, u64::MAX, u64::MAX - 1] {
            let mut out = Vec::new();
            write_u64(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
    }
}
