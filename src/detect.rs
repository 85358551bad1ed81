//! Transition detection: is this poll a change worth a row?
//!
//! A pure function of what was last seen and what was just polled. A change is a new `state`,
//! or a stop reason appearing or changing within the same state (a job can report STOPPED a
//! moment before its reason is filled in). Everything else (times, description) is refreshed
//! in the job's snapshot but is not a transition, so re-polling writes nothing new.
//!
//! States and stop reasons are compared as [`crate::domain::State`] and
//! [`crate::domain::StopReason`], on their normalised key: `"running"`, `" RUNNING"` and
//! `"RUNNING\0"` are one state, so noise in how the API spells a value makes no transition
//! (and no alert). An unknown value is still a state of its own.

use crate::domain::Phase;
use recwatch_rtc::model::JobSnapshot;

/// What the poll showed, compared with the last phase seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detected {
    /// The first observation of a job, or a change: one transition row.
    Transition { from: Option<Phase>, to: Phase },
    /// Same phase as before: nothing to record but the poll time.
    Unchanged,
    /// The answer has no `state`: it says nothing about the job's phase, so it neither makes
    /// a transition nor hides one.
    NoState,
}

pub fn detect(previous: Option<&Phase>, job: &JobSnapshot) -> Detected {
    let Some(now) = Phase::of(job) else {
        return Detected::NoState;
    };
    match previous {
        None => Detected::Transition {
            from: None,
            to: now,
        },
        Some(prev) if prev.state != now.state => Detected::Transition {
            from: Some(prev.clone()),
            to: now,
        },
        // A reason that disappears is a glitch in the answer, not a change.
        Some(prev) if now.stop_reason.is_some() && prev.stop_reason != now.stop_reason => {
            Detected::Transition {
                from: Some(prev.clone()),
                to: now,
            }
        }
        Some(_) => Detected::Unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recwatch_rtc::model::{State, StopReason};

    fn phase(state: &str, reason: Option<&str>) -> Phase {
        Phase::parse(state, reason)
    }

    fn job(state: Option<&str>, reason: Option<&str>) -> JobSnapshot {
        JobSnapshot {
            state: state.map(State::parse),
            stop_reason: reason.map(StopReason::parse),
            description: Some("whatever".into()),
            ..Default::default()
        }
    }

    #[test]
    fn table() {
        let t = |from: Option<Phase>, to: Phase| Detected::Transition { from, to };
        let cases: Vec<(&str, Option<Phase>, JobSnapshot, Detected)> = vec![
            (
                "first sight",
                None,
                job(Some("INIT"), None),
                t(None, phase("INIT", None)),
            ),
            (
                "first sight stopped",
                None,
                job(Some("STOPPED"), Some("TENANT_STOP")),
                t(None, phase("STOPPED", Some("TENANT_STOP"))),
            ),
            (
                "same state",
                Some(phase("RUNNING", None)),
                job(Some("RUNNING"), None),
                Detected::Unchanged,
            ),
            (
                "init to running",
                Some(phase("INIT", None)),
                job(Some("RUNNING"), None),
                t(Some(phase("INIT", None)), phase("RUNNING", None)),
            ),
            (
                "running to stopped",
                Some(phase("RUNNING", None)),
                job(Some("STOPPED"), Some("INTERNAL_ERROR")),
                t(
                    Some(phase("RUNNING", None)),
                    phase("STOPPED", Some("INTERNAL_ERROR")),
                ),
            ),
            (
                "skipped running",
                Some(phase("INIT", None)),
                job(Some("STOPPED"), Some("EXCEED_MAX_IDLE_TIME")),
                t(
                    Some(phase("INIT", None)),
                    phase("STOPPED", Some("EXCEED_MAX_IDLE_TIME")),
                ),
            ),
            (
                "reason filled in later",
                Some(phase("STOPPED", None)),
                job(Some("STOPPED"), Some("INTERNAL_ERROR")),
                t(
                    Some(phase("STOPPED", None)),
                    phase("STOPPED", Some("INTERNAL_ERROR")),
                ),
            ),
            (
                "reason vanishes",
                Some(phase("STOPPED", Some("TENANT_STOP"))),
                job(Some("STOPPED"), None),
                Detected::Unchanged,
            ),
            (
                "same stopped again",
                Some(phase("STOPPED", Some("TENANT_STOP"))),
                job(Some("STOPPED"), Some("TENANT_STOP")),
                Detected::Unchanged,
            ),
            (
                "unknown state kept",
                Some(phase("RUNNING", None)),
                job(Some("PAUSED"), None),
                t(Some(phase("RUNNING", None)), phase("PAUSED", None)),
            ),
            (
                "no state",
                Some(phase("RUNNING", None)),
                job(None, None),
                Detected::NoState,
            ),
            ("no state first", None, job(None, None), Detected::NoState),
            (
                "lower case is the same state",
                Some(phase("RUNNING", None)),
                job(Some("running"), None),
                Detected::Unchanged,
            ),
            (
                "NUL and spaces are the same state",
                Some(phase("RUNNING", None)),
                job(Some(" RUNNING\0"), None),
                Detected::Unchanged,
            ),
            (
                "an unknown state in another case is the same state",
                Some(phase("Paused", None)),
                job(Some("PAUSED "), None),
                Detected::Unchanged,
            ),
            (
                "a stop reason in another case is the same reason",
                Some(phase("STOPPED", Some("EXCEED_MAX_IDLE_TIME"))),
                job(Some("STOPPED"), Some("exceed_max_idle_time")),
                Detected::Unchanged,
            ),
            (
                "a phase stored raw by an older version equals its clean form",
                Some(phase("paused\0", None)),
                job(Some("PAUSED"), None),
                Detected::Unchanged,
            ),
            (
                "another unknown state is a change",
                Some(phase("PAUSED", None)),
                job(Some("PAUSING"), None),
                t(Some(phase("PAUSED", None)), phase("PAUSING", None)),
            ),
        ];
        for (name, prev, snapshot, want) in cases {
            assert_eq!(detect(prev.as_ref(), &snapshot), want, "{name}");
        }
    }
}
