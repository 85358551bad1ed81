//! The request budget every poll goes through: `api.rate_limit` requests per second, spaced
//! evenly and never more than that in any [`WINDOW`], with a pause that holds every request
//! (throttling, refused credentials); and the back-off delays the dispatcher schedules with.

use crate::domain::mul_saturating;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The window over which `rate_limit` is enforced. A little over a second, so requests that
/// arrive a few milliseconds closer together than they were sent still fit in any one second
/// at the server.
const WINDOW: Duration = Duration::from_millis(1020);

/// A token budget of `rate` requests per second: requests are spaced at least `1/rate`
/// apart, and no `WINDOW` ever holds more than `rate` of them. A pause (throttling, refused
/// credentials) holds every request.
pub struct Budget {
    state: Mutex<BudgetState>,
}

struct BudgetState {
    rate: u32,
    recent: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

/// The timer's resolution. Spacing requests closer than this would make every request wait a
/// whole timer tick (a 1 ms floor: 1,000 requests/s however high the budget), so the spacing
/// may be short by up to this much; the per-window count is never exceeded.
const SPACING_SLACK: Duration = Duration::from_millis(1);

impl BudgetState {
    fn ready_at(&self, now: Instant) -> Instant {
        let mut at = now;
        if let Some(p) = self.paused_until {
            at = at.max(p);
        }
        // `recent` is in time order: the ones still inside the window are at the back.
        let first = self
            .recent
            .partition_point(|t| now.duration_since(*t) >= WINDOW);
        let inside = self.recent.len() - first;
        if let Some(last) = self.recent.back().filter(|_| inside > 0) {
            let spacing = Duration::from_secs(1) / self.rate;
            at = at.max((*last + spacing).checked_sub(SPACING_SLACK).unwrap_or(now));
        }
        let rate = self.rate as usize;
        if inside >= rate {
            at = at.max(self.recent[self.recent.len() - rate] + WINDOW);
        }
        at
    }
}

impl Budget {
    pub fn new(rate: u32) -> Budget {
        Budget {
            state: Mutex::new(BudgetState {
                rate: rate.max(1),
                recent: VecDeque::new(),
                paused_until: None,
            }),
        }
    }

    pub fn set_rate(&self, rate: u32) {
        self.state.lock().expect("budget lock").rate = rate.max(1);
    }

    /// Holds every request until `until` (extends, never shortens, a pause).
    pub fn pause_until(&self, until: Instant) {
        let mut s = self.state.lock().expect("budget lock");
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
        }
    }

    pub fn clear_pause(&self) {
        self.state.lock().expect("budget lock").paused_until = None;
    }

    pub fn paused_until(&self) -> Option<Instant> {
        self.state
            .lock()
            .expect("budget lock")
            .paused_until
            .filter(|p| *p > Instant::now())
    }

    /// When a request could go, without taking the slot.
    pub fn ready_at(&self, now: Instant) -> Instant {
        self.state.lock().expect("budget lock").ready_at(now)
    }

    /// Takes a slot and returns `None` if a request may go now, or says when it may.
    pub fn try_take(&self, now: Instant) -> Option<Instant> {
        let mut s = self.state.lock().expect("budget lock");
        while s
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            s.recent.pop_front();
        }
        let at = s.ready_at(now);
        if at > now {
            return Some(at);
        }
        s.paused_until = None;
        s.recent.push_back(now);
        None
    }

    /// Waits for a slot and takes it. Returns how long it waited.
    pub async fn acquire(&self) -> Duration {
        let start = Instant::now();
        while let Some(at) = self.try_take(Instant::now()) {
            tokio::time::sleep_until(at).await;
        }
        let waited = start.elapsed();
        self.record_wait(waited);
        waited
    }

    /// Counts time a request spent waiting for the budget, for metrics (the histogram's
    /// `_sum` is the total wait).
    pub(super) fn record_wait(&self, waited: Duration) {
        metrics::histogram!("recwatch_rate_budget_wait_seconds").record(waited.as_secs_f64());
    }
}

