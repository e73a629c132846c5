//! Elasticsearch sink for the PostgreSQL CDC toolkit.
//!
//! Not implemented yet: this crate reserves its place in the workspace. The
//! sink (`_bulk` with external versions derived from the LSN) is tracked in
//! its own issue.
