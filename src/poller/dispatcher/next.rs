//! Which poll goes next, and when, as pure functions of what the dispatcher sees:
//! - [`next`], at one instant ([`Look`]: the round's next due time, the lane's front, the
//!   budget's next slot, whether a poll may start at all). The dispatcher's loop gathers a
//!   `Look`, sleeps until the time `next` names, and on waking looks again and starts the poll
//!   it picks. Between the lane and the round, `next` defers to `hints::decide` (joiners, then
//!   hints, within the lane's share while the round is due);
//! - [`after_poll`], when a poll's answer came back ([`Answered`]): the job's next poll, its
//!   failures in a row, and whether every poll pauses (throttled, credentials refused).
//!
//! The loop only gathers, applies and logs; it decides nothing itself.

use super::super::budget::{failure_delay, later, throttle_pause};
use super::super::health::AUTH_FAILURES_BEFORE_BACKOFF;
use super::super::hints::{Candidate, Slot, decide};
use std::time::Duration;
use tokio::time::Instant;

/// What the dispatcher sees when it decides.
#[derive(Clone, Copy, Debug)]
pub(super) struct Look<'a> {
    pub(super) now: Instant,
    /// Whether a poll may start at all: not stopping, the leadership's fence valid, the API's
    /// credentials shown good by an answer (until then one poll at a time), a permit free.
    pub(super) may_start: bool,
    /// When the round's next job is due (the schedule's head), if any job is scheduled.
    pub(super) round_at: Option<Instant>,
    /// The lane's front (see `Lane::front`): joiners, then hinted jobs, each oldest first.
    pub(super) lane: &'a [Candidate],
    /// When the next re-poll after a job's end joins the lane, if one is to come.
    pub(super) follow_up: Option<Instant>,
    /// The lane's polls in the last second, and how many it may take while the round is due.
    pub(super) lane_used: usize,
    pub(super) share: usize,
    /// When the budget has a slot (at or before `now`: it has one now).
    pub(super) budget_at: Instant,
}

/// What the dispatcher does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Start a poll now: the lane's candidate at this index, or the round's next job
    /// (`Slot::Hinted` or `Slot::Round`).
    Poll(Slot),
    /// Nothing can start before this instant: look again then.
    At(Instant),
    /// Nothing to start until something changes (a poll's report, a hint, a reload, ...).
    Idle,
}

/// The next poll, and when. Nothing starts while `may_start` is false; otherwise the earliest
/// of the round's due time, a ready lane job's `not_before` and the next re-poll, but never
/// before the budget's next slot. Once that time has come, `decide` says whether the lane or
/// the round takes the slot.
pub(super) fn next(look: &Look) -> Next {
    if !look.may_start {
        return Next::Idle;
    }
    let lane_at = look
        .lane
        .iter()
        .filter(|c| c.ready)
        .map(|c| c.not_before)
        .min();
    let Some(due) = [look.round_at, lane_at, look.follow_up]
        .into_iter()
        .flatten()
        .min()
    else {
        return Next::Idle;
    };
    let at = due.max(look.budget_at);
    if at > look.now {
        return Next::At(at);
    }
    let round_due = look.round_at.is_some_and(|t| t <= look.now);
    match decide(look.now, look.lane, look.lane_used, look.share, round_due) {
        // Only a re-poll was due: it joins the lane before the next look (the dispatcher's
        // `lane_step`), which then finds it.
        Slot::Nothing => Next::Idle,
        slot => Next::Poll(slot),
    }
}

/// How a poll ended, as far as scheduling cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// An answer that says how the job is.
    Answered,
    /// 429 (APIG.0308): the gateway's rate limit, for every poll.
    Throttled,
    /// The credentials were refused (or the clock is off): for every poll too.
    Refused,
    /// Anything else: this job's poll failed.
    Failed,
}

/// What [`after_poll`] decides from.
#[derive(Clone, Copy, Debug)]
pub(super) struct Answered {
    pub(super) now: Instant,
    pub(super) outcome: Outcome,
    /// The job's interval (its group's share of the budget applied).
    pub(super) interval: Duration,
    /// The job's failed polls in a row before this one.
    pub(super) failures: u32,
    /// It shows STOPPED and `poll.stop_after_terminal` is on.
    pub(super) done: bool,
    /// It still holds outcomes the database has not taken.
    pub(super) owes: bool,
    /// `api.throttle_backoff` and throttled answers in a row, this one included.
    pub(super) throttle_backoff: Duration,
    pub(super) throttle_streak: u32,
    /// `api.auth_backoff` and refused answers in a row, this one included.
    pub(super) auth_backoff: Duration,
    pub(super) auth_streak: u32,
    /// A uniform draw in [0, 1): spreads back-offs so jobs and instances do not retry together.
    pub(super) jitter: f64,
}

