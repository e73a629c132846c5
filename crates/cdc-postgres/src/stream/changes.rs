//! Turning pgoutput messages into events: the relations described so far
//! (tracked or not), the transaction being received, and the positions
//! received.

use std::collections::{HashMap, HashSet};

use cdc_core::{
    Batch, ChangeEvent, ControlEvent, ErrorClass, Event, Lsn, Op, Row, SnapshotMarker, SourceInfo,
    TableName,
};

use super::context::Context;
use super::heartbeat::HEARTBEAT_PREFIX;
use super::rows::{fill_unchanged_toast, old_row, parse_tuple};
use crate::catalog::{describe_relation, RelationInfo};
use crate::error::PgError;
use crate::pgoutput::{pgoutput_epoch_to_unix_micros, Message};

/// What the stream said so far.
pub(super) struct Changes {
    /// The configured tables.
    tracked: HashSet<TableName>,
    relations: HashMap<u32, Relation>,
    /// Untracked relations already warned about (once per relation).
    warned_untracked: HashSet<TableName>,
    /// The transaction being received.
    tx: Option<Tx>,
    /// Highest WAL position received, published once per batch.
    pub received: Lsn,
    /// End of the last commit received.
    pub last_commit_end: Lsn,
    /// WAL end of the previous keepalive that asked for a reply.
    pub last_keepalive_end: Lsn,
}

impl Changes {
    /// Nothing received yet; changes of `tracked` are captured.
    pub fn new(tracked: HashSet<TableName>) -> Self {
        Self {
            tracked,
            relations: HashMap::new(),
            warned_untracked: HashSet::new(),
            tx: None,
            received: Lsn::ZERO,
            last_commit_end: Lsn::ZERO,
            last_keepalive_end: Lsn::ZERO,
        }
    }

    /// `true` between a transaction's Begin and its Commit.
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }

    /// Forgets the transaction being received: a new stream starts at a
    /// transaction boundary.
    pub fn forget_transaction(&mut self) {
        self.tx = None;
    }
}

/// The transaction being received.
struct Tx {
    commit_lsn: Lsn,
    xid: u32,
    commit_time_us: i64,
    ordinal: u64,
}

/// A relation described by the stream.
struct Relation {
    info: RelationInfo,
    tracked: bool,
    /// Why a relation that is not tracked is published (for the warning).
    untracked_reason: Option<String>,
}

impl Context {
    /// The position of the next change of the open transaction.
    fn source_info(&mut self, lsn: Lsn) -> Result<SourceInfo, PgError> {
        let tx = self.changes.tx.as_mut().ok_or_else(|| {
            PgError::Protocol("a row change arrived outside a transaction".into())
        })?;
        let ordinal = tx.ordinal;
        tx.ordinal += 1;
        Ok(SourceInfo {
            commit_lsn: tx.commit_lsn,
            lsn: if lsn.is_zero() { tx.commit_lsn } else { lsn },
            ordinal,
            txid: Some(tx.xid),
            commit_time_us: tx.commit_time_us,
            snapshot: SnapshotMarker::False,
        })
    }

    /// The tracked relation `oid`; `None` for one that is not tracked,
    /// whose change is counted and skipped (warned about the first time).
    fn relation(&mut self, oid: u32) -> Result<Option<&RelationInfo>, PgError> {
        let skipped = match self.changes.relations.get(&oid) {
            Some(r) if r.tracked => None,
            Some(r) => Some((r.info.schema.name.clone(), r.untracked_reason.clone())),
            None => {
                return Err(PgError::Protocol(format!(
                    "a change for relation {oid} arrived before its Relation message"
                )))
            }
        };
        if let Some((name, reason)) = skipped {
            self.cfg.status.record_untracked(&name);
            if self.changes.warned_untracked.insert(name.clone()) {
                tracing::warn!(relation = %name, "skipping the changes of {name}: {}",
                    reason.as_deref().unwrap_or("it is not in source.tables"));
            }
            return Ok(None);
        }
        Ok(self.changes.relations.get(&oid).map(|r| &r.info))
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
            Some(root) if self.changes.tracked.contains(&root) => format!(
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
                self.changes.tx = Some(Tx {
                    commit_lsn: begin.final_lsn,
                    xid: begin.xid,
                    commit_time_us: pgoutput_epoch_to_unix_micros(begin.commit_time),
                    ordinal: 0,
                });
                return Ok(());
            }
            Message::Commit(commit) => {
                let end_lsn = commit.end_lsn;
                self.changes.tx = None;
                self.heartbeat.activity();
                self.changes.received = self.changes.received.max(end_lsn);
                self.changes.last_commit_end = self.changes.last_commit_end.max(end_lsn);
                batch.checkpoint = Some(end_lsn);
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
                let tracked = self.changes.tracked.contains(&info.schema.name);
                let untracked_reason = if tracked {
                    None
                } else {
                    Some(self.untracked_reason(rel.oid, &info.schema.name).await)
                };
                let previous = self.changes.relations.remove(&rel.oid);
                if tracked && previous.as_ref().map(|p| &p.info.schema) != Some(&info.schema) {
                    batch
                        .events
                        .push(Event::Control(ControlEvent::SchemaChange {
                            table: info.schema.clone(),
                            previous: previous.map(|p| p.info.schema),
                        }));
                }
                self.changes.relations.insert(
                    rel.oid,
                    Relation {
                        info,
                        tracked,
                        untracked_reason,
                    },
                );
                return Ok(());
            }
            Message::Insert(ins) => {
                let Some(rel) = self.relation(ins.relation_oid)? else {
                    return Ok(());
                };
                let after = parse_tuple(rel, &ins.new)?;
                (Op::Insert, rel.schema.clone(), None, Some(Row::new(after)))
            }
            Message::Update(upd) => {
                let Some(rel) = self.relation(upd.relation_oid)? else {
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
                let Some(rel) = self.relation(del.relation_oid)? else {
                    return Ok(());
                };
                let before = old_row(rel, &del.old)?;
                (Op::Delete, rel.schema.clone(), Some(before), None)
            }
            Message::Truncate(tr) => {
                for oid in &tr.relation_oids {
                    let Some(rel) = self.relation(*oid)? else {
                        continue;
                    };
                    let table = rel.schema.clone();
                    let source = self.source_info(wal_start)?;
                    batch.events.push(Event::Change(ChangeEvent {
                        op: Op::Truncate,
                        table,
                        before: None,
                        after: None,
                        source,
                    }));
                }
                return Ok(());
            }
            Message::Message(m) => {
                self.changes.received = self.changes.received.max(m.lsn);
                push_message(batch, m.transactional, m.lsn, m.prefix, &m.content);
                return Ok(());
            }
            // Type names come from the catalog; origins are not needed.
            Message::Origin(_) | Message::Type(_) => return Ok(()),
        };
        let (op, table, before, after) = change;
        let source = self.source_info(wal_start)?;
        batch.events.push(Event::Change(ChangeEvent {
            op,
            table,
            before,
            after,
            source,
        }));
        Ok(())
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
