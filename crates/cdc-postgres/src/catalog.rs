//! Turning a pgoutput Relation message into a [`TableSchema`], with what
//! the message does not carry (primary key, NOT NULL, type names, how to
//! parse each column) looked up in the catalog.

use std::collections::HashMap;
use std::sync::Arc;

use cdc_core::{Column, ReplicaIdentity, TableName, TableSchema};
use sqlx::{PgConnection, Row};

use crate::error::PgError;
use crate::pgoutput::Relation;
use crate::value::{load_value_types, ScalarKind, ValueType};

/// A relation as the stream knows it: its schema and how to parse each column.
#[derive(Debug, Clone)]
pub struct RelationInfo {
    /// Shared by every event of the table.
    pub schema: Arc<TableSchema>,
    /// Parser for each column, positional.
    pub types: Vec<ValueType>,
    /// Rows outside this filter are not captured: the publication's row
    /// filter (PostgreSQL 15+) as the server deparses it, which the
    /// snapshot's reads apply as the server applies it to the stream.
    /// Always `None` for a Relation message (the server filters the
    /// stream itself).
    pub row_filter: Option<String>,
    /// Where each column's value sits in the stream's tuples, when the
    /// reader leaves out columns the server sends
    /// ([`crate::local_subsets::LocalSubsets`]); `None`: tuple position
    /// `i` is column `i`. The snapshot's reads select their columns by name
    /// and never look at it.
    pub wire: Option<Arc<WireColumns>>,
}

/// The columns of a stream tuple that a [`RelationInfo`] keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireColumns {
    /// How many values each tuple of the relation carries.
    pub width: usize,
    /// For each column of the schema, in order, the position of its value
    /// in the tuple (ascending, each below `width`).
    pub positions: Vec<usize>,
}

struct CatalogColumn {
    not_null: bool,
    primary_key: bool,
}

/// Describes `rel`. Catalog lookups that fail because the table has gone
/// since the change was written fall back to what the message says (key =
/// replica identity columns, nullable, types parsed as text when not built in).
pub async fn describe_relation(
    conn: &mut PgConnection,
    database: &str,
    rel: &Relation,
) -> Result<RelationInfo, PgError> {
    let ctx = || format!("describing table {}.{}", rel.namespace, rel.name);
    let rows = sqlx::query(
        "SELECT a.attname::text AS name, a.attnotnull AS not_null,
                EXISTS (SELECT 1 FROM pg_index i
                        WHERE i.indrelid = a.attrelid AND i.indisprimary AND a.attnum = ANY(i.indkey)) AS pk
         FROM pg_attribute a
         WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
    )
    .bind(i64::from(rel.oid))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| PgError::sql(ctx(), e))?;
    let mut catalog = HashMap::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get("name").map_err(|e| PgError::sql(ctx(), e))?;
        catalog.insert(
            name,
            CatalogColumn {
                not_null: row
                    .try_get("not_null")
                    .map_err(|e| PgError::sql(ctx(), e))?,
                primary_key: row.try_get("pk").map_err(|e| PgError::sql(ctx(), e))?,
            },
        );
    }
    let has_pk = rel
        .columns
        .iter()
        .any(|c| catalog.get(&c.name).is_some_and(|k| k.primary_key));

    let mut oids: Vec<u32> = rel.columns.iter().map(|c| c.type_oid).collect();
    oids.sort_unstable();
    oids.dedup();
    let types = load_value_types(conn, &oids)
        .await
        .map_err(|e| PgError::sql(ctx(), e))?;

    let mut columns = Vec::with_capacity(rel.columns.len());
    let mut parsers = Vec::with_capacity(rel.columns.len());
    for c in &rel.columns {
        let known = catalog.get(&c.name);
        let (type_name, value_type) = match types.get(&c.type_oid) {
            Some((name, vt)) => (name.clone(), *vt),
            None => (
                format!("oid:{}", c.type_oid),
                ValueType::builtin(c.type_oid).unwrap_or(ValueType {
                    scalar: ScalarKind::Other,
                    array: false,
                    delimiter: b',',
                }),
            ),
        };
        columns.push(Column {
            name: c.name.clone(),
            type_oid: c.type_oid,
            type_name,
            type_modifier: c.type_modifier,
            nullable: !known.is_some_and(|k| k.not_null),
            is_key: if has_pk {
                known.is_some_and(|k| k.primary_key)
            } else {
                c.is_key
            },
        });
        parsers.push(value_type);
    }
    let namespace = if rel.namespace.is_empty() {
        "pg_catalog".to_owned()
    } else {
        rel.namespace.clone()
    };
    Ok(RelationInfo {
        schema: Arc::new(TableSchema {
            database: database.to_owned(),
            oid: rel.oid,
            name: TableName::new(namespace, rel.name.clone()),
            columns,
            replica_identity: ReplicaIdentity::from_code(rel.replica_identity)
                .unwrap_or(ReplicaIdentity::Default),
        }),
        types: parsers,
        row_filter: None,
        wire: None,
    })
}
