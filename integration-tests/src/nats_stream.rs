//! JetStream streams as the NATS tests read them.

use async_nats::jetstream;

/// How many messages the stream `name` holds now; `None` while it does not
/// exist or does not answer.
pub async fn stream_messages(js: &jetstream::Context, name: &str) -> Option<u64> {
    let mut stream = js.get_stream(name).await.ok()?;
    stream.info().await.ok().map(|i| i.state.messages)
}
