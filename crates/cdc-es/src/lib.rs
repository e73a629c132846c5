//! # cdc-es
//!
//! Elasticsearch / OpenSearch sink for the PostgreSQL CDC toolkit: every
//! table becomes an index, every row a document, kept in step with
//! PostgreSQL through `_bulk` requests that carry external versions, so a
//! replayed older change never overwrites a newer one.
//!
//! ## Using it
//!
//! In the `cdc-engine` binary it is `type: elasticsearch` of `sinks:`
//! (`docs/sinks/elasticsearch.md` lists every key). As a library, build an
//! [`EsSinkConfig`] (from YAML or JSON with serde, or in code with
//! [`EsSinkConfig::new`]), connect, and hand the sink to
//! `cdc_pipeline::run_pipeline` as
//! `NamedSink::new("elasticsearch", Box::new(sink))`, or write batches
//! yourself:
//!
//! ```no_run
//! use cdc_core::{Batch, Sink, SinkError};
//! use cdc_es::{EsSink, EsSinkConfig, Refresh};
//!
//! # async fn f(batch: Batch) -> Result<(), SinkError> {
//! let mut config = EsSinkConfig::new(["http://127.0.0.1:9200"]);
//! config.index = "shop-{table}".into(); // public.orders → shop-orders
//! config.refresh = Refresh::WaitFor;
//! // Checks that the cluster answers; "shop" is the pipeline's name.
//! let mut sink = EsSink::connect(&config, "shop").await?;
//! sink.write_batch(&batch).await?; // returns once every item is settled
//! sink.close().await?;
//! # Ok(()) }
//! ```
//!
//! [`EsSinkConfig`] is `#[non_exhaustive]` (a later version may add keys),
//! and so are [`Mappings`] and [`Refresh`]: start from
//! [`EsSinkConfig::new`] and assign the fields; match the enums with a `_`
//! arm.
//!
//! ## What it writes
//!
//! * **Index name**: `indices` maps `schema.table` to an index explicitly;
//!   otherwise the `index` template (`{schema}.{table}` by default) is
//!   filled in, lower-cased, every character other than `a-z 0-9 _ - .`
//!   replaced by `_`, leading `_ - + .` removed, cut to 255 bytes.
//! * **`_id`**: one key column: its `to_jsonb` value, without the quotes of
//!   a JSON string (`42`, `alice`); several: the compact JSON array of
//!   their values (`[1,"alice"]`).
//! * **Document**: the row's columns as `to_jsonb` renders them
//!   ([`cdc_core::encode::write_value`]), nothing added, with three
//!   renderings that keep every value storable: a `numeric` beyond the
//!   double range becomes a JSON string of its exact text; a `real` /
//!   `double precision` of magnitude 1e21 or more is written in exponent
//!   notation (same value); a `json` value with duplicate keys keeps only
//!   the last of each (as `jsonb` does).
//! * **Mapping** (`mappings: auto`, the default; `none` per sink or per
//!   table in `table_mappings`): a missing index is created with
//!   `dynamic: false` and a property per column: integers →
//!   `short`/`integer`/`long`; `real` → `float`, `double`/`numeric` →
//!   `double`, and `date`/`timestamp`/`timestamptz` → `date`
//!   (`strict_date_optional_time`), all with `ignore_malformed`, so `NaN`,
//!   infinities and dates out of range stay in `_source` unindexed;
//!   character types → `text` + `.keyword`; `json`/`jsonb` and types
//!   created in the database → disabled object; other built-in types →
//!   `keyword`; arrays → their element's. Columns added later are added
//!   to the mapping; an index the sink did not create (no `_meta.cdc_es`)
//!   is never changed.
//! * **Operations**: insert, update and snapshot read → `index`; delete →
//!   `delete`; an update that changes the key also deletes the old `_id`;
//!   an update whose unchanged TOAST columns were not sent → the stored
//!   document is read (`_mget`) and those columns are kept; truncate →
//!   every document of the table's index is deleted (scroll + `_bulk`
//!   deletes) with the truncate's version.
//! * **Versions**: see [below](crate#versions) and
//!   `docs/sinks/elasticsearch.md`.
//!
//! ## Versions
//!
//! `version = commit_lsn × 2^16 + min(ordinal, 65535)` with
//! `version_type=external_gte` (snapshot rows, which carry commit LSN
//! `C − 1` for the snapshot LSN C: `C × 2^16 − 1`): later changes get larger versions, a replayed older
//! change is refused with 409 and counted as success. Fits while the
//! commit LSN is below `2^47`.
//!
//! ## Durability and errors
//!
//! `write_batch` returns when every item was acknowledged by the server
//! (2xx), was a version conflict (older than the stored document), a delete
//! of a missing document, or was refused permanently and written to the
//! `dead_letter` file (`fsync`ed). Items that failed with 429 or 5xx are
//! retried alone with backoff, in their order, except those superseded by
//! a later done item of the same document in the same request; other refusals (mapping errors) stop the
//! pipeline unless `dead_letter` is set.

#![warn(missing_docs)]

mod bulk;
mod config;
mod document;
mod http;
mod mapping;
mod naming;
mod sink;
mod version;

pub use config::{EsSinkConfig, Mappings, Refresh};
pub use sink::EsSink;
