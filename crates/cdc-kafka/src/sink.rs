//! [`KafkaSink`]: change events to Kafka, durable once every delivery
//! report of a batch is back.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cdc_core::encode::DebeziumJson;
use cdc_core::settings::no_problems;
use cdc_core::{Batch, ChangeEvent, Event, Op, Sink, SinkError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, PurgeConfig};

use crate::client::{client_config, SinkContext};
use crate::config::{CreateTopics, KafkaSinkConfig};
use crate::error::KafkaSinkError;
use crate::route::Router;

type Kafka = FutureProducer<SinkContext>;

/// Writes change events to Kafka.
///
/// * One topic per table (see [`KafkaSinkConfig::topic`] and
///   [`KafkaSinkConfig::topics`]).
/// * Key: the row's key columns as a JSON object (`{"id":42}`), so every
///   change of a row goes to the same partition, in order. Truncates and
///   tables without a key are sent without a key.
/// * Value: the Debezium-style JSON envelope of
///   [`DebeziumJson`]; after a delete, a tombstone (same key, no value)
///   unless `tombstones: false`.
/// * Headers: `op` (`r`, `c`, `u`, `d`, `t`), `schema`, `table` and
///   `commit_lsn` (PostgreSQL's text form, `16/B374D848`); a tombstone
///   carries those of its delete.
///
/// [`write_batch`](Sink::write_batch) queues every message of the batch and
/// returns once every delivery report is back. Deliveries never expire:
/// while a broker cannot be reached the producer keeps resending, under
/// the same producer id and sequence numbers (so the broker drops copies
/// it already has and refuses out-of-order ones), and `write_batch` waits,
/// with a warning every `timeouts.stall_warning`. A failed batch is sent
/// again as a whole by the engine (duplicates possible, never a loss or a
/// reordering); errors that retrying cannot fix (message too large,
/// authorization, missing topic) are fatal.
pub struct KafkaSink {
    producer: Kafka,
    client_config: ClientConfig,
    admin: Option<AdminClient<SinkContext>>,
    create: Option<CreateTopics>,
    metadata_timeout: Duration,
    router: Router,
    ready_topics: HashSet<Arc<str>>,
    tombstones: bool,
    encoder: DebeziumJson,
    key: Vec<u8>,
    value: Vec<u8>,
    pending: VecDeque<(Arc<str>, usize, DeliveryFuture)>,
    /// How long to wait for deliveries before warning that they stall.
    stall_warning: Duration,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("router", &self.router)
            .field("tombstones", &self.tombstones)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// Creates the producer (and, with `create_topics`, an admin client)
    /// for the pipeline called `pipeline_name`.
    ///
    /// Brokers that cannot be reached yet are not an error: the producer
    /// keeps trying, and batches fail (retryably) until it succeeds. An
    /// invalid configuration is a fatal error.
    pub async fn connect(
        config: &KafkaSinkConfig,
        pipeline_name: &str,
    ) -> Result<KafkaSink, SinkError> {
        no_problems(config.validate()).map_err(SinkError::fatal)?;
        let router = Router::new(config.topic.as_deref(), &config.topics)
            .map_err(|m| SinkError::fatal(format!("topic: {m}")))?;
        let client_config = client_config(config, pipeline_name);
        let producer = create_producer(&client_config)?;
        let admin = match config.create_topics {
            Some(_) => Some(
                client_config
                    .create_with_context(SinkContext)
                    .map_err(KafkaSinkError::Config)?,
            ),
            None => None,
        };
        let metadata_timeout = config.timeouts.metadata;
        // Tell early (in the log) when the brokers cannot be reached.
        let probe = producer.clone();
        let reached = tokio::task::spawn_blocking(move || {
            probe
                .client()
                .fetch_metadata(None, metadata_timeout.min(Duration::from_secs(5)))
                .map(|m| m.brokers().len())
        })
        .await;
        match reached {
            Ok(Ok(n)) => tracing::info!(brokers = n, "connected to Kafka"),
            Ok(Err(e)) => tracing::warn!(
                "Kafka brokers {} not reachable yet ({e}); the producer keeps trying",
                config.brokers.join(",")
            ),
            Err(e) => tracing::warn!("Kafka metadata probe failed: {e}"),
        }
        Ok(KafkaSink {
            producer,
            client_config,
            admin,
            create: config.create_topics,
            metadata_timeout,
            router,
            ready_topics: HashSet::new(),
            tombstones: config.tombstones,
            encoder: DebeziumJson::new(pipeline_name),
            key: Vec::with_capacity(64),
            value: Vec::with_capacity(1024),
            pending: VecDeque::new(),
            stall_warning: config.timeouts.stall_warning,
        })
    }

