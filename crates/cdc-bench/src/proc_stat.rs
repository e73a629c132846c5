//! CPU time and peak memory of a process, read from `/proc`.

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// User plus system CPU seconds so far.
    pub cpu_s: f64,
    /// User CPU seconds so far.
    pub user_s: f64,
    /// System (kernel) CPU seconds so far.
    pub sys_s: f64,
    /// Peak resident set size so far (`VmHWM`), in KiB.
    pub hwm_kb: u64,
}

/// Reads the CPU time and peak RSS of `pid`; `None` once it has been
/// reaped. A process that has exited but is not reaped yet (a zombie) still
/// shows its final CPU time, but no longer its peak RSS (0 then).
pub fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start
    // after the last ')'. Field 3 (state) is index 0 there; utime and stime
    // (fields 14 and 15) are indices 11 and 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if *fields.first()? == "X" {
        return None;
    }
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let hwm_kb = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    Some(Sample {
        cpu_s: (utime + stime) as f64 / TICKS_PER_SECOND,
        user_s: utime as f64 / TICKS_PER_SECOND,
        sys_s: stime as f64 / TICKS_PER_SECOND,
        hwm_kb,
    })
}

/// A process watched until it exits: keeps the last reading taken while it
/// was alive.
#[derive(Debug, Clone, Copy)]
pub struct Tracked {
    pid: u32,
    last: Option<Sample>,
}

impl Tracked {
    /// Starts watching `pid`.
    pub fn new(pid: u32) -> Self {
        let mut t = Self { pid, last: None };
        t.update();
        t
    }

    /// Takes a new reading if the process is still there (also after it
    /// exited, until it is reaped: its final CPU time). Keeps the highest
    /// values seen: a process that is exiting has already released its
    /// memory, and `/proc` then shows no `VmHWM`.
    pub fn update(&mut self) {
        if let Some(s) = sample(self.pid) {
            let last = self.last.unwrap_or_default();
            self.last = Some(Sample {
                cpu_s: s.cpu_s.max(last.cpu_s),
                user_s: s.user_s.max(last.user_s),
                sys_s: s.sys_s.max(last.sys_s),
                hwm_kb: s.hwm_kb.max(last.hwm_kb),
            });
        }
    }

    /// The last reading.
    pub fn last(&self) -> Option<Sample> {
        self.last
    }
}

/// The current 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}
