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
    Replication(#[source] ReplicationError),
    /// The snapshot reader's own COPY connection failed (connecting,
    /// authenticating, a query, or the COPY itself).
    #[error("{context}")]
    Copy {
        /// What was being done.
        context: String,
        /// The protocol client's error (a server error carries its
        /// SQLSTATE).
        #[source]
        source: ReplicationError,
    },
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
    /// This instance no longer holds the claim on a snapshot chunk (its
    /// lease ran out, or another reader claimed the chunk again): what it
    /// read of the chunk is dropped and the chunk is read again.
    #[error("{0}")]
    ClaimLost(String),
    /// A snapshot chunk's table was rewritten (`ALTER TABLE … TYPE`,
    /// `VACUUM FULL`, `CLUSTER`, pg_repack, `TRUNCATE`) after the exported
    /// snapshot was taken: reading it under that snapshot would miss rows,
    /// so the chunk's read is dropped and the whole table is read again
    /// under a new export.
    #[error("table {table} was rewritten after the exported snapshot was taken")]
    TableRewritten {
        /// The table, `schema.name`.
        table: String,
    },
    /// Another process created the replication slot while this one tried to.
    #[error("the replication slot was created concurrently")]
    SlotRace,
    /// The stream contradicted itself (e.g. a change for a relation never described).
    #[error("replication protocol: {0}")]
    Protocol(String),
    /// The replication slot is in use by another session (retryable).
    #[error("{0}")]
    SlotInUse(String),
    /// The server invalidated the replication slot (`max_slot_wal_keep_size`
    /// exceeded, a conflict on a standby, …): the slot can never stream
    /// again and a new snapshot is needed. Never answered by silently
    /// creating another slot.
    #[error("{}", crate::invalidation::invalidated_message(slot, reason.as_deref()))]
    SlotInvalidated {
        /// The slot.
        slot: String,
        /// The server's `invalidation_reason` (or `wal_removed` for
        /// `wal_status = 'lost'`), when known.
        reason: Option<String>,
    },
    /// No server of a multi-server `source.url` is what
    /// `target_session_attrs` asks for (retryable: a failover may be under
    /// way); the message says what each server was.
    #[error("{0}")]
    NoSuitableHost(String),
    /// Streaming cannot go on (slot dropped, publication
    /// dropped, privilege or login revoked, …); the message says what
    /// happened and what to do.
    #[error("{0}")]
    Stopped(String),
}

/// A failure of a connection that speaks the protocol directly: the
/// replication connection (connecting, streaming, sending standby status)
/// or the snapshot reader's COPY connection. Its `Display` and `source()` carry the
/// protocol client's own message; the type keeps that client out of this
/// crate's public API.
#[derive(Debug)]
pub struct ReplicationError(pub(crate) pgwire_replication::PgWireError);

impl std::fmt::Display for ReplicationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ReplicationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<pgwire_replication::PgWireError> for PgError {
    fn from(e: pgwire_replication::PgWireError) -> Self {
        PgError::Replication(ReplicationError(e))
    }
}

/// What [`PgError::explain`] needs to name in its advice.
#[derive(Debug, Clone, Copy)]
pub struct StreamNames<'a> {
    /// The role the source connects as.
    pub user: &'a str,
    /// The replication slot.
    pub slot: &'a str,
    /// The publication.
    pub publication: &'a str,
}

