//! Short output text built in a stack buffer, for the date/time decoders:
//! copied from there into a value's text, or into the text buffer a block
//! of rows shares.

use super::super::scalar::Reason;
use cdc_core::Text;

/// Room for the longest text the date/time decoders write, an interval such
/// as `-178956970 years -8 mons -2147483648 days -2562047788:00:54.775808`
/// (66 bytes).
const CAPACITY: usize = 80;

/// An ASCII text of at most [`CAPACITY`] bytes; writing past the end makes
/// [`Ascii::finish`] fail instead of panicking.
pub(super) struct Ascii {
    bytes: [u8; CAPACITY],
    len: usize,
    overflowed: bool,
}

impl Ascii {
    pub(super) fn new() -> Self {
        Self {
            bytes: [0; CAPACITY],
            len: 0,
            overflowed: false,
        }
    }

    /// Appends one ASCII byte.
    pub(super) fn push(&mut self, byte: u8) {
        self.push_bytes(&[byte]);
    }

    /// Appends ASCII bytes.
    pub(super) fn push_bytes(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        match self.bytes.get_mut(self.len..end) {
            Some(slots) => {
                slots.copy_from_slice(bytes);
                self.len = end;
            }
            None => self.overflowed = true,
        }
    }

    /// Appends an ASCII string.
    pub(super) fn push_str(&mut self, s: &str) {
        self.push_bytes(s.as_bytes());
    }

    /// Appends `n` in decimal, zero-padded on the left to `width` digits
    /// (longer numbers in full).
    pub(super) fn push_padded(&mut self, n: u64, width: usize) {
        // The common cases first: months, days, hours, minutes and seconds;
        // four-digit years.
        match (width, n) {
            (2, 0..=99) => {
                self.push_bytes(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]);
                return;
            }
            (4, 0..=9999) => {
                let n = n as u16;
                self.push_bytes(&[
                    b'0' + (n / 1000) as u8,
                    b'0' + (n / 100 % 10) as u8,
                    b'0' + (n / 10 % 10) as u8,
                    b'0' + (n % 10) as u8,
                ]);
                return;
            }
            _ => {}
        }
        // Digits from the right; `u64::MAX` has 20.
        let mut digits = [b'0'; 20];
        let mut start = digits.len();
        let mut n = n;
        while let Some(slot) = start.checked_sub(1).and_then(|i| digits.get_mut(i)) {
            *slot = b'0' + (n % 10) as u8;
            start -= 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let start = start.min(digits.len().saturating_sub(width));
        self.push_bytes(digits.get(start..).unwrap_or_default());
    }

    /// Appends `n` in decimal.
    pub(super) fn push_u64(&mut self, n: u64) {
        self.push_padded(n, 1);
    }

    /// Appends `.` and the microseconds (below a million; only the last six
    /// digits count) as six digits with the trailing zeros trimmed; nothing
    /// when they are zero.
    pub(super) fn push_fraction(&mut self, micros: u64) {
        let micros = micros % 1_000_000;
        if micros == 0 {
            return;
        }
        let mut digits = [b'.', b'0', b'0', b'0', b'0', b'0', b'0'];
        let mut n = micros;
        for slot in digits.iter_mut().skip(1).rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
        // Up to the last nonzero digit (there is one: `micros` is nonzero).
        let end = digits.iter().rposition(|&d| d != b'0').map_or(0, |i| i + 1);
        self.push_bytes(digits.get(..end).unwrap_or_default());
    }

    /// A buffer holding `s` (cut if longer than the capacity).
    pub(super) fn of(s: &str) -> Self {
        let mut out = Ascii::new();
        out.push_str(s);
        out
    }

    /// The text, or an error if it did not fit.
    pub(super) fn as_str(&self) -> Result<&str, Reason> {
        if self.overflowed {
            return Err("output text too long");
        }
        let text = self.bytes.get(..self.len).ok_or("output text too long")?;
        std::str::from_utf8(text).map_err(|_| "output text not ASCII")
    }

    /// The text as a value's [`Text`], or an error if it did not fit.
    pub(super) fn finish(self) -> Result<Text, Reason> {
        self.as_str().map(Text::from)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_fractions() {
        let mut out = Ascii::new();
        out.push_padded(7, 4);
        out.push(b' ');
        out.push_padded(12345, 4);
        out.push(b' ');
        out.push_u64(0);
        out.push(b' ');
        out.push_u64(u64::MAX);
        out.push_fraction(0);
        out.push_fraction(500_000);
        out.push_fraction(1);
        out.push_fraction(123_456);
        assert_eq!(
            &*out.finish().unwrap(),
            "0007 12345 0 18446744073709551615.5.000001.123456"
        );
    }

    #[test]
    fn overflow_is_an_error() {
        let mut out = Ascii::new();
        for _ in 0..CAPACITY {
            out.push(b'x');
        }
        assert_eq!(out.finish().unwrap().len(), CAPACITY);
        let mut out = Ascii::new();
        for _ in 0..=CAPACITY {
            out.push(b'x');
        }
        assert!(out.finish().is_err());
    }
}
