//! Turning pgoutput tuples into positional rows of typed values.

use cdc_core::{Row, Value};

use crate::catalog::RelationInfo;
use crate::error::PgError;
use crate::pgoutput::{OldTuple, OldTupleKind, TupleData, TupleValue};

/// Parses every column of `tuple` with the relation's parsers.
pub fn parse_tuple(rel: &RelationInfo, tuple: &TupleData) -> Result<Vec<Value>, PgError> {
    let schema = &rel.schema;
    if tuple.columns.len() != schema.columns.len() {
        return Err(PgError::Protocol(format!(
            "a change of {} carries {} columns but its Relation message described {}",
            schema.name,
            tuple.columns.len(),
            schema.columns.len()
        )));
    }
    let mut values = Vec::with_capacity(tuple.columns.len());
    for (i, col) in tuple.columns.iter().enumerate() {
        values.push(match col {
            TupleValue::Null => Value::Null,
            TupleValue::UnchangedToast => Value::UnchangedToast,
            TupleValue::Text(bytes) => {
                let ty = rel.types.get(i).ok_or_else(|| {
                    PgError::Protocol(format!("no parser for column {i} of {}", schema.name))
                })?;
                ty.parse(bytes).map_err(|source| PgError::Value {
                    table: schema.name.to_string(),
                    column: schema.columns[i].name.clone(),
                    source,
                })?
            }
            TupleValue::Binary(_) => {
                return Err(PgError::Protocol(format!(
                    "column {} of {} arrived in binary format, which was not requested",
                    schema.columns[i].name, schema.name
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
