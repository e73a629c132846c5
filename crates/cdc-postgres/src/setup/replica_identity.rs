//! `ALTER TABLE … REPLICA IDENTITY …` where the configuration asks for it.

use cdc_core::ReplicaIdentity;
use sqlx::PgConnection;

use super::preflight::TableInfo;
use crate::error::PgError;
use crate::ident::quote_table;

/// Sets the replica identity of each `(table, wanted)` pair whose current
/// identity differs. `USING INDEX` cannot be requested here.
pub async fn ensure_replica_identity(
    conn: &mut PgConnection,
    tables: &[TableInfo],
    wanted: &[(cdc_core::TableName, ReplicaIdentity)],
) -> Result<(), PgError> {
    for (name, want) in wanted {
        let Some(table) = tables.iter().find(|t| &t.name == name) else {
            continue;
        };
        if table.replica_identity == *want {
            continue;
        }
        let keyword = match want {
            ReplicaIdentity::Default => "DEFAULT",
            ReplicaIdentity::Full => "FULL",
            ReplicaIdentity::Nothing => "NOTHING",
            ReplicaIdentity::Index => continue,
        };
        let sql = format!(
            "ALTER TABLE {} REPLICA IDENTITY {keyword}",
            quote_table(name)
        );
        tracing::info!(table = %name, identity = keyword, "setting replica identity");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut *conn)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42501") => {
                    PgError::Setup(format!(
                        "cannot set the replica identity of `{name}`: the role must own the table; \
                         ask its owner to run {sql};"
                    ))
                }
                _ => PgError::sql(format!("setting replica identity of {name}"), e),
            })?;
    }
    Ok(())
}
