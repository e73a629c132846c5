//! Server-wide checks: version, `wal_level`, slots, WAL senders, the role.

use sqlx::{PgConnection, Row};

use super::report::{CheckReport, Finding};
use super::CheckRequest;
use crate::error::PgError;
use crate::ident::quote_ident;

/// The oldest server the engine works with, as `server_version_num`.
///
/// Streaming sends `START_REPLICATION … (proto_version '1',
/// publication_names '…', messages 'true')`: the `messages` option (logical
/// decoding messages, which carry the engine's heartbeats) exists in pgoutput
/// from PostgreSQL 14 on, and older servers refuse it.
pub const MIN_SERVER_VERSION_NUM: i32 = 140_000;

/// Why [`MIN_SERVER_VERSION_NUM`] is what it is, for messages and docs.
pub const MIN_VERSION_REASON: &str = "streaming asks pgoutput for logical decoding messages \
     (START_REPLICATION … messages 'true', which carry the heartbeats), an option pgoutput accepts \
     from PostgreSQL 14 on";

/// What the server and the role look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    /// `server_version`, e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub version: String,
    /// `server_version_num`, e.g. 150018.
    pub version_num: i32,
    /// `wal_level`.
    pub wal_level: String,
    /// `max_replication_slots`.
    pub max_slots: i32,
    /// Replication slots that exist (all databases).
    pub slots_in_use: i64,
    /// `max_wal_senders`.
    pub max_senders: i32,
    /// WAL senders running now.
    pub senders_in_use: i64,
    /// `current_user`.
    pub user: String,
    /// `current_database()`.
    pub database: String,
    /// The role is a superuser.
    pub superuser: bool,
    /// The role may stream: REPLICATION, superuser, or `rds_replication`.
    pub can_replicate: bool,
    /// The role has `CREATE` on the database.
    pub can_create_in_database: bool,
}

impl ServerState {
    /// Reads the settings and the role's attributes.
    pub async fn read(conn: &mut PgConnection) -> Result<Self, PgError> {
        let row = sqlx::query(
            "SELECT current_setting('server_version') AS version,
                    current_setting('server_version_num')::int4 AS version_num,
                    current_setting('wal_level') AS wal_level,
                    current_setting('max_replication_slots')::int4 AS max_slots,
                    (SELECT count(*) FROM pg_catalog.pg_replication_slots) AS slots,
                    current_setting('max_wal_senders')::int4 AS max_senders,
                    (SELECT count(*) FROM pg_catalog.pg_stat_replication) AS senders,
                    current_user::text AS usr,
                    current_database()::text AS db,
                    r.rolsuper,
                    r.rolreplication OR r.rolsuper
                      -- Amazon RDS / Aurora grant replication through this role.
                      OR coalesce((SELECT pg_has_role(current_user, g.oid, 'member')
                                   FROM pg_catalog.pg_roles g WHERE g.rolname = 'rds_replication'), false)
                      AS can_replicate,
                    has_database_privilege(current_database(), 'CREATE') AS db_create
             FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| PgError::sql("reading server settings", e))?;
        let err = |e| PgError::sql("reading server settings", e);
        Ok(ServerState {
            version: row.try_get("version").map_err(err)?,
            version_num: row.try_get("version_num").map_err(err)?,
            wal_level: row.try_get("wal_level").map_err(err)?,
            max_slots: row.try_get("max_slots").map_err(err)?,
            slots_in_use: row.try_get("slots").map_err(err)?,
            max_senders: row.try_get("max_senders").map_err(err)?,
            senders_in_use: row.try_get("senders").map_err(err)?,
            user: row.try_get("usr").map_err(err)?,
            database: row.try_get("db").map_err(err)?,
            superuser: row.try_get("rolsuper").map_err(err)?,
            can_replicate: row.try_get("can_replicate").map_err(err)?,
            can_create_in_database: row.try_get("db_create").map_err(err)?,
        })
    }
}

/// The version rule: [`MIN_SERVER_VERSION_NUM`] or newer.
pub fn version_finding(version: &str, version_num: i32) -> Finding {
    if version_num < MIN_SERVER_VERSION_NUM {
        Finding::blocking(
            "server version",
            format!(
                "PostgreSQL {version} is too old: the engine needs PostgreSQL 14 or newer, because {MIN_VERSION_REASON}"
            ),
            "upgrade PostgreSQL to 14 or newer",
        )
    } else {
        Finding::ok(
            "server version",
            format!("PostgreSQL {version} (14 or newer needed)"),
        )
    }
}

/// The findings about the server and the role.
pub fn server_findings(s: &ServerState, req: &CheckRequest, report: &mut CheckReport) {
    report.push(version_finding(&s.version, s.version_num));
    if !req.streams {
        return;
    }
    report.push(if s.wal_level == "logical" {
        Finding::ok("wal_level", "logical")
    } else {
        Finding::blocking(
            "wal_level",
            format!(
                "is `{}`, but change data capture needs `logical`",
                s.wal_level
            ),
            "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
        )
    });
    report.push(if s.max_senders < 1 {
        Finding::blocking(
            "max_wal_senders",
            "is 0: no replication connection is possible",
            "ALTER SYSTEM SET max_wal_senders = 10; then restart PostgreSQL",
        )
    } else if s.senders_in_use >= i64::from(s.max_senders) {
        Finding::warning(
            "max_wal_senders",
            format!(
                "all {} WAL senders are in use: streaming cannot start until one is free (run retries)",
                s.max_senders
            ),
            format!(
                "ALTER SYSTEM SET max_wal_senders = {}; then restart PostgreSQL, or stop unused replication connections (SELECT pid, application_name FROM pg_stat_replication)",
                s.max_senders.saturating_mul(2).max(10)
            ),
        )
    } else {
        Finding::ok(
            "max_wal_senders",
            format!("{} of {} in use", s.senders_in_use, s.max_senders),
        )
    });
    let role = quote_ident(&s.user);
    report.push(if s.can_replicate {
        Finding::ok(
            format!("role {}", s.user),
            if s.superuser {
                "superuser"
            } else {
                "may stream (REPLICATION)"
            },
        )
    } else {
        Finding::blocking(
            format!("role {}", s.user),
            format!("`{}` lacks the REPLICATION attribute, which streaming and creating the slot need", s.user),
            format!(
                "as a superuser run ALTER ROLE {role} WITH REPLICATION; (on Amazon RDS/Aurora: GRANT rds_replication TO {role};)"
            ),
        )
    });
}

