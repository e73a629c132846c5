//! The snapshot reader's own connection for `COPY … TO STDOUT`.
//!
//! It speaks the frontend protocol directly: startup with the pinned
//! session settings, trust, password or SCRAM-SHA-256 authentication, TLS
//! as the replication connection negotiates it, simple queries, and COPY
//! out. Rows arrive in large socket reads (up to [`READ_SIZE`] at a time)
//! and each `CopyData` message is handed to the decoder as a slice of the
//! read buffer. The general driver reads 8 KiB at a time and hands over
//! one message at a time through a boxed stream, one reference-counted
//! buffer per row; for the snapshot, which is nothing but COPY data, that
//! was about 15 % of the reader's CPU samples.
//!
//! Errors are [`PgError::Copy`]: I/O trouble and server errors with a
//! transient SQLSTATE are retryable, like the driver's.

use pgwire_replication::auth::ScramClient;
use pgwire_replication::protocol::framing::{
    write_password_message, write_query, write_startup_message,
};
use pgwire_replication::protocol::{parse_auth_request, parse_error_response};
use pgwire_replication::tls::rustls::{maybe_upgrade_to_tls, MaybeTlsStream};
use pgwire_replication::{PgWireError, TlsConfig};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::conn::PINNED_SETTINGS;
use crate::error::{PgError, ReplicationError};

/// Bytes asked of the socket at a time.
pub(crate) const READ_SIZE: usize = 64 * 1024;
/// A buffer grown past this (one huge row) is given back when emptied.
const KEEP_AT_MOST: usize = 4 * 1024 * 1024;
/// The longest message a server sends: a row or value is at most 1 GiB
/// (the server's largest allocation), and its length word counts itself.
/// A longer length is a broken stream, not something to allocate for.
const MAX_MESSAGE: usize = (1 << 30) + 4;
/// Protocol 3.0.
const PROTOCOL_3_0: i32 = 196_608;

/// Where and as whom a [`CopyConn`] connects.
#[derive(Clone)]
pub(crate) struct CopyTarget {
    /// Host name or address (TCP only).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Role.
    pub user: String,
    /// Password ("" when none).
    pub password: String,
    /// Database.
    pub database: String,
    /// TLS, as for the replication connection.
    pub tls: TlsConfig,
    /// `application_name` of the session.
    pub application_name: String,
}

impl CopyTarget {
    /// The target of the replication connection `cfg`, named
    /// `application_name`; `None` for a Unix-domain socket (`host` a
    /// path), which only the driver connects to.
    pub(crate) fn of_replication(
        cfg: &pgwire_replication::ReplicationConfig,
        application_name: String,
    ) -> Option<Self> {
        (!cfg.host.starts_with('/')).then(|| Self {
            host: cfg.host.clone(),
            port: cfg.port,
            user: cfg.user.clone(),
            password: cfg.password.clone(),
            database: cfg.database.clone(),
            tls: cfg.tls.clone(),
            application_name,
        })
    }
}

/// How a connection attempt failed.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The server asks for an authentication method this connection does
    /// not speak (MD5, GSSAPI, SSPI, SCRAM without SHA-256): read through
    /// the driver instead.
    Unsupported(String),
    /// Anything else.
    Failed(PgError),
}

/// What a simple query returned.
#[derive(Debug, Default)]
pub(crate) struct QueryResult {
    /// Statements completed (`CommandComplete`) before an error or the end.
    pub completed: usize,
    /// The first row returned, its columns as text (`None`: SQL NULL).
    pub first_row: Option<Vec<Option<String>>>,
    /// The server's error, when a statement failed.
    pub error: Option<PgError>,
}

/// One connection speaking simple queries and COPY out.
pub(crate) struct CopyConn {
    io: MaybeTlsStream,
    /// Bytes read and not yet consumed start at `pos`.
    buf: Vec<u8>,
    pos: usize,
    /// The message last handed out by [`CopyConn::copy_data`] ends here
    /// (consumed at the next call).
    pending: usize,
    /// Inside a COPY whose end has not been read.
    copying: bool,
    /// `server_version_num` from the server's `server_version` report.
    server_version_num: Option<u32>,
}

