//! The client side of the proxy: HTTP/1.1 requests read from a socket
//! (bodies by `content-length` or `transfer-encoding: chunked`) and
//! responses written back with a `content-length`.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted (the sink's `_bulk` bodies are a few MiB).
const MAX_BODY: usize = 256 * 1024 * 1024;

/// One request as the client sent it.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// Path and query, as on the request line.
    pub(crate) target: String,
    /// Header names in lower case, in order.
    pub(crate) headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub(crate) body: Vec<u8>,
    /// The client asked to close the connection after the answer (or
    /// spoke HTTP/1.0).
    pub(crate) close: bool,
}

impl Request {
    /// The path without the query.
    pub(crate) fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The first value of header `name` (lower case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads requests from one connection, keeping bytes that arrived early.
pub(crate) struct RequestReader<R> {
    socket: R,
    buf: Vec<u8>,
}

fn bad(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

impl<R: AsyncRead + Unpin> RequestReader<R> {
    pub(crate) fn new(socket: R) -> Self {
        Self {
            socket,
            buf: Vec::new(),
        }
    }

    /// Reads more bytes; `false` at end of stream.
    async fn fill(&mut self) -> io::Result<bool> {
        self.buf.reserve(64 * 1024);
        Ok(self.socket.read_buf(&mut self.buf).await? > 0)
    }

    /// The next `\r\n`-terminated line (without it), consumed.
    async fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(bad("line too long"));
            }
            if !self.fill().await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Exactly `n` bytes, consumed.
    async fn bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// The next request; `None` when the client closed the connection
    /// between requests.
    pub(crate) async fn next(&mut self) -> io::Result<Option<Request>> {
        while self.buf.is_empty() {
            if !self.fill().await? {
                return Ok(None);
            }
        }
        let request_line = self.line().await?;
        let mut parts = request_line.split(' ');
        let (Some(method), Some(target), Some(version)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(format!("bad request line `{request_line}`")));
        };
        let (method, target) = (method.to_owned(), target.to_owned());
        let mut close = version == "HTTP/1.0";
        let mut headers = Vec::new();
        let mut head_len = request_line.len();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                break;
            }
            head_len += line.len();
            if head_len > MAX_HEAD {
                return Err(bad("request head too long"));
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(bad(format!("bad header line `{line}`")));
            };
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let value = |name: &str| {
            headers
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(",")
        };
        if value("connection").split(',').any(|t| t.trim() == "close") {
            close = true;
        }
        if value("expect").contains("100-continue") {
            return Err(bad("`expect: 100-continue` is not supported"));
        }
        let body = if value("transfer-encoding").contains("chunked") {
            self.chunked_body().await?
        } else {
            let length = value("content-length");
            let length: usize = if length.is_empty() {
                0
            } else {
                length
                    .parse()
                    .map_err(|_| bad(format!("bad content-length `{length}`")))?
            };
            if length > MAX_BODY {
                return Err(bad("request body too large"));
            }
            self.bytes(length).await?
        };
        Ok(Some(Request {
            method,
            target,
            headers,
            body,
            close,
        }))
    }

    /// A `transfer-encoding: chunked` body, trailers skipped.
    async fn chunked_body(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let size_line = self.line().await?;
            let size = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| bad(format!("bad chunk size `{size_line}`")))?;
            if size == 0 {
                while !self.line().await?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err(bad("request body too large"));
            }
            body.extend_from_slice(&self.bytes(size).await?);
            if !self.line().await?.is_empty() {
                return Err(bad("chunk not followed by CRLF"));
            }
        }
    }
}

/// Writes one response: status line, `headers` (which must not include
/// `content-length`, `transfer-encoding` or `connection`), then the body
/// with its `content-length` (for HEAD: the length of what a GET would
/// return, `body_len`, and no body).
pub(crate) async fn write_response<W: AsyncWrite + Unpin>(
    socket: &mut W,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    head_only: Option<u64>,
    close: bool,
) -> io::Result<()> {
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Status");
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    let length = head_only.unwrap_or(body.len() as u64);
    out.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if head_only.is_none() {
        out.extend_from_slice(body);
    }
    socket.write_all(&out).await?;
    socket.flush().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_requests_by_length_and_chunked() {
        let wire: &[u8] =
            b"POST /_bulk?refresh=true HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n\
GET /x HTTP/1.0\r\n\r\n";
        let mut reader = RequestReader::new(wire);
        let a = reader.next().await.unwrap().unwrap();
        assert_eq!(
            (a.method.as_str(), a.path(), a.body.as_slice(), a.close),
            ("POST", "/_bulk", &b"hello"[..], false)
        );
        assert_eq!(a.header("host"), Some("x"));
        let b = reader.next().await.unwrap().unwrap();
        assert_eq!(b.body, b"abcde");
        let c = reader.next().await.unwrap().unwrap();
        assert!(c.close && c.body.is_empty());
        assert!(reader.next().await.unwrap().is_none());
        // Cut off in the middle of a body.
        let mut short = RequestReader::new(&b"PUT /i HTTP/1.1\r\ncontent-length: 9\r\n\r\nabc"[..]);
        assert!(short.next().await.is_err());
    }
}
