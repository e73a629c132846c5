//! Typed column values.

use crate::text::Text;

/// One column value, parsed from PostgreSQL's text representation.
///
/// Variants that PostgreSQL's `to_jsonb` renders as JSON strings carry that
/// rendering already (for example a `timestamptz` is held as
/// `2024-05-01T12:00:00.5+00:00`, exactly what `to_jsonb` prints with
/// `TimeZone=UTC`), so sinks never re-format them. Numbers that must stay
/// exact (`numeric`) are held as their decimal text.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// `bool`.
    Bool(bool),
    /// `int2`.
    Int2(i16),
    /// `int4`.
    Int4(i32),
    /// `int8`.
    Int8(i64),
    /// `float4`, including NaN and ±infinity.
    Float4(f32),
    /// `float8`, including NaN and ±infinity.
    Float8(f64),
    /// `numeric`: the exact decimal text as PostgreSQL prints it (`12.500`),
    /// or `NaN`, `Infinity`, `-Infinity`.
    Numeric(Text),
    /// Character types: `text`, `varchar`, `bpchar` (with its padding), `name`, `citext`, ….
    Text(Text),
    /// `bytea`, decoded to raw bytes.
    Bytea(Box<[u8]>),
    /// `json` or `jsonb`: the document text as the server sent it, not re-parsed.
    Json(Text),
    /// `uuid`.
    Uuid([u8; 16]),
    /// `date` as `to_jsonb` renders it: `2024-05-01`, `0044-03-15 BC`, `infinity`.
    Date(Text),
    /// `time` as `to_jsonb` renders it: `12:00:00.5`.
    Time(Text),
    /// `timetz` as `to_jsonb` renders it: `12:34:56.789+05:30`, `00:00:00+00` (offset not padded).
    TimeTz(Text),
    /// `timestamp` as `to_jsonb` renders it: `2024-05-01T12:00:00.5`, `0044-03-15T12:00:00 BC`, `infinity`.
    Timestamp(Text),
    /// `timestamptz` as `to_jsonb` renders it in UTC: `2024-05-01T12:00:00.5+00:00`.
    TimestampTz(Text),
    /// `interval` in PostgreSQL's `postgres` style: `1 year 2 mons 3 days 04:05:06`.
    Interval(Text),
    /// An array of any dimension: elements in order, each inner dimension a
    /// nested `Array`. Lower bounds are not kept (as in `to_jsonb`).
    Array(Box<[Value]>),
    /// Any other type (enums, `inet`, `cidr`, `macaddr`, `money`, `bit`,
    /// `varbit`, geometric types, ranges, …): PostgreSQL's text output. The
    /// column's `type_name` says which type it is.
    Other(Text),
    /// A TOASTed value the change did not touch, so PostgreSQL did not send
    /// it (pgoutput `u`). The old value is unknown unless the table has
    /// `REPLICA IDENTITY FULL`, in which case the source fills it in.
    UnchangedToast,
}

impl Value {
    /// `true` for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

/// The values of one row, positional: `values()[i]` belongs to
/// `TableSchema::columns[i]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    values: Vec<Value>,
    key_only: bool,
}

impl Row {
    /// A complete row.
    pub fn new(values: Vec<Value>) -> Self {
        Self {
            values,
            key_only: false,
        }
    }

    /// An old-row image that holds only the key columns (replica identity
    /// `DEFAULT` / `USING INDEX`); the other positions are [`Value::Null`]
    /// placeholders and encoders leave them out.
    pub fn key_only(values: Vec<Value>) -> Self {
        Self {
            values,
            key_only: true,
        }
    }

    /// The values, positional.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// Mutable access to the values.
    pub fn values_mut(&mut self) -> &mut [Value] {
        &mut self.values
    }

    /// `true` when this image holds only the key columns.
    pub fn is_key_only(&self) -> bool {
        self.key_only
    }

    /// Consumes the row, returning its values.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }
}
