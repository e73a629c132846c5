//! Describing a table for the snapshot from the catalog alone, with the
//! same result the stream gets from a pgoutput Relation message
//! ([`crate::catalog::describe_relation`]).

use std::sync::Arc;

use cdc_core::{Column, ReplicaIdentity, TableName, TableSchema};
use sqlx::{PgConnection, Row};

use crate::catalog::RelationInfo;
use crate::error::PgError;
use crate::value::{load_value_types, ScalarKind, ValueType};

/// The table's OID, kind and replica identity.
const TABLE_QUERY: &str = "\
SELECT c.oid::pg_catalog.int8 AS oid,
       pg_catalog.ascii(c.relkind::pg_catalog.text) AS relkind,
       pg_catalog.ascii(c.relreplident::pg_catalog.text) AS replident
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2";

/// The columns pgoutput may send, in table order: not dropped, not
/// virtual generated columns (never published). Stored generated columns
/// (`generated`) are published only by PostgreSQL 18 and only when the
/// publication says so ([`super::describe_published_table`] decides).
/// `pk`: part of the primary key; `ri`: part of the index `REPLICA
/// IDENTITY USING INDEX` names.
const COLUMNS_QUERY: &str = "\
SELECT a.attname::pg_catalog.text AS name,
       a.atttypid::pg_catalog.int8 AS type_oid,
       a.atttypmod AS type_modifier,
       a.attnotnull AS not_null,
       a.attgenerated <> '' AS generated,
       EXISTS (SELECT 1 FROM pg_catalog.pg_index i
               WHERE i.indrelid = a.attrelid AND i.indisprimary
                 AND a.attnum = ANY (i.indkey)) AS pk,
       EXISTS (SELECT 1 FROM pg_catalog.pg_index i
               WHERE i.indrelid = a.attrelid AND i.indisreplident
                 AND a.attnum = ANY (i.indkey)) AS ri
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> 'v'
ORDER BY a.attnum";

struct CatalogColumn {
    name: String,
    type_oid: u32,
    type_modifier: i32,
    not_null: bool,
    generated: bool,
    pk: bool,
    ri: bool,
}

/// Describes `table` from the catalog: the [`RelationInfo`] whose schema
/// equals what [`crate::catalog::describe_relation`] builds from the
/// table's pgoutput Relation message, so snapshot rows and streamed rows
/// share one column set and one rendering.
///
/// * columns in `attnum` order, without dropped and generated columns
///   (pgoutput sends neither);
/// * `type_name` and parser from [`load_value_types`] (`oid:<n>` and the
///   built-in parser, or text, when the type is not found);
/// * `is_key`: the primary key columns; without a primary key, what
///   pgoutput flags: every column under `REPLICA IDENTITY FULL`, the
///   index's columns under `USING INDEX`, none otherwise;
/// * replica identity from `pg_class.relreplident`.
///
/// Publication column lists and row filters (PostgreSQL 15) are not
/// looked at here: [`super::describe_published_table`] applies them.
///
/// Only reads the catalog, so it can run inside the snapshot transaction.
pub async fn describe_table(
    conn: &mut PgConnection,
    database: &str,
    table: &TableName,
) -> Result<RelationInfo, PgError> {
    let (info, generated) = describe_table_with_generated(conn, database, table).await?;
    Ok(without_columns(info, &generated))
}

/// `info` without the columns named in `names`.
pub(super) fn without_columns(info: RelationInfo, names: &[String]) -> RelationInfo {
    if names.is_empty() {
        return info;
    }
    let RelationInfo {
        schema,
        types,
        row_filter,
        ..
    } = info;
    let (columns, types): (Vec<_>, Vec<_>) = schema
        .columns
        .iter()
        .zip(types)
        .filter(|(c, _)| !names.contains(&c.name))
        .map(|(c, t)| (c.clone(), t))
        .unzip();
    RelationInfo {
        schema: Arc::new(TableSchema {
            columns,
            ..(*schema).clone()
        }),
        types,
        row_filter,
        wire: None,
    }
}

