//! Databases on the deliberately misconfigured clusters that
//! `scripts/test.sh` starts besides the main one.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::db::url_with_database;
use crate::util::{quote_ident, quote_literal, unique_suffix};

/// The URL in environment variable `var` (e.g. `CDC_TEST_PG_NOLOGICAL_URL`:
/// `wal_level = replica`; `CDC_TEST_PG_FEWSLOTS_URL`:
/// `max_replication_slots = 2`); panics when it is unset.
pub fn extra_cluster_url(var: &str) -> String {
    match std::env::var(var) {
        Ok(u) if !u.trim().is_empty() => u.trim().to_owned(),
        _ => panic!(
            "{var} is not set: run ./scripts/test.sh (it starts that cluster), or start one \
             with scripts/pg.sh and export {var}"
        ),
    }
}

/// Key of the advisory lock [`SlotsLock`] takes: the bytes `cdcs`.
const SLOTS_LOCK_KEY: i64 = 0x6364_6373;

/// A session advisory lock on a cluster, held until [`SlotsLock::release`]
/// (or until it is dropped: the session ends). Tests that fill every
/// replication slot of a cluster take it first, so that they neither take
/// each other's slots nor see them freed half-way.
pub struct SlotsLock {
    conn: PgConnection,
}

impl SlotsLock {
    /// Waits for the lock on the cluster of `admin_url`.
    pub async fn acquire(admin_url: &str) -> SlotsLock {
        let mut conn = PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {admin_url}: {e}"));
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(SLOTS_LOCK_KEY)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("pg_advisory_lock: {e}"));
        SlotsLock { conn }
    }

    /// Releases the lock.
    pub async fn release(self) {
        let _ = self.conn.close().await;
    }
}

/// A database on a cluster other than `CDC_TEST_PG_URL`'s (which
/// [`crate::TestDb`] serves), dropped with its slots by [`ExtraDb::drop_db`].
pub struct ExtraDb {
    admin_url: String,
    name: String,
    /// A superuser URL of the database.
    pub url: String,
}

impl ExtraDb {
    /// Creates database `<prefix>_<unique suffix>` on the cluster of `admin_url`.
    pub async fn create(admin_url: &str, prefix: &str) -> ExtraDb {
        let name = format!("{prefix}_{}", unique_suffix());
        let mut admin = PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {admin_url}: {e}"));
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE DATABASE {}",
            quote_ident(&name)
        )))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = admin.close().await;
        ExtraDb {
            admin_url: admin_url.to_owned(),
            url: url_with_database(admin_url, &name),
            name,
        }
    }

    /// Runs an SQL script in the database; panics when it fails.
    pub async fn exec(&self, sql: &str) {
        let mut conn = PgConnection::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to database {}: {e}", self.name));
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.close().await;
    }

    /// Drops the database's slots, then the database.
    pub async fn drop_db(self) {
        let mut admin = PgConnection::connect(&self.admin_url).await.unwrap();
        let mut last_err = String::new();
        for _ in 0..100 {
            let slots = sqlx::raw_sql(AssertSqlSafe(format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE database = {}",
                quote_literal(&self.name)
            )))
            .execute(&mut admin)
            .await;
            let dropped = match slots {
                Ok(_) => sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&self.name)
                )))
                .execute(&mut admin)
                .await
                .map(|_| ()),
                Err(e) => Err(e),
            };
            match dropped {
                Ok(()) => {
                    let _ = admin.close().await;
                    return;
                }
                Err(e) => last_err = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("could not drop database {}: {last_err}", self.name);
    }
}
