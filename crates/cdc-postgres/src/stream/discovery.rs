//! Tables created or dropped while the source streams, for a selection
//! with patterns ([`PgSourceConfig::discovery_interval`]).
//!
//! The catalog is checked every interval, and at once when the stream
//! describes a relation the selection matches but the source does not
//! capture yet (a publication `FOR ALL TABLES` or `FOR TABLES IN SCHEMA`
//! publishes a new table from its creation). A new match is captured from
//! its first row:
//!
//! 1. its changes are tracked from this point of the stream on;
//! 2. one transaction adds it to the publication (engine-managed ones)
//!    and inserts a signal row asking for an incremental snapshot of it;
//! 3. the stream delivers every change committed after that transaction
//!    (the publication holds the table from there), then the signal, after
//!    which the table is read chunk by chunk between watermarks: the rows
//!    written before the table was published (which the stream never
//!    carries) arrive as reads, and a row changed meanwhile is left to the
//!    stream.
//!
//! A captured table that no longer exists (or exists under another OID:
//! dropped and created again) is noted as dropped: logged, listed in the
//! status, its incremental snapshot given up; the stream goes on. A table
//! without a primary key or replica identity is not added (an `UPDATE` of
//! a published table without one fails): it is warned about, and added by
//! a later check once it has one.
//!
//! [`PgSourceConfig::discovery_interval`]: super::PgSourceConfig::discovery_interval

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use cdc_core::{Batch, ControlEvent, Event, TableName};
use sqlx::{Connection, PgConnection};

use super::context::Context;
use crate::error::PgError;
use crate::ident::{quote_ident, quote_table};
use crate::selection::{list_tables, Candidate, TableSelection};
use crate::setup::check::PublicationState;

/// The selection, and the tables it resolved to as last seen.
#[derive(Clone)]
pub(super) struct Discovery {
    interval: Duration,
    next_at: Instant,
    /// Tables named exactly in the configuration.
    exact: Vec<TableName>,
    selection: TableSelection,
    /// The captured tables and their OIDs as last seen.
    known: HashMap<TableName, u32>,
    /// Matches not added yet, already warned about (and why).
    warned: HashSet<(TableName, &'static str)>,
    /// The server is a hot standby: the publication is changed on the
    /// primary (or not at all), never here.
    read_only: bool,
}

impl Discovery {
    /// Discovery for `exact` names and `selection`, whose tables are
    /// `captured` now; the first check is one `interval` away.
    pub async fn start(
        catalog: &mut PgConnection,
        interval: Duration,
        exact: Vec<TableName>,
        selection: TableSelection,
        captured: &[TableName],
        metadata_schema: &str,
    ) -> Result<Self, PgError> {
        let read_only: bool = sqlx::query_scalar("SELECT pg_catalog.pg_is_in_recovery()")
            .fetch_one(&mut *catalog)
            .await
            .map_err(|e| PgError::sql("checking whether the server is a standby", e))?;
        let known = list_tables(catalog, metadata_schema)
            .await?
            .into_iter()
            .filter(|c| captured.contains(&c.name))
            .map(|c| (c.name, c.oid))
            .collect();
        Ok(Self {
            interval,
            next_at: Instant::now() + interval,
            exact,
            selection,
            known,
            warned: HashSet::new(),
            read_only,
        })
    }

    /// Whether the selection takes `name`.
    pub fn selects(&self, name: &TableName) -> bool {
        (self.exact.contains(name) || self.selection.include.iter().any(|p| p.matches(name)))
            && !self.selection.exclude.iter().any(|p| p.matches(name))
    }

    /// Whether `name` is captured (as last seen).
    pub fn captures(&self, name: &TableName) -> bool {
        self.known.contains_key(name)
    }

    /// Checks the catalog at the next occasion.
    pub fn check_soon(&mut self) {
        self.next_at = Instant::now();
    }

    /// Warns about `table` once per `reason`.
    fn warn_once(&mut self, table: &TableName, reason: &'static str, message: &str) {
        if self.warned.insert((table.clone(), reason)) {
            tracing::warn!(table = %table, "{message}");
        }
    }
}

impl Context {
    /// Checks for tables created or dropped since the last check, when one
    /// is due (between two transactions of the stream). Schema-change
    /// events of relations the stream described before they were captured
    /// go into `batch`. Never fails: an error is logged and the check
    /// made again after the interval.
    pub async fn discover(&mut self, batch: &mut Batch) {
        // A copy is worked on and put back when the check is done: a call
        // dropped midway (see `PgSource::next_batch`) leaves the last
        // complete state, and the check runs again (adding a table and
        // asking its snapshot twice at worst).
        let Some(mut discovery) = self
            .discovery
            .as_ref()
            .filter(|d| Instant::now() >= d.next_at)
            .cloned()
        else {
            return;
        };
        discovery.next_at = Instant::now() + discovery.interval;
        if let Err(e) = self.discover_once(&mut discovery, batch).await {
            tracing::warn!(error = %cdc_core::error_chain(&e),
                "cannot check for tables created or dropped; checking again in {:?}", discovery.interval);
            self.catalog_suspect = true;
        }
        self.discovery = Some(discovery);
    }

