//! Tests of `setup::check::objects`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::setup::check::report::Severity;
use cdc_core::ReplicaIdentity;

fn server() -> ServerState {
    ServerState::sample()
}

fn slot() -> SlotInfo {
    SlotInfo {
        kind: "logical".into(),
        plugin: "pgoutput".into(),
        database: "app".into(),
        active_pid: None,
        wal_status: "reserved".into(),
    }
}

fn table(name: &str, owned: bool) -> TableState {
    TableState {
        name: TableName::new("public", name),
        kind: 'r',
        identity: ReplicaIdentity::Default,
        has_primary_key: true,
        has_identity_index: false,
        owner: "app".into(),
        owned,
        can_select: true,
        schema_usage: true,
        toastable: Vec::new(),
    }
}

#[test]
fn slot_states() {
    let s = server();
    assert_eq!(
        slot_finding(&s, "x", true, false, Some(&slot())).severity,
        Severity::Ok
    );
    let mut lost = slot();
    lost.wal_status = "lost".into();
    let f = slot_finding(&s, "x", true, false, Some(&lost));
    assert_eq!(f.severity, Severity::Blocking);
    assert!(f.detail.starts_with("was invalidated"), "{f}");
    assert!(
        f.to_string()
            .contains("fix: SELECT pg_drop_replication_slot('x');"),
        "{f}"
    );
    let mut busy = slot();
    busy.active_pid = Some(42);
    let f = slot_finding(&s, "x", true, true, Some(&busy));
    assert_eq!(f.severity, Severity::Warning);
    assert!(
        f.detail.contains("pid 42") && f.detail.contains("standby"),
        "{f}"
    );
    let mut other_db = slot();
    other_db.database = "other".into();
    assert!(slot_finding(&s, "x", true, false, Some(&other_db))
        .to_string()
        .contains("belongs to database `other`, not `app`"));
    let mut physical = slot();
    physical.kind = "physical".into();
    physical.plugin.clear();
    assert_eq!(
        slot_finding(&s, "x", true, false, Some(&physical)).severity,
        Severity::Blocking
    );
    let f = slot_finding(&s, "it's", false, false, None);
    assert!(
        f.to_string()
            .contains("pg_create_logical_replication_slot('it''s', 'pgoutput')"),
        "{f}"
    );
}

#[test]
fn publication_rules() {
    let s = server();
    let names = [TableName::new("public", "a"), TableName::new("public", "b")];
    let found = [table("a", true), table("b", false)];
    let run = |create, p: Option<&PublicationState>, found: &[TableState]| {
        let mut r = CheckReport::default();
        publication_findings(&s, "p", create, &names, found, p, &mut r);
        assert_eq!(r.findings.len(), 1, "{r:?}");
        r.findings.remove(0)
    };
    // Missing, created by a role that does not own public.b.
    let f = run(true, None, &found);
    assert_eq!(f.severity, Severity::Blocking);
    assert!(f.detail.contains("public.b (owner `app`)"), "{f}");
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .starts_with("ALTER TABLE \"public\".\"b\" OWNER TO \"cdc\";"),
        "{f}"
    );
    // Owning both but no CREATE on the database.
    let owned = [table("a", true), table("b", true)];
    let mut no_create = server();
    no_create.can_create_in_database = false;
    let mut r = CheckReport::default();
    publication_findings(&no_create, "p", true, &names, &owned, None, &mut r);
    assert!(r.findings[0]
        .to_string()
        .contains("GRANT CREATE ON DATABASE \"app\" TO \"cdc\";"));
    assert_eq!(run(true, None, &owned).severity, Severity::Ok);
    // Exists with one table, and not all operations.
    let p = PublicationState {
        all_tables: false,
        via_root: false,
        owned: true,
        unpublished_ops: vec!["truncate"],
        tables: vec![TableName::new("public", "a")],
    };
    let mut r = CheckReport::default();
    publication_findings(&s, "p", false, &names, &owned, Some(&p), &mut r);
    assert_eq!(r.findings[0].severity, Severity::Warning);
    assert!(r.findings[1]
        .to_string()
        .contains("ALTER PUBLICATION \"p\" ADD TABLE \"public\".\"b\";"));
    let mut r = CheckReport::default();
    publication_findings(&s, "p", true, &names, &found, Some(&p), &mut r);
    assert_eq!(r.findings[1].severity, Severity::Blocking, "{r:?}");
    let all = PublicationState {
        all_tables: true,
        unpublished_ops: vec![],
        ..p
    };
    assert_eq!(run(false, Some(&all), &found).severity, Severity::Ok);
}

#[test]
fn metadata_rules() {
    let s = server();
    let m = |schema_exists, tables_exist, usage, create| MetadataState {
        schema_exists,
        tables_exist,
        usage,
        create,
    };
    assert_eq!(
        metadata_finding(&s, "cdc", &m(false, false, false, false)).severity,
        Severity::Ok
    );
    assert_eq!(
        metadata_finding(&s, "cdc", &m(true, true, true, false)).severity,
        Severity::Ok
    );
    let f = metadata_finding(&s, "cdc", &m(true, true, false, false));
    assert!(
        f.to_string()
            .contains("GRANT USAGE ON SCHEMA \"cdc\" TO \"cdc\";"),
        "{f}"
    );
    let f = metadata_finding(&s, "cdc", &m(true, false, true, false));
    assert!(
        f.to_string()
            .contains("GRANT CREATE, USAGE ON SCHEMA \"cdc\" TO \"cdc\";"),
        "{f}"
    );
    let mut no_create = server();
    no_create.can_create_in_database = false;
    let f = metadata_finding(&no_create, "cdc", &m(false, false, false, false));
    assert_eq!(f.severity, Severity::Blocking);
    assert!(
        f.to_string()
            .contains("fix: GRANT CREATE ON DATABASE \"app\" TO \"cdc\";"),
        "{f}"
    );
}
