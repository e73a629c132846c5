//! Errors that sources and sinks report, classified for the retry policy.

use std::error::Error as StdError;
use std::fmt;

/// What the engine should do about an error.
///
/// Exhaustive on purpose, like [`Op`](crate::Op): every retry loop matches
/// it in full, so a class added one day makes each of them decide what to
/// do with it instead of falling into a catch-all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Transient (connection lost, timeout, broker busy): retry the same
    /// work with backoff. Nothing was acknowledged past it.
    Retryable,
    /// Permanent (bad configuration, missing privilege, message too large):
    /// stop the pipeline and tell the user. Nothing is acknowledged past it.
    Fatal,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::Retryable => "retryable",
            ErrorClass::Fatal => "fatal",
        })
    }
}

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

macro_rules! classified_error {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, thiserror::Error)]
        #[error("{message}")]
        pub struct $name {
            class: ErrorClass,
            message: String,
            #[source]
            source: Option<BoxError>,
        }

        impl $name {
            /// A transient error: the same work will be tried again.
            pub fn retryable(message: impl Into<String>) -> Self {
                Self { class: ErrorClass::Retryable, message: message.into(), source: None }
            }

            /// A permanent error: the pipeline stops.
            pub fn fatal(message: impl Into<String>) -> Self {
                Self { class: ErrorClass::Fatal, message: message.into(), source: None }
            }

            /// Attaches the underlying cause.
            pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
                self.source = Some(source.into());
                self
            }

            /// How the engine treats this error.
            pub fn class(&self) -> ErrorClass {
                self.class
            }

            /// `true` when the work may be retried.
            pub fn is_retryable(&self) -> bool {
                self.class == ErrorClass::Retryable
            }

            /// The message, without the cause chain.
            pub fn message(&self) -> &str {
                &self.message
            }
        }
    };
}

classified_error!(
    /// An error writing to a sink.
    SinkError
);

classified_error!(
    /// An error reading from a source.
    SourceError
);

/// Renders an error with its whole cause chain: `outer: inner: root`.
pub fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let s = c.to_string();
        // Many libraries repeat their cause in their own message: print
        // each text once.
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_chain() {
        let io = std::io::Error::other("connection reset");
        let e = SinkError::retryable("write failed").with_source(io);
        assert!(e.is_retryable());
        assert_eq!(error_chain(&e), "write failed: connection reset");
        let io = std::io::Error::other("authorization violation");
        let e =
            SinkError::fatal("cannot connect: authorization violation (code 1)").with_source(io);
        assert_eq!(
            error_chain(&e),
            "cannot connect: authorization violation (code 1)"
        );
        assert_eq!(SourceError::fatal("x").class(), ErrorClass::Fatal);
    }
}
