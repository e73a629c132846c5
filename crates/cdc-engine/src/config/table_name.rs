//! Schema-qualified table names as written in the configuration:
//! `public.users`, `"Mixed Case"."odd ""name"""`.
//!
//! The rules are PostgreSQL's: an unquoted identifier starts with a letter
//! or `_`, continues with letters, digits, `_` or `$`, and is folded to lower
//! case; a quoted identifier keeps its case and any character, with `""`
//! standing for one `"`. Identifiers longer than 63 bytes are refused rather
//! than truncated as the server would.

use std::fmt;

use cdc_core::TableName;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// PostgreSQL's identifier length limit (`NAMEDATALEN - 1`), in bytes.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// Why a table name could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableNameError {
    /// The text is empty.
    #[error("the name is empty")]
    Empty,
    /// Only one identifier: the schema is required.
    #[error("it must be schema-qualified, e.g. `public.{0}`")]
    Unqualified(String),
    /// More than `schema.table` (database-qualified names are not supported).
    #[error("expected `schema.table`, found {0} dot-separated parts")]
    TooManyParts(usize),
    /// A `"` that is never closed.
    #[error("unterminated quoted identifier")]
    UnterminatedQuote,
    /// `""` as an identifier, or nothing between two dots.
    #[error("empty identifier")]
    EmptyIdentifier,
    /// A character that cannot appear at this place of an unquoted identifier.
    #[error("unexpected character `{ch}` at position {position}; quote identifiers containing it")]
    UnexpectedCharacter {
        /// The offending character.
        ch: char,
        /// Its 1-based character position in the text.
        position: usize,
    },
    /// An identifier longer than PostgreSQL's 63-byte limit.
    #[error("identifier `{0}` is longer than 63 bytes")]
    TooLong(String),
}

/// Parses `schema.table`, each part quoted or unquoted (see the module docs).
///
/// ```
/// use cdc_engine::config::parse_table_name;
///
/// let name = parse_table_name("Public.Users").unwrap();
/// assert_eq!((name.schema.as_str(), name.name.as_str()), ("public", "users"));
/// ```
pub fn parse_table_name(text: &str) -> Result<TableName, TableNameError> {
    if text.is_empty() {
        return Err(TableNameError::Empty);
    }
    let mut parts = Vec::new();
    let mut chars = text.chars().enumerate().peekable();
    loop {
        let part = match chars.peek() {
            Some(&(_, '"')) => {
                chars.next();
                quoted_identifier(&mut chars)?
            }
            _ => unquoted_identifier(&mut chars)?,
        };
        if part.len() > MAX_IDENTIFIER_BYTES {
            return Err(TableNameError::TooLong(part));
        }
        parts.push(part);
        match chars.next() {
            None => break,
            Some((_, '.')) => continue,
            Some((i, ch)) => {
                return Err(TableNameError::UnexpectedCharacter {
                    ch,
                    position: i + 1,
                })
            }
        }
    }
    match <[String; 2]>::try_from(parts) {
        Ok([schema, name]) => Ok(TableName::new(schema, name)),
        Err(parts) if parts.len() == 1 => Err(TableNameError::Unqualified(parts.concat())),
        Err(parts) => Err(TableNameError::TooManyParts(parts.len())),
    }
}

type Chars<'a> = std::iter::Peekable<std::iter::Enumerate<std::str::Chars<'a>>>;

/// Reads up to the closing quote (already past the opening one).
fn quoted_identifier(chars: &mut Chars<'_>) -> Result<String, TableNameError> {
    let mut out = String::new();
    loop {
        match chars.next() {
            None => return Err(TableNameError::UnterminatedQuote),
            Some((_, '"')) => {
                if chars.next_if(|&(_, c)| c == '"').is_some() {
                    out.push('"');
                } else if out.is_empty() {
                    return Err(TableNameError::EmptyIdentifier);
                } else {
                    return Ok(out);
                }
            }
            Some((_, c)) => out.push(c),
        }
    }
}

/// Reads an unquoted identifier up to the next `.` or the end, folding
/// ASCII letters to lower case as PostgreSQL does.
fn unquoted_identifier(chars: &mut Chars<'_>) -> Result<String, TableNameError> {
    let mut out = String::new();
    while let Some(&(i, c)) = chars.peek() {
        if c == '.' {
            break;
        }
        let allowed = if out.is_empty() {
            c.is_alphabetic() || c == '_'
        } else {
            c.is_alphanumeric() || c == '_' || c == '$'
        };
        if !allowed {
            return Err(TableNameError::UnexpectedCharacter {
                ch: c,
                position: i + 1,
            });
        }
        out.push(c.to_ascii_lowercase());
        chars.next();
    }
    if out.is_empty() {
        return Err(TableNameError::EmptyIdentifier);
    }
    Ok(out)
}

/// A table name deserialized from a string; parse errors are raised inside
/// the element's own deserialization so that they carry its path and line.
struct ParsedTableName(TableName);

