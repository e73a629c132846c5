//! The head of every script that creates tables in the metadata schema.

use crate::ident::{quote_ident, quote_literal};

/// The first statements of such a script, run as one simple-query
/// transaction: a transaction-level advisory lock on (`lock_class`,
/// `hashtext(schema)`), so that two engines creating the same tables at
/// once run one after the other, then `CREATE SCHEMA IF NOT EXISTS`.
pub(crate) fn locked_schema_ddl(lock_class: i32, schema: &str) -> String {
    let lock_key = quote_literal(schema);
    let schema = quote_ident(schema);
    format!(
        "SELECT pg_catalog.pg_advisory_xact_lock({lock_class}, pg_catalog.hashtext({lock_key}));\n\
         CREATE SCHEMA IF NOT EXISTS {schema};\n"
    )
}
