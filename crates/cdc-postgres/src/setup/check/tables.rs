//! Per-table checks: existence, kind, replica identity, TOAST, partitions,
//! and the privileges the snapshot needs.

use cdc_core::{ReplicaIdentity, TableName};
use sqlx::{PgConnection, Row};

use super::objects::PublicationState;
use super::report::Finding;
use crate::error::PgError;
use crate::ident::{quote_ident, quote_table};
use crate::setup::publication::{create_publication_sql, via_root_sql};

/// One table as found in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableState {
    /// Its name.
    pub name: TableName,
    /// `pg_class.relkind`: `r` ordinary, `p` partitioned, others are no tables.
    pub kind: char,
    /// Its replica identity now.
    pub identity: ReplicaIdentity,
    /// It has a primary key.
    pub has_primary_key: bool,
    /// The index of `REPLICA IDENTITY USING INDEX` exists.
    pub has_identity_index: bool,
    /// The owning role.
    pub owner: String,
    /// The connected role owns it (or has the owner's privileges).
    pub owned: bool,
    /// The role may `SELECT` from it.
    pub can_select: bool,
    /// The role has `USAGE` on its schema.
    pub schema_usage: bool,
    /// Columns whose values can be TOASTed (storage `extended`, `external`, `main`).
    pub toastable: Vec<String>,
}

impl TableState {
    /// Looks `name` up; `None` when there is no such relation.
    pub async fn read(
        conn: &mut PgConnection,
        name: &TableName,
    ) -> Result<Option<TableState>, PgError> {
        let ctx = || format!("looking up table {name}");
        let row = sqlx::query(
            "SELECT c.relkind::text AS kind, c.relreplident::text AS ident,
                    EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                            WHERE i.indrelid = c.oid AND i.indisprimary) AS has_pk,
                    EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                            WHERE i.indrelid = c.oid AND i.indisreplident) AS has_ident_index,
                    pg_catalog.pg_get_userbyid(c.relowner)::text AS owner,
                    pg_catalog.pg_has_role(c.relowner, 'USAGE') AS owned,
                    pg_catalog.has_table_privilege(c.oid, 'SELECT') AS can_select,
                    pg_catalog.has_schema_privilege(n.oid, 'USAGE') AS schema_usage,
                    coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum)
                              FROM pg_catalog.pg_attribute a
                              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                                AND a.attstorage IN ('x', 'e', 'm')), '{}') AS toastable
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2",
        )
        .bind(&name.schema)
        .bind(&name.name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| PgError::sql(ctx(), e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let err = |e| PgError::sql(ctx(), e);
        let kind: String = row.try_get("kind").map_err(err)?;
        let ident: String = row.try_get("ident").map_err(err)?;
        Ok(Some(TableState {
            name: name.clone(),
            kind: kind.chars().next().unwrap_or('?'),
            identity: ident
                .bytes()
                .next()
                .and_then(ReplicaIdentity::from_code)
                .unwrap_or(ReplicaIdentity::Default),
            has_primary_key: row.try_get("has_pk").map_err(err)?,
            has_identity_index: row.try_get("has_ident_index").map_err(err)?,
            owner: row.try_get("owner").map_err(err)?,
            owned: row.try_get("owned").map_err(err)?,
            can_select: row.try_get("can_select").map_err(err)?,
            schema_usage: row.try_get("schema_usage").map_err(err)?,
            toastable: row.try_get("toastable").map_err(err)?,
        }))
    }

    /// `true` for an ordinary or a partitioned table.
    pub fn is_table(&self) -> bool {
        matches!(self.kind, 'r' | 'p')
    }
}

fn subject(name: &TableName) -> String {
    format!("table {name}")
}

/// A configured table that does not exist.
pub fn missing_table(name: &TableName, database: &str) -> Finding {
    Finding::blocking(
        subject(name),
        format!("`{name}` does not exist in database `{database}`"),
        "check source.tables (quoted names are case-sensitive, unquoted ones are lower-cased), or create the table",
    )
}

/// A relation that is no table (view, sequence, …).
pub fn not_a_table(t: &TableState) -> Finding {
    Finding::blocking(
        subject(&t.name),
        format!(
            "`{}` is not a table (relkind `{}`): only ordinary and partitioned tables can be captured",
            t.name, t.kind
        ),
        "capture the underlying tables instead (views and materialized views have no change stream)",
    )
}

