//! A PostgreSQL cluster of one test's own, for tests that restart the
//! server or change server settings (never do that to the shared cluster
//! of [`crate::pg_url`]: other tests run on it in parallel).
//!
//! [`Cluster::start`] creates it with `scripts/pg.sh` (the PostgreSQL major
//! of the run: `PG_VERSION` and `PG_BIN`, which scripts/test.sh exports;
//! 15 by default; `wal_level=logical`, 127.0.0.1 only, superuser `postgres`/`postgres`; as
//! root the server runs as the `postgres` OS user) on a free port in a fresh
//! directory; dropping the value stops it and removes the directory.
//! [`Cluster::restart_fast`] and [`Cluster::restart_immediate`] restart it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::http::free_port;
use crate::util::unique_suffix;

/// The server binaries: `PG_BIN` (set by scripts/test.sh for the major of
/// the run), or Debian's PostgreSQL 15.
pub fn pg_bin() -> String {
    std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into())
}

/// A throwaway cluster; see the module documentation.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    port: u16,
}

fn pg_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg.sh")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Cluster {
    /// Creates and starts a cluster; `extra_conf` is appended to its
    /// `postgresql.conf` (e.g. `max_slot_wal_keep_size = 1MB`). Panics with
    /// the script's output when that fails.
    pub async fn start(extra_conf: &str) -> Cluster {
        let extra = extra_conf.to_owned();
        tokio::task::spawn_blocking(move || Cluster::start_blocking(&extra))
            .await
            .expect("starting the cluster panicked")
    }

    fn start_blocking(extra_conf: &str) -> Cluster {
        let mut last = String::new();
        for _ in 0..3 {
            let dir = std::env::temp_dir().join(format!("cdc-pg-{}", unique_suffix()));
            let port = free_port();
            let out = Command::new("bash")
                .arg(pg_sh())
                .arg("start")
                .arg(&dir)
                .arg(port.to_string())
                .env("PG_EXTRA_CONF", extra_conf)
                .stdin(Stdio::null())
                .output()
                .expect("running scripts/pg.sh");
            if out.status.success() {
                return Cluster { dir, port };
            }
            // Most likely the port was taken in between: try another.
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            let _ = Command::new("bash")
                .arg(pg_sh())
                .arg("stop")
                .arg(&dir)
                .output();
        }
        panic!("scripts/pg.sh start failed three times; last output:\n{last}");
    }

    /// A physical standby of this cluster, streaming through the new
    /// physical slot `slot` (`scripts/pg.sh standby`: this cluster is
    /// stopped and started again for the copy); `extra_conf` is appended
    /// to the standby's `postgresql.conf` (e.g. `sync_replication_slots =
    /// on`). Panics with the script's output when that fails.
    pub async fn start_standby(&self, slot: &str, extra_conf: &str) -> Cluster {
        let (primary, slot, extra) = (self.dir.clone(), slot.to_owned(), extra_conf.to_owned());
        tokio::task::spawn_blocking(move || {
            let dir = std::env::temp_dir().join(format!("cdc-pg-{}", unique_suffix()));
            let port = free_port();
            let out = Command::new("bash")
                .arg(pg_sh())
                .arg("standby")
                .arg(&primary)
                .arg(&dir)
                .arg(port.to_string())
                .arg(&slot)
                .env("PG_EXTRA_CONF", &extra)
                .stdin(Stdio::null())
                .output()
                .expect("running scripts/pg.sh");
            assert!(
                out.status.success(),
                "scripts/pg.sh standby failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Cluster { dir, port }
        })
        .await
        .expect("starting the standby panicked")
    }

    /// `pg_ctl promote`: the standby becomes a primary; returns once it is.
    pub async fn promote(&self) {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || pg_ctl(&dir, "promote", &[]))
            .await
            .expect("pg_ctl promote panicked");
    }

    /// `pg_ctl stop -m immediate`: the server stops as if it crashed (and
    /// stays down).
    pub async fn crash(&self) {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || pg_ctl(&dir, "stop", &["-m", "immediate"]))
            .await
            .expect("pg_ctl stop panicked");
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser URL of `database`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:postgres@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// The server log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A new superuser connection to `database`, retried for up to a minute
    /// (the server may be restarting).
    pub async fn connect(&self, database: &str) -> PgConnection {
        let url = self.url(database);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match PgConnection::connect(&url).await {
                Ok(c) => return c,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot connect to {url}: {e}"),
            }
        }
    }

    /// Runs an SQL script on `database`; panics when it fails.
    pub async fn exec(&self, database: &str, sql: &str) {
        let mut c = self.connect(database).await;
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("SQL failed: {e}\n--- script:\n{sql}"));
        let _ = c.close().await;
    }

    /// The first column of the first row of `sql` on database `postgres`,
    /// as [`crate::TestDb::query_text`] reads it.
    pub async fn query_text(&self, sql: &str) -> Option<String> {
        let mut c = self.connect("postgres").await;
        let v = crate::db::query_text_on(&mut c, sql).await;
        let _ = c.close().await;
        v
    }

    /// Every row of `table_sql_name` in database `postgres` as its
    /// `to_jsonb` object, keyed as [`crate::TestDb::to_jsonb_rows`] keys them.
    pub async fn to_jsonb_rows(
        &self,
        table_sql_name: &str,
        key_column: &str,
    ) -> std::collections::BTreeMap<String, serde_json::Value> {
        let mut c = self.connect("postgres").await;
        let v = crate::db::to_jsonb_rows_on(&mut c, table_sql_name, key_column).await;
        let _ = c.close().await;
        v
    }

    /// Whether a walsender streams from slot `slot` now (not merely the
    /// session still creating it).
    pub async fn slot_streaming(&self, slot: &str) -> bool {
        let mut c = self.connect("postgres").await;
        let active: Option<bool> = sqlx::query_scalar(
            "SELECT true FROM pg_replication_slots s \
             JOIN pg_stat_activity a ON a.pid = s.active_pid \
             WHERE s.slot_name = $1 AND a.backend_type = 'walsender'",
        )
        .bind(slot)
        .fetch_optional(&mut c)
        .await
        .unwrap_or(None);
        let _ = c.close().await;
        active == Some(true)
    }

    /// `pg_ctl restart -m fast`: every session is terminated, then the
    /// server starts again; returns once it accepts connections.
    pub async fn restart_fast(&self) {
        self.restart("fast").await;
    }

    /// `pg_ctl restart -m immediate`: the server stops without a shutdown
    /// checkpoint (as after a crash) and starts again with crash recovery;
    /// returns once it accepts connections.
    pub async fn restart_immediate(&self) {
        self.restart("immediate").await;
    }

    /// `pg_ctl restart -m <mode>`, then waits until it accepts connections.
    async fn restart(&self, mode: &'static str) {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || pg_ctl(&dir, "restart", &["-m", mode]))
            .await
            .expect("pg_ctl restart panicked");
        let c = self.connect("postgres").await;
        let _ = c.close().await;
    }
}

/// Runs `pg_ctl <action>` with `args` as the owner of the cluster in `dir`.
fn pg_ctl(dir: &Path, action: &str, args: &[&str]) {
    let pg_ctl = format!("{}/pg_ctl", pg_bin());
    let data = dir.join("data");
    let log = dir.join("postgres.log");
    let mut argv: Vec<String> = vec![
        pg_ctl,
        "-D".into(),
        data.display().to_string(),
        "-l".into(),
        log.display().to_string(),
        "-w".into(),
        "-t".into(),
        "120".into(),
    ];
    argv.extend(args.iter().map(|s| (*s).to_owned()));
    argv.push(action.into());
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).args(&argv);
        c
    } else {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    };
    let out = cmd
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running pg_ctl {action}: {e}"));
    assert!(
        out.status.success(),
        "pg_ctl {action} failed: {}{}\n--- server log: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log.display()
    );
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "(test failed: last lines of the server log {}:)\n{}",
                self.log_path().display(),
                self.log_tail(40)
            );
        }
        let _ = Command::new("bash")
            .arg(pg_sh())
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
