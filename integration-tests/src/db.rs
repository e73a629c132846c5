//! A throwaway database per test.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cdc_core::Lsn;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Row};

use crate::util::{quote_ident, unique_suffix};

/// The superuser URL of the test cluster, from `CDC_TEST_PG_URL`.
///
/// Panics when it is unset: the tests need the servers that
/// `./scripts/test.sh` starts.
pub fn pg_url() -> String {
    match std::env::var("CDC_TEST_PG_URL") {
        Ok(u) if !u.trim().is_empty() => u.trim().to_owned(),
        _ => panic!(
            "CDC_TEST_PG_URL is not set: run ./scripts/test.sh \
             (or start a cluster with scripts/pg.sh and export CDC_TEST_PG_URL)"
        ),
    }
}

/// `url` (`postgres://user:password@host:port/...`) with `addr` for its
/// host and port (a proxy in front of the server, say).
pub fn url_with_address(url: &str, addr: std::net::SocketAddr) -> String {
    let at = url
        .find('@')
        .map_or_else(|| url.find("://").map_or(0, |i| i + 3), |i| i + 1);
    let end = url[at..].find('/').map_or(url.len(), |i| at + i);
    format!("{}{addr}{}", &url[..at], &url[end..])
}

/// `url` with its database (the path) replaced by `database`; the query
/// string, if any, is kept.
pub fn url_with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let after = &rest[authority_end..];
    let query = after.find('?').map(|i| &after[i..]).unwrap_or("");
    format!("{scheme}{authority}/{database}{query}")
}

/// `true` when `CDC_TEST_KEEP_DB` asks to keep the test databases.
fn keep_db_requested() -> bool {
    matches!(std::env::var("CDC_TEST_KEEP_DB").as_deref(), Ok(v) if !v.is_empty() && v != "0")
}

/// A database of its own for one test, created on the cluster of
/// [`pg_url`] (or of another URL, [`TestDb::create_on`]) and dropped (with its replication slots) by
/// [`TestDb::cleanup`] — or, if the test never gets there, on drop.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
    /// A superuser URL of the cluster, to drop the database again.
    admin_url: String,
    pool: Option<PgPool>,
    cleaned: bool,
}

impl TestDb {
    /// Creates a database named `<prefix>_<pid>_<counter>_<random>`
    /// (`prefix` lower-cased, reduced to `[a-z0-9_]`, at most 30 bytes) and
    /// connects a small pool to it.
    pub async fn create(prefix: &str) -> TestDb {
        TestDb::create_on(&pg_url(), prefix).await
    }

    /// [`TestDb::create`] on the cluster of superuser URL `base` (e.g. a
    /// [`crate::Cluster`]'s) instead of the shared one.
    pub async fn create_on(base: &str, prefix: &str) -> TestDb {
        let mut clean: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(30)
            .collect();
        if clean.is_empty() || clean.starts_with(|c: char| c.is_ascii_digit()) {
            clean.insert_str(0, "t_");
        }
        let name = format!("{clean}_{}", unique_suffix());
        assert!(name.len() <= 63, "database name too long: {name}");

        let mut admin = admin_connect(base).await;
        let create = format!("CREATE DATABASE {}", quote_ident(&name));
        let mut attempt = 0;
        loop {
            attempt += 1;
            match sqlx::raw_sql(AssertSqlSafe(create.clone()))
                .execute(&mut admin)
                .await
            {
                Ok(_) => break,
                // Concurrent CREATE DATABASEs can collide on the template.
                Err(e)
                    if attempt < 10 && e.to_string().contains("being accessed by other users") =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("{create}: {e}"),
            }
        }
        let _ = admin.close().await;

        let url = url_with_database(base, &name);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
        TestDb {
            name,
            url,
            admin_url: base.to_owned(),
            pool: Some(pool),
            cleaned: false,
        }
    }

