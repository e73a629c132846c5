//! Polling until something holds: [`wait_until`] and [`wait_for`].

use std::time::{Duration, Instant};

/// How often [`wait_until`] and [`wait_for`] poll.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `poll` every 100 ms until it returns `true` (then returns `true`)
/// or `timeout` has passed (then returns `false`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use cdc_sink_conformance::poll::wait_until;
/// let mut n = 0;
/// let ok = wait_until(Duration::from_secs(30), async || { n += 1; n >= 3 }).await;
/// assert!(ok, "expected 3 polls");
/// # }
/// ```
pub async fn wait_until<F>(timeout: Duration, mut poll: F) -> bool
where
    F: AsyncFnMut() -> bool,
{
    wait_for(timeout, async || poll().await.then_some(()))
        .await
        .is_some()
}

/// Polls `poll` every 100 ms until it returns `Some` (then returns it) or
/// `timeout` has passed (then returns `None`). Always polls at least once.
pub async fn wait_for<T, F>(timeout: Duration, mut poll: F) -> Option<T>
where
    F: AsyncFnMut() -> Option<T>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = poll().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_helpers() {
        let mut n = 0;
        assert!(
            wait_until(Duration::from_secs(5), async || {
                n += 1;
                n >= 3
            })
            .await
        );
        assert_eq!(n, 3);
        let none: Option<()> = wait_for(Duration::from_millis(150), async || None).await;
        assert!(none.is_none());
    }
}
