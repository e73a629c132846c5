//! The file sink ([`FileSink`]) runs the sink conformance battery
//! ([`cdc_sink_conformance::battery`]): one file per table of the checks,
//! read back line by line.
//!
//! Its fatal case: a "file" that cannot be synced (`/dev/null`: `fsync`
//! answers EINVAL), so nothing written to it can be durable. Its transient
//! fault: the file system refuses to let the file grow (the process's
//! file size limit, `RLIMIT_FSIZE`, set just above the file's size with
//! `prlimit`: the write stops part way with EFBIG, as on a full disk),
//! lifted again to heal. The limit holds for the whole process, so the
//! battery runs as this file's only test.
//!
//! (Here rather than in `crates/cdc-engine/tests`: a test there would make
//! `cargo test` build the engine binary without its failpoints, over the
//! one `scripts/test.sh` built for the fault tests.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cdc_core::{Sink, SinkError, TableName, TableSchema};
use cdc_engine::sinks::FileSink;
use cdc_sink_conformance::battery::{self, Script, Stored, Subject};
use cdc_sink_conformance::replay::Change;
use integration_tests::TempDir;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGXFSZ, sent to a process that writes past its file size limit; with
/// a handler installed the write fails with EFBIG instead of killing it.
const SIGXFSZ: i32 = 25;

struct Files {
    dir: TempDir,
    /// The file size limit the process had (restored to heal).
    soft_limit: String,
    _sigxfsz: Signal,
}

impl Files {
    fn new() -> Files {
        let soft_limit = prlimit(&["--fsize", "--output", "SOFT", "--noheadings"])
            .trim()
            .to_owned();
        Files {
            dir: TempDir::new("file-sink-conformance"),
            soft_limit,
            _sigxfsz: signal(SignalKind::from_raw(SIGXFSZ)).expect("a SIGXFSZ handler"),
        }
    }

    fn path(&self, table: &TableName) -> PathBuf {
        self.dir.path().join(format!("{table}.jsonl"))
    }
}

/// Runs `prlimit --pid <this process> <args>`; its stdout.
fn prlimit(args: &[&str]) -> String {
    let out = Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .args(args)
        .output()
        .expect("prlimit (util-linux) runs");
    assert!(
        out.status.success(),
        "prlimit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every line of `path` as a change; a torn last line fails.
fn changes_in(path: &Path) -> Vec<Change> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends with a partial line",
        path.display()
    );
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{} line {}: not JSON ({e})", path.display(), i + 1));
            Change::from_json(0, i + 1, value)
                .unwrap_or_else(|e| panic!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

impl Subject for Files {
    type Sink = FileSink;

    async fn open(&mut self, table: &TableName) -> FileSink {
        FileSink::open(&self.path(table), "conformance")
            .await
            .unwrap()
    }

    async fn read(&mut self, table: &TableName) -> Stored {
        Stored::Changes(changes_in(&self.path(table)))
    }

    async fn break_destination(&mut self, table: &TableName) {
        let size = std::fs::metadata(self.path(table)).map_or(0, |m| m.len());
        prlimit(&[&format!("--fsize={}:", size + 100)]);
    }

    async fn heal(&mut self, _table: &TableName) {
        prlimit(&[&format!("--fsize={}:", self.soft_limit)]);
    }

    async fn fatal(&mut self, table: &Arc<TableSchema>) -> Result<(), SinkError> {
        let mut sink = FileSink::open(Path::new("/dev/null"), "conformance").await?;
        sink.write_batch(&Script::new(table).batches[0]).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_sink_conforms() {
    battery::run("file sink", &mut Files::new()).await;
}
