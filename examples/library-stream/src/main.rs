//! Stream row changes of one table into your own code, no engine involved.
//!
//! The loop is the whole contract: take a batch, handle it, and only then
//! acknowledge it (`ack.durable(&batch)`), so PostgreSQL keeps every change
//! you have not finished with. The rows that exist when it first starts
//! arrive first (a snapshot, `=` lines), then every change after them.
//!
//! ```text
//! cargo run -p example-library-stream -- postgres://postgres:postgres@127.0.0.1:5432/app public.users
//! ```

use anyhow::Context;
use cdc_core::{Event, Op, Source, TableName, Value};
use cdc_postgres::{PgSource, PgSourceConfig, SnapshotMode};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: example-library-stream <postgres-url> <schema.table>";
    let url = args.next().context(usage)?;
    let table = args.next().context(usage)?;
    let (schema, name) = table
        .split_once('.')
        .context("the table must be schema.table")?;

    let mut config = PgSourceConfig::new(
        url,
        vec![TableName::new(schema, name)],
        "library_example_pub",
        "library_example_slot",
    );
    // Copy the rows that exist first (printed as `=` lines), then stream.
    config.snapshot.mode = SnapshotMode::Initial;
    let mut source = PgSource::connect(config).await?;
    let ack = source.ack_handle();

    loop {
        let batch = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            b = source.next_batch() => match b? { Some(b) => b, None => break },
        };
        // Snapshot rows whose claim ran out while this process stood still
        // (another instance reads them again, and may already have streamed
        // newer changes to them) are left out.
        let batch = batch.without_lost_reads().unwrap_or(batch);
        for event in &batch.events {
            let Event::Change(change) = event else {
                continue;
            };
            let columns = &change.table.columns;
            let describe = |row: &cdc_core::Row| -> String {
                columns
                    .iter()
                    .zip(row.values())
                    .map(|(c, v)| match v {
                        Value::Null => format!("{}=NULL", c.name),
                        Value::Text(s) => format!("{}={s:?}", c.name),
                        other => format!("{}={other:?}", c.name),
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            match change.op {
                Op::Insert => println!(
                    "+ {}: {}",
                    change.table.name,
                    change.after.as_ref().map(describe).unwrap_or_default()
                ),
                Op::Update => println!(
                    "~ {}: {}",
                    change.table.name,
                    change.after.as_ref().map(describe).unwrap_or_default()
                ),
                Op::Delete => println!(
                    "- {}: {}",
                    change.table.name,
                    change.before.as_ref().map(describe).unwrap_or_default()
                ),
                Op::Truncate => println!("! {} truncated", change.table.name),
                Op::Read => println!(
                    "= {}: {}",
                    change.table.name,
                    change.after.as_ref().map(describe).unwrap_or_default()
                ),
            }
        }
        // The batch is handled: acknowledge it. PostgreSQL may now drop the
        // changes up to its checkpoint, and snapshot chunks whose rows it
        // carried are marked done.
        ack.durable(&batch);
    }
    source.shutdown().await?;
    Ok(())
}
