//! Connection parameters: one `postgres://` URL feeds both the ordinary
//! (sqlx) connection and the replication connection.
//!
//! Each ordinary connection names its role in `application_name`
//! ([`ConnParams::sqlx_options_for`]): `<name>/<role>`, where `<name>` is the URL's
//! `application_name` (default `cdc-engine`). The replication connection
//! keeps `<name>` itself. The roles:
//!
//! | role | what the connection does |
//! |---|---|
//! | `catalog` | the source's checks and setup; while streaming: table descriptions, heartbeats, a standby's slot checks |
//! | `metadata` | snapshot metadata (jobs, chunks) |
//! | `lock` | the snapshot coordinator's advisory lock |
//! | `export` | the transaction holding an exported snapshot |
//! | `plan` | planning the snapshot's chunks |
//! | `reader` | reading snapshot chunks |
//! | `claims` | renewing this instance's claims on snapshot chunks |
//! | `check` | `cdc-engine check` |
//! | `lag-poll` | the engine's lag poll (`metrics`) |
//! | `status` | `cdc-engine status` |
//! | `probe` | choosing among the servers of a multi-server URL ([`ConnParams::pick_host`]) |

use std::fmt;
use std::path::PathBuf;

use crate::error::PgError;

/// Session settings pinned on every connection, so that the replication
/// stream and snapshot reads render values identically and
/// deterministically (see the `value` module).
pub const PINNED_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
];

/// TLS mode, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it.
    Prefer,
    /// TLS, certificate not checked.
    Require,
    /// TLS, certificate chain checked.
    VerifyCa,
    /// TLS, certificate chain and host name checked.
    VerifyFull,
}

pub use crate::target_session::TargetSession;

/// Parsed `postgres://user:password@host:port/database?sslmode=…` URL.
///
/// The URL may list several servers (`postgres://u@h1:5432,h2:5433/db`);
/// [`ConnParams::pick_host`] then chooses one as
/// `target_session_attrs` says, and `host`/`port` name the one in use.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnParams {
    /// Host name or address of the server in use (the first of the URL
    /// until [`ConnParams::pick_host`] chose another).
    pub host: String,
    /// Port of the server in use, default 5432.
    pub port: u16,
    /// Every server of the URL, in order (one for a one-host URL).
    pub hosts: Vec<(String, u16)>,
    /// Which of `hosts` to use (`target_session_attrs`, default `any`).
    pub target_session: TargetSession,
    /// Role name.
    pub user: String,
    /// Password ("" when none).
    pub password: String,
    /// Database name.
    pub database: String,
    /// TLS mode (default `prefer`, as libpq).
    pub ssl_mode: SslMode,
    /// CA certificate file (`sslrootcert`).
    pub ssl_root_cert: Option<PathBuf>,
    /// `application_name` shown in `pg_stat_activity`.
    pub application_name: String,
}

impl fmt::Debug for ConnParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("hosts", &self.hosts)
            .field("target_session", &self.target_session)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("database", &self.database)
            .field("ssl_mode", &self.ssl_mode)
            .finish_non_exhaustive()
    }
}

fn percent_decode(s: &str) -> Result<String, PgError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| PgError::InvalidUrl(format!("bad percent-escape in {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PgError::InvalidUrl("percent-escape is not UTF-8".into()))
}

/// One `host[:port]` (or `[v6]:port`) of the URL's server list.
fn parse_host_port(hostport: &str) -> Result<(String, u16), PgError> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| PgError::InvalidUrl("unterminated [ipv6] host".into()))?;
        (h.to_owned(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (hostport.to_owned(), None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| PgError::InvalidUrl(format!("bad port {p:?}")))?,
        None => 5432,
    };
    let host = if host.is_empty() {
        "127.0.0.1".to_owned()
    } else {
        percent_decode(&host)?
    };
    Ok((host, port))
}

