//! Table and column descriptions shared by every event of a table.

use std::fmt;

/// A schema-qualified table name, e.g. `public.users`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    /// Schema (namespace), e.g. `public`.
    pub schema: String,
    /// Table name within the schema.
    pub name: String,
}

impl TableName {
    /// Builds a name from its two parts, taken verbatim (no case folding).
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for TableName {
    /// `schema.name`, unquoted: for messages and routing templates, never for SQL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Which old-row values PostgreSQL logs for updates and deletes of a table
/// (`ALTER TABLE … REPLICA IDENTITY …`).
///
/// Exhaustive on purpose: it mirrors the four values of PostgreSQL's
/// `pg_class.relreplident`, and code that decides which columns an old row
/// holds matches it in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `DEFAULT`: the primary key columns.
    Default,
    /// `NOTHING`: no old values at all.
    Nothing,
    /// `FULL`: every column of the old row.
    Full,
    /// `USING INDEX`: the columns of a unique index.
    Index,
}

impl ReplicaIdentity {
    /// Maps `pg_class.relreplident` / the pgoutput Relation byte (`d`, `n`, `f`, `i`).
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            b'd' => Some(Self::Default),
            b'n' => Some(Self::Nothing),
            b'f' => Some(Self::Full),
            b'i' => Some(Self::Index),
            _ => None,
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Column {
    /// Column name as stored in the catalog (case preserved).
    pub name: String,
    /// OID of the column's type (`pg_type.oid`).
    pub type_oid: u32,
    /// Type name as `format_type` prints it without modifiers, e.g. `int4`, `_text`, `mood`.
    pub type_name: String,
    /// Type modifier (`atttypmod`), `-1` when none.
    pub type_modifier: i32,
    /// `false` when the column is declared `NOT NULL`.
    pub nullable: bool,
    /// Part of the row's key: the primary key, or the replica identity
    /// columns when the table has no primary key.
    pub is_key: bool,
}

/// The shape of a table at some point of the stream. Every event of the table
/// holds an `Arc<TableSchema>`, so rows are positional: `row.values()[i]` is
/// the value of `columns[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableSchema {
    /// Database the table lives in.
    pub database: String,
    /// Table OID (`pg_class.oid`); stable across renames.
    pub oid: u32,
    /// Schema-qualified name.
    pub name: TableName,
    /// Columns in table order (dropped and generated columns are not included).
    pub columns: Vec<Column>,
    /// Replica identity of the table when this schema was captured.
    pub replica_identity: ReplicaIdentity,
}

impl TableSchema {
    /// Positions of the key columns, in column order.
    pub fn key_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_key)
            .map(|(i, _)| i)
    }

    /// Position of the column called `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}
