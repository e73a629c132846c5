//! Configuration checks, and the sink's error paths against librdkafka's
//! in-process mock cluster (`rdkafka::mocking::MockCluster`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc_core::{
    Batch, ChangeEvent, Event, Lsn, Op, ReplicaIdentity, Row, Sink, SourceInfo, TableSchema, Value,
};
use cdc_sink_conformance::fixture::{column, table_of};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::{KafkaSink, KafkaSinkConfig};

// ---------------------------------------------------------------- config

fn parse(yaml: &str) -> Result<KafkaSinkConfig, serde_yaml::Error> {
    serde_yaml::from_str(yaml)
}

#[test]
fn new_gives_the_defaults_of_a_file_that_names_only_the_brokers() {
    let parsed = parse("brokers: [a:9092, b:9092]\n").unwrap();
    assert_eq!(KafkaSinkConfig::new(["a:9092", "b:9092"]), parsed);
    let parsed = parse("brokers: [a:9092]\ncreate_topics: {}\n").unwrap();
    assert_eq!(parsed.create_topics, Some(crate::CreateTopics::default()));
}

#[test]
fn issue_example_parses_with_defaults() {
    let c = parse(
        "brokers: [127.0.0.1:9092]\n\
         topic: \"cdc.{schema}.{table}\"\n\
         create_topics: { partitions: 3, replication_factor: 1 }\n\
         tombstones: true\n\
         compression: zstd\n\
         properties: { linger.ms: \"20\" }\n",
    )
    .unwrap();
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    assert_eq!(c.create_topics.unwrap().partitions, 3);
    assert_eq!(c.compression, crate::Compression::Zstd);
    assert_eq!(c.timeouts.stall_warning, Duration::from_secs(30));
    assert_eq!(c.batching.linger, Duration::from_millis(5));

    let c = parse(
        "brokers: [a:1]\ntopics: { public.users: users-v1 }\n\
         timeouts: { stall_warning: 5s, request: 500ms }\nbatching: { linger: 20ms }\n\
         auth: { mechanism: SCRAM-SHA-512, username: u, password: secret }\n\
         tls: { ca: /etc/ca.pem }\n",
    )
    .unwrap();
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    assert_eq!(c.timeouts.request, Duration::from_millis(500));
    assert!(
        !format!("{c:?}").contains("secret"),
        "password in Debug output"
    );
}

#[test]
fn bad_configs_name_their_fields() {
    assert!(parse("brokers: [a:1]\nbogus: 1\n").is_err());
    assert!(parse("brokers: [a:1]\ncompression: brotli\n").is_err());
    assert!(parse("brokers: [a:1]\ntimeouts: { stall_warning: 5 }\n").is_err());
    // Order and durability are not configurable: acks=all and the
    // idempotent producer always, deliveries that never expire.
    for key in [
        "acks: leader",
        "idempotence: false",
        "timeouts: { delivery: 5s }",
    ] {
        let err = parse(&format!("brokers: [a:1]\n{key}\n")).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{key}: {err}");
    }
    let gssapi =
        parse("brokers: [a:1]\nauth: { mechanism: GSSAPI, username: u, password: p }\n").unwrap();
    assert_eq!(gssapi.validate()[0].0, "auth.mechanism");
    let token = parse("brokers: [a:1]\nauth: { token: t }\n").unwrap();
    assert_eq!(token.validate()[0].0, "auth.token");
    let c = parse(
        "brokers: [nohost, 'h:0']\ntopic: 'x.{tabel}'\ntopics: { users: 'a b' }\n\
         create_topics: { partitions: 0 }\n\
         tls: { cert: /c.pem }\n\
         properties: { acks: '0', enable.idempotence: 'false', message.timeout.ms: '5000', \
         delivery.timeout.ms: '5000', retries: '0', message.send.max.retries: '0' }\n\
         timeouts: { stall_warning: 0s }\n",
    )
    .unwrap();
    let fields: Vec<String> = c.validate().into_iter().map(|(f, _)| f).collect();
    for f in [
        "brokers[0]",
        "brokers[1]",
        "topic",
        "topics.users",
        "create_topics.partitions",
        "tls.key",
        "properties.acks",
        "properties.enable.idempotence",
        "properties.message.timeout.ms",
        "properties.delivery.timeout.ms",
        "properties.retries",
        "properties.message.send.max.retries",
        "timeouts.stall_warning",
    ] {
        assert!(
            fields.iter().any(|x| x == f),
            "{f} not reported in {fields:?}"
        );
    }
    let c = parse("brokers: []\n").unwrap();
    assert_eq!(c.validate()[0].0, "brokers");
}