impl ConnParams {
    /// Parses a `postgres://` or `postgresql://` URL, with one server or
    /// several (`h1:5432,h2:5433`). Recognised query parameters:
    /// `sslmode`, `sslrootcert`, `application_name`,
    /// `target_session_attrs`.
    pub fn parse(url: &str) -> Result<Self, PgError> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| {
                PgError::InvalidUrl("must start with postgres:// or postgresql://".into())
            })?;
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, database) = main.split_once('/').unwrap_or((main, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pw)) => (percent_decode(user)?, percent_decode(pw)?),
                None => (percent_decode(u)?, String::new()),
            },
            None => ("postgres".to_owned(), String::new()),
        };
        let hosts = hostport
            .split(',')
            .map(parse_host_port)
            .collect::<Result<Vec<_>, _>>()?;
        let (host, port) = hosts[0].clone();
        let mut params = ConnParams {
            host,
            port,
            hosts,
            target_session: TargetSession::Any,
            user: if user.is_empty() {
                "postgres".into()
            } else {
                user
            },
            password,
            database: percent_decode(database)?,
            ssl_mode: SslMode::Prefer,
            ssl_root_cert: None,
            application_name: "cdc-engine".into(),
        };
        if params.database.is_empty() {
            params.database = params.user.clone();
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v)?;
            match k {
                "sslmode" => {
                    params.ssl_mode = match v.as_str() {
                        "disable" => SslMode::Disable,
                        "allow" | "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(PgError::InvalidUrl(format!(
                                "unknown sslmode {other:?} (disable, prefer, require, verify-ca, verify-full)"
                            )))
                        }
                    }
                }
                "sslrootcert" => params.ssl_root_cert = Some(PathBuf::from(v)),
                "application_name" => params.application_name = v,
                "target_session_attrs" => params.target_session = TargetSession::parse(&v)?,
                other => {
                    return Err(PgError::InvalidUrl(format!(
                        "unsupported URL parameter {other:?} (supported: sslmode, sslrootcert, \
                         application_name, target_session_attrs)"
                    )))
                }
            }
        }
        Ok(params)
    }

    /// Options for an ordinary sqlx connection of `role` (see the module
    /// documentation), with the pinned settings.
    pub fn sqlx_options_for(&self, role: &str) -> sqlx::postgres::PgConnectOptions {
        for_role(&self.sqlx_options(), role)
    }

    /// Options for an ordinary sqlx connection, with the pinned settings
    /// (`application_name` as in the URL; [`ConnParams::sqlx_options_for`]
    /// adds a role to it).
    pub fn sqlx_options(&self) -> sqlx::postgres::PgConnectOptions {
        use sqlx::postgres::{PgConnectOptions, PgSslMode};
        let mut o = PgConnectOptions::new_without_pgpass()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .database(&self.database)
            .application_name(&self.application_name)
            .ssl_mode(match self.ssl_mode {
                SslMode::Disable => PgSslMode::Disable,
                SslMode::Prefer => PgSslMode::Prefer,
                SslMode::Require => PgSslMode::Require,
                SslMode::VerifyCa => PgSslMode::VerifyCa,
                SslMode::VerifyFull => PgSslMode::VerifyFull,
            })
            .options(PINNED_SETTINGS.iter().copied());
        if !self.password.is_empty() {
            o = o.password(&self.password);
        }
        if let Some(ca) = &self.ssl_root_cert {
            o = o.ssl_root_cert(ca);
        }
        o
    }
}

/// `options` with `application_name` `<name>/<role>`, `<name>` being
/// the `application_name` of `options` (default `cdc-engine`), so that
/// `pg_stat_activity` tells the engine's connections apart.
pub(crate) fn for_role(
    options: &sqlx::postgres::PgConnectOptions,
    role: &str,
) -> sqlx::postgres::PgConnectOptions {
    let name = format!(
        "{}/{role}",
        options.get_application_name().unwrap_or("cdc-engine")
    );
    options.clone().application_name(&name)
}

/// The reconnects of one connection role (see the module documentation):
/// one warning per failed attempt, naming the role, the error and the
/// delay before the next attempt, which doubles from 100 ms up to a limit;
/// one line when the connection works again.
#[derive(Debug)]
pub(crate) struct Reconnects {
    role: &'static str,
    backoff: cdc_core::Backoff,
    failing: bool,
}

