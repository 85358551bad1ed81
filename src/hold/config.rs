//! `[[maintenance]]`: recurring windows during which notifications are held back (polling
//! and recording go on). Each starts at every run of its cron schedule, read in its own time
//! zone, and lasts `duration`.
//!
//! Whether a window is active, and until when, is a pure function of the time asked
//! ([`MaintenanceWindow::active_until`], [`held_until`]): nothing is remembered, so a window
//! that began before recwatch started or reloaded is active all the same, and windows that
//! touch or overlap are one span with nothing released at the seam.

use crate::config::{ConfigError, Schedule, Table, check_range};
use crate::hold::domain::Subject;
use chrono::{DateTime, Duration as ChronoDuration, SubsecRound, Utc};
use std::collections::BTreeSet;
use std::time::Duration;

/// The longest window: past it a value cannot be meant ("30d" for "30m"?), and it bounds the
/// search for where overlapping windows end.
pub const MAX_WINDOW: Duration = Duration::from_secs(31 * 86_400);

/// How far ahead "until when" looks through windows that follow each other without a gap:
/// a schedule whose windows never stop is reported as active until this far ahead.
const HORIZON_DAYS: i64 = 400;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaintenanceWindow {
    pub name: String,
    /// When each window starts (6 fields, seconds first), in `timezone`.
    pub schedule: Schedule,
    pub duration: Duration,
    pub timezone: chrono_tz::Tz,
    /// Empty: every app.
    pub apps: Vec<String>,
    /// Empty: every job (of those apps).
    pub jobs: Vec<String>,
}

impl MaintenanceWindow {
    /// Whether this window's notifications cover the alert: its app and job listed (an empty
    /// list is every one). An api-wide alert (no app) is covered only by a window for every
    /// app and job.
    pub fn covers(&self, s: &Subject<'_>) -> bool {
        let listed = |list: &[String], v: Option<&str>| {
            list.is_empty() || v.is_some_and(|v| list.iter().any(|x| x == v))
        };
        listed(&self.apps, s.app_id) && listed(&self.jobs, s.job_id)
    }

    fn span(&self) -> ChronoDuration {
        ChronoDuration::from_std(self.duration).expect("bounded by MAX_WINDOW")
    }

    /// If a window is active at `now`, when it ends, counting the windows of this schedule
    /// that touch or overlap it as one; None when none is active.
    ///
    /// Active means a start in (now - duration, now]. Starts are found going forward from
    /// (now - duration), so a start in a DST gap resolves as croner runs it (the first time
    /// after the gap); croner's backward search resolves a gap the other way, so each start
    /// it finds is checked going forward again.
    pub fn active_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let d = self.span();
        let at = now.trunc_subsecs(0);
        let from = (at - d).with_timezone(&self.timezone);
        let first = self.schedule.next_after(&from)?.with_timezone(&Utc);
        if first > at {
            return None;
        }
        let mut end = first + d;
        let horizon = at + ChronoDuration::days(HORIZON_DAYS);
        // Each step jumps to the last start within the span so far; the bound stops a
        // schedule whose windows never end.
        for _ in 0..1000 {
            if end > horizon {
                return Some(horizon);
            }
            let last = self
                .schedule
                .last_at_or_before(&end.trunc_subsecs(0).with_timezone(&self.timezone))
                .and_then(|p| self.schedule.next_after(&(p - ChronoDuration::seconds(1))))
                .map(|s| s.with_timezone(&Utc));
            match last {
                Some(s) if s <= end && s + d > end => end = s + d,
                _ => return Some(end),
            }
        }
        Some(end)
    }

    /// The next start strictly after `now` (for saying when the next window opens).
    pub fn next_start(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .next_after(&now.trunc_subsecs(0).with_timezone(&self.timezone))
            .map(|s| s.with_timezone(&Utc))
    }
}

/// If any of `windows` is active at `now`, until when notifications stay held: windows that
/// touch or overlap (of one schedule or of several) are one span.
pub fn held_until<'a>(
    windows: impl IntoIterator<Item = &'a MaintenanceWindow>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let windows: Vec<&MaintenanceWindow> = windows.into_iter().collect();
    let mut end = windows.iter().filter_map(|w| w.active_until(now)).max()?;
    // Another window active at the end (one starting right there included) carries it on.
    for _ in 0..1000 {
        match windows.iter().filter_map(|w| w.active_until(end)).max() {
            Some(later) if later > end => end = later,
            _ => break,
        }
    }
    Some(end)
}

