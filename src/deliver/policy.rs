//! When to try a failed delivery again, when to give up, and what time it is: pure functions
//! of their inputs (a clock is an argument), tested with tables.
//!
//! Stored times (`next_attempt_at`, `created_at`) are wall-clock times, because they must
//! survive a restart. The wall clock can jump (an NTP step, a VM resumed, an operator's
//! `date -s`), so while running, a delivery's age is measured on the monotonic clock, and a
//! jump of the wall clock is noticed by comparing both (see [`detect_jump`]).

use crate::notify::Retry;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The limits of `[notify]` that decide retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// A delivery still failing at this age is dead.
    pub max_age: Duration,
    /// The longest wait between two attempts; also the pace of retries after a refusal.
    pub max_backoff: Duration,
}

impl Policy {
    pub fn from_config(n: &crate::config::NotifyConfig) -> Policy {
        Policy {
            max_age: n.max_age,
            max_backoff: n.max_backoff,
        }
    }
}

/// Delay before the next attempt after `attempts` failures: 5 s (or the cap, if smaller)
/// doubling, capped, jittered +/-20% so a receiver that comes back is not hit by every retry
/// at once.
pub fn retry_delay(attempts: u32, cap: Duration, jitter: f64) -> Duration {
    let first = Duration::from_secs(5).min(cap);
    let base = first.saturating_mul(1u32 << attempts.saturating_sub(1).min(16));
    crate::domain::mul_saturating(base.min(cap), 0.8 + 0.4 * jitter.clamp(0.0, 1.0))
}

/// What to do with a delivery after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again after this long.
    RetryIn(Duration),
    /// Give up: the delivery is marked dead with its last error.
    Dead(DeathCause),
}

/// Why a delivery died; the log line and `recwatch alerts` lead with the last error itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathCause {
    /// Still failing at `notify.max_age`.
    MaxAge,
    /// The failure says no retry can help ([`Retry::Never`]).
    NeverRetry,
}

/// After `attempts` failed attempts (this one included) of a delivery `age` old, whose last
/// failure asks for `retry`. Only `max_age` (or a [`Retry::Never`]) ends a delivery; a refusal
/// is tried again every `max_backoff` until then, and the last try lands at `max_age`, not
/// after it.
pub fn after_failure(
    retry: Retry,
    attempts: u32,
    age: Duration,
    policy: &Policy,
    jitter: f64,
) -> AfterFailure {
    let cap = policy.max_backoff;
    if retry == Retry::Never {
        return AfterFailure::Dead(DeathCause::NeverRetry);
    }
    if age >= policy.max_age {
        return AfterFailure::Dead(DeathCause::MaxAge);
    }
    let delay = match retry {
        Retry::Backoff | Retry::After(None) => retry_delay(attempts, cap, jitter),
        // No jitter: "every max_backoff" is what the operator configured and reads in the log.
        Retry::Refused => cap,
        // At least a second (a "Retry-After: 0" loop would hammer the receiver), at most the
        // cap, so no stored next attempt lies further out than now + max_backoff.
        Retry::After(Some(d)) => d.clamp(Duration::from_secs(1).min(cap), cap),
        Retry::Never => unreachable!("handled above"),
    };
    AfterFailure::RetryIn(delay.min(policy.max_age - age))
}

/// A step of the wall clock larger than this, beyond what the monotonic clock saw pass, is a
/// jump. NTP slews far less (at most 0.5 ms/s), and a smaller step changes nothing that matters.
pub const JUMP_TOLERANCE: Duration = Duration::from_secs(2);

/// How far the wall clock jumped between two samples: the wall-clock time that passed minus
/// the monotonic time that passed, when that differs by more than `tolerance` (positive:
/// forward). Pure, so a jump is tested without changing the machine's clock.
pub fn detect_jump(
    mono_elapsed: Duration,
    wall_elapsed: chrono::Duration,
    tolerance: Duration,
) -> Option<chrono::Duration> {
    let mono = chrono::Duration::from_std(mono_elapsed).unwrap_or(chrono::Duration::MAX);
    let drift = wall_elapsed.checked_sub(&mono)?;
    let tolerance = chrono::Duration::from_std(tolerance).unwrap_or(chrono::Duration::MAX);
    (drift.abs() > tolerance).then_some(drift)
}

