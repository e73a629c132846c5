//! Configuration shapes every sink shares, so that a duration, a secret,
//! TLS and credentials are written the same way in every `sinks[]` entry:
//!
//! * durations as text with a unit: `500ms`, `30s`, `5m`, `1h`
//!   ([`deserialize_duration`], [`parse_duration`]);
//! * [`Secret`]: a password, token or key, never shown by `Debug` or
//!   `Display`;
//! * [`Tls`]: `tls: { ca, cert, key, key_password, verify_hostname }`;
//! * [`Auth`]: `auth: { username, password }`, or `token`, `api_key`,
//!   `nkey_seed`, `credentials_file`, with a SASL `mechanism` where the
//!   protocol has one; each sink accepts the kinds its server supports
//!   ([`Auth::check`]).
//!
//! ```
//! use cdc_core::settings::{deserialize_duration, Auth, Credential, Tls};
//! use std::time::Duration;
//!
//! #[derive(serde::Deserialize)]
//! struct MySinkConfig {
//!     #[serde(deserialize_with = "deserialize_duration")]
//!     timeout: Duration,
//!     #[serde(default)]
//!     auth: Option<Auth>,
//!     #[serde(default)]
//!     tls: Option<Tls>,
//! }
//!
//! let c: MySinkConfig = serde_json::from_str(
//!     r#"{"timeout": "30s", "auth": {"username": "cdc", "password": "pw"}}"#,
//! ).unwrap();
//! assert_eq!(c.timeout, Duration::from_secs(30));
//! let auth = c.auth.unwrap();
//! assert!(auth.check(&[Credential::UserPassword], &[]).is_empty());
//! assert_eq!(format!("{:?}", auth.password), "Some(***)");
//! ```

mod auth;
mod duration;
mod secret;
mod tls;

pub use auth::{Auth, Credential};
pub use duration::{deserialize_duration, deserialize_optional_duration, parse_duration};
pub use secret::Secret;
pub use tls::{Tls, TlsSupport};

/// A configuration problem: the field (relative to the sink entry, e.g.
/// `auth.password`) and what is wrong with it.
pub type Problem = (String, String);

/// `Ok` when `problems` is empty, else the first of them as
/// `<field>: <message>`: how a sink's `connect` refuses an entry that was
/// not validated before.
///
/// ```
/// use cdc_core::settings::no_problems;
/// assert_eq!(no_problems(Vec::new()), Ok(()));
/// let problems = vec![("brokers".to_owned(), "at least one is required".to_owned())];
/// assert_eq!(no_problems(problems), Err("brokers: at least one is required".to_owned()));
/// ```
pub fn no_problems(problems: Vec<Problem>) -> Result<(), String> {
    match problems.into_iter().next() {
        Some((field, message)) => Err(format!("{field}: {message}")),
        None => Ok(()),
    }
}
