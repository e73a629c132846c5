//! Checks that fail early with a message saying what to change.

use cdc_core::{ReplicaIdentity, TableName};
use sqlx::{PgConnection, Row};

use crate::error::PgError;
use crate::ident::quote_ident;

/// What the preflight learned about the server.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `current_database()`.
    pub database: String,
    /// `current_user`.
    pub user: String,
    /// `server_version_num`, e.g. 150018.
    pub version_num: i32,
    /// `max_replication_slots`.
    pub max_replication_slots: i32,
    /// Replication slots that exist now (all databases).
    pub slots_in_use: i64,
}

/// One configured table as found in the catalog.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Its name.
    pub name: TableName,
    /// Its current replica identity.
    pub replica_identity: ReplicaIdentity,
}

/// Checks `wal_level`, the role's REPLICATION attribute, the server
/// version, and that every table exists and is a plain or partitioned table.
pub async fn preflight(
    conn: &mut PgConnection,
    tables: &[TableName],
    needs_replication: bool,
) -> Result<(ServerInfo, Vec<TableInfo>), PgError> {
    let row = sqlx::query(
        "SELECT current_setting('wal_level') AS wal_level,
                current_setting('max_replication_slots')::int4 AS max_slots,
                current_setting('max_wal_senders')::int4 AS max_senders,
                (SELECT count(*) FROM pg_replication_slots) AS slots,
                r.rolreplication, r.rolsuper, current_user::text AS usr,
                -- Amazon RDS / Aurora grant replication through this role.
                coalesce((SELECT pg_has_role(current_user, g.oid, 'member')
                          FROM pg_roles g WHERE g.rolname = 'rds_replication'), false)
                    AS rds_replication,
                current_database()::text AS db,
                current_setting('server_version_num')::int4 AS version
         FROM pg_roles r WHERE r.rolname = current_user",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| PgError::sql("reading server settings", e))?;
    let get_err = |e| PgError::sql("reading server settings", e);
    let info = ServerInfo {
        database: row.try_get("db").map_err(get_err)?,
        user: row.try_get("usr").map_err(get_err)?,
        version_num: row.try_get("version").map_err(get_err)?,
        max_replication_slots: row.try_get("max_slots").map_err(get_err)?,
        slots_in_use: row.try_get("slots").map_err(get_err)?,
    };
    let wal_level: String = row.try_get("wal_level").map_err(get_err)?;
    let max_senders: i32 = row.try_get("max_senders").map_err(get_err)?;
    let can_replicate: bool = row.try_get::<bool, _>("rolreplication").map_err(get_err)?
        || row.try_get::<bool, _>("rolsuper").map_err(get_err)?
        || row.try_get::<bool, _>("rds_replication").map_err(get_err)?;

    if info.version_num < super::check::MIN_SERVER_VERSION_NUM {
        return Err(PgError::Setup(format!(
            "PostgreSQL {} is too old: the engine needs PostgreSQL 14 or newer, because {}",
            info.version_num,
            super::check::MIN_VERSION_REASON
        )));
    }
    if needs_replication {
        if wal_level != "logical" {
            return Err(PgError::Setup(format!(
                "wal_level is `{wal_level}` but change data capture needs `logical`: run \
                 ALTER SYSTEM SET wal_level = logical; (or set it in postgresql.conf) and restart PostgreSQL"
            )));
        }
        if max_senders < 1 {
            return Err(PgError::Setup(
                "max_wal_senders is 0: set max_wal_senders to at least 1 (10 is usual) and restart PostgreSQL"
                    .into(),
            ));
        }
        if !can_replicate {
            return Err(PgError::Setup(format!(
                "role `{user}` lacks the REPLICATION attribute: as a superuser run ALTER ROLE {q} WITH REPLICATION; \
                 (on Amazon RDS/Aurora: GRANT rds_replication TO {q};)",
                user = info.user,
                q = quote_ident(&info.user)
            )));
        }
    }

    let mut found = Vec::with_capacity(tables.len());
    for table in tables {
        let row = sqlx::query(
            "SELECT c.relkind::text AS kind, c.relreplident::text AS ident
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2",
        )
        .bind(&table.schema)
        .bind(&table.name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| PgError::sql(format!("looking up table {table}"), e))?;
        let Some(row) = row else {
            return Err(PgError::Setup(format!(
                "table `{table}` does not exist in database `{}`: check source.tables \
                 (quoted names are case-sensitive, unquoted ones are lower-cased)",
                info.database
            )));
        };
        let get_err = |e| PgError::sql(format!("looking up table {table}"), e);
        let kind: String = row.try_get("kind").map_err(get_err)?;
        if kind != "r" && kind != "p" {
            return Err(PgError::Setup(format!(
                "`{table}` is not a table (relkind `{kind}`): only ordinary and partitioned tables can be captured"
            )));
        }
        let ident: String = row.try_get("ident").map_err(get_err)?;
        found.push(TableInfo {
            name: table.clone(),
            replica_identity: ident
                .bytes()
                .next()
                .and_then(ReplicaIdentity::from_code)
                .unwrap_or(ReplicaIdentity::Default),
        });
    }
    Ok((info, found))
}

/// Checks that the role may `SELECT` from every table the snapshot reads.
pub async fn check_select(
    conn: &mut PgConnection,
    server: &ServerInfo,
    tables: &[TableName],
) -> Result<(), PgError> {
    for table in tables {
        let qualified = crate::ident::quote_table(table);
        let row = sqlx::query("SELECT has_table_privilege($1::regclass, 'SELECT') AS ok")
            .bind(&qualified)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => {
                    PgError::Setup(format!(
                        "table `{table}` does not exist in database `{}`: check snapshot.tables",
                        server.database
                    ))
                }
                _ => PgError::sql(format!("checking SELECT on {table}"), e),
            })?;
        let ok: bool = row
            .try_get("ok")
            .map_err(|e| PgError::sql(format!("checking SELECT on {table}"), e))?;
        if !ok {
            return Err(PgError::Setup(format!(
                "role `{}` may not read table `{table}`, which the snapshot copies: run GRANT SELECT ON {qualified} TO {};",
                server.user,
                quote_ident(&server.user)
            )));
        }
    }
    Ok(())
}