/// [`describe_table`] with the table's stored generated columns too, and
/// their names: pgoutput sends them only when the publication publishes
/// them (PostgreSQL 18's `publish_generated_columns = stored`, or a column
/// list naming them).
pub(super) async fn describe_table_with_generated(
    conn: &mut PgConnection,
    database: &str,
    table: &TableName,
) -> Result<(RelationInfo, Vec<String>), PgError> {
    let ctx = || format!("describing table {table} for the snapshot");
    let found = sqlx::query(TABLE_QUERY)
        .bind(&table.schema)
        .bind(&table.name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| PgError::sql(ctx(), e))?;
    let Some(found) = found else {
        return Err(PgError::Setup(format!(
            "table {table} does not exist (names are case-sensitive)"
        )));
    };
    let oid: i64 = found.try_get("oid").map_err(|e| PgError::sql(ctx(), e))?;
    let relkind: i32 = found
        .try_get("relkind")
        .map_err(|e| PgError::sql(ctx(), e))?;
    let replident: i32 = found
        .try_get("replident")
        .map_err(|e| PgError::sql(ctx(), e))?;
    if !matches!(u8::try_from(relkind), Ok(b'r' | b'p')) {
        return Err(PgError::Setup(format!(
            "{table} is not a table (pg_class.relkind {:?}): only tables can be snapshotted",
            char::from(u8::try_from(relkind).unwrap_or(b'?'))
        )));
    }
    let oid = u32::try_from(oid)
        .map_err(|_| PgError::Protocol(format!("{table}: table OID {oid} out of range")))?;
    let replica_identity = u8::try_from(replident)
        .ok()
        .and_then(ReplicaIdentity::from_code)
        .unwrap_or(ReplicaIdentity::Default);

    let rows = sqlx::query(COLUMNS_QUERY)
        .bind(i64::from(oid))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| PgError::sql(ctx(), e))?;
    let mut catalog = Vec::with_capacity(rows.len());
    for row in rows {
        let get_err = |e| PgError::sql(ctx(), e);
        let type_oid: i64 = row.try_get("type_oid").map_err(get_err)?;
        catalog.push(CatalogColumn {
            name: row.try_get("name").map_err(get_err)?,
            type_oid: u32::try_from(type_oid).map_err(|_| {
                PgError::Protocol(format!("{table}: type OID {type_oid} out of range"))
            })?,
            type_modifier: row.try_get("type_modifier").map_err(get_err)?,
            not_null: row.try_get("not_null").map_err(get_err)?,
            generated: row.try_get("generated").map_err(get_err)?,
            pk: row.try_get("pk").map_err(get_err)?,
            ri: row.try_get("ri").map_err(get_err)?,
        });
    }

    let mut oids: Vec<u32> = catalog.iter().map(|c| c.type_oid).collect();
    oids.sort_unstable();
    oids.dedup();
    let types = load_value_types(conn, &oids)
        .await
        .map_err(|e| PgError::sql(ctx(), e))?;

    let has_pk = catalog.iter().any(|c| c.pk);
    let generated: Vec<String> = catalog
        .iter()
        .filter(|c| c.generated)
        .map(|c| c.name.clone())
        .collect();
    let mut columns = Vec::with_capacity(catalog.len());
    let mut parsers = Vec::with_capacity(catalog.len());
    for c in catalog {
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
        let is_key = if has_pk {
            c.pk
        } else {
            match replica_identity {
                ReplicaIdentity::Full => true,
                ReplicaIdentity::Index => c.ri,
                ReplicaIdentity::Default | ReplicaIdentity::Nothing => false,
            }
        };
        columns.push(Column {
            name: c.name,
            type_oid: c.type_oid,
            type_name,
            type_modifier: c.type_modifier,
            nullable: !c.not_null,
            is_key,
        });
        parsers.push(value_type);
    }
    let info = RelationInfo {
        schema: Arc::new(TableSchema {
            database: database.to_owned(),
            oid,
            name: table.clone(),
            columns,
            replica_identity,
        }),
        types: parsers,
        row_filter: None,
        wire: None,
    };
    Ok((info, generated))
}
