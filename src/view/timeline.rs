//! A job's timeline over a window (the list's 24 hours, the job page's 7 days): stretches of
//! time coloured by the phase the job was in, from its transitions. Pure: the window, the
//! changes and when polls started failing go in, stretches come out (a table test below).
//!
//! A window can hold thousands of changes (a job page with 10,000 transitions); stretches
//! shorter than a resolution are merged into one that shows the worst tone among them, so
//! the drawing stays small and a brief death never disappears between two long runs.

use super::label::{self, Tone};
use crate::domain::Phase;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// A timeline is at most this many stretches wide: the resolution short stretches merge at.
pub const RESOLUTION: i32 = 600;

/// A stretch of time in one tone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Segment {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub tone: Tone,
    /// The API's state and stop reason in this stretch; for merged stretches, those of the
    /// worst one.
    pub state: Option<String>,
    pub stop_reason: Option<String>,
    /// How many phases were merged into this stretch (1: one phase).
    pub phases: u32,
}

/// A change: from `at` the job was in `phase`.
#[derive(Clone, Debug)]
pub struct Change {
    pub at: DateTime<Utc>,
    pub phase: Phase,
}

/// A job's timeline over one window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Timeline {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub segments: Vec<Segment>,
}

/// The stretches of `[start, end)`. `changes` are in time order; the first may be before
/// `start` (the phase the job was in when the window opened). Before `watched_since` (when
/// recwatch started watching the job) it was not watched: a new job's window is mostly that,
/// not an unknown state; after it and before the first change the job was not observed. A
/// change is never hidden: the part not watched ends at the first change at the latest. From
/// `failing_since` on (polls failing now), the phase is not known.
pub fn timeline(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    changes: &[Change],
    failing_since: Option<DateTime<Utc>>,
    watched_since: Option<DateTime<Utc>>,
) -> Timeline {
    let mut raw: Vec<Segment> = Vec::new();
    let mut push = |from: DateTime<Utc>, to: DateTime<Utc>, phase: Option<&Phase>, tone: Tone| {
        let (from, to) = (from.max(start), to.min(end));
        if from < to {
            raw.push(Segment {
                start: from,
                end: to,
                tone,
                state: phase.map(|p| p.state.as_str().to_string()),
                stop_reason: phase.and_then(|p| p.stop_reason_str().map(String::from)),
                phases: 1,
            });
        }
    };
    let failing_from = failing_since.map(|f| f.max(start)).unwrap_or(end).min(end);
    let first = changes.first().map_or(failing_from, |c| c.at);
    let watched_from = watched_since.map_or(start, |w| w.min(first));
    push(
        start,
        watched_from.min(failing_from),
        None,
        Tone::NotWatched,
    );
    push(watched_from, first.min(failing_from), None, Tone::Unknown);
    for (i, c) in changes.iter().enumerate() {
        let next = changes.get(i + 1).map_or(end, |n| n.at);
        push(
            c.at,
            next.min(failing_from),
            Some(&c.phase),
            label::tone(Some(&c.phase)),
        );
    }
    push(failing_from, end, None, Tone::Failing);
    Timeline {
        start,
        end,
        segments: merge(raw, (end - start) / RESOLUTION),
    }
}

