//! Turning pgoutput messages into events: every message of the stream is
//! handled here, whether the source decoded it or the protocol client did.

use cdc_core::{Batch, ChangeEvent, ControlEvent, ErrorClass, Event, Lsn, Op, Row, TableName};

use super::context::Context;
use super::heartbeat::HEARTBEAT_PREFIX;
use super::rows::{fill_unchanged_toast, old_row, parse_tuple};
use crate::catalog::describe_relation;
use crate::error::PgError;
use crate::incremental::WATERMARK_PREFIX;
use crate::pgoutput::Message;

impl Context {
    /// Adds what pgoutput message `msg` means to `batch`: every message
    /// of the stream comes here, whether the source decoded it or the
    /// protocol client did ([`crate::replication::WireEvent`]).
    /// `wal_start`: the WAL position of a change's record (`0/0` when not
    /// known: the change takes its transaction's commit LSN).
    pub async fn handle_message(
        &mut self,
        msg: Message,
        wal_start: Lsn,
        batch: &mut Batch,
    ) -> Result<(), PgError> {
        let change = match msg {
            Message::Begin(begin) => {
                self.changes.begin(&begin);
                return Ok(());
            }
            Message::Commit(commit) => {
                self.changes.commit(commit.end_lsn);
                self.heartbeat.activity();
                batch.checkpoint = Some(commit.end_lsn);
                return Ok(());
            }
            Message::Relation(rel) => {
                crate::failpoint::failpoint!("stream::before_describe");
                let info = match describe_relation(&mut self.catalog, &self.database, &rel).await {
                    // The catalog connection may have been terminated (by
                    // an administrator, a dropped TCP connection) while it
                    // sat idle: connect again and ask once more.
                    Err(e) if e.class() == ErrorClass::Retryable => {
                        tracing::warn!(error = %cdc_core::error_chain(&e), "catalog connection failed; connecting again");
                        self.ensure_catalog().await?;
                        describe_relation(&mut self.catalog, &self.database, &rel).await?
                    }
                    other => other?,
                };
                let info = self.local_subsets.narrow(info)?;
                let tracked = self.changes.tracks(&info.schema.name);
                let signals = self
                    .incremental
                    .as_ref()
                    .is_some_and(|i| i.is_signal_table(&info.schema.name));
                let new_match = !tracked
                    && !signals
                    && self
                        .discovery
                        .as_ref()
                        .is_some_and(|d| d.selects(&info.schema.name));
                let untracked_reason = if tracked || signals {
                    None
                } else if new_match {
                    // A table created since the last check, which the
                    // publication already sends: check now.
                    if let Some(d) = self.discovery.as_mut() {
                        d.check_soon();
                    }
                    Some(format!(
                        "{} was created after the last check for new tables; it is captured from the \
                         next check (its earlier rows by an incremental snapshot)",
                        info.schema.name
                    ))
                } else {
                    Some(self.untracked_reason(rel.oid, &info.schema.name).await)
                };
                let schema = info.schema.clone();
                let previous = self
                    .changes
                    .describe(rel.oid, info, tracked, untracked_reason);
                if tracked && previous.as_ref() != Some(&schema) {
                    batch
                        .events
                        .push(Event::Control(ControlEvent::SchemaChange {
                            table: schema,
                            previous,
                        }));
                }
                return Ok(());
            }
            Message::Insert(ins) if self.is_signal(ins.relation_oid) => {
                return self.signal(ins.relation_oid, &ins.new).await;
            }
            Message::Update(upd) if self.is_signal(upd.relation_oid) => return Ok(()),
            Message::Delete(del) if self.is_signal(del.relation_oid) => return Ok(()),
            Message::Insert(ins) => {
                let Some(rel) = self.changes.relation(ins.relation_oid, &self.cfg.status)? else {
                    return Ok(());
                };
                let after = parse_tuple(rel, &ins.new)?;
                (Op::Insert, rel.schema.clone(), None, Some(Row::new(after)))
            }
            Message::Update(upd) => {
                let Some(rel) = self.changes.relation(upd.relation_oid, &self.cfg.status)? else {
                    return Ok(());
                };
                let before = upd.old.as_ref().map(|o| old_row(rel, o)).transpose()?;
                let mut after = parse_tuple(rel, &upd.new)?;
                fill_unchanged_toast(&mut after, before.as_ref());
                (
                    Op::Update,
                    rel.schema.clone(),
                    before,
                    Some(Row::new(after)),
                )
            }
            Message::Delete(del) => {
                let Some(rel) = self.changes.relation(del.relation_oid, &self.cfg.status)? else {
                    return Ok(());
                };
                let before = old_row(rel, &del.old)?;
                (Op::Delete, rel.schema.clone(), Some(before), None)
            }
            Message::Truncate(tr) => {
                for oid in &tr.relation_oids {
                    if self.is_signal(*oid) {
                        continue;
                    }
                    let Some(rel) = self.changes.relation(*oid, &self.cfg.status)? else {
                        continue;
                    };
                    let table = rel.schema.clone();
                    let source = self.changes.source_info(wal_start)?;
                    let change = ChangeEvent {
                        op: Op::Truncate,
                        table,
                        before: None,
                        after: None,
                        source,
                    };
                    self.observe(&change);
                    batch.events.push(Event::Change(change));
                }
                return Ok(());
            }
            Message::Message(m) => {
                self.changes.received = self.changes.received.max(m.lsn);
                if m.prefix == WATERMARK_PREFIX {
                    // Watermarks are never passed on (their transaction
                    // still checkpoints as every transaction does).
                    return self.watermark(&m.content, m.lsn, batch);
                }
                push_message(batch, m.transactional, m.lsn, m.prefix, &m.content);
                return Ok(());
            }
            // Type names come from the catalog; origins are not needed.
            Message::Origin(_) | Message::Type(_) => return Ok(()),
        };
        let (op, table, before, after) = change;
        let source = self.changes.source_info(wal_start)?;
        let change = ChangeEvent {
            op,
            table,
            before,
            after,
            source,
        };
        self.observe(&change);
        batch.events.push(Event::Change(change));
        Ok(())
    }

