//! Alert rules: which rule a transition or condition fires, and how loud. Pure functions of
//! their inputs (the clock is an argument), tested with a table.
//!
//! Numbers here come from the API (`max_idle_time`, `create_time`) and the config
//! (`init_grace`, `repeat_interval`): the time arithmetic saturates, so no value, however
//! absurd, can panic the writer that evaluates these rules for every job.

use crate::config::RulesConfig;
use crate::domain::{
    EpisodeStep, OpenEpisode, Phase, PollOutcome, Rule, Severity, State, StopReason,
};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use recwatch_rtc::client::ErrorKind;
use std::time::Duration;

/// The API's default when a job does not say.
pub const DEFAULT_MAX_IDLE_TIME: u64 = 30;

/// The rule a transition into `to` fires, before severities are applied.
pub fn transition_rule(to: &Phase) -> Option<Rule> {
    if !matches!(to.state, State::Stopped) {
        return None;
    }
    Some(match to.stop_reason {
        Some(StopReason::TenantStop) => Rule::StoppedByTenant,
        Some(StopReason::ExceedMaxIdleTime) => Rule::IdleTimeout,
        // INTERNAL_ERROR, an unknown reason, or none: nobody asked for this stop.
        _ => Rule::StoppedUnexpectedly,
    })
}

/// The configured severity of a rule; `None` is off.
pub fn severity(rules: &RulesConfig, rule: Rule) -> Option<Severity> {
    match rule {
        Rule::StoppedUnexpectedly => rules.stopped_unexpectedly,
        Rule::IdleTimeout => rules.idle_timeout,
        Rule::StoppedByTenant => rules.stopped_by_tenant,
        Rule::StuckInit => rules.stuck_init,
        Rule::JobNotFound => rules.job_not_found,
        Rule::ApiUnhealthy => rules.api_unhealthy,
        Rule::PollFailing => rules.poll_failing,
        Rule::RemediationExhausted => rules.remediation_exhausted,
        Rule::RemediationFailed => rules.remediation_failed,
        Rule::Remediated => rules.remediated,
        Rule::Test => Some(Severity::Info),
    }
}

/// The rules of a job's own conditions (stuck_init, poll_failing, job_not_found) that are on:
/// the outbox reads their open episodes with the job's outcomes; a rule that is off is neither
/// read nor written.
pub fn job_condition_rules(rules: &RulesConfig) -> Vec<Rule> {
    [Rule::StuckInit, Rule::PollFailing, Rule::JobNotFound]
        .into_iter()
        .filter(|rule| severity(rules, *rule).is_some())
        .collect()
}

/// How long a job has been in INIT as the wall clock says at `now`: since its create_time
/// (or since recwatch first saw it, when the API gives none), never negative. Read once, when
/// this process first sees the job in INIT; from then on the poller adds only monotonic time
/// (`poller::job::InitClock`), so a step of the wall clock cannot age the job.
pub fn init_age(
    created: Option<DateTime<Utc>>,
    first_seen: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Duration {
    let since = created.unwrap_or(first_seen);
    now.signed_duration_since(since)
        .to_std()
        .unwrap_or(Duration::ZERO)
}

/// Whether a job in INIT for `in_init` has been there too long: longer than its
/// max_idle_time plus `grace`.
pub fn is_stuck_init(
    state: &State,
    in_init: Duration,
    max_idle_time: Option<u64>,
    grace: Duration,
) -> bool {
    if !matches!(state, State::Init) {
        return false;
    }
    let limit =
        Duration::from_secs(max_idle_time.unwrap_or(DEFAULT_MAX_IDLE_TIME)).saturating_add(grace);
    in_init > limit
}

/// A `std` duration as a chrono one, saturating at chrono's maximum (about 292 million
/// years) instead of failing: a limit that large is "never" either way.
pub fn chrono_saturating(d: Duration) -> ChronoDuration {
    ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX)
}