// ---------------------------------------------------------------- events

fn users() -> Arc<TableSchema> {
    let columns = vec![
        column("id", 23, "int4", true),
        column("name", 25, "text", false),
    ];
    table_of("public", "users", columns, ReplicaIdentity::Default)
}

fn change(op: Op, id: i32, name: &str, lsn: u64) -> Event {
    let table = users();
    let row = Row::new(vec![Value::Int4(id), Value::Text(name.into())]);
    let (before, after) = match op {
        Op::Delete => (
            Some(Row::key_only(vec![Value::Int4(id), Value::Null])),
            None,
        ),
        _ => (None, Some(row)),
    };
    Event::Change(ChangeEvent {
        op,
        table,
        before,
        after,
        source: SourceInfo {
            commit_lsn: Lsn(lsn),
            lsn: Lsn(lsn),
            ..SourceInfo::default()
        },
    })
}

fn batch(events: Vec<Event>) -> Batch {
    Batch {
        events,
        checkpoint: Some(Lsn(100)),
        seq: 0,
        fence: None,
    }
}

// ---------------------------------------------------------------- mock

fn mock() -> MockCluster<'static, DefaultProducerContext> {
    MockCluster::new(3).expect("mock cluster")
}

fn sink_config(brokers: &str, extra: &str) -> KafkaSinkConfig {
    let timeouts = if extra.contains("timeouts:") {
        ""
    } else {
        "timeouts: { stall_warning: 3s, metadata: 10s }\n"
    };
    parse(&format!(
        "brokers: ['{brokers}']\ntopic: 'cdc.{{schema}}.{{table}}'\n{timeouts}{extra}"
    ))
    .unwrap()
}

/// Every message of `topic` partition 0..n, read from the beginning.
fn read_back(
    brokers: &str,
    topic: &str,
    partitions: i32,
    expect: usize,
) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "unit")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < expect && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.detach());
        }
    }
    out
}

