//! Getting a database ready for change data capture, or saying exactly
//! what is missing: preflight checks, replica identity, publication, slot.
//!
//! Every step is idempotent. With `create: false` nothing is changed and a
//! missing piece is a [`PgError::Setup`](crate::PgError::Setup) whose
//! message names the SQL to run.

pub mod check;
mod hot_standby;
mod preflight;
mod publication;
mod replica_identity;
mod slot;

pub use check::{check_source, CheckReport, Finding, Severity};
pub(crate) use check::{run_check, CheckRequest};
pub(crate) use hot_standby::{check_hot_standby, standby_findings};
pub(crate) use preflight::{check_select, preflight, ServerInfo};
pub(crate) use publication::{add_tables_in_transaction, ensure_publication};
pub(crate) use replica_identity::ensure_replica_identity;
pub(crate) use slot::{ensure_slot, slot_confirmed_flush, slot_exists, SlotCreation};