/// Joins neighbours of the same tone and phase, and gathers runs of stretches shorter than
/// `min` into one stretch with the worst tone among them (emitted once it is `min` long, or
/// when a long stretch follows), so a run of flapping never takes over a long stretch's colour
/// and at most about two stretches come out per `min`.
fn merge(raw: Vec<Segment>, min: Duration) -> Vec<Segment> {
    fn emit(out: &mut Vec<Segment>, s: Segment) {
        match out.last_mut() {
            Some(last)
                if last.phases == 1
                    && s.phases == 1
                    && last.tone == s.tone
                    && last.state == s.state
                    && last.stop_reason == s.stop_reason =>
            {
                last.end = s.end;
            }
            _ => out.push(s),
        }
    }
    let mut out: Vec<Segment> = Vec::with_capacity(raw.len().min(2 * RESOLUTION as usize));
    let mut short: Option<Segment> = None;
    for s in raw {
        if s.end - s.start >= min {
            if let Some(b) = short.take() {
                emit(&mut out, b);
            }
            emit(&mut out, s);
            continue;
        }
        let b = match short.take() {
            None => s,
            Some(mut b) => {
                if s.tone > b.tone {
                    b.tone = s.tone;
                    b.state = s.state;
                    b.stop_reason = s.stop_reason;
                }
                b.end = s.end;
                b.phases += s.phases;
                b
            }
        };
        if b.end - b.start >= min {
            emit(&mut out, b);
        } else {
            short = Some(b);
        }
    }
    if let Some(b) = short {
        emit(&mut out, b);
    }
    out
}

/// The least part of a drawn timeline (in thousandths) the watched span takes: a job watched
/// for five minutes is 0.3 % of a 24-hour bar, less than a pixel, and its bar would look
/// empty. The part not watched gives way; every stretch's title keeps its real times.
pub const MIN_WATCHED: f64 = 30.0;

impl Timeline {
    /// Where each stretch is drawn, (x, width) in thousandths of the bar: its share of the
    /// window, except that a watched span shorter than [`MIN_WATCHED`] is widened to it (the
    /// part not watched, always first, shrinks) so that a new job's bar is not empty.
    pub fn drawn_spans(&self) -> Vec<(f64, f64)> {
        let spans: Vec<(f64, f64)> = self.segments.iter().map(|s| s.span(self)).collect();
        let not_watched = match self.segments.first() {
            Some(s) if s.tone == Tone::NotWatched && spans.len() > 1 => spans[0].1,
            _ => return spans,
        };
        let watched = 1000.0 - not_watched;
        if watched >= MIN_WATCHED {
            return spans;
        }
        let from = 1000.0 - MIN_WATCHED;
        let k = MIN_WATCHED / watched.max(f64::EPSILON);
        std::iter::once((0.0, from))
            .chain(
                spans[1..]
                    .iter()
                    .map(|&(x, w)| (from + (x - not_watched) * k, w * k)),
            )
            .collect()
    }
}

impl Segment {
    /// Where the stretch starts and how wide it is, in thousandths of the window.
    pub fn span(&self, t: &Timeline) -> (f64, f64) {
        let total = (t.end - t.start).num_milliseconds().max(1) as f64;
        let x = (self.start - t.start).num_milliseconds() as f64 / total * 1000.0;
        let w = (self.end - self.start).num_milliseconds() as f64 / total * 1000.0;
        (x, w)
    }