    /// The database's name (unquoted).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A superuser URL of the database, for pipeline configs.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A pool of connections to the database.
    pub fn pool(&self) -> &PgPool {
        self.pool.as_ref().expect("TestDb used after cleanup")
    }

    /// Runs an SQL script (any number of statements, simple query protocol);
    /// panics with the script and the error when it fails.
    ///
    /// The server runs a multi-statement script as one implicit transaction
    /// unless it contains its own `BEGIN`/`COMMIT`: call `exec` once per
    /// transaction where that matters (e.g. before creating a slot).
    pub async fn exec(&self, sql: &str) {
        if let Err(e) = self.try_exec(sql).await {
            panic!(
                "SQL failed in database {}: {e}\n--- script:\n{sql}",
                self.name
            );
        }
    }

    /// Runs an SQL script like [`TestDb::exec`], returning the error.
    pub async fn try_exec(&self, sql: &str) -> Result<(), sqlx::Error> {
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(self.pool())
            .await
            .map(|_| ())
    }

    /// The first column of the first row of `sql`, which must be of type
    /// `text` (cast it: `SELECT count(*)::text FROM t`); `None` for no row
    /// or NULL.
    pub async fn query_text(&self, sql: &str) -> Option<String> {
        query_text_on(self.pool(), sql).await
    }

