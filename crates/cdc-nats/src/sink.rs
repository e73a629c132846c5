//! [`NatsSink`]: connecting, and writing batches.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::jetstream::context::{GetStreamByNameErrorKind, PublishAckFuture};
use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectOptions, Event as NatsEvent, Subject};
use bytes::Bytes;
use cdc_core::encode::DebeziumJson;
use cdc_core::settings::no_problems;
use cdc_core::{error_chain, Batch, ChangeEvent, Event, Op, Sink, SinkError};

use crate::classify;
use crate::config::{NatsSinkConfig, Storage};
use crate::message;
use crate::subject::SubjectTemplate;

/// A sink that publishes each change as Debezium JSON to NATS.
///
/// With JetStream (the default) a batch is durable once every message of
/// it has its PubAck; see the crate documentation for subjects, headers and
/// de-duplication.
pub struct NatsSink {
    client: Client,
    /// `None` in core mode.
    js: Option<jetstream::Context>,
    stream_name: Option<String>,
    template: SubjectTemplate,
    prefix: String,
    pipeline: String,
    encoder: DebeziumJson,
    max_in_flight: usize,
    ack_timeout: std::time::Duration,
    /// Chain messages with `Nats-Expected-Last-Msg-Id` (`exclusive_stream`).
    chain: bool,
    /// `<pipeline>:`, the start of every id this sink writes.
    id_prefix: String,
    /// Ids the server acknowledged as duplicates in the batch's last
    /// attempt: stored already. A message following one of them names no
    /// predecessor on the next attempt (the stream's last message may be
    /// another one an earlier run stored after it, an incremental
    /// snapshot's read, say; nothing was lost before it). Cleared once a
    /// batch is written.
    stored: HashSet<String>,
    subject_buf: String,
    id_buf: String,
    payload_buf: Vec<u8>,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("jetstream", &self.js.is_some())
            .field("stream", &self.stream_name)
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

impl NatsSink {
    /// Connects to the server, and in JetStream mode checks (or creates)
    /// the configured stream.
    ///
    /// Errors: an invalid configuration, rejected credentials, a TLS
    /// failure, JetStream not enabled, or a missing stream with
    /// `stream.create: false` are fatal; an unreachable server is
    /// retryable.
    pub async fn connect(
        config: &NatsSinkConfig,
        pipeline_name: &str,
    ) -> Result<NatsSink, SinkError> {
        no_problems(config.validate())
            .map_err(|p| SinkError::fatal(format!("invalid nats sink: {p}")))?;
        let template = SubjectTemplate::parse(&config.subject)
            .map_err(|e| SinkError::fatal(format!("invalid nats sink: subject: {e}")))?;
        // async-nats builds its TLS configuration with rustls' process-wide
        // crypto provider, which rustls cannot pick by itself when both of
        // its providers are compiled in (as in the engine): install ring,
        // unless the process already chose one. A server may ask for TLS
        // even when the URL says `nats://`, so do it in every case.
        let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
        let urls = config.urls();
        let url_text = urls.join(",");
        let options = connect_options(config, pipeline_name).await?;
        let addrs: Vec<async_nats::ServerAddr> = urls
            .iter()
            .map(|u| {
                u.parse()
                    .map_err(|e| SinkError::fatal(format!("invalid NATS URL `{u}`: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let client = options
            .connect(addrs.as_slice())
            .await
            .map_err(|e| classify::connect_error(&url_text, e))?;

        let mut sink = NatsSink {
            client: client.clone(),
            js: None,
            stream_name: config.stream.as_ref().map(|s| s.name.clone()),
            template,
            prefix: config
                .prefix
                .clone()
                .unwrap_or_else(|| pipeline_name.to_owned()),
            pipeline: pipeline_name.to_owned(),
            encoder: DebeziumJson::new(pipeline_name),
            max_in_flight: config.max_in_flight,
            ack_timeout: config.ack_timeout,
            chain: config.exclusive_stream,
            id_prefix: message::id_prefix(pipeline_name),
            stored: HashSet::new(),
            subject_buf: String::new(),
            id_buf: String::new(),
            payload_buf: Vec::new(),
        };
        if !config.jetstream {
            tracing::warn!(
                url = %url_text,
                "nats sink in core mode (jetstream: false): messages are fire-and-forget, not durable"
            );
            return Ok(sink);
        }
        let js = jetstream::ContextBuilder::new()
            .timeout(config.ack_timeout)
            .ack_timeout(config.ack_timeout)
            .max_ack_inflight(config.max_in_flight)
            .backpressure_on_inflight(true)
            .build(client);
        ensure_stream(&js, config).await?;
        sink.js = Some(js);
        tracing::info!(url = %url_text, stream = ?sink.stream_name, "nats sink connected (JetStream)");
        Ok(sink)
    }

    /// Renders subject, message id, headers and payload of one change;
    /// `expected_last` is the id the stream's last message must have.
    fn render(
        &mut self,
        change: &ChangeEvent,
        expected_last: Option<&str>,
        now_ms: i64,
    ) -> (Subject, async_nats::HeaderMap, Bytes) {
        self.template
            .render(&self.prefix, change, &mut self.subject_buf);
        message::message_id(&self.pipeline, change, &mut self.id_buf);
        let headers = message::headers(&self.id_buf, expected_last, change);
        self.payload_buf.clear();
        self.encoder.encode(change, now_ms, &mut self.payload_buf);
        (
            Subject::from(self.subject_buf.as_str()),
            headers,
            Bytes::copy_from_slice(&self.payload_buf),
        )
    }

    /// Publishes the changes of `batches` keeping up to `max_in_flight`
    /// PubAcks outstanding across batch boundaries, and returns once every
    /// one of them is acknowledged.
    async fn write_jetstream(
        &mut self,
        js: &jetstream::Context,
        batches: &[&Batch],
    ) -> Result<(), SinkError> {
        let now_ms = now_ms();
        let events: usize = batches.iter().map(|b| b.events.len()).sum();
        // The subject and id of each message wait with its PubAck for the
        // error messages; both are shared, not copied.
        let mut pending: VecDeque<(Subject, Arc<str>, PublishAckFuture)> =
            VecDeque::with_capacity(self.max_in_flight.min(events));
        let mut stats = Stats::default();
        let mut last_id: Option<Arc<str>> = None;
        let changes = batches
            .iter()
            .flat_map(|b| &b.events)
            .filter_map(|e| match e {
                Event::Change(change) => Some(change),
                _ => None,
            });
        for change in changes {
            if pending.len() >= self.max_in_flight {
                if let Some((subject, id, ack)) = pending.pop_front() {
                    self.check_ack(js, &subject, &id, ack, &mut stats).await?;
                }
            }
            // While disconnected, async-nats queues publishes and sends
            // them after reconnecting, behind messages the dropped socket
            // lost: fail fast instead, so fewer messages of a broken batch
            // land ahead of lost ones (see docs/sinks/nats.md, "Order").
            if self.client.connection_state() != async_nats::connection::State::Connected {
                return Err(SinkError::retryable(
                    "not connected to the NATS server; the batch will be sent again",
                ));
            }
            // Each message after the first names its predecessor: after a
            // reconnect JetStream refuses a message whose predecessor was
            // lost with the old connection instead of storing it out of
            // order. The first message of an attempt names none, so a
            // retry always makes progress (replayed ones are dropped as
            // duplicates before the check). Snapshot reads are not chained:
            // a chunk read again holds new rows between ones already stored
            // (dropped as duplicates, so they are not the stream's last
            // message), and their order does not matter (each is another
            // row; the engine writes a batch of reads, acknowledged in
            // full, before any streamed change).
            // A predecessor the server acknowledged as a duplicate in the
            // last attempt is stored, but need not be the stream's last
            // message: named, it would be refused on every attempt.
            let read = change.op == Op::Read;
            let after_stored = last_id
                .as_ref()
                .is_some_and(|id| self.stored.contains(&**id));
            let expected_last = if self.chain && !read && !after_stored {
                last_id.as_deref()
            } else {
                None
            };
            let (subject, headers, payload) = self.render(change, expected_last, now_ms);
            let ack = js
                .publish_with_headers(subject.clone(), headers, payload)
                .await
                .map_err(|e| classify::publish_error(&subject, e))?;
            let id: Arc<str> = Arc::from(self.id_buf.as_str());
            last_id = (!read).then(|| id.clone());
            pending.push_back((subject, id, ack));
        }
        while let Some((subject, id, ack)) = pending.pop_front() {
            self.check_ack(js, &subject, &id, ack, &mut stats).await?;
        }
        self.stored.clear();
        if stats.stored + stats.duplicates > 0 {
            tracing::debug!(
                stored = stats.stored,
                duplicates = stats.duplicates,
                "nats batch acknowledged"
            );
        }
        if stats.duplicates > 0 {
            tracing::info!(
                duplicates = stats.duplicates,
                "JetStream dropped replayed messages by Nats-Msg-Id"
            );
        }
        Ok(())
    }

    async fn check_ack(
        &mut self,
        js: &jetstream::Context,
        subject: &str,
        msg_id: &str,
        ack: PublishAckFuture,
        stats: &mut Stats,
    ) -> Result<(), SinkError> {
        let ack = match ack.await {
            Ok(ack) => ack,
            Err(e)
                if e.kind() == async_nats::jetstream::context::PublishErrorKind::StreamNotFound =>
            {
                return Err(no_stream_error(js, subject).await.with_source(e));
            }
            Err(e)
                if e.kind()
                    == async_nats::jetstream::context::PublishErrorKind::WrongLastMessageId =>
            {
                return Err(classify::wrong_last_id(
                    subject,
                    self.stream_name.as_deref(),
                    &self.id_prefix,
                    e,
                ));
            }
            Err(e) => return Err(classify::publish_error(subject, e)),
        };
        if let Some(expected) = &self.stream_name {
            if &ack.stream != expected {
                return Err(SinkError::fatal(format!(
                    "subject `{subject}` is stored by stream `{}`, not by the configured stream `{expected}`: \
                     make `subject` match the stream's subjects",
                    ack.stream
                )));
            }
        }
        if ack.duplicate {
            tracing::debug!(msg_id, subject, "duplicate dropped by the server");
            stats.duplicates += 1;
            if self.chain && self.stored.len() < STORED_IDS_KEPT {
                self.stored.insert(msg_id.to_owned());
            }
        } else {
            stats.stored += 1;
        }
        Ok(())
    }

    async fn write_core(&mut self, batches: &[&Batch]) -> Result<(), SinkError> {
        let now_ms = now_ms();
        let client = self.client.clone();
        for event in batches.iter().flat_map(|b| &b.events) {
            let Event::Change(change) = event else {
                continue;
            };
            let (subject, headers, payload) = self.render(change, None, now_ms);
            // Waits only while the client's outgoing queue is full (as
            // during a disconnect); bounded by `ack_timeout`.
            let publish = client.publish_with_headers(subject.clone(), headers, payload);
            match tokio::time::timeout(self.ack_timeout, publish).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(
                        SinkError::retryable(format!("cannot publish to `{subject}`"))
                            .with_source(e),
                    )
                }
                Err(_) => {
                    return Err(SinkError::retryable(format!(
                        "publishing to `{subject}` waited longer than {:?} (disconnected?)",
                        self.ack_timeout
                    )))
                }
            }
        }
        self.flush().await
    }

    /// Flushes the connection, waiting at most `ack_timeout` (a flush
    /// waits for a reconnect otherwise).
    async fn flush(&self) -> Result<(), SinkError> {
        match tokio::time::timeout(self.ack_timeout, self.client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                Err(SinkError::retryable("cannot flush to the NATS server").with_source(e))
            }
            Err(_) => Err(SinkError::retryable(format!(
                "flushing to the NATS server took longer than {:?}",
                self.ack_timeout
            ))),
        }
    }
}

impl Sink for NatsSink {
    async fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        Sink::write_batches(self, &[batch]).await
    }

    /// A group of batches is published as one: the window of outstanding
    /// PubAcks stays full across the batches' boundaries, and the group
    /// counts as written once every message of it is acknowledged.
    async fn write_batches(&mut self, batches: &[&Batch]) -> Result<(), SinkError> {
        let has_changes = batches
            .iter()
            .flat_map(|b| &b.events)
            .any(|e| matches!(e, Event::Change(_)));
        if !has_changes {
            return Ok(());
        }
        match self.js.clone() {
            Some(js) => self.write_jetstream(&js, batches).await,
            None => self.write_core(batches).await,
        }
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        self.flush().await
    }
}

/// At most this many duplicate ids are remembered for the next attempt
/// (a batch's worth: the ones that matter come before the refused
/// message).
const STORED_IDS_KEPT: usize = 100_000;

#[derive(Debug, Default)]
struct Stats {
    stored: u64,
    duplicates: u64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What a "no responders" PubAck means: a missing stream (fatal) or a
/// JetStream that is not answering yet (retryable).
async fn no_stream_error(js: &jetstream::Context, subject: &str) -> SinkError {
    match js.stream_by_subject(subject).await {
        Ok(name) => SinkError::retryable(format!(
            "no PubAck for `{subject}` although stream `{name}` captures it"
        )),
        Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => SinkError::fatal(format!(
            "no JetStream stream captures subject `{subject}`: create a stream for it, \
             or configure `stream: {{ name: ..., create: true }}` on the nats sink"
        )),
        Err(e) => SinkError::retryable(format!(
            "no PubAck for `{subject}` and the stream lookup failed: {}",
            error_chain(&e)
        )),
    }
}

async fn connect_options(
    config: &NatsSinkConfig,
    pipeline_name: &str,
) -> Result<ConnectOptions, SinkError> {
    let auth = config.auth.clone().unwrap_or_default();
    let mut options = match &auth.credentials_file {
        Some(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| {
                SinkError::fatal(format!(
                    "cannot read NATS credentials file {}",
                    path.display()
                ))
                .with_source(e)
            })?,
        None => ConnectOptions::new(),
    };
    if let Some(token) = &auth.token {
        options = options.token(token.expose().to_owned());
    }
    if let (Some(user), Some(password)) = (&auth.username, &auth.password) {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(seed) = &auth.nkey_seed {
        options = options.nkey(seed.expose().trim().to_owned());
    }
    if let Some(tls) = &config.tls {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    Ok(options
        .name(format!("cdc-engine/{pipeline_name}"))
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.ack_timeout))
        // Reconnect forever: a batch in flight fails with a retryable
        // error and is written again once the server is back.
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                NatsEvent::Connected => tracing::info!("nats: connected"),
                NatsEvent::Disconnected => tracing::warn!("nats: disconnected, reconnecting"),
                other => tracing::warn!("nats: {other}"),
            }
        }))
}

