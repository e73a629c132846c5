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

/// Configured secrets shorter than this are masked only where they stand
/// as values (URL user info, secret fields): masking every standalone `a`
/// or `ab` in a log line would destroy it without protecting anything.
const MIN_SCRUBBED_LEN: usize = 3;

/// The secret values of one configuration.
#[derive(Clone, Default)]
pub struct Secrets {
    values: Vec<String>,
    /// User names of the configured URLs: shown wherever a URL is shown
    /// (`postgres://cdc:***@host`), so a password equal to one of them
    /// cannot be hidden by masking the word elsewhere, and is not.
    users: Vec<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} values)", self.values.len())
    }
}

impl Secrets {
    /// Collects every secret of `config`: the source URL's password, every
    /// sink's `auth` secrets (password, token, API key, nkey seed) and TLS
    /// key password, Kafka `properties` whose key names a password or
    /// secret, and passwords written into any sink URL.
    pub fn from_config(config: &Config) -> Self {
        let mut s = Self::default();
        s.add_url(&config.source.url);
        if let Some(url) = &config.source.primary_url {
            s.add_url(url);
        }
        for sink in &config.sinks {
            s.add_sink(sink);
        }
        // Longest first, so that a secret containing another is masked whole.
        s.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        s.values.dedup();
        s
    }

    fn add_sink(&mut self, sink: &SinkConfig) {
        match sink {
            SinkConfig::Stdout(_) | SinkConfig::File(_) => {}
            SinkConfig::Crate(c) => {
                for url in c.settings.urls() {
                    self.add_url(url);
                }
                for secret in c.settings.secrets() {
                    self.add(secret);
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
            let (user, password) = rest[..at].split_once(':').unwrap_or((&rest[..at], ""));
            self.users.push(percent_decode(user));
            if !password.is_empty() {
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

    /// `text` with every secret masked as `***` where it appears as a
    /// value:
    ///
    /// - the password of any URL's user info (`scheme://user:PASSWORD@host`),
    ///   whether or not it is one of the configured secrets;
    /// - the value of a secret field (`password=…`, `"token":"…"`,
    ///   `api_key: …`) and of an `Authorization` header;
    /// - anywhere else, a configured secret that stands as a token of its
    ///   own.
    ///
    /// A secret that is part of a longer word, of a module path
    /// (`cdc_postgres::setup`), a field name (`postgres=`) or a URL's
    /// scheme, user or host is left alone: a password `postgres` must not
    /// turn `cdc_postgres::setup::publication` into
    /// `cdc_***::setup::publication`.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut spans = Spans::default();
        mask_url_userinfo(text, &mut spans);
        mask_secret_fields(text, &mut spans);
        for secret in &self.values {
            if !self.users.contains(secret) {
                mask_standalone(text, secret, &mut spans);
            }
        }
        spans.apply(text)
    }
}

/// Byte ranges of a text to mask, and ranges that must stay as they are
/// (a URL's scheme, user and host).
#[derive(Default)]
struct Spans {
    masked: Vec<(usize, usize)>,
    kept: Vec<(usize, usize)>,
}

impl Spans {
    fn overlaps(ranges: &[(usize, usize)], start: usize, end: usize) -> bool {
        ranges.iter().any(|&(s, e)| start < e && s < end)
    }

    fn mask(&mut self, start: usize, end: usize) {
        if start < end && !Self::overlaps(&self.masked, start, end) {
            self.masked.push((start, end));
        }
    }

    fn keep(&mut self, start: usize, end: usize) {
        if start < end {
            self.kept.push((start, end));
        }
    }

    fn is_free(&self, start: usize, end: usize) -> bool {
        !Self::overlaps(&self.masked, start, end) && !Self::overlaps(&self.kept, start, end)
    }

    fn apply<'a>(mut self, text: &'a str) -> Cow<'a, str> {
        if self.masked.is_empty() {
            return Cow::Borrowed(text);
        }
        self.masked.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end) in self.masked {
            out.push_str(&text[at..start]);
            out.push_str(MASK);
            at = end;
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }
}

/// Bytes that end a URL's authority (`user:password@host:port`) in running
/// text.
fn ends_authority(b: u8) -> bool {
    matches!(
        b,
        b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'`' | b',' | b';' | b')' | b']' | b'}'
    ) || b.is_ascii_whitespace()
}

/// Masks the password of every `scheme://user:password@host`; keeps the
/// scheme, user and host as they are.
fn mask_url_userinfo(text: &str, spans: &mut Spans) {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let sep = from + found;
        let scheme_start = bytes[..sep]
            .iter()
            .rposition(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
            .map_or(0, |p| p + 1);
        let authority_start = sep + 3;
        let authority_end = bytes[authority_start..]
            .iter()
            .position(|&b| ends_authority(b))
            .map_or(bytes.len(), |p| authority_start + p);
        spans.keep(scheme_start, authority_start);
        let authority = &text[authority_start..authority_end];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    spans.keep(authority_start, authority_start + colon);
                    spans.mask(authority_start + colon + 1, authority_start + at);
                }
                None => spans.keep(authority_start, authority_start + at),
            }
            spans.keep(authority_start + at + 1, authority_end);
        } else {
            spans.keep(authority_start, authority_end);
        }
        from = authority_end.max(sep + 3);
    }
}

