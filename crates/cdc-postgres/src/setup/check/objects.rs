//! The publication, the slot and the snapshot's metadata schema.

use cdc_core::TableName;
use sqlx::{PgConnection, Row};

use super::report::{CheckReport, Finding};
use super::server::{free_slot_finding, ServerState};
use super::tables::TableState;
use crate::error::PgError;
use crate::ident::{quote_ident, quote_literal, quote_table};
use crate::setup::publication::{add_tables_sql, create_publication_sql};

/// The publication as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationState {
    /// `FOR ALL TABLES`.
    pub all_tables: bool,
    /// `publish_via_partition_root`.
    pub via_root: bool,
    /// The connected role owns it.
    pub owned: bool,
    /// Operations it does not publish (`insert`, `update`, …).
    pub unpublished_ops: Vec<&'static str>,
    /// The tables it publishes or lists (partitions included).
    pub tables: Vec<TableName>,
}

impl PublicationState {
    /// Reads publication `name`; `None` when it does not exist.
    pub async fn read(conn: &mut PgConnection, name: &str) -> Result<Option<Self>, PgError> {
        let ctx = || format!("checking publication {name}");
        let row = sqlx::query(
            "SELECT puballtables, pubviaroot, pubinsert, pubupdate, pubdelete, pubtruncate,
                    pg_catalog.pg_has_role(pubowner, 'USAGE') AS owned
             FROM pg_catalog.pg_publication WHERE pubname = $1",
        )
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| PgError::sql(ctx(), e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let flag = |col: &str| {
            row.try_get::<bool, _>(col)
                .map_err(|e| PgError::sql(ctx(), e))
        };
        let mut unpublished_ops = Vec::new();
        for (col, op) in [
            ("pubinsert", "insert"),
            ("pubupdate", "update"),
            ("pubdelete", "delete"),
            ("pubtruncate", "truncate"),
        ] {
            if !flag(col)? {
                unpublished_ops.push(op);
            }
        }
        // pg_publication_tables lists the partitions, not a partitioned
        // table added without publish_via_partition_root: pg_publication_rel
        // has the tables as added.
        let rows = sqlx::query(
            "SELECT schemaname::text AS s, tablename::text AS t
             FROM pg_catalog.pg_publication_tables WHERE pubname = $1
             UNION
             SELECT n.nspname::text, c.relname::text
             FROM pg_catalog.pg_publication_rel pr
             JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
             JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE p.pubname = $1",
        )
        .bind(name)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| PgError::sql(ctx(), e))?;
        let mut tables = Vec::with_capacity(rows.len());
        for r in &rows {
            let s: String = r.try_get("s").map_err(|e| PgError::sql(ctx(), e))?;
            let t: String = r.try_get("t").map_err(|e| PgError::sql(ctx(), e))?;
            tables.push(TableName::new(s, t));
        }
        Ok(Some(PublicationState {
            all_tables: flag("puballtables")?,
            via_root: flag("pubviaroot")?,
            owned: flag("owned")?,
            unpublished_ops,
            tables,
        }))
    }
}

