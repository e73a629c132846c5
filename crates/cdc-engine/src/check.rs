//! `cdc-engine check --config <file>`: connect with the pipeline's source
//! settings and report, one line each with its fix, everything the server
//! lacks for this pipeline ([`cdc_postgres::setup::check`]). `run` makes the
//! same check before it starts.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use cdc_postgres::setup::check::{check_source, CheckReport, Severity};

use crate::config::{load_config, Config};
use crate::secrets::Secrets;

/// Exit code when nothing blocks the pipeline.
pub const EXIT_READY: u8 = 0;
/// Exit code when at least one finding blocks the pipeline.
pub const EXIT_BLOCKING: u8 = 1;
/// Exit code for an invalid configuration or a server that cannot be reached.
pub const EXIT_CANNOT_CHECK: u8 = 2;

/// The longest the check may take (connecting included).
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// How the findings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// One line per finding, then a summary line.
    Text,
    /// One JSON document.
    Json,
}

/// `cdc-engine check --config <path> [--json]`: prints to stdout and
/// stderr, returns the exit code.
pub fn main(path: &Path, json: bool) -> u8 {
    let output = if json { Output::Json } else { Output::Text };
    command(path, output, &mut std::io::stdout(), &mut std::io::stderr())
}

/// Runs `check` for the configuration file at `path`, printing to `out`
/// (findings) and `err` (why the check could not run); returns the exit code.
fn command(path: &Path, output: Output, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "{}: invalid configuration:\n{e}", path.display());
            return EXIT_CANNOT_CHECK;
        }
    };
    let secrets = Secrets::from_config(&config);
    let report = match check_config(&config) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(
                err,
                "error: cannot check {}: {}",
                config.source.redacted_url(),
                secrets.scrub(&e)
            );
            return EXIT_CANNOT_CHECK;
        }
    };
    let text = match output {
        Output::Text => render_text(&config, &report),
        Output::Json => render_json(&config, &report),
    };
    let _ = write!(out, "{}", secrets.scrub(&text));
    exit_code(&report)
}

/// [`EXIT_BLOCKING`] when something blocks, else [`EXIT_READY`].
fn exit_code(report: &CheckReport) -> u8 {
    if report.has_blocking() {
        EXIT_BLOCKING
    } else {
        EXIT_READY
    }
}

/// Connects and checks; the error is one line (its causes included).
fn check_config(config: &Config) -> Result<CheckReport, String> {
    // Same TLS provider choice as `run` (see main.rs).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))?;
    let pg = crate::run::source_config(config);
    runtime.block_on(async {
        match tokio::time::timeout(CHECK_TIMEOUT, check_source(&pg)).await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(e)) => Err(cdc_core::error_chain(&e)),
            Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        }
    })
}

/// The text report: a header, one line per finding, a summary.
fn render_text(config: &Config, report: &CheckReport) -> String {
    let mut s = format!(
        "checking pipeline {} against {}\n",
        config.name,
        config.source.redacted_url()
    );
    for f in &report.findings {
        s.push_str(&f.to_string());
        s.push('\n');
    }
    let verdict = if report.has_blocking() {
        "the pipeline cannot start until the FAIL lines are fixed"
    } else {
        "ready"
    };
    s.push_str(&format!("{}: {verdict}\n", report.summary()));
    s
}

/// The JSON report: `{"pipeline", "ready", "summary", "findings": [{"severity", "subject", "detail", "fix"}]}`.
fn render_json(config: &Config, report: &CheckReport) -> String {
    let findings: Vec<serde_json::Value> = report
        .findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "severity": match f.severity {
                    Severity::Ok => "ok",
                    Severity::Warning => "warning",
                    Severity::Blocking => "blocking",
                },
                "subject": f.subject,
                "detail": f.detail,
                "fix": f.fix,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "pipeline": config.name,
        "source": config.source.redacted_url(),
        "ready": !report.has_blocking(),
        "summary": report.summary(),
        "findings": findings,
    });
    format!("{doc}\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use cdc_postgres::setup::check::Finding;

    fn config() -> Config {
        crate::config::parse_config(
            "name: shop\nsource:\n  url: postgres://cdc:s3cret@db:5432/app\n  tables: [public.t]\nsinks:\n  - type: stdout\n",
        )
        .unwrap()
    }

    fn report() -> CheckReport {
        let mut r = CheckReport::default();
        r.push(Finding::ok("wal_level", "logical"));
        r.push(Finding::warning("table public.t", "toast", "ALTER TABLE x"));
        r
    }

    #[test]
    fn text_report_has_one_line_per_finding_and_a_summary() {
        let mut r = report();
        let text = render_text(&config(), &r);
        assert!(!text.contains("s3cret"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].starts_with("checking pipeline shop against postgres://cdc:"),
            "{text}"
        );
        assert_eq!(lines[1], "ok   wal_level: logical");
        assert_eq!(lines[2], "WARN table public.t: toast; fix: ALTER TABLE x");
        assert_eq!(lines[3], "0 blocking problem(s), 1 warning(s), 1 ok: ready");
        assert_eq!(exit_code(&r), EXIT_READY);
        r.push(Finding::blocking("slot s", "missing", "create it"));
        assert_eq!(exit_code(&r), EXIT_BLOCKING);
        let text = render_text(&config(), &r);
        assert!(
            text.contains("FAIL slot s: missing; fix: create it\n"),
            "{text}"
        );
        assert!(
            text.ends_with("cannot start until the FAIL lines are fixed\n"),
            "{text}"
        );
    }

    #[test]
    fn json_report() {
        let doc: serde_json::Value =
            serde_json::from_str(&render_json(&config(), &report())).unwrap();
        assert_eq!(doc["ready"], true);
        assert_eq!(doc["findings"][1]["severity"], "warning");
        assert_eq!(doc["findings"][1]["fix"], "ALTER TABLE x");
        assert_eq!(doc["findings"][0]["fix"], serde_json::Value::Null);
        assert!(!doc.to_string().contains("s3cret"));
    }
}
