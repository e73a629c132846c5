//! The example's sink (`PerTableFiles`, one JSON-lines file per table that
//! skips replays) runs the sink conformance battery
//! ([`cdc_sink_conformance::battery`]): its file of each table of the
//! checks, read back line by line.
//!
//! Its fatal case: an output directory that cannot be created (a file
//! stands where it should be). Its transient fault: a directory stands
//! where the table's file goes, so appending to it fails, until healed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "../src/main.rs"]
mod example;

use std::path::PathBuf;
use std::sync::Arc;

use cdc_core::{SinkError, TableName, TableSchema};
use cdc_sink_conformance::battery::{self, Stored, Subject};
use cdc_sink_conformance::replay::Change;
use example::PerTableFiles;

struct Example {
    dir: tempfile::TempDir,
}

impl Example {
    fn file(&self, table: &TableName) -> PathBuf {
        self.dir.path().join(format!("{table}.jsonl"))
    }
}

impl Subject for Example {
    type Sink = PerTableFiles;

    async fn open(&mut self, _table: &TableName) -> PerTableFiles {
        PerTableFiles::open(self.dir.path()).await.unwrap()
    }

    async fn read(&mut self, table: &TableName) -> Stored {
        let path = self.file(table);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{} ends with a partial line",
            path.display()
        );
        let changes = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                let value = serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("{} line {}: not JSON ({e})", path.display(), i + 1)
                });
                Change::from_json(0, i + 1, value).unwrap()
            })
            .collect();
        Stored::Changes(changes)
    }

    async fn break_destination(&mut self, table: &TableName) {
        std::fs::create_dir(self.file(table)).unwrap();
    }

    async fn heal(&mut self, table: &TableName) {
        std::fs::remove_dir(self.file(table)).unwrap();
    }

    async fn fatal(&mut self, _table: &Arc<TableSchema>) -> Result<(), SinkError> {
        let in_the_way = self.dir.path().join("not-a-directory");
        std::fs::write(&in_the_way, "a file").unwrap();
        PerTableFiles::open(&in_the_way.join("out"))
            .await
            .map(|_| ())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_sink_conforms() {
    let mut example = Example {
        dir: tempfile::tempdir().unwrap(),
    };
    battery::run("example custom sink", &mut example).await;
}