/// Why every poll stops for a while.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pause {
    Throttled(Duration),
    Refused(Duration),
}

/// What a poll's answer means for scheduling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AfterPoll {
    /// When the job is polled next; `None`: no longer (STOPPED, nothing left to write).
    pub(super) at: Option<Instant>,
    /// The job's failed polls in a row from now.
    pub(super) failures: u32,
    /// Every poll stops this long from now.
    pub(super) pause: Option<Pause>,
}

/// The job's next poll after an answer. An answer clears its failures: next poll an
/// interval on, none once it is done (kept at most 5 s on while it still owes the database
/// what it saw: that poll writes it). A throttled or refused answer is every job's, not this
/// one's: the job goes again as soon as the budget lets it, the budget paused (a refusal only
/// from `AUTH_FAILURES_BEFORE_BACKOFF` in a row, `auth_backoff` doubling up to eightfold, so the
/// gateway's key lock is never provoked). Any other failure backs the job off alone.
pub(super) fn after_poll(a: &Answered) -> AfterPoll {
    let at = |d: Duration| Some(later(a.now, d));
    match a.outcome {
        Outcome::Answered if a.done && !a.owes => AfterPoll {
            at: None,
            failures: 0,
            pause: None,
        },
        Outcome::Answered => AfterPoll {
            at: at(if a.done {
                a.interval.min(Duration::from_secs(5))
            } else {
                a.interval
            }),
            failures: 0,
            pause: None,
        },
        Outcome::Throttled => AfterPoll {
            at: Some(a.now),
            failures: a.failures,
            pause: Some(Pause::Throttled(throttle_pause(
                a.throttle_backoff,
                a.throttle_streak,
                a.jitter,
            ))),
        },
        Outcome::Refused => AfterPoll {
            at: Some(a.now),
            failures: a.failures,
            pause: (a.auth_streak >= AUTH_FAILURES_BEFORE_BACKOFF).then(|| {
                let extra = a.auth_streak - AUTH_FAILURES_BEFORE_BACKOFF;
                Pause::Refused(a.auth_backoff.saturating_mul(1 << extra.min(3)))
            }),
        },
        Outcome::Failed => {
            let failures = a.failures.saturating_add(1);
            AfterPoll {
                at: at(failure_delay(a.interval, failures, a.jitter)),
                failures,
                pause: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn next_table() {
        let now = Instant::now();
        let ms = |n: u64| now + Duration::from_millis(n);
        let ready = |at: Instant| Candidate {
            not_before: at,
            ready: true,
        };
        let busy = Candidate {
            not_before: now,
            ready: false,
        };
        // A look with nothing in it; each case changes what it is about.
        let idle = Look {
            now,
            may_start: true,
            round_at: None,
            lane: &[],
            follow_up: None,
            lane_used: 0,
            share: 9,
            budget_at: now,
        };
        let joiner_and_hint = [ready(now), ready(now)];
        let hint = [ready(now)];
        let hinted_a_moment_ago = [ready(ms(300))];
        let busy_then_hint = [busy, ready(now)];
        let only_busy = [busy];
        let cases: Vec<(&str, Look, Next)> = vec![
            ("nothing watched: idle", idle, Next::Idle),
            (
                "the round's job is due: it goes",
                Look {
                    round_at: Some(ms(0)),
                    ..idle
                },
                Next::Poll(Slot::Round),
            ),
            (
                "the round's job is due later: wait for it",
                Look {
                    round_at: Some(ms(250)),
                    ..idle
                },
                Next::At(ms(250)),
            ),
            (
                "an overdue round job goes now",
                Look {
                    now: ms(40),
                    round_at: Some(ms(0)),
                    ..idle
                },
                Next::Poll(Slot::Round),
            ),
            (
                "a joiner goes first, before a hint and the round",
                Look {
                    round_at: Some(ms(0)),
                    lane: &joiner_and_hint,
                    ..idle
                },
                Next::Poll(Slot::Hinted(0)),
            ),
            (
                "a hint goes before the round while the lane is under its share",
                Look {
                    round_at: Some(ms(0)),
                    lane: &hint,
                    lane_used: 8,
                    ..idle
                },
                Next::Poll(Slot::Hinted(0)),
            ),
            (
                "the lane at its share: the round's due job goes",
                Look {
                    round_at: Some(ms(0)),
                    lane: &hint,
                    lane_used: 9,
                    ..idle
                },
                Next::Poll(Slot::Round),
            ),
            (
                "the lane at its share and no round job due: the hint goes",
                Look {
                    round_at: Some(ms(500)),
                    lane: &hint,
                    lane_used: 9,
                    ..idle
                },
                Next::Poll(Slot::Hinted(0)),
            ),
            (
                "a job hinted less than a second ago: wait for its second to be over",
                Look {
                    lane: &hinted_a_moment_ago,
                    ..idle
                },
                Next::At(ms(300)),
            ),
            (
                "a job being polled is passed over for the next",
                Look {
                    lane: &busy_then_hint,
                    ..idle
                },
                Next::Poll(Slot::Hinted(1)),
            ),
            (
                "only a job being polled in the lane: idle until its report",
                Look {
                    lane: &only_busy,
                    ..idle
                },
                Next::Idle,
            ),
            (
                "a re-poll after a job's end: wake when it is due",
                Look {
                    round_at: Some(ms(2_000)),
                    follow_up: Some(ms(1_000)),
                    ..idle
                },
                Next::At(ms(1_000)),
            ),
            (
                "the budget full: wait for its next slot",
                Look {
                    round_at: Some(ms(0)),
                    lane: &hint,
                    budget_at: ms(100),
                    ..idle
                },
                Next::At(ms(100)),
            ),
            (
                "the budget free before the job is due: the job's time",
                Look {
                    round_at: Some(ms(300)),
                    budget_at: ms(100),
                    ..idle
                },
                Next::At(ms(300)),
            ),
            (
                "stopping, or the lease gone: nothing starts though a job is due",
                Look {
                    may_start: false,
                    round_at: Some(ms(0)),
                    lane: &hint,
                    ..idle
                },
                Next::Idle,
            ),
        ];
        for (name, look, want) in cases {
            assert_eq!(next(&look), want, "{name}");
        }
    }

    #[test]
    fn after_poll_table() {
        let now = Instant::now();
        let s = Duration::from_secs;
        let base = Answered {
            now,
            outcome: Outcome::Answered,
            interval: s(10),
            failures: 2,
            done: false,
            owes: false,
            throttle_backoff: s(5),
            throttle_streak: 1,
            auth_backoff: s(600),
            auth_streak: 0,
            jitter: 0.5,
        };
        let after = |at: Option<Instant>, failures: u32, pause: Option<Pause>| AfterPoll {
            at,
            failures,
            pause,
        };
        let cases: Vec<(&str, Answered, AfterPoll)> = vec![
            (
                "an answer: an interval on, failures cleared",
                base,
                after(Some(now + s(10)), 0, None),
            ),
            (
                "STOPPED with stop_after_terminal: no longer polled",
                Answered { done: true, ..base },
                after(None, 0, None),
            ),
            (
                "STOPPED but owing the database: once more within 5 s, to write it",
                Answered {
                    done: true,
                    owes: true,
                    ..base
                },
                after(Some(now + s(5)), 0, None),
            ),
            (
                "STOPPED owing, on a short interval: the interval",
                Answered {
                    done: true,
                    owes: true,
                    interval: s(1),
                    ..base
                },
                after(Some(now + s(1)), 0, None),
            ),
            (
                "a failure: backed off alone, one more in a row",
                Answered {
                    outcome: Outcome::Failed,
                    ..base
                },
                after(Some(now + s(40)), 3, None),
            ),
            (
                "throttled: every poll pauses, the job goes first after",
                Answered {
                    outcome: Outcome::Throttled,
                    throttle_streak: 2,
                    ..base
                },
                after(Some(now), 2, Some(Pause::Throttled(s(10)))),
            ),
            (
                "refused, fewer times than the lock allows: no pause",
                Answered {
                    outcome: Outcome::Refused,
                    auth_streak: AUTH_FAILURES_BEFORE_BACKOFF - 1,
                    ..base
                },
                after(Some(now), 2, None),
            ),
            (
                "refused too often: every poll stops for auth_backoff",
                Answered {
                    outcome: Outcome::Refused,
                    auth_streak: AUTH_FAILURES_BEFORE_BACKOFF,
                    ..base
                },
                after(Some(now), 2, Some(Pause::Refused(s(600)))),
            ),
            (
                "refused on and on: auth_backoff doubles, at most eightfold",
                Answered {
                    outcome: Outcome::Refused,
                    auth_streak: AUTH_FAILURES_BEFORE_BACKOFF + 10,
                    ..base
                },
                after(Some(now), 2, Some(Pause::Refused(s(4_800)))),
            ),
        ];
        for (name, answered, want) in cases {
            assert_eq!(after_poll(&answered), want, "{name}");
        }
    }
}
