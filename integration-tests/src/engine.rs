//! The `cdc-engine` binary as a child process.

use std::ops::ControlFlow;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::util::TempDir;

/// How often a wait for the engine's exit looks.
const EXIT_POLL: Duration = Duration::from_millis(50);

/// The engine binary: `CDC_ENGINE_BIN`, or else `<target>/debug/cdc-engine`
/// if it was built (`CARGO_TARGET_DIR` or the workspace's `target/`).
pub fn engine_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CDC_ENGINE_BIN") {
        if !p.trim().is_empty() {
            let p = PathBuf::from(p.trim());
            assert!(
                p.is_file(),
                "CDC_ENGINE_BIN={} does not exist: run ./scripts/test.sh (or cargo build -p cdc-engine)",
                p.display()
            );
            return p;
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = target.join("debug/cdc-engine");
    assert!(
        p.is_file(),
        "CDC_ENGINE_BIN is not set and {} does not exist: run ./scripts/test.sh (or cargo build -p cdc-engine)",
        p.display()
    );
    p
}

/// Exit code of a finished process; `128 + signal` when a signal ended it.
fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => -1,
    }
}

/// A running `cdc-engine` process.
///
/// Its standard output and error go to files in a temporary directory of its
/// own ([`Engine::dir`]), which is also its working directory and holds the
/// config file. On drop a still running engine is killed; if the test is
/// failing, the tail of the engine's output is printed and the directory
/// kept.
#[derive(Debug)]
pub struct Engine {
    child: Child,
    dir: TempDir,
    config_path: PathBuf,
    status: Option<ExitStatus>,
    /// The read end of a stalled standard output ([`Engine::start_stalled`]),
    /// held so the pipe stays open.
    _stalled_stdout: Option<std::process::ChildStdout>,
}

impl Engine {
    /// Writes `config_yaml` to a file and starts `cdc-engine run --config <file>`.
    pub fn start(config_yaml: &str) -> Engine {
        Engine::start_with(config_yaml, &["run"], &[])
    }

    /// Like [`Engine::start`], with other leading arguments (the config
    /// flag is appended: `<args...> --config <file>`) and extra environment
    /// variables.
    pub fn start_with(config_yaml: &str, args: &[&str], env: &[(&str, &str)]) -> Engine {
        Engine::spawn(&engine_bin(), args, config_yaml, env)
    }

    /// Like [`Engine::start_with`], in the directory `dir` (created when
    /// missing; its `pipeline.yaml`, `stdout.log` and `stderr.log` are
    /// overwritten), which is kept after drop.
    pub fn start_in(dir: &Path, config_yaml: &str, args: &[&str], env: &[(&str, &str)]) -> Engine {
        Engine::spawn_in(
            TempDir::kept(dir.to_path_buf()),
            &engine_bin(),
            args,
            config_yaml,
            env,
            false,
        )
    }

    /// Starts `program <args...> --config <file with config_yaml>` the way
    /// [`Engine::start_with`] starts the engine (for other programs that
    /// take a config file, and for testing the harness).
    pub fn spawn(program: &Path, args: &[&str], config_yaml: &str, env: &[(&str, &str)]) -> Engine {
        Engine::spawn_in(
            TempDir::new("engine"),
            program,
            args,
            config_yaml,
            env,
            false,
        )
    }

    /// Starts `cdc-engine run` with its standard output a pipe that is
    /// never read: once the pipe's buffer is full, a `stdout` sink blocks
    /// for good, and so does everything behind it (the snapshot readers
    /// keep their claims). For tests that need an engine stuck mid-way.
    pub fn start_stalled(config_yaml: &str) -> Engine {
        let dir = TempDir::new("engine");
        Engine::spawn_in(dir, &engine_bin(), &["run"], config_yaml, &[], true)
    }

