//! The bench database: connections, slots and positions.

use anyhow::{Context, Result};
use cdc_postgres::ident::quote_ident;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool, Row};

/// A pool on the bench database.
#[derive(Clone)]
pub struct Db {
    /// The pool.
    pub pool: PgPool,
}

impl Db {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> Result<Self> {
        let opts: PgConnectOptions = url.parse().context("parsing the database URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .with_context(|| "connecting to the bench database".to_string())?;
        Ok(Self { pool })
    }

    /// Runs SQL text (one or more statements) with the simple protocol.
    pub async fn exec(&self, sql: &str) -> Result<()> {
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await
            .with_context(|| format!("running: {}", abbreviate(sql)))?;
        Ok(())
    }

    /// The first column of the first row of `sql`, as text.
    pub async fn text(&self, sql: &str) -> Result<String> {
        let row = sqlx::query(AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await
            .with_context(|| format!("running: {}", abbreviate(sql)))?;
        Ok(row.try_get::<String, _>(0)?)
    }

    /// The first column of the first row of `sql`, as a 64-bit integer.
    pub async fn int(&self, sql: &str) -> Result<i64> {
        let row = sqlx::query(AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await
            .with_context(|| format!("running: {}", abbreviate(sql)))?;
        Ok(row.try_get::<i64, _>(0)?)
    }

    /// Creates a logical slot with pgoutput (dropping one left over).
    pub async fn create_slot(&self, slot: &str) -> Result<()> {
        self.drop_slot(slot).await?;
        sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
            .bind(slot)
            .execute(&self.pool)
            .await
            .with_context(|| format!("creating slot {slot}"))?;
        Ok(())
    }

    /// Drops a slot if it exists (waiting for its reader to go away).
    pub async fn drop_slot(&self, slot: &str) -> Result<()> {
        for _ in 0..100 {
            let r = sqlx::query(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = $1 AND NOT active",
            )
            .bind(slot)
            .execute(&self.pool)
            .await;
            let active: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            )
            .bind(slot)
            .fetch_one(&self.pool)
            .await?;
            if active == 0 {
                return Ok(());
            }
            if let Err(e) = r {
                tracing::debug!(error = %e, "slot busy");
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        anyhow::bail!("slot {slot} is still in use")
    }

    /// The pid of the walsender reading `slot`, once one is.
    pub async fn slot_pid(&self, slot: &str) -> Result<Option<u32>> {
        let pid: Option<i32> =
            sqlx::query_scalar("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1")
                .bind(slot)
                .fetch_optional(&self.pool)
                .await?
                .flatten();
        Ok(pid.and_then(|p| u32::try_from(p).ok()))
    }

    /// The slot's `confirmed_flush_lsn` as a number (0 when unknown).
    pub async fn confirmed_flush(&self, slot: &str) -> Result<u64> {
        let lsn: Option<i64> = sqlx::query_scalar(
            "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots \
             WHERE slot_name = $1",
        )
        .bind(slot)
        .fetch_optional(&self.pool)
        .await?
        .flatten();
        Ok(lsn.and_then(|l| u64::try_from(l).ok()).unwrap_or(0))
    }

    /// Drops and re-creates a publication for one table.
    pub async fn create_publication(&self, publication: &str, table: &str) -> Result<()> {
        self.exec(&format!(
            "DROP PUBLICATION IF EXISTS {p}; CREATE PUBLICATION {p} FOR TABLE public.{t}",
            p = quote_ident(publication),
            t = quote_ident(table)
        ))
        .await
    }
}

fn abbreviate(sql: &str) -> String {
    let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.len() > 120 {
        let mut end = 120;
        while !one_line.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &one_line[..end])
    } else {
        one_line
    }
}
