//! The NATS ceiling: a minimal JetStream client publishing the messages the
//! engine stored (same subjects, headers and payloads) into a stream of its
//! own, with the sink's acknowledgement rule: a PubAck for every message,
//! at most `in_flight` outstanding.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;

/// One message as the engine published it.
#[derive(Clone)]
pub struct Message {
    /// Its subject without the engine stream's subject prefix.
    pub subject_tail: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its payload.
    pub payload: Bytes,
}

/// Connects a JetStream context with the sink's publishing settings.
async fn context(url: &str, in_flight: usize) -> Result<jetstream::Context> {
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .ack_timeout(Duration::from_secs(10))
        .max_ack_inflight(in_flight)
        .backpressure_on_inflight(true)
        .build(client))
}

/// How many messages stream `name` holds.
pub async fn stream_count(url: &str, name: &str) -> Result<u64> {
    let js = context(url, 1).await?;
    let mut s = js.get_stream(name).await?;
    Ok(s.info().await?.state.messages)
}

/// Reads the `expected` messages of stream `name` (subjects
/// `<prefix>.…`), in order.
pub async fn capture(url: &str, name: &str, prefix: &str, expected: u64) -> Result<Vec<Message>> {
    let js = context(url, 1).await?;
    let s = js.get_stream(name).await?;
    let c = s
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await?;
    let mut messages = c.messages().await?;
    let mut out = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    let cut = prefix.len() + 1;
    while (out.len() as u64) < expected {
        let next = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .context("reading the engine's stream back: no message for 30 s")?;
        let Some(m) = next else {
            bail!("the engine's stream ended after {} messages", out.len());
        };
        let m = m?;
        let subject = m.subject.as_str();
        out.push(Message {
            subject_tail: subject.get(cut..).unwrap_or(subject).to_owned(),
            headers: m.headers.clone().unwrap_or_default(),
            payload: m.payload.clone(),
        });
    }
    Ok(out)
}

/// Creates stream `name` (file storage, subjects `<prefix>.>`, as the sink
/// creates its stream) and publishes `messages` into it under `prefix`,
/// keeping at most `in_flight` PubAcks outstanding and checking each.
/// Returns the seconds from connecting to the last PubAck.
pub async fn publish(
    url: &str,
    name: &str,
    prefix: &str,
    messages: &[Message],
    in_flight: usize,
) -> Result<f64> {
    let start = Instant::now();
    let js = context(url, in_flight).await?;
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{prefix}.>")],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..stream::Config::default()
    })
    .await
    .with_context(|| format!("creating stream {name}"))?;
    let mut pending = VecDeque::with_capacity(in_flight);
    let mut subject = String::new();
    for m in messages {
        if pending.len() >= in_flight {
            if let Some(ack) = pending.pop_front() {
                check(ack, name).await?;
            }
        }
        subject.clear();
        subject.push_str(prefix);
        subject.push('.');
        subject.push_str(&m.subject_tail);
        let ack = js
            .publish_with_headers(subject.clone(), m.headers.clone(), m.payload.clone())
            .await?;
        pending.push_back(ack);
    }
    while let Some(ack) = pending.pop_front() {
        check(ack, name).await?;
    }
    Ok(start.elapsed().as_secs_f64())
}

async fn check(ack: jetstream::context::PublishAckFuture, stream: &str) -> Result<()> {
    let ack = ack.await?;
    if ack.stream != stream || ack.duplicate {
        bail!(
            "unexpected PubAck: stream {}, duplicate {}",
            ack.stream,
            ack.duplicate
        );
    }
    Ok(())
}

/// Deletes stream `name` if it exists.
pub async fn delete_stream(url: &str, name: &str) -> Result<()> {
    let js = context(url, 1).await?;
    let _ = js.delete_stream(name).await;
    Ok(())
}
