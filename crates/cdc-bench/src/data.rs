//! The bench table and its loads: rows of about 150 bytes (bigint key,
//! text, int, jsonb, timestamptz).

use anyhow::Result;
use cdc_postgres::ident::quote_ident;

use crate::db::Db;

/// `CREATE TABLE` of a fresh bench table (dropping an old one).
pub async fn create_table(db: &Db, table: &str) -> Result<()> {
    let t = quote_ident(table);
    db.exec(&format!(
        "DROP TABLE IF EXISTS public.{t}; \
         CREATE TABLE public.{t} (id bigint PRIMARY KEY, name text NOT NULL, \
         qty int NOT NULL, doc jsonb NOT NULL, ts timestamptz NOT NULL)"
    ))
    .await
}

/// The `SELECT` producing rows `from..=to`.
fn rows_sql(from: &str, to: &str) -> String {
    format!(
        "SELECT g, 'name-' || md5(g::text), (g % 1000)::int, \
         jsonb_build_object('k', g, 'tag', 'tag-' || (g % 100), 'ok', g % 2 = 0), \
         timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' \
         FROM generate_series({from}::bigint, {to}::bigint) g"
    )
}

/// Inserts rows `1..=rows` in one statement (for the snapshot tables).
pub async fn insert_bulk(db: &Db, table: &str, rows: u64) -> Result<()> {
    let t = quote_ident(table);
    // In slices, so that one statement never builds a huge sort or WAL burst.
    let slice = 1_000_000u64;
    let mut from = 1u64;
    while from <= rows {
        let to = (from + slice - 1).min(rows);
        db.exec(&format!(
            "INSERT INTO public.{t} {}",
            rows_sql(&from.to_string(), &to.to_string())
        ))
        .await?;
        from = to + 1;
    }
    db.exec(&format!("VACUUM (ANALYZE, FREEZE) public.{t}"))
        .await
}

/// How a streaming case writes its changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StreamLoad {
    /// Inserts in transactions of 10 rows.
    SmallTx,
    /// All inserts in one transaction.
    OneTx,
    /// Updates of pre-loaded rows, in transactions of 10,000.
    Updates,
}

impl StreamLoad {
    /// A short label for tables and slot names.
    pub fn key(self) -> &'static str {
        match self {
            StreamLoad::SmallTx => "small_tx",
            StreamLoad::OneTx => "one_tx",
            StreamLoad::Updates => "updates",
        }
    }

    /// A description for the report.
    pub fn describe(self, rows: u64) -> String {
        let n = crate::report::count(rows);
        match self {
            StreamLoad::SmallTx => {
                format!("{n} inserts, {} tx of 10", crate::report::count(rows / 10))
            }
            StreamLoad::OneTx => format!("{n} inserts, 1 tx"),
            StreamLoad::Updates => format!("{n} updates, tx of 10k"),
        }
    }

    /// Rows per transaction.
    fn tx_rows(self, rows: u64) -> u64 {
        match self {
            StreamLoad::SmallTx => 10,
            StreamLoad::OneTx => rows,
            StreamLoad::Updates => 10_000.min(rows),
        }
    }

    /// What must exist before the slots are created.
    pub async fn prepare(self, db: &Db, table: &str, rows: u64) -> Result<()> {
        create_table(db, table).await?;
        if self == StreamLoad::Updates {
            insert_bulk(db, table, rows).await?;
        }
        Ok(())
    }

    /// Writes the changes. Returns an LSN that only the end of the last
    /// transaction passes: the insert position read inside that
    /// transaction, before its commit.
    pub async fn run(self, db: &Db, table: &str, rows: u64) -> Result<u64> {
        let t = quote_ident(table);
        let per_tx = self.tx_rows(rows).max(1);
        let txs = rows.div_ceil(per_tx);
        let change = |from: &str, to: &str| match self {
            StreamLoad::Updates => format!(
                "UPDATE public.{t} SET qty = qty + 1, ts = ts + interval '1 hour' \
                 WHERE id BETWEEN {from} AND {to}"
            ),
            _ => format!("INSERT INTO public.{t} {}", rows_sql(from, to)),
        };
        if txs > 1 {
            // All but the last transaction, on the server (no round trips).
            let body = change(
                &format!("i * {per_tx} + 1"),
                &format!("i * {per_tx} + {per_tx}"),
            );
            db.exec(&format!(
                "DO $bench$ BEGIN FOR i IN 0..{} LOOP {body}; COMMIT; END LOOP; END $bench$",
                txs - 2
            ))
            .await?;
        }
        let from = (txs - 1) * per_tx + 1;
        let mut tx = db.pool.begin().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(change(
            &from.to_string(),
            &rows.to_string(),
        )))
        .execute(&mut *tx)
        .await?;
        let lsn: i64 = sqlx::query_scalar("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(u64::try_from(lsn).unwrap_or(0))
    }
}