/// Whether updates and deletes of `t` work once it is published, with the
/// replica identity `configured` in `source.replica_identity` (which `run`
/// sets) or else its current one. `None` when they do.
pub fn identity_finding(t: &TableState, configured: Option<ReplicaIdentity>) -> Option<Finding> {
    let effective = configured.unwrap_or(t.identity);
    let usable = match effective {
        ReplicaIdentity::Full => true,
        ReplicaIdentity::Default => t.has_primary_key,
        ReplicaIdentity::Index => t.has_identity_index,
        ReplicaIdentity::Nothing => false,
    };
    if usable {
        return None;
    }
    let why = match effective {
        ReplicaIdentity::Default => "has no primary key and replica identity DEFAULT",
        ReplicaIdentity::Index => "has replica identity USING INDEX, but that index is gone",
        _ => "has replica identity NOTHING",
    };
    let consequence = "once it is published, every UPDATE and DELETE on it fails on the server \
         (\"cannot update table … because it does not have a replica identity and publishes updates\")";
    let fix = format!(
        "ALTER TABLE {} REPLICA IDENTITY FULL; (or add a primary key), or set source.replica_identity: {{ {}: full }}",
        quote_table(&t.name),
        t.name
    );
    Some(if configured.is_some() {
        // Chosen in the configuration: the user asked for it.
        Finding::warning(
            subject(&t.name),
            format!("{why} (as source.replica_identity sets it): {consequence}"),
            fix,
        )
    } else {
        Finding::blocking(subject(&t.name), format!("{why}: {consequence}"), fix)
    })
}

/// Columns that may be TOASTed, when updates do not carry the whole old row.
pub fn toast_finding(t: &TableState, configured: Option<ReplicaIdentity>) -> Option<Finding> {
    let effective = configured.unwrap_or(t.identity);
    if effective == ReplicaIdentity::Full || t.toastable.is_empty() {
        return None;
    }
    let mut columns: Vec<String> = t.toastable.iter().take(5).cloned().collect();
    if t.toastable.len() > 5 {
        columns.push(format!("… ({} in all)", t.toastable.len()));
    }
    Some(Finding::warning(
        subject(&t.name),
        format!(
            "column(s) {} can be stored out of line (TOAST) and the replica identity is not FULL: \
             an UPDATE that leaves such a large value unchanged does not carry it, so the event's \
             `after` omits that column and names it in source.unchanged_toast",
            columns.join(", ")
        ),
        format!(
            "ALTER TABLE {} REPLICA IDENTITY FULL; or set source.replica_identity: {{ {}: full }} (or let consumers keep their stored value)",
            quote_table(&t.name),
            t.name
        ),
    ))
}

/// A partitioned table: how its changes are published. `publication` is
/// the publication as found (`None`: it does not exist yet); `create`:
/// the engine may change it (`source.publication.create`).
pub fn partition_finding(
    t: &TableState,
    name: &str,
    publication: Option<&PublicationState>,
    create: bool,
) -> Finding {
    let via_root = publication.map(|p| p.via_root);
    if via_root == Some(true) {
        return Finding::ok(
            subject(&t.name),
            "partitioned; the publication sends the changes of every partition as changes of this table (publish_via_partition_root)",
        );
    }
    let detail =
        "is partitioned: without publish_via_partition_root the publication sends changes under \
         each partition's own name, which is not in source.tables, so the engine would not capture them";
    match publication {
        None if create => Finding::ok(
            subject(&t.name),
            "partitioned; the publication will be created with publish_via_partition_root, so the \
             changes of every partition are sent as changes of this table",
        ),
        None => Finding::blocking(
            subject(&t.name),
            detail,
            format!(
                "create the publication with it: {};",
                create_publication_sql(name, &[&t.name])
            ),
        ),
        Some(p) if create && p.owned => Finding::warning(
            subject(&t.name),
            format!(
                "is partitioned and publication `{name}` does not set publish_via_partition_root: \
                 run sets it, so the changes of the partitions of every partitioned table in the \
                 publication are sent under the partitioned table's name, to every subscriber of it"
            ),
            format!("{}; (what run does)", via_root_sql(name)),
        ),
        Some(_) => Finding::blocking(subject(&t.name), detail, format!("{};", via_root_sql(name))),
    }
}

