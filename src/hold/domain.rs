//! Silences and holds: what may keep a notification from being sent (a silence an operator
//! added, or a maintenance window from the config); a held delivery's state is
//! `domain::DeliveryState`'s `Silenced`.
//!
//! A silence matches alerts by app, job and rule (each optional, at least one given); it is
//! pending before its start, active until its end, expired after. Matching is pure and tested
//! here; the store keeps silences (`store::silences`) and the delivery lanes ask, just before
//! a send, whether anything holds the alert back (`crate::hold::deliver`).

use crate::domain::{Alert, Rule, Status, check_id, timestamp};
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Serialize, Serializer};
use std::fmt;

/// What an alert is about, as far as silences and windows look: its app, job and rule (an
/// api-wide alert has no app or job).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subject<'a> {
    pub app_id: Option<&'a str>,
    pub job_id: Option<&'a str>,
    pub rule: Rule,
}

impl<'a> Subject<'a> {
    pub fn of(alert: &'a Alert) -> Subject<'a> {
        Subject {
            app_id: alert.job.as_ref().map(|j| j.app_id.as_str()),
            job_id: alert.job.as_ref().map(|j| j.job_id.as_str()),
            rule: alert.rule,
        }
    }
}

/// A silence's matchers: each one given must equal the alert's; one left out matches
/// anything. A silence has at least one (see [`NewSilence::new`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Matchers {
    pub app_id: Option<String>,
    pub job_id: Option<String>,
    pub rule: Option<Rule>,
}

impl Matchers {
    pub fn is_empty(&self) -> bool {
        self.app_id.is_none() && self.job_id.is_none() && self.rule.is_none()
    }

    /// Whether every matcher given equals the subject's value. An api-wide alert has no app
    /// or job, so only a silence on its rule alone matches it.
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| have == Some(w))
        };
        eq(&self.app_id, s.app_id)
            && eq(&self.job_id, s.job_id)
            && self.rule.is_none_or(|r| r == s.rule)
    }
}

impl Matchers {
    /// Why a silence would hold nothing now: it names an app or a job that no watched job
    /// (`watched`, each as `(app_id, job_id)`) has, usually a typo. `None` when some watched
    /// job matches, or when only a rule is given (that matches api-wide alerts too). A
    /// warning, not a refusal: a job may be silenced just before it is watched.
    pub fn unwatched<'a>(
        &self,
        watched: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Option<String> {
        if self.app_id.is_none() && self.job_id.is_none() {
            return None;
        }
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        if watched
            .into_iter()
            .any(|(app, job)| eq(&self.app_id, app) && eq(&self.job_id, job))
        {
            return None;
        }
        let named = [
            self.app_id.as_ref().map(|a| format!("app {a:?}")),
            self.job_id.as_ref().map(|j| format!("job {j:?}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" and ");
        Some(format!(
            "no watched job matches {named}: this silence holds nothing until such a job is watched (check the id; `recwatch status` lists the watched jobs)"
        ))
    }
}

/// Where a silence stands at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceStatus {
    Pending,
    Active,
    Expired,
}

impl SilenceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SilenceStatus::Pending => "pending",
            SilenceStatus::Active => "active",
            SilenceStatus::Expired => "expired",
        }
    }
}

fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&timestamp(*t))
}

/// A silence as stored. Serialized as `recwatch silence list --json` and `GET
/// /api/v1/silences` show it (with its status at the time asked, see [`SilenceView`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Silence {
    pub id: String,
    #[serde(flatten)]
    pub matchers: Matchers,
    #[serde(serialize_with = "rfc3339")]
    pub starts_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub ends_at: DateTime<Utc>,
    pub comment: String,
    pub author: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl Silence {
    /// Active from its start (included) to its end (excluded).
    pub fn status(&self, now: DateTime<Utc>) -> SilenceStatus {
        if now < self.starts_at {
            SilenceStatus::Pending
        } else if now < self.ends_at {
            SilenceStatus::Active
        } else {
            SilenceStatus::Expired
        }
    }

    pub fn holds(&self, s: &Subject<'_>, now: DateTime<Utc>) -> bool {
        self.status(now) == SilenceStatus::Active && self.matches(s)
    }

    pub fn matches(&self, s: &Subject<'_>) -> bool {
        self.matchers.matches(s)
    }

    pub fn view(self, now: DateTime<Utc>) -> SilenceView {
        SilenceView {
            status: self.status(now),
            silence: self,
        }
    }
}