/// The publication's findings. `found` holds the configured tables that exist.
pub fn publication_findings(
    server: &ServerState,
    name: &str,
    create: bool,
    tables: &[TableName],
    found: &[TableState],
    publication: Option<&PublicationState>,
    report: &mut CheckReport,
) {
    let subject = format!("publication {name}");
    let role = quote_ident(&server.user);
    let not_owned: Vec<&TableState> = found.iter().filter(|t| !t.owned).collect();
    let ownership_fix = |sql: &str| {
        let alters: Vec<String> = not_owned
            .iter()
            .map(|t| format!("ALTER TABLE {} OWNER TO {role};", quote_table(&t.name)))
            .collect();
        format!("{} or have the tables' owner run {sql};", alters.join(" "))
    };
    let not_owned_names = || {
        not_owned
            .iter()
            .map(|t| format!("{} (owner `{}`)", t.name, t.owner))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(publication) = publication else {
        let all: Vec<&TableName> = tables.iter().collect();
        let sql = create_publication_sql(name, &all);
        if !create {
            report.push(Finding::blocking(
                subject,
                format!("`{name}` does not exist (source.publication.create is false)"),
                format!("run {sql}; or set source.publication.create: true"),
            ));
        } else if !not_owned.is_empty() {
            report.push(Finding::blocking(
                subject,
                format!(
                    "does not exist, and role `{}` cannot create it: creating a publication for a table needs its ownership, and the role does not own {}",
                    server.user,
                    not_owned_names()
                ),
                ownership_fix(&sql),
            ));
        } else if !server.can_create_in_database {
            report.push(Finding::blocking(
                subject,
                format!(
                    "does not exist, and role `{}` may not create it (no CREATE on database `{}`)",
                    server.user, server.database
                ),
                format!(
                    "GRANT CREATE ON DATABASE {} TO {role}; or have an administrator run {sql};",
                    quote_ident(&server.database)
                ),
            ));
        } else {
            report.push(Finding::ok(subject, "does not exist; will be created"));
        }
        return;
    };
    if !publication.unpublished_ops.is_empty() {
        report.push(Finding::warning(
            subject.clone(),
            format!(
                "does not publish {}: those changes are not captured",
                publication.unpublished_ops.join(", ")
            ),
            format!(
                "ALTER PUBLICATION {} SET (publish = 'insert, update, delete, truncate');",
                quote_ident(name)
            ),
        ));
    }
    let missing: Vec<&TableName> = if publication.all_tables {
        Vec::new()
    } else {
        tables
            .iter()
            .filter(|t| !publication.tables.contains(t))
            .collect()
    };
    if missing.is_empty() {
        report.push(Finding::ok(
            subject,
            if publication.all_tables {
                "exists (FOR ALL TABLES)"
            } else {
                "exists and includes every table"
            },
        ));
        return;
    }
    let names = missing
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let sql = add_tables_sql(name, &missing);
    let missing_not_owned = not_owned.iter().any(|t| missing.contains(&&t.name));
    if !create {
        report.push(Finding::blocking(
            subject,
            format!("does not include {names} (source.publication.create is false)"),
            format!("run {sql}; or set source.publication.create: true"),
        ));
    } else if !publication.owned || missing_not_owned {
        report.push(Finding::blocking(
            subject,
            format!(
                "does not include {names}, and role `{}` cannot add them: that needs ownership of the publication and of the tables",
                server.user
            ),
            format!("have the owner of the publication and of the tables run {sql};"),
        ));
    } else {
        report.push(Finding::ok(
            subject,
            format!("does not include {names}; will be added"),
        ));
    }
}

/// The replication slot as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// `physical` or `logical`.
    pub kind: String,
    /// Output plugin (empty for physical slots).
    pub plugin: String,
    /// Its database (empty for physical slots).
    pub database: String,
    /// A session streams from it now.
    pub active_pid: Option<i32>,
    /// `wal_status`: `reserved`, `extended`, `unreserved`, `lost`.
    pub wal_status: String,
}

impl SlotInfo {
    /// Reads slot `name`; `None` when it does not exist.
    pub async fn read(conn: &mut PgConnection, name: &str) -> Result<Option<Self>, PgError> {
        let ctx = || format!("checking replication slot {name}");
        let row = sqlx::query(
            "SELECT slot_type::text AS kind, coalesce(plugin::text, '') AS plugin,
                    coalesce(database::text, '') AS db, active_pid,
                    coalesce(wal_status, '') AS wal_status
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
        )
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| PgError::sql(ctx(), e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let err = |e| PgError::sql(ctx(), e);
        Ok(Some(SlotInfo {
            kind: row.try_get("kind").map_err(err)?,
            plugin: row.try_get("plugin").map_err(err)?,
            database: row.try_get("db").map_err(err)?,
            active_pid: row.try_get("active_pid").map_err(err)?,
            wal_status: row.try_get("wal_status").map_err(err)?,
        }))
    }
}

/// The slot's finding.
pub fn slot_finding(
    server: &ServerState,
    name: &str,
    create: bool,
    standby: bool,
    slot: Option<&SlotInfo>,
) -> Finding {
    let subject = format!("slot {name}");
    let lit = quote_literal(name);
    let Some(slot) = slot else {
        if !create {
            return Finding::blocking(
                subject,
                format!("`{name}` does not exist (source.slot.create is false)"),
                format!(
                    "run SELECT pg_create_logical_replication_slot({lit}, 'pgoutput'); or set source.slot.create: true"
                ),
            );
        }
        return free_slot_finding(server, name);
    };
    if slot.kind != "logical" || slot.plugin != "pgoutput" {
        return Finding::blocking(
            subject,
            format!(
                "exists but is a {} slot with plugin `{}`; the engine needs a logical slot using pgoutput",
                slot.kind, slot.plugin
            ),
            format!(
                "choose another source.slot.name, or drop it (if nothing else uses it): SELECT pg_drop_replication_slot({lit});"
            ),
        );
    }
    if slot.database != server.database {
        return Finding::blocking(
            subject,
            format!(
                "belongs to database `{}`, not `{}`",
                slot.database, server.database
            ),
            "choose another source.slot.name",
        );
    }
    if slot.wal_status == "lost" {
        return Finding::blocking(
            subject,
            "was invalidated: the server removed WAL it still needed (max_slot_wal_keep_size), so changes were lost",
            format!(
                "SELECT pg_drop_replication_slot({lit}); then start again with snapshot.mode: initial (source.slot.create: true re-creates it)"
            ),
        );
    }
    if let Some(pid) = slot.active_pid {
        let what = if standby {
            "this instance waits as a standby (source.slot.standby: true) and takes over when it is released"
        } else {
            "run keeps retrying until it is released"
        };
        return Finding::warning(
            subject,
            format!("is in use by another process (pid {pid}): {what}"),
            "stop the other process, or set source.slot.standby: true on every instance sharing the slot",
        );
    }
    Finding::ok(
        subject,
        "exists (logical, pgoutput); streaming resumes where it stopped",
    )
}

/// The metadata schema as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataState {
    /// The schema exists.
    pub schema_exists: bool,
    /// Both coordination tables exist.
    pub tables_exist: bool,
    /// The role has `USAGE` on the schema.
    pub usage: bool,
    /// The role has `CREATE` on the schema.
    pub create: bool,
}

