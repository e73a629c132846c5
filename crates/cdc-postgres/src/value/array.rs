//! Array output text (`array_out`) to nested [`Value::Array`]s.
//!
//! The syntax, as `array_out` writes it and `array_in` reads it:
//! an optional dimension decoration `[lo:hi][lo:hi]=` (printed when a lower
//! bound is not 1; `to_jsonb` ignores bounds, and so does this parser),
//! then `{…}` with elements separated by the element type's delimiter, each
//! element a nested `{…}`, `NULL` (unquoted, any case), a double-quoted
//! string with `\` escapes, or an unquoted string (backslash escapes
//! allowed, surrounding whitespace dropped).

use std::borrow::Cow;

use cdc_core::Value;

use super::error::ValueError;
use super::kind::{ScalarKind, ValueType};
use super::scalar::{parse_scalar, Reason};

/// PostgreSQL's `MAXDIM`: arrays have at most six dimensions. Also bounds
/// the recursion on hostile input.
const MAX_DIMS: usize = 6;

/// Parses a whole array value.
pub(crate) fn parse_array(text: &[u8], kind: ScalarKind, delim: u8) -> Result<Value, ValueError> {
    let value_type = ValueType {
        scalar: kind,
        array: true,
        delimiter: delim,
    };
    let mut parser = Parser {
        text,
        pos: 0,
        kind,
        delim,
    };
    parser.parse().map_err(|fail| match fail {
        Fail::Syntax(reason) => ValueError::new(value_type, text, reason),
        Fail::Element(reason, element) => ValueError::new(value_type, &element, reason),
    })
}

enum Fail<'a> {
    /// The array syntax is wrong.
    Syntax(Reason),
    /// One element did not parse as the element type.
    Element(Reason, Cow<'a, [u8]>),
}

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
    kind: ScalarKind,
    delim: u8,
}

