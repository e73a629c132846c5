//! [`Tls`]: `tls: { ca, cert, key, key_password, verify_hostname }`.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Problem, Secret};

/// TLS towards a sink's servers. Present: connect with TLS; absent:
/// whatever the URL says (plaintext for Kafka).
///
/// Built in code: start from [`Tls::default`] (system roots, hostname
/// verified, no client certificate) and set the fields, e.g.
/// `tls.ca = Some("/etc/ssl/ca.pem".into())`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Tls {
    /// `ca`: PEM file of the certificate authorities to trust (in addition
    /// to, or instead of, the system's; see each sink).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// `cert`: PEM file of a client certificate (mutual TLS), with `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// `key`: PEM file of the client certificate's private key.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// `key_password`: password of `key`, if it is encrypted.
    #[serde(default)]
    pub key_password: Option<Secret>,
    /// `verify_hostname`: check the server's name against its certificate.
    /// Default `true`.
    #[serde(default = "verify_by_default")]
    pub verify_hostname: bool,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            ca: None,
            cert: None,
            key: None,
            key_password: None,
            verify_hostname: true,
        }
    }
}

/// What a sink's client can do with [`Tls`]; [`Tls::check`] refuses the
/// rest by name. Built with [`TlsSupport::new`] (a CA and hostname
/// verification only) and the `with_*` methods, all `const`:
///
/// ```
/// use cdc_core::settings::{Tls, TlsSupport};
///
/// const TLS_SUPPORT: TlsSupport = TlsSupport::new("my-sink").with_client_certificate();
///
/// let mut tls = Tls::default();
/// tls.key_password = Some("pw".into());
/// let problems = tls.check(TLS_SUPPORT);
/// assert_eq!(problems[0].0, "tls.key_password");
/// ```
///
/// A key added to [`Tls`] later comes with a field here that is `false`
/// (not supported) unless a sink says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsSupport {
    /// The sink's name, for messages (`kafka`).
    pub sink: &'static str,
    /// Whether `cert` and `key` (a client certificate) are supported.
    pub client_certificate: bool,
    /// Whether `key_password` (an encrypted client key) is supported.
    pub key_password: bool,
    /// Whether `verify_hostname: false` is supported.
    pub skip_hostname_verification: bool,
}

impl TlsSupport {
    /// A sink named `sink` (for messages: `kafka`) whose client takes a CA
    /// (`ca`) and always verifies hostnames: nothing else is supported.
    pub const fn new(sink: &'static str) -> Self {
        Self {
            sink,
            client_certificate: false,
            key_password: false,
            skip_hostname_verification: false,
        }
    }

    /// Also `cert` and `key` (a client certificate, mutual TLS).
    pub const fn with_client_certificate(mut self) -> Self {
        self.client_certificate = true;
        self
    }

    /// Also `key_password` (an encrypted client key).
    pub const fn with_key_password(mut self) -> Self {
        self.key_password = true;
        self
    }

    /// Also `verify_hostname: false`.
    pub const fn with_skip_hostname_verification(mut self) -> Self {
        self.skip_hostname_verification = true;
        self
    }
}

impl Tls {
    /// Problems of this section for a sink that supports `support`:
    /// `(field, message)`, fields as `tls.<key>`.
    pub fn check(&self, support: TlsSupport) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut push = |field: &str, message: String| {
            problems.push((format!("tls.{field}"), message));
        };
        let unsupported =
            |what: &str| format!("{what} is not supported by the {} sink", support.sink);
        if !support.client_certificate {
            if self.cert.is_some() {
                push("cert", unsupported("a client certificate"));
            }
            if self.key.is_some() {
                push("key", unsupported("a client certificate"));
            }
        } else if self.cert.is_some() != self.key.is_some() {
            let field = if self.cert.is_some() { "key" } else { "cert" };
            push(field, "`tls.cert` and `tls.key` go together".into());
        }
        if self.key_password.is_some() {
            if !support.key_password {
                push("key_password", unsupported("an encrypted key"));
            } else if self.key.is_none() {
                push("key_password", "needs `tls.key`".into());
            }
        }
        if !self.verify_hostname && !support.skip_hostname_verification {
            push(
                "verify_hostname",
                unsupported("turning off hostname verification"),
            );
        }
        problems
    }

    /// The secrets of this section.
    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        self.key_password.iter()
    }
}

fn verify_by_default() -> bool {
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const ALL: TlsSupport = TlsSupport {
        sink: "test",
        client_certificate: true,
        key_password: true,
        skip_hostname_verification: true,
    };

    fn fields(p: Vec<Problem>) -> Vec<String> {
        p.into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn names_what_is_missing_or_unsupported() {
        let t = Tls {
            cert: Some("/c.pem".into()),
            key_password: Some("pw".into()),
            ..Tls::default()
        };
        assert_eq!(fields(t.check(ALL)), ["tls.key", "tls.key_password"]);
        let none = TlsSupport {
            client_certificate: false,
            key_password: false,
            skip_hostname_verification: false,
            ..ALL
        };
        let t = Tls {
            cert: Some("/c.pem".into()),
            key: Some("/k.pem".into()),
            key_password: Some("pw".into()),
            verify_hostname: false,
            ..Tls::default()
        };
        assert_eq!(
            fields(t.check(none)),
            [
                "tls.cert",
                "tls.key",
                "tls.key_password",
                "tls.verify_hostname"
            ]
        );
        assert!(Tls::default().check(none).is_empty());
    }
}
