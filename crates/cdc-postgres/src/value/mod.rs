//! The text-value parser shared by the replication stream and the snapshot
//! reader.
//!
//! Both read column values in their type's text output format: pgoutput
//! sends text columns, and `COPY … TO STDOUT` (once its own escaping is
//! undone) prints the same output functions. The session must be pinned to
//! `DateStyle=ISO, TimeZone=UTC, IntervalStyle=postgres,
//! extra_float_digits=3, bytea_output=hex`.
//!
//! [`ValueType::parse`] turns that text into a [`cdc_core::Value`] such that
//! `cdc_core::encode::write_value` prints exactly what PostgreSQL's
//! `to_jsonb(value)` prints. A column's [`ValueType`] comes from
//! [`ValueType::builtin`] for built-in types, or from [`load_value_types`]
//! (one catalog query, then [`resolve`]) for domains, enums, user-defined
//! arrays and extension types.
//!
//! ```
//! use cdc_core::Value;
//! use cdc_postgres::value::ValueType;
//!
//! let ts = ValueType::builtin(1184).unwrap(); // timestamptz
//! assert_eq!(
//!     ts.parse(b"2024-01-01 12:00:00.5+00").unwrap(),
//!     Value::TimestampTz("2024-01-01T12:00:00.5+00:00".into()),
//! );
//! let ints = ValueType::builtin(1007).unwrap(); // int4[]
//! assert_eq!(
//!     ints.parse(b"[0:1]={1,NULL}").unwrap(),
//!     Value::Array(vec![Value::Int4(1), Value::Null].into()),
//! );
//! ```

mod array;
mod binary;
mod catalog;
mod datetime;
mod error;
mod kind;
mod scalar;

#[cfg(test)]
mod proptests;

pub use binary::BinaryType;
pub use catalog::{load_value_types, resolve, PgTypeRow};
pub use error::ValueError;
pub use kind::{ScalarKind, ValueType};
