//! NATS JetStream sink for the PostgreSQL CDC toolkit.
//!
//! Not implemented yet: this crate reserves its place in the workspace. The
//! sink (async-nats, JetStream PubAcks, `Nats-Msg-Id` de-duplication) is
//! tracked in its own issue.
