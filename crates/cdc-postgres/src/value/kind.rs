//! Type classification: which parser a column's text goes through.

use cdc_core::Value;

use super::error::ValueError;
use super::{array, scalar};

/// How the text of one scalar (or array element) is parsed, and which
/// [`Value`] variant it becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScalarKind {
    /// `bool` (`t` / `f`) → [`Value::Bool`].
    Bool,
    /// `int2` → [`Value::Int2`].
    Int2,
    /// `int4` → [`Value::Int4`].
    Int4,
    /// `int8` → [`Value::Int8`].
    Int8,
    /// `float4` (shortest round-trip digits, `NaN`, `±Infinity`) → [`Value::Float4`].
    Float4,
    /// `float8` → [`Value::Float8`].
    Float8,
    /// `numeric`, kept as exact decimal text → [`Value::Numeric`].
    Numeric,
    /// Any string-category type (`text`, `varchar`, `bpchar` with its padding,
    /// `name`, `"char"`, `citext`, …) → [`Value::Text`].
    Text,
    /// `bytea` in hex (or escape) output format → [`Value::Bytea`].
    Bytea,
    /// `json` / `jsonb`, the raw document → [`Value::Json`].
    Json,
    /// `uuid` → [`Value::Uuid`].
    Uuid,
    /// `date` → [`Value::Date`].
    Date,
    /// `time` → [`Value::Time`].
    Time,
    /// `timetz` → [`Value::TimeTz`].
    TimeTz,
    /// `timestamp` → [`Value::Timestamp`] (rewritten to `to_jsonb`'s ISO 8601 form).
    Timestamp,
    /// `timestamptz` → [`Value::TimestampTz`] (rewritten to `to_jsonb`'s ISO 8601 form).
    TimestampTz,
    /// `interval` (`IntervalStyle=postgres`) → [`Value::Interval`].
    Interval,
    /// Anything else (enums, `inet`, `money`, `bit`, geometric types,
    /// ranges, …): the output text as is → [`Value::Other`].
    Other,
}

impl ScalarKind {
    /// A short name for messages: the PostgreSQL type name where there is
    /// one (`timestamptz`), `text` for string types, `other` otherwise.
    pub fn name(self) -> &'static str {
        match self {
            ScalarKind::Bool => "bool",
            ScalarKind::Int2 => "int2",
            ScalarKind::Int4 => "int4",
            ScalarKind::Int8 => "int8",
            ScalarKind::Float4 => "float4",
            ScalarKind::Float8 => "float8",
            ScalarKind::Numeric => "numeric",
            ScalarKind::Text => "text",
            ScalarKind::Bytea => "bytea",
            ScalarKind::Json => "json",
            ScalarKind::Uuid => "uuid",
            ScalarKind::Date => "date",
            ScalarKind::Time => "time",
            ScalarKind::TimeTz => "timetz",
            ScalarKind::Timestamp => "timestamp",
            ScalarKind::TimestampTz => "timestamptz",
            ScalarKind::Interval => "interval",
            ScalarKind::Other => "other",
        }
    }

    /// Every kind, for tests and exhaustive checks.
    pub const ALL: [ScalarKind; 18] = [
        ScalarKind::Bool,
        ScalarKind::Int2,
        ScalarKind::Int4,
        ScalarKind::Int8,
        ScalarKind::Float4,
        ScalarKind::Float8,
        ScalarKind::Numeric,
        ScalarKind::Text,
        ScalarKind::Bytea,
        ScalarKind::Json,
        ScalarKind::Uuid,
        ScalarKind::Date,
        ScalarKind::Time,
        ScalarKind::TimeTz,
        ScalarKind::Timestamp,
        ScalarKind::TimestampTz,
        ScalarKind::Interval,
        ScalarKind::Other,
    ];
}

/// How to parse a column's text: the scalar kind, whether the column is an
/// array of it, and the array element delimiter (`pg_type.typdelim` of the
/// element type: `;` for `box`, `,` for everything else built in).
///
/// For a scalar column `delimiter` is the type's own `typdelim` and plays
/// no part in parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ValueType {
    /// Kind of the scalar, or of the array's elements.
    pub scalar: ScalarKind,
    /// `true` for an array column (any number of dimensions).
    pub array: bool,
    /// Element delimiter of an array's text form.
    pub delimiter: u8,
}

impl ValueType {
    /// A scalar of `kind`, delimiter `,`.
    pub const fn scalar(kind: ScalarKind) -> ValueType {
        ValueType {
            scalar: kind,
            array: false,
            delimiter: b',',
        }
    }

    /// An array of `kind` with element delimiter `,`.
    pub const fn array_of(kind: ScalarKind) -> ValueType {
        ValueType {
            scalar: kind,
            array: true,
            delimiter: b',',
        }
    }