/// The free-slot rule, for a slot that must be created.
pub fn free_slot_finding(s: &ServerState, slot: &str) -> Finding {
    if i64::from(s.max_slots) <= s.slots_in_use {
        Finding::blocking(
            format!("slot {slot}"),
            format!(
                "does not exist and cannot be created: all {max} replication slots are in use (max_replication_slots = {max})",
                max = s.max_slots
            ),
            format!(
                "ALTER SYSTEM SET max_replication_slots = {}; then restart PostgreSQL, or drop unused slots (SELECT slot_name, active FROM pg_replication_slots; SELECT pg_drop_replication_slot('…');)",
                s.max_slots.saturating_add(10)
            ),
        )
    } else {
        Finding::ok(
            format!("slot {slot}"),
            format!(
                "will be created ({} of {} replication slots in use)",
                s.slots_in_use, s.max_slots
            ),
        )
    }
}

#[cfg(test)]
impl ServerState {
    /// A healthy PostgreSQL 15 as role `cdc` on database `app`, for tests.
    pub(crate) fn sample() -> ServerState {
        ServerState {
            version: "15.18".into(),
            version_num: 150_018,
            wal_level: "logical".into(),
            max_slots: 10,
            slots_in_use: 1,
            max_senders: 10,
            senders_in_use: 0,
            user: "cdc".into(),
            database: "app".into(),
            superuser: false,
            can_replicate: true,
            can_create_in_database: true,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::setup::check::report::Severity;

    fn state() -> ServerState {
        ServerState::sample()
    }

    fn findings(s: &ServerState, streams: bool) -> Vec<Finding> {
        let mut req = CheckRequest::new(Vec::new(), "p", "s");
        req.streams = streams;
        let mut r = CheckReport::default();
        server_findings(s, &req, &mut r);
        r.findings
    }

    #[test]
    fn versions_below_14_are_blocking_and_say_why() {
        for (text, num) in [("10.23", 100_023), ("13.16", 130_016), ("9.6.24", 90_624)] {
            let f = version_finding(text, num);
            assert_eq!(f.severity, Severity::Blocking, "{num}");
            let line = f.to_string();
            assert!(
                line.contains(&format!("PostgreSQL {text} is too old")),
                "{line}"
            );
            assert!(line.contains("messages 'true'"), "{line}");
            assert!(line.contains("PostgreSQL 14"), "{line}");
            assert!(
                line.ends_with("fix: upgrade PostgreSQL to 14 or newer"),
                "{line}"
            );
        }
        for num in [140_000, 140_013, 150_018, 170_000] {
            assert_eq!(version_finding("x", num).severity, Severity::Ok, "{num}");
        }
    }

    #[test]
    fn a_healthy_server_is_ok() {
        let f = findings(&state(), true);
        assert!(f.iter().all(|f| f.severity == Severity::Ok), "{f:?}");
        assert_eq!(f.len(), 4);
        // Without streaming only the version matters.
        let mut bad = state();
        bad.wal_level = "replica".into();
        bad.can_replicate = false;
        assert_eq!(findings(&bad, false).len(), 1);
    }

    #[test]
    fn every_server_problem_is_reported() {
        let mut s = state();
        s.wal_level = "replica".into();
        s.max_senders = 0;
        s.can_replicate = false;
        s.user = "odd \"user\"".into();
        let lines: Vec<String> = findings(&s, true).iter().map(|f| f.to_string()).collect();
        assert_eq!(
            lines[1],
            "FAIL wal_level: is `replica`, but change data capture needs `logical`; fix: \
             ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
        );
        assert!(
            lines[2].starts_with("FAIL max_wal_senders: is 0"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains("ALTER ROLE \"odd \"\"user\"\"\" WITH REPLICATION;"),
            "{}",
            lines[3]
        );
        s.max_senders = 3;
        s.senders_in_use = 3;
        let f = findings(&s, true);
        assert_eq!(f[2].severity, Severity::Warning);
        assert!(
            f[2].to_string().contains("max_wal_senders = 10"),
            "{}",
            f[2]
        );
    }

    #[test]
    fn no_free_slot_is_blocking() {
        let mut s = state();
        assert_eq!(free_slot_finding(&s, "x").severity, Severity::Ok);
        s.slots_in_use = 10;
        let f = free_slot_finding(&s, "x");
        assert_eq!(f.severity, Severity::Blocking);
        assert!(
            f.to_string()
                .contains("all 10 replication slots are in use (max_replication_slots = 10)"),
            "{f}"
        );
        assert!(f.to_string().contains("max_replication_slots = 20;"), "{f}");
    }
}