impl Reconnects {
    /// Delays from 100 ms up to `max`.
    pub fn new(role: &'static str, max: std::time::Duration) -> Self {
        Self {
            role,
            backoff: cdc_core::Backoff::new(std::time::Duration::from_millis(100), max),
            failing: false,
        }
    }

    /// Logs a failed attempt (or the failure that ended a working
    /// connection) and returns how long to wait before the next attempt.
    pub fn failed(&mut self, error: &PgError) -> std::time::Duration {
        self.failing = true;
        let delay = self.backoff.next_delay();
        tracing::warn!(
            role = self.role,
            error = %cdc_core::error_chain(error),
            attempt = self.backoff.attempts(),
            retry_in = ?delay,
            "{} connection failed; connecting again",
            self.role
        );
        delay
    }

    /// The connection works (again): logs once after failures and resets
    /// the delay.
    pub fn restored(&mut self) {
        if std::mem::take(&mut self.failing) {
            tracing::info!(
                role = self.role,
                attempts = self.backoff.attempts(),
                "{} connection restored",
                self.role
            );
        }
        self.backoff.reset();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn connections_name_their_role() {
        let p = ConnParams::parse("postgres://u@h/db").unwrap();
        let o = p.sqlx_options_for("reader");
        assert_eq!(o.get_application_name(), Some("cdc-engine/reader"));
        let p = ConnParams::parse("postgres://u@h/db?application_name=shop").unwrap();
        assert_eq!(
            p.sqlx_options_for("lag-poll").get_application_name(),
            Some("shop/lag-poll")
        );
    }

    #[test]
    fn parses_urls() {
        let p = ConnParams::parse("postgres://u%40x:p%3Aw@db.example:6543/app?sslmode=require")
            .unwrap();
        assert_eq!(
            (
                p.user.as_str(),
                p.password.as_str(),
                p.host.as_str(),
                p.port,
                p.database.as_str()
            ),
            ("u@x", "p:w", "db.example", 6543, "app")
        );
        assert_eq!(p.ssl_mode, SslMode::Require);
        assert!(!format!("{p:?}").contains("p:w"));

        let p = ConnParams::parse("postgresql://[::1]:5433/x").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 5433));
        let p = ConnParams::parse("postgres://bob@localhost").unwrap();
        assert_eq!((p.database.as_str(), p.port), ("bob", 5432));
    }

    #[test]
    fn parses_server_lists() {
        let p = ConnParams::parse(
            "postgres://u@h1:5432,[::1]:5433,h3/db?target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(
            p.hosts,
            vec![
                ("h1".to_owned(), 5432),
                ("::1".to_owned(), 5433),
                ("h3".to_owned(), 5432)
            ]
        );
        assert_eq!((p.host.as_str(), p.port), ("h1", 5432));
        assert_eq!(p.target_session, TargetSession::ReadWrite);
        let p = ConnParams::parse("postgres://u@h/db").unwrap();
        assert_eq!(p.hosts, vec![("h".to_owned(), 5432)]);
        assert_eq!(p.target_session, TargetSession::Any);
        for (value, want) in [
            ("any", TargetSession::Any),
            ("read-only", TargetSession::ReadOnly),
            ("primary", TargetSession::Primary),
            ("standby", TargetSession::Standby),
            ("prefer-standby", TargetSession::PreferStandby),
        ] {
            let p = ConnParams::parse(&format!("postgres://u@h/db?target_session_attrs={value}"))
                .unwrap();
            assert_eq!(p.target_session, want);
            assert_eq!(want.as_str(), value);
        }
        let e = ConnParams::parse("postgres://u@h/db?target_session_attrs=leader").unwrap_err();
        assert!(
            e.to_string().contains("unknown target_session_attrs"),
            "{e}"
        );
        let e = ConnParams::parse("postgres://u@h1,h2:x/db").unwrap_err();
        assert!(e.to_string().contains("bad port"), "{e}");
    }

    #[test]
    fn rejects_bad_urls() {
        for url in [
            "mysql://x",
            "postgres://h:notaport/db",
            "postgres://h/db?sslmode=bogus",
            "postgres://h/db?foo=1",
            "postgres://h/%zz",
        ] {
            assert!(ConnParams::parse(url).is_err(), "{url}");
        }
    }
}
