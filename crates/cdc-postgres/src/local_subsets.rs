//! Column selections and row filters the reader applies itself, where the
//! server does not:
//!
//! * Before PostgreSQL 15 a publication has no column lists, so every
//!   column of a table arrives in the stream. The reader
//!   leaves the excluded ones out of each Relation message's schema and
//!   each tuple's values (they are never parsed), and out of the
//!   snapshot's reads (its `COPY` selects only the kept columns), so the
//!   snapshot and the stream agree exactly as they do with a publication
//!   column list. (From 15 on the publication already left them out and
//!   narrowing again changes nothing.)
//! * In `snapshot_only` mode no publication is set up: the snapshot's
//!   reads take the configured row filter ([`LocalSubsets::row_filter`])
//!   when the publication has none.
//!
//! ```
//! use cdc_core::TableName;
//! use cdc_postgres::local_subsets::LocalSubsets;
//! use cdc_postgres::selection::{ColumnSelection, TableSubset};
//!
//! let mut subset = TableSubset::default();
//! subset.columns = Some(ColumnSelection::Exclude(vec!["password_hash".into()]));
//! let users = TableName::new("public", "users");
//! let local = LocalSubsets::from_subsets(&[(users.clone(), subset)]);
//! assert!(!local.is_empty());
//! assert_eq!(local.row_filter(&users), None);
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use cdc_core::{TableName, TableSchema};

use crate::catalog::{RelationInfo, WireColumns};
use crate::error::PgError;
use crate::selection::{ColumnSelection, TableSubset};

/// The configured column selections and row filters, per table. Cheap to
/// clone; empty by default (every column and row).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalSubsets {
    tables: Arc<BTreeMap<TableName, TableSubset>>,
}

impl LocalSubsets {
    /// The column selections and row filters of `subsets`.
    pub fn from_subsets(subsets: &[(TableName, TableSubset)]) -> Self {
        let tables = subsets.iter().cloned().collect();
        Self {
            tables: Arc::new(tables),
        }
    }

    /// `true` when no table has a selection or a filter.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The configured row filter of `table`, SQL text.
    pub fn row_filter(&self, table: &TableName) -> Option<&str> {
        self.tables.get(table)?.row_filter.as_deref()
    }

