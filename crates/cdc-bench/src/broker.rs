//! A fresh tansu broker (in-memory storage) for each Kafka run, so that
//! earlier runs' messages do not pile up in its memory.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

use crate::proc_stat::Tracked;
use crate::runner::terminate;

/// A running broker.
pub struct Broker {
    child: Child,
    /// Its CPU and memory.
    pub tracked: Tracked,
}

impl Broker {
    /// Starts tansu on 127.0.0.1:`port` from an empty working directory.
    pub async fn start(bin: &Path, port: u16, dir: &Path) -> Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("tansu.log"))?;
        let mut cmd = Command::new(bin);
        cmd.current_dir(dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("starting tansu")?;
        let pid = child.id().context("tansu has no pid")?;
        let start = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!("tansu exited with {status}");
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!("tansu did not listen on {port} within 20s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            child,
            tracked: Tracked::new(pid),
        })
    }

    /// Stops it.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            terminate(pid);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}
