//! Typed column values.

use std::fmt;
use std::sync::Arc;

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
///
/// A row made with [`Row::new`] owns its values. The rows a
/// [`RowsBuilder`](crate::RowsBuilder) hands out share their memory in
/// blocks, one allocation for a block's values (and one for its texts):
/// such a row is a range of it, kept alive until the last row of the block
/// is dropped. [`Row::values_mut`] gives a shared row values of its own
/// first.
#[derive(Clone, Default)]
pub struct Row {
    values: Values,
    key_only: bool,
}

/// Where a row's values are.
#[derive(Clone)]
enum Values {
    Own(Vec<Value>),
    /// `all[start..end]`.
    Shared {
        all: Arc<[Value]>,
        start: usize,
        end: usize,
    },
}

impl Default for Values {
    fn default() -> Self {
        Values::Own(Vec::new())
    }
}

impl Row {
    /// A complete row.
    pub fn new(values: Vec<Value>) -> Self {
        Self {
            values: Values::Own(values),
            key_only: false,
        }
    }

    /// A complete row of the values `all[start..end]`, sharing `all` with
    /// other rows; `None` when the range is not within `all`.
    pub(crate) fn shared(all: &Arc<[Value]>, start: usize, end: usize) -> Option<Self> {
        all.get(start..end)?;
        Some(Self {
            values: Values::Shared {
                all: Arc::clone(all),
                start,
                end,
            },
            key_only: false,
        })
    }

    /// An old-row image that holds only the key columns (replica identity
    /// `DEFAULT` / `USING INDEX`); the other positions are [`Value::Null`]
    /// placeholders and encoders leave them out.
    pub fn key_only(values: Vec<Value>) -> Self {
        Self {
            values: Values::Own(values),
            key_only: true,
        }
    }

    /// The values, positional.
    pub fn values(&self) -> &[Value] {
        match &self.values {
            Values::Own(values) => values,
            Values::Shared { all, start, end } => all.get(*start..*end).unwrap_or_default(),
        }
    }

    /// Mutable access to the values (a row sharing its values with others
    /// gets a copy of its own first).
    pub fn values_mut(&mut self) -> &mut [Value] {
        if let Values::Shared { .. } = self.values {
            self.values = Values::Own(self.values().to_vec());
        }
        match &mut self.values {
            Values::Own(values) => values,
            Values::Shared { .. } => &mut [],
        }
    }

    /// `true` when this image holds only the key columns.
    pub fn is_key_only(&self) -> bool {
        self.key_only
    }

    /// Consumes the row, returning its values.
    pub fn into_values(self) -> Vec<Value> {
        match self.values {
            Values::Own(values) => values,
            Values::Shared { all, start, end } => all.get(start..end).unwrap_or_default().to_vec(),
        }
    }
}

impl PartialEq for Row {
    fn eq(&self, other: &Self) -> bool {
        self.key_only == other.key_only && self.values() == other.values()
    }
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Row")
            .field("values", &self.values())
            .field("key_only", &self.key_only)
            .finish()
    }
}
