//! The logical replication slot that remembers how far we got.

use cdc_core::Lsn;
use sqlx::{PgConnection, Row};

use super::preflight::ServerInfo;
use crate::error::PgError;
use crate::ident::quote_literal;
use crate::invalidation::INVALIDATION_SQL;

/// The slot as found (or created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    /// Where streaming resumes: every change committed after it is still to be delivered.
    pub confirmed_flush_lsn: Lsn,
    /// `true` when this call created the slot.
    pub created: bool,
}

/// Whether and how [`ensure_slot`] may create the slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotCreation {
    /// Create the slot when it is missing.
    pub create: bool,
    /// As a failover slot (`failover` of PostgreSQL 17+, which the caller
    /// has checked); an existing slot without it gets a warning.
    pub failover: bool,
}

/// Makes sure logical slot `name` (plugin `pgoutput`, this database)
/// exists; creates it when `how.create` is true.
pub async fn ensure_slot(
    conn: &mut PgConnection,
    server: &ServerInfo,
    name: &str,
    how: SlotCreation,
) -> Result<SlotState, PgError> {
    let SlotCreation { create, failover } = how;
    let ctx = || format!("checking replication slot {name}");
    let sql = format!(
        "SELECT plugin::text AS plugin, slot_type::text AS kind, database::text AS db,
                confirmed_flush_lsn::text AS lsn, ({INVALIDATION_SQL}) AS invalidation,
                coalesce(to_jsonb(s)->>'failover', 'false') AS failover
         FROM pg_catalog.pg_replication_slots AS s WHERE slot_name = $1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| PgError::sql(ctx(), e))?;

    if let Some(row) = row {
        let get = |col: &str| {
            row.try_get::<Option<String>, _>(col)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        if get("kind") != "logical" || get("plugin") != "pgoutput" {
            return Err(PgError::Setup(format!(
                "replication slot `{name}` exists but is a {} slot with plugin `{}`; it must be a logical slot \
                 using pgoutput: choose another source.slot.name or drop it with SELECT pg_drop_replication_slot({});",
                get("kind"),
                get("plugin"),
                quote_literal(name)
            )));
        }
        if get("db") != server.database {
            return Err(PgError::Setup(format!(
                "replication slot `{name}` belongs to database `{}`, not `{}`: choose another source.slot.name",
                get("db"),
                server.database
            )));
        }
        // Invalidated: refuse, never replace it with a new slot silently.
        let invalidation = get("invalidation");
        if !invalidation.is_empty() {
            return Err(PgError::SlotInvalidated {
                slot: name.to_owned(),
                reason: Some(invalidation),
            });
        }
        if failover && get("failover") != "true" {
            tracing::warn!(
                slot = name,
                "replication slot {name} exists without the failover option: standbys do not \
                 synchronise it, so a failover loses it; on a replication connection \
                 (replication=database) run ALTER_REPLICATION_SLOT {} (FAILOVER true)",
                crate::ident::quote_ident(name)
            );
        }
        let lsn = get("lsn").parse::<Lsn>().map_err(|e| {
            PgError::Protocol(format!("slot {name}: unreadable confirmed_flush_lsn: {e}"))
        })?;
        return Ok(SlotState {
            confirmed_flush_lsn: lsn,
            created: false,
        });
    }

    if !create {
        return Err(PgError::Setup(format!(
            "replication slot `{name}` does not exist: run SELECT pg_create_logical_replication_slot({}, 'pgoutput'); \
             or set source.slot.create: true",
            quote_literal(name)
        )));
    }
    if i64::from(server.max_replication_slots) <= server.slots_in_use {
        return Err(too_few_slots(server.max_replication_slots));
    }
    tracing::info!(slot = name, failover, "creating replication slot");
    // (The five-argument form, with `failover`, exists from 17 on.)
    let create_sql = if failover {
        "SELECT lsn::text AS lsn FROM pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)"
    } else {
        "SELECT lsn::text AS lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')"
    };
    let created = sqlx::query(create_sql)
        .bind(name)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("53400") => {
                too_few_slots(server.max_replication_slots)
            }
            sqlx::Error::Database(db) if db.code().as_deref() == Some("42710") => PgError::SlotRace,
            _ => PgError::sql(format!("creating replication slot {name}"), e),
        });
    let row = match created {
        Err(PgError::SlotRace) => {
            // Another instance created it a moment ago: use that one.
            tracing::info!(
                slot = name,
                "replication slot created concurrently; using it"
            );
            return Box::pin(ensure_slot(conn, server, name, SlotCreation::default())).await;
        }
        other => other?,
    };
    let text: String = row
        .try_get("lsn")
        .map_err(|e| PgError::sql(format!("creating replication slot {name}"), e))?;
    let lsn = text
        .parse::<Lsn>()
        .map_err(|e| PgError::Protocol(format!("slot {name}: unreadable lsn: {e}")))?;
    Ok(SlotState {
        confirmed_flush_lsn: lsn,
        created: true,
    })
}

/// The `confirmed_flush_lsn` of slot `name`; `None` when there is no such
/// slot (or it has no confirmed position: a physical slot).
pub async fn slot_confirmed_flush(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<Lsn>, PgError> {
    let text: Option<Option<String>> = sqlx::query_scalar(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| PgError::sql(format!("checking replication slot {name}"), e))?;
    text.flatten()
        .map(|t| {
            t.parse::<Lsn>().map_err(|e| {
                PgError::Protocol(format!("slot {name}: unreadable confirmed_flush_lsn: {e}"))
            })
        })
        .transpose()
}

/// `true` when a replication slot called `name` exists (any database).
pub async fn slot_exists(conn: &mut PgConnection, name: &str) -> Result<bool, PgError> {
    let row = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1) AS found",
    )
    .bind(name)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| PgError::sql(format!("checking replication slot {name}"), e))?;
    row.try_get("found")
        .map_err(|e| PgError::sql(format!("checking replication slot {name}"), e))
}

fn too_few_slots(max: i32) -> PgError {
    PgError::Setup(format!(
        "all {max} replication slots are in use (max_replication_slots = {max}): raise max_replication_slots \
         in postgresql.conf and restart PostgreSQL, or drop unused slots (SELECT slot_name FROM pg_replication_slots)"
    ))
}
