//! How a phase is shown: its tone (the colour, always with text beside it) and a friendly
//! label beside the API's own values. Pure; a table test below.

use crate::domain::Phase;
use recwatch_rtc::model::{State, StopReason};
use serde::Serialize;

/// The colour family of a job or a stretch of its timeline. Every tone has a text label; the
/// colour only repeats it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Tone {
    /// Before the job was watched: recwatch was not looking (first in the order: it never
    /// wins a merge over anything observed).
    NotWatched,
    /// Recording.
    Running,
    /// Not observed (before the first poll, or a state the API invented).
    Unknown,
    /// Stopped on purpose: the tenant's own stop call.
    StoppedOk,
    /// Initialising.
    Init,
    /// Stopped because nobody published for `max_idle_time`.
    StoppedIdle,
    /// Polls of the job are failing: its state is not known now.
    Failing,
    /// Stopped by a service error or for a reason nobody asked for.
    StoppedError,
}

impl Tone {
    /// The CSS class suffix and JSON value.
    pub fn as_str(self) -> &'static str {
        match self {
            Tone::NotWatched => "not_watched",
            Tone::Running => "running",
            Tone::Unknown => "unknown",
            Tone::StoppedOk => "stopped_ok",
            Tone::Init => "init",
            Tone::StoppedIdle => "stopped_idle",
            Tone::Failing => "failing",
            Tone::StoppedError => "stopped_error",
        }
    }

    /// How much a stretch of this tone matters when short stretches are merged into one on a
    /// timeline: the merged stretch shows the worst of them, so a brief death stays visible.
    /// The derive's order is this rank.
    pub fn worst(self, other: Tone) -> Tone {
        self.max(other)
    }
}

/// The tone of a phase (None: never observed).
pub fn tone(phase: Option<&Phase>) -> Tone {
    let Some(p) = phase else {
        return Tone::Unknown;
    };
    match (&p.state, &p.stop_reason) {
        (State::Running, _) => Tone::Running,
        (State::Init, _) => Tone::Init,
        (State::Stopped, Some(StopReason::TenantStop)) => Tone::StoppedOk,
        (State::Stopped, Some(StopReason::ExceedMaxIdleTime)) => Tone::StoppedIdle,
        (State::Stopped, _) => Tone::StoppedError,
        (State::Other(_), _) => Tone::Unknown,
    }
}

/// A friendly label for a phase, shown beside the API's own values (never instead of them).
pub fn label(phase: Option<&Phase>) -> &'static str {
    let Some(p) = phase else {
        return "not polled yet";
    };
    match (&p.state, &p.stop_reason) {
        (State::Running, _) => "recording",
        (State::Init, _) => "starting",
        (State::Stopped, Some(StopReason::TenantStop)) => "stopped by the tenant",
        (State::Stopped, Some(StopReason::ExceedMaxIdleTime)) => "stopped: nobody published",
        (State::Stopped, Some(StopReason::InternalError)) => "died: service error",
        (State::Stopped, _) => "stopped unexpectedly",
        (State::Other(_), _) => "state unknown to recwatch",
    }
}

/// The label of a tone on its own (a legend, a merged timeline stretch).
pub fn tone_label(t: Tone) -> &'static str {
    match t {
        Tone::NotWatched => "not watched yet",
        Tone::Running => "recording",
        Tone::Unknown => "not observed",
        Tone::StoppedOk => "stopped by the tenant",
        Tone::Init => "starting",
        Tone::StoppedIdle => "stopped: idle",
        Tone::Failing => "polls failing",
        Tone::StoppedError => "stopped unexpectedly",
    }
}

/// The phase stored as text (None: no state known).
pub fn stored_phase(state: Option<&str>, stop_reason: Option<&str>) -> Option<Phase> {
    state.map(|s| Phase::parse(s, stop_reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tones_and_labels_table() {
        let cases = [
            ("never polled", None, None, Tone::Unknown, "not polled yet"),
            (
                "recording",
                Some("RUNNING"),
                None,
                Tone::Running,
                "recording",
            ),
            ("initialising", Some("INIT"), None, Tone::Init, "starting"),
            (
                "the tenant's stop",
                Some("STOPPED"),
                Some("TENANT_STOP"),
                Tone::StoppedOk,
                "stopped by the tenant",
            ),
            (
                "idle",
                Some("STOPPED"),
                Some("EXCEED_MAX_IDLE_TIME"),
                Tone::StoppedIdle,
                "stopped: nobody published",
            ),
            (
                "service error",
                Some("STOPPED"),
                Some("INTERNAL_ERROR"),
                Tone::StoppedError,
                "died: service error",
            ),
            (
                "a reason the API invented",
                Some("STOPPED"),
                Some("RECORDER_CRASHED"),
                Tone::StoppedError,
                "stopped unexpectedly",
            ),
            (
                "no reason",
                Some("STOPPED"),
                None,
                Tone::StoppedError,
                "stopped unexpectedly",
            ),
            (
                "lower-case spelling",
                Some("running"),
                None,
                Tone::Running,
                "recording",
            ),
            (
                "a state the API invented",
                Some("PAUSED"),
                None,
                Tone::Unknown,
                "state unknown to recwatch",
            ),
        ];
        for (name, state, reason, want_tone, want_label) in cases {
            let p = stored_phase(state, reason);
            assert_eq!(tone(p.as_ref()), want_tone, "{name}");
            assert_eq!(label(p.as_ref()), want_label, "{name}");
        }
    }

    #[test]
    fn the_worst_tone_wins_a_merge() {
        assert_eq!(Tone::Running.worst(Tone::StoppedError), Tone::StoppedError);
        assert_eq!(Tone::Failing.worst(Tone::Init), Tone::Failing);
        assert_eq!(Tone::Unknown.worst(Tone::Running), Tone::Unknown);
        assert_eq!(Tone::StoppedOk.worst(Tone::StoppedOk), Tone::StoppedOk);
    }
}