/// `t + d`, or `None` when that is past the last representable time: callers treat it as
/// "never".
pub fn checked_after(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    t.checked_add_signed(ChronoDuration::from_std(d).ok()?)
}

/// `t - d`, or `None` when that is before the first representable time.
pub fn checked_before(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    t.checked_sub_signed(ChronoDuration::from_std(d).ok()?)
}

/// [`is_stuck_init`] for a polled job, `in_init` being how long the poller's clock says it
/// has been in INIT (`None`: not in INIT as far as it knows); `None` when the answer has no
/// state (it says nothing about whether the job is still in INIT).
pub fn snapshot_stuck_init(
    job: &recwatch_rtc::model::JobSnapshot,
    in_init: Option<Duration>,
    grace: Duration,
) -> Option<bool> {
    let state = job.state.as_ref()?;
    Some(in_init.is_some_and(|d| is_stuck_init(state, d, job.max_idle_time, grace)))
}

/// Whether one job's own polls are failing (`poll_failing`), from its latest outcome and how
/// many of its polls in a row have failed (`streak`, that one included):
/// - `Some(true)`: at least `after` in a row, the latest a failure of this job's own, while
///   the API as a whole is healthy (when it is not, `api_unhealthy` is the news);
/// - `Some(false)`: it reads again, or the RTC service says the job does not exist
///   (`job_not_found` says that), or too few failures yet;
/// - `None`: the outcome says nothing about this job alone (refused or unavailable
///   credentials, throttling: the whole API's), or the API is unhealthy: an open episode stays as it is.
pub fn poll_failing(
    outcome: &PollOutcome,
    streak: i64,
    after: u32,
    api_unhealthy: bool,
) -> Option<bool> {
    match outcome {
        PollOutcome::Ok { .. } => Some(false),
        PollOutcome::Failed { kind, .. } => match kind {
            ErrorKind::NotFound => Some(false),
            ErrorKind::Unauthorized | ErrorKind::Throttled | ErrorKind::CredentialsUnavailable => {
                None
            }
            _ if api_unhealthy => None,
            _ => Some(streak >= i64::from(after)),
        },
    }
}

/// Whether a reminder is due for a condition still open.
pub fn reminder_due(last_notified: DateTime<Utc>, repeat: Duration, now: DateTime<Utc>) -> bool {
    now.signed_duration_since(last_notified) >= chrono_saturating(repeat)
}