/// Field names whose values are secrets, lower case.
const SECRET_FIELDS: [&str; 7] = [
    "password",
    "passwd",
    "token",
    "secret",
    "api_key",
    "apikey",
    "nkey_seed",
];

/// Bytes that end a field's value in running text.
fn ends_value(b: u8) -> bool {
    matches!(
        b,
        b'&' | b',' | b'"' | b'\'' | b';' | b')' | b']' | b'}' | b'>'
    ) || b.is_ascii_whitespace()
}

/// Masks the value of `password=…`, `"password":"…"`, `token: …` and the
/// like, and the credentials of an `Authorization:` header.
fn mask_secret_fields(text: &str, spans: &mut Spans) {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    for field in SECRET_FIELDS.iter().copied().chain(["authorization"]) {
        let mut from = 0;
        while let Some(found) = lower[from..].find(field) {
            let start = from + found;
            from = start + field.len();
            // A field name ends here, is not part of a longer word
            // (`tokens`, `passwordless`), and is followed by `=` or `:`,
            // allowing for JSON quotes around it and spaces after it.
            let mut i = start + field.len();
            if bytes.get(i).is_some_and(|&b| is_word_byte(b)) {
                continue;
            }
            if bytes.get(i) == Some(&b'"') {
                i += 1;
            }
            if !matches!(bytes.get(i), Some(b'=' | b':')) {
                continue;
            }
            i += 1;
            while bytes.get(i) == Some(&b' ') {
                i += 1;
            }
            // A quoted value ends at its closing quote.
            let quote = bytes.get(i).copied().filter(|&b| b == b'"' || b == b'\'');
            if quote.is_some() {
                i += 1;
            }
            if field == "authorization" {
                // `Basic …`, `Bearer …`, `ApiKey …`: the scheme stays.
                let word_end = bytes[i..]
                    .iter()
                    .position(|&b| ends_value(b))
                    .map_or(bytes.len(), |p| i + p);
                if bytes.get(word_end) == Some(&b' ') {
                    i = word_end + 1;
                }
            }
            let end = bytes[i..]
                .iter()
                .position(|&b| quote.map_or_else(|| ends_value(b), |q| b == q))
                .map_or(bytes.len(), |p| i + p);
            if &text[i..end] != MASK && spans.is_free(i, end) {
                spans.mask(i, end);
            }
        }
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The byte before `at`, skipping back over ANSI colour sequences
/// (`ESC [ … m`) that a terminal formatter puts around words.
fn byte_before(bytes: &[u8], mut at: usize) -> Option<u8> {
    loop {
        let b = *bytes.get(at.checked_sub(1)?)?;
        if b == b'm' {
            let csi = bytes[..at - 1]
                .iter()
                .rposition(|&c| c == 0x1b)
                .filter(|&esc| {
                    bytes.get(esc + 1) == Some(&b'[')
                        && bytes[esc + 2..at - 1]
                            .iter()
                            .all(|&c| c.is_ascii_digit() || c == b';')
                });
            if let Some(esc) = csi {
                at = esc;
                continue;
            }
        }
        return Some(b);
    }
}

/// The byte at `at`, skipping over ANSI colour sequences.
fn byte_at(bytes: &[u8], mut at: usize) -> Option<u8> {
    loop {
        let b = *bytes.get(at)?;
        if b == 0x1b && bytes.get(at + 1) == Some(&b'[') {
            let end = bytes[at + 2..]
                .iter()
                .position(|&c| !(c.is_ascii_digit() || c == b';'));
            if let Some(p) = end.filter(|&p| bytes.get(at + 2 + p) == Some(&b'm')) {
                at += 2 + p + 1;
                continue;
            }
        }
        return Some(b);
    }
}

/// Masks each occurrence of `secret` that stands as a token of its own:
/// not inside a longer word, a module path, a field name or a URL's
/// scheme, user or host.
fn mask_standalone(text: &str, secret: &str, spans: &mut Spans) {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(found) = text[from..].find(secret) {
        let start = from + found;
        let end = start + secret.len();
        from = start + secret.len().max(1);
        let before = byte_before(bytes, start);
        let after = byte_at(bytes, end);
        let in_word = before.is_some_and(is_word_byte) || after.is_some_and(is_word_byte);
        let in_path = text[..start].ends_with("::") || text[end..].starts_with("::");
        let is_field_name = after == Some(b'=');
        if !in_word && !in_path && !is_field_name && spans.is_free(start, end) {
            spans.mask(start, end);
        }
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
        crate::progress::write_log(self.secrets.scrub(&text).as_bytes())?;
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

    fn secrets(password: &str) -> Secrets {
        let config = crate::config::parse_config(&format!(
            "source:\n  url: postgres://app:{password}@h/db\n  tables: [public.t]\nsinks: [{{ type: stdout }}]\n"
        ))
        .unwrap();
        Secrets::from_config(&config)
    }

    #[test]
    fn module_paths_field_names_and_words_are_kept() {
        for (password, line) in [
            (
                "postgres",
                "INFO cdc_postgres::setup::publication: created publication=demo_pub",
            ),
            (
                "postgres",
                "DEBUG postgres::conn: postgres=1 tokio_postgres postgresql",
            ),
            (
                "cdc",
                "INFO cdc_engine::run: stopped acknowledged=0/16B3748 cdc_slot",
            ),
            ("engine", "INFO cdc_engine::run: engine_state=ok"),
        ] {
            assert_eq!(secrets(password).scrub(line), line, "password {password}");
        }
    }

    #[test]
    fn a_password_equal_to_the_user_name_is_masked_only_as_a_password() {
        // The user name is shown in every redacted URL: masking the same
        // word elsewhere would hide nothing.
        let config = crate::config::parse_config(
            "source:\n  url: postgres://postgres:postgres@h/db\n  tables: [public.t]\nsinks: [{ type: stdout }]\n",
        )
        .unwrap();
        let s = Secrets::from_config(&config);
        assert_eq!(
            s.scrub("ok role postgres: superuser; url postgres://postgres:postgres@h/db"),
            "ok role postgres: superuser; url postgres://postgres:***@h/db"
        );
    }

    #[test]
    fn standalone_secrets_are_masked() {
        let s = secrets("engine");
        assert_eq!(
            s.scrub("auth failed: engine (engine) \"engine\""),
            "auth failed: *** (***) \"***\""
        );
        assert_eq!(
            secrets("cdc").scrub("metadata (cdc): x"),
            "metadata (***): x"
        );
    }

    #[test]
    fn url_passwords_are_masked_scheme_user_and_host_kept() {
        let s = secrets("postgres");
        assert_eq!(
            s.scrub("connecting to postgres://postgres:postgres@127.0.0.1:5432/app"),
            "connecting to postgres://postgres:***@127.0.0.1:5432/app"
        );
        // Any URL's password, configured or not, any length.
        assert_eq!(
            Secrets::default().scrub("nats://u:x@host:4222, http://a:b@c/"),
            "nats://u:***@host:4222, http://a:***@c/"
        );
        assert_eq!(
            Secrets::default().scrub("postgres://user@host/db http://host/"),
            "postgres://user@host/db http://host/"
        );
    }

    #[test]
    fn secret_fields_and_auth_headers_are_masked() {
        let none = Secrets::default();
        assert_eq!(none.scrub("password=hunter2 user=x"), "password=*** user=x");
        assert_eq!(
            none.scrub(r#"{"password":"a b","sasl.password": "z", "tokens":1}"#),
            r#"{"password":"***","sasl.password": "***", "tokens":1}"#
        );
        assert_eq!(
            none.scrub("Authorization: Basic dXNlcjpwYXNz\r\nx"),
            "Authorization: Basic ***\r\nx"
        );
        assert_eq!(
            none.scrub("password authentication failed for user \"app\""),
            "password authentication failed for user \"app\""
        );
    }

    #[test]
    fn terminal_colours_do_not_hide_a_secret() {
        let s = secrets("engine");
        assert_eq!(
            s.scrub("\x1b[3merror\x1b[0m\x1b[2m=\x1b[0mengine\x1b[0m"),
            "\x1b[3merror\x1b[0m\x1b[2m=\x1b[0m***\x1b[0m"
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }
}
