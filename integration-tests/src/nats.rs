//! What the NATS tests share: the nats-server binary for servers of a
//! test's own, and JetStream streams as they read them.

use async_nats::jetstream;

/// How many messages the stream `name` holds now; `None` while it does not
/// exist or does not answer.
pub async fn stream_messages(js: &jetstream::Context, name: &str) -> Option<u64> {
    let mut stream = js.get_stream(name).await.ok()?;
    stream.info().await.ok().map(|i| i.state.messages)
}

/// The nats-server binary `scripts/test.sh` installed
/// (`CDC_TEST_NATS_SERVER_BIN`), for servers of a test's own; panics when
/// it is unset.
pub fn server_bin() -> String {
    std::env::var("CDC_TEST_NATS_SERVER_BIN")
        .unwrap_or_else(|_| panic!("CDC_TEST_NATS_SERVER_BIN is not set: run ./scripts/test.sh"))
}
