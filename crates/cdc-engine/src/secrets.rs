//! The secret values of a configuration (passwords, tokens, keys), so that
//! text on its way to a log line or to `/status` can be checked for them.
//!
//! This is the second line of defence: the code paths themselves do not
//! print secrets (URLs are shown redacted, `Debug` of the configuration
//! masks them). Scrubbing catches what a dependency's error message might
//! repeat, e.g. a URL with its password.

use std::borrow::Cow;

use crate::config::{Config, SinkConfig};

/// What replaces a secret in scrubbed text.
const MASK: &str = "***";

/// Secrets shorter than this are not scrubbed: masking every `a` in a log
/// line would destroy it without protecting anything.
const MIN_SCRUBBED_LEN: usize = 4;

/// The secret values of one configuration.
#[derive(Clone, Default)]
pub struct Secrets {
    values: Vec<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} values)", self.values.len())
    }
}

impl Secrets {
    /// Collects every secret of `config`: the source URL's password, Kafka's
    /// SASL and TLS key passwords (and `properties` whose key names a
    /// password or secret), NATS's token, password and nkey seed,
    /// Elasticsearch's password and API key, and passwords written into any
    /// sink URL.
    pub fn from_config(config: &Config) -> Self {
        let mut s = Self::default();
        s.add_url(&config.source.url);
        for sink in &config.sinks {
            s.add_sink(sink);
        }
        // Longest first, so that a secret containing another is masked whole.
        s.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        s.values.dedup();
        s
    }

    #[cfg_attr(
        not(any(feature = "kafka", feature = "nats", feature = "elasticsearch")),
        allow(unused_variables)
    )]
    fn add_sink(&mut self, sink: &SinkConfig) {
        let s = self;
        match sink {
            SinkConfig::Stdout(_) | SinkConfig::File(_) => {}
            #[cfg(feature = "kafka")]
            SinkConfig::Kafka(k) => {
                if let Some(sasl) = &k.sasl {
                    s.add(&sasl.password.0);
                }
                if let Some(pw) = k.tls.as_ref().and_then(|t| t.key_password.as_ref()) {
                    s.add(&pw.0);
                }
                for (key, value) in &k.properties {
                    let key = key.to_ascii_lowercase();
                    if key.contains("password") || key.contains("secret") {
                        s.add(value);
                    }
                }
            }
            #[cfg(feature = "nats")]
            SinkConfig::Nats(n) => {
                s.add_url(&n.url);
                for v in [&n.auth.token, &n.auth.password, &n.auth.nkey_seed]
                    .into_iter()
                    .flatten()
                {
                    s.add(v);
                }
            }
            #[cfg(feature = "elasticsearch")]
            SinkConfig::Elasticsearch(e) => {
                for url in &e.urls {
                    s.add_url(url);
                }
                if let Some(auth) = &e.auth {
                    for v in [&auth.password, &auth.api_key].into_iter().flatten() {
                        s.add(v);
                    }
                }
            }
        }
    }

    /// Adds one secret value.
    fn add(&mut self, value: &str) {
        if value.len() >= MIN_SCRUBBED_LEN {
            self.values.push(value.to_owned());
        }
    }

    /// Adds the password of a URL's user info and of a `password` query
    /// parameter, as written and percent-decoded.
    fn add_url(&mut self, url: &str) {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        if let Some(at) = rest.rfind('@') {
            if let Some((_, password)) = rest[..at].split_once(':') {
                self.add(password);
                self.add(&percent_decode(password));
            }
        }
        if let Some((_, query)) = rest.split_once('?') {
            for pair in query.split(['&', '#']) {
                if let Some((key, value)) = pair.split_once('=') {
                    if key.eq_ignore_ascii_case("password") {
                        self.add(value);
                        self.add(&percent_decode(value));
                    }
                }
            }
        }
    }

    /// `text` with every secret replaced by `***`.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in &self.values {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), MASK));
            }
        }
        out
    }
}

/// `%XX` sequences decoded; invalid ones and non-UTF-8 results left as is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => match (hex(h), hex(l)) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

/// A `tracing` writer that scrubs secrets from each log line before it
/// reaches standard error (the formatter writes one whole event per call).
#[derive(Clone, Debug)]
pub struct ScrubbingStderr {
    secrets: std::sync::Arc<Secrets>,
}

impl ScrubbingStderr {
    /// A writer that masks `secrets`.
    pub fn new(secrets: Secrets) -> Self {
        Self {
            secrets: std::sync::Arc::new(secrets),
        }
    }
}

impl std::io::Write for ScrubbingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(self.secrets.scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ScrubbingStderr {
    type Writer = ScrubbingStderr;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn masks_url_passwords_raw_and_decoded() {
        let config = crate::config::parse_config(
            "source:\n  url: postgres://u:p%40ss-w0rd@h/db?password=other-secret\n  tables: [public.t]\nsinks: [{ type: stdout }]\n",
        )
        .unwrap();
        let s = Secrets::from_config(&config);
        assert_eq!(
            s.scrub("a p%40ss-w0rd b p@ss-w0rd c other-secret"),
            "a *** b *** c ***"
        );
        assert!(matches!(s.scrub("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn short_values_are_not_masked() {
        let config = crate::config::parse_config(
            "source:\n  url: postgres://u:ab@h/db\n  tables: [public.t]\nsinks: [{ type: stdout }]\n",
        )
        .unwrap();
        assert_eq!(Secrets::from_config(&config).scrub("ab cd"), "ab cd");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }
}