/// The wall clock the delivery scheduler reads: the system's, plus an offset a test sets to
/// make the clock jump (`Clock::shift`). Clones share the offset.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock, no offset.
    pub fn system() -> Clock {
        Clock::default()
    }

    pub fn now(&self) -> DateTime<Utc> {
        let offset = chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed));
        Utc::now()
            .checked_add_signed(offset)
            .unwrap_or_else(Utc::now)
    }

    /// Moves this clock by `by` (negative: backward), as an NTP step or `date -s` would.
    pub fn shift(&self, by: chrono::Duration) {
        self.offset_ms
            .fetch_add(by.num_milliseconds(), Ordering::Relaxed);
    }
}

/// A delivery's age on the monotonic clock: its wall-clock age when this process first saw it
/// (the best there is across a restart), plus the monotonic time since. A jump of the wall
/// clock while running neither ages nor rejuvenates it.
#[derive(Clone, Copy, Debug)]
pub struct Age {
    seen: tokio::time::Instant,
    age_then: Duration,
}

impl Age {
    /// Anchors a delivery created at `created` (wall clock) as seen now.
    pub fn anchor(created: DateTime<Utc>, wall_now: DateTime<Utc>) -> Age {
        Age {
            seen: tokio::time::Instant::now(),
            // A creation time in the future (the clock went back since) counts as new.
            age_then: (wall_now - created).to_std().unwrap_or(Duration::ZERO),
        }
    }

