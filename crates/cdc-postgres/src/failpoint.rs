//! Named points where fault tests stop a task deterministically instead of
//! sleeping and hoping to hit a moment.
//!
//! They exist only in builds with the `failpoints` feature (the test build
//! of the engine); without it [`failpoint!`] expands to nothing. A process
//! built with it reads the `FAILPOINTS` environment variable at start
//! (the `fail` crate's syntax, e.g.
//! `FAILPOINTS='snapshot::after_mark_done=2*off->return'`). At a
//! [`failpoint!`], the action `return` makes the task that reaches it wait
//! there forever while the rest of the process carries on (its heartbeats,
//! its other readers, its sinks), and `return(MS)` makes it wait `MS`
//! milliseconds without blocking its thread. At a [`failpoint_err!`],
//! `return` makes the step fail with a retryable I/O error, as a dropped
//! connection would. `sleep(ms)`, `delay(ms)`, `print` and `panic` work as
//! the `fail` crate defines them.
//!
//! The points:
//!
//! | name | kind | where |
//! |---|---|---|
//! | `snapshot::after_mark_done` | stop | after a chunk whose rows are durable was marked done |
//! | `snapshot::reader_before_claim` | stop | before a reader claims its next chunk |
//! | `snapshot::reader_after_first_rows` | error | after a reader handed over the first rows of a chunk |
//! | `snapshot::reader_mid_chunk` | stop | after a reader handed over the first rows of a chunk, its read still open |
//! | `snapshot::heartbeat` | stop | before the heartbeat renews this instance's claims |
//! | `stream::before_describe` | stop | while streaming: a Relation message arrived, before its table is described on the catalog connection |
//! | `incremental::before_high_mark` | stop | an incremental snapshot chunk was read (its transaction committed), before its high watermark's transaction (the stream waits too) |
//! | `sink::before_write_reads` | stop | in the pipeline (`cdc-pipeline`'s sink workers): before a sink writes a group of batches holding snapshot reads |
//! | `sink::file_partial_write` | error | in the engine's file sink: half of a write reaches the file, then it fails with an I/O error |
//! | `sink::before_ack` | stop | in the pipeline (`cdc-pipeline`'s sink workers): after a sink wrote a group of batches with events, before they count as durable |

/// Stops here when the named failpoint is configured (see the module
/// documentation); nothing without the `failpoints` feature.
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::failpoint::reached($name).await;
    };
}
pub(crate) use failpoint;

/// Returns a retryable error from the enclosing function (or async block)
/// when the named failpoint is configured with `return`; nothing without
/// the `failpoints` feature.
macro_rules! failpoint_err {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        if fail::eval($name, |_| ()).is_some() {
            return Err($crate::failpoint::injected($name));
        }
    };
}
pub(crate) use failpoint_err;

/// Evaluates the failpoint `name`: `return(MS)` waits `MS` ms, `return`
/// never returns.
#[cfg(feature = "failpoints")]
pub async fn reached(name: &str) {
    if let Some(arg) = fail::eval(name, |arg| arg) {
        match arg.as_deref().map(str::parse::<u64>) {
            Some(Ok(ms)) => {
                tracing::warn!(failpoint = name, ms, "failpoint reached: waiting");
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            _ => {
                tracing::warn!(failpoint = name, "failpoint reached: this task stops here");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The error a [`failpoint_err!`] injects: an I/O error, retryable.
#[cfg(feature = "failpoints")]
pub(crate) fn injected(name: &str) -> crate::PgError {
    crate::PgError::sql(
        format!("failpoint {name}"),
        sqlx::Error::Io(std::io::Error::other("injected by a failpoint")),
    )
}
