//! Keeping an exported snapshot alive, and electing the coordinator.

use cdc_core::Lsn;
use pgwire_replication::{ReplicationClient, ReplicationConfig};
use sqlx::{Connection, PgConnection, Row};

use crate::error::PgError;
use crate::ident::{quote_ident, quote_literal};
use crate::snapshot::{heap_files, rewrite_check_context, rewrite_check_sql, HeapFiles};

/// Something that keeps an exported snapshot valid while it lives.
pub(crate) enum Export {
    /// The replication session that created the slot; it also starts the
    /// stream once the snapshot is done.
    Slot(ReplicationClient),
    /// An ordinary connection inside the `REPEATABLE READ` transaction that
    /// exported the snapshot.
    Transaction(PgConnection),
}

/// A freshly created slot with its exported snapshot.
pub(crate) struct SlotExport {
    pub client: ReplicationClient,
    pub consistent_point: Lsn,
    pub snapshot_name: String,
}

/// `CREATE_REPLICATION_SLOT … LOGICAL pgoutput` exporting its snapshot, on
/// a gated replication session that is kept idle afterwards; `failover`:
/// a failover slot (PostgreSQL 17+, checked before).
pub(crate) async fn create_slot_with_export(
    cfg: ReplicationConfig,
    slot: &str,
    server_version: i32,
    failover: bool,
) -> Result<SlotExport, PgError> {
    let mut client = ReplicationClient::connect_gated(cfg)
        .await
        .map_err(PgError::from)?;
    let sql = if server_version >= 150_000 {
        format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export'{})",
            quote_ident(slot),
            if failover { ", FAILOVER" } else { "" }
        )
    } else {
        format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
            quote_ident(slot)
        )
    };
    let rows = client.simple_query(&sql).await.map_err(PgError::from)?;
    let row = rows
        .into_iter()
        .next()
        .ok_or_else(|| PgError::Protocol("CREATE_REPLICATION_SLOT returned no row".into()))?;
    let text = |i: usize, what: &str| -> Result<String, PgError> {
        row.get(i)
            .and_then(|c| c.as_ref())
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .ok_or_else(|| PgError::Protocol(format!("CREATE_REPLICATION_SLOT: no {what}")))
    };
    let consistent_point = text(1, "consistent_point")?
        .parse::<Lsn>()
        .map_err(|e| PgError::Protocol(format!("CREATE_REPLICATION_SLOT: {e}")))?;
    let snapshot_name = text(2, "snapshot_name")?;
    Ok(SlotExport {
        client,
        consistent_point,
        snapshot_name,
    })
}

/// Exports a snapshot from an ordinary connection: `BEGIN ISOLATION LEVEL
/// REPEATABLE READ; SELECT pg_export_snapshot()`. The snapshot lives as
/// long as the returned connection stays in that transaction.
pub(crate) async fn export_from_transaction(
    options: &sqlx::postgres::PgConnectOptions,
) -> Result<(PgConnection, String), PgError> {
    let mut conn = PgConnection::connect_with(&crate::conn::for_role(options, "export"))
        .await
        .map_err(|e| PgError::sql("connecting to export a snapshot", e))?;
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut conn)
        .await
        .map_err(|e| PgError::sql("exporting a snapshot", e))?;
    let row = sqlx::query("SELECT pg_export_snapshot() AS name")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| PgError::sql("exporting a snapshot", e))?;
    let name: String = row
        .try_get("name")
        .map_err(|e| PgError::sql("exporting a snapshot", e))?;
    Ok((conn, name))
}

/// Starts a `REPEATABLE READ, READ ONLY` transaction on `conn` that sees
/// exactly the exported snapshot `name`.
pub(crate) async fn import_snapshot(conn: &mut PgConnection, name: &str) -> Result<(), PgError> {
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *conn)
        .await
        .map_err(|e| PgError::sql("starting a snapshot transaction", e))?;
    let set = format!("SET TRANSACTION SNAPSHOT {}", quote_literal(name));
    if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(set))
        .execute(&mut *conn)
        .await
    {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        return Err(snapshot_gone(name, e));
    }
    Ok(())
}

/// [`import_snapshot`] and then, on the new transaction, the rewrite check
/// of `table` ([`crate::snapshot::rewritten_since_snapshot`]: `ACCESS
/// SHARE` on it and whether it was rewritten since the snapshot), all in
/// one message: one round trip where the two take three. The statements
/// run in the same order and transaction as when sent one by one. On an
/// error no transaction is left open: failing to import is
/// [`PgError::SnapshotGone`] as for [`import_snapshot`]; a failed check is
/// the check's error.
pub(crate) async fn import_snapshot_and_check(
    conn: &mut PgConnection,
    name: &str,
    table: &cdc_core::TableSchema,
) -> Result<HeapFiles, PgError> {
    use futures::StreamExt;

    let sql = import_and_check_sql(name, table);
    // Statements completed: BEGIN, SET TRANSACTION SNAPSHOT, LOCK, the check.
    let mut completed = 0usize;
    let mut row = None;
    let mut failed = None;
    {
        let mut results = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).fetch_many(&mut *conn);
        while let Some(result) = results.next().await {
            match result {
                Ok(sqlx::Either::Left(_)) => completed += 1,
                Ok(sqlx::Either::Right(r)) => {
                    row.get_or_insert(r);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
    }
    let Some(e) = failed else {
        return heap_files(row.as_ref(), table);
    };
    if completed > 0 {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
    }
    Err(match completed {
        0 => PgError::sql("starting a snapshot transaction", e),
        1 => snapshot_gone(name, e),
        _ => PgError::sql(rewrite_check_context(table), e),
    })
}

/// [`PgError::SnapshotGone`] for a `SET TRANSACTION SNAPSHOT` of `name`
/// that failed with `cause`.
pub(crate) fn snapshot_gone(name: &str, cause: impl std::fmt::Display) -> PgError {
    PgError::SnapshotGone(format!(
        "cannot import snapshot {name}: {cause} (its exporter has probably ended)"
    ))
}

/// The statements of [`import_snapshot_and_check`], in one message: begin,
/// import the snapshot `name`, lock `table` and check it for a rewrite.
pub(crate) fn import_and_check_sql(name: &str, table: &cdc_core::TableSchema) -> String {
    format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;
         SET TRANSACTION SNAPSHOT {};
         {}",
        quote_literal(name),
        rewrite_check_sql(table)
    )
}

/// Tries to become the snapshot coordinator for `slot`: a session-level
/// advisory lock on a hash of the slot name, held as long as `conn` lives.
pub(crate) async fn try_coordinator_lock(
    conn: &mut PgConnection,
    slot: &str,
) -> Result<bool, PgError> {
    let row = sqlx::query("SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS locked")
        .bind(format!("cdc-snapshot:{slot}"))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| PgError::sql("electing the snapshot coordinator", e))?;
    row.try_get("locked")
        .map_err(|e| PgError::sql("electing the snapshot coordinator", e))
}