/// A silence with its status, for the list and the API.
#[derive(Clone, Debug, Serialize)]
pub struct SilenceView {
    #[serde(flatten)]
    pub silence: Silence,
    pub status: SilenceStatus,
}

/// A new, random silence id (`sil_` and 16 hex digits): short enough to type into `silence
/// expire`.
pub fn silence_id() -> String {
    let bytes: [u8; 8] = rand::rng().random();
    format!("sil_{}", hex::encode(bytes))
}

/// How a new silence ends: after a while, or at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SilenceEnd {
    For(std::time::Duration),
    Until(DateTime<Utc>),
}

/// A silence to add, checked: the CLI and the API both build one with [`NewSilence::new`], so
/// both refuse the same input with the same words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSilence {
    pub matchers: Matchers,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub comment: String,
    pub author: Option<String>,
}

/// The longest a silence may last: past it, a value cannot be meant ("30d" for "30m"?), and a
/// silence nobody remembers hides real trouble.
pub const MAX_SILENCE: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);

impl NewSilence {
    /// Checks a silence to add at `now`: at least one matcher, a comment, an end after its
    /// start and within [`MAX_SILENCE`], and no start in the past (it would be now anyway).
    /// The error names the field and the fix.
    pub fn new(
        matchers: Matchers,
        starts_at: Option<DateTime<Utc>>,
        end: SilenceEnd,
        comment: &str,
        author: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<NewSilence, String> {
        if matchers.is_empty() {
            return Err("no matcher: give at least one of app_id, job_id and rule (--app, --job, --rule), so the silence cannot hold back every alert by accident".into());
        }
        for (name, v) in [("app_id", &matchers.app_id), ("job_id", &matchers.job_id)] {
            if let Some(v) = v {
                if v.trim().is_empty() || v.chars().any(char::is_control) {
                    return Err(format!(
                        "{name}: {v:?} is not an id; copy it from `recwatch status`"
                    ));
                }
                // The watch list's own rule for ids ("." and ".." are none), so a silence
                // never names a job that could not be watched.
                check_id(v).map_err(|m| format!("{name} {m}"))?;
            }
        }
        let comment = comment.trim();
        if comment.is_empty() {
            return Err("comment: empty; say why the alerts are silenced (--comment \"deploying the recorder\"), so whoever finds the silence knows".into());
        }
        let starts_at = starts_at.filter(|s| *s > now).unwrap_or(now);
        let ends_at = match end {
            SilenceEnd::For(d) => {
                if d.is_zero() {
                    return Err(
                        "for: 0s would end the silence at once; give a duration like \"2h\"".into(),
                    );
                }
                if d > MAX_SILENCE {
                    return Err(
                        "for: longer than 366d; silence for at most a year (e.g. \"2h\", \"7d\")"
                            .into(),
                    );
                }
                starts_at + chrono::Duration::from_std(d).expect("bounded above")
            }
            SilenceEnd::Until(t) => {
                if t <= starts_at {
                    return Err(format!(
                        "until: {} is not after the silence's start ({}); give a later time, e.g. {}",
                        timestamp(t),
                        timestamp(starts_at),
                        timestamp(starts_at + chrono::Duration::hours(2))
                    ));
                }
                if t - starts_at > chrono::Duration::from_std(MAX_SILENCE).expect("bounded") {
                    return Err("until: more than 366 days away; silence for at most a year".into());
                }
                t
            }
        };
        Ok(NewSilence {
            matchers,
            starts_at,
            ends_at,
            comment: comment.to_string(),
            author: author
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(String::from),
        })
    }
}

/// What holds an alert's notifications back: a silence (by id) or a maintenance window (by
/// name). Its text is what `silenced_by` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeldBy {
    Silence(String),
    Window(String),
}

impl HeldBy {
    pub fn as_str(&self) -> &str {
        match self {
            HeldBy::Silence(s) | HeldBy::Window(s) => s,
        }
    }

    /// The metric label: which kind of hold.
    pub fn kind(&self) -> &'static str {
        match self {
            HeldBy::Silence(_) => "silence",
            HeldBy::Window(_) => "maintenance",
        }
    }
}

impl fmt::Display for HeldBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeldBy::Silence(id) => write!(f, "silence {id}"),
            HeldBy::Window(name) => write!(f, "maintenance window {name:?}"),
        }
    }
}

