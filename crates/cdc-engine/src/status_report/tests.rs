//! Unit tests of the judgement and rendering of `cdc-engine status`.

use super::*;

fn config(mode: &str) -> Config {
    crate::config::parse_config(&format!(
        "name: p\nsource:\n  url: postgres://u:pw@h/db\n  tables: [public.t]\n  \
         slot: {{ name: s }}\n  publication: {{ name: pb }}\n\
         snapshot: {{ mode: {mode}, tables: [public.t] }}\nsinks: [{{ type: stdout }}]\n"
    ))
    .unwrap()
}

fn slot() -> SlotInfo {
    SlotInfo {
        name: "s".into(),
        plugin: Some("pgoutput".into()),
        database: Some("db".into()),
        active: true,
        active_pid: Some(7),
        confirmed_flush_lsn: Some(Lsn(100)),
        restart_lsn: Some(Lsn(90)),
        wal_status: Some("reserved".into()),
        safe_wal_size: None,
        lag_bytes: Some(10),
    }
}

fn found(slot: Option<SlotInfo>) -> SourceReport {
    SourceReport {
        server_version: 150018,
        wal_lsn: Some(Lsn(110)),
        slot,
        publication: Some(cdc_postgres::inspect::PublicationInfo {
            name: "pb".into(),
            all_tables: false,
            via_root: false,
            tables: vec![TableName::new("public", "t")],
        }),
        snapshot: None,
        incremental: Vec::new(),
    }
}

/// The tables of `config(…)`, as `status` resolves them.
fn tables() -> Vec<TableName> {
    vec![TableName::new("public", "t")]
}

#[test]
fn healthy_when_active_within_lag_and_published() {
    let problems = judge(
        &config("never"),
        &found(Some(slot())),
        &tables(),
        StatusOptions::default(),
    );
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn inactive_lagging_lost_or_missing_slots_are_degraded() {
    let opts = StatusOptions { max_lag_bytes: 5 };
    let mut s = slot();
    s.active = false;
    s.wal_status = Some("lost".into());
    let problems = judge(&config("never"), &found(Some(s)), &tables(), opts);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].contains("wal_status lost"));
    assert!(problems[1].contains("inactive"));
    assert!(problems[2].contains("10 bytes behind"));
    let problems = judge(&config("never"), &found(None), &tables(), opts);
    assert!(problems[0].contains("does not exist"), "{problems:?}");
    // A snapshot_only pipeline has no slot to judge.
    assert!(judge(&config("snapshot_only"), &found(None), &tables(), opts).is_empty());
}

#[test]
fn unpublished_tables_are_named() {
    let mut f = found(Some(slot()));
    if let Some(p) = f.publication.as_mut() {
        p.tables.clear();
    }
    let problems = judge(&config("never"), &f, &tables(), StatusOptions::default());
    assert!(
        problems[0].contains("does not publish public.t"),
        "{problems:?}"
    );
}

#[test]
fn sizes() {
    assert_eq!(parse_bytes("1048576").unwrap(), 1 << 20);
    assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
    assert_eq!(parse_bytes("1 GB").unwrap(), 1 << 30);
    assert!(parse_bytes("1 parsec").is_err());
    assert!(parse_bytes("").is_err());
    assert_eq!(bytes_text(12), "12 bytes");
    assert_eq!(bytes_text(1536), "1.5 KiB");
    assert_eq!(bytes_text(3 << 30), "3.0 GiB");
}

#[test]
fn exit_codes() {
    assert_eq!(Health::Healthy.exit_code(), 0);
    assert_eq!(Health::Degraded.exit_code(), 1);
    assert_eq!(Health::Unknown.exit_code(), 2);
}