/// Opens, reminds or resolves a condition's episode: `open` is the episode the database holds
/// open for this rule and job, `active` whether the condition holds now. A reminder is due
/// `repeat` after the last alert; a resolved episode is closed even when `send_resolved` is
/// off (only its notice is skipped), so the next occurrence opens a new one.
pub fn episode_step(
    open: Option<&OpenEpisode>,
    active: bool,
    repeat: Duration,
    send_resolved: bool,
    now: DateTime<Utc>,
) -> EpisodeStep {
    match (open, active) {
        (None, true) => EpisodeStep::Open,
        (Some(e), true) if reminder_due(e.last_notified, repeat, now) => EpisodeStep::Remind {
            id: e.id,
            n: e.reminders.saturating_add(1),
        },
        (Some(_), true) => EpisodeStep::Nothing,
        (Some(e), false) => EpisodeStep::Resolve {
            id: e.id,
            notify: send_resolved,
        },
        (None, false) => EpisodeStep::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(state: &str, reason: Option<&str>) -> Phase {
        Phase::parse(state, reason)
    }

    /// A snapshot's create time as the API's model reads it (`JobSnapshot::created`).
    fn read_create_time(create_time: Option<&str>) -> Option<DateTime<Utc>> {
        recwatch_rtc::model::JobSnapshot {
            create_time: create_time.map(str::to_string),
            ..Default::default()
        }
        .created()
    }

    #[test]
    fn transition_rules_table() {
        let cases = [
            (
                "internal error",
                phase("STOPPED", Some("INTERNAL_ERROR")),
                Some(Rule::StoppedUnexpectedly),
            ),
            (
                "no reason",
                phase("STOPPED", None),
                Some(Rule::StoppedUnexpectedly),
            ),
            (
                "unknown reason",
                phase("STOPPED", Some("QUOTA")),
                Some(Rule::StoppedUnexpectedly),
            ),
            (
                "idle",
                phase("STOPPED", Some("EXCEED_MAX_IDLE_TIME")),
                Some(Rule::IdleTimeout),
            ),
            (
                "tenant",
                phase("STOPPED", Some("TENANT_STOP")),
                Some(Rule::StoppedByTenant),
            ),
            ("running", phase("RUNNING", None), None),
            ("init", phase("INIT", None), None),
            ("unknown state", phase("PAUSED", None), None),
        ];
        for (name, to, want) in cases {
            assert_eq!(transition_rule(&to), want, "{name}");
        }
    }

    #[test]
    fn default_severities_table() {
        let r = RulesConfig::default();
        let cases = [
            (Rule::StoppedUnexpectedly, Some(Severity::Critical)),
            (Rule::IdleTimeout, Some(Severity::Warning)),
            (Rule::StoppedByTenant, None),
            (Rule::StuckInit, Some(Severity::Warning)),
            (Rule::JobNotFound, Some(Severity::Warning)),
            (Rule::ApiUnhealthy, Some(Severity::Critical)),
            (Rule::PollFailing, Some(Severity::Warning)),
            (Rule::RemediationExhausted, Some(Severity::Critical)),
            (Rule::RemediationFailed, Some(Severity::Critical)),
            (Rule::Remediated, Some(Severity::Info)),
        ];
        for (rule, want) in cases {
            assert_eq!(severity(&r, rule), want, "{rule}");
        }
    }

    #[test]
    fn poll_failing_table() {
        let ok = PollOutcome::Ok {
            job: Box::default(),
            raw: String::new(),
            request_id: None,
            transition: None,
        };
        let failed = |kind| PollOutcome::Failed {
            kind,
            error: "e".into(),
        };
        // (name, outcome, streak, api unhealthy, want); after = 5
        let cases = [
            ("reads again", ok, 0, false, Some(false)),
            (
                "a 500, the fifth in a row",
                failed(ErrorKind::Server),
                5,
                false,
                Some(true),
            ),
            (
                "a 500, the fourth",
                failed(ErrorKind::Server),
                4,
                false,
                Some(false),
            ),
            (
                "an unreadable record, the sixth",
                failed(ErrorKind::BadResponse),
                6,
                false,
                Some(true),
            ),
            (
                "a timeout, the fifth",
                failed(ErrorKind::Timeout),
                5,
                false,
                Some(true),
            ),
            (
                "the whole API is down: api_unhealthy says it",
                failed(ErrorKind::Server),
                9,
                true,
                None,
            ),
            (
                "not found: job_not_found says it",
                failed(ErrorKind::NotFound),
                9,
                false,
                Some(false),
            ),
            (
                "throttled: the whole account's",
                failed(ErrorKind::Throttled),
                9,
                false,
                None,
            ),
            (
                "refused credentials: the whole API's",
                failed(ErrorKind::Unauthorized),
                9,
                false,
                None,
            ),
            (
                "no usable credentials (expired temporary keys): the whole account's",
                failed(ErrorKind::CredentialsUnavailable),
                9,
                false,
                None,
            ),
        ];
        for (name, outcome, streak, unhealthy, want) in cases {
            assert_eq!(poll_failing(&outcome, streak, 5, unhealthy), want, "{name}");
        }
    }

    #[test]
    fn stuck_init_table() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let s = Duration::from_secs;
        let at = |secs: i64| t0 + ChronoDuration::seconds(secs);
        let created = Some("2026-01-01T00:00:00.000Z");
        let cases = [
            (
                "within idle + grace",
                "INIT",
                created,
                Some(30),
                at(89),
                false,
            ),
            ("past idle + grace", "INIT", created, Some(30), at(91), true),
            ("default idle time", "INIT", created, None, at(91), true),
            (
                "running is never stuck",
                "RUNNING",
                created,
                Some(30),
                at(1000),
                false,
            ),
            (
                "no create_time: from first seen",
                "INIT",
                None,
                Some(30),
                at(91),
                true,
            ),
            (
                "bad create_time: from first seen",
                "INIT",
                Some("yesterday"),
                Some(30),
                at(89),
                false,
            ),
        ];
        for (name, state, create, idle, now, want) in cases {
            assert_eq!(
                is_stuck_init(
                    &State::parse(state),
                    init_age(read_create_time(create), t0, now),
                    idle,
                    s(60)
                ),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn init_age_table() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let s = Duration::from_secs;
        let at = |secs: i64| t0 + ChronoDuration::seconds(secs);
        let cases = [
            (
                "from create_time",
                Some("2025-12-31T23:59:00Z"),
                at(0),
                s(60),
            ),
            ("no create_time: from first seen", None, at(90), s(90)),
            (
                "unreadable create_time: from first seen",
                Some("soon"),
                at(5),
                s(5),
            ),
            (
                "create_time ahead of this clock: not negative",
                Some("2026-01-01T01:00:00Z"),
                at(0),
                s(0),
            ),
        ];
        for (name, create, now, want) in cases {
            assert_eq!(init_age(read_create_time(create), t0, now), want, "{name}");
        }
    }

    /// Absurd numbers from the API or the config: no panic, and the sensible answer.
    #[test]
    fn absurd_numbers_saturate_table() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let year = Duration::from_secs(365 * 86400);
        let created = Some("2026-01-01T00:00:00Z");
        let later = t0 + ChronoDuration::days(365 * 1000);
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<u64>,
            Duration,
            DateTime<Utc>,
            bool,
        );
        let cases: [Case; 8] = [
            // 2^64-1 (and 1e300, which the model reads as 2^64-1) plus any grace.
            (
                "max_idle_time 2^64-1",
                created,
                Some(u64::MAX),
                Duration::from_secs(60),
                later,
                false,
            ),
            (
                "max_idle_time 2^64-1, no grace",
                created,
                Some(u64::MAX),
                Duration::ZERO,
                later,
                false,
            ),
            (
                "grace Duration::MAX",
                created,
                Some(30),
                Duration::MAX,
                later,
                false,
            ),
            (
                "both at their maximum",
                created,
                Some(u64::MAX),
                Duration::MAX,
                later,
                false,
            ),
            (
                "huge but representable idle time",
                created,
                Some(1000 * 365 * 86400),
                year,
                later,
                false,
            ),
            (
                "idle time just under what passed",
                created,
                Some(999 * 365 * 86400),
                Duration::ZERO,
                later,
                true,
            ),
            (
                "create_time at the end of time",
                Some("9999-12-31T23:59:59Z"),
                Some(30),
                Duration::ZERO,
                t0,
                false,
            ),
            (
                "create_time at the start of time",
                Some("0001-01-01T00:00:00Z"),
                Some(u64::MAX),
                Duration::MAX,
                t0,
                false,
            ),
        ];
        for (name, create, idle, grace, now, want) in cases {
            assert_eq!(
                is_stuck_init(
                    &State::Init,
                    init_age(read_create_time(create), t0, now),
                    idle,
                    grace
                ),
                want,
                "{name}"
            );
        }
        let reminder_cases = [
            (
                "repeat Duration::MAX is never due",
                Duration::MAX,
                later,
                false,
            ),
            (
                "repeat of a year, a thousand years later",
                year,
                later,
                true,
            ),
            (
                "last notified in the future",
                Duration::from_secs(1),
                t0 - ChronoDuration::days(1),
                false,
            ),
        ];
        for (name, repeat, now, want) in reminder_cases {
            assert_eq!(reminder_due(t0, repeat, now), want, "{name}");
        }
        let time_cases = [
            ("after: small", checked_after(t0, year).is_some(), true),
            (
                "after: Duration::MAX",
                checked_after(t0, Duration::MAX).is_some(),
                false,
            ),
            (
                "after: past the end of time",
                checked_after(t0, Duration::from_secs(u64::MAX / 4)).is_some(),
                false,
            ),
            ("before: small", checked_before(t0, year).is_some(), true),
            (
                "before: Duration::MAX",
                checked_before(t0, Duration::MAX).is_some(),
                false,
            ),
        ];
        for (name, got, want) in time_cases {
            assert_eq!(got, want, "{name}");
        }
        assert_eq!(chrono_saturating(Duration::MAX), ChronoDuration::MAX);
        assert_eq!(chrono_saturating(year), ChronoDuration::days(365));
    }

    #[test]
    fn reminders() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let h4 = Duration::from_secs(4 * 3600);
        assert!(!reminder_due(t0, h4, t0 + ChronoDuration::hours(3)));
        assert!(reminder_due(t0, h4, t0 + ChronoDuration::hours(4)));
    }

    #[test]
    fn episode_step_table() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let h4 = Duration::from_secs(4 * 3600);
        let at = |hours: i64| t0 + ChronoDuration::hours(hours);
        let open = |reminders: i64| OpenEpisode {
            id: 7,
            last_notified: t0,
            reminders,
        };
        type Case = (
            &'static str,
            Option<OpenEpisode>,
            bool,
            Duration,
            bool,
            DateTime<Utc>,
            EpisodeStep,
            Option<&'static str>,
        );
        let cases: [Case; 10] = [
            (
                "condition starts: open",
                None,
                true,
                h4,
                true,
                at(0),
                EpisodeStep::Open,
                Some("firing"),
            ),
            (
                "nothing open, nothing holds",
                None,
                false,
                h4,
                true,
                at(0),
                EpisodeStep::Nothing,
                None,
            ),
            (
                "still holds, reminder not due",
                Some(open(0)),
                true,
                h4,
                true,
                at(3),
                EpisodeStep::Nothing,
                None,
            ),
            (
                "still holds, reminder due at exactly repeat_interval",
                Some(open(0)),
                true,
                h4,
                true,
                at(4),
                EpisodeStep::Remind { id: 7, n: 1 },
                Some("reminder:1"),
            ),
            (
                "third reminder counts on",
                Some(open(2)),
                true,
                h4,
                true,
                at(5),
                EpisodeStep::Remind { id: 7, n: 3 },
                Some("reminder:3"),
            ),
            (
                "repeat Duration::MAX: never reminds",
                Some(open(0)),
                true,
                Duration::MAX,
                true,
                at(24 * 365 * 100),
                EpisodeStep::Nothing,
                None,
            ),
            (
                "last notified in the future (clock stepped back): no reminder",
                Some(open(0)),
                true,
                Duration::from_secs(1),
                true,
                at(-1),
                EpisodeStep::Nothing,
                None,
            ),
            (
                "condition over: resolve with a notice",
                Some(open(1)),
                false,
                h4,
                true,
                at(1),
                EpisodeStep::Resolve {
                    id: 7,
                    notify: true,
                },
                Some("resolved"),
            ),
            (
                "condition over, send_resolved off: resolve without a notice",
                Some(open(1)),
                false,
                h4,
                false,
                at(1),
                EpisodeStep::Resolve {
                    id: 7,
                    notify: false,
                },
                None,
            ),
            (
                "reminder count at its maximum does not overflow",
                Some(open(i64::MAX)),
                true,
                h4,
                true,
                at(4),
                EpisodeStep::Remind { id: 7, n: i64::MAX },
                Some("reminder:9223372036854775807"),
            ),
        ];
        for (name, open, active, repeat, send_resolved, now, want, key) in cases {
            let got = episode_step(open.as_ref(), active, repeat, send_resolved, now);
            assert_eq!(got, want, "{name}");
            assert_eq!(got.key().as_deref(), key, "{name}: dedup key step");
        }
    }
}