/// `array_in`'s notion of whitespace.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(is_space) {
            self.pos += 1;
        }
    }

    fn parse(&mut self) -> Result<Value, Fail<'a>> {
        self.skip_space();
        if self.peek() == Some(b'[') {
            self.skip_dimensions()?;
            self.skip_space();
        }
        if self.peek() != Some(b'{') {
            return Err(Fail::Syntax("array must start with {"));
        }
        let value = self.parse_list(1)?;
        self.skip_space();
        if self.pos != self.text.len() {
            return Err(Fail::Syntax("junk after closing }"));
        }
        Ok(value)
    }

    /// Skips `[lo:hi]…=`; the bounds are not kept.
    fn skip_dimensions(&mut self) -> Result<(), Fail<'a>> {
        const BAD: Reason = "malformed dimension decoration";
        let mut dims = 0;
        while self.peek() == Some(b'[') {
            dims += 1;
            if dims > MAX_DIMS {
                return Err(Fail::Syntax(BAD));
            }
            self.pos += 1;
            self.skip_int().ok_or(Fail::Syntax(BAD))?;
            if self.peek() == Some(b':') {
                self.pos += 1;
                self.skip_int().ok_or(Fail::Syntax(BAD))?;
            }
            if self.peek() != Some(b']') {
                return Err(Fail::Syntax(BAD));
            }
            self.pos += 1;
        }
        self.skip_space();
        if self.peek() != Some(b'=') {
            return Err(Fail::Syntax(BAD));
        }
        self.pos += 1;
        Ok(())
    }

    fn skip_int(&mut self) -> Option<()> {
        if matches!(self.peek(), Some(b'-' | b'+')) {
            self.pos += 1;
        }
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        (self.pos > start).then_some(())
    }

    /// `{…}` at `self.pos`, `depth` counting from 1 for the outermost.
    fn parse_list(&mut self, depth: usize) -> Result<Value, Fail<'a>> {
        if depth > MAX_DIMS {
            return Err(Fail::Syntax("more than 6 dimensions"));
        }
        self.pos += 1; // '{'
        let mut items = Vec::new();
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Array(items.into_boxed_slice()));
        }
        // Every element of one list is a sub-array, or none is.
        let mut nested = None;
        loop {
            self.skip_space();
            let is_list = self.peek() == Some(b'{');
            if *nested.get_or_insert(is_list) != is_list {
                return Err(Fail::Syntax("mixed sub-arrays and elements"));
            }
            let item = if is_list {
                self.parse_list(depth + 1)?
            } else {
                self.parse_element()?
            };
            items.push(item);
            self.skip_space();
            match self.peek() {
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Array(items.into_boxed_slice()));
                }
                Some(b) if b == self.delim => self.pos += 1,
                Some(_) => return Err(Fail::Syntax("expected delimiter or }")),
                None => return Err(Fail::Syntax("unterminated array")),
            }
        }
    }

    /// One scalar element (quoted, unquoted or `NULL`), parsed as `self.kind`.
    fn parse_element(&mut self) -> Result<Value, Fail<'a>> {
        let (raw, quoted) = if self.peek() == Some(b'"') {
            (self.quoted()?, true)
        } else {
            (self.unquoted()?, false)
        };
        if !quoted && raw.eq_ignore_ascii_case(b"NULL") {
            return Ok(Value::Null);
        }
        parse_scalar(self.kind, &raw).map_err(|reason| Fail::Element(reason, raw))
    }

    /// `"…"` at `self.pos`: the content with `\x` escapes resolved.
    fn quoted(&mut self) -> Result<Cow<'a, [u8]>, Fail<'a>> {
        const UNTERMINATED: Reason = "unterminated quoted element";
        self.pos += 1; // opening quote
        let start = self.pos;
        // Fast path: no backslash before the closing quote → borrow.
        let rest = self.text.get(start..).unwrap_or_default();
        let close = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\')
            .ok_or(Fail::Syntax(UNTERMINATED))?;
        if rest.get(close) == Some(&b'"') {
            self.pos = start + close + 1;
            return Ok(Cow::Borrowed(rest.get(..close).unwrap_or_default()));
        }
        let mut out = Vec::with_capacity(rest.len().min(64));
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    let escaped = self
                        .text
                        .get(self.pos + 1)
                        .copied()
                        .ok_or(Fail::Syntax(UNTERMINATED))?;
                    out.push(escaped);
                    self.pos += 2;
                }
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
                None => return Err(Fail::Syntax(UNTERMINATED)),
            }
        }
    }

    /// An unquoted element: up to the delimiter or `}`, trailing
    /// (unescaped) whitespace dropped, `\x` escapes resolved.
    fn unquoted(&mut self) -> Result<Cow<'a, [u8]>, Fail<'a>> {
        let start = self.pos;
        // End of the content that is kept (after the last non-space byte).
        let mut keep = start;
        let mut escaped = false;
        loop {
            match self.peek() {
                None => return Err(Fail::Syntax("unterminated array")),
                Some(b'}') => break,
                Some(b) if b == self.delim => break,
                Some(b'{' | b'"') => return Err(Fail::Syntax("unexpected { or \" in element")),
                Some(b'\\') => {
                    if self.text.get(self.pos + 1).is_none() {
                        return Err(Fail::Syntax("unterminated array"));
                    }
                    escaped = true;
                    self.pos += 2;
                    keep = self.pos;
                }
                Some(b) => {
                    self.pos += 1;
                    if !is_space(b) {
                        keep = self.pos;
                    }
                }
            }
        }
        let raw = self.text.get(start..keep).unwrap_or_default();
        if raw.is_empty() {
            return Err(Fail::Syntax("empty unquoted element"));
        }
        if !escaped {
            return Ok(Cow::Borrowed(raw));
        }
        let mut out = Vec::with_capacity(raw.len());
        let mut bytes = raw.iter().copied();
        while let Some(b) = bytes.next() {
            if b == b'\\' {
                if let Some(next) = bytes.next() {
                    out.push(next);
                }
            } else {
                out.push(b);
            }
        }
        Ok(Cow::Owned(out))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn arr(items: Vec<Value>) -> Value {
        Value::Array(items.into_boxed_slice())
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn parse(kind: ScalarKind, s: &str) -> Value {
        parse_array(s.as_bytes(), kind, b',').unwrap()
    }

    #[test]
    fn flat_ints_with_nulls() {
        assert_eq!(
            parse(ScalarKind::Int4, "{1,NULL,-3}"),
            arr(vec![Value::Int4(1), Value::Null, Value::Int4(-3)])
        );
        assert_eq!(parse(ScalarKind::Int4, "{}"), arr(vec![]));
        assert_eq!(
            parse(ScalarKind::Int4, " { 1 , null } "),
            arr(vec![Value::Int4(1), Value::Null])
        );
    }

    #[test]
    fn lower_bounds_are_ignored() {
        assert_eq!(
            parse(ScalarKind::Int4, "[0:1]={1,2}"),
            arr(vec![Value::Int4(1), Value::Int4(2)])
        );
        assert_eq!(
            parse(ScalarKind::Int4, "[-2:-1][1:1]={{1},{2}}"),
            arr(vec![arr(vec![Value::Int4(1)]), arr(vec![Value::Int4(2)])])
        );
    }

    #[test]
    fn multi_dimensional() {
        assert_eq!(
            parse(ScalarKind::Int2, "{{1,NULL},{3,4}}"),
            arr(vec![
                arr(vec![Value::Int2(1), Value::Null]),
                arr(vec![Value::Int2(3), Value::Int2(4)])
            ])
        );
        let deep = "{{{{{{1}}}}}}";
        assert!(parse_array(deep.as_bytes(), ScalarKind::Int4, b',').is_ok());
        let too_deep = "{{{{{{{1}}}}}}}";
        assert!(parse_array(too_deep.as_bytes(), ScalarKind::Int4, b',').is_err());
    }

    #[test]
    fn quoting_and_escapes() {
        assert_eq!(
            parse(
                ScalarKind::Text,
                r#"{"","NULL","a b","x\"y\\z",NULL,"{"," lead",a\,b,plain}"#
            ),
            arr(vec![
                text(""),
                text("NULL"),
                text("a b"),
                text(r#"x"y\z"#),
                Value::Null,
                text("{"),
                text(" lead"),
                text("a,b"),
                text("plain"),
            ])
        );
        // An escaped trailing space is kept, an unescaped one dropped.
        assert_eq!(
            parse(ScalarKind::Text, r"{a\ ,b  }"),
            arr(vec![text("a "), text("b")])
        );
    }

    #[test]
    fn element_types_are_parsed() {
        assert_eq!(
            parse(
                ScalarKind::Json,
                r#"{"{\"a\": 1}","[1, \"x\"]",null,"null","\"s\""}"#
            ),
            arr(vec![
                Value::Json(r#"{"a": 1}"#.into()),
                Value::Json(r#"[1, "x"]"#.into()),
                Value::Null,
                Value::Json("null".into()),
                Value::Json(r#""s""#.into()),
            ])
        );
        assert_eq!(
            parse(ScalarKind::Bytea, r#"{"\\x0102",NULL}"#),
            arr(vec![Value::Bytea(vec![1, 2].into()), Value::Null])
        );
        assert_eq!(
            parse(
                ScalarKind::TimestampTz,
                r#"{"2024-01-01 00:00:00+00","0044-03-15 12:00:00+00 BC",infinity}"#
            ),
            arr(vec![
                Value::TimestampTz("2024-01-01T00:00:00+00:00".into()),
                Value::TimestampTz("0044-03-15T12:00:00+00:00 BC".into()),
                Value::TimestampTz("infinity".into()),
            ])
        );
    }

    #[test]
    fn box_uses_semicolons() {
        let v = parse_array(b"{(1,1),(0,0);(3,3),(2,2)}", ScalarKind::Other, b';').unwrap();
        assert_eq!(
            v,
            arr(vec![
                Value::Other("(1,1),(0,0)".into()),
                Value::Other("(3,3),(2,2)".into())
            ])
        );
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "",
            "1,2",
            "{1,2",
            "{1,2}}",
            "{1,,2}",
            "{,}",
            "{1 2}",
            "{{1},2}",
            "{1,{2}}",
            "{\"a}",
            "{a\"b}",
            "[1:2{1,2}",
            "[1:2]{1,2}",
            "{\\",
            "{1,x}",
        ] {
            assert!(
                parse_array(bad.as_bytes(), ScalarKind::Int4, b',').is_err(),
                "accepted {bad:?}"
            );
        }
    }

    #[test]
    fn element_error_names_the_element() {
        let err = parse_array(b"{1,oops}", ScalarKind::Int4, b',').unwrap_err();
        assert_eq!(err.excerpt(), "oops");
        assert!(err.to_string().contains("int4[]"), "{err}");
    }
}
