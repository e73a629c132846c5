//! Which format the snapshot's `COPY` reads ask for.
//!
//! Binary `COPY` costs the server less than text (no output function
//! formats a timestamp or an integer as text) and the reader less (no
//! escapes to undo, integers and timestamps arrive as numbers). It is used
//! for a table when every column has a binary decoder
//! ([`crate::value::BinaryType`]: the built-in scalar types and their
//! arrays); a table with a column of any other type (an enum, a domain,
//! an extension type, `inet`, a range, …) is read as text. Both decode to
//! the same values.

use cdc_core::TableSchema;

use crate::value::BinaryType;

/// The `COPY` format setting of the snapshot readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CopyFormat {
    /// Binary for every table whose columns all have a binary decoder,
    /// text for the others.
    #[default]
    Auto,
    /// Text for every table.
    Text,
}

impl CopyFormat {
    /// The format reads of `table` use.
    pub fn for_table(self, table: &TableSchema) -> ReadFormat {
        let binary = self == CopyFormat::Auto
            && table
                .columns
                .iter()
                .all(|c| BinaryType::builtin(c.type_oid).is_some());
        if binary {
            ReadFormat::Binary
        } else {
            ReadFormat::Text
        }
    }
}

/// The format of one `COPY` read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFormat {
    /// `COPY … TO STDOUT`: each value in its type's text output.
    Text,
    /// `COPY … TO STDOUT (FORMAT binary)`: each value in its type's binary
    /// send format.
    Binary,
}

impl ReadFormat {
    /// The end of the `COPY` statement: `TO STDOUT`, with the format
    /// option when it is binary.
    pub(crate) fn to_stdout(self) -> &'static str {
        match self {
            ReadFormat::Text => "TO STDOUT",
            ReadFormat::Binary => "TO STDOUT (FORMAT binary)",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use cdc_core::{Column, ReplicaIdentity, TableName};

    fn table(oids: &[u32]) -> TableSchema {
        TableSchema {
            database: "db".into(),
            oid: 1,
            name: TableName::new("public", "t"),
            columns: oids
                .iter()
                .enumerate()
                .map(|(i, &type_oid)| Column {
                    name: format!("c{i}"),
                    type_oid,
                    type_name: String::new(),
                    type_modifier: -1,
                    nullable: true,
                    is_key: false,
                })
                .collect(),
            replica_identity: ReplicaIdentity::Default,
        }
    }

    #[test]
    fn binary_only_when_every_column_has_a_decoder() {
        let builtin = table(&[20, 25, 23, 3802, 1184, 1007]);
        assert_eq!(CopyFormat::Auto.for_table(&builtin), ReadFormat::Binary);
        assert_eq!(CopyFormat::Text.for_table(&builtin), ReadFormat::Text);
        // inet (869) and a user type (an enum, a domain) are read as text.
        assert_eq!(CopyFormat::Auto.for_table(&table(&[20, 869])), ReadFormat::Text);
        assert_eq!(CopyFormat::Auto.for_table(&table(&[20, 16385])), ReadFormat::Text);
        assert_eq!(CopyFormat::Auto.for_table(&table(&[])), ReadFormat::Binary);
    }
}
