//! Grouping (`notify.group_wait`): when a chat or e-mail lane may send what is due.
//!
//! The first alert after a quiet spell goes out at once: grouping must not slow the first
//! word of trouble. Whatever falls due after it, within `group_wait` of that release, waits
//! for the window's end and then goes out together, as one message per vendor size limit;
//! while the vendor's pace (see `pace`) has no token, alerts keep gathering. What waits is
//! in the outbox (pending deliveries), not in memory: a restart loses nothing, it only
//! sends the gathered alerts at once.

use std::time::Duration;
use tokio::time::Instant;

/// The most deliveries one release takes from the outbox; more wait for the next.
pub const MAX_GROUP: usize = 500;

/// When a lane whose last release was at `last` may release again: not before the window
/// that release opened has passed, nor before the pace has a token (`pace_free`), nor
/// before `now`. With no release yet (or after a restart), at once.
pub fn release_at(
    last: Option<Instant>,
    group_wait: Duration,
    pace_free: Instant,
    now: Instant,
) -> Instant {
    let window_end = last.map_or(now, |t| t + group_wait);
    now.max(window_end).max(pace_free)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn release_table() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // (name, last release, pace free at, now, want)
        let cases = [
            ("first ever: at once", None, t0, t0 + s(5), t0 + s(5)),
            (
                "quiet spell over: at once",
                Some(t0),
                t0,
                t0 + s(11),
                t0 + s(11),
            ),
            (
                "within the window: at its end",
                Some(t0),
                t0,
                t0 + s(3),
                t0 + s(10),
            ),
            (
                "window over but no token yet: when the token comes",
                Some(t0),
                t0 + s(40),
                t0 + s(12),
                t0 + s(40),
            ),
            (
                "first ever but no token: when it comes",
                None,
                t0 + s(2),
                t0,
                t0 + s(2),
            ),
        ];
        for (name, last, pace_free, now, want) in cases {
            assert_eq!(release_at(last, s(10), pace_free, now), want, "{name}");
        }
    }
}
