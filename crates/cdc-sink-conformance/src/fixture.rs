//! Hand-made input for sinks: a three-column table, change events at
//! chosen positions, batches, and names no other test run uses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cdc_core::{
    Batch, ChangeEvent, Column, Event, Lsn, Op, ReplicaIdentity, Row, SourceInfo, TableName,
    TableSchema, Value,
};

/// A name no other call in any process returns in practice:
/// `<prefix><pid>_<counter>_<nanoseconds>` (letters, digits and `_`).
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A column named `name` of the type `type_name` (`type_oid`): part of
/// the key (`key`), or else nullable.
pub fn column(name: &str, type_oid: u32, type_name: &str, key: bool) -> Column {
    Column {
        name: name.into(),
        type_oid,
        type_name: type_name.into(),
        type_modifier: -1,
        nullable: !key,
        is_key: key,
    }
}

/// The table `schema.table` of `columns` (in database `db`).
pub fn table_of(
    schema: &str,
    table: &str,
    columns: Vec<Column>,
    replica_identity: ReplicaIdentity,
) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        database: "db".into(),
        oid: 1,
        name: TableName::new(schema, table),
        columns,
        replica_identity,
    })
}

/// `schema.table (id int4 PRIMARY KEY, v int4, body text)`.
pub fn table(schema: &str, table: &str) -> Arc<TableSchema> {
    let columns = vec![
        column("id", 23, "int4", true),
        column("v", 23, "int4", false),
        column("body", 25, "text", false),
    ];
    table_of(schema, table, columns, ReplicaIdentity::Default)
}

/// A change of `row` (`id, v, body` of [`table`]) committed at `lsn`, the
/// `ordinal`-th of its transaction: `before` for a delete, `after` for
/// the others, nothing for a truncate.
pub fn change(
    table: &Arc<TableSchema>,
    op: Op,
    lsn: u64,
    ordinal: u64,
    row: Option<(i32, Value, Value)>,
) -> Event {
    let row = row.map(|(id, v, body)| Row::new(vec![Value::Int4(id), v, body]));
    let (before, after) = match op {
        Op::Delete => (row, None),
        Op::Truncate => (None, None),
        _ => (None, row),
    };
    Event::Change(ChangeEvent {
        op,
        table: table.clone(),
        before,
        after,
        source: SourceInfo {
            commit_lsn: Lsn(lsn),
            lsn: Lsn(lsn),
            ordinal,
            ..SourceInfo::default()
        },
    })
}

/// A text value.
pub fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// A batch of `events` that acknowledges up to `checkpoint`.
pub fn batch(events: Vec<Event>, checkpoint: Option<u64>) -> Batch {
    Batch {
        events,
        checkpoint: checkpoint.map(Lsn),
        seq: 0,
        fence: None,
    }
}