    /// Makes sure `topic` exists: creates it with `create_topics`, or
    /// looks it up and fails (fatally) when it is missing.
    async fn prepare_topic(&mut self, topic: &Arc<str>, table: &str) -> Result<(), SinkError> {
        if self.ready_topics.contains(topic) {
            return Ok(());
        }
        match (&self.admin, self.create) {
            (Some(admin), Some(create)) => {
                let new = NewTopic::new(
                    topic,
                    create.partitions,
                    TopicReplication::Fixed(create.replication_factor),
                );
                let opts = AdminOptions::new()
                    .operation_timeout(Some(self.metadata_timeout))
                    .request_timeout(Some(self.metadata_timeout));
                let results = admin.create_topics([&new], &opts).await.map_err(|source| {
                    KafkaSinkError::CreateTopicRequest {
                        topic: topic.to_string(),
                        source,
                    }
                })?;
                for r in results {
                    match r {
                        Ok(_) => tracing::info!(topic = %topic, table, "created topic"),
                        Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((name, code)) => {
                            return Err(KafkaSinkError::CreateTopic { topic: name, code }.into())
                        }
                    }
                }
            }
            _ => {
                let probe = self.producer.clone();
                let name = topic.to_string();
                let timeout = self.metadata_timeout;
                let found = tokio::task::spawn_blocking(move || {
                    let md = probe.client().fetch_metadata(Some(&name), timeout)?;
                    Ok::<_, KafkaError>(
                        md.topics()
                            .iter()
                            .find(|t| t.name() == name)
                            .map(|t| (t.error().map(RDKafkaErrorCode::from), t.partitions().len())),
                    )
                })
                .await
                .map_err(|e| SinkError::retryable(format!("topic lookup task failed: {e}")))?
                .map_err(|source| KafkaSinkError::Metadata {
                    topic: topic.to_string(),
                    source,
                })?;
                match found {
                    Some((None, n)) if n > 0 => {}
                    Some((Some(code), _))
                        if code != RDKafkaErrorCode::UnknownTopicOrPartition
                            && code != RDKafkaErrorCode::UnknownTopic =>
                    {
                        return Err(KafkaSinkError::Metadata {
                            topic: topic.to_string(),
                            source: KafkaError::MetadataFetch(code),
                        }
                        .into())
                    }
                    _ => {
                        return Err(KafkaSinkError::MissingTopic {
                            topic: topic.to_string(),
                            table: table.to_owned(),
                        }
                        .into())
                    }
                }
            }
        }
        self.ready_topics.insert(topic.clone());
        Ok(())
    }