/// Delay before re-polling a job that failed `failures` times in a row: its interval,
/// doubling per failure, capped at the larger of the interval and 5 minutes, jittered by
/// +/-20% so failed jobs do not return in step. `jitter` is in [0, 1).
pub fn failure_delay(interval: Duration, failures: u32, jitter: f64) -> Duration {
    let cap = interval.max(Duration::from_secs(300));
    let exp = failures.saturating_sub(1).min(20);
    let base = interval.saturating_mul(1u32 << exp.min(16)).min(cap);
    mul_saturating(base, 0.8 + 0.4 * jitter.clamp(0.0, 1.0))
}

/// The whole poller's pause after `streak` throttled answers in a row: `base`, doubling,
/// capped at a minute, jittered by +/-20%.
pub fn throttle_pause(base: Duration, streak: u32, jitter: f64) -> Duration {
    let exp = streak.saturating_sub(1).min(8);
    mul_saturating(
        base.saturating_mul(1 << exp).min(Duration::from_secs(60)),
        0.8 + 0.4 * jitter.clamp(0.0, 1.0),
    )
}

/// `now + d`, saturating about 30 years ahead instead of panicking on an absurd duration (an
/// interval or back-off from the config): a poll that far off is "never" either way.
pub fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_delay_table() {
        let s = Duration::from_secs;
        let cases = [
            ("first failure is one interval", s(30), 1, 0.5, s(30)),
            ("doubles", s(30), 2, 0.5, s(60)),
            ("doubles again", s(30), 3, 0.5, s(120)),
            ("capped at 5 minutes", s(30), 10, 0.5, s(300)),
            (
                "huge streak does not overflow",
                s(30),
                u32::MAX,
                0.5,
                s(300),
            ),
            ("long interval caps at itself", s(600), 4, 0.5, s(600)),
            (
                "interval of Duration::MAX saturates",
                Duration::MAX,
                3,
                1.0,
                Duration::MAX,
            ),
            ("jitter low", s(30), 1, 0.0, s(24)),
            ("jitter high", s(30), 1, 1.0, s(36)),
        ];
        for (name, interval, failures, jitter, want) in cases {
            assert_eq!(failure_delay(interval, failures, jitter), want, "{name}");
        }
    }

    #[test]
    fn throttle_pause_table() {
        let s = Duration::from_secs;
        let cases = [
            ("first", 1, 0.5, s(3)),
            ("second doubles", 2, 0.5, s(6)),
            ("capped at a minute", 30, 0.5, s(60)),
        ];
        for (name, streak, jitter, want) in cases {
            assert_eq!(throttle_pause(s(3), streak, jitter), want, "{name}");
        }
    }

    /// Config values that would overflow an `Instant` or a `Duration` saturate instead.
    #[test]
    fn absurd_durations_saturate_table() {
        let now = Instant::now();
        let far = Duration::from_secs(30 * 365 * 86400);
        let cases = [
            (
                "small",
                Duration::from_secs(30),
                now + Duration::from_secs(30),
            ),
            ("Duration::MAX", Duration::MAX, now + far),
            ("2^64-1 s", Duration::from_secs(u64::MAX), now + far),
        ];
        for (name, d, want) in cases {
            assert_eq!(later(now, d), want, "{name}");
        }
        assert_eq!(
            throttle_pause(Duration::MAX, u32::MAX, 1.0),
            Duration::from_secs(72),
            "a huge throttle back-off is capped at a minute (+20%)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn budget_never_lets_a_window_hold_more_than_the_rate() {
        let budget = Budget::new(10);
        let mut sent = Vec::new();
        let start = Instant::now();
        for _ in 0..55 {
            budget.acquire().await;
            sent.push(Instant::now());
        }
        for (i, t) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
                .count();
            assert!(
                in_window <= 10,
                "{in_window} requests within a second starting at request {i}"
            );
        }
        // And it is not needlessly slow: 55 requests at ~10/s take ~5.5 s.
        let took = start.elapsed();
        assert!(took < Duration::from_millis(5700), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn ready_at_is_when_a_slot_can_be_taken() {
        let budget = Budget::new(5);
        for _ in 0..40 {
            let now = Instant::now();
            let at = budget.ready_at(now);
            if at > now {
                assert!(budget.try_take(now).is_some(), "not ready before ready_at");
                tokio::time::sleep_until(at).await;
            }
            assert!(
                budget.try_take(Instant::now()).is_none(),
                "ready at ready_at"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_request() {
        let budget = Budget::new(100);
        budget.pause_until(Instant::now() + Duration::from_secs(3));
        let start = Instant::now();
        budget.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(3));
    }
}
