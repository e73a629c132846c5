//! What the check found: [`Finding`]s with a [`Severity`], and the
//! [`CheckReport`] that collects them.

use std::fmt;

use crate::error::PgError;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Checked and fine (or will be set up as configured).
    Ok,
    /// The pipeline runs, but something behaves in a way worth knowing.
    Warning,
    /// The pipeline cannot run (or would break something) until it is fixed.
    Blocking,
}

impl Severity {
    /// The four-character tag that starts a finding's line: `ok  `, `WARN`, `FAIL`.
    pub const fn tag(self) -> &'static str {
        match self {
            Severity::Ok => "ok  ",
            Severity::Warning => "WARN",
            Severity::Blocking => "FAIL",
        }
    }
}

/// One thing the check looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// What was checked, short: `wal_level`, `table public.users`, `slot cdc_slot`.
    pub subject: String,
    /// What was found (for problems: what is wrong and what follows from it).
    pub detail: String,
    /// How to fix it: an exact SQL statement or setting where there is one.
    pub fix: Option<String>,
}

impl Finding {
    /// A finding without a fix.
    pub fn ok(subject: impl Into<String>, detail: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Ok,
            subject: subject.into(),
            detail: detail.into(),
            fix: None,
        }
    }

    /// A warning with its fix.
    pub fn warning(
        subject: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            severity: Severity::Warning,
            subject: subject.into(),
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// A blocking problem with its fix.
    pub fn blocking(
        subject: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            severity: Severity::Blocking,
            subject: subject.into(),
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// The finding without its tag: `subject: detail; fix: fix`.
    pub fn message(&self) -> String {
        match &self.fix {
            Some(fix) => format!("{}: {}; fix: {fix}", self.subject, self.detail),
            None => format!("{}: {}", self.subject, self.detail),
        }
    }
}

impl fmt::Display for Finding {
    /// One line: `FAIL wal_level: … ; fix: …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.severity.tag(), self.message())
    }
}

/// Every finding of one check, in the order they were made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// The findings.
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// Adds a finding.
    pub fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// The findings of severity `severity`.
    pub fn with_severity(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity == severity)
    }

    /// `true` when something blocks the pipeline.
    pub fn has_blocking(&self) -> bool {
        self.with_severity(Severity::Blocking).next().is_some()
    }

    /// `3 blocking problem(s), 1 warning(s), 12 ok`.
    pub fn summary(&self) -> String {
        let n = |s| self.with_severity(s).count();
        format!(
            "{} blocking problem(s), {} warning(s), {} ok",
            n(Severity::Blocking),
            n(Severity::Warning),
            n(Severity::Ok)
        )
    }

    /// `Err` naming every blocking problem with its fix (one per line),
    /// `Ok` when nothing blocks.
    pub fn blocking_error(&self) -> Result<(), PgError> {
        let problems: Vec<String> = self
            .with_severity(Severity::Blocking)
            .map(|f| format!("\n  - {}", f.message()))
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        Err(PgError::Setup(format!(
            "the server is not ready for this pipeline ({} problem(s); `cdc-engine check` lists them too):{}",
            problems.len(),
            problems.concat()
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn lines_start_with_the_severity_and_end_with_the_fix() {
        let f = Finding::blocking(
            "wal_level",
            "is replica",
            "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
        );
        assert_eq!(
            f.to_string(),
            "FAIL wal_level: is replica; fix: ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
        );
        assert_eq!(
            Finding::warning("t", "d", "x").to_string(),
            "WARN t: d; fix: x"
        );
        assert_eq!(Finding::ok("t", "fine").to_string(), "ok   t: fine");
    }

    #[test]
    fn the_error_names_every_blocking_problem() {
        let mut r = CheckReport::default();
        assert!(r.blocking_error().is_ok());
        r.push(Finding::ok("a", "fine"));
        r.push(Finding::warning("b", "meh", "do b"));
        assert!(!r.has_blocking());
        assert!(r.blocking_error().is_ok());
        r.push(Finding::blocking("c", "broken", "do c"));
        r.push(Finding::blocking("d", "broken too", "do d"));
        assert!(r.has_blocking());
        assert_eq!(r.summary(), "2 blocking problem(s), 1 warning(s), 1 ok");
        let e = r.blocking_error().unwrap_err();
        assert_eq!(e.class(), cdc_core::ErrorClass::Fatal);
        let text = e.to_string();
        assert!(text.contains("2 problem(s)"), "{text}");
        assert!(text.contains("\n  - c: broken; fix: do c"), "{text}");
        assert!(text.contains("\n  - d: broken too; fix: do d"), "{text}");
        assert!(!text.contains("meh"), "{text}");
    }
}
