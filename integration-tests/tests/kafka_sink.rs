//! The Kafka sink end to end: PostgreSQL → `cdc-engine` (feature `kafka`) →
//! a Kafka-protocol broker, read back with an rdkafka consumer.
//!
//! Every test body runs against two broker implementations:
//! tansu (`CDC_TEST_KAFKA_BROKERS`, started by `scripts/servers/kafka.sh`)
//! and noida-db's Kafka (`CDC_TEST_NOIDA_KAFKA_BROKERS`, started by
//! `scripts/servers/noida.sh`), so a pass does not rest on one broker's
//! quirks.
//!
//! What a consumer sees is judged per key, in partition order (all changes
//! of a row share a key, hence a partition):
//! * replaying the messages (`r`/`c`/`u`: the row becomes `after`; `d` and
//!   tombstones: removed) gives exactly the table's `to_jsonb` rows;
//! * the first occurrences of the positions `(commit_lsn, ordinal)` are in
//!   commit order (a repeated position is an at-least-once duplicate);
//! * every committed write is there (no loss).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc_core::{Lsn, Op, Sink, SinkError, TableName, TableSchema, Value};
use cdc_kafka::{KafkaSink, KafkaSinkConfig};
use cdc_sink_conformance::battery::{self, Stored, Subject};
use cdc_sink_conformance::fixture;
use integration_tests::incremental::{
    assert_each_chunk_read_once, assert_resumed_after_durable, chunk_reads, incremental_snapshots,
    kill_midway_and_resume, request_snapshot, wait_snapshot_done, workload as workload_incremental,
    writers_own, Chaser,
};
use integration_tests::pipelines::{yaml_str, Pipeline};
use integration_tests::replay::{self, apply, diff, Change};
use integration_tests::{
    unique_suffix, wait_streaming, wait_until, Engine, KafkaProxy, Mix, TestDb, Workload, Writers,
    Written,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value as Json;

// ---------------------------------------------------------------- brokers

/// The tansu broker.
const TANSU: &str = "CDC_TEST_KAFKA_BROKERS";
/// noida-db's Kafka.
const NOIDA: &str = "CDC_TEST_NOIDA_KAFKA_BROKERS";

fn brokers(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_owned(),
        _ => panic!(
            "{var} is not set: run ./scripts/test.sh (scripts/servers/kafka.sh starts tansu, \
             scripts/servers/noida.sh noida-db) or point it at a broker"
        ),
    }
}

/// The brokers of `var` and a [`KafkaProxy`] in front of the (first) one.
async fn proxied(var: &str) -> (String, KafkaProxy) {
    let brokers = brokers(var);
    let upstream: SocketAddr = brokers
        .split(',')
        .next()
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("{var}={brokers}: expected one 127.0.0.1:port"));
    (brokers, KafkaProxy::start(upstream).await)
}

