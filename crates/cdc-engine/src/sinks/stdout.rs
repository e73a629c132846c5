//! JSON lines on standard output.

use cdc_core::encode::DebeziumJson;
use cdc_core::{Batch, Sink, SinkError};
use tokio::io::AsyncWriteExt;

/// Writes each change as one JSON line to standard output. A batch counts
/// as durable once it is flushed to the stdout file descriptor: fine for
/// watching and piping, not a durable store (use the file sink for that).
pub struct StdoutSink {
    encoder: DebeziumJson,
    out: tokio::io::Stdout,
    buf: Vec<u8>,
}

impl StdoutSink {
    /// A sink whose envelopes carry `source.name = name`.
    pub fn new(name: &str) -> Self {
        Self {
            encoder: DebeziumJson::new(name),
            out: tokio::io::stdout(),
            buf: Vec::with_capacity(64 * 1024),
        }
    }
}

impl Sink for StdoutSink {
    async fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.buf.clear();
        super::jsonl::render_batch(&self.encoder, batch, &mut self.buf);
        let result = async {
            self.out.write_all(&self.buf).await?;
            self.out.flush().await
        }
        .await;
        // A closed pipe will not reopen: retrying cannot help.
        result.map_err(|e| SinkError::fatal("writing to stdout").with_source(e))
    }
}