    /// The rows of the query `sql`, each as its `to_jsonb` object, in the
    /// query's order.
    pub async fn query_json(&self, sql: &str) -> Vec<serde_json::Value> {
        let wrapped = format!("SELECT to_jsonb(q)::text FROM ({sql}) AS q");
        let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(wrapped))
            .fetch_all(self.pool())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.iter()
            .map(|t| serde_json::from_str(t).expect("jsonb text is JSON"))
            .collect()
    }

    /// Every row of a table as its `to_jsonb` object, keyed by the JSON text
    /// of column `key_column` (`1`, `"abc"`, ...).
    ///
    /// `table_sql_name` is SQL text, quoted as needed: `public.customers`,
    /// `"MySchema"."T"`. `key_column` is the plain column name.
    pub async fn to_jsonb_rows(
        &self,
        table_sql_name: &str,
        key_column: &str,
    ) -> BTreeMap<String, serde_json::Value> {
        to_jsonb_rows_on(self.pool(), table_sql_name, key_column).await
    }

    /// Every row of a table as its `to_jsonb` object, keyed by
    /// [`crate::replay::row_key`] of `key_columns` (the JSON text of the
    /// one column's value, or a JSON array of the values of several), as
    /// [`crate::replay::apply_keyed`] keys the rows it rebuilds.
    pub async fn to_jsonb_rows_keyed(
        &self,
        table_sql_name: &str,
        key_columns: &[&str],
    ) -> BTreeMap<String, serde_json::Value> {
        let sql = format!("SELECT to_jsonb(t)::text FROM {table_sql_name} AS t");
        let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await
            .unwrap_or_else(|e| panic!("reading {table_sql_name}: {e}"));
        let mut out = BTreeMap::new();
        for text in rows {
            let v: serde_json::Value = serde_json::from_str(&text).expect("jsonb text is JSON");
            let k = crate::replay::row_key(&v, key_columns).unwrap_or_else(|| {
                panic!("{table_sql_name}: key {key_columns:?} missing (or NULL) in row {v}")
            });
            if out.insert(k.clone(), v).is_some() {
                panic!("{table_sql_name}: duplicate key {k} in {key_columns:?}");
            }
        }
        out
    }

    /// The server's `server_version_num` (150004 for 15.4).
    pub async fn server_version_num(&self) -> i32 {
        self.query_text("SELECT current_setting('server_version_num')")
            .await
            .and_then(|v| v.parse().ok())
            .expect("server_version_num")
    }

    /// `confirmed_flush_lsn` of a replication slot; `None` when the slot does
    /// not exist or has no confirmed position.
    pub async fn slot_confirmed_flush_lsn(&self, slot: &str) -> Option<Lsn> {
        let v: Option<Option<String>> = sqlx::query_scalar(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(slot)
        .fetch_optional(self.pool())
        .await
        .unwrap_or_else(|e| panic!("reading slot {slot}: {e}"));
        v.flatten().map(|t| {
            t.parse()
                .unwrap_or_else(|e| panic!("slot {slot}: bad LSN {t}: {e}"))
        })
    }

    /// Whether a replication slot of this name exists (in any database).
    pub async fn slot_exists(&self, slot: &str) -> bool {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
        )
        .bind(slot)
        .fetch_one(self.pool())
        .await
        .unwrap_or_else(|e| panic!("reading slot {slot}: {e}"))
    }

    /// Whether a replication slot of this name exists and a walsender
    /// streams from it. A backend still creating the slot (which holds it
    /// until its consistent point) does not count: changes committed then
    /// are not in the slot's stream, so a test must not start writing yet.
    pub async fn slot_active(&self, slot: &str) -> bool {
        sqlx::query_scalar::<_, bool>(
            "SELECT coalesce((SELECT s.active AND EXISTS \
                 (SELECT 1 FROM pg_stat_replication r WHERE r.pid = s.active_pid) \
             FROM pg_replication_slots s WHERE s.slot_name = $1), false)",
        )
        .bind(slot)
        .fetch_one(self.pool())
        .await
        .unwrap_or_else(|e| panic!("reading slot {slot}: {e}"))
    }

    /// The names of the replication slots of this database.
    pub async fn slot_names(&self) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT slot_name::text FROM pg_replication_slots WHERE database = $1 ORDER BY 1",
        )
        .bind(&self.name)
        .fetch_all(self.pool())
        .await
        .unwrap_or_else(|e| panic!("listing slots: {e}"))
    }

    /// The server's current WAL insert position.
    pub async fn current_wal_lsn(&self) -> Lsn {
        let t: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(self.pool())
            .await
            .unwrap_or_else(|e| panic!("pg_current_wal_lsn: {e}"));
        t.parse().unwrap_or_else(|e| panic!("bad LSN {t}: {e}"))
    }

    /// Drops the database: closes the pool, terminates every connection to
    /// it, drops its replication slots (waiting for active ones to be
    /// released) and drops it. Panics if that fails.
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        if let Some(pool) = self.pool.take() {
            pool.close().await;
        }
        if keep_db_requested() {
            eprintln!("CDC_TEST_KEEP_DB: keeping database {}", self.name);
            return;
        }
        if let Err(e) = drop_database(&self.admin_url, &self.name).await {
            panic!("dropping database {}: {e}", self.name);
        }
    }

    /// Same as [`TestDb::cleanup`].
    pub async fn drop_db(self) {
        self.cleanup().await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.cleaned || keep_db_requested() {
            return;
        }
        // Async work cannot run in drop: do it on a thread with a runtime of
        // its own, and wait for it. The pool is simply dropped: its
        // connections are terminated on the server side.
        drop(self.pool.take());
        let name = self.name.clone();
        let url = self.admin_url.clone();
        let res = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| anyhow::anyhow!("runtime: {e}"))?;
            rt.block_on(drop_database(&url, &name))
        })
        .join();
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: dropping test database {}: {e:#}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

async fn admin_connect(url: &str) -> PgConnection {
    PgConnection::connect(url).await.unwrap_or_else(|e| {
        panic!("cannot connect to {url} (is the test cluster up? run ./scripts/test.sh): {e}")
    })
}

/// Terminates the connections to `name`, drops its replication slots and the
/// database itself, retrying for up to 30 s while slots are still active.
async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(admin_url).await?;
    let qname = quote_ident(name);
    // No new connections (a still running engine would reconnect and could
    // create its slot again).
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        return Ok(());
    }
    sqlx::raw_sql(AssertSqlSafe(format!(
        "ALTER DATABASE {qname} WITH ALLOW_CONNECTIONS false"
    )))
    .execute(&mut admin)
    .await?;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(name)
        .execute(&mut admin)
        .await?;
        sqlx::query(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
             WHERE database = $1 AND active_pid IS NOT NULL",
        )
        .bind(name)
        .execute(&mut admin)
        .await?;
        let slots: Vec<String> = sqlx::query_scalar(
            "SELECT slot_name::text FROM pg_replication_slots WHERE database = $1",
        )
        .bind(name)
        .fetch_all(&mut admin)
        .await?;
        let mut last_err = None;
        for slot in &slots {
            if let Err(e) = sqlx::query("SELECT pg_drop_replication_slot($1)")
                .bind(slot)
                .execute(&mut admin)
                .await
            {
                // Still active (its walsender is exiting), or already gone.
                last_err = Some(format!("slot {slot}: {e}"));
            }
        }
        if last_err.is_none() {
            match sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {qname} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await
            {
                Ok(_) => break,
                Err(e) => last_err = Some(e.to_string()),
            }
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "gave up after 30s: {}",
                last_err.unwrap_or_else(|| "unknown error".into())
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = admin.close().await;
    Ok(())
}

