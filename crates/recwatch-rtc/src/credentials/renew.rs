//! When temporary credentials are renewed, and what a request does meanwhile: pure functions of
//! the time (an argument), so every case is a row of a table test.
//!
//! The SDK renews once less than 40 minutes remain (`_DEFAULT_EXPIRATION_THRESHOLD_SECONDS`);
//! credentials that live shorter than twice that are renewed at half their lifetime instead,
//! or they would be due the moment they arrive and every request would ask again.

use chrono::{DateTime, TimeDelta, Utc};
use std::time::Duration;

/// The SDK's threshold: renew when less than this remains.
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(40 * 60);

/// Keys are not signed with in their last half minute: a request signed just before the
/// expiry may reach the gateway just after it and be refused (each refusal counts toward the
/// key's 5-minute lock).
const SIGN_MARGIN: TimeDelta = TimeDelta::seconds(30);

/// The first retry of a failed renewal, doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: TimeDelta = TimeDelta::seconds(1);
/// A renewal failing for long is retried once a minute: often enough to catch the service
/// coming back well within the SDK's 40 minutes, rarely enough not to load it.
const MAX_BACKOFF: TimeDelta = TimeDelta::seconds(60);

/// The times that decide a held credential's fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// From here on a request asks for a renewal (and still signs with these keys).
    pub renew_at: DateTime<Utc>,
    /// From here on these keys are never signed with.
    pub usable_until: DateTime<Utc>,
}

/// The window of credentials obtained at `obtained_at` that expire at `expires_at`: renewed
/// `renew_before` ahead, or at half their lifetime when that comes later; not used in their
/// last half minute (or last quarter, for credentials living under two minutes).
pub fn window(
    obtained_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    renew_before: Duration,
) -> Window {
    let lifetime = (expires_at - obtained_at).max(TimeDelta::zero());
    let before = TimeDelta::from_std(renew_before).unwrap_or(TimeDelta::MAX);
    Window {
        renew_at: expires_at - before.min(lifetime / 2),
        usable_until: expires_at - SIGN_MARGIN.min(lifetime / 4),
    }
}

/// What a request does about the credentials before it is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Sign with the held keys.
    Use,
    /// Sign with the held keys, which are still valid, after trying a renewal unless one is
    /// already running (its failure costs the request nothing).
    UseAndRenew,
    /// No usable keys: wait for a renewal (the one running, or one of its own).
    Renew,
    /// No usable keys, and the last renewal failed too recently to ask again: the request
    /// fails without asking the metadata service.
    Fail,
}

/// The step for a request at `now`, with the held keys' window (if any) and the time before
/// which a failed renewal is not retried (if one failed).
pub fn step(now: DateTime<Utc>, held: Option<Window>, retry_at: Option<DateTime<Utc>>) -> Step {
    let may_ask = retry_at.is_none_or(|at| now >= at);
    match held {
        Some(w) if now < w.renew_at => Step::Use,
        Some(w) if now < w.usable_until => match may_ask {
            true => Step::UseAndRenew,
            false => Step::Use,
        },
        _ => match may_ask {
            true => Step::Renew,
            false => Step::Fail,
        },
    }
}

/// How long after the `failures`-th failed renewal in a row the next one is tried: 1 s,
/// doubled each time, at most a minute. No jitter: one daemon's renewals are one at a time
/// already, and the metadata service is the instance's own.
pub fn backoff(failures: u32) -> TimeDelta {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2i32.pow(doublings)).min(MAX_BACKOFF)
}

