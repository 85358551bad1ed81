//! Grouping (`notify.group_wait`): when a chat or e-mail lane may send what is due.
//!
//! The first alert after a quiet spell goes out at once: grouping must not slow the first
//! word of trouble. Whatever falls due after it, within `group_wait` of that release, waits
//! for the window's end and then goes out together, as one message per vendor size limit;
//! while the vendor's pace (see `pace`) has no token, alerts keep gathering. What waits is
//! in the outbox (pending deliveries), not in memory, and so is the time of the last release
//! (`group_releases`, written before the group is sent): a restart, or another instance
//! taking over, loses nothing and continues the window ([`restored_release`]) instead of
//! sending what was gathered at once.

use chrono::{DateTime, Utc};
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

/// The last release on this process's monotonic clock, from the wall time it was stored at
/// (`released`, maybe by another instance) and the wall time `now_wall` at monotonic `now`.
/// None when the window it opened is over; a release in the future (a clock that went back,
/// another machine's clock ahead) counts as one now, so the window is never longer than
/// `group_wait`.
pub fn restored_release(
    released: DateTime<Utc>,
    now_wall: DateTime<Utc>,
    now: Instant,
    group_wait: Duration,
) -> Option<Instant> {
    let elapsed = (now_wall - released).to_std().unwrap_or(Duration::ZERO);
    if elapsed >= group_wait {
        return None;
    }
    // Only a process younger than `elapsed` has no Instant that early: then it counts as now.
    Some(now.checked_sub(elapsed).unwrap_or(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn restored_release_table() {
        let now = Instant::now() + Duration::from_secs(3600);
        let wall: DateTime<Utc> = "2026-11-28T10:00:00Z".parse().unwrap();
        let s = Duration::from_secs;
        let ago = |secs: i64| wall - chrono::Duration::seconds(secs);
        // (name, released at, want)
        let cases = [
            (
                "released 4 s ago: 6 s of the window left",
                ago(4),
                Some(now - s(4)),
            ),
            ("released just now", ago(0), Some(now)),
            ("the window is over", ago(10), None),
            ("long ago", ago(86_400), None),
            ("in the future: counts as now", ago(-30), Some(now)),
        ];
        for (name, released, want) in cases {
            assert_eq!(restored_release(released, wall, now, s(10)), want, "{name}");
        }
        // With the window it continues: what gathers goes at the original window's end.
        let last = restored_release(ago(4), wall, now, s(10));
        assert_eq!(release_at(last, s(10), now, now), now + s(6));
    }

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