pub(crate) fn read_maintenance(tables: Vec<Table>) -> Result<Vec<MaintenanceWindow>, ConfigError> {
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for mut t in tables {
        t.known(&["name", "schedule", "duration", "timezone", "apps", "jobs"])?;
        let name = t.required_string("name")?;
        if name.chars().any(char::is_control) {
            return Err(t.err(
                "name",
                "has a control character; window names go into log lines and alerts' silenced_by, so use printable text",
            ));
        }
        t.path = format!("{} ({name:?})", t.path);
        if !names.insert(name.clone()) {
            return Err(t.err(
                "name",
                format!(
                    "{name:?} is used by another [[maintenance]] window; give each its own name"
                ),
            ));
        }
        let schedule_text = t.required_string("schedule")?;
        let schedule = Schedule::parse(&schedule_text).map_err(|m| t.err("schedule", m))?;
        if schedule.fields() != 6 {
            return Err(t.err(
                "schedule",
                format!("{schedule_text:?} has {} fields; a window's schedule has 6 (seconds first), e.g. \"0 0 2 * * *\" for 02:00 every day", schedule.fields()),
            ));
        }
        let duration = t.duration("duration")?.ok_or_else(|| {
            t.err(
                "duration",
                "missing; how long each window lasts, e.g. \"1h\"",
            )
        })?;
        check_range(
            &t,
            "duration",
            duration,
            MAX_WINDOW,
            "a longer hold would hide real trouble; use a silence for a one-off",
            "\"1h\"",
        )?;
        let timezone = match t.nonempty_string("timezone")? {
            None => chrono_tz::Tz::UTC,
            Some(z) => z.parse::<chrono_tz::Tz>().map_err(|_| {
                t.err(
                    "timezone",
                    format!("{z:?} is not an IANA time zone name; write e.g. \"Asia/Shanghai\", \"Europe/Berlin\" or \"UTC\""),
                )
            })?,
        };
        let apps = t.string_list("apps")?.unwrap_or_default();
        let jobs = t.string_list("jobs")?.unwrap_or_default();
        t.finish()?;
        out.push(MaintenanceWindow {
            name,
            schedule,
            duration,
            timezone,
            apps,
            jobs,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Rule;

    fn window(schedule: &str, duration: &str, tz: &str) -> MaintenanceWindow {
        MaintenanceWindow {
            name: "w".into(),
            schedule: Schedule::parse(schedule).unwrap(),
            duration: crate::config::parse_duration(duration).unwrap(),
            timezone: tz.parse().unwrap(),
            apps: Vec::new(),
            jobs: Vec::new(),
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// (case, window, the time asked, until when it is active or None)
    #[test]
    fn active_until_table() {
        let nightly_shanghai = window("0 0 2 * * *", "1h", "Asia/Shanghai");
        let berlin_0230 = window("0 30 2 * * *", "30m", "Europe/Berlin");
        let new_york_9 = window("0 0 9 * * *", "1h", "America/New_York");
        let overlapping = window("0 0,30 1 * * *", "45m", "UTC");
        let touching = window("0 0 1,2 * * *", "1h", "UTC");
        let cases: Vec<(&str, &MaintenanceWindow, &str, Option<&str>)> = vec![
            (
                "02:00 Shanghai is 18:00 UTC the day before: active at 18:30",
                &nightly_shanghai,
                "2026-03-01T18:30:00Z",
                Some("2026-03-01T19:00:00Z"),
            ),
            (
                "at its start (inclusive)",
                &nightly_shanghai,
                "2026-03-01T18:00:00Z",
                Some("2026-03-01T19:00:00Z"),
            ),
            (
                "at its end (exclusive)",
                &nightly_shanghai,
                "2026-03-01T19:00:00Z",
                None,
            ),
            (
                "02:00 UTC is not 02:00 Shanghai",
                &nightly_shanghai,
                "2026-03-01T02:30:00Z",
                None,
            ),
            (
                "started before start-up: asked mid-window, with nothing remembered",
                &nightly_shanghai,
                "2026-03-01T18:59:59.900Z",
                Some("2026-03-01T19:00:00Z"),
            ),
            (
                "DST gap (Berlin, 29 March): 02:30 does not exist, the window opens at 03:00 CEST",
                &berlin_0230,
                "2026-03-29T01:10:00Z",
                Some("2026-03-29T01:30:00Z"),
            ),
            (
                "DST gap: nothing at the 02:30 it would have been in winter time",
                &berlin_0230,
                "2026-03-29T00:40:00Z",
                None,
            ),
            (
                "DST overlap (Berlin, 25 October): 02:30 CEST, the first of the two",
                &berlin_0230,
                "2026-10-25T00:40:00Z",
                Some("2026-10-25T01:00:00Z"),
            ),
            (
                "DST overlap: not again at the second 02:30 (CET)",
                &berlin_0230,
                "2026-10-25T01:40:00Z",
                None,
            ),
            (
                "New York 09:00 in winter is 14:00 UTC",
                &new_york_9,
                "2026-01-15T14:30:00Z",
                Some("2026-01-15T15:00:00Z"),
            ),
            (
                "New York 09:00 in summer is 13:00 UTC",
                &new_york_9,
                "2026-07-15T13:30:00Z",
                Some("2026-07-15T14:00:00Z"),
            ),
            (
                "overlapping windows of one schedule are one: 01:00-01:45 and 01:30-02:15",
                &overlapping,
                "2026-01-01T01:10:00Z",
                Some("2026-01-01T02:15:00Z"),
            ),
            (
                "in the overlap",
                &overlapping,
                "2026-01-01T01:40:00Z",
                Some("2026-01-01T02:15:00Z"),
            ),
            (
                "touching windows are one: 01:00-02:00 and 02:00-03:00",
                &touching,
                "2026-01-01T01:30:00Z",
                Some("2026-01-01T03:00:00Z"),
            ),
            (
                "at the seam itself: still active",
                &touching,
                "2026-01-01T02:00:00Z",
                Some("2026-01-01T03:00:00Z"),
            ),
        ];
        for (name, w, at, want) in cases {
            assert_eq!(w.active_until(t(at)), want.map(t), "{name}");
        }
    }

    #[test]
    fn windows_of_several_schedules_hold_as_one_table() {
        let mut a = window("0 0 1 * * *", "1h", "UTC");
        a.name = "a".into();
        let mut b = window("0 0 2 * * *", "30m", "UTC");
        b.name = "b".into();
        let mut c = window("0 0 5 * * *", "1h", "UTC");
        c.name = "c".into();
        let all = [a, b, c];
        let cases = [
            (
                "in a, b touches it",
                "2026-01-01T01:30:00Z",
                Some("2026-01-01T02:30:00Z"),
            ),
            ("in b", "2026-01-01T02:10:00Z", Some("2026-01-01T02:30:00Z")),
            ("between b and c", "2026-01-01T03:00:00Z", None),
            (
                "in c, alone",
                "2026-01-01T05:00:00Z",
                Some("2026-01-01T06:00:00Z"),
            ),
        ];
        for (name, at, want) in cases {
            assert_eq!(held_until(&all, t(at)), want.map(t), "{name}");
        }
        assert_eq!(
            held_until(&[], t("2026-01-01T01:30:00Z")),
            None,
            "no windows"
        );
    }

    #[test]
    fn a_window_covers_its_apps_and_jobs() {
        let mut w = window("0 0 2 * * *", "1h", "UTC");
        let s = |app: Option<&'static str>, job: Option<&'static str>| Subject {
            app_id: app,
            job_id: job,
            rule: Rule::StoppedUnexpectedly,
        };
        assert!(w.covers(&s(Some("a"), Some("j"))), "everything");
        assert!(w.covers(&s(None, None)), "everything, api-wide too");
        w.apps = vec!["a".into()];
        assert!(w.covers(&s(Some("a"), Some("j"))));
        assert!(!w.covers(&s(Some("b"), Some("j"))), "another app");
        assert!(!w.covers(&s(None, None)), "api-wide: not one app's");
        w.jobs = vec!["j".into()];
        assert!(!w.covers(&s(Some("a"), Some("k"))), "another job");
    }

    const BASE: &str = r#"
[api]
project_id = "p"
[api.auth]
access_key = "AK"
secret_key = "SK"
"#;

    #[test]
    fn maintenance_keys_are_read_and_checked_table() {
        let parse = |extra: &str| {
            crate::config::parse_str(
                &format!("{BASE}{extra}"),
                Vec::<(String, String)>::new(),
                None,
            )
        };
        let c = parse(
            "[[maintenance]]\nname = \"nightly deploy\"\nschedule = \"0 0 2 * * *\"\nduration = \"1h\"\ntimezone = \"Asia/Shanghai\"\napps = [\"5fcd\"]\njobs = []\n",
        )
        .unwrap();
        let w = &c.maintenance[0];
        assert_eq!(w.name, "nightly deploy");
        assert_eq!(w.timezone, chrono_tz::Tz::Asia__Shanghai);
        assert_eq!(w.duration, Duration::from_secs(3600));
        assert_eq!(
            (w.apps.as_slice(), w.jobs.len()),
            (&["5fcd".to_string()][..], 0)
        );
        let utc =
            parse("[[maintenance]]\nname = \"w\"\nschedule = \"0 0 2 * * *\"\nduration = \"1h\"\n")
                .unwrap();
        assert_eq!(
            utc.maintenance[0].timezone,
            chrono_tz::Tz::UTC,
            "UTC by default"
        );

        let w = |body: &str| format!("[[maintenance]]\nname = \"w\"\n{body}");
        let bad = [
            (
                "five fields",
                w("schedule = \"0 2 * * *\"\nduration = \"1h\"\n"),
                "maintenance[0] (\"w\").schedule",
                "has 5 fields",
            ),
            (
                "a year field",
                w("schedule = \"0 0 2 * * * 2030\"\nduration = \"1h\"\n"),
                "schedule",
                "has 7 fields; a window's schedule has 6",
            ),
            (
                "no duration",
                w("schedule = \"0 0 2 * * *\"\n"),
                "duration",
                "missing; how long each window lasts",
            ),
            (
                "zero duration",
                w("schedule = \"0 0 2 * * *\"\nduration = \"0s\"\n"),
                "duration",
                "longer than 0s",
            ),
            (
                "too long",
                w("schedule = \"0 0 2 * * *\"\nduration = \"60d\"\n"),
                "duration",
                "the most it may be",
            ),
            (
                "not a time zone",
                w("schedule = \"0 0 2 * * *\"\nduration = \"1h\"\ntimezone = \"Beijing\"\n"),
                "timezone",
                "not an IANA time zone name",
            ),
            (
                "a misspelt key",
                w("schedule = \"0 0 2 * * *\"\nduration = \"1h\"\napp = [\"a\"]\n"),
                "app",
                "did you mean apps",
            ),
            (
                "two windows of one name",
                format!(
                    "{}{}",
                    w("schedule = \"0 0 2 * * *\"\nduration = \"1h\"\n"),
                    w("schedule = \"0 0 3 * * *\"\nduration = \"1h\"\n")
                ),
                "name",
                "is used by another [[maintenance]] window",
            ),
        ];
        for (name, extra, key, want) in bad {
            let e = parse(&extra).expect_err(name);
            assert!(e.location.contains(key), "{name}: {e}");
            assert!(e.message.contains(want), "{name}: {e}");
        }
    }

    /// The commented example in config.example.toml, uncommented, loads.
    #[test]
    fn the_example_window_loads() {
        let text = include_str!("../../config.example.toml");
        let block: String = text
            .lines()
            .skip_while(|l| *l != "# [[maintenance]]")
            .take_while(|l| l.starts_with("# "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        assert!(block.starts_with("[[maintenance]]"), "{block}");
        let c = crate::config::parse_str(
            &format!("{BASE}{block}"),
            Vec::<(String, String)>::new(),
            None,
        )
        .unwrap();
        assert_eq!(c.maintenance[0].name, "nightly deploy");
        assert_eq!(c.maintenance[0].timezone, chrono_tz::Tz::Asia__Shanghai);
    }
}