/// SQLSTATEs after which trying again later can succeed.
fn transient_sqlstate(code: &str) -> bool {
    // The SQLSTATE classes of trouble that passes: connection exceptions
    // (08), transaction rollbacks (40: serialization failures, deadlocks),
    // insufficient resources (53: too many connections, out of memory or
    // disk), operator intervention (57: shutdowns, restarts, cancels),
    // system errors (58) and internal errors (XX); and object_in_use
    // (55006: the slot is active in another session). Every other class is
    // a problem a human must fix (permissions, missing objects, wal_level,
    // data the server refuses): retrying the same request cannot succeed.
    code == "55006"
        || code
            .get(..2)
            .is_some_and(|class| matches!(class, "08" | "40" | "53" | "57" | "58" | "XX"))
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
            PgError::Replication(ReplicationError(pgwire_replication::PgWireError::Server(
                text,
            )))
            | PgError::Copy {
                source: ReplicationError(pgwire_replication::PgWireError::Server(text)),
                ..
            } => sqlstate_in_text(text).map(str::to_owned),
            _ => None,
        }
    }

    /// The server's message text, when this is a server error.
    fn server_text(&self) -> Option<String> {
        match self {
            PgError::Sql {
                source: sqlx::Error::Database(db),
                ..
            } => Some(db.message().to_owned()),
            PgError::Replication(ReplicationError(pgwire_replication::PgWireError::Server(
                text,
            )))
            | PgError::Copy {
                source: ReplicationError(pgwire_replication::PgWireError::Server(text)),
                ..
            } => Some(text.clone()),
            _ => None,
        }
    }

    /// Turns the server errors that mean streaming cannot continue into
    /// [`PgError::Stopped`] with one line saying what happened and what to
    /// do; every other error is returned unchanged.
    ///
    /// Verified on PostgreSQL 15:
    /// - `55000` "cannot read from logical replication slot" (14, 15) or
    ///   "can no longer get changes from replication slot" (16 and later)
    ///   for an invalidated slot: [`PgError::SlotInvalidated`];
    /// - `58P01` "requested WAL segment … has already been removed";
    /// - `42704` "replication slot … does not exist" (dropped);
    /// - `42704` "publication … does not exist" (dropped; the slot cannot
    ///   decode past the drop even if it is recreated);
    /// - `42501` "must be superuser or replication role to start walsender";
    /// - `28000` "role … is not permitted to log in" (and `pg_hba.conf`
    ///   rejections), `28P01` "password authentication failed".
    pub fn explain(self, names: StreamNames<'_>) -> PgError {
        let (Some(code), Some(text)) = (self.sqlstate(), self.server_text()) else {
            return self;
        };
        let StreamNames {
            user,
            slot,
            publication,
        } = names;
        let slot_lit = crate::ident::quote_literal(slot);
        let restart = format!(
            "drop the slot (SELECT pg_drop_replication_slot({slot_lit});) and start again with \
             snapshot.mode: initial to copy the tables anew"
        );
        let invalidated = match code.as_str() {
            "55000" => {
                text.contains("cannot read from logical replication slot")
                    || text.contains("can no longer get changes from replication slot")
            }
            _ => false,
        };
        if invalidated {
            return PgError::SlotInvalidated {
                slot: slot.to_owned(),
                reason: None,
            };
        }
        let advice = match code.as_str() {
            "58P01" if text.contains("WAL segment") => format!(
                "replication slot `{slot}` needs WAL the server already removed, so changes were lost. {restart}"
            ),
            "42704" if text.contains("replication slot") => format!(
                "replication slot `{slot}` no longer exists (dropped while the pipeline ran?): changes \
                 since the last confirmed position may be lost. Start again with snapshot.mode: initial \
                 (it creates the slot)"
            ),
            "42704" if text.contains("publication") => format!(
                "publication `{publication}` was dropped while the pipeline ran, and slot `{slot}` cannot \
                 decode changes past the drop even if it is recreated: recreate the publication, {restart}"
            ),
            "42501" => format!(
                "role `{user}` may not stream changes any more (it lost the REPLICATION attribute?): \
                 run ALTER ROLE {} REPLICATION; then restart",
                crate::ident::quote_ident(user)
            ),
            "28000" => format!(
                "role `{user}` may not connect any more (NOLOGIN, or a pg_hba.conf rule): run ALTER ROLE {} LOGIN; \
                 or fix pg_hba.conf, then restart",
                crate::ident::quote_ident(user)
            ),
            "28P01" => format!(
                "the server rejected the password of role `{user}`: fix the password in source.url, then restart"
            ),
            _ => return self,
        };
        PgError::Stopped(format!("{advice} (server said: {text})"))
    }

    /// Whether retrying (reconnecting) can help.
    pub fn class(&self) -> ErrorClass {
        use pgwire_replication::PgWireError as W;
        let retryable = match self {
            PgError::InvalidUrl(_)
            | PgError::Setup(_)
            | PgError::Stopped(_)
            | PgError::SlotInvalidated { .. }
            | PgError::Decode(_)
            | PgError::Value { .. }
            | PgError::Protocol(_) => false,
            PgError::SlotRace | PgError::SlotInUse(_) | PgError::NoSuitableHost(_) => true,
            PgError::Sql { source, .. } => match source {
                sqlx::Error::Database(_) => self.sqlstate().is_none_or(|c| transient_sqlstate(&c)),
                // Our configuration or our own mistake: retrying cannot help.
                sqlx::Error::Configuration(_)
                | sqlx::Error::InvalidArgument(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::RowNotFound
                | sqlx::Error::TypeNotFound { .. }
                | sqlx::Error::ColumnIndexOutOfBounds { .. }
                | sqlx::Error::ColumnNotFound(_)
                | sqlx::Error::ColumnDecode { .. }
                | sqlx::Error::Encode(_)
                | sqlx::Error::Decode(_) => false,
                // I/O, pool and protocol trouble, and whatever else: retry.
                _ => true,
            },
            PgError::SnapshotGone(_) | PgError::ClaimLost(_) | PgError::TableRewritten { .. } => {
                true
            }
            PgError::Replication(ReplicationError(e))
            | PgError::Copy {
                source: ReplicationError(e),
                ..
            } => match e {
                W::Auth(_) | W::Tls(_) | W::MessageTooLarge { .. } => false,
                W::Server(_) => self.sqlstate().is_none_or(|c| transient_sqlstate(&c)),
                // I/O, protocol, the client's task, and whatever else: retry.
                _ => true,
            },
        };
        if retryable {
            ErrorClass::Retryable
        } else {
            ErrorClass::Fatal
        }
    }
}