impl MetadataState {
    /// Reads the state of metadata schema `schema`.
    pub async fn read(conn: &mut PgConnection, schema: &str) -> Result<Self, PgError> {
        let ctx = || format!("checking metadata schema {schema}");
        // Catalog lookups only: to_regclass() would fail without USAGE.
        let row = sqlx::query(
            "SELECT n.oid IS NOT NULL AS schema_exists,
                    coalesce(pg_catalog.has_schema_privilege(n.oid, 'USAGE'), false) AS usage,
                    coalesce(pg_catalog.has_schema_privilege(n.oid, 'CREATE'), false) AS can_create,
                    (SELECT count(*) FROM pg_catalog.pg_class c
                     WHERE c.relnamespace = n.oid AND c.relkind = 'r'
                       AND c.relname IN ('snapshot_jobs', 'snapshot_chunks')) = 2 AS tables_exist
             FROM (SELECT 1) AS one
             LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = $1",
        )
        .bind(schema)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| PgError::sql(ctx(), e))?;
        let err = |e| PgError::sql(ctx(), e);
        Ok(MetadataState {
            schema_exists: row.try_get("schema_exists").map_err(err)?,
            tables_exist: row.try_get("tables_exist").map_err(err)?,
            usage: row.try_get("usage").map_err(err)?,
            create: row.try_get("can_create").map_err(err)?,
        })
    }
}

/// What the snapshot's metadata tables need.
pub fn metadata_finding(server: &ServerState, schema: &str, m: &MetadataState) -> Finding {
    let subject = format!("metadata schema {schema}");
    let role = quote_ident(&server.user);
    let q = quote_ident(schema);
    if m.schema_exists && m.tables_exist {
        return if m.usage {
            Finding::ok(subject, "the snapshot's coordination tables exist")
        } else {
            Finding::blocking(
                subject,
                format!("role `{}` has no USAGE on schema `{schema}`, which holds the snapshot's coordination tables", server.user),
                format!(
                    "GRANT USAGE ON SCHEMA {q} TO {role}; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {q} TO {role}; GRANT USAGE ON ALL SEQUENCES IN SCHEMA {q} TO {role};"
                ),
            )
        };
    }
    // The engine runs CREATE SCHEMA IF NOT EXISTS, then CREATE TABLE:
    // PostgreSQL checks CREATE on the database before IF NOT EXISTS.
    let mut missing = Vec::new();
    let mut fixes = Vec::new();
    if !server.can_create_in_database {
        missing.push(format!("CREATE on database `{}`", server.database));
        fixes.push(format!(
            "GRANT CREATE ON DATABASE {} TO {role};",
            quote_ident(&server.database)
        ));
    }
    if m.schema_exists && !(m.create && m.usage) {
        missing.push(format!("CREATE and USAGE on schema `{schema}`"));
        fixes.push(format!("GRANT CREATE, USAGE ON SCHEMA {q} TO {role};"));
    }
    if missing.is_empty() {
        return Finding::ok(
            subject,
            "the snapshot's coordination tables will be created",
        );
    }
    Finding::blocking(
        subject,
        format!(
            "the snapshot's coordination tables do not exist yet, and creating them needs {}, which role `{}` lacks",
            missing.join(" and "),
            server.user
        ),
        format!(
            "{} (or run the engine once as a role that may create them; see docs/operations.md, Privileges)",
            fixes.join(" ")
        ),
    )
}

#[cfg(test)]
#[path = "objects_tests.rs"]
mod tests;
