//! Column values in their type's binary send format (`COPY … (FORMAT
//! binary)`), decoded into the same [`cdc_core::Value`] the text parser
//! ([`ValueType::parse`]) gives for the same value, so both render exactly
//! as `to_jsonb` does.
//!
//! Only built-in types whose send format is fixed and known have a
//! [`BinaryType`]: a column of any other type (an enum, a domain, an
//! extension type, `inet`, a range, …) is read as text. The binary forms
//! are PostgreSQL's `*_send` functions, integers big-endian, date/time
//! types as 64-bit microseconds.
//!
//! ```
//! use cdc_core::Value;
//! use cdc_postgres::value::BinaryType;
//!
//! let int8 = BinaryType::builtin(20).unwrap();
//! assert_eq!(int8.decode(&7i64.to_be_bytes()).unwrap(), Value::Int8(7));
//! // timestamptz: microseconds since 2000-01-01 00:00:00 UTC.
//! let ts = BinaryType::builtin(1184).unwrap();
//! assert_eq!(
//!     ts.decode(&500_000i64.to_be_bytes()).unwrap(),
//!     Value::TimestampTz("2000-01-01T00:00:00.5+00:00".into()),
//! );
//! ```

mod array;
mod ascii;
mod datetime;
mod interval;
mod numeric;

use cdc_core::{RowsBuilder, TextKind, Value};

use super::error::ValueError;
use super::kind::ValueType;
use super::scalar::{parse_text, utf8, Reason};

/// The scalar types with a binary decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum BinaryScalar {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    /// `text`, `varchar`, `bpchar`, `name`: the characters.
    Text,
    /// `"char"`: one byte.
    Char,
    Bytea,
    /// `json`: the document text.
    Json,
    /// `jsonb`: a version byte (1), then the document text.
    Jsonb,
    Uuid,
    Date,
    Time,
    TimeTz,
    Timestamp,
    TimestampTz,
    /// `interval` from PostgreSQL 17 on: all fields at their minimum or
    /// maximum are `-infinity` and `infinity`.
    Interval,
    /// `interval` before PostgreSQL 17: those are ordinary values.
    IntervalBefore17,
}

impl BinaryScalar {
    /// The scalar of a built-in scalar type OID.
    fn of(oid: u32) -> Option<BinaryScalar> {
        use BinaryScalar as B;
        Some(match oid {
            16 => B::Bool,
            21 => B::Int2,
            23 => B::Int4,
            20 => B::Int8,
            700 => B::Float4,
            701 => B::Float8,
            1700 => B::Numeric,
            19 | 25 | 1042 | 1043 => B::Text,
            18 => B::Char,
            17 => B::Bytea,
            114 => B::Json,
            3802 => B::Jsonb,
            2950 => B::Uuid,
            1082 => B::Date,
            1083 => B::Time,
            1266 => B::TimeTz,
            1114 => B::Timestamp,
            1184 => B::TimestampTz,
            1186 => B::Interval,
            _ => return None,
        })
    }

    /// `true` when an array of `self` may hold elements of type OID
    /// `element` (an array's elements carry their type's OID).
    fn holds(self, element: u32) -> bool {
        match BinaryScalar::of(element) {
            Some(BinaryScalar::Interval) => {
                matches!(
                    self,
                    BinaryScalar::Interval | BinaryScalar::IntervalBefore17
                )
            }
            Some(other) => other == self,
            None => false,
        }
    }

    /// The element scalar of a built-in array type OID.
    fn of_array(oid: u32) -> Option<BinaryScalar> {
        let element = match oid {
            1000 => 16,
            1005 => 21,
            1007 => 23,
            1016 => 20,
            1021 => 700,
            1022 => 701,
            1231 => 1700,
            1003 => 19,
            1009 => 25,
            1014 => 1042,
            1015 => 1043,
            1002 => 18,
            1001 => 17,
            199 => 114,
            3807 => 3802,
            2951 => 2950,
            1182 => 1082,
            1183 => 1083,
            1270 => 1266,
            1115 => 1114,
            1185 => 1184,
            1187 => 1186,
            _ => return None,
        };
        BinaryScalar::of(element)
    }