/// Runs one async test body against each broker.
macro_rules! for_each_broker {
    ($body:ident: $tansu:ident, $noida:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $tansu() {
            $body(TANSU).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $noida() {
            $body(NOIDA).await;
        }
    };
}

// ---------------------------------------------------------------- config

/// A pipeline of `table` into one or more Kafka sinks (`sinks`: the block
/// lines of each entry's keys after `type: kafka`); stream-only unless the
/// caller sets `snapshot`.
fn pipeline(db: &TestDb, slot: &str, table: &str, sinks: &[String]) -> Pipeline {
    let p = Pipeline::streaming("kt", db.url(), table, &format!("p_{slot}"), slot, 64);
    sinks
        .iter()
        .fold(p, |p, s| p.sink(&format!("type: kafka\n{s}")))
}

/// One sink entry: `brokers`, a unique topic prefix, 3 partitions per
/// created topic, short timeouts.
fn sink(brokers: &str, prefix: &str, extra: &str) -> String {
    format!(
        "brokers: [{}]\ntopic: {}\ncreate_topics: {{ partitions: 3, replication_factor: 1 }}\n\
         timeouts: {{ stall_warning: 5s, metadata: 5s }}\n{extra}",
        yaml_str(brokers),
        yaml_str(&format!("{prefix}.{{schema}}.{{table}}")),
    )
}

// ---------------------------------------------------------------- reading back

/// One message as read back.
#[derive(Debug, Clone)]
struct Msg {
    partition: i32,
    offset: i64,
    key: Option<Json>,
    value: Option<Json>,
    headers: BTreeMap<String, String>,
}

impl Msg {
    fn op(&self) -> Option<&str> {
        self.value.as_ref()?.get("op")?.as_str()
    }

    /// `(commit_lsn, ordinal)`; snapshot reads all count as ordinal 0.
    fn position(&self) -> Option<(u64, u64)> {
        let v = self.value.as_ref()?;
        let lsn = v["source"]["commit_lsn"].to_string().parse().ok()?;
        let ord = if self.op() == Some("r") {
            0
        } else {
            v["source"]["ordinal"].to_string().parse().ok()?
        };
        Some((lsn, ord))
    }
}

/// Everything in `topic` now: every partition read from the beginning to
/// its end. An unknown topic reads as empty.
fn read_topic(brokers: &str, topic: &str) -> Vec<Msg> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("kt-{}", unique_suffix()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let md = match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
        Ok(md) => md,
        Err(e) => panic!("metadata of {topic} from {brokers}: {e}"),
    };
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Vec::new();
    };
    if t.error().is_some() || t.partitions().is_empty() {
        return Vec::new();
    }
    let mut tpl = TopicPartitionList::new();
    let mut open = HashSet::new();
    for p in t.partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .expect("partition");
        open.insert(p.id());
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !open.is_empty() {
        assert!(
            Instant::now() < deadline,
            "reading {topic} did not reach the end of partitions {open:?} within 30s"
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => eprintln!("consumer error reading {topic}: {e}"),
            Some(Ok(m)) => {
                let json = |b: &[u8]| -> Json {
                    serde_json::from_slice(b).unwrap_or_else(|e| {
                        panic!("{topic}: not JSON ({e}): {}", String::from_utf8_lossy(b))
                    })
                };
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (
                                    x.key.to_owned(),
                                    String::from_utf8_lossy(x.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Msg {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(json),
                    value: m.payload().map(json),
                    headers,
                });
            }
        }
    }
    out.sort_by_key(|m| (m.partition, m.offset));
    out
}

/// Messages grouped by the JSON text of their key, each group in partition
/// order. Also checks that a key always lands on one partition.
fn by_key(msgs: &[Msg]) -> BTreeMap<String, Vec<Msg>> {
    let mut out: BTreeMap<String, Vec<Msg>> = BTreeMap::new();
    for m in msgs {
        let k = m
            .key
            .as_ref()
            .unwrap_or_else(|| panic!("message without key: {m:?}"))
            .to_string();
        out.entry(k).or_default().push(m.clone());
    }
    for (k, ms) in &out {
        assert!(
            ms.iter().all(|m| m.partition == ms[0].partition),
            "key {k} is spread over partitions"
        );
    }
    out
}

/// The messages as changes, each key's in partition order; a tombstone
/// (`with_tombstones`) is a delete of its key.
fn changes(msgs: &[Msg], with_tombstones: bool) -> Vec<Change> {
    let mut out = Vec::new();
    for m in by_key(msgs).values().flatten() {
        let (output, seq) = (m.partition as usize, m.offset as usize);
        match (&m.value, &m.key) {
            (Some(v), _) => out.push(
                Change::from_json(output, seq, v.clone())
                    .unwrap_or_else(|e| panic!("not a change event ({e}): {m:?}")),
            ),
            (None, Some(key)) if with_tombstones => out.push(Change {
                output,
                seq,
                op: "d".into(),
                table: format!(
                    "{}.{}",
                    m.headers.get("schema").map_or("", String::as_str),
                    m.headers.get("table").map_or("", String::as_str)
                ),
                snapshot: "false".into(),
                lsn: 0,
                commit_lsn: 0,
                ordinal: 0,
                before: key.clone(),
                after: Json::Null,
                unchanged_toast: Vec::new(),
            }),
            (None, _) => {}
        }
    }
    out
}

/// `public.t` as the messages rebuild it, keyed by the JSON text of `id`.
fn replay(msgs: &[Msg]) -> BTreeMap<String, Json> {
    let changes = changes(msgs, true);
    apply(&changes.iter().collect::<Vec<_>>(), "public.t")
}