/// A held notice whose hold has ended, with what the store knows now about its cause: the
/// input of [`crate::hold::rules::after_hold`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldNotice {
    pub alert_id: String,
    pub channel: String,
    /// The order the outbox made the alerts in (`alerts.rowid`).
    pub order: i64,
    pub status: Status,
    pub cause: HeldCause,
}

/// What a held notice was about, and whether that is still so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeldCause {
    /// A transition (stopped unexpectedly, idle timeout ...): still true while it is the
    /// job's latest transition (the job has not changed since).
    Transition { still_latest: bool },
    /// A notice of a condition's episode (stuck_init, job_not_found, api_unhealthy,
    /// poll_failing): a firing notice or reminder is still true while the episode is open; a
    /// resolved notice matters to a receiver that was told the episode began (`earlier_sent`
    /// on this channel).
    Episode {
        id: i64,
        open: bool,
        earlier_sent: bool,
    },
    /// Its transition or episode is gone (pruned): nothing to say it still holds.
    Unknown,
}

/// What becomes of a held notice when its hold ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterHold {
    /// Still true: back to pending, sent at once with its own id.
    Send,
    /// Cleared meanwhile, or said already by another notice released with it: stays
    /// `silenced`, with the reason.
    Drop(&'static str),
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_silence_on_nothing_watched_is_told() {
        use super::Matchers;
        let watched = [("app-1", "job-1"), ("app-1", "job-2")];
        let m = |app: Option<&str>, job: Option<&str>| Matchers {
            app_id: app.map(String::from),
            job_id: job.map(String::from),
            rule: None,
        };
        let cases = [
            ("a watched job", m(None, Some("job-1")), false),
            ("a watched app", m(Some("app-1"), None), false),
            (
                "a watched app and job",
                m(Some("app-1"), Some("job-2")),
                false,
            ),
            ("an unwatched job", m(None, Some("job-9")), true),
            ("an unwatched app", m(Some("app-9"), None), true),
            (
                "a watched job of another app",
                m(Some("app-9"), Some("job-1")),
                true,
            ),
            (
                "a rule alone",
                Matchers {
                    rule: Some(super::Rule::StuckInit),
                    ..m(None, None)
                },
                false,
            ),
        ];
        for (name, matchers, warned) in cases {
            let w = matchers.unwatched(watched.iter().copied());
            assert_eq!(w.is_some(), warned, "{name}: {w:?}");
        }
        let w = m(Some("app-9"), Some("job-1")).unwatched(watched.iter().copied());
        assert!(
            w.unwrap()
                .starts_with("no watched job matches app \"app-9\" and job \"job-1\"")
        );
    }

    use super::*;

    fn subject<'a>(app: Option<&'a str>, job: Option<&'a str>, rule: Rule) -> Subject<'a> {
        Subject {
            app_id: app,
            job_id: job,
            rule,
        }
    }

    #[test]
    fn matchers_table() {
        let m = |app: Option<&str>, job: Option<&str>, rule: Option<Rule>| Matchers {
            app_id: app.map(String::from),
            job_id: job.map(String::from),
            rule,
        };
        let stopped = Rule::StoppedUnexpectedly;
        let cases = [
            (
                "by job",
                m(None, Some("j1"), None),
                subject(Some("a"), Some("j1"), stopped),
                true,
            ),
            (
                "by job, another job",
                m(None, Some("j1"), None),
                subject(Some("a"), Some("j2"), stopped),
                false,
            ),
            (
                "by app: every job of it",
                m(Some("a"), None, None),
                subject(Some("a"), Some("j9"), Rule::StuckInit),
                true,
            ),
            (
                "by app, another app",
                m(Some("a"), None, None),
                subject(Some("b"), Some("j1"), stopped),
                false,
            ),
            (
                "by rule",
                m(None, None, Some(Rule::IdleTimeout)),
                subject(Some("a"), Some("j1"), Rule::IdleTimeout),
                true,
            ),
            (
                "by rule, another rule",
                m(None, None, Some(Rule::IdleTimeout)),
                subject(Some("a"), Some("j1"), stopped),
                false,
            ),
            (
                "all given must match",
                m(Some("a"), Some("j1"), Some(stopped)),
                subject(Some("a"), Some("j1"), Rule::StuckInit),
                false,
            ),
            (
                "an api-wide alert has no app",
                m(Some("a"), None, None),
                subject(None, None, Rule::ApiUnhealthy),
                false,
            ),
            (
                "an api-wide alert by its rule",
                m(None, None, Some(Rule::ApiUnhealthy)),
                subject(None, None, Rule::ApiUnhealthy),
                true,
            ),
        ];
        for (name, matchers, s, want) in cases {
            assert_eq!(matchers.matches(&s), want, "{name}");
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_silence_holds_from_its_start_to_its_end() {
        let s = Silence {
            id: "sil_1".into(),
            matchers: Matchers {
                job_id: Some("j1".into()),
                ..Default::default()
            },
            starts_at: t("2026-01-01T10:00:00Z"),
            ends_at: t("2026-01-01T12:00:00Z"),
            comment: "deploy".into(),
            author: None,
            created_at: t("2026-01-01T09:00:00Z"),
        };
        let job = subject(Some("a"), Some("j1"), Rule::StoppedUnexpectedly);
        let cases = [
            (
                "before its start: pending",
                "2026-01-01T09:59:59Z",
                SilenceStatus::Pending,
                false,
            ),
            (
                "at its start",
                "2026-01-01T10:00:00Z",
                SilenceStatus::Active,
                true,
            ),
            (
                "within",
                "2026-01-01T11:59:59Z",
                SilenceStatus::Active,
                true,
            ),
            (
                "at its end: over",
                "2026-01-01T12:00:00Z",
                SilenceStatus::Expired,
                false,
            ),
        ];
        for (name, at, status, holds) in cases {
            assert_eq!(s.status(t(at)), status, "{name}");
            assert_eq!(s.holds(&job, t(at)), holds, "{name}");
        }
        let json = serde_json::to_value(s.clone().view(t("2026-01-01T11:00:00Z"))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "sil_1", "app_id": null, "job_id": "j1", "rule": null,
                "starts_at": "2026-01-01T10:00:00.000Z", "ends_at": "2026-01-01T12:00:00.000Z",
                "comment": "deploy", "author": null, "created_at": "2026-01-01T09:00:00.000Z",
                "status": "active"
            })
        );
    }

    #[test]
    fn new_silences_are_checked_table() {
        let now = t("2026-01-01T10:00:00Z");
        let job = Matchers {
            job_id: Some("j1".into()),
            ..Default::default()
        };
        let two_hours = SilenceEnd::For(std::time::Duration::from_secs(7200));
        let ok =
            NewSilence::new(job.clone(), None, two_hours, " deploy ", Some("ann"), now).unwrap();
        assert_eq!(ok.starts_at, now);
        assert_eq!(ok.ends_at, t("2026-01-01T12:00:00Z"));
        assert_eq!(ok.comment, "deploy");
        assert_eq!(ok.author.as_deref(), Some("ann"));
        let later = NewSilence::new(
            job.clone(),
            Some(t("2026-01-02T00:00:00Z")),
            SilenceEnd::Until(t("2026-01-02T01:00:00Z")),
            "x",
            None,
            now,
        )
        .unwrap();
        assert_eq!(
            later.starts_at,
            t("2026-01-02T00:00:00Z"),
            "a pending silence"
        );

        let bad: [(&str, Matchers, SilenceEnd, &str, &str); 6] = [
            (
                "no matcher",
                Matchers::default(),
                two_hours,
                "x",
                "no matcher",
            ),
            ("no comment", job.clone(), two_hours, "  ", "comment: empty"),
            (
                "zero duration",
                job.clone(),
                SilenceEnd::For(std::time::Duration::ZERO),
                "x",
                "for: 0s",
            ),
            (
                "too long",
                job.clone(),
                SilenceEnd::For(std::time::Duration::from_secs(400 * 86_400)),
                "x",
                "longer than 366d",
            ),
            (
                "an end in the past",
                job.clone(),
                SilenceEnd::Until(t("2026-01-01T09:00:00Z")),
                "x",
                "is not after the silence's start",
            ),
            (
                "an empty job id",
                Matchers {
                    job_id: Some(" ".into()),
                    ..Default::default()
                },
                two_hours,
                "x",
                "job_id",
            ),
        ];
        for (name, m, end, comment, want) in bad {
            let e = NewSilence::new(m, None, end, comment, None, now).expect_err(name);
            assert!(e.contains(want), "{name}: {e}");
        }
    }
}