/// Checks the configured stream exists, creating it when `stream.create`
/// is set; without a configured stream, checks JetStream answers.
async fn ensure_stream(js: &jetstream::Context, config: &NatsSinkConfig) -> Result<(), SinkError> {
    let Some(wanted) = &config.stream else {
        return js.query_account().await.map(|_| ()).map_err(|e| {
            SinkError::fatal(
                "JetStream is not available on the NATS server (start nats-server with `-js`), \
                 or set `jetstream: false` to publish with core NATS (not durable)",
            )
            .with_source(e)
        });
    };
    let name = &wanted.name;
    match js.get_stream(name).await {
        Ok(_) => return Ok(()),
        Err(e) if classify::is_stream_not_found(&e) => {}
        Err(e) => return Err(classify::get_stream_error(name, e)),
    }
    if !wanted.create {
        return Err(SinkError::fatal(format!(
            "JetStream stream `{name}` does not exist and `stream.create` is false: create it \
             (e.g. `nats stream add {name} --subjects '{}' --dupe-window 2m`) or set `stream.create: true`",
            config.stream_subjects().join(",")
        )));
    }
    let stream_config = stream::Config {
        name: name.clone(),
        subjects: config.stream_subjects(),
        storage: match wanted.storage {
            Storage::File => stream::StorageType::File,
            Storage::Memory => stream::StorageType::Memory,
        },
        duplicate_window: wanted.duplicate_window,
        ..stream::Config::default()
    };
    match js.create_stream(stream_config).await {
        Ok(_) => {
            tracing::info!(stream = %name, subjects = ?config.stream_subjects(), "created JetStream stream");
            Ok(())
        }
        Err(e) => classify::create_stream_error(name, e),
    }
}