    /// `info` without the columns its table's selection leaves out, with
    /// [`RelationInfo::wire`] saying where the kept columns' values sit in
    /// the stream's tuples. Unchanged for a table without a selection.
    ///
    /// Errors (fatal) when the selection leaves out a key column: the
    /// table's changes could not be keyed (with `REPLICA IDENTITY FULL`
    /// and no primary key, every column is part of the key).
    pub(crate) fn narrow(&self, info: RelationInfo) -> Result<RelationInfo, PgError> {
        let Some(selection) = self
            .tables
            .get(&info.schema.name)
            .and_then(|s| s.columns.as_ref())
        else {
            return Ok(info);
        };
        let keep = |name: &str| match selection {
            ColumnSelection::Include(list) => list.iter().any(|c| c == name),
            ColumnSelection::Exclude(list) => !list.iter().any(|c| c == name),
        };
        let RelationInfo {
            schema,
            types,
            row_filter,
            wire,
        } = info;
        let dropped_keys: Vec<&str> = schema
            .columns
            .iter()
            .filter(|c| c.is_key && !keep(&c.name))
            .map(|c| c.name.as_str())
            .collect();
        if !dropped_keys.is_empty() {
            return Err(PgError::Setup(format!(
                "source.columns of {} leaves out its key column(s) {}: changes could not be keyed \
                 (without a primary key, REPLICA IDENTITY FULL makes every column part of the key)",
                schema.name,
                dropped_keys.join(", ")
            )));
        }
        let width = wire.as_ref().map_or(schema.columns.len(), |w| w.width);
        let mut columns = Vec::with_capacity(schema.columns.len());
        let mut kept_types = Vec::with_capacity(schema.columns.len());
        let mut positions = Vec::with_capacity(schema.columns.len());
        for (i, (column, ty)) in schema.columns.iter().zip(types).enumerate() {
            if keep(&column.name) {
                columns.push(column.clone());
                kept_types.push(ty);
                positions.push(
                    wire.as_ref()
                        .and_then(|w| w.positions.get(i).copied())
                        .unwrap_or(i),
                );
            }
        }
        Ok(RelationInfo {
            schema: Arc::new(TableSchema {
                columns,
                ..(*schema).clone()
            }),
            types: kept_types,
            row_filter,
            wire: Some(Arc::new(WireColumns { width, positions })),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::value::ValueType;
    use cdc_core::{Column, ReplicaIdentity};

    fn info(keys: &[bool]) -> RelationInfo {
        let names = ["id", "a", "secret", "b"];
        RelationInfo {
            schema: Arc::new(TableSchema {
                database: "db".into(),
                oid: 1,
                name: TableName::new("public", "t"),
                columns: names
                    .iter()
                    .zip(keys)
                    .map(|(n, k)| Column {
                        name: (*n).into(),
                        type_oid: 23,
                        type_name: "int4".into(),
                        type_modifier: -1,
                        nullable: !k,
                        is_key: *k,
                    })
                    .collect(),
                replica_identity: ReplicaIdentity::Default,
            }),
            types: vec![ValueType::builtin(23).unwrap(); 4],
            row_filter: None,
            wire: None,
        }
    }

    fn local(selection: ColumnSelection) -> LocalSubsets {
        let subset = TableSubset {
            columns: Some(selection),
            row_filter: Some("a > 1".into()),
        };
        LocalSubsets::from_subsets(&[(TableName::new("public", "t"), subset)])
    }

    #[test]
    fn keeps_the_selected_columns_and_where_they_sit_in_the_tuple() {
        let keys = [true, false, false, false];
        let out = local(ColumnSelection::Exclude(vec!["secret".into()]))
            .narrow(info(&keys))
            .unwrap();
        let names: Vec<&str> = out.schema.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "a", "b"]);
        assert_eq!(out.types.len(), 3);
        assert_eq!(
            out.wire.as_deref(),
            Some(&WireColumns {
                width: 4,
                positions: vec![0, 1, 3]
            })
        );
        // Narrowing again composes with the first projection.
        let again = local(ColumnSelection::Include(vec!["id".into(), "b".into()]))
            .narrow(out)
            .unwrap();
        assert_eq!(again.wire.unwrap().positions, [0, 3]);
    }

    #[test]
    fn other_tables_are_untouched() {
        let keys = [true, false, false, false];
        let other = LocalSubsets::from_subsets(&[(
            TableName::new("public", "other"),
            TableSubset {
                columns: Some(ColumnSelection::Include(vec!["id".into()])),
                row_filter: None,
            },
        )]);
        let out = other.narrow(info(&keys)).unwrap();
        assert_eq!(out.schema.columns.len(), 4);
        assert!(out.wire.is_none());
        assert!(LocalSubsets::default().is_empty());
        assert_eq!(
            local(ColumnSelection::Include(vec!["id".into()]))
                .row_filter(&TableName::new("public", "t")),
            Some("a > 1")
        );
    }

    #[test]
    fn leaving_out_a_key_column_is_refused() {
        let err = local(ColumnSelection::Include(vec!["a".into()]))
            .narrow(info(&[true, false, false, false]))
            .unwrap_err();
        assert!(
            err.to_string().contains("leaves out its key column(s) id"),
            "{err}"
        );
        // REPLICA IDENTITY FULL without a primary key: every column is key.
        let err = local(ColumnSelection::Exclude(vec!["secret".into()]))
            .narrow(info(&[true, true, true, true]))
            .unwrap_err();
        assert!(err.to_string().contains("secret"), "{err}");
    }
}
