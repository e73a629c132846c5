//! [`NatsSink`] runs the sink conformance battery
//! ([`cdc_sink_conformance::battery`]) against the nats-server that
//! `scripts/test.sh` starts (`CDC_TEST_NATS_URL`): one JetStream stream
//! per table of the checks, read back message by message.
//!
//! Its fatal case: a subject no stream captures (without a configured
//! stream, nothing can make the write durable). Its transient fault: the
//! connection is cut and new ones refused (a [`CutProxy`] between sink
//! and server) until healed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use async_nats::jetstream;
use cdc_core::{Sink, SinkError, TableName, TableSchema};
use cdc_nats::{NatsSink, NatsSinkConfig};
use cdc_sink_conformance::battery::{self, Script, Stored, Subject};
use cdc_sink_conformance::replay::Change;
use cdc_sink_conformance::CutProxy;
use serde_json::json;

fn nats_url() -> String {
    match std::env::var("CDC_TEST_NATS_URL") {
        Ok(u) if !u.trim().is_empty() => u.trim().to_owned(),
        _ => panic!("CDC_TEST_NATS_URL is not set: run ./scripts/test.sh"),
    }
}

struct Nats {
    js: jetstream::Context,
    proxy: CutProxy,
    /// The streams the checks created.
    streams: Vec<String>,
}

/// The stream of `table`'s subjects.
fn stream(table: &TableName) -> String {
    format!("CF_{}", table.name)
}

async fn connect(config: serde_json::Value) -> Result<NatsSink, SinkError> {
    let config: NatsSinkConfig = serde_json::from_value(config).unwrap();
    NatsSink::connect(&config, "conformance").await
}

impl Subject for Nats {
    type Sink = NatsSink;

    async fn open(&mut self, table: &TableName) -> NatsSink {
        let name = stream(table);
        if !self.streams.contains(&name) {
            self.streams.push(name.clone());
        }
        connect(json!({
            "url": format!("nats://{}", self.proxy.addr()),
            "subject": format!("{}.{{table}}", table.name),
            "stream": { "name": name, "create": true, "storage": "memory" },
            "ack_timeout": "2s",
        }))
        .await
        .unwrap()
    }

    async fn read(&mut self, table: &TableName) -> Stored {
        let mut changes = Vec::new();
        if let Ok(mut s) = self.js.get_stream(stream(table)).await {
            let last = s.info().await.unwrap().state.last_sequence;
            for seq in 1..=last {
                let m = s.get_raw_message(seq).await.unwrap();
                let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                changes.push(Change::from_json(0, seq as usize, body).unwrap());
            }
        }
        Stored::Changes(changes)
    }

    async fn break_destination(&mut self, _table: &TableName) {
        self.proxy.refuse(true);
        self.proxy.cut();
    }

    async fn heal(&mut self, _table: &TableName) {
        self.proxy.refuse(false);
    }

    async fn fatal(&mut self, table: &Arc<TableSchema>) -> Result<(), SinkError> {
        let mut sink = connect(json!({
            "url": nats_url(),
            "subject": format!("nostream_{}.{{table}}", table.name.name),
        }))
        .await?;
        sink.write_batch(&Script::new(table).batches[0]).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_sink_conforms() {
    let url = nats_url();
    let upstream = url
        .trim_start_matches("nats://")
        .parse()
        .expect("CDC_TEST_NATS_URL is nats://127.0.0.1:PORT");
    let mut nats = Nats {
        js: jetstream::new(async_nats::connect(&url).await.unwrap()),
        proxy: CutProxy::start(upstream).await,
        streams: Vec::new(),
    };
    battery::run("nats sink", &mut nats).await;
    for s in &nats.streams {
        let _ = nats.js.delete_stream(s).await;
    }
}
