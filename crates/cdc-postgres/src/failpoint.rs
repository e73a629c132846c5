//! Named points where fault tests stop a task deterministically instead of
//! sleeping and hoping to hit a moment.
//!
//! They exist only in builds with the `failpoints` feature (the test build
//! of the engine); without it [`failpoint!`] expands to nothing. A process
//! built with it reads the `FAILPOINTS` environment variable at start
//! (the `fail` crate's syntax, e.g.
//! `FAILPOINTS='snapshot::after_mark_done=2*off->return'`). The action
//! `return` makes the task that reaches the point wait there forever
//! while the rest of the process carries on (its heartbeats, its other
//! readers, its sinks); the test then kills or inspects the process.
//! `sleep(ms)`, `delay(ms)`, `print` and `panic` work as the `fail` crate
//! defines them.
//!
//! The points:
//!
//! | name | where |
//! |---|---|
//! | `snapshot::after_mark_done` | after a chunk whose rows are durable was marked done |

/// Stops here when the named failpoint is configured (see the module
/// documentation); nothing without the `failpoints` feature.
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::failpoint::reached($name).await;
    };
}
pub(crate) use failpoint;

/// Evaluates the failpoint `name`; with the action `return`, never
/// returns.
#[cfg(feature = "failpoints")]
pub(crate) async fn reached(name: &str) {
    if fail::eval(name, |_| ()).is_some() {
        tracing::warn!(failpoint = name, "failpoint reached: this task stops here");
        std::future::pending::<()>().await;
    }
}
