//! Starting a reader process and watching it until its end condition:
//! wall time, CPU and peak memory of the process and of its walsender.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

use crate::db::Db;
use crate::proc_stat::{Sample, Tracked};

/// How often the watcher samples.
const POLL: Duration = Duration::from_millis(20);

/// When a reader has finished its work.
#[derive(Debug, Clone)]
pub enum End {
    /// It exits by itself (successfully).
    Exit,
    /// The file holds this many lines.
    FileLines(PathBuf, u64),
    /// The slot's confirmed position passed this LSN.
    SlotPast(String, u64),
}

/// What the watcher saw.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    /// Seconds from start to the end condition.
    pub secs: f64,
    /// Last reading of the process before the end condition.
    pub process: Option<Sample>,
    /// Last reading of its walsender.
    pub walsender: Option<Sample>,
    /// Last reading of an extra process (the broker).
    pub extra: Option<Sample>,
    /// Lines counted for `End::FileLines`.
    pub lines: u64,
    /// Standard output of a process that exited by itself.
    pub stdout: String,
}

/// Counts the lines of a file that is being appended to.
struct LineCounter {
    path: PathBuf,
    file: Option<std::fs::File>,
    lines: u64,
    buf: Vec<u8>,
}

impl LineCounter {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            file: None,
            lines: 0,
            buf: vec![0; 1 << 20],
        }
    }

    fn poll(&mut self) -> Result<u64> {
        if self.file.is_none() {
            match std::fs::File::open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(_) => return Ok(0),
            }
        }
        if let Some(f) = self.file.as_mut() {
            loop {
                let n = f.read(&mut self.buf)?;
                if n == 0 {
                    break;
                }
                self.lines += self.buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            }
        }
        Ok(self.lines)
    }
}

/// Counts the lines of a whole file.
pub fn count_lines(path: &Path) -> Result<u64> {
    let mut c = LineCounter::new(path);
    c.poll()
}

/// Spawns `cmd` with its stderr going to `log` and stdout captured.
pub fn spawn(cmd: &mut Command, log: &Path) -> Result<Child> {
    let err = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    cmd.spawn().with_context(|| format!("starting {cmd:?}"))
}

/// Sends SIGTERM to `pid`.
pub fn terminate(pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// How to watch a reader.
pub struct Watch<'a> {
    /// When it was started.
    pub start: Instant,
    /// The slot whose walsender to sample.
    pub slot: Option<&'a str>,
    /// Its end condition.
    pub end: End,
    /// Longest it may take.
    pub timeout: Duration,
    /// Its log file (for error messages).
    pub log: &'a Path,
}

/// Watches `child` until its end condition, sampling it, the walsender of
/// its slot, and `extra`. Stops the child (SIGTERM) afterwards unless it
/// exits by itself. Fails on a timeout or a failed exit.
pub async fn watch(
    db: &Db,
    child: &mut Child,
    spec: Watch<'_>,
    mut extra: Option<&mut Tracked>,
) -> Result<Watched> {
    let Watch {
        start,
        slot,
        end,
        timeout,
        log,
    } = spec;
    let pid = child.id().context("the process has no pid")?;
    let mut process = Tracked::new(pid);
    let mut walsender: Option<Tracked> = None;
    let mut counter = match &end {
        End::FileLines(path, _) => Some(LineCounter::new(path)),
        _ => None,
    };
    let mut stdout = child.stdout.take();
    let reader = tokio::spawn(async move {
        let mut s = String::new();
        if let Some(out) = stdout.as_mut() {
            use tokio::io::AsyncReadExt;
            let _ = out.read_to_string(&mut s).await;
        }
        s
    });
    let mut watched = Watched::default();
    loop {
        if let Some(w) = walsender.as_mut() {
            w.update();
        } else if let Some(slot) = slot {
            if let Some(p) = db.slot_pid(slot).await? {
                walsender = Some(Tracked::new(p));
            }
        }
        if let Some(e) = extra.as_deref_mut() {
            e.update();
        }
        // Read right before `try_wait` reaps it: a process that has just
        // exited still shows its final CPU time until then.
        process.update();
        let reached = match &end {
            End::Exit => match child.try_wait()? {
                Some(status) => {
                    if !status.success() {
                        bail!("exited with {status}; log: {}", tail(log));
                    }
                    true
                }
                None => false,
            },
            End::FileLines(_, n) => {
                let lines = counter.as_mut().map(|c| c.poll()).transpose()?.unwrap_or(0);
                watched.lines = lines;
                if lines > *n {
                    bail!("{lines} lines, more than the {n} expected");
                }
                lines == *n
            }
            End::SlotPast(slot, lsn) => db.confirmed_flush(slot).await? > *lsn,
        };
        if reached {
            watched.secs = start.elapsed().as_secs_f64();
            break;
        }
        if !matches!(end, End::Exit) {
            if let Some(status) = child.try_wait()? {
                bail!("exited early with {status}; log: {}", tail(log));
            }
        }
        if start.elapsed() > timeout {
            let _ = child.start_kill();
            bail!(
                "did not finish within {}s (lines so far: {}); log: {}",
                timeout.as_secs(),
                watched.lines,
                tail(log)
            );
        }
        tokio::time::sleep(POLL).await;
    }
    watched.process = process.last();
    watched.walsender = walsender.and_then(|w| w.last());
    watched.extra = extra.and_then(|e| e.last());
    if !matches!(end, End::Exit) {
        terminate(pid);
        if tokio::time::timeout(Duration::from_secs(40), child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
    watched.stdout = reader.await.unwrap_or_default();
    Ok(watched)
}

/// The last lines of a log file, for error messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(8);
    format!("{} (…{})", log.display(), lines[from..].join(" | "))
}
