//! A login role of its own for one test, on the cluster of [`crate::pg_url`].

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::db::{pg_url, TestDb};
use crate::util::{quote_ident, quote_literal, unique_suffix};

/// A role `<prefix>_<unique suffix>` that may log in with a password and
/// connect to one [`TestDb`]. Drop it with [`TestRole::drop_role`] after the
/// database is gone (its privileges there keep it from being dropped).
#[derive(Debug)]
pub struct TestRole {
    name: String,
    url: String,
}

/// The password of every [`TestRole`] (tests assert it is never printed).
pub const TEST_ROLE_PASSWORD: &str = "Role_secret_pw_1";

impl TestRole {
    /// Creates the role with `attributes` (e.g. `NOREPLICATION`,
    /// `REPLICATION`) and grants it `CONNECT` on `db` and `USAGE` on its
    /// schema `public`.
    pub async fn create(db: &TestDb, prefix: &str, attributes: &str) -> TestRole {
        let name = format!("{prefix}_{}", unique_suffix());
        let r = quote_ident(&name);
        db.exec(&format!(
            "CREATE ROLE {r} LOGIN {attributes} PASSWORD {p}; \
             GRANT CONNECT ON DATABASE {d} TO {r}; GRANT USAGE ON SCHEMA public TO {r};",
            p = quote_literal(TEST_ROLE_PASSWORD),
            d = quote_ident(db.name()),
        ))
        .await;
        let host_and_db = db
            .url()
            .split_once('@')
            .map(|(_, rest)| rest)
            .expect("TestDb URL has user@host");
        TestRole {
            url: format!("postgres://{name}:{TEST_ROLE_PASSWORD}@{host_and_db}"),
            name,
        }
    }

    /// The role's name (unquoted).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL of the test database that logs in as this role.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the role (call after the database was dropped).
    pub async fn drop_role(self) {
        let mut admin = PgConnection::connect(&pg_url()).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP ROLE IF EXISTS {}",
            quote_ident(&self.name)
        )))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("dropping role {}: {e}", self.name));
        let _ = admin.close().await;
    }
}