/// Checks every message's key and headers against its value, the order of
/// first occurrences per key, and (when `strict_tombstones`) that each
/// delete is directly followed by its tombstone.
fn check_messages(msgs: &[Msg], table: &str, strict_tombstones: bool) {
    for (k, ms) in by_key(msgs) {
        let mut seen = HashSet::new();
        let mut last = None;
        for (i, m) in ms.iter().enumerate() {
            let Some(v) = &m.value else {
                // A tombstone: right after a delete of the same key.
                assert_eq!(
                    ms.get(i.wrapping_sub(1)).and_then(Msg::op),
                    Some("d"),
                    "key {k}: tombstone not after a delete"
                );
                continue;
            };
            let op = m.op().unwrap_or_default();
            let row = if op == "d" { &v["before"] } else { &v["after"] };
            assert_eq!(
                k,
                serde_json::json!({ "id": row["id"].clone() }).to_string(),
                "key does not match the row: {m:?}"
            );
            assert_eq!(m.headers.get("op").map(String::as_str), Some(op), "{m:?}");
            assert_eq!(m.headers.get("schema").map(String::as_str), Some("public"));
            assert_eq!(m.headers.get("table").map(String::as_str), Some(table));
            let lsn: u64 = v["source"]["commit_lsn"].to_string().parse().expect("lsn");
            assert_eq!(
                m.headers.get("commit_lsn"),
                Some(&Lsn(lsn).to_string()),
                "{m:?}"
            );
            if strict_tombstones && op == "d" {
                assert!(
                    ms.get(i + 1).is_some_and(|t| t.value.is_none()),
                    "key {k}: delete without a tombstone after it"
                );
            }
            let pos = m.position().expect("position");
            if seen.insert(pos) {
                if let Some(prev) = last {
                    assert!(
                        pos > prev,
                        "key {k}: change at {pos:?} arrived after {prev:?} (not commit order)"
                    );
                }
                last = Some(pos);
            }
        }
    }
}

/// Polls until the topic replays to the table; returns the messages.
async fn converge(db: &TestDb, brokers: &str, topic: &str, engine: &Engine) -> Vec<Msg> {
    let want = db.to_jsonb_rows("public.t", "id").await;
    let mut msgs = Vec::new();
    let pause = Duration::from_millis(400);
    let result = replay::converge(Duration::from_secs(60), pause, &want, async || {
        msgs = read_topic(brokers, topic);
        replay(&msgs)
    })
    .await;
    if let Err(d) = result {
        panic!(
            "the topic did not converge to the table within 60s: {d}\n{}",
            engine.output_report()
        );
    }
    msgs
}

// ---------------------------------------------------------------- writers

/// Three writers of up to two changes per transaction on ids 1..=40
/// (70 % upserts, 30 % deletes), a transaction every 15 ms each.
fn workload() -> Workload {
    Workload {
        max_changes: 2,
        mix: Mix {
            upsert: 7,
            delete: 3,
            ..Mix::default()
        },
        first_v: 1000,
        pause: Duration::from_millis(15),
        ..Workload::new(3)
    }
}

/// Every committed write and delete is among the messages.
fn check_no_loss(msgs: &[Msg], written: &Written) {
    let changes = changes(msgs, false);
    written.assert_no_loss(&changes.iter().collect::<Vec<_>>());
}

async fn new_table(db: &TestDb) {
    db.exec("CREATE TABLE public.t (id int PRIMARY KEY, v int NOT NULL, note text)")
        .await;
}

/// A test's database with `public.t` ([`new_table`]), a unique topic
/// prefix (`kt_<tag>_…`), the topic of `public.t` under it and a unique
/// slot.
struct Case {
    db: TestDb,
    prefix: String,
    topic: String,
    slot: String,
}

impl Case {
    /// `name`: the prefix of the database's name.
    async fn new(name: &str, tag: &str) -> Case {
        let db = TestDb::create(name).await;
        new_table(&db).await;
        let s = unique_suffix();
        let prefix = format!("kt_{tag}_{s}");
        Case {
            db,
            topic: format!("{prefix}.public.t"),
            slot: format!("k{tag}_{s}"),
            prefix,
        }
    }

    /// [`pipeline`] of `public.t` on this case's slot into `sinks`.
    fn pipeline(&self, sinks: &[String]) -> Pipeline {
        pipeline(&self.db, &self.slot, "public.t", sinks)
    }

    /// [`sink`] entry with this case's topic prefix.
    fn sink(&self, brokers: &str, extra: &str) -> String {
        sink(brokers, &self.prefix, extra)
    }

    /// The engine of `yaml`, once it streams from this case's slot.
    async fn start(&self, yaml: &str) -> Engine {
        let mut engine = Engine::start(yaml);
        wait_streaming(&self.db, &mut engine, &self.slot, STREAMING).await;
        engine
    }

