//! Errors of the PostgreSQL source, classified as retryable or fatal.

use cdc_core::{ErrorClass, SourceError};

/// Everything that can go wrong reading from PostgreSQL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The connection URL could not be understood.
    #[error("invalid source.url: {0}")]
    InvalidUrl(String),
    /// The server or the configuration is not ready for change data capture;
    /// the message says what to change.
    #[error("{0}")]
    Setup(String),
    /// An ordinary SQL connection or query failed.
    #[error("{context}")]
    Sql {
        /// What was being done.
        context: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The replication connection failed.
    #[error("replication stream")]
    Replication(#[source] pgwire_replication::PgWireError),
    /// A pgoutput message could not be decoded.
    #[error("malformed pgoutput message")]
    Decode(#[from] crate::pgoutput::DecodeError),
    /// A column value could not be parsed.
    #[error("column {column} of {table}")]
    Value {
        /// Table, `schema.name`.
        table: String,
        /// Column name.
        column: String,
        /// The parser's error.
        #[source]
        source: crate::value::ValueError,
    },
    /// The exported snapshot a chunk should be read under is gone (its
    /// exporting session ended); a new coordinator exports another.
    #[error("{0}")]
    SnapshotGone(String),
    /// Another process created the replication slot while this one tried to.
    #[error("the replication slot was created concurrently")]
    SlotRace,
    /// The stream contradicted itself (e.g. a change for a relation never described).
    #[error("replication protocol: {0}")]
    Protocol(String),
}

/// SQLSTATEs after which trying again later can succeed.
fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exceptions
        || matches!(
            code,
            "57P01" // admin_shutdown (walsender terminated, server stopping)
            | "57P02" // crash_shutdown
            | "57P03" // cannot_connect_now (starting up, recovery)
            | "55006" // object_in_use: the slot is active in another session
            | "53300" // too_many_connections
            | "40001" // serialization_failure
            | "40P01" // deadlock_detected
        )
}

/// Finds `SQLSTATE xxxxx` in a pgwire-replication server error text.
fn sqlstate_in_text(text: &str) -> Option<&str> {
    let at = text.find("SQLSTATE ")? + "SQLSTATE ".len();
    text.get(at..at + 5)
}

impl PgError {
    /// Wraps a sqlx error with what was being done.
    pub fn sql(context: impl Into<String>, source: sqlx::Error) -> Self {
        PgError::Sql {
            context: context.into(),
            source,
        }
    }

    /// The SQLSTATE of a server error, when there is one.
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            PgError::Sql {
                source: sqlx::Error::Database(db),
                ..
            } => db.code().map(|c| c.into_owned()),
            PgError::Replication(pgwire_replication::PgWireError::Server(text)) => {
                sqlstate_in_text(text).map(str::to_owned)
            }
            _ => None,
        }
    }

    /// Whether retrying (reconnecting) can help.
    pub fn class(&self) -> ErrorClass {
        use pgwire_replication::PgWireError as W;
        let retryable = match self {
            PgError::InvalidUrl(_)
            | PgError::Setup(_)
            | PgError::Decode(_)
            | PgError::Value { .. }
            | PgError::Protocol(_) => false,
            PgError::SlotRace => true,
            PgError::Sql { source, .. } => match source {
                sqlx::Error::Database(_) => self.sqlstate().is_some_and(|c| transient_sqlstate(&c)),
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                _ => false,
            },
            PgError::SnapshotGone(_) => true,
            PgError::Replication(e) => match e {
                W::Io(_) | W::Task(_) | W::Internal(_) => true,
                W::Server(_) => self.sqlstate().is_some_and(|c| transient_sqlstate(&c)),
                _ => false,
            },
        };
        if retryable {
            ErrorClass::Retryable
        } else {
            ErrorClass::Fatal
        }
    }
}

impl From<PgError> for SourceError {
    fn from(e: PgError) -> Self {
        let message = cdc_core::error_chain(&e);
        match e.class() {
            ErrorClass::Retryable => SourceError::retryable(message),
            ErrorClass::Fatal => SourceError::fatal(message),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn classifies_walsender_errors_by_sqlstate() {
        let e = |t: &str| PgError::Replication(pgwire_replication::PgWireError::Server(t.into()));
        assert_eq!(
            e("terminating connection due to administrator command (SQLSTATE 57P01)").class(),
            ErrorClass::Retryable
        );
        assert_eq!(
            e("replication slot \"s\" is active for PID 7 (SQLSTATE 55006)").class(),
            ErrorClass::Retryable
        );
        assert_eq!(
            e("replication slot \"s\" does not exist (SQLSTATE 42704)").class(),
            ErrorClass::Fatal
        );
        assert_eq!(e("no code").class(), ErrorClass::Fatal);
        assert_eq!(PgError::Setup("x".into()).class(), ErrorClass::Fatal);
    }
}
