//! Small helpers: SQL quoting, unique names, temporary directories, JSON
//! Lines files and polling.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Quotes an SQL identifier: `my "t"` becomes `"my ""t"""`.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes an SQL string literal: `it's` becomes `'it''s'`.
///
/// Works with `standard_conforming_strings = on` (the default).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A string that no other call in any process will return in practice:
/// `<pid>_<counter>_<6 hex digits of randomness>`.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    h.write_u64(n);
    format!(
        "{}_{}_{:06x}",
        std::process::id(),
        n,
        h.finish() & 0xff_ffff
    )
}

/// `true` when `CDC_TEST_KEEP_TMP` asks to keep temporary directories.
fn keep_tmp_requested() -> bool {
    matches!(std::env::var("CDC_TEST_KEEP_TMP").as_deref(), Ok(v) if !v.is_empty() && v != "0")
}

/// A temporary directory, removed on drop — unless the thread is panicking
/// (a failing test: the directory is kept and its path printed) or
/// `CDC_TEST_KEEP_TMP=1` is set.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// Creates `$TMPDIR/cdc-it-<prefix>-<unique suffix>`.
    pub fn new(prefix: &str) -> TempDir {
        let prefix: String = prefix
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        let path = std::env::temp_dir().join(format!("cdc-it-{prefix}-{}", unique_suffix()));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        TempDir {
            path,
            keep: keep_tmp_requested(),
        }
    }

    /// The directory `path` (created when missing), kept after drop: for
    /// output that must outlive the run.
    pub fn kept(path: PathBuf) -> TempDir {
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create dir {}: {e}", path.display()));
        TempDir { path, keep: true }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Keeps the directory after drop.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if std::thread::panicking() {
            eprintln!("(test failed: keeping {})", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Reads a JSON Lines file: one JSON value per line, blank lines skipped.
///
/// A missing file reads as empty. A last line without its newline is taken
/// as still being written and skipped, so this can be polled while a sink
/// appends to the file. Panics on a complete line that is not JSON.
pub fn read_jsonl(path: impl AsRef<Path>) -> Vec<serde_json::Value> {
    let path = path.as_ref();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("{} line {}: not JSON ({e}): {l}", path.display(), i + 1)
            })
        })
        .collect()
}

/// How often [`wait_until`] and [`wait_for`] poll.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `poll` every 100 ms until it returns `true` (then returns `true`)
/// or `timeout` has passed (then returns `false`).
///
/// ```no_run
/// # async fn f(path: std::path::PathBuf) {
/// use std::time::Duration;
/// use integration_tests::{read_jsonl, wait_until};
/// let ok = wait_until(Duration::from_secs(30), async || read_jsonl(&path).len() >= 3).await;
/// assert!(ok, "expected 3 events");
/// # }
/// ```
pub async fn wait_until<F>(timeout: Duration, mut poll: F) -> bool
where
    F: AsyncFnMut() -> bool,
{
    wait_for(timeout, async || poll().await.then_some(()))
        .await
        .is_some()
}

/// Polls `poll` every 100 ms until it returns `Some` (then returns it) or
/// `timeout` has passed (then returns `None`). Always polls at least once.
pub async fn wait_for<T, F>(timeout: Duration, mut poll: F) -> Option<T>
where
    F: AsyncFnMut() -> Option<T>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = poll().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a"), "\"a\"");
        assert_eq!(quote_ident("my \"t\""), "\"my \"\"t\"\"\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn unique_suffixes_differ() {
        assert_ne!(unique_suffix(), unique_suffix());
    }

    #[test]
    fn jsonl_skips_partial_last_line() {
        let dir = TempDir::new("jsonl");
        let p = dir.join("x.jsonl");
        assert!(read_jsonl(&p).is_empty());
        std::fs::write(&p, "{\"a\":1}\n\n{\"a\":2.50}\n{\"a\":").unwrap();
        let v = read_jsonl(&p);
        assert_eq!(v.len(), 2);
        assert_eq!(v[1]["a"].to_string(), "2.50");
    }

    #[tokio::test]
    async fn wait_helpers() {
        let mut n = 0;
        assert!(
            wait_until(Duration::from_secs(5), async || {
                n += 1;
                n >= 3
            })
            .await
        );
        assert_eq!(n, 3);
        let none: Option<()> = wait_for(Duration::from_millis(150), async || None).await;
        assert!(none.is_none());
    }
}
