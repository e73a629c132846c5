//! [`SinkSettings`]: what a runtime that builds sinks from a configuration
//! file needs from a sink crate.

use std::future::Future;

use crate::settings::{Auth, Problem, Tls};
use crate::{BoxFuture, DynSink, Sink, SinkError};

/// The configuration of one sink type, as the `cdc-engine` binary (or any
/// runtime that reads sink entries from a file) uses it. A sink crate
/// implements it for its `serde::Deserialize` config struct; the engine
/// then needs one line to offer the sink as a `type:` of `sinks[]`:
/// deserializing the entry's keys, checking them ([`problems`]), masking
/// its secrets in logs ([`secrets`], [`urls`]) and opening the sink
/// ([`open`]) all go through this trait.
///
/// [`problems`]: SinkSettings::problems
/// [`secrets`]: SinkSettings::secrets
/// [`urls`]: SinkSettings::urls
/// [`open`]: SinkSettings::open
///
/// ```
/// use cdc_core::{settings::Problem, Batch, BoxFuture, DynSink, Sink, SinkError, SinkSettings};
///
/// #[derive(serde::Deserialize)]
/// struct CountSinkConfig { limit: u64 }
///
/// struct CountSink { seen: u64 }
///
/// impl Sink for CountSink {
///     async fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
///         self.seen += batch.events.len() as u64;
///         Ok(())
///     }
/// }
///
/// impl SinkSettings for CountSinkConfig {
///     fn problems(&self) -> Vec<Problem> {
///         match self.limit {
///             0 => vec![("limit".into(), "must be at least 1".into())],
///             _ => Vec::new(),
///         }
///     }
///     fn secrets(&self) -> Vec<&str> {
///         Vec::new()
///     }
///     fn open<'a>(&'a self, _pipeline: &'a str) -> BoxFuture<'a, Result<Box<dyn DynSink>, SinkError>> {
///         Box::pin(async { Ok(Box::new(CountSink { seen: 0 }) as Box<dyn DynSink>) })
///     }
/// }
/// ```
pub trait SinkSettings: Send + Sync + 'static {
    /// What is wrong with the configuration, found without any I/O:
    /// `(field, message)` pairs, `field` relative to the sink's entry
    /// (`brokers[1]`, `auth.password`). Empty when it is fine.
    fn problems(&self) -> Vec<Problem>;

    /// The secret values of the configuration (passwords, tokens, keys),
    /// so that the runtime can mask them wherever text could repeat them.
    fn secrets(&self) -> Vec<&str>;

    /// URLs of the configuration whose user info may hold a password
    /// (`nats://user:password@host`); the runtime masks those passwords,
    /// as written and percent-decoded. Default: none.
    fn urls(&self) -> Vec<&str> {
        Vec::new()
    }

    /// Opens the sink for the pipeline named `pipeline` (the name events
    /// carry as `source.name`). Retryable errors mean the servers cannot be
    /// reached yet; fatal ones, that the configuration cannot work.
    fn open<'a>(&'a self, pipeline: &'a str) -> BoxFuture<'a, Result<Box<dyn DynSink>, SinkError>>;
}

/// For [`SinkSettings::open`]: boxes the sink `connect` resolves to, so
/// that `open` is one line around the sink's own async constructor. An
/// error of `connect` is returned as it is.
///
/// ```
/// use cdc_core::{settings::Problem, Batch, BoxFuture, DynSink, Sink, SinkError, SinkSettings};
///
/// #[derive(serde::Deserialize)]
/// struct MySinkConfig { url: String }
///
/// struct MySink { pipeline: String }
///
/// impl MySink {
///     async fn connect(config: &MySinkConfig, pipeline: &str) -> Result<MySink, SinkError> {
///         // ... connect to `config.url` ...
///         Ok(MySink { pipeline: pipeline.to_owned() })
///     }
/// }
///
/// impl Sink for MySink {
///     async fn write_batch(&mut self, _batch: &Batch) -> Result<(), SinkError> {
///         Ok(())
///     }
/// }
///
/// impl SinkSettings for MySinkConfig {
///     fn problems(&self) -> Vec<Problem> {
///         Vec::new()
///     }
///     fn secrets(&self) -> Vec<&str> {
///         Vec::new()
///     }
///     fn urls(&self) -> Vec<&str> {
///         vec![self.url.as_str()]
///     }
///     fn open<'a>(&'a self, pipeline: &'a str) -> BoxFuture<'a, Result<Box<dyn DynSink>, SinkError>> {
///         cdc_core::open_sink(MySink::connect(self, pipeline))
///     }
/// }
/// ```
pub fn open_sink<'a, S, F>(connect: F) -> BoxFuture<'a, Result<Box<dyn DynSink>, SinkError>>
where
    S: Sink + 'static,
    F: Future<Output = Result<S, SinkError>> + Send + 'a,
{
    Box::pin(async move { Ok(Box::new(connect.await?) as Box<dyn DynSink>) })
}

/// For [`SinkSettings::secrets`]: the secrets of a sink's `auth` and `tls`
/// sections.
pub fn section_secrets<'a>(auth: Option<&'a Auth>, tls: Option<&'a Tls>) -> Vec<&'a str> {
    auth.into_iter()
        .flat_map(Auth::secrets)
        .chain(tls.into_iter().flat_map(Tls::secrets))
        .map(|s| s.expose())
        .collect()
}