    /// The type of a built-in scalar or array OID, without asking the
    /// catalog. `None` for OIDs this table does not know (user-defined
    /// types: enums, domains, extension types, composite types, …); use
    /// [`resolve`](super::resolve) / [`load_value_types`](super::load_value_types) for those.
    pub fn builtin(type_oid: u32) -> Option<ValueType> {
        use ScalarKind as K;
        let (kind, array) = match type_oid {
            16 => (K::Bool, false),
            1000 => (K::Bool, true),
            21 => (K::Int2, false),
            1005 => (K::Int2, true),
            23 => (K::Int4, false),
            1007 => (K::Int4, true),
            20 => (K::Int8, false),
            1016 => (K::Int8, true),
            700 => (K::Float4, false),
            1021 => (K::Float4, true),
            701 => (K::Float8, false),
            1022 => (K::Float8, true),
            1700 => (K::Numeric, false),
            1231 => (K::Numeric, true),
            // "char", name, text, bpchar, varchar
            18 | 19 | 25 | 1042 | 1043 => (K::Text, false),
            1002 | 1003 | 1009 | 1014 | 1015 => (K::Text, true),
            17 => (K::Bytea, false),
            1001 => (K::Bytea, true),
            114 | 3802 => (K::Json, false),
            199 | 3807 => (K::Json, true),
            2950 => (K::Uuid, false),
            2951 => (K::Uuid, true),
            1082 => (K::Date, false),
            1182 => (K::Date, true),
            1083 => (K::Time, false),
            1183 => (K::Time, true),
            1266 => (K::TimeTz, false),
            1270 => (K::TimeTz, true),
            1114 => (K::Timestamp, false),
            1115 => (K::Timestamp, true),
            1184 => (K::TimestampTz, false),
            1185 => (K::TimestampTz, true),
            1186 => (K::Interval, false),
            1187 => (K::Interval, true),
            // box and box[]: the one built-in type whose delimiter is ';'.
            603 => {
                return Some(ValueType {
                    scalar: K::Other,
                    array: false,
                    delimiter: b';',
                })
            }
            1020 => {
                return Some(ValueType {
                    scalar: K::Other,
                    array: true,
                    delimiter: b';',
                })
            }
            // Built-in types to_jsonb renders as their output text: oid,
            // xml, point, lseg, path, polygon, line, cidr, circle,
            // macaddr8, money, macaddr, inet, bit, varbit, pg_lsn,
            // tsvector, tsquery, jsonpath, xid8, the built-in ranges and
            // multiranges.
            26 | 142 | 600 | 601 | 602 | 604 | 628 | 650 | 718 | 774 | 790 | 829 | 869 | 1560
            | 1562 | 3220 | 3614 | 3615 | 4072 | 5069 | 3904 | 3906 | 3908 | 3910 | 3912 | 3926
            | 4451 | 4532 | 4533 | 4534 | 4535 | 4536 => (K::Other, false),
            1028 | 143 | 1017 | 1018 | 1019 | 1027 | 629 | 651 | 719 | 775 | 791 | 1040 | 1041
            | 1561 | 1563 | 3221 | 3643 | 3645 | 4073 | 271 | 3905 | 3907 | 3909 | 3911 | 3913
            | 3927 | 6150 | 6151 | 6152 | 6153 | 6155 | 6157 => (K::Other, true),
            _ => return None,
        };
        Some(ValueType {
            scalar: kind,
            array,
            delimiter: b',',
        })
    }

    /// Parses one column value from its type's text output (the session
    /// pinned to `DateStyle=ISO, TimeZone=UTC, IntervalStyle=postgres,
    /// extra_float_digits=3, bytea_output=hex`) into the [`Value`] whose
    /// JSON rendering (`cdc_core::encode::write_value`) is what
    /// `to_jsonb` prints for it.
    ///
    /// `NULL` itself is not text: callers map it to [`Value::Null`]
    /// before calling this. Never panics; bad input gives a
    /// [`ValueError`].
    pub fn parse(&self, text: &[u8]) -> Result<Value, ValueError> {
        if self.array {
            array::parse_array(text, self.scalar, self.delimiter)
        } else {
            scalar::parse_scalar(self.scalar, text)
                .map_err(|reason| ValueError::new(*self, text, reason))
        }
    }

    /// The type's name for messages: `timestamptz`, `int4[]`.
    pub fn describe(&self) -> String {
        if self.array {
            format!("{}[]", self.scalar.name())
        } else {
            self.scalar.name().to_owned()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn builtin_covers_the_core_types() {
        assert_eq!(
            ValueType::builtin(1184),
            Some(ValueType::scalar(ScalarKind::TimestampTz))
        );
        assert_eq!(
            ValueType::builtin(1009),
            Some(ValueType::array_of(ScalarKind::Text))
        );
        assert_eq!(
            ValueType::builtin(1020),
            Some(ValueType {
                scalar: ScalarKind::Other,
                array: true,
                delimiter: b';'
            })
        );
        assert_eq!(ValueType::builtin(16385), None);
        // int2vector / oidvector are not in the table: their text is not
        // in array syntax.
        assert_eq!(ValueType::builtin(22), None);
        assert_eq!(ValueType::builtin(30), None);
    }

    #[test]
    fn every_builtin_scalar_has_its_array() {
        // Scalar OID → array OID pairs from pg_type.typarray.
        let pairs = [
            (16, 1000),
            (17, 1001),
            (18, 1002),
            (19, 1003),
            (20, 1016),
            (21, 1005),
            (23, 1007),
            (25, 1009),
            (26, 1028),
            (114, 199),
            (142, 143),
            (600, 1017),
            (603, 1020),
            (700, 1021),
            (701, 1022),
            (1042, 1014),
            (1043, 1015),
            (1082, 1182),
            (1083, 1183),
            (1114, 1115),
            (1184, 1185),
            (1186, 1187),
            (1266, 1270),
            (1700, 1231),
            (2950, 2951),
            (3802, 3807),
            (3904, 3905),
            (4451, 6150),
        ];
        for (scalar, array) in pairs {
            let s = ValueType::builtin(scalar).unwrap();
            let a = ValueType::builtin(array).unwrap();
            assert!(!s.array && a.array, "{scalar} {array}");
            assert_eq!(s.scalar, a.scalar);
            assert_eq!(s.delimiter, a.delimiter);
        }
    }

    #[test]
    fn describe_names_arrays() {
        assert_eq!(ValueType::array_of(ScalarKind::Int4).describe(), "int4[]");
        assert_eq!(ValueType::scalar(ScalarKind::Date).describe(), "date");
    }
}