    /// Queues one message; waits for earlier deliveries while the
    /// producer's queue is full.
    async fn enqueue(
        &mut self,
        topic: &Arc<str>,
        change: &ChangeEvent,
        has_key: bool,
        tombstone: bool,
        lsn: &str,
    ) -> Result<(), SinkError> {
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: "op",
                value: Some(change.op.code()),
            })
            .insert(Header {
                key: "schema",
                value: Some(change.table.name.schema.as_str()),
            })
            .insert(Header {
                key: "table",
                value: Some(change.table.name.name.as_str()),
            })
            .insert(Header {
                key: "commit_lsn",
                value: Some(lsn),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if has_key {
            record = record.key(self.key.as_slice());
        }
        let bytes = if tombstone {
            0
        } else {
            record = record.payload(self.value.as_slice());
            self.value.len()
        };
        loop {
            match self.producer.send_result(record) {
                Ok(fut) => {
                    self.pending.push_back((topic.clone(), bytes, fut));
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    // Make room: wait for the oldest delivery, or a moment.
                    match self.pending.pop_front() {
                        Some((topic, bytes, fut)) => delivered(topic, bytes, fut.await)?,
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err((source, _)) => {
                    return Err(KafkaSinkError::Enqueue {
                        topic: topic.to_string(),
                        bytes,
                        source,
                    }
                    .into())
                }
            }
        }
    }

    /// Replaces a producer that librdkafka declared failed for good (a
    /// fatal idempotence error, for example after a broker lost the
    /// producer's state). Only then: a new producer has a new id and new
    /// sequence numbers, so a request of the old one that a broker has not
    /// read yet could land after the new one's messages. Ordinary failures
    /// (broker unreachable, leader changes, timeouts of single requests)
    /// never replace the producer: it resends under the same numbers.
    async fn renew_failed_producer(&mut self) -> Result<(), SinkError> {
        let Some((code, reason)) = self.producer.client().fatal_error() else {
            return Ok(());
        };
        tracing::warn!("the Kafka producer failed fatally ({code}: {reason}); creating a new one");
        let fresh = create_producer(&self.client_config)?;
        let old = std::mem::replace(&mut self.producer, fresh);
        let _ = tokio::task::spawn_blocking(move || {
            old.purge(PurgeConfig::default().queue().inflight());
            let _ = old.flush(Duration::from_secs(1));
            drop(old);
        })
        .await;
        Ok(())
    }

    /// Waits for every outstanding delivery report, warning every
    /// `stall_warning` while they do not come. One timer serves the whole
    /// wait, not one per message.
    async fn settle_pending(&mut self) -> Result<(), SinkError> {
        let started = tokio::time::Instant::now();
        let warn = tokio::time::sleep(self.stall_warning);
        tokio::pin!(warn);
        while let Some((topic, bytes, mut fut)) = self.pending.pop_front() {
            let report = loop {
                tokio::select! {
                    biased;
                    report = &mut fut => break report,
                    () = &mut warn => {
                        tracing::warn!(
                            topic = %topic,
                            waiting = self.pending.len() + 1,
                            "Kafka has not confirmed deliveries for {}s; the producer keeps resending them (same producer id and sequence numbers: no duplicate, no reordering) and the slot stays where it is",
                            started.elapsed().as_secs()
                        );
                        warn.as_mut()
                            .reset(tokio::time::Instant::now() + self.stall_warning);
                    }
                }
            };
            delivered(topic, bytes, report)?;
        }
        Ok(())
    }

    /// Queues every change of `batches`, then waits for all delivery
    /// reports.
    async fn write(&mut self, batches: &[&Batch]) -> Result<(), SinkError> {
        self.renew_failed_producer().await?;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        // The commit LSN header in text form, made once per transaction
        // rather than once per message.
        let mut lsn_of = None;
        let mut lsn = String::new();
        for event in batches.iter().flat_map(|b| &b.events) {
            let Event::Change(change) = event else {
                continue;
            };
            if lsn_of != Some(change.source.commit_lsn) {
                lsn_of = Some(change.source.commit_lsn);
                lsn.clear();
                use std::fmt::Write as _;
                let _ = write!(lsn, "{}", change.source.commit_lsn);
            }
            let (topic, first) = self
                .router
                .topic(&change.table)
                .map_err(KafkaSinkError::Route)?;
            if first || !self.ready_topics.contains(&topic) {
                self.prepare_topic(&topic, &change.table.name.to_string())
                    .await?;
            }
            self.key.clear();
            let has_key = self.encoder.encode_key(change, &mut self.key);
            self.value.clear();
            self.encoder.encode(change, now_ms, &mut self.value);
            self.enqueue(&topic, change, has_key, false, &lsn).await?;
            if self.tombstones && change.op == Op::Delete && has_key {
                self.enqueue(&topic, change, true, true, &lsn).await?;
            }
        }
        self.settle_pending().await?;
        Ok(())
    }
}

fn create_producer(config: &ClientConfig) -> Result<Kafka, SinkError> {
    config
        .create_with_context(SinkContext)
        .map_err(|e| KafkaSinkError::Config(e).into())
}

/// The outcome of one delivery report.
fn delivered(
    topic: Arc<str>,
    bytes: usize,
    report: <DeliveryFuture as std::future::Future>::Output,
) -> Result<(), SinkError> {
    match report {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((source, _))) => Err(KafkaSinkError::Delivery {
            topic: topic.to_string(),
            bytes,
            source,
        }
        .into()),
        Err(_) => Err(KafkaSinkError::Canceled.into()),
    }
}

impl Sink for KafkaSink {
    async fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        Sink::write_batches(self, &[batch]).await
    }

    /// Every message of the group is queued before the first delivery
    /// report is awaited.
    async fn write_batches(&mut self, batches: &[&Batch]) -> Result<(), SinkError> {
        let result = self.write(batches).await;
        if result.is_err() {
            // Nothing of this group counts: forget the reports still
            // outstanding. The retry queues the group again on the same
            // producer (after its messages still queued, so in order).
            self.pending.clear();
        }
        result
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        let producer = self.producer.clone();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10)))
            .await
            .map_err(|e| SinkError::retryable(format!("flush task failed: {e}")))?;
        flushed.map_err(|e| SinkError::retryable(format!("flushing the Kafka producer: {e}")))
    }
}
