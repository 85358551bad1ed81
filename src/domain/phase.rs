//! A job's phase: its state and, once stopped, why. Transitions are made of phases.

use recwatch_rtc::model::{JobSnapshot, State, StopReason};

/// The part of a job that transitions are made of. Equality is that of [`State`] and
/// [`StopReason`] (on their normalised key), so a phase read back from an older database that
/// kept a value as the API spelled it (`"running"`, `"paused\0"`) still equals the same phase
/// polled now.
///
/// The database keeps the text: [`State::as_str`] on write, [`Phase::parse`] on read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Phase {
    pub state: State,
    pub stop_reason: Option<StopReason>,
}

impl Phase {
    /// The phase a polled job reports; `None` when the answer has no state.
    pub fn of(job: &JobSnapshot) -> Option<Phase> {
        Some(Phase {
            state: job.state.clone()?,
            stop_reason: job.stop_reason.clone(),
        })
    }

    /// A phase from its stored text.
    pub fn parse(state: &str, stop_reason: Option<&str>) -> Phase {
        Phase {
            state: State::parse(state),
            stop_reason: stop_reason.map(StopReason::parse),
        }
    }

    /// The stop reason as text, as stored and shown.
    pub fn stop_reason_str(&self) -> Option<&str> {
        self.stop_reason.as_ref().map(StopReason::as_str)
    }

    /// A STOPPED job cannot change again.
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_text_table() {
        let cases = [
            ("documented state", "RUNNING", None, State::Running, None),
            (
                "stopped with a reason",
                "STOPPED",
                Some("TENANT_STOP"),
                State::Stopped,
                Some(StopReason::TenantStop),
            ),
            (
                "lower case from an older database",
                "stopped",
                Some("exceed_max_idle_time"),
                State::Stopped,
                Some(StopReason::ExceedMaxIdleTime),
            ),
            (
                "unknown state kept",
                "PAUSED",
                None,
                State::Other("PAUSED".into()),
                None,
            ),
        ];
        for (name, state, reason, want_state, want_reason) in cases {
            let p = Phase::parse(state, reason);
            assert!(
                matches!(
                    (&p.state, &want_state),
                    (State::Init, State::Init)
                        | (State::Running, State::Running)
                        | (State::Stopped, State::Stopped)
                        | (State::Other(_), State::Other(_))
                ),
                "{name}: variant {:?}",
                p.state
            );
            assert_eq!(p.state, want_state, "{name}");
            assert_eq!(p.stop_reason, want_reason, "{name}");
        }
    }

    #[test]
    fn written_text_is_the_documented_spelling() {
        let p = Phase::parse(" stopped\0", Some("internal_error"));
        assert_eq!(p.state.as_str(), "STOPPED");
        assert_eq!(p.stop_reason_str(), Some("INTERNAL_ERROR"));
        assert!(p.is_terminal());
        assert!(!Phase::parse("RUNNING", None).is_terminal());
    }
}
