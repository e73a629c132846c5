//! Small helpers: SQL quoting, unique names, temporary directories and JSON
//! Lines files.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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
}
