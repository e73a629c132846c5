//! [`ConfigError`]: every problem found in a configuration file, each naming
//! the field it is about.

use std::fmt;

use serde_path_to_error::{Path, Segment};

/// A configuration that cannot be used, with every problem found.
///
/// Parsing stops at the first syntax or type error, so such errors come
/// alone; the semantic checks that follow report all their problems at once.
/// `Display` prints one problem per line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    /// The problems, in the order they were found; never empty.
    pub problems: Vec<ConfigProblem>,
}

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigProblem {
    /// Where the problem is: a field path such as `source.slot.name`,
    /// `sinks[1].path` or `source.tables[2]`; `line L, column C` for problems
    /// found in the text before it is parsed (`${VAR}` interpolation); empty
    /// when the problem concerns the whole file (it cannot be read, or it is
    /// not YAML at all).
    pub field: String,
    /// What is wrong, for a human; never contains the source URL's password.
    pub message: String,
}

impl ConfigError {
    /// An error holding one problem.
    pub(crate) fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            problems: vec![ConfigProblem::new(field, message)],
        }
    }
}

impl From<Vec<ConfigProblem>> for ConfigError {
    fn from(problems: Vec<ConfigProblem>) -> Self {
        Self { problems }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigProblem {
    /// A problem with `field` (see [`ConfigProblem::field`]).
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Turns a deserialization error into a problem whose field is `prefix`
    /// followed by the path serde_path_to_error tracked.
    ///
    /// serde reports a missing field at the path of the struct that lacks it;
    /// the missing key is appended so that the field names what is missing.
    pub(crate) fn from_serde(
        prefix: &str,
        error: serde_path_to_error::Error<serde_yaml::Error>,
    ) -> Self {
        let mut field = join_path(prefix, error.path());
        let message = clean_message(error.inner().to_string(), error.path());
        if let Some(key) = missing_field(&message) {
            field = join_key(&field, key);
        }
        Self { field, message }
    }
}

/// Removes from a serde_yaml message what would confuse a user: the path
/// serde_yaml prefixes it with (ours is in the field already), and the names
/// of Rust types (`expected struct SourceConfig` becomes `expected a map`).
fn clean_message(mut message: String, path: &Path) -> String {
    // serde_yaml's path is ours or one of its ancestors, written with bare
    // keys; try the longest first.
    let segments: Vec<&Segment> = path.iter().collect();
    let mut candidate = String::new();
    let mut candidates = Vec::new();
    for segment in &segments {
        match segment {
            Segment::Seq { index } => candidate.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !candidate.is_empty() {
                    candidate.push('.');
                }
                candidate.push_str(key);
            }
            Segment::Unknown => break,
        }
        candidates.push(format!("{candidate}: "));
    }
    if let Some(prefix) = candidates
        .iter()
        .rev()
        .find(|c| message.starts_with(c.as_str()))
    {
        message.drain(..prefix.len());
    }
    if let Some(start) = message.find("expected struct ") {
        let name_start = start + "expected struct ".len();
        let name_end = message[name_start..]
            .find(|c: char| !c.is_alphanumeric() && c != '_')
            .map_or(message.len(), |i| name_start + i);
        message.replace_range(start..name_end, "expected a map");
    }
    for rust_type in ["expected usize", "expected u64", "expected u32"] {
        if message.contains(rust_type) {
            message = message.replace(rust_type, "expected a non-negative integer");
        }
    }
    message
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// The key named by serde's `missing field `key`` message, if it is one.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

/// `prefix` followed by the segments of `path`: `sinks[1]` + `path` gives
/// `sinks[1].path`; map keys that are not plain words are quoted,
/// `source.replica_identity."public.users"`.
fn join_path(prefix: &str, path: &Path) -> String {
    let mut out = prefix.to_owned();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => out = join_key(&out, key),
            // Where serde_path_to_error lost track (YAML syntax errors):
            // the known part of the path is still the best guess.
            Segment::Unknown => break,
        }
    }
    out
}

/// Appends one map key to a field path.
pub(crate) fn join_key(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if plain {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}
