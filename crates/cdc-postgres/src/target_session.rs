//! Several servers in one URL (`postgres://u@h1:5432,h2:5433/db`): which
//! one to use, as libpq's `target_session_attrs` says. The source picks
//! again each time it (re)connects, so after a failover it finds the
//! promoted server by itself.

use std::time::Duration;

use sqlx::{Connection, PgConnection};

use crate::conn::ConnParams;
use crate::error::PgError;

/// The longest connecting to one server of the list and asking it what it
/// is may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which server of the URL to use, as libpq's `target_session_attrs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetSession {
    /// The first server that answers.
    #[default]
    Any,
    /// The first server that accepts writes (`transaction_read_only` off).
    ReadWrite,
    /// The first server that does not accept writes.
    ReadOnly,
    /// The first server not in recovery.
    Primary,
    /// The first server in recovery (a hot standby).
    Standby,
    /// The first standby, else the first server that answers.
    PreferStandby,
}

impl TargetSession {
    /// The URL parameter's value.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSession::Any => "any",
            TargetSession::ReadWrite => "read-write",
            TargetSession::ReadOnly => "read-only",
            TargetSession::Primary => "primary",
            TargetSession::Standby => "standby",
            TargetSession::PreferStandby => "prefer-standby",
        }
    }

    pub(crate) fn parse(v: &str) -> Result<Self, PgError> {
        Ok(match v {
            "any" => TargetSession::Any,
            "read-write" => TargetSession::ReadWrite,
            "read-only" => TargetSession::ReadOnly,
            "primary" => TargetSession::Primary,
            "standby" => TargetSession::Standby,
            "prefer-standby" => TargetSession::PreferStandby,
            other => {
                return Err(PgError::InvalidUrl(format!(
                    "unknown target_session_attrs {other:?} (any, read-write, read-only, primary, \
                     standby, prefer-standby)"
                )))
            }
        })
    }
}

/// What a server of the list turned out to be.
#[derive(Debug)]
enum Probe {
    /// It answered: whether it is in recovery, whether it refuses writes.
    Server { in_recovery: bool, read_only: bool },
    /// It did not answer (or refused us).
    Failed(PgError),
}

impl TargetSession {
    /// Whether a server that answered suits (`PreferStandby`: in its first
    /// pass, a standby).
    fn suits(self, in_recovery: bool, read_only: bool) -> bool {
        match self {
            TargetSession::Any => true,
            TargetSession::ReadWrite => !read_only,
            TargetSession::ReadOnly => read_only,
            TargetSession::Primary => !in_recovery,
            TargetSession::Standby | TargetSession::PreferStandby => in_recovery,
        }
    }
}

impl ConnParams {
    /// The same parameters with `host`/`port` set to the server of
    /// `hosts` that `target_session` asks for: the first in URL order
    /// that answers and suits. A one-server URL with `any` is returned as
    /// it is, without connecting.
    ///
    /// When no server suits, the error is retryable (a failover may be
    /// under way) and names what each server was; when a server refused
    /// us for good (authentication, TLS) and none suits, that error,
    /// which is fatal.
    pub async fn pick_host(&self) -> Result<ConnParams, PgError> {
        if self.hosts.len() <= 1 && self.target_session == TargetSession::Any {
            return Ok(self.clone());
        }
        let mut probes = Vec::with_capacity(self.hosts.len());
        for (host, port) in &self.hosts {
            let candidate = self.at(host, *port);
            let probe = probe(&candidate).await;
            if let Probe::Server {
                in_recovery,
                read_only,
            } = probe
            {
                if self.target_session.suits(in_recovery, read_only) {
                    return Ok(candidate);
                }
            }
            probes.push((host, *port, probe));
        }
        if self.target_session == TargetSession::PreferStandby {
            for (host, port, probe) in &probes {
                if matches!(probe, Probe::Server { .. }) {
                    return Ok(self.at(host, *port));
                }
            }
        }
        let mut said = Vec::with_capacity(probes.len());
        let mut fatal = None;
        for (host, port, probe) in probes {
            said.push(match probe {
                Probe::Server {
                    in_recovery,
                    read_only,
                } => format!(
                    "{host}:{port} is {}{}",
                    if in_recovery {
                        "a standby"
                    } else {
                        "a primary"
                    },
                    if read_only && !in_recovery {
                        " refusing writes"
                    } else {
                        ""
                    }
                ),
                Probe::Failed(e) => {
                    let line = format!("{host}:{port}: {}", cdc_core::error_chain(&e));
                    if e.class() == cdc_core::ErrorClass::Fatal {
                        fatal.get_or_insert(e);
                    }
                    line
                }
            });
        }
        if let Some(e) = fatal {
            return Err(e);
        }
        Err(PgError::NoSuitableHost(format!(
            "no server of source.url is {} (target_session_attrs={}): {}",
            match self.target_session {
                TargetSession::Any => "reachable",
                TargetSession::ReadWrite => "accepting writes",
                TargetSession::ReadOnly => "read-only",
                TargetSession::Primary => "a primary",
                TargetSession::Standby | TargetSession::PreferStandby => "a standby",
            },
            self.target_session.as_str(),
            said.join("; ")
        )))
    }

    /// These parameters with `host:port` in use.
    fn at(&self, host: &str, port: u16) -> ConnParams {
        ConnParams {
            host: host.to_owned(),
            port,
            ..self.clone()
        }
    }
}

/// Connects to `params`' server and asks what it is.
async fn probe(params: &ConnParams) -> Probe {
    let ask = async {
        let mut conn = PgConnection::connect_with(&params.sqlx_options_for("probe"))
            .await
            .map_err(|e| {
                PgError::sql(format!("connecting to {}:{}", params.host, params.port), e)
            })?;
        let row: (bool, String) = sqlx::query_as(
            "SELECT pg_catalog.pg_is_in_recovery(), \
             pg_catalog.current_setting('transaction_read_only')",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(|e| {
            PgError::sql(
                format!("asking {}:{} what it is", params.host, params.port),
                e,
            )
        })?;
        let _ = conn.close().await;
        Ok::<_, PgError>(Probe::Server {
            in_recovery: row.0,
            read_only: row.1 == "on",
        })
    };
    match tokio::time::timeout(PROBE_TIMEOUT, ask).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => Probe::Failed(e),
        Err(_) => Probe::Failed(PgError::NoSuitableHost(format!(
            "{}:{} did not answer within {PROBE_TIMEOUT:?}",
            params.host, params.port
        ))),
    }
}