    /// Waits for `engine` to fail, and checks that the slot was not
    /// acknowledged past `before` (the WAL position before the change it
    /// failed on); its log.
    async fn failure_log(&self, engine: &mut Engine, before: Lsn) -> String {
        let log = engine.wait_failure(Duration::from_secs(60)).await;
        let acked = self
            .db
            .slot_confirmed_flush_lsn(&self.slot)
            .await
            .unwrap_or(Lsn::ZERO);
        assert!(
            acked <= before,
            "the slot was acknowledged at {acked}, past the failed change (WAL was at {before} \
             before it)"
        );
        log
    }
}

// ---------------------------------------------------------------- tests

/// How long an engine may take to start streaming.
const STREAMING: Duration = Duration::from_secs(30);

/// Snapshot of existing rows, then streaming under concurrent writes.
async fn snapshot_then_stream(var: &str) {
    let started = Instant::now();
    let brokers = brokers(var);
    let case = Case::new("kafka_e2e", "e2e").await;
    let Case { db, topic, .. } = &case;
    db.exec("INSERT INTO public.t SELECT g, -g, 'snap ' || g FROM generate_series(1, 30) g")
        .await;
    let yaml = case
        .pipeline(&[case.sink(&brokers, "compression: zstd\n")])
        .snapshot("{ mode: initial }")
        .yaml();
    let mut engine = case.start(&yaml).await;
    let writers = Writers::start(db.url(), workload()).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let written = writers.finish().await;
    assert!(written.committed > 20, "only {} commits", written.committed);

    let msgs = converge(db, &brokers, topic, &engine).await;
    check_messages(&msgs, "t", true);
    check_no_loss(&msgs, &written);
    let reads = msgs.iter().filter(|m| m.op() == Some("r")).count();
    assert!(reads >= 30, "only {reads} snapshot reads");
    let partitions: HashSet<i32> = msgs.iter().map(|m| m.partition).collect();
    assert!(partitions.len() > 1, "all keys went to one partition");
    engine.stop_clean(Duration::from_secs(30), "stop").await;
    eprintln!(
        "{var}: {} messages for {} commits in {:?}",
        msgs.len(),
        written.committed,
        started.elapsed()
    );
    case.db.cleanup().await;
}
for_each_broker!(snapshot_then_stream: snapshot_then_stream_tansu, snapshot_then_stream_noida);

/// Exact keys, headers and tombstones, with a composite key and a table
/// name that is not a valid topic name; a second sink without tombstones.
async fn keys_headers_tombstones(var: &str) {
    let brokers = brokers(var);
    let db = TestDb::create("kafka_keys").await;
    db.exec(
        "CREATE TABLE public.\"Mixed Case\" (a int, b text, payload jsonb, PRIMARY KEY (a, b))",
    )
    .await;
    let s = unique_suffix();
    let (with, without) = (format!("kt_k1_{s}"), format!("kt_k2_{s}"));
    let slot = format!("kk_{s}");
    let yaml = pipeline(
        &db,
        &slot,
        "public.\"Mixed Case\"",
        &[
            sink(&brokers, &with, ""),
            sink(&brokers, &without, "tombstones: false\n"),
        ],
    )
    .yaml();
    let mut engine = Engine::start(&yaml);
    wait_streaming(&db, &mut engine, &slot, STREAMING).await;
    db.exec("INSERT INTO public.\"Mixed Case\" VALUES (1, 'x', '{\"n\": 1}'), (2, 'y ü', null)")
        .await;
    db.exec("UPDATE public.\"Mixed Case\" SET payload = '[1]' WHERE a = 1")
        .await;
    db.exec("DELETE FROM public.\"Mixed Case\" WHERE a = 1")
        .await;

    for (prefix, tombstones) in [(&with, true), (&without, false)] {
        let topic = format!("{prefix}.public.Mixed_Case");
        let want = if tombstones { 5 } else { 4 };
        let mut msgs = Vec::new();
        let ok = wait_until(Duration::from_secs(30), async || {
            msgs = read_topic(&brokers, &topic);
            msgs.len() >= want
        })
        .await;
        assert!(
            ok,
            "{topic}: {} of {want} messages\n{}",
            msgs.len(),
            engine.output_report()
        );
        assert_eq!(msgs.len(), want, "{msgs:#?}");
        let k1 = serde_json::json!({"a": 1, "b": "x"});
        let k2 = serde_json::json!({"a": 2, "b": "y ü"});
        let ks = by_key(&msgs);
        let one = &ks[&k1.to_string()];
        let ops: Vec<_> = one
            .iter()
            .map(|m| m.headers.get("op").cloned().unwrap_or_default())
            .collect();
        let expected: &[&str] = if tombstones {
            &["c", "u", "d", "d"]
        } else {
            &["c", "u", "d"]
        };
        assert_eq!(ops, expected, "{one:#?}");
        assert_eq!(ks[&k2.to_string()].len(), 1);
        for m in &msgs {
            assert_eq!(m.headers.get("schema").map(String::as_str), Some("public"));
            assert_eq!(
                m.headers.get("table").map(String::as_str),
                Some("Mixed Case")
            );
            let lsn = m.headers.get("commit_lsn").expect("commit_lsn header");
            assert!(lsn.parse::<Lsn>().is_ok(), "{lsn}");
        }
        // Both inserts share a transaction: same commit LSN header.
        assert_eq!(
            one[0].headers["commit_lsn"],
            ks[&k2.to_string()][0].headers["commit_lsn"]
        );
        let update = one[1].value.as_ref().expect("update value");
        assert_eq!(update["after"]["payload"], serde_json::json!([1]));
        assert_eq!(update["source"]["table"], "Mixed Case");
        let delete = one[2].value.as_ref().expect("delete value");
        assert_eq!(delete["before"]["a"], 1);
        assert!(delete["after"].is_null());
        assert_eq!(
            Lsn(delete["source"]["commit_lsn"].as_u64().expect("lsn")).to_string(),
            one[2].headers["commit_lsn"]
        );
        if tombstones {
            assert!(one[3].value.is_none(), "tombstone with a value");
            assert_eq!(one[3].key.as_ref(), Some(&k1));
            assert_eq!(one[3].headers["commit_lsn"], one[2].headers["commit_lsn"]);
        }
    }
    engine.stop_clean(Duration::from_secs(30), "stop").await;
    db.cleanup().await;
}
for_each_broker!(keys_headers_tombstones: keys_headers_tombstones_tansu, keys_headers_tombstones_noida);