/// Reads the metadata service's `expires_at`, `%Y-%m-%dT%H:%M:%S.%fZ` in UTC as the SDK reads
/// it (`time_utils.get_timestamp_from_str`), also without the fraction or with an offset
/// (RFC 3339), since a stand-in or a proxy may write it so.
pub fn parse_expires_at(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.fZ")
        .map(|t| t.and_utc())
        .ok()
        .or_else(|| {
            DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    const MIN: u64 = 60;

    #[test]
    fn window_table() {
        let got = at("2026-01-01T00:00:00Z");
        // (name, lifetime, renew_before, renew_at, usable_until), times after `got`.
        let cases: &[(&str, u64, u64, &str, &str)] = &[
            (
                "a day's credentials: the SDK's 40 minutes",
                24 * 60 * MIN,
                40 * MIN,
                "2026-01-01T23:20:00Z",
                "2026-01-01T23:59:30Z",
            ),
            (
                "an hour: half of it, since 40 minutes ahead would be 20 minutes in",
                60 * MIN,
                40 * MIN,
                "2026-01-01T00:30:00Z",
                "2026-01-01T00:59:30Z",
            ),
            (
                "80 minutes: both rules agree",
                80 * MIN,
                40 * MIN,
                "2026-01-01T00:40:00Z",
                "2026-01-01T01:19:30Z",
            ),
            (
                "a configured 10 minutes",
                6 * 60 * MIN,
                10 * MIN,
                "2026-01-01T05:50:00Z",
                "2026-01-01T05:59:30Z",
            ),
            (
                "one minute: half, and the last quarter never signed with",
                MIN,
                40 * MIN,
                "2026-01-01T00:00:30Z",
                "2026-01-01T00:00:45Z",
            ),
        ];
        for (name, lifetime, before, renew_at, usable_until) in cases {
            let expires = got + TimeDelta::seconds(*lifetime as i64);
            let w = window(got, expires, Duration::from_secs(*before));
            assert_eq!(w.renew_at, at(renew_at), "{name}: renew_at");
            assert_eq!(w.usable_until, at(usable_until), "{name}: usable_until");
            assert!(w.renew_at <= w.usable_until, "{name}");
        }
        // Already expired when obtained: due and unusable at once.
        let w = window(got, got - TimeDelta::seconds(5), DEFAULT_RENEW_BEFORE);
        assert!(w.renew_at <= got && w.usable_until <= got);
    }

    #[test]
    fn step_table() {
        let w = Window {
            renew_at: at("2026-01-01T10:00:00Z"),
            usable_until: at("2026-01-01T10:39:30Z"),
        };
        let before_renewal = at("2026-01-01T09:00:00Z");
        let due = at("2026-01-01T10:10:00Z");
        let expired = at("2026-01-01T10:39:30Z");
        let later = Some(at("2026-01-01T11:00:00Z"));
        let passed = Some(at("2026-01-01T09:30:00Z"));
        let cases = [
            ("fresh keys", before_renewal, Some(w), None, Step::Use),
            (
                "fresh keys, a failure long ago",
                before_renewal,
                Some(w),
                passed,
                Step::Use,
            ),
            (
                "due: renew, sign with these",
                due,
                Some(w),
                None,
                Step::UseAndRenew,
            ),
            (
                "due, back-off over",
                due,
                Some(w),
                passed,
                Step::UseAndRenew,
            ),
            (
                "due, backing off: sign, ask nobody",
                due,
                Some(w),
                later,
                Step::Use,
            ),
            (
                "expired (the margin reached): wait for keys",
                expired,
                Some(w),
                None,
                Step::Renew,
            ),
            (
                "expired, backing off: fail without asking",
                expired,
                Some(w),
                later,
                Step::Fail,
            ),
            ("none yet: fetch", before_renewal, None, None, Step::Renew),
            (
                "none, the first fetch failed just now",
                before_renewal,
                None,
                later,
                Step::Fail,
            ),
        ];
        for (name, now, held, retry_at, want) in cases {
            assert_eq!(step(now, held, retry_at), want, "{name}");
        }
    }

    #[test]
    fn backoff_table() {
        let cases = [
            ("first failure", 1, 1),
            ("second", 2, 2),
            ("third", 3, 4),
            ("seventh", 7, 60),
            ("capped", 40, 60),
            ("u32::MAX does not overflow", u32::MAX, 60),
        ];
        for (name, failures, secs) in cases {
            assert_eq!(backoff(failures), TimeDelta::seconds(secs), "{name}");
        }
        // Zero failures is never asked for, but is the first back-off, not a panic.
        assert_eq!(backoff(0), TimeDelta::seconds(1));
    }

    #[test]
    fn expires_at_table() {
        let cases = [
            (
                "the SDK's format, microseconds",
                "2026-12-08T05:00:00.123456Z",
                Some("2026-12-08T05:00:00.123456Z"),
            ),
            (
                "milliseconds",
                "2026-12-08T05:00:00.123Z",
                Some("2026-12-08T05:00:00.123Z"),
            ),
            (
                "no fraction",
                "2026-12-08T05:00:00Z",
                Some("2026-12-08T05:00:00Z"),
            ),
            (
                "an offset",
                "2026-12-08T13:00:00.000000+08:00",
                Some("2026-12-08T05:00:00Z"),
            ),
            (
                "spaces around",
                " 2026-12-08T05:00:00.000000Z ",
                Some("2026-12-08T05:00:00Z"),
            ),
            ("no zone", "2026-12-08T05:00:00.000000", None),
            ("a date only", "2026-12-08", None),
            ("epoch seconds", "1796706000", None),
            ("empty", "", None),
        ];
        for (name, text, want) in cases {
            assert_eq!(parse_expires_at(text), want.map(at), "{name}");
        }
    }
}