    async fn discover_once(
        &mut self,
        discovery: &mut Discovery,
        batch: &mut Batch,
    ) -> Result<(), PgError> {
        if self.catalog_suspect {
            self.ensure_catalog().await?;
        }
        let found = list_tables(&mut self.catalog, &self.cfg.snapshot.metadata_schema).await?;
        let current: BTreeMap<TableName, Candidate> = found
            .into_iter()
            .filter(|c| discovery.selects(&c.name))
            .map(|c| (c.name.clone(), c))
            .collect();
        let dropped: Vec<TableName> = discovery
            .known
            .iter()
            .filter(|(name, oid)| current.get(*name).map(|c| c.oid) != Some(**oid))
            .map(|(name, _)| name.clone())
            .collect();
        for table in dropped {
            discovery.known.remove(&table);
            tracing::warn!(table = %table,
                "table {table} was dropped: it is no longer captured (the stream goes on)");
            if let Some(inc) = self.incremental.as_mut() {
                inc.table_dropped(&table).await;
            }
            self.cfg.status.table_dropped(&table);
        }
        let mut new: Vec<Candidate> = Vec::new();
        for c in current.into_values() {
            if discovery.captures(&c.name) {
                continue;
            }
            if !c.identity_ok {
                discovery.warn_once(
                    &c.name,
                    "identity",
                    &format!(
                        "table {t} matches the selection but has no primary key nor replica identity \
                         (an UPDATE or DELETE of a published table without one fails): it is captured \
                         once it has one: add a primary key, or run ALTER TABLE {q} REPLICA IDENTITY FULL",
                        t = c.name,
                        q = quote_table(&c.name)
                    ),
                );
                continue;
            }
            new.push(c);
        }
        let alter = self.cfg.create_publication && !discovery.read_only;
        if !alter && !new.is_empty() {
            let publication = PublicationState::read(&mut self.catalog, &self.cfg.publication)
                .await?
                .ok_or_else(|| {
                    PgError::Setup(format!(
                        "publication `{}` does not exist",
                        self.cfg.publication
                    ))
                })?;
            let name = self.cfg.publication.clone();
            new.retain(|c| {
                let published = publication.all_tables || publication.tables.contains(&c.name);
                if !published {
                    discovery.warn_once(
                        &c.name,
                        "publication",
                        &format!(
                            "table {t} matches the selection but publication `{name}` does not \
                             publish it, and the engine may not change it (source.publication.create: \
                             false, or a hot standby): run ALTER PUBLICATION {p} ADD TABLE {q}; (on \
                             the primary); it is captured once published",
                            t = c.name,
                            p = quote_ident(&name),
                            q = quote_table(&c.name)
                        ),
                    );
                }
                published
            });
        }
        if new.is_empty() {
            return Ok(());
        }
        let names: Vec<TableName> = new.iter().map(|c| c.name.clone()).collect();
        // Tracked before the publication holds them: every change the
        // stream sends of them comes after this point.
        for table in &names {
            for schema in self.changes.track(table) {
                batch
                    .events
                    .push(Event::Control(ControlEvent::SchemaChange {
                        table: schema,
                        previous: None,
                    }));
            }
            if let Some(inc) = self.incremental.as_mut() {
                inc.track(table);
            }
        }
        let snapshot = self.publish_new_tables(&names, alter).await?;
        for c in new {
            discovery.known.insert(c.name.clone(), c.oid);
            self.cfg.status.table_added(&c.name);
            match snapshot {
                Some(id) => tracing::info!(table = %c.name, snapshot = id,
                    "table {} created while streaming matches the selection: captured from now on, \
                     the rows it had before by an incremental snapshot", c.name),
                None => tracing::warn!(table = %c.name,
                    "table {} created while streaming matches the selection: captured from now on; \
                     the rows it had before are not (snapshot.incremental.enabled is false)", c.name),
            }
        }
        Ok(())
    }

    /// In one transaction: adds `tables` to the publication (with `alter`)
    /// and asks for their incremental snapshot (when enabled; its id).
    async fn publish_new_tables(
        &mut self,
        tables: &[TableName],
        alter: bool,
    ) -> Result<Option<i64>, PgError> {
        let err = |e| PgError::sql("adding new tables to the publication", e);
        let mut tx = self.catalog.begin().await.map_err(err)?;
        if alter {
            // Within this transaction: a failure rolls the whole back.
            crate::setup::add_tables_in_transaction(
                &mut tx,
                &self.cfg.publication,
                tables,
                &self.cfg.subsets,
            )
            .await?;
        }
        let snapshot = match &self.incremental {
            Some(inc) => Some(inc.request_created_tables(&mut tx, tables).await?),
            None => None,
        };
        tx.commit().await.map_err(err)?;
        Ok(snapshot)
    }
}
