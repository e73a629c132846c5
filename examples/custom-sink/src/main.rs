//! A complete custom sink: **one JSON-lines file per table, replay-safe**.
//!
//! It shows everything a real sink needs:
//! * durability: `write_batch` returns only after the files are fsynced;
//! * error classification: I/O errors are retryable (the pipeline retries
//!   the same batch with backoff), an unusable output directory is fatal;
//! * at-least-once input, exactly-once output: after a crash the source
//!   delivers changes again. Each event's position `(commit_lsn, ordinal)`
//!   increases along the stream, so the sink remembers the last position it
//!   wrote per table (in a small state file, fsynced with the data) and
//!   skips anything at or before it.
//!
//! It runs on `cdc-pipeline`, the runtime the engine uses too (bounded
//! channels, group commit, retries with backoff, and acknowledging to
//! PostgreSQL only what the sink made durable), with `cdc-core` and
//! `cdc-postgres`: no sink crate of the engine is in its dependency tree,
//! so building it needs no C++ toolchain for Kafka (`cargo tree -p
//! example-custom-sink -e normal` shows it; `scripts/test.sh` checks it).
//!
//! Run it:
//! ```text
//! cargo run -p example-custom-sink -- postgres://postgres:postgres@127.0.0.1:5432/app public.users ./out
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use cdc_core::encode::DebeziumJson;
use cdc_core::{Batch, Event, Lsn, Sink, SinkError, TableName};
use cdc_pipeline::{run_pipeline, NamedSink, PipelineOptions};
use cdc_postgres::{PgSource, PgSourceConfig};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// Position of a change along the stream.
type Position = (Lsn, u64);

/// Writes `<dir>/<schema>.<table>.jsonl`, skipping replays.
pub(crate) struct PerTableFiles {
    dir: PathBuf,
    encoder: DebeziumJson,
    /// Last position written per table, persisted in `<dir>/positions`.
    written: HashMap<String, Position>,
    buffers: HashMap<String, Vec<u8>>,
}

impl PerTableFiles {
    pub(crate) async fn open(dir: &Path) -> Result<Self, SinkError> {
        tokio::fs::create_dir_all(dir).await.map_err(|e| {
            SinkError::fatal(format!("cannot create {}", dir.display())).with_source(e)
        })?;
        let mut written = HashMap::new();
        if let Ok(text) = tokio::fs::read_to_string(dir.join("positions")).await {
            for line in text.lines() {
                let mut parts = line.rsplitn(3, ' ');
                if let (Some(ord), Some(lsn), Some(table)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    if let (Ok(ord), Ok(lsn)) = (ord.parse(), lsn.parse()) {
                        written.insert(table.to_owned(), (lsn, ord));
                    }
                }
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            encoder: DebeziumJson::new("custom-sink"),
            written,
            buffers: HashMap::new(),
        })
    }

    async fn append(&self, file: &str, data: &[u8]) -> std::io::Result<()> {
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(file))
            .await?;
        f.write_all(data).await?;
        f.sync_data().await
    }

    async fn save_positions(&self) -> std::io::Result<()> {
        let mut text = String::new();
        for (table, (lsn, ord)) in &self.written {
            text.push_str(&format!("{table} {lsn} {ord}\n"));
        }
        // Write-then-rename keeps the state file whole across a crash.
        let tmp = self.dir.join("positions.tmp");
        tokio::fs::write(&tmp, text).await?;
        tokio::fs::File::open(&tmp).await?.sync_all().await?;
        tokio::fs::rename(&tmp, self.dir.join("positions")).await
    }
}

impl Sink for PerTableFiles {
    async fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let mut newest: HashMap<String, Position> = HashMap::new();
        for buf in self.buffers.values_mut() {
            buf.clear();
        }
        for event in &batch.events {
            let Event::Change(change) = event else {
                continue;
            };
            let table = change.table.name.to_string();
            let pos = (change.source.commit_lsn, change.source.ordinal);
            if self.written.get(&table).is_some_and(|done| pos <= *done) {
                continue; // already written before a restart
            }
            let buf = self.buffers.entry(table.clone()).or_default();
            self.encoder.encode(change, 0, buf);
            buf.push(b'\n');
            newest.insert(table, pos);
        }
        for (table, buf) in &self.buffers {
            if buf.is_empty() {
                continue;
            }
            self.append(&format!("{table}.jsonl"), buf)
                .await
                .map_err(|e| {
                    SinkError::retryable(format!("writing {table}.jsonl")).with_source(e)
                })?;
        }
        if !newest.is_empty() {
            self.written.extend(newest);
            self.save_positions()
                .await
                .map_err(|e| SinkError::retryable("saving positions").with_source(e))?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let usage = "usage: example-custom-sink <postgres-url> <schema.table> <output-dir>";
    let url = args.next().context(usage)?;
    let table = args.next().context(usage)?;
    let dir = PathBuf::from(args.next().context(usage)?);
    let (schema, name) = table
        .split_once('.')
        .context("the table must be schema.table")?;

    let source = PgSource::connect(PgSourceConfig::new(
        url,
        vec![TableName::new(schema, name)],
        "custom_sink_pub",
        "custom_sink_slot",
    ))
    .await?;
    let sink = PerTableFiles::open(&dir).await?;

    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    let outcome = run_pipeline(
        source,
        vec![NamedSink::new("per-table files", Box::new(sink))],
        PipelineOptions::default(),
        shutdown,
        CancellationToken::new(),
    )
    .await?;
    eprintln!("stopped; acknowledged up to {}", outcome.acknowledged);
    Ok(())
}