    pub fn now(&self) -> Duration {
        self.age_then.saturating_add(self.seen.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_table() {
        let s = Duration::from_secs;
        let cap = s(600);
        let cases = [
            ("first", 1, s(5)),
            ("second", 2, s(10)),
            ("fifth", 5, s(80)),
            ("capped", 20, s(600)),
            ("huge", u32::MAX, s(600)),
        ];
        for (name, attempts, want) in cases {
            assert_eq!(retry_delay(attempts, cap, 0.5), want, "{name}");
        }
        let ms = Duration::from_millis;
        assert_eq!(
            retry_delay(1, ms(300), 0.5),
            ms(300),
            "a small cap is also the first delay"
        );
        assert_eq!(retry_delay(3, ms(300), 0.5), ms(300));
        assert_eq!(retry_delay(1, cap, 0.0), ms(4000), "jitter -20%");
        assert_eq!(retry_delay(1, cap, 1.0), ms(6000), "jitter +20%");
    }

    #[test]
    fn after_failure_table() {
        let s = Duration::from_secs;
        let policy = Policy {
            max_age: s(86400),
            max_backoff: s(600),
        };
        let retry_in = |d| AfterFailure::RetryIn(d);
        let dead = AfterFailure::Dead(DeathCause::MaxAge);
        // (name, retry, attempts, age, want)
        let cases: Vec<(&str, Retry, u32, Duration, AfterFailure)> = vec![
            (
                "5xx early: back off",
                Retry::Backoff,
                1,
                s(0),
                retry_in(s(5)),
            ),
            (
                "5xx again: doubles",
                Retry::Backoff,
                3,
                s(60),
                retry_in(s(20)),
            ),
            (
                "5xx many times: capped",
                Retry::Backoff,
                30,
                s(3600),
                retry_in(s(600)),
            ),
            ("5xx at max age: dead", Retry::Backoff, 9, s(86400), dead),
            ("5xx past max age: dead", Retry::Backoff, 9, s(90000), dead),
            (
                "5xx near max age: the last try lands at max age",
                Retry::Backoff,
                30,
                s(86400 - 7),
                retry_in(s(7)),
            ),
            (
                "410 on the first attempt: retried every max_backoff, not dead",
                Retry::Refused,
                1,
                s(0),
                retry_in(s(600)),
            ),
            (
                "401 later: same pace",
                Retry::Refused,
                40,
                s(7200),
                retry_in(s(600)),
            ),
            (
                "refused at max age: dead",
                Retry::Refused,
                145,
                s(86400),
                dead,
            ),
            (
                "429 with Retry-After: honoured",
                Retry::After(Some(s(30))),
                1,
                s(0),
                retry_in(s(30)),
            ),
            (
                "429 asking for an hour: capped at max_backoff",
                Retry::After(Some(s(3600))),
                1,
                s(0),
                retry_in(s(600)),
            ),
            (
                "429 with Retry-After 0: at least a second",
                Retry::After(Some(s(0))),
                1,
                s(0),
                retry_in(s(1)),
            ),
            (
                "429 without a usable Retry-After: back off",
                Retry::After(None),
                2,
                s(0),
                retry_in(s(10)),
            ),
            (
                "never retry: dead at once",
                Retry::Never,
                1,
                s(0),
                AfterFailure::Dead(DeathCause::NeverRetry),
            ),
        ];
        for (name, retry, attempts, age, want) in cases {
            assert_eq!(
                after_failure(retry, attempts, age, &policy, 0.5),
                want,
                "{name}"
            );
        }
        // A cap below a second bounds Retry-After's floor too (tests run with 300 ms).
        let fast = Policy {
            max_age: s(60),
            max_backoff: Duration::from_millis(300),
        };
        assert_eq!(
            after_failure(Retry::After(Some(s(0))), 1, s(0), &fast, 0.5),
            retry_in(Duration::from_millis(300))
        );
    }

    #[test]
    fn detect_jump_table() {
        let s = Duration::from_secs;
        let cs = chrono::Duration::seconds;
        let tol = JUMP_TOLERANCE;
        // (name, monotonic elapsed, wall elapsed, want)
        let cases: &[(&str, Duration, chrono::Duration, Option<chrono::Duration>)] = &[
            ("clocks agree", s(60), cs(60), None),
            ("slew within tolerance", s(60), cs(61), None),
            ("a day forward", s(1), cs(86401), Some(cs(86400))),
            ("25 h forward", s(6), cs(25 * 3600 + 6), Some(cs(25 * 3600))),
            ("an hour back", s(10), cs(10 - 3600), Some(cs(-3600))),
            ("a day back", s(0), cs(-86400), Some(cs(-86400))),
            ("wall stood still for a minute", s(60), cs(0), Some(cs(-60))),
            ("just past tolerance", s(1), cs(4), Some(cs(3))),
        ];
        for (name, mono, wall, want) in cases {
            assert_eq!(detect_jump(*mono, *wall, tol), *want, "{name}");
        }
    }

    #[test]
    fn clock_shift_moves_now_and_clones_share_it() {
        let clock = Clock::system();
        let other = clock.clone();
        let before = Utc::now();
        clock.shift(chrono::Duration::days(1));
        let diff = other.now() - before;
        assert!(
            diff >= chrono::Duration::days(1)
                && diff < chrono::Duration::days(1) + chrono::Duration::minutes(5),
            "{diff}"
        );
        clock.shift(chrono::Duration::days(-2));
        assert!(other.now() < before);
    }

    #[tokio::test(start_paused = true)]
    async fn age_follows_the_monotonic_clock_not_the_wall() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let age = Age::anchor(t0, t0 + chrono::Duration::seconds(30));
        assert_eq!(age.now(), Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(age.now(), Duration::from_secs(40));
        // Created "in the future" (the wall clock went back): new, not negative.
        let age = Age::anchor(t0 + chrono::Duration::hours(1), t0);
        assert_eq!(age.now(), Duration::ZERO);
    }
    /// A cap or max_age past what a calendar holds does not panic: it saturates.
    #[test]
    fn absurd_durations_saturate_table() {
        let s = Duration::from_secs;
        let cases = [
            (
                "cap Duration::MAX: the doubling stops at 2^16 first delays",
                40,
                Duration::MAX,
                s(5 * 65536 * 12 / 10),
            ),
            (
                "a cap near Duration::MAX, jittered up",
                40,
                Duration::MAX - s(1),
                s(5 * 65536 * 12 / 10),
            ),
            (
                "first delay at a small cap",
                1,
                s(2),
                Duration::from_millis(2400),
            ),
        ];
        for (name, attempts, cap, want) in cases {
            assert_eq!(retry_delay(attempts, cap, 1.0), want, "{name}");
        }
        let policy = Policy {
            max_age: Duration::MAX,
            max_backoff: Duration::MAX,
        };
        assert!(matches!(
            after_failure(Retry::Refused, 1, s(10), &policy, 0.5),
            AfterFailure::RetryIn(d) if d == Duration::MAX - s(10)
        ));
    }
}