    fn spawn_in(
        dir: TempDir,
        program: &Path,
        args: &[&str],
        config_yaml: &str,
        env: &[(&str, &str)],
        stall_stdout: bool,
    ) -> Engine {
        let config_path = dir.join("pipeline.yaml");
        std::fs::write(&config_path, config_yaml)
            .unwrap_or_else(|e| panic!("writing {}: {e}", config_path.display()));
        let stdout = std::fs::File::create(dir.join("stdout.log")).expect("create stdout.log");
        let stderr = std::fs::File::create(dir.join("stderr.log")).expect("create stderr.log");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stderr(stderr);
        if stall_stdout {
            cmd.stdout(Stdio::piped());
        } else {
            cmd.stdout(stdout);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let stalled_stdout = child.stdout.take();
        Engine {
            child,
            dir,
            config_path,
            status: None,
            _stalled_stdout: stalled_stdout,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The engine's temporary directory (its working directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file it was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The file its standard output goes to.
    pub fn stdout_path(&self) -> PathBuf {
        self.dir.join("stdout.log")
    }

    /// The file its standard error goes to.
    pub fn stderr_path(&self) -> PathBuf {
        self.dir.join("stderr.log")
    }

    /// Everything it printed on standard output so far.
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(self.stdout_path()).unwrap_or_default()
    }

    /// Everything it printed on standard error so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// Both outputs, labelled, for assertion messages.
    pub fn output_report(&self) -> String {
        format!(
            "--- engine stdout ({}):\n{}\n--- engine stderr ({}):\n{}",
            self.stdout_path().display(),
            tail(&self.stdout_text(), 8000),
            self.stderr_path().display(),
            tail(&self.stderr_text(), 16000),
        )
    }

    /// Sends SIGTERM (a graceful shutdown request).
    pub fn sigterm(&mut self) {
        self.signal("TERM");
    }

    /// Sends SIGINT (what Ctrl-C sends).
    pub fn sigint(&mut self) {
        self.signal("INT");
    }

    /// Sends SIGKILL (a crash).
    pub fn sigkill(&mut self) {
        if self.poll_exit().is_none() {
            let _ = self.child.kill();
        }
    }

    /// Sends SIGSTOP: the whole process stands still (its heartbeats
    /// too), as in a long GC pause or a frozen VM, until [`Engine::sigcont`].
    pub fn sigstop(&mut self) {
        self.signal("STOP");
    }

    /// Sends SIGCONT after [`Engine::sigstop`].
    pub fn sigcont(&mut self) {
        self.signal("CONT");
    }

    fn signal(&mut self, name: &str) {
        if self.poll_exit().is_some() {
            return;
        }
        // Through the shell's `kill` builtin: no libc in this crate.
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{name} {}", self.child.id()))
            .status();
        if !matches!(status, Ok(s) if s.success()) && self.poll_exit().is_none() {
            panic!("could not send SIG{name} to the engine: {status:?}");
        }
    }

    /// The exit code if it has exited, without waiting.
    pub fn poll_exit(&mut self) -> Option<i32> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status.map(exit_code)
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.poll_exit().is_none()
    }

    /// Waits up to `timeout` for it to exit; its exit code (`128 + signal`
    /// when a signal ended it), or `None` if it is still running.
    pub async fn try_wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let ControlFlow::Break(code) = self.exit_by(deadline) {
                return code;
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    /// `Break` with its exit code once it has exited, or with `None` once
    /// `deadline` has passed; `Continue` until then.
    fn exit_by(&mut self, deadline: Instant) -> ControlFlow<Option<i32>> {
        match self.poll_exit() {
            Some(c) => ControlFlow::Break(Some(c)),
            None if Instant::now() >= deadline => ControlFlow::Break(None),
            None => ControlFlow::Continue(()),
        }
    }

    /// Waits up to `timeout` for it to exit and returns its exit code
    /// (`128 + signal` when a signal ended it). Panics, with its output,
    /// when it is still running then.
    pub async fn wait_exit(&mut self, timeout: Duration) -> i32 {
        match self.try_wait_exit(timeout).await {
            Some(c) => c,
            None => panic!(
                "the engine did not exit within {timeout:?}\n{}",
                self.output_report()
            ),
        }
    }

    /// Blocking version of [`Engine::try_wait_exit`], for code outside an
    /// async runtime.
    pub fn try_wait_exit_blocking(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let ControlFlow::Break(code) = self.exit_by(deadline) {
                return code;
            }
            std::thread::sleep(EXIT_POLL);
        }
    }

    /// Polls its standard error for up to `timeout` until it holds `text`;
    /// whether it did.
    pub async fn logs_within(&self, text: &str, timeout: Duration) -> bool {
        crate::wait_until(timeout, async || self.stderr_text().contains(text)).await
    }

    /// SIGKILL, then the exit it causes (code `128 + 9`) within 10 s.
    pub async fn kill9(&mut self) {
        self.sigkill();
        let code = self.wait_exit(Duration::from_secs(10)).await;
        assert_eq!(code, 128 + 9, "not ended by SIGKILL");
    }

    /// Waits up to `timeout` for it to fail and returns its standard error;
    /// panics, with its output, when it is still running then or exited 0.
    pub async fn wait_failure(&mut self, timeout: Duration) -> String {
        let code = self.wait_exit(timeout).await;
        assert_ne!(code, 0, "the engine exited 0\n{}", self.output_report());
        self.stderr_text()
    }

    /// SIGTERM, then waits up to `timeout` for the exit code; panics (with
    /// the output) if it does not exit.
    pub async fn stop(&mut self, timeout: Duration) -> i32 {
        self.sigterm();
        self.wait_exit(timeout).await
    }

    /// [`Engine::stop`], and the engine must exit 0; panics naming `what`
    /// (with the output) when it does not.
    pub async fn stop_clean(&mut self, timeout: Duration, what: &str) {
        let code = self.stop(timeout).await;
        assert_eq!(
            code,
            0,
            "{what}: SIGTERM did not stop the engine cleanly\n{}",
            self.output_report()
        );
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let running = self.poll_exit().is_none();
        if running {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "=== engine (pid {}, {}) ===\n{}",
                self.child.id(),
                if running {
                    "killed at drop".to_owned()
                } else {
                    format!("exited with {:?}", self.status.map(exit_code))
                },
                self.output_report()
            );
        }
    }
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Runs `cdc-engine <args...> --config <file with yaml>` to completion (at
/// most 60 s, then it is killed and this panics) and returns
/// `(exit code, stdout, stderr)`.
pub fn run_engine(args: &[&str], yaml: &str) -> (i32, String, String) {
    let mut engine = Engine::start_with(yaml, args, &[]);
    let code = match engine.try_wait_exit_blocking(Duration::from_secs(60)) {
        Some(c) => c,
        None => panic!(
            "cdc-engine {} did not finish within 60s\n{}",
            args.join(" "),
            engine.output_report()
        ),
    };
    (code, engine.stdout_text(), engine.stderr_text())
}

/// Runs `cdc-engine validate --config <file with yaml>` and returns
/// `(exit code, stdout, stderr)`.
pub fn run_engine_validate(yaml: &str) -> (i32, String, String) {
    run_engine(&["validate"], yaml)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the engine: prints its config, then waits for SIGTERM
    /// and exits with 7.
    fn fake_engine(yaml: &str) -> Engine {
        let script = r#"echo "config: $(cat "$1")"; echo started >&2
trap 'echo bye >&2; exit 7' TERM
while :; do sleep 0.05; done"#;
        // `sh -c SCRIPT --config FILE`: $0 = --config, $1 = FILE.
        Engine::spawn(Path::new("/bin/sh"), &["-c", script], yaml, &[])
    }

    #[tokio::test]
    async fn captures_output_and_stops_on_sigterm() {
        let mut e = fake_engine("name: x");
        assert!(e.config_path().starts_with(e.dir()));
        let started = crate::wait_until(Duration::from_secs(10), async || {
            e.stderr_text().contains("started")
        })
        .await;
        assert!(started, "{}", e.output_report());
        assert!(e.is_running());
        assert_eq!(e.try_wait_exit(Duration::from_millis(100)).await, None);
        e.sigterm();
        assert_eq!(e.wait_exit(Duration::from_secs(10)).await, 7);
        assert_eq!(e.stdout_text(), "config: name: x\n");
        assert!(e.stderr_text().contains("bye"));
        // Signals to an exited process are no-ops.
        e.sigterm();
        e.sigkill();
    }

    #[tokio::test]
    async fn sigkill_reports_signal_exit_code() {
        let mut e = fake_engine("");
        e.sigkill();
        assert_eq!(e.wait_exit(Duration::from_secs(10)).await, 128 + 9);
    }

    #[test]
    fn tail_respects_char_boundaries() {
        assert_eq!(tail("abc", 5), "abc");
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("abcé", 2), "é");
    }
}
