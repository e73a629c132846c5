//! What a one-shot command (`status`, `snapshot`, `resnapshot`) needs
//! before it does its work: the configuration file, loaded and checked,
//! and a single-threaded async runtime.

use std::path::Path;

use crate::config::{load_config, Config};

/// Loads `path` and builds a current-thread runtime (with the process's
/// TLS provider installed). The error is the line to print: the file's
/// problems under its name, or why the runtime could not start.
pub fn prepare(path: &Path) -> Result<(Config, tokio::runtime::Runtime), String> {
    let cfg = load_config(path)
        .map_err(|e| format!("{}: invalid configuration:\n{e}", path.display()))?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("error: starting the async runtime: {e}"))?;
    Ok((cfg, runtime))
}
