//! JSON lines appended to a file, fsynced before a batch counts as durable.

use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use cdc_core::encode::DebeziumJson;
use cdc_core::{Batch, Sink, SinkError};
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Appends each change as one JSON line to a file. `write_batch` returns
/// only after the data is written and `fsync`ed (`sync_data`): the lines of
/// a batch (or of a group of batches that queued up, see
/// [`Sink::write_batches`]) go out in one `write` and one `fsync`, on one
/// blocking task.
///
/// Opening the file repairs a torn tail: if the process died in the middle
/// of a write, the partial last line is cut off (its batch was never
/// acknowledged, so it is delivered again). A write that fails midway is
/// repaired the same way before the retry: the file is cut back to its
/// length after the last successful sync, so the retried batch never
/// follows half a line. A file the sink creates is made durable in its
/// directory too (the directory is synced).
pub struct FileSink {
    path: PathBuf,
    encoder: DebeziumJson,
    /// `None` only while a write is in flight on the blocking pool (or
    /// after that task panicked).
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    /// The file's length after the last successful sync: whole lines of
    /// acknowledged batches only.
    durable_len: u64,
}

impl FileSink {
    /// Opens (creating if needed, with parent directories) `path` for appending.
    pub async fn open(path: &Path, name: &str) -> Result<Self, SinkError> {
        let err = |what: &str, e: std::io::Error| {
            SinkError::fatal(format!("{what} {}", path.display())).with_source(e)
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| err("cannot create the directory of", e))?;
        }
        let existed = tokio::fs::try_exists(path).await.unwrap_or(false);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)
            .await
            .map_err(|e| err("cannot open", e))?;
        if !existed {
            sync_directory_of(path)
                .await
                .map_err(|e| err("cannot sync the directory of", e))?;
        }
        repair_torn_tail(&mut file)
            .await
            .map_err(|e| err("cannot repair the end of", e))?;
        let durable_len = file
            .seek(SeekFrom::End(0))
            .await
            .map_err(|e| err("cannot seek in", e))?;
        Ok(Self {
            path: path.to_owned(),
            encoder: DebeziumJson::new(name),
            file: Some(file.into_std().await),
            buf: Vec::with_capacity(64 * 1024),
            durable_len,
        })
    }
}

/// `fsync` of the directory holding `path`, so that a file just created
/// there survives a power loss with it.
async fn sync_directory_of(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(std::io::Error::other)?
}

/// Truncates the file after its last newline, if it does not end with one.
async fn repair_torn_tail(file: &mut File) -> std::io::Result<()> {
    let len = file.metadata().await?.len();
    if len == 0 {
        return Ok(());
    }
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start)).await?;
        file.read_exact(&mut chunk[..n]).await?;
        if end == len && chunk[n - 1] == b'\n' {
            return Ok(());
        }
        if let Some(pos) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            let keep = start + pos as u64 + 1;
            tracing::warn!(
                dropped_bytes = len - keep,
                "file sink: cutting off a partial last line left by a crash"
            );
            file.set_len(keep).await?;
            return file.sync_all().await;
        }
        if start == 0 {
            tracing::warn!(
                dropped_bytes = len,
                "file sink: the file holds only a partial line; truncating it"
            );
            file.set_len(0).await?;
            return file.sync_all().await;
        }
        end = start;
    }
}

impl FileSink {
    /// Runs `op` on the file on the blocking pool, handing the file (and
    /// the buffer) there and back.
    async fn blocking<F, T>(&mut self, what: &str, op: F) -> Result<T, SinkError>
    where
        F: FnOnce(&mut std::fs::File, &[u8]) -> std::io::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let Some(mut file) = self.file.take() else {
            return Err(SinkError::fatal(format!(
                "{} is unusable after an earlier failure",
                self.path.display()
            )));
        };
        let buf = std::mem::take(&mut self.buf);
        let joined = tokio::task::spawn_blocking(move || {
            let result = op(&mut file, &buf);
            (file, buf, result)
        })
        .await;
        match joined {
            Ok((file, buf, result)) => {
                self.file = Some(file);
                self.buf = buf;
                // A failed write may have left part of the batch in the
                // file; the next write cuts it off first.
                result.map_err(|e| {
                    if e.kind() == std::io::ErrorKind::InvalidInput {
                        // EINVAL: the file does not support synchronization
                        // (a device or special file); no retry can make it
                        // durable.
                        SinkError::fatal(format!(
                            "{} cannot be synced to disk (it is not a regular file), so nothing written to it can be durable",
                            self.path.display()
                        ))
                        .with_source(e)
                    } else {
                        SinkError::retryable(format!("{what} {}", self.path.display()))
                            .with_source(e)
                    }
                })
            }
            Err(e) => Err(SinkError::fatal(format!(
                "{what} {}: the I/O task failed: {e}",
                self.path.display()
            ))),
        }
    }
}

impl Sink for FileSink {
    async fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        Sink::write_batches(self, &[batch]).await
    }

    /// One `write` and one `fdatasync` for the whole group: the sync's
    /// fixed cost (milliseconds on most disks, whatever the size) is what
    /// bounds a file sink's rate, so it is paid once per group.
    async fn write_batches(&mut self, batches: &[&Batch]) -> Result<(), SinkError> {
        self.buf.clear();
        for batch in batches {
            super::jsonl::render_batch(&self.encoder, batch, &mut self.buf);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let durable_len = self.durable_len;
        self.durable_len = self
            .blocking("writing to", move |file, buf| {
                // Whatever an earlier failed write left after the last
                // acknowledged line goes: the retried batch follows a
                // whole line.
                if file.seek(SeekFrom::End(0))? != durable_len {
                    tracing::warn!(
                        "file sink: cutting off what a failed write left before writing again"
                    );
                    file.set_len(durable_len)?;
                    file.seek(SeekFrom::Start(durable_len))?;
                }
                #[cfg(feature = "failpoints")]
                fail::fail_point!("sink::file_partial_write", |_| {
                    file.write_all(&buf[..buf.len() / 2])?;
                    Err(std::io::Error::other(
                        "injected by the failpoint sink::file_partial_write",
                    ))
                });
                file.write_all(buf)?;
                file.sync_data()?;
                Ok(durable_len + buf.len() as u64)
            })
            .await?;
        Ok(())
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        if self.file.is_none() {
            return Ok(());
        }
        self.blocking("syncing", |file, _| file.sync_all()).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_cuts_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.jsonl");
        tokio::fs::create_dir_all(path.parent().unwrap())
            .await
            .unwrap();
        tokio::fs::write(&path, b"{\"a\":1}\n{\"a\":2}\n{\"a\":")
            .await
            .unwrap();
        let _sink = FileSink::open(&path, "t").await.unwrap();
        assert_eq!(
            tokio::fs::read(&path).await.unwrap(),
            b"{\"a\":1}\n{\"a\":2}\n"
        );

        tokio::fs::write(&path, b"partial").await.unwrap();
        let _sink = FileSink::open(&path, "t").await.unwrap();
        assert_eq!(tokio::fs::read(&path).await.unwrap(), b"");

        tokio::fs::write(&path, b"{}\n").await.unwrap();
        let _sink = FileSink::open(&path, "t").await.unwrap();
        assert_eq!(tokio::fs::read(&path).await.unwrap(), b"{}\n");
    }
}