/// `true` when `e` says the replication slot is active in another session
/// (SQLSTATE 55006).
pub(crate) fn is_slot_in_use(e: &PgError) -> bool {
    matches!(e, PgError::SlotInUse(_)) || e.sqlstate().as_deref() == Some("55006")
}

/// Rewords "slot is active" (55006) so it says another process holds the
/// slot and how to run several instances; other errors pass unchanged.
pub(crate) fn slot_in_use(e: PgError, slot: &str) -> PgError {
    if matches!(e, PgError::SlotInUse(_)) || !is_slot_in_use(&e) {
        return e;
    }
    let server = e.server_text().unwrap_or_default();
    PgError::SlotInUse(format!(
        "replication slot `{slot}` is in use by another process ({server}); retrying. To run several \
         instances for one slot, set source.slot.standby: true on each"
    ))
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
        let e = |t: &str| PgError::from(pgwire_replication::PgWireError::Server(t.into()));
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
        // What the classifier does not know is retried (the rule for every
        // crate, docs/architecture.md).
        assert_eq!(e("no code").class(), ErrorClass::Retryable);
        assert_eq!(
            e("logical decoding requires wal_level >= logical (SQLSTATE 55000)").class(),
            ErrorClass::Fatal
        );
        assert_eq!(
            e("out of memory (SQLSTATE 53200)").class(),
            ErrorClass::Retryable
        );
        assert_eq!(PgError::Setup("x".into()).class(), ErrorClass::Fatal);
    }

    /// A server error as sqlx reports it, for classification tests.
    #[derive(Debug)]
    struct ServerError {
        code: &'static str,
        message: &'static str,
    }

    impl std::fmt::Display for ServerError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.message)
        }
    }

    impl std::error::Error for ServerError {}

    impl sqlx::error::DatabaseError for ServerError {
        fn message(&self) -> &str {
            self.message
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.code.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    /// What an ordinary or a replication connection sees while the server
    /// restarts, or after an administrator ended its session: every one is
    /// retried.
    #[test]
    fn server_restarts_and_terminated_sessions_are_retryable() {
        let restart = [
            (
                "57P01",
                "terminating connection due to administrator command",
            ),
            (
                "57P02",
                "terminating connection because of crash of another server process",
            ),
            ("57P03", "the database system is starting up"),
            ("57P03", "the database system is shutting down"),
            ("57P03", "the database system is in recovery mode"),
            (
                "57P03",
                "the database system is not yet accepting connections",
            ),
            ("08000", "connection exception"),
            ("08003", "connection does not exist"),
            ("08006", "connection failure"),
            ("08001", "could not connect to server"),
            ("08P01", "protocol violation"),
        ];
        for (code, message) in restart {
            let sql = PgError::sql(
                "connecting",
                sqlx::Error::Database(Box::new(ServerError { code, message })),
            );
            assert_eq!(sql.class(), ErrorClass::Retryable, "{code} {message}");
            let replication = PgError::from(pgwire_replication::PgWireError::Server(format!(
                "FATAL: {message} (SQLSTATE {code})"
            )));
            assert_eq!(
                replication.class(),
                ErrorClass::Retryable,
                "{code} {message}"
            );
        }
        for kind in [
            std::io::ErrorKind::ConnectionRefused,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::UnexpectedEof,
            std::io::ErrorKind::BrokenPipe,
        ] {
            let sql = PgError::sql("querying", sqlx::Error::Io(std::io::Error::from(kind)));
            assert_eq!(sql.class(), ErrorClass::Retryable, "{kind:?}");
            let replication = PgError::from(pgwire_replication::PgWireError::Io(
                std::sync::Arc::new(std::io::Error::from(kind)),
            ));
            assert_eq!(replication.class(), ErrorClass::Retryable, "{kind:?}");
        }
        // A definite refusal is not retried.
        let denied = PgError::sql(
            "connecting",
            sqlx::Error::Database(Box::new(ServerError {
                code: "28P01",
                message: "password authentication failed for user \"cdc\"",
            })),
        );
        assert_eq!(denied.class(), ErrorClass::Fatal);
    }

    #[test]
    fn definite_stream_errors_say_what_to_do() {
        let e = |t: &str| PgError::from(pgwire_replication::PgWireError::Server(t.into()));
        let names = StreamNames {
            user: "cdc",
            slot: "s1",
            publication: "p1",
        };
        // An invalidated slot, as 14 and 15, then 16 and later, say it.
        for text in [
            "cannot read from logical replication slot \"s1\" (SQLSTATE 55000)",
            "can no longer get changes from replication slot \"s1\" (SQLSTATE 55000)",
        ] {
            let explained = e(text).explain(names);
            assert!(
                matches!(&explained, PgError::SlotInvalidated { slot, reason: None } if slot == "s1"),
                "{text}"
            );
            assert_eq!(explained.class(), ErrorClass::Fatal);
            let line = explained.to_string();
            assert!(line.contains("slot `s1` was invalidated"), "{line}");
            assert!(line.contains("a new snapshot is needed"), "{line}");
        }
        let cases = [
            (
                "requested WAL segment 000000010000000000000003 has already been removed (SQLSTATE 58P01)",
                "needs WAL the server already removed",
            ),
            (
                "replication slot \"s1\" does not exist (SQLSTATE 42704)",
                "slot `s1` no longer exists",
            ),
            (
                "publication \"p1\" does not exist (SQLSTATE 42704)",
                "publication `p1` was dropped",
            ),
            (
                "must be superuser or replication role to start walsender (SQLSTATE 42501)",
                "ALTER ROLE \"cdc\" REPLICATION",
            ),
            (
                "role \"cdc\" is not permitted to log in (SQLSTATE 28000)",
                "ALTER ROLE \"cdc\" LOGIN",
            ),
            (
                "password authentication failed for user \"cdc\" (SQLSTATE 28P01)",
                "fix the password",
            ),
        ];
        for (text, advice) in cases {
            let explained = e(text).explain(names);
            assert!(matches!(explained, PgError::Stopped(_)), "{text}");
            assert_eq!(explained.class(), ErrorClass::Fatal);
            let line = explained.to_string();
            assert!(line.contains(advice), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
        // Transient errors are left alone.
        let t = e("terminating connection due to administrator command (SQLSTATE 57P01)");
        assert!(matches!(t.explain(names), PgError::Replication(_)));
        let busy = slot_in_use(
            e("replication slot \"s1\" is active for PID 7 (SQLSTATE 55006)"),
            "s1",
        );
        assert!(matches!(busy, PgError::SlotInUse(_)));
        assert_eq!(busy.class(), ErrorClass::Retryable);
        assert!(busy.to_string().contains("standby: true"));
    }
}
