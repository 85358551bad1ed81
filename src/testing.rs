//! What every test waits with, declared once: the deadline `T` and `wait_for`. The unit tests
//! use it as `crate::testing`; the integration tests (`tests/it`) and the simulator's HTTP
//! tests include this file by `#[path]`, so no test file declares a deadline or a wait loop
//! of its own.

use std::future::Future;
use std::time::Duration;

/// How long a condition a test waits for may take before the test fails: generous, for a
/// machine busy with other builds, since a wait ends as soon as its condition holds and
/// only a failing test waits the whole of it (the most any test file had set for itself).
pub const T: Duration = Duration::from_secs(180);

/// Checks `check` every 50 ms until it returns `Some`, or panics naming `what` after
/// `timeout`. The deadline is on tokio's clock, so on a paused clock it moves with the test's
/// own advances.
pub async fn wait_for<V, F, Fut>(what: &str, timeout: Duration, mut check: F) -> V
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<V>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