/// The broker is unreachable for 20 s mid-stream (a proxy between engine
/// and broker drops every connection and refuses new ones): the slot never
/// gets ahead of what Kafka holds, and afterwards every change arrives.
async fn broker_unreachable(var: &str) {
    let (brokers, proxy) = proxied(var).await;
    let case = Case::new("kafka_cut", "cut").await;
    let Case {
        db, topic, slot, ..
    } = &case;
    let yaml = case
        .pipeline(&[case.sink(&proxy.addr().to_string(), "")])
        .yaml();
    let mut engine = case.start(&yaml).await;
    let writers = Writers::start(db.url(), workload()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    proxy.cut(true);
    let cut_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = read_topic(&brokers, topic).len();
    // Samples of (acknowledged position, what Kafka held then).
    let mut samples = Vec::new();
    while cut_at.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let acked = db.slot_confirmed_flush_lsn(slot).await.unwrap_or(Lsn::ZERO);
        let held: HashSet<(u64, u64)> = read_topic(&brokers, topic)
            .iter()
            .filter_map(Msg::position)
            .collect();
        samples.push((acked, held));
    }
    let during = read_topic(&brokers, topic).len();
    assert_eq!(
        before, during,
        "messages reached the broker while the proxy was cut: the test does not cut the path"
    );
    proxy.cut(false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let written = writers.finish().await;

    let msgs = converge(db, &brokers, topic, &engine).await;
    check_messages(&msgs, "t", false);
    check_no_loss(&msgs, &written);
    for (acked, held) in &samples {
        let unacked_held: Vec<_> = msgs
            .iter()
            .filter_map(Msg::position)
            .filter(|p| p.0 < acked.0 && !held.contains(p))
            .collect();
        assert!(
            unacked_held.is_empty(),
            "the slot was acknowledged at {acked} while changes before it were not in Kafka: {:?}",
            &unacked_held[..unacked_held.len().min(10)]
        );
    }
    let log = engine.stderr_text();
    assert!(
        log.contains("Kafka has not confirmed deliveries"),
        "the stalled deliveries were not reported\n{}",
        engine.output_report()
    );
    engine.stop_clean(Duration::from_secs(30), "stop").await;
    eprintln!(
        "{var}: {} commits, {} messages, acked positions during the cut: {:?}",
        written.committed,
        msgs.len(),
        samples.iter().map(|s| s.0.to_string()).collect::<Vec<_>>()
    );
    case.db.cleanup().await;
}
for_each_broker!(broker_unreachable: broker_unreachable_tansu, broker_unreachable_noida);

/// A produce request held up on its way to the broker (a proxy stalls the
/// connections open at that moment, new ones pass) until long after the
/// sink stopped waiting for it, sent those changes again and wrote newer
/// changes of the same rows. When it finally reaches the broker, it must
/// not be appended after them: the last message of each key stays the
/// newest change.
async fn stalled_request_lands_late(var: &str) {
    let (brokers, proxy) = proxied(var).await;
    let case = Case::new("kafka_stall", "stall").await;
    let Case {
        db, prefix, topic, ..
    } = &case;
    let entry = format!(
        "brokers: [{}]\ntopic: {}\ncreate_topics: {{ partitions: 3, replication_factor: 1 }}\n\
         timeouts: {{ stall_warning: 3s, request: 3s, metadata: 5s }}\n",
        yaml_str(&proxy.addr().to_string()),
        yaml_str(&format!("{prefix}.{{schema}}.{{table}}")),
    );
    let mut engine = case.start(&case.pipeline(&[entry]).yaml()).await;
    db.exec("INSERT INTO public.t SELECT g, 0, 'first' FROM generate_series(1, 30) g")
        .await;
    converge(db, &brokers, topic, &engine).await;

    proxy.stall();
    db.exec("UPDATE public.t SET v = 1, note = 'stalled'").await;
    let held = wait_until(Duration::from_secs(30), async || proxy.held().1 > 0).await;
    assert!(
        held,
        "no produce request reached the stalled connections\n{}",
        engine.output_report()
    );
    // The sink gets those changes through anyway (on another connection).
    converge(db, &brokers, topic, &engine).await;
    db.exec("UPDATE public.t SET v = 2, note = 'newer'").await;
    converge(db, &brokers, topic, &engine).await;

    let released = proxy.release(Duration::from_secs(30)).await;
    eprintln!("{var}: released {released:?}");
    assert!(released.produce > 0, "no produce request was held");
    let msgs = read_topic(&brokers, topic);
    let want = db.to_jsonb_rows("public.t", "id").await;
    let got = replay(&msgs);
    assert!(
        got == want,
        "a produce request that reached the broker late was appended after newer changes: {}\n{}",
        diff(&got, &want).unwrap_or_default(),
        engine.output_report()
    );
    check_messages(&msgs, "t", false);
    eprintln!(
        "{var}: {} messages for 90 changes (duplicates: resent copies the broker kept)",
        msgs.len()
    );
    engine.stop_clean(Duration::from_secs(30), "stop").await;
    case.db.cleanup().await;
}
for_each_broker!(stalled_request_lands_late: stalled_request_lands_late_tansu, stalled_request_lands_late_noida);

/// SIGKILL twice mid-stream, restart each time: nothing is lost.
async fn sigkill_restart(var: &str) {
    let brokers = brokers(var);
    let case = Case::new("kafka_kill", "kill").await;
    let Case { db, topic, .. } = &case;
    let yaml = case.pipeline(&[case.sink(&brokers, "")]).yaml();
    let mut runs = vec![case.start(&yaml).await];
    let writers = Writers::start(db.url(), workload()).await;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let e = runs.last_mut().expect("a run");
        e.kill9().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        runs.push(Engine::start(&yaml));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let written = writers.finish().await;
    let last = runs.last_mut().expect("a run");
    let msgs = converge(db, &brokers, topic, last).await;
    check_messages(&msgs, "t", false);
    check_no_loss(&msgs, &written);
    last.stop_clean(Duration::from_secs(30), "stop").await;
    eprintln!(
        "{var}: {} commits, {} messages",
        written.committed,
        msgs.len()
    );
    case.db.cleanup().await;
}
for_each_broker!(sigkill_restart: sigkill_restart_tansu, sigkill_restart_noida);

// ---------------------------------------------------------------- incremental snapshots

/// Rows of `public.t` when an incremental snapshot test starts.
const INCREMENTAL_ROWS: i32 = 8000;
/// Rows per chunk of those snapshots.
const INCREMENTAL_CHUNK: u64 = 250;
/// How long such a snapshot may take.
const INCREMENTAL_TIMEOUT: Duration = Duration::from_secs(120);

/// A `public.t` of [`INCREMENTAL_ROWS`] rows, streamed into Kafka without
/// an initial snapshot and with incremental snapshots on. Returns the
/// database, the brokers, the topic, the slot and the pipeline.
async fn incremental_setup(var: &str, name: &str) -> (TestDb, String, String, String, String) {
    let brokers = brokers(var);
    let db = TestDb::create(name).await;
    new_table(&db).await;
    db.exec(&format!(
        "INSERT INTO public.t SELECT g, -g, 'row ' || g FROM generate_series(1, {INCREMENTAL_ROWS}) g"
    ))
    .await;
    let s = unique_suffix();
    let prefix = format!("kt_{name}_{s}");
    let slot = format!("ki_{s}");
    let yaml = pipeline(&db, &slot, "public.t", &[sink(&brokers, &prefix, "")])
        .snapshot(&incremental_snapshots(INCREMENTAL_CHUNK))
        .yaml();
    (db, brokers, format!("{prefix}.public.t"), slot, yaml)
}

/// An incremental snapshot asked for by a signal while writers change the
/// table all over: the topic, replayed per key in partition order, gives
/// the table exactly (no read overwrote a newer change of its row), every
/// committed change is there, and each chunk was read once.
async fn incremental_snapshot_under_writes(var: &str) {
    let started = Instant::now();
    let (db, brokers, topic, slot, yaml) = incremental_setup(var, "kafka_incr").await;
    let mut engine = Engine::start(&yaml);
    wait_streaming(&db, &mut engine, &slot, STREAMING).await;
    let writers = Writers::start(db.url(), workload_incremental(INCREMENTAL_ROWS)).await;
    request_snapshot(&db, &["public.t"]).await;
    let chaser = Chaser::start(&db, "public.t", 4 * INCREMENTAL_CHUNK as i64).await;
    wait_snapshot_done(&db, &["public.t"], &[&engine], INCREMENTAL_TIMEOUT).await;
    let chased = chaser.finish().await;
    let written = writers.finish().await;
    assert!(written.committed > 50, "only {} commits", written.committed);

    let msgs = converge(&db, &brokers, &topic, &engine).await;
    check_messages(&msgs, "t", true);
    check_no_loss(&msgs, &writers_own(&written));
    let changes = changes(&msgs, false);
    let (reads, chunks) = assert_each_chunk_read_once(&changes, INCREMENTAL_ROWS);
    engine.stop_clean(Duration::from_secs(30), "stop").await;
    eprintln!(
        "{var}: {reads} reads in {chunks} chunks, {} messages, {} commits and {chased} updates \
         just ahead of the snapshot in {:?}",
        msgs.len(),
        written.committed,
        started.elapsed()
    );
    db.cleanup().await;
}
for_each_broker!(incremental_snapshot_under_writes: incremental_snapshot_under_writes_tansu, incremental_snapshot_under_writes_noida);

/// SIGKILL in the middle of an incremental snapshot, under writes: the
/// restarted engine resumes after the last chunk Kafka had made durable
/// (the chunks read after it are read again, and counted), and the topic
/// still gives the table exactly.
async fn incremental_snapshot_resumes_after_sigkill(var: &str) {
    let (db, brokers, topic, slot, yaml) = incremental_setup(var, "kafka_incr_kill").await;
    let resumed = kill_midway_and_resume(
        &db,
        &yaml,
        &slot,
        workload_incremental(INCREMENTAL_ROWS),
        4 * INCREMENTAL_CHUNK as i64,
        INCREMENTAL_TIMEOUT,
    )
    .await;
    let msgs = converge(&db, &brokers, &topic, &resumed.engine).await;
    check_messages(&msgs, "t", false);
    check_no_loss(&msgs, &writers_own(&resumed.written));
    let chunks = chunk_reads(&changes(&msgs, false), "public.t");
    assert_resumed_after_durable(var, &resumed, &chunks, INCREMENTAL_CHUNK);
    let mut engine = resumed.engine;
    engine.stop_clean(Duration::from_secs(30), "stop").await;
    db.cleanup().await;
}
for_each_broker!(incremental_snapshot_resumes_after_sigkill: incremental_snapshot_resumes_after_sigkill_tansu, incremental_snapshot_resumes_after_sigkill_noida);

/// A message larger than allowed stops the pipeline with a clear message,
/// and the slot is not acknowledged past it.
async fn fatal_message_too_large(var: &str) {
    let brokers = brokers(var);
    let case = Case::new("kafka_fatal", "big").await;
    let Case { db, topic, .. } = &case;
    let sink = case.sink(
        &brokers,
        "batching: { max_bytes: 20000 }\nproperties: { message.max.bytes: '20000' }\n",
    );
    let mut engine = case.start(&case.pipeline(&[sink]).yaml()).await;
    db.exec("INSERT INTO public.t VALUES (1, 1, 'small')").await;
    let ok = wait_until(Duration::from_secs(30), async || {
        !read_topic(&brokers, topic).is_empty()
    })
    .await;
    assert!(
        ok,
        "the small row did not arrive\n{}",
        engine.output_report()
    );
    let before_big = db.current_wal_lsn().await;
    db.exec("INSERT INTO public.t SELECT 2, 2, string_agg(md5(g::text), '') FROM generate_series(1, 2000) g")
        .await;
    let err = case.failure_log(&mut engine, before_big).await;
    assert!(
        err.contains("larger than") && err.contains(topic.as_str()),
        "no clear message about the size\n{}",
        engine.output_report()
    );
    case.db.cleanup().await;
}
for_each_broker!(fatal_message_too_large: fatal_message_too_large_tansu, fatal_message_too_large_noida);

/// Without `create_topics`, a topic that does not exist stops the
/// pipeline with a message naming it (no broker-side auto-creation).
async fn missing_topic_is_fatal(var: &str) {
    let brokers = brokers(var);
    let case = Case::new("kafka_notopic", "none").await;
    let Case {
        db, prefix, topic, ..
    } = &case;
    let entry = format!(
        "brokers: [{}]\ntopic: {}\ntimeouts: {{ stall_warning: 5s, metadata: 5s }}\n",
        yaml_str(&brokers),
        yaml_str(&format!("{prefix}.{{schema}}.{{table}}")),
    );
    let mut engine = case.start(&case.pipeline(&[entry]).yaml()).await;
    let before = db.current_wal_lsn().await;
    db.exec("INSERT INTO public.t VALUES (1, 1, 'x')").await;
    let err = case.failure_log(&mut engine, before).await;
    assert!(
        err.contains(&format!("topic `{topic}`")) && err.contains("does not exist"),
        "no clear message about the missing topic\n{}",
        engine.output_report()
    );
    assert!(
        read_topic(&brokers, topic).is_empty(),
        "the topic was created"
    );
    case.db.cleanup().await;
}
for_each_broker!(missing_topic_is_fatal: missing_topic_is_fatal_tansu, missing_topic_is_fatal_noida);

/// The sink itself runs the conformance battery
/// ([`cdc_sink_conformance::battery`]): one topic per table of the checks,
/// read back from the broker. Its fatal case: a message larger than the
/// producer allows. Its transient fault: the broker is unreachable (a
/// [`KafkaProxy`] between sink and broker drops every connection and
/// refuses new ones) until healed.
struct Conformance {
    brokers: String,
    proxy: KafkaProxy,
    prefix: String,
}

impl Conformance {
    fn config(&self, brokers: &str, extra: &str) -> KafkaSinkConfig {
        serde_yaml::from_str(&sink(brokers, &self.prefix, extra)).expect("a sink config")
    }

    fn topic(&self, table: &TableName) -> String {
        format!("{}.{table}", self.prefix)
    }
}

impl Subject for Conformance {
    type Sink = KafkaSink;

    async fn open(&mut self, _table: &TableName) -> KafkaSink {
        let config = self.config(&self.proxy.addr().to_string(), "");
        KafkaSink::connect(&config, "conformance").await.unwrap()
    }

    async fn read(&mut self, table: &TableName) -> Stored {
        Stored::Changes(changes(
            &read_topic(&self.brokers, &self.topic(table)),
            false,
        ))
    }

    async fn break_destination(&mut self, _table: &TableName) {
        self.proxy.cut(true);
    }

    async fn heal(&mut self, _table: &TableName) {
        self.proxy.cut(false);
    }

    async fn fatal(&mut self, table: &Arc<TableSchema>) -> Result<(), SinkError> {
        let config = self.config(
            &self.brokers,
            "properties: { message.max.bytes: '20000' }\n",
        );
        let mut sink = KafkaSink::connect(&config, "conformance").await?;
        let big = Some((1, Value::Int4(1), fixture::text(&"x".repeat(40_000))));
        let row = fixture::change(table, Op::Insert, 0x100, 0, big);
        sink.write_batch(&fixture::batch(vec![row], Some(0x100)))
            .await
    }
}

async fn conforms(var: &str) {
    let (brokers, proxy) = proxied(var).await;
    let mut subject = Conformance {
        proxy,
        brokers,
        prefix: format!("kt_cf_{}", unique_suffix()),
    };
    battery::run(&format!("kafka sink ({var})"), &mut subject).await;
}
for_each_broker!(conforms: conforms_tansu, conforms_noida);
