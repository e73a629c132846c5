//! Snapshot progress for the person watching: on a terminal, one progress
//! bar per table (chunks done of planned, rows read, rows per second, time
//! left); elsewhere, one log line per table every few seconds.
//!
//! The numbers come from the source's [`SourceStatus`]: chunks count when
//! they are durable in every sink (by any instance sharing the snapshot),
//! rows are the rows this instance read. The time left is estimated from
//! the rate at which chunks complete.
//!
//! Log lines written while bars are drawn go through [`write_log`], which
//! hides the bars for the moment of the write so neither garbles the
//! other.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cdc_core::{Phase, SnapshotProgress, SourceStatus, TableName};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

/// How often bars are redrawn on a terminal.
const BAR_INTERVAL: Duration = Duration::from_millis(250);
/// How often a progress line is logged when standard error is not a
/// terminal.
pub const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// The bars on standard error, created on first use.
fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// Writes one log record to standard error, hiding any progress bars
/// while it does.
pub fn write_log(bytes: &[u8]) -> std::io::Result<()> {
    match BARS_IN_USE.get() {
        Some(()) => bars().suspend(|| std::io::stderr().write_all(bytes)),
        None => std::io::stderr().write_all(bytes),
    }
}

/// Set once bars are drawn: until then log writes skip the bars' lock.
static BARS_IN_USE: OnceLock<()> = OnceLock::new();

/// Follows the snapshot of `status` until it is over or `stop` is
/// cancelled: bars when `terminal` is true, log lines every
/// `log_interval` otherwise.
pub async fn report_snapshot(
    status: SourceStatus,
    terminal: bool,
    log_interval: Duration,
    stop: CancellationToken,
) {
    // Wait for the snapshot to begin (or for the source to stream without
    // one).
    loop {
        let p = status.snapshot_progress();
        if p.started_at.is_some() {
            break;
        }
        if matches!(
            status.phase(),
            Phase::Streaming | Phase::Standby | Phase::Stopped
        ) {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    if terminal {
        draw_bars(&status, &stop).await;
    } else {
        log_lines(&status, log_interval, &stop).await;
    }
}

/// Rows per second and time left of one table, from what was seen when
/// following began and what is seen now.
#[derive(Debug, Clone, Copy)]
struct Rate {
    rows_per_sec: f64,
    eta: Option<Duration>,
}

fn rate(
    start: (Instant, u64, u64),
    now: Instant,
    rows: u64,
    chunks_done: u64,
    chunks_total: u64,
) -> Rate {
    let (t0, rows0, chunks0) = start;
    let secs = now.duration_since(t0).as_secs_f64();
    if secs <= 0.0 {
        return Rate {
            rows_per_sec: 0.0,
            eta: None,
        };
    }
    let rows_per_sec = rows.saturating_sub(rows0) as f64 / secs;
    let chunks_per_sec = chunks_done.saturating_sub(chunks0) as f64 / secs;
    let left = chunks_total.saturating_sub(chunks_done);
    let eta = if left == 0 {
        Some(Duration::ZERO)
    } else if chunks_per_sec > 0.0 {
        Duration::try_from_secs_f64(left as f64 / chunks_per_sec).ok()
    } else {
        None
    };
    Rate { rows_per_sec, eta }
}

fn eta_text(eta: Option<Duration>) -> String {
    match eta {
        None => "?".to_owned(),
        Some(d) => {
            let s = d.as_secs();
            if s >= 3600 {
                format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
            } else if s >= 60 {
                format!("{}m{:02}s", s / 60, s % 60)
            } else {
                format!("{s}s")
            }
        }
    }
}

fn is_over(status: &SourceStatus, p: &SnapshotProgress) -> bool {
    p.finished_at.is_some() || status.phase() == Phase::Stopped
}

async fn draw_bars(status: &SourceStatus, stop: &CancellationToken) {
    let _ = BARS_IN_USE.set(());
    let style = ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} chunks {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut shown: BTreeMap<TableName, (ProgressBar, (Instant, u64, u64))> = BTreeMap::new();
    loop {
        let p = status.snapshot_progress();
        let now = Instant::now();
        for (table, t) in &p.tables {
            let (bar, start) = shown.entry(table.clone()).or_insert_with(|| {
                let bar = bars().add(ProgressBar::new(t.chunks_total));
                bar.set_style(style.clone());
                bar.set_prefix(table.to_string());
                (bar, (now, t.rows, t.chunks_done))
            });
            bar.set_length(t.chunks_total);
            bar.set_position(t.chunks_done.min(t.chunks_total));
            let r = rate(*start, now, t.rows, t.chunks_done, t.chunks_total);
            bar.set_message(format!(
                "{} rows, {:.0} rows/s, {} left",
                t.rows,
                r.rows_per_sec,
                eta_text(r.eta)
            ));
        }
        if is_over(status, &p) || stop.is_cancelled() {
            for (bar, _) in shown.values() {
                bar.finish();
            }
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(BAR_INTERVAL) => {}
        }
    }
}

async fn log_lines(status: &SourceStatus, interval: Duration, stop: &CancellationToken) {
    let started = Instant::now();
    let first = status.snapshot_progress();
    let starts: BTreeMap<TableName, (u64, u64)> = first
        .tables
        .iter()
        .map(|(t, p)| (t.clone(), (p.rows, p.chunks_done)))
        .collect();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let p = status.snapshot_progress();
        if is_over(status, &p) {
            return;
        }
        let now = Instant::now();
        for (table, t) in &p.tables {
            let (rows0, chunks0) = starts.get(table).copied().unwrap_or((0, 0));
            let r = rate(
                (started, rows0, chunks0),
                now,
                t.rows,
                t.chunks_done,
                t.chunks_total,
            );
            tracing::info!(
                table = %table,
                chunks_done = t.chunks_done,
                chunks_total = t.chunks_total,
                rows = t.rows,
                rows_per_sec = r.rows_per_sec.round() as u64,
                eta = %eta_text(r.eta),
                "snapshot progress"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_time_left() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(10);
        let r = rate((t0, 0, 0), later, 1000, 2, 10);
        assert!((r.rows_per_sec - 100.0).abs() < 1e-9);
        assert_eq!(r.eta, Some(Duration::from_secs(40)));
        // Nothing done yet: no estimate.
        assert_eq!(rate((t0, 0, 0), later, 0, 0, 10).eta, None);
        // All done.
        assert_eq!(rate((t0, 0, 0), later, 5, 10, 10).eta, Some(Duration::ZERO));
        assert_eq!(eta_text(Some(Duration::from_secs(3725))), "1h02m");
        assert_eq!(eta_text(Some(Duration::from_secs(75))), "1m15s");
        assert_eq!(eta_text(None), "?");
    }

    #[tokio::test(start_paused = true)]
    async fn log_lines_end_with_the_snapshot() {
        let status = SourceStatus::new();
        let t = TableName::new("public", "t");
        status.set_phase(Phase::Snapshot);
        status.snapshot_started();
        status.snapshot_table(&t, 4, 0);
        let follow = tokio::spawn(report_snapshot(
            status.clone(),
            false,
            Duration::from_secs(5),
            CancellationToken::new(),
        ));
        status.snapshot_rows(&t, 10);
        status.snapshot_chunk_done(&t);
        status.snapshot_finished();
        let ended = tokio::time::timeout(Duration::from_secs(60), follow).await;
        assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    }
}