    /// Decodes one value of this scalar.
    fn decode(self, bytes: &[u8]) -> Result<Value, Reason> {
        use BinaryScalar as B;
        Ok(match self {
            B::Bool => match bytes {
                [0] => Value::Bool(false),
                [1] => Value::Bool(true),
                _ => return Err("a bool is one byte, 0 or 1"),
            },
            B::Int2 => Value::Int2(i16::from_be_bytes(fixed(bytes)?)),
            B::Int4 => Value::Int4(i32::from_be_bytes(fixed(bytes)?)),
            B::Int8 => Value::Int8(i64::from_be_bytes(fixed(bytes)?)),
            B::Float4 => Value::Float4(f32::from_be_bytes(fixed(bytes)?)),
            B::Float8 => Value::Float8(f64::from_be_bytes(fixed(bytes)?)),
            B::Numeric => Value::Numeric(numeric::numeric(bytes)?),
            B::Text => Value::Text(parse_text(bytes)?),
            // `charout` prints the NUL byte as an empty string.
            B::Char => Value::Text(match bytes {
                [0] => "".into(),
                [_] => parse_text(bytes)?,
                _ => return Err("a \"char\" is one byte"),
            }),
            B::Bytea => Value::Bytea(bytes.into()),
            B::Json => Value::Json(utf8(bytes)?.into()),
            B::Jsonb => match bytes.split_first() {
                Some((1, doc)) => Value::Json(utf8(doc)?.into()),
                _ => return Err("not jsonb version 1"),
            },
            B::Uuid => Value::Uuid(fixed(bytes)?),
            B::Date => Value::Date(datetime::date(bytes)?),
            B::Time => Value::Time(datetime::time(bytes)?),
            B::TimeTz => Value::TimeTz(datetime::timetz(bytes)?),
            B::Timestamp => Value::Timestamp(datetime::timestamp(bytes)?),
            B::TimestampTz => Value::TimestampTz(datetime::timestamptz(bytes)?),
            B::Interval => Value::Interval(interval::interval(bytes, true)?),
            B::IntervalBefore17 => Value::Interval(interval::interval(bytes, false)?),
        })
    }
}

impl BinaryScalar {
    /// [`decode`](Self::decode) onto the row `out` is building: texts are
    /// written into its shared buffer rather than allocated one by one.
    fn decode_into(self, bytes: &[u8], out: &mut RowsBuilder) -> Result<(), Reason> {
        use BinaryScalar as B;
        let (kind, ascii) = match self {
            B::Text => {
                // Not UTF-8: `decode` renders or rejects it.
                match utf8(bytes) {
                    Ok(text) => out.push_text(TextKind::Text, text),
                    Err(_) => out.push(self.decode(bytes)?),
                }
                return Ok(());
            }
            B::Json => {
                out.push_text(TextKind::Json, utf8(bytes)?);
                return Ok(());
            }
            B::Jsonb => match bytes.split_first() {
                Some((1, doc)) => {
                    out.push_text(TextKind::Json, utf8(doc)?);
                    return Ok(());
                }
                _ => return Err("not jsonb version 1"),
            },
            B::Date => (TextKind::Date, datetime::date_ascii(bytes)?),
            B::Time => (TextKind::Time, datetime::time_ascii(bytes)?),
            B::TimeTz => (TextKind::TimeTz, datetime::timetz_ascii(bytes)?),
            B::Timestamp => (TextKind::Timestamp, datetime::timestamp_ascii(bytes)?),
            B::TimestampTz => (TextKind::TimestampTz, datetime::timestamptz_ascii(bytes)?),
            B::Interval => (TextKind::Interval, interval::interval_ascii(bytes, true)?),
            B::IntervalBefore17 => (TextKind::Interval, interval::interval_ascii(bytes, false)?),
            _ => {
                out.push(self.decode(bytes)?);
                return Ok(());
            }
        };
        out.push_text(kind, ascii.as_str()?);
        Ok(())
    }
}

/// `bytes` as an array of exactly `N` bytes.
fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], Reason> {
    bytes.try_into().map_err(|_| "wrong length for the type")
}

/// How one column's binary value is decoded: a built-in scalar type, or an
/// array of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BinaryType {
    scalar: BinaryScalar,
    array: bool,
    /// The text parser of the same type, named in errors.
    text: ValueType,
}

impl BinaryType {
    /// The decoder of a built-in type OID (scalar or array) as sent by
    /// the server of `server_version_num` (`150004` for 15.4), `None` for a
    /// type without one: read such a column as text.
    pub fn for_server(type_oid: u32, server_version_num: u32) -> Option<BinaryType> {
        let mut decoder = BinaryType::builtin(type_oid)?;
        if server_version_num < 170_000 && decoder.scalar == BinaryScalar::Interval {
            decoder.scalar = BinaryScalar::IntervalBefore17;
        }
        Some(decoder)
    }

