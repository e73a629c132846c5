//! [`wait_streaming`]: waiting until the engine streams from its slot.

use std::time::Duration;

use crate::{wait_until, Engine, TestDb};

/// Waits until `engine` streams from `slot`: a walsender holds the slot
/// ([`TestDb::slot_active`], not merely the session still creating it)
/// and the engine logged that streaming started. A change committed
/// before that may fall before the slot's consistent point and never be
/// streamed. Panics, with the engine's output, when the engine exits
/// first or `timeout` passes.
pub async fn wait_streaming(db: &TestDb, engine: &mut Engine, slot: &str, timeout: Duration) {
    let streaming = wait_until(timeout, async || {
        !engine.is_running()
            || (engine.stderr_text().contains("streaming started") && db.slot_active(slot).await)
    })
    .await;
    assert!(
        streaming && engine.is_running(),
        "the engine did not start streaming from slot {slot} within {timeout:?} (running: {})\n{}",
        engine.is_running(),
        engine.output_report()
    );
}