impl<'de> Deserialize<'de> for ParsedTableName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_table_name(&text)
            .map(ParsedTableName)
            .map_err(|err| de::Error::custom(format!("invalid table name `{text}`: {err}")))
    }
}

/// `deserialize_with` for a list of table names.
pub(crate) fn deserialize_list<'de, D>(deserializer: D) -> Result<Vec<TableName>, D::Error>
where
    D: Deserializer<'de>,
{
    struct ListVisitor;

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<TableName>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of schema-qualified table names")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut tables = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(ParsedTableName(table)) = seq.next_element()? {
                tables.push(table);
            }
            Ok(tables)
        }
    }

    deserializer.deserialize_seq(ListVisitor)
}

/// One entry of `source.tables` or `source.exclude_tables`: a table name,
/// or a pattern ([`TablePattern::is_pattern_text`]).
pub(crate) enum Selector {
    /// One table.
    Name(TableName),
    /// A glob or `/regex/`.
    Pattern(cdc_postgres::selection::TablePattern),
}

impl Selector {
    /// As a pattern (a name matches itself).
    pub(crate) fn into_pattern(self) -> cdc_postgres::selection::TablePattern {
        match self {
            Selector::Name(t) => cdc_postgres::selection::TablePattern::Exact(t),
            Selector::Pattern(p) => p,
        }
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use cdc_postgres::selection::TablePattern;
        let text = String::deserialize(deserializer)?;
        if TablePattern::is_pattern_text(&text) {
            TablePattern::parse(&text)
                .map(Selector::Pattern)
                .map_err(|err| de::Error::custom(format!("invalid table pattern `{text}`: {err}")))
        } else {
            parse_table_name(&text)
                .map(Selector::Name)
                .map_err(|err| de::Error::custom(format!("invalid table name `{text}`: {err}")))
        }
    }
}

/// `deserialize_with` for a list of table names and patterns.
pub(crate) fn deserialize_selectors<'de, D>(deserializer: D) -> Result<Vec<Selector>, D::Error>
where
    D: Deserializer<'de>,
{
    Vec::<Selector>::deserialize(deserializer)
}

/// `deserialize_with` for a map keyed by table name, kept in file order.
pub(crate) fn deserialize_map<'de, D, V>(deserializer: D) -> Result<Vec<(TableName, V)>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct MapVisitor<V>(std::marker::PhantomData<V>);

    impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
        type Value = Vec<(TableName, V)>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map from schema-qualified table names to values")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
            while let Some((ParsedTableName(table), value)) = map.next_entry()? {
                entries.push((table, value));
            }
            Ok(entries)
        }
    }

    deserializer.deserialize_map(MapVisitor(std::marker::PhantomData))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (String, String) {
        let name = parse_table_name(text).unwrap();
        (name.schema, name.name)
    }

    #[test]
    fn unquoted_parts_are_folded_to_lower_case() {
        assert_eq!(parse("Public.Users"), ("public".into(), "users".into()));
        assert_eq!(parse("s_1.t$2"), ("s_1".into(), "t$2".into()));
        assert_eq!(parse("_x.Ünïcode"), ("_x".into(), "Ünïcode".into()));
    }

    #[test]
    fn quoted_parts_keep_case_and_unescape_double_quotes() {
        assert_eq!(
            parse(r#""Mixed Case"."odd ""name""""#),
            ("Mixed Case".into(), r#"odd "name""#.into())
        );
        assert_eq!(parse(r#"public."a.b""#), ("public".into(), "a.b".into()));
        assert_eq!(parse(r#""S".t"#), ("S".into(), "t".into()));
    }

    #[test]
    fn malformed_names_are_refused() {
        use TableNameError::*;
        let cases: &[(&str, TableNameError)] = &[
            ("", Empty),
            ("users", Unqualified("users".into())),
            (r#""Users""#, Unqualified("Users".into())),
            ("a.b.c", TooManyParts(3)),
            (r#""unterminated"#, UnterminatedQuote),
            (r#"public."users"#, UnterminatedQuote),
            (r#"public."""#, EmptyIdentifier),
            ("public.", EmptyIdentifier),
            (".users", EmptyIdentifier),
            ("public..users", EmptyIdentifier),
            (
                "public.1users",
                UnexpectedCharacter {
                    ch: '1',
                    position: 8,
                },
            ),
            (
                "public.my table",
                UnexpectedCharacter {
                    ch: ' ',
                    position: 10,
                },
            ),
            (
                r#""a"b.c"#,
                UnexpectedCharacter {
                    ch: 'b',
                    position: 4,
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_table_name(text).as_ref(), Err(expected), "{text}");
        }
        let long = format!("public.{}", "x".repeat(64));
        assert_eq!(parse_table_name(&long), Err(TooLong("x".repeat(64))));
        assert!(parse_table_name(&format!("public.{}", "x".repeat(63))).is_ok());
    }
}