fn header(m: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    let h = m.headers()?;
    h.iter()
        .find(|x| x.key == name)
        .and_then(|x| x.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_headers_tombstones_against_mock() {
    let cluster = mock();
    cluster.create_topic("cdc.public.users", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut sink = KafkaSink::connect(&sink_config(&brokers, ""), "unit")
        .await
        .unwrap();
    sink.write_batch(&batch(vec![
        change(Op::Insert, 42, "a", 0x10),
        change(Op::Update, 42, "b", 0x20),
        change(Op::Delete, 42, "", 0x1_0000_0030),
    ]))
    .await
    .unwrap();
    let msgs = read_back(&brokers, "cdc.public.users", 1, 4);
    assert_eq!(msgs.len(), 4);
    for m in &msgs {
        assert_eq!(m.key(), Some(&b"{\"id\":42}"[..]));
        assert_eq!(header(m, "schema").as_deref(), Some("public"));
        assert_eq!(header(m, "table").as_deref(), Some("users"));
    }
    let ops: Vec<_> = msgs.iter().map(|m| header(m, "op").unwrap()).collect();
    assert_eq!(ops, ["c", "u", "d", "d"]);
    assert_eq!(header(&msgs[2], "commit_lsn").as_deref(), Some("1/30"));
    let v: serde_json::Value = serde_json::from_slice(msgs[1].payload().unwrap()).unwrap();
    assert_eq!(v["after"]["name"], "b");
    assert_eq!(v["source"]["name"], "unit");
    assert!(msgs[3].payload().is_none(), "the tombstone has a value");

    // With tombstones off: no tombstone.
    let mut sink = KafkaSink::connect(&sink_config(&brokers, "tombstones: false\n"), "unit")
        .await
        .unwrap();
    sink.write_batch(&batch(vec![change(Op::Delete, 7, "", 0x40)]))
        .await
        .unwrap();
    let msgs = read_back(&brokers, "cdc.public.users", 1, 6);
    assert_eq!(msgs.len(), 5, "a tombstone was sent with tombstones: false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_too_large_is_fatal() {
    let cluster = mock();
    cluster.create_topic("cdc.public.users", 1, 1).unwrap();
    let cfg = sink_config(
        &cluster.bootstrap_servers(),
        "properties: { message.max.bytes: '1000', batch.size: '1000' }\n",
    );
    let mut sink = KafkaSink::connect(&cfg, "unit").await.unwrap();
    let big = "x".repeat(5000);
    let err = sink
        .write_batch(&batch(vec![change(Op::Insert, 1, &big, 1)]))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.message().contains("larger than"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_failure_is_fatal() {
    let cluster = mock();
    cluster.create_topic("cdc.public.users", 1, 1).unwrap();
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 5],
    );
    let cfg = sink_config(&cluster.bootstrap_servers(), "");
    let mut sink = KafkaSink::connect(&cfg, "unit").await.unwrap();
    let err = sink
        .write_batch(&batch(vec![change(Op::Insert, 1, "a", 1)]))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.message().contains("ACL"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waits_out_an_outage_and_delivers_once() {
    let cluster = mock();
    cluster.create_topic("cdc.public.users", 1, 3).unwrap();
    let brokers = cluster.bootstrap_servers();
    let cfg = sink_config(&brokers, "timeouts: { stall_warning: 1s, metadata: 2s }\n");
    let mut sink = KafkaSink::connect(&cfg, "unit").await.unwrap();
    // The topic is known before the outage.
    sink.write_batch(&batch(vec![change(Op::Insert, 1, "a", 1)]))
        .await
        .unwrap();
    for id in 1..=3 {
        cluster.broker_down(id).unwrap();
    }
    // The write does not fail while the brokers are down: it waits (and
    // warns), the producer resending under the same sequence numbers.
    let writer = tokio::spawn(async move {
        let r = sink
            .write_batch(&batch(vec![change(Op::Insert, 2, "b", 2)]))
            .await;
        (sink, r)
    });
    // Down for longer than `stall_warning`.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for id in 1..=3 {
        cluster.broker_up(id).unwrap();
    }
    let (_sink, result) = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .expect("the write did not finish after the brokers came back")
        .unwrap();
    result.unwrap();
    let msgs = read_back(&brokers, "cdc.public.users", 1, 3);
    let twos = msgs
        .iter()
        .filter(|m| m.key() == Some(&b"{\"id\":2}"[..]))
        .count();
    assert_eq!(twos, 1, "the change was not delivered exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topic_is_fatal_without_create_topics() {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    let mut sink = KafkaSink::connect(&sink_config(&brokers, ""), "unit")
        .await
        .unwrap();
    let err = sink
        .write_batch(&batch(vec![change(Op::Insert, 1, "a", 1)]))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.message().contains("does not exist"),
        "{}",
        err.message()
    );

    // Topic creation is tested against real brokers (the mock cluster
    // does not answer CreateTopics): integration-tests/tests/kafka_sink.rs.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisted_table_is_fatal() {
    let cluster = mock();
    let cfg = parse(&format!(
        "brokers: ['{}']\ntopics: {{ public.orders: orders }}\n",
        cluster.bootstrap_servers()
    ))
    .unwrap();
    let mut sink = KafkaSink::connect(&cfg, "unit").await.unwrap();
    let err = sink
        .write_batch(&batch(vec![change(Op::Insert, 1, "a", 1)]))
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.message().contains("public.users"), "{}", err.message());
}