    /// What the stretch was, in words: the API's values and the friendly label.
    pub fn describe(&self) -> String {
        let what = match (&self.state, &self.stop_reason) {
            (Some(s), Some(r)) => format!("{s} ({r}): {}", label::tone_label(self.tone)),
            (Some(s), None) => format!("{s}: {}", label::tone_label(self.tone)),
            (None, _) => label::tone_label(self.tone).to_string(),
        };
        if self.phases > 1 {
            format!("{what}, and {} other short phases", self.phases - 1)
        } else {
            what
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::hours(h)
    }

    fn ch(h: i64, state: &str, reason: Option<&str>) -> Change {
        Change {
            at: t(h),
            phase: Phase::parse(state, reason),
        }
    }

    /// (start hour, end hour, tone) of each stretch.
    fn shape(tl: &Timeline) -> Vec<(i64, i64, Tone)> {
        tl.segments
            .iter()
            .map(|s| {
                (
                    (s.start - t(0)).num_hours(),
                    (s.end - t(0)).num_hours(),
                    s.tone,
                )
            })
            .collect()
    }

    #[test]
    fn timeline_table() {
        use Tone::*;
        struct Case {
            name: &'static str,
            changes: Vec<Change>,
            failing_since: Option<i64>,
            watched_since: Option<i64>,
            want: Vec<(i64, i64, Tone)>,
        }
        let cases = [
            Case {
                name: "never observed",
                changes: vec![],
                failing_since: None,
                watched_since: None,
                want: vec![(0, 24, Unknown)],
            },
            Case {
                name: "running since before the window",
                changes: vec![ch(-5, "RUNNING", None)],
                failing_since: None,
                watched_since: None,
                want: vec![(0, 24, Running)],
            },
            Case {
                name: "first seen inside the window, then died",
                changes: vec![
                    ch(2, "INIT", None),
                    ch(3, "RUNNING", None),
                    ch(20, "STOPPED", Some("INTERNAL_ERROR")),
                ],
                failing_since: None,
                watched_since: None,
                want: vec![
                    (0, 2, Unknown),
                    (2, 3, Init),
                    (3, 20, Running),
                    (20, 24, StoppedError),
                ],
            },
            Case {
                name: "stopped by reason",
                changes: vec![
                    ch(-1, "RUNNING", None),
                    ch(6, "STOPPED", Some("EXCEED_MAX_IDLE_TIME")),
                ],
                failing_since: None,
                watched_since: None,
                want: vec![(0, 6, Running), (6, 24, StoppedIdle)],
            },
            Case {
                name: "polls failing for the last hours",
                changes: vec![ch(-1, "RUNNING", None)],
                failing_since: Some(21),
                watched_since: None,
                want: vec![(0, 21, Running), (21, 24, Failing)],
            },
            Case {
                name: "failing since before the window",
                changes: vec![ch(-3, "RUNNING", None)],
                failing_since: Some(-2),
                watched_since: None,
                want: vec![(0, 24, Failing)],
            },
            Case {
                name: "a change after the failing start is drawn as failing",
                changes: vec![ch(-1, "RUNNING", None), ch(23, "STOPPED", None)],
                failing_since: Some(22),
                watched_since: None,
                want: vec![(0, 22, Running), (22, 24, Failing)],
            },
            Case {
                name: "the same phase twice is one stretch",
                changes: vec![ch(-1, "RUNNING", None), ch(4, "running", None)],
                failing_since: None,
                watched_since: None,
                want: vec![(0, 24, Running)],
            },
            Case {
                name: "watched for the last hour: not watched before, its phases since",
                changes: vec![ch(23, "RUNNING", None)],
                failing_since: None,
                watched_since: Some(23),
                want: vec![(0, 23, NotWatched), (23, 24, Running)],
            },
            Case {
                name: "watched, then observed an hour later",
                changes: vec![ch(22, "INIT", None)],
                failing_since: None,
                watched_since: Some(21),
                want: vec![(0, 21, NotWatched), (21, 22, Unknown), (22, 24, Init)],
            },
            Case {
                name: "watched, its polls failing from the start",
                changes: vec![],
                failing_since: Some(20),
                watched_since: Some(20),
                want: vec![(0, 20, NotWatched), (20, 24, Failing)],
            },
            Case {
                name: "watched since before the window: nothing is not watched",
                changes: vec![ch(-30, "RUNNING", None)],
                failing_since: None,
                watched_since: Some(-30),
                want: vec![(0, 24, Running)],
            },
            Case {
                name: "re-watched after older history: the history is not hidden",
                changes: vec![
                    ch(2, "RUNNING", None),
                    ch(4, "STOPPED", Some("TENANT_STOP")),
                ],
                failing_since: None,
                watched_since: Some(20),
                want: vec![(0, 2, NotWatched), (2, 4, Running), (4, 24, StoppedOk)],
            },
        ];
        for c in cases {
            let tl = timeline(
                t(0),
                t(24),
                &c.changes,
                c.failing_since.map(t),
                c.watched_since.map(t),
            );
            assert_eq!(shape(&tl), c.want, "{}", c.name);
            let covered: Duration = tl.segments.iter().map(|s| s.end - s.start).sum();
            assert_eq!(covered, Duration::hours(24), "{}: no gaps", c.name);
        }
    }

    #[test]
    fn thousands_of_changes_merge_and_a_short_death_stays_visible() {
        // 10,000 changes over a week: INIT/RUNNING flapping, one 30-second death in the middle.
        let start = t(0);
        let end = t(24 * 7);
        let step = (end - start) / 10_000;
        let mut changes: Vec<Change> = (0..10_000)
            .map(|i| Change {
                at: start + step * i,
                phase: Phase::parse(if i % 2 == 0 { "INIT" } else { "RUNNING" }, None),
            })
            .collect();
        changes[5_000].phase = Phase::parse("STOPPED", Some("INTERNAL_ERROR"));
        let tl = timeline(start, end, &changes, None, None);
        assert!(
            tl.segments.len() <= 2 * RESOLUTION as usize + 1,
            "{} stretches",
            tl.segments.len()
        );
        assert!(tl.segments.iter().any(|s| s.tone == Tone::StoppedError));
        assert!(tl.segments.iter().all(|s| s.phases >= 1));
        let covered: Duration = tl.segments.iter().map(|s| s.end - s.start).sum();
        assert_eq!(covered, end - start);
        assert!(
            tl.segments
                .iter()
                .find(|s| s.tone == Tone::StoppedError)
                .unwrap()
                .describe()
                .starts_with("STOPPED (INTERNAL_ERROR)")
        );
    }

    #[test]
    fn spans_are_thousandths_of_the_window() {
        let tl = timeline(t(0), t(24), &[ch(6, "RUNNING", None)], None, None);
        let spans: Vec<(f64, f64)> = tl.segments.iter().map(|s| s.span(&tl)).collect();
        assert_eq!(spans, [(0.0, 250.0), (250.0, 750.0)]);
        assert_eq!(tl.segments[1].describe(), "RUNNING: recording");
        assert_eq!(tl.segments[0].describe(), "not observed");
    }

    #[test]
    fn a_short_watched_span_is_drawn_wide_enough_to_see() {
        // Watched for the last 5 minutes of 24 hours: 3.5 thousandths, drawn as MIN_WATCHED.
        let end = t(24);
        let since = end - Duration::minutes(5);
        let changes = [
            Change {
                at: since,
                phase: Phase::parse("INIT", None),
            },
            Change {
                at: since + Duration::seconds(150),
                phase: Phase::parse("RUNNING", None),
            },
        ];
        let tl = timeline(t(0), end, &changes, None, Some(since));
        let tones: Vec<Tone> = tl.segments.iter().map(|s| s.tone).collect();
        assert_eq!(tones, [Tone::NotWatched, Tone::Init, Tone::Running]);
        let drawn = tl.drawn_spans();
        assert_eq!(drawn[0], (0.0, 1000.0 - MIN_WATCHED));
        let watched: f64 = drawn[1..].iter().map(|s| s.1).sum();
        assert!((watched - MIN_WATCHED).abs() < 1e-6, "{drawn:?}");
        // In order, each after the one before, the last ending at the bar's end.
        assert!((drawn[1].0 - drawn[0].1).abs() < 1e-6, "{drawn:?}");
        assert!(
            (drawn[2].0 - (drawn[1].0 + drawn[1].1)).abs() < 1e-6,
            "{drawn:?}"
        );
        assert!((drawn[2].0 + drawn[2].1 - 1000.0).abs() < 1e-6, "{drawn:?}");
        // Watched long enough already: drawn to scale.
        let tl = timeline(t(0), end, &[ch(12, "RUNNING", None)], None, Some(t(12)));
        assert_eq!(tl.drawn_spans(), [(0.0, 500.0), (500.0, 500.0)]);
        // Never watched-since-known: to scale.
        let tl = timeline(t(0), end, &[ch(6, "RUNNING", None)], None, None);
        assert_eq!(tl.drawn_spans(), [(0.0, 250.0), (250.0, 750.0)]);
    }
}