/// [`TestDb::query_text`] on any connection or pool (another cluster's,
/// for instance).
pub async fn query_text_on<'e>(exec: impl sqlx::PgExecutor<'e>, sql: &str) -> Option<String> {
    sqlx::query_scalar::<_, Option<String>>(AssertSqlSafe(sql.to_owned()))
        .fetch_optional(exec)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .flatten()
}

/// [`TestDb::to_jsonb_rows`] on any connection or pool.
pub async fn to_jsonb_rows_on<'e>(
    exec: impl sqlx::PgExecutor<'e>,
    table_sql_name: &str,
    key_column: &str,
) -> BTreeMap<String, serde_json::Value> {
    let sql = format!(
        "SELECT (to_jsonb(t) -> $1)::text AS k, to_jsonb(t)::text AS v FROM {table_sql_name} AS t"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(key_column)
        .fetch_all(exec)
        .await
        .unwrap_or_else(|e| panic!("reading {table_sql_name}: {e}"));
    let mut out = BTreeMap::new();
    for row in rows {
        let k: Option<String> = row.get(0);
        let v: String = row.get(1);
        let k = k.unwrap_or_else(|| {
            panic!("{table_sql_name}: no column {key_column:?} (or NULL) in row {v}")
        });
        let v: serde_json::Value = serde_json::from_str(&v).expect("jsonb text is JSON");
        if out.insert(k.clone(), v).is_some() {
            panic!("{table_sql_name}: duplicate key {k} in column {key_column:?}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{url_with_address, url_with_database};

    #[test]
    fn replaces_database() {
        assert_eq!(
            url_with_database("postgres://u:p@127.0.0.1:5432/postgres", "x"),
            "postgres://u:p@127.0.0.1:5432/x"
        );
        assert_eq!(
            url_with_database("postgres://u:p@h:1/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:1/x?sslmode=disable"
        );
        assert_eq!(
            url_with_database("postgres://u:p@h:1", "x"),
            "postgres://u:p@h:1/x"
        );
        assert_eq!(
            url_with_database("postgres://h?application_name=a", "x"),
            "postgres://h/x?application_name=a"
        );
    }

    #[test]
    fn replaces_host_and_port() {
        let addr: std::net::SocketAddr = "127.0.0.1:40001".parse().unwrap();
        assert_eq!(
            url_with_address("postgres://u:p@127.0.0.1:5432/db?sslmode=disable", addr),
            "postgres://u:p@127.0.0.1:40001/db?sslmode=disable"
        );
        assert_eq!(
            url_with_address("postgres://h:1/db", addr),
            "postgres://127.0.0.1:40001/db"
        );
    }
}