/// What the snapshot needs: `USAGE` on the schema and `SELECT` on the table.
pub fn select_finding(t: &TableState, user: &str) -> Option<Finding> {
    let role = quote_ident(user);
    if !t.schema_usage {
        return Some(Finding::blocking(
            subject(&t.name),
            format!(
                "role `{user}` has no USAGE on schema `{}`, so the snapshot cannot read the table",
                t.name.schema
            ),
            format!(
                "GRANT USAGE ON SCHEMA {} TO {role};",
                quote_ident(&t.name.schema)
            ),
        ));
    }
    if !t.can_select {
        return Some(Finding::blocking(
            subject(&t.name),
            format!(
                "role `{user}` may not read `{}`, which the snapshot copies",
                t.name
            ),
            format!("GRANT SELECT ON {} TO {role};", quote_table(&t.name)),
        ));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::setup::check::report::Severity;

    fn table() -> TableState {
        TableState {
            name: TableName::new("public", "t"),
            kind: 'r',
            identity: ReplicaIdentity::Default,
            has_primary_key: true,
            has_identity_index: false,
            owner: "app".into(),
            owned: true,
            can_select: true,
            schema_usage: true,
            toastable: Vec::new(),
        }
    }

    #[test]
    fn identity_rules() {
        let mut t = table();
        assert!(identity_finding(&t, None).is_none());
        t.has_primary_key = false;
        let f = identity_finding(&t, None).unwrap();
        assert_eq!(f.severity, Severity::Blocking);
        assert!(
            f.detail
                .starts_with("has no primary key and replica identity DEFAULT"),
            "{f}"
        );
        assert_eq!(
            f.fix.as_deref(),
            Some("ALTER TABLE \"public\".\"t\" REPLICA IDENTITY FULL; (or add a primary key), or set source.replica_identity: { public.t: full }")
        );
        // Configured FULL (run sets it) is fine; configured DEFAULT is a choice.
        assert!(identity_finding(&t, Some(ReplicaIdentity::Full)).is_none());
        let chosen = identity_finding(&t, Some(ReplicaIdentity::Default)).unwrap();
        assert_eq!(chosen.severity, Severity::Warning);
        t.identity = ReplicaIdentity::Nothing;
        t.has_primary_key = true;
        assert_eq!(
            identity_finding(&t, None).unwrap().severity,
            Severity::Blocking
        );
        assert_eq!(
            identity_finding(&t, Some(ReplicaIdentity::Nothing))
                .unwrap()
                .severity,
            Severity::Warning
        );
        t.identity = ReplicaIdentity::Index;
        assert_eq!(
            identity_finding(&t, None).unwrap().severity,
            Severity::Blocking
        );
        t.has_identity_index = true;
        assert!(identity_finding(&t, None).is_none());
    }

    #[test]
    fn toast_warns_unless_full() {
        let mut t = table();
        assert!(toast_finding(&t, None).is_none());
        t.toastable = (1..=7).map(|i| format!("c{i}")).collect();
        let f = toast_finding(&t, None).unwrap();
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.detail
                .starts_with("column(s) c1, c2, c3, c4, c5, … (7 in all)"),
            "{f}"
        );
        assert!(toast_finding(&t, Some(ReplicaIdentity::Full)).is_none());
        t.identity = ReplicaIdentity::Full;
        assert!(toast_finding(&t, None).is_none());
        assert!(toast_finding(&t, Some(ReplicaIdentity::Default)).is_some());
    }

    #[test]
    fn partitions_need_publish_via_partition_root() {
        let mut t = table();
        t.kind = 'p';
        let publication = |via_root: bool, owned: bool| PublicationState {
            all_tables: false,
            via_root,
            owned,
            unpublished_ops: Vec::new(),
            tables: vec![t.name.clone()],
        };
        let with = publication(true, true);
        assert_eq!(
            partition_finding(&t, "p", Some(&with), false).severity,
            Severity::Ok
        );
        let without = publication(false, true);
        let f = partition_finding(&t, "p", Some(&without), false);
        assert_eq!(f.severity, Severity::Blocking);
        assert_eq!(
            f.fix.as_deref(),
            Some("ALTER PUBLICATION \"p\" SET (publish_via_partition_root = true);")
        );
        // run sets it when it may change the publication, and can.
        assert_eq!(
            partition_finding(&t, "p", Some(&without), true).severity,
            Severity::Warning
        );
        assert_eq!(
            partition_finding(&t, "p", Some(&publication(false, false)), true).severity,
            Severity::Blocking
        );
        assert_eq!(
            partition_finding(&t, "p", None, true).severity,
            Severity::Ok
        );
        assert!(partition_finding(&t, "p", None, false)
            .to_string()
            .contains("CREATE PUBLICATION \"p\" FOR TABLE \"public\".\"t\" WITH (publish_via_partition_root = true);"));
    }

    #[test]
    fn select_needs_usage_and_select() {
        let mut t = table();
        assert!(select_finding(&t, "cdc").is_none());
        t.can_select = false;
        assert_eq!(
            select_finding(&t, "cdc").unwrap().fix.as_deref(),
            Some("GRANT SELECT ON \"public\".\"t\" TO \"cdc\";")
        );
        t.schema_usage = false;
        assert_eq!(
            select_finding(&t, "cdc").unwrap().fix.as_deref(),
            Some("GRANT USAGE ON SCHEMA \"public\" TO \"cdc\";")
        );
    }
}
