//! Tests of the status report's verdicts and rendering.
#![allow(clippy::unwrap_used)]
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

#[test]
fn healthy_when_active_within_lag_and_published() {
    let problems = judge(
        &config("never"),
        &found(Some(slot())),
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
    let problems = judge(&config("never"), &found(Some(s)), opts);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].contains("wal_status lost"));
    assert!(problems[1].contains("inactive"));
    assert!(problems[2].contains("10 bytes behind"));
    let problems = judge(&config("never"), &found(None), opts);
    assert!(problems[0].contains("does not exist"), "{problems:?}");
    // A snapshot_only pipeline has no slot to judge.
    assert!(judge(&config("snapshot_only"), &found(None), opts).is_empty());
}

#[test]
fn unpublished_tables_are_named() {
    let mut f = found(Some(slot()));
    if let Some(p) = f.publication.as_mut() {
        p.tables.clear();
    }
    let problems = judge(&config("never"), &f, StatusOptions::default());
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

#[test]
fn incremental_snapshots_are_listed_and_a_latest_failure_is_a_problem() {
    let row =
        |snapshot: i64, state, error: Option<&str>| cdc_postgres::inspect::StoredIncremental {
            snapshot,
            table: TableName::new("public", "t"),
            state,
            filter: Some("id > 5".into()),
            last_key: Some(vec!["2400".into()]),
            chunks_done: 12,
            rows_done: 2400,
            error: error.map(str::to_owned),
            updated_at: SystemTime::UNIX_EPOCH,
        };
    let mut f = found(Some(slot()));
    f.incremental = vec![
        row(3, cdc_core::IncrementalState::Failed, Some("no key")),
        row(7, cdc_core::IncrementalState::Running, None),
    ];
    let cfg = config("initial");
    // A later snapshot of the table clears an older failure.
    assert!(judge(&cfg, &f, StatusOptions::default())
        .iter()
        .all(|p| !p.contains("incremental")));
    f.incremental
        .push(row(9, cdc_core::IncrementalState::Failed, Some("no key")));
    let problems = judge(&cfg, &f, StatusOptions::default());
    assert!(
        problems
            .iter()
            .any(|p| p.contains("incremental snapshot 9 of public.t failed: no key")),
        "{problems:?}"
    );
    let report = StatusReport {
        pipeline: "p".into(),
        source: "postgres://u:***@h/db".into(),
        slot_name: "s".into(),
        publication_name: "pb".into(),
        streams: true,
        tables: vec![TableName::new("public", "t")],
        found: Some(f),
        error: None,
        problems,
        health: Health::Degraded,
    };
    assert!(report.to_text().contains(
        "incremental snapshot 7 public.t: running, 12 chunks, 2400 rows, last key (2400), where id > 5\n"
    ));
    let json = report.to_json();
    assert_eq!(json["incremental_snapshots"][1]["state"], "running");
    assert_eq!(json["incremental_snapshots"][2]["error"], "no key");
}
