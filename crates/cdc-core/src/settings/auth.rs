//! [`Auth`]: `auth:` credentials, one shape for every sink.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Problem, Secret};

/// Credentials for a sink's servers. Give one kind: `username` and
/// `password`; `token`; `api_key`; `nkey_seed`; or `credentials_file`.
/// `mechanism` names the SASL mechanism of `username`/`password` where the
/// protocol has several (Kafka). Each sink accepts the kinds its servers
/// support ([`check`](Auth::check)). `Debug` masks every secret.
///
/// Built in code: start from [`Auth::default`] (no credentials) and set
/// the fields, e.g. `auth.username = Some("cdc".into())`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Auth {
    /// `username`, with `password`.
    #[serde(default)]
    pub username: Option<String>,
    /// `password`, with `username`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// `mechanism`: the SASL mechanism of `username`/`password`.
    #[serde(default)]
    pub mechanism: Option<String>,
    /// `token`: a server token.
    #[serde(default)]
    pub token: Option<Secret>,
    /// `api_key`: an API key.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// `nkey_seed`: an nkey seed.
    #[serde(default)]
    pub nkey_seed: Option<Secret>,
    /// `credentials_file`: a credentials file (for NATS, a `.creds` file).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

/// A kind of credential of [`Auth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    /// `username` and `password`.
    UserPassword,
    /// `token`.
    Token,
    /// `api_key`.
    ApiKey,
    /// `nkey_seed`.
    NkeySeed,
    /// `credentials_file`.
    CredentialsFile,
}

impl Credential {
    const ALL: [Credential; 5] = [
        Credential::UserPassword,
        Credential::Token,
        Credential::ApiKey,
        Credential::NkeySeed,
        Credential::CredentialsFile,
    ];

    /// How the configuration spells it, for messages: ``"`username` and
    /// `password`"`` or ``"`token`"``.
    pub const fn keys(self) -> &'static str {
        match self {
            Credential::UserPassword => "`username` and `password`",
            Credential::Token => "`token`",
            Credential::ApiKey => "`api_key`",
            Credential::NkeySeed => "`nkey_seed`",
            Credential::CredentialsFile => "`credentials_file`",
        }
    }

    /// The field a problem with it is reported under.
    const fn field(self) -> &'static str {
        match self {
            Credential::UserPassword => "auth.username",
            Credential::Token => "auth.token",
            Credential::ApiKey => "auth.api_key",
            Credential::NkeySeed => "auth.nkey_seed",
            Credential::CredentialsFile => "auth.credentials_file",
        }
    }
}

impl Auth {
    /// The kinds of credential given, in [`Credential`] order.
    pub fn given(&self) -> Vec<Credential> {
        Credential::ALL
            .into_iter()
            .filter(|c| match c {
                Credential::UserPassword => self.username.is_some() || self.password.is_some(),
                Credential::Token => self.token.is_some(),
                Credential::ApiKey => self.api_key.is_some(),
                Credential::NkeySeed => self.nkey_seed.is_some(),
                Credential::CredentialsFile => self.credentials_file.is_some(),
            })
            .collect()
    }

    /// Problems of this section for a sink that accepts the credentials
    /// `accepted` and, for `username`/`password`, the SASL `mechanisms`
    /// (empty: the sink has no `mechanism`). Exactly one kind must be
    /// given. `(field, message)`, fields as `auth.<key>`.
    pub fn check(&self, accepted: &[Credential], mechanisms: &[&str]) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut push = |field: &str, message: String| problems.push((field.to_owned(), message));
        let names = |cs: &[Credential]| {
            cs.iter()
                .map(|c| c.keys())
                .collect::<Vec<_>>()
                .join(", or ")
        };
        let given = self.given();
        match given.as_slice() {
            [] => push("auth", format!("give the credentials: {}", names(accepted))),
            [_] => {}
            more => push(
                "auth",
                format!("give only one kind of credentials, not {}", names(more)),
            ),
        }
        for c in &given {
            if !accepted.contains(c) {
                push(
                    c.field(),
                    format!("not accepted by this sink; it takes {}", names(accepted)),
                );
            }
        }
        if given.contains(&Credential::UserPassword) {
            match &self.username {
                None => push("auth.username", "needed with `password`".into()),
                Some(u) if u.trim().is_empty() => push("auth.username", "must not be empty".into()),
                Some(_) => {}
            }
            if self.password.is_none() {
                push("auth.password", "needed with `username`".into());
            }
        }
        match (&self.mechanism, mechanisms.is_empty()) {
            (Some(_), true) => push(
                "auth.mechanism",
                "this sink has no SASL mechanism to choose".into(),
            ),
            (Some(m), false) if !mechanisms.contains(&m.as_str()) => push(
                "auth.mechanism",
                format!("`{m}` is not one of {}", mechanisms.join(", ")),
            ),
            (None, false) if given.contains(&Credential::UserPassword) => push(
                "auth.mechanism",
                format!("needed with `username`: one of {}", mechanisms.join(", ")),
            ),
            _ => {}
        }
        problems
    }

    /// The secrets of this section.
    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        [&self.password, &self.token, &self.api_key, &self.nkey_seed]
            .into_iter()
            .flatten()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn fields(p: Vec<Problem>) -> Vec<String> {
        p.into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn exactly_one_accepted_kind() {
        let user = Auth {
            username: Some("cdc".into()),
            password: Some("pw".into()),
            ..Auth::default()
        };
        assert!(user.check(&[Credential::UserPassword], &[]).is_empty());
        assert_eq!(
            fields(user.check(&[Credential::Token], &[])),
            ["auth.username"]
        );
        assert_eq!(
            fields(Auth::default().check(&[Credential::Token], &[])),
            ["auth"]
        );
        let two = Auth {
            token: Some("t".into()),
            ..user.clone()
        };
        assert_eq!(
            fields(two.check(&[Credential::UserPassword, Credential::Token], &[])),
            ["auth"]
        );
        let half = Auth {
            password: None,
            ..user.clone()
        };
        assert_eq!(
            fields(half.check(&[Credential::UserPassword], &[])),
            ["auth.password"]
        );
    }

    #[test]
    fn mechanisms_where_the_sink_has_them() {
        let user = Auth {
            username: Some("cdc".into()),
            password: Some("pw".into()),
            ..Auth::default()
        };
        let sasl = ["PLAIN", "SCRAM-SHA-512"];
        assert_eq!(
            fields(user.check(&[Credential::UserPassword], &sasl)),
            ["auth.mechanism"]
        );
        let with = Auth {
            mechanism: Some("PLAIN".into()),
            ..user.clone()
        };
        assert!(with.check(&[Credential::UserPassword], &sasl).is_empty());
        assert_eq!(
            fields(with.check(&[Credential::UserPassword], &[])),
            ["auth.mechanism"]
        );
        let bad = Auth {
            mechanism: Some("GSSAPI".into()),
            ..user
        };
        assert_eq!(
            fields(bad.check(&[Credential::UserPassword], &sasl)),
            ["auth.mechanism"]
        );
    }

    #[test]
    fn debug_masks_every_secret() {
        let a = Auth {
            username: Some("cdc".into()),
            password: Some("hunter2".into()),
            token: Some("tok-123".into()),
            api_key: Some("key-456".into()),
            nkey_seed: Some("SUAB".into()),
            ..Auth::default()
        };
        let text = format!("{a:?}");
        for s in ["hunter2", "tok-123", "key-456", "SUAB"] {
            assert!(!text.contains(s), "{s} in {text}");
        }
        assert_eq!(a.secrets().count(), 4);
    }
}
