//! Writing the Prometheus text exposition format, version 0.0.4:
//!
//! ```text
//! # HELP cdc_sink_events_total Change events a sink wrote durably.
//! # TYPE cdc_sink_events_total counter
//! cdc_sink_events_total{sink="sinks[0]",type="file"} 42
//! ```
//!
//! Each family's `# HELP` and `# TYPE` lines come once, before its samples;
//! label values escape `\`, `"` and line feeds; help text escapes `\` and
//! line feeds.

use std::fmt::Write as _;

use super::histogram::HistogramSnapshot;
use super::names::{Kind, Metric};

/// The `Content-Type` of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Accumulates the exposition text.
#[derive(Debug, Default)]
pub struct TextEncoder {
    out: String,
}

impl TextEncoder {
    /// An empty document.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, metric: &Metric) {
        self.out.push_str("# HELP ");
        self.out.push_str(metric.name);
        self.out.push(' ');
        for c in metric.help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push('\n');
        let _ = writeln!(self.out, "# TYPE {} {}", metric.name, metric.kind.as_str());
    }

    /// One sample of an integer value.
    pub fn sample_u64(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.sample_start(name, labels);
        let _ = writeln!(self.out, "{value}");
    }

    /// One sample of a floating-point value.
    pub fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.sample_start(name, labels);
        push_f64(&mut self.out, value);
        self.out.push('\n');
    }

    /// The samples of one histogram series: a `_bucket` line per upper
    /// bound (cumulative, ending with `+Inf`), then `_sum` and `_count`.
    pub fn histogram(&mut self, metric: &Metric, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        debug_assert_eq!(metric.kind, Kind::Histogram);
        let bucket = format!("{}_bucket", metric.name);
        let mut cumulative = 0u64;
        for (bound, count) in h.bounds.iter().zip(&h.counts) {
            cumulative += count;
            let mut le = String::new();
            push_f64(&mut le, *bound);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample_u64(&bucket, &with_le, cumulative);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample_u64(&bucket, &with_le, h.count);
        self.sample_f64(&format!("{}_sum", metric.name), labels, h.sum);
        self.sample_u64(&format!("{}_count", metric.name), labels, h.count);
    }

    /// The document.
    pub fn finish(self) -> String {
        self.out
    }

    fn sample_start(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(key);
                self.out.push_str("=\"");
                push_label_value(&mut self.out, value);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
    }
}

fn push_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A float as the format spells it: `+Inf`, `-Inf`, `NaN`, or Rust's
/// shortest round-trip decimal form.
fn push_f64(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{value}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::histogram::Histogram;
    use super::super::names;
    use super::*;

    #[test]
    fn family_header_and_escaped_labels() {
        let mut enc = TextEncoder::new();
        enc.family(&names::metric("cdc_x_total", Kind::Counter, "a \\ b\nc"));
        enc.sample_u64("cdc_x_total", &[("t", "a\"b\\c\nd"), ("op", "insert")], 7);
        enc.sample_u64("cdc_x_total", &[], 0);
        assert_eq!(
            enc.finish(),
            "# HELP cdc_x_total a \\\\ b\\nc\n\
             # TYPE cdc_x_total counter\n\
             cdc_x_total{t=\"a\\\"b\\\\c\\nd\",op=\"insert\"} 7\n\
             cdc_x_total 0\n"
        );
    }

    #[test]
    fn floats() {
        let mut s = String::new();
        for v in [0.5, 1.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 0.001] {
            push_f64(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "0.5 1 +Inf -Inf NaN 0.001 ");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.1);
        h.observe(0.5);
        h.observe(3.0);
        let mut enc = TextEncoder::new();
        enc.histogram(&names::SINK_WRITE_SECONDS, &[("sink", "s")], &h.snapshot());
        let text = enc.finish();
        assert_eq!(
            text,
            "cdc_sink_write_seconds_bucket{sink=\"s\",le=\"0.1\"} 2\n\
             cdc_sink_write_seconds_bucket{sink=\"s\",le=\"1\"} 3\n\
             cdc_sink_write_seconds_bucket{sink=\"s\",le=\"+Inf\"} 4\n\
             cdc_sink_write_seconds_sum{sink=\"s\"} 3.65\n\
             cdc_sink_write_seconds_count{sink=\"s\"} 4\n"
        );
    }
}
