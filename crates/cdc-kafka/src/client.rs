//! The librdkafka client configuration built from [`KafkaSinkConfig`], and
//! a client context that sends librdkafka's logs to `tracing`.

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;

use crate::config::KafkaSinkConfig;

/// Forwards librdkafka's log lines and client errors to `tracing`.
#[derive(Debug, Clone, Default)]
pub(crate) struct SinkContext;

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", "{fac}: {message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac}: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "{fac}: {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac}: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", "Kafka client error: {error}: {reason}");
    }
}

/// The producer properties for `config`; `pipeline` names the default
/// client id.
pub(crate) fn client_config(config: &KafkaSinkConfig, pipeline: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    let ms = |d: std::time::Duration| d.as_millis().min(i32::MAX as u128).to_string();
    c.set("bootstrap.servers", config.brokers.join(","));
    c.set(
        "client.id",
        config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("cdc-{pipeline}")),
    );
    // Per-key order and no loss rest on these three: every in-sync replica
    // has a message before it counts as delivered; the producer numbers its
    // messages, so the broker drops a resent copy it already has and refuses
    // one that would land out of order; and a message never expires, so
    // the producer keeps resending it under the same number until the
    // broker takes it. A message given up on and sent again by a new
    // producer (a new id, new numbers) could land after a newer change of
    // its key, should its first request still reach the broker.
    c.set("enable.idempotence", "true");
    c.set("acks", "all");
    c.set("message.timeout.ms", "0");
    c.set("compression.type", config.compression.as_str());
    c.set("linger.ms", ms(config.batching.linger));
    c.set(
        "batch.num.messages",
        config.batching.max_messages.to_string(),
    );
    c.set("batch.size", config.batching.max_bytes.to_string());
    // The broker's wait for replicas, and the client's wait for any
    // answer: a request unanswered by then is given up with its connection
    // and sent again, under the same sequence numbers, on a new one.
    c.set("request.timeout.ms", ms(config.timeouts.request));
    c.set("socket.timeout.ms", ms(config.timeouts.request));
    // Same key → partition mapping as the Java client.
    c.set("partitioner", "murmur2_random");
    // Topics are created by the sink (`create_topics`) or must exist; a
    // metadata lookup must not create them as a side effect.
    c.set("allow.auto.create.topics", "false");
    let tls = config.tls.is_some();
    let protocol = match (tls, config.auth.is_some()) {
        (false, false) => "plaintext",
        (true, false) => "ssl",
        (false, true) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    c.set("security.protocol", protocol);
    if let Some(t) = &config.tls {
        if let Some(p) = &t.ca {
            c.set("ssl.ca.location", p.display().to_string());
        }
        if let Some(p) = &t.cert {
            c.set("ssl.certificate.location", p.display().to_string());
        }
        if let Some(p) = &t.key {
            c.set("ssl.key.location", p.display().to_string());
        }
        if let Some(p) = &t.key_password {
            c.set("ssl.key.password", p.expose());
        }
        c.set(
            "ssl.endpoint.identification.algorithm",
            if t.verify_hostname { "https" } else { "none" },
        );
    }
    if let Some(a) = &config.auth {
        if let Some(m) = &a.mechanism {
            c.set("sasl.mechanism", m.as_str());
        }
        if let Some(u) = &a.username {
            c.set("sasl.username", u.as_str());
        }
        if let Some(p) = &a.password {
            c.set("sasl.password", p.expose());
        }
    }
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    c
}
