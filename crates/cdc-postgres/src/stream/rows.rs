//! Turning pgoutput tuples into positional rows of typed values.

use cdc_core::{Row, Value};

use crate::catalog::RelationInfo;
use crate::error::PgError;
use crate::pgoutput::{OldTuple, OldTupleKind, TupleData, TupleValue};

/// Parses the columns of `tuple` the relation keeps, each with its
/// column's parser; the values of columns it leaves out
/// ([`RelationInfo::wire`]) are skipped unparsed.
pub fn parse_tuple(rel: &RelationInfo, tuple: &TupleData) -> Result<Vec<Value>, PgError> {
    let schema = &rel.schema;
    let width = rel.wire.as_ref().map_or(schema.columns.len(), |w| w.width);
    if tuple.columns.len() != width || rel.types.len() != schema.columns.len() {
        return Err(PgError::Protocol(format!(
            "a change of {} carries {} columns but its Relation message described {width}",
            schema.name,
            tuple.columns.len(),
        )));
    }
    let mut values = Vec::with_capacity(schema.columns.len());
    for (i, (column, ty)) in schema.columns.iter().zip(&rel.types).enumerate() {
        let at = rel
            .wire
            .as_ref()
            .map_or(Some(i), |w| w.positions.get(i).copied());
        let Some(col) = at.and_then(|at| tuple.columns.get(at)) else {
            return Err(PgError::Protocol(format!(
                "no value for column {} in a change of {}",
                column.name, schema.name
            )));
        };
        values.push(match col {
            TupleValue::Null => Value::Null,
            TupleValue::UnchangedToast => Value::UnchangedToast,
            TupleValue::Text(bytes) => ty.parse(bytes).map_err(|source| PgError::Value {
                table: schema.name.to_string(),
                column: column.name.clone(),
                source,
            })?,
            TupleValue::Binary(_) => {
                return Err(PgError::Protocol(format!(
                    "column {} of {} arrived in binary format, which was not requested",
                    column.name, schema.name
                )))
            }
        });
    }
    Ok(values)
}

/// The old-row image of an update or delete.
pub fn old_row(rel: &RelationInfo, old: &OldTuple) -> Result<Row, PgError> {
    let values = parse_tuple(rel, &old.tuple)?;
    Ok(match old.kind {
        OldTupleKind::Key => Row::key_only(values),
        OldTupleKind::Full => Row::new(values),
    })
}

/// Replaces unchanged-TOAST placeholders in `new` with the old row's values
/// when the old row is complete (`REPLICA IDENTITY FULL`).
pub fn fill_unchanged_toast(new: &mut [Value], old: Option<&Row>) {
    let Some(old) = old.filter(|o| !o.is_key_only()) else {
        return;
    };
    for (slot, previous) in new.iter_mut().zip(old.values()) {
        if matches!(slot, Value::UnchangedToast) && !matches!(previous, Value::UnchangedToast) {
            *slot = previous.clone();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use cdc_core::{Column, ReplicaIdentity, TableName, TableSchema};

    use super::*;
    use crate::local_subsets::LocalSubsets;
    use crate::selection::{ColumnSelection, TableSubset};
    use crate::value::ValueType;

    /// `public.t (id int4 key, secret text, a int4)`, as a Relation message
    /// describes it, without `secret`.
    fn narrowed() -> RelationInfo {
        let column = |name: &str, oid: u32, key: bool| Column {
            name: name.into(),
            type_oid: oid,
            type_name: String::new(),
            type_modifier: -1,
            nullable: !key,
            is_key: key,
        };
        let info = RelationInfo {
            schema: Arc::new(TableSchema {
                database: "db".into(),
                oid: 1,
                name: TableName::new("public", "t"),
                columns: vec![
                    column("id", 23, true),
                    column("secret", 25, false),
                    column("a", 23, false),
                ],
                replica_identity: ReplicaIdentity::Full,
            }),
            types: [23, 25, 23]
                .map(|o| ValueType::builtin(o).unwrap())
                .to_vec(),
            row_filter: None,
            wire: None,
        };
        let subset = TableSubset {
            columns: Some(ColumnSelection::Exclude(vec!["secret".into()])),
            row_filter: None,
        };
        LocalSubsets::from_subsets(&[(TableName::new("public", "t"), subset)])
            .narrow(info)
            .unwrap()
    }

    fn text(s: &str) -> TupleValue {
        TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn a_left_out_column_is_skipped_in_new_and_old_images() {
        let rel = narrowed();
        let tuple = TupleData {
            // The left-out value is not even parsed: not an int.
            columns: vec![text("7"), text("hunter2"), TupleValue::UnchangedToast],
        };
        assert_eq!(
            parse_tuple(&rel, &tuple).unwrap(),
            [Value::Int4(7), Value::UnchangedToast]
        );
        let full = OldTuple {
            kind: OldTupleKind::Full,
            tuple: TupleData {
                columns: vec![text("7"), text("old secret"), text("1")],
            },
        };
        assert_eq!(
            old_row(&rel, &full).unwrap(),
            Row::new(vec![Value::Int4(7), Value::Int4(1)])
        );
        let key = OldTuple {
            kind: OldTupleKind::Key,
            tuple: TupleData {
                columns: vec![text("7"), TupleValue::Null, TupleValue::Null],
            },
        };
        assert_eq!(
            old_row(&rel, &key).unwrap(),
            Row::key_only(vec![Value::Int4(7), Value::Null])
        );
    }

    #[test]
    fn a_tuple_of_another_width_is_an_error_not_a_panic() {
        let rel = narrowed();
        for width in [0, 2, 4] {
            let tuple = TupleData {
                columns: vec![text("1"); width],
            };
            let err = parse_tuple(&rel, &tuple).unwrap_err();
            assert!(err.to_string().contains("described 3"), "{err}");
        }
    }
}