fn wire(context: &str, e: PgWireError) -> PgError {
    PgError::Copy {
        context: context.to_owned(),
        source: ReplicationError(e),
    }
}

fn io_error(context: &str, e: std::io::Error) -> PgError {
    wire(context, PgWireError::Io(std::sync::Arc::new(e)))
}

fn protocol(context: &str, what: String) -> PgError {
    wire(context, PgWireError::Protocol(what))
}

fn server_error(context: &str, body: &[u8]) -> PgError {
    wire(context, PgWireError::Server(parse_error_response(body)))
}

impl CopyConn {
    /// Connects, negotiates TLS and authenticates; the session has the
    /// pinned settings ([`PINNED_SETTINGS`]) as startup parameters.
    pub(crate) async fn connect(target: &CopyTarget) -> Result<Self, ConnectError> {
        const CTX: &str = "snapshot reader connecting for COPY";
        let fail = |e| ConnectError::Failed(e);
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| fail(io_error(CTX, e)))?;
        let _ = tcp.set_nodelay(true);
        let mut io = maybe_upgrade_to_tls(tcp, &target.tls, &target.host)
            .await
            .map_err(|e| fail(wire(CTX, e)))?;
        let mut params: Vec<(&str, &str)> = vec![
            ("user", &target.user),
            ("database", &target.database),
            ("application_name", &target.application_name),
            ("client_encoding", "UTF8"),
        ];
        params.extend(PINNED_SETTINGS.iter().copied());
        write_startup_message(&mut io, PROTOCOL_3_0, &params)
            .await
            .map_err(|e| fail(wire(CTX, e)))?;
        let mut conn = CopyConn {
            io,
            buf: Vec::with_capacity(READ_SIZE),
            pos: 0,
            pending: 0,
            copying: false,
            server_version_num: None,
        };
        conn.authenticate(target).await?;
        Ok(conn)
    }

    async fn authenticate(&mut self, target: &CopyTarget) -> Result<(), ConnectError> {
        const CTX: &str = "snapshot reader authenticating for COPY";
        let fail = |e| ConnectError::Failed(e);
        let mut scram: Option<ScramClient> = None;
        let mut scram_state: Option<(String, Vec<u8>)> = None;
        loop {
            let (tag, body) = self.message(CTX).await.map_err(fail)?;
            let body = &self.buf[body];
            match tag {
                b'R' => {
                    let (code, data) = parse_auth_request(body).map_err(|e| fail(wire(CTX, e)))?;
                    let reply: Vec<u8> = match code {
                        0 => continue,
                        3 => {
                            let mut p = target.password.as_bytes().to_vec();
                            p.push(0);
                            p
                        }
                        10 => {
                            let offered = data
                                .split(|&b| b == 0)
                                .any(|m| m == b"SCRAM-SHA-256");
                            if !offered {
                                return Err(ConnectError::Unsupported(format!(
                                    "SASL mechanisms {:?}",
                                    String::from_utf8_lossy(data)
                                )));
                            }
                            let client = ScramClient::new(&target.user);
                            let mut p = b"SCRAM-SHA-256\0".to_vec();
                            let first = client.client_first.as_bytes();
                            let len = i32::try_from(first.len()).unwrap_or(i32::MAX);
                            p.extend_from_slice(&len.to_be_bytes());
                            p.extend_from_slice(first);
                            scram = Some(client);
                            p
                        }
                        11 => {
                            let client = scram.as_ref().ok_or_else(|| {
                                fail(protocol(CTX, "SASL continue before SASL start".into()))
                            })?;
                            let (last, auth_message, salted) = client
                                .client_final(&target.password, &String::from_utf8_lossy(data))
                                .map_err(|e| fail(wire(CTX, e)))?;
                            scram_state = Some((auth_message, salted));
                            last.into_bytes()
                        }
                        12 => {
                            let (auth_message, salted) = scram_state.take().ok_or_else(|| {
                                fail(protocol(CTX, "SASL final before SASL continue".into()))
                            })?;
                            ScramClient::verify_server_final(
                                &String::from_utf8_lossy(data),
                                &salted,
                                &auth_message,
                            )
                            .map_err(|e| fail(wire(CTX, e)))?;
                            continue;
                        }
                        other => {
                            return Err(ConnectError::Unsupported(match other {
                                5 => "MD5 password authentication".to_owned(),
                                7 => "GSSAPI authentication".to_owned(),
                                9 => "SSPI authentication".to_owned(),
                                n => format!("authentication method {n}"),
                            }))
                        }
                    };
                    write_password_message(&mut self.io, &reply)
                        .await
                        .map_err(|e| fail(wire(CTX, e)))?;
                }
                b'E' => return Err(fail(server_error(CTX, body))),
                b'S' => {
                    let mut parts = body.split(|&b| b == 0);
                    if parts.next() == Some(b"server_version") {
                        let version = parts.next().unwrap_or_default();
                        self.server_version_num =
                            version_num(&String::from_utf8_lossy(version));
                    }
                }
                b'Z' => return Ok(()),
                // Backend key, notices.
                _ => {}
            }
        }
    }

    /// Runs `sql` (one or more statements) and reads every reply up to
    /// `ReadyForQuery`. A failed statement is [`QueryResult::error`]; an
    /// I/O or protocol failure is `Err` (the connection is then unusable).
    pub(crate) async fn simple_query(
        &mut self,
        sql: &str,
        context: &str,
    ) -> Result<QueryResult, PgError> {
        if self.copying {
            return Err(protocol(context, "a COPY is still being read".into()));
        }
        write_query(&mut self.io, sql)
            .await
            .map_err(|e| wire(context, e))?;
        let mut out = QueryResult::default();
        loop {
            let (tag, body) = self.message(context).await?;
            let body = &self.buf[body];
            match tag {
                b'C' => out.completed += 1,
                b'D' if out.first_row.is_none() => {
                    out.first_row = Some(data_row(body).map_err(|w| protocol(context, w))?);
                }
                b'E' => {
                    out.error.get_or_insert_with(|| server_error(context, body));
                }
                b'Z' => return Ok(out),
                b'H' => {
                    // A COPY out where none was expected: read it away.
                    self.copying = true;
                    while self.copy_data(context).await?.is_some() {}
                    return Ok(out);
                }
                _ => {}
            }
        }
    }

    /// Starts `sql`, a `COPY … TO STDOUT`; its data is then read with
    /// [`CopyConn::copy_data`] to the end.
    pub(crate) async fn copy_out(&mut self, sql: &str, context: &str) -> Result<(), PgError> {
        if self.copying {
            return Err(protocol(context, "a COPY is still being read".into()));
        }
        write_query(&mut self.io, sql)
            .await
            .map_err(|e| wire(context, e))?;
        let mut error = None;
        loop {
            let (tag, body) = self.message(context).await?;
            match tag {
                b'H' => {
                    self.copying = true;
                    return Ok(());
                }
                b'E' => {
                    error.get_or_insert_with(|| server_error(context, &self.buf[body]));
                }
                b'Z' => {
                    return Err(error.unwrap_or_else(|| {
                        protocol(context, "the COPY returned no data".into())
                    }))
                }
                _ => {}
            }
        }
    }

    /// The next `CopyData` payload of the COPY started by
    /// [`CopyConn::copy_out`], or `None` once it ended (and the connection
    /// is ready for the next query). A server error during the COPY is
    /// `Err` after the connection is ready again.
    pub(crate) async fn copy_data(&mut self, context: &str) -> Result<Option<&[u8]>, PgError> {
        if !self.copying {
            return Ok(None);
        }
        let mut error: Option<PgError> = None;
        loop {
            let (tag, body) = self.message(context).await?;
            match tag {
                b'd' if error.is_none() => {
                    return Ok(Some(&self.buf[body]));
                }
                b'E' => {
                    error.get_or_insert_with(|| server_error(context, &self.buf[body]));
                }
                b'Z' => {
                    self.copying = false;
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(None),
                    };
                }
                // CopyDone, CommandComplete, notices, parameter status.
                _ => {}
            }
        }
    }

    /// The server's version as `server_version_num` (150004 for 15.4),
    /// when it reported one that parses.
    pub(crate) fn server_version_num(&self) -> Option<u32> {
        self.server_version_num
    }

    /// The next message: its type and the range of its body in `buf`.
    async fn message(&mut self, context: &str) -> Result<(u8, std::ops::Range<usize>), PgError> {
        self.pos = self.pending;
        loop {
            let have = &self.buf[self.pos..];
            if let Some(header) = have.get(..5) {
                let tag = header[0];
                let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
                if !(4..=MAX_MESSAGE).contains(&len) {
                    return Err(protocol(context, format!("message length {len}")));
                }
                let end = self.pos + 1 + len;
                if end <= self.buf.len() {
                    self.pending = end;
                    return Ok((tag, self.pos + 5..end));
                }
                self.fill(1 + len, context).await?;
            } else {
                self.fill(5, context).await?;
            }
        }
    }

    /// Reads until `need` bytes from `pos` are buffered, first moving the
    /// unconsumed bytes to the front.
    async fn fill(&mut self, need: usize, context: &str) -> Result<(), PgError> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos.., 0);
            self.buf.truncate(self.buf.len() - self.pos);
            self.pending -= self.pos.min(self.pending);
            self.pos = 0;
        }
        if self.buf.is_empty() && self.buf.capacity() > KEEP_AT_MOST {
            self.buf = Vec::with_capacity(READ_SIZE);
        }
        while self.buf.len() < need {
            let missing = need - self.buf.len();
            if self.buf.capacity() - self.buf.len() < missing.max(READ_SIZE / 4) {
                self.buf.reserve(missing.max(READ_SIZE));
            }
            // Reads at most the spare capacity.
            let n = self
                .io
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| io_error(context, e))?;
            if n == 0 {
                return Err(io_error(
                    context,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Closes the session (`Terminate`).
    pub(crate) async fn close(mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = self.io.write_all(&[b'X', 0, 0, 0, 4]).await;
        let _ = self.io.shutdown().await;
    }
}

/// `server_version_num` of a `server_version` such as `15.4`, `16beta1`
/// or `17.2 (Debian 17.2-1)` (PostgreSQL 10 and later: major × 10000 +
/// minor).
fn version_num(version: &str) -> Option<u32> {
    let digits = |s: &str| -> Option<u32> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s.get(..end).filter(|d| !d.is_empty())?.parse().ok()
    };
    let major = digits(version)?;
    let rest = version.get(major.to_string().len()..).unwrap_or_default();
    let minor = rest.strip_prefix('.').and_then(digits).unwrap_or(0);
    major.checked_mul(10_000)?.checked_add(minor)
}

/// The columns of a `DataRow` message, as text.
fn data_row(body: &[u8]) -> Result<Vec<Option<String>>, String> {
    let short = || "short DataRow message".to_owned();
    let count = body.get(..2).ok_or_else(short)?;
    let count = u16::from_be_bytes([count[0], count[1]]);
    let mut rest = &body[2..];
    let mut out = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = rest.get(..4).ok_or_else(short)?;
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        rest = &rest[4..];
        if len < 0 {
            out.push(None);
            continue;
        }
        let len = len as usize;
        let value = rest.get(..len).ok_or_else(short)?;
        out.push(Some(String::from_utf8_lossy(value).into_owned()));
        rest = &rest[len..];
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_parse() {
        assert_eq!(version_num("15.4"), Some(150_004));
        assert_eq!(version_num("16beta1"), Some(160_000));
        assert_eq!(version_num("17.2 (Debian 17.2-1.pgdg120+1)"), Some(170_002));
        assert_eq!(version_num("18devel"), Some(180_000));
        assert_eq!(version_num(""), None);
        assert_eq!(version_num("x"), None);
    }

    #[test]
    fn data_rows_parse_and_short_ones_are_errors() {
        let mut body = vec![0, 3];
        body.extend_from_slice(&1i32.to_be_bytes());
        body.push(b'7');
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(b"a:b");
        assert_eq!(
            data_row(&body).unwrap(),
            vec![Some("7".to_owned()), None, Some("a:b".to_owned())]
        );
        for cut in 0..body.len() {
            assert!(data_row(&body[..cut]).is_err(), "cut at {cut}");
        }
    }
}