    /// Why publication changes of `name` (OID `oid`) reach the engine,
    /// which does not track it: for the warning about its skipped changes.
    async fn untracked_reason(&mut self, oid: u32, name: &TableName) -> String {
        let publication = &self.cfg.publication;
        let root = sqlx::query(
            "SELECT n.nspname::pg_catalog.text AS s, c.relname::pg_catalog.text AS t
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = pg_catalog.pg_partition_root($1::pg_catalog.oid::pg_catalog.regclass)
               AND c.oid <> $1::pg_catalog.oid",
        )
        .bind(i64::from(oid))
        .fetch_optional(&mut self.catalog)
        .await;
        let root = match root {
            Ok(Some(row)) => match (
                sqlx::Row::try_get::<String, _>(&row, "s"),
                sqlx::Row::try_get::<String, _>(&row, "t"),
            ) {
                (Ok(s), Ok(t)) => Some(TableName::new(s, t)),
                _ => None,
            },
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, relation = %name, "could not look up the partition root");
                None
            }
        };
        match root {
            Some(root) if self.changes.tracks(&root) => format!(
                "{name} is a partition of {root}, and publication `{publication}` sends its changes \
                 under the partition's name (it does not set publish_via_partition_root): they are not \
                 captured as changes of {root}; run ALTER PUBLICATION {} SET (publish_via_partition_root = true); \
                 and take a new snapshot of {root}",
                crate::ident::quote_ident(publication)
            ),
            Some(root) => format!(
                "{name} is a partition of {root}, which is not in source.tables either, but publication \
                 `{publication}` publishes it; add {root} to source.tables, or remove it from the publication"
            ),
            None => format!(
                "{name} is not in source.tables, but publication `{publication}` publishes it (FOR ALL \
                 TABLES, or added to it outside the engine); add it to source.tables, or remove it from \
                 the publication"
            ),
        }
    }
}

/// Adds a logical decoding message to `batch`: our own heartbeats as
/// [`ControlEvent::Heartbeat`], anyone else's as [`ControlEvent::Message`].
fn push_message(batch: &mut Batch, transactional: bool, lsn: Lsn, prefix: String, content: &[u8]) {
    let event = if prefix == HEARTBEAT_PREFIX {
        ControlEvent::Heartbeat { lsn }
    } else {
        ControlEvent::Message {
            transactional,
            lsn,
            prefix,
            content: content.to_vec(),
        }
    };
    batch.events.push(Event::Control(event));
}