    /// The decoder of a built-in type OID (scalar or array) as the newest
    /// servers send it (PostgreSQL 17 and later; [`BinaryType::for_server`]
    /// for older ones), `None` for a type without one: read such a column
    /// as text.
    pub fn builtin(type_oid: u32) -> Option<BinaryType> {
        let text = ValueType::builtin(type_oid)?;
        let (scalar, array) = match BinaryScalar::of(type_oid) {
            Some(scalar) => (scalar, false),
            None => (BinaryScalar::of_array(type_oid)?, true),
        };
        Some(BinaryType {
            scalar,
            array,
            text,
        })
    }

    /// Decodes one non-NULL value (NULL has no bytes: callers map it to
    /// [`Value::Null`]). Never panics; bad input gives a [`ValueError`].
    pub fn decode(&self, bytes: &[u8]) -> Result<Value, ValueError> {
        let decoded = if self.array {
            array::decode_array(bytes, self.scalar)
        } else {
            self.scalar.decode(bytes)
        };
        decoded.map_err(|reason| ValueError::new(self.text, bytes, reason))
    }

    /// [`decode`](Self::decode) onto the row `out` is building, the value's
    /// text (if it has one) written into `out`'s buffer shared by the rows
    /// it builds. On error nothing is added.
    pub fn decode_into(&self, bytes: &[u8], out: &mut RowsBuilder) -> Result<(), ValueError> {
        let decoded = if self.array {
            array::decode_array(bytes, self.scalar).map(|value| out.push(value))
        } else {
            self.scalar.decode_into(bytes, out)
        };
        decoded.map_err(|reason| ValueError::new(self.text, bytes, reason))
    }
}

/// Bytes from a hex string, for test vectors copied from `encode(…_send(x),
/// 'hex')`.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(oid: u32, bytes: &[u8]) -> Result<Value, ValueError> {
        BinaryType::builtin(oid).unwrap().decode(bytes)
    }

    #[test]
    fn every_builtin_with_a_decoder_is_known_to_the_text_parser() {
        for oid in 0..10_000 {
            if let Some(b) = BinaryType::builtin(oid) {
                let text = ValueType::builtin(oid).unwrap();
                assert_eq!(b.array, text.array, "oid {oid}");
            }
        }
        // Types read as text: enums and extension types have no built-in
        // OID; these built-ins have a send format not decoded here.
        for oid in [26, 650, 869, 790, 3904, 603, 22, 30, 16385] {
            assert_eq!(BinaryType::builtin(oid), None, "oid {oid}");
        }
    }

    #[test]
    fn scalars_decode_like_their_text() {
        assert_eq!(decode(16, &[1]).unwrap(), Value::Bool(true));
        assert_eq!(decode(21, &(-5i16).to_be_bytes()).unwrap(), Value::Int2(-5));
        assert_eq!(decode(23, &7i32.to_be_bytes()).unwrap(), Value::Int4(7));
        assert_eq!(
            decode(701, &0.1f64.to_be_bytes()).unwrap(),
            Value::Float8(0.1)
        );
        assert_eq!(decode(25, "é".as_bytes()).unwrap(), Value::Text("é".into()));
        assert_eq!(decode(18, &[0]).unwrap(), Value::Text("".into()));
        assert_eq!(decode(18, b"a").unwrap(), Value::Text("a".into()));
        assert_eq!(decode(18, &[0xc3]).unwrap(), Value::Text("\\303".into()));
        assert_eq!(
            decode(3802, b"\x01{\"a\": 1}").unwrap(),
            Value::Json("{\"a\": 1}".into())
        );
        assert_eq!(decode(114, b"[1,2]").unwrap(), Value::Json("[1,2]".into()));
        assert_eq!(
            decode(17, &[0, 0xff]).unwrap(),
            Value::Bytea(vec![0, 0xff].into())
        );
        assert_eq!(decode(2950, &[7; 16]).unwrap(), Value::Uuid([7; 16]));
    }

    #[test]
    fn wrong_lengths_and_bad_bytes_are_errors() {
        assert!(decode(23, &[0, 0, 1]).is_err());
        assert!(decode(16, &[2]).is_err());
        assert!(decode(18, b"ab").is_err());
        assert!(decode(3802, b"\x02{}").is_err());
        assert!(decode(25, &[0xff, 0xfe]).is_err());
        let e = decode(20, b"xyz").unwrap_err();
        assert_eq!(e.value_type(), ValueType::builtin(20).unwrap());
    }

    proptest! {
        #[test]
        fn any_bytes_of_any_type_never_panic(
            oid in prop::sample::select(vec![
                16u32, 21, 23, 20, 700, 701, 1700, 25, 18, 17, 114, 3802, 2950, 1082,
                1083, 1266, 1114, 1184, 1186, 1000, 1007, 1009, 1231, 1185, 1187, 3807,
            ]),
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let _ = decode(oid, &bytes);
        }
    }
}
