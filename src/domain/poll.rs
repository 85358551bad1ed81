//! What one poll of one job came to: the answer (and the transition it shows, if any) or the
//! failure, ready to be written. The poller makes these; the outbox and the store take them.

use super::Phase;
use chrono::{DateTime, Utc};
use recwatch_rtc::ErrorKind;
use recwatch_rtc::model::JobSnapshot;

/// The outcome of one poll, ready to be written.
#[derive(Clone, Debug)]
pub struct PollRecord {
    pub app_id: String,
    pub job_id: String,
    pub name: Option<String>,
    /// Stored with the job's row, so every reader knows which path the job lives on.
    pub kind: recwatch_rtc::Kind,
    pub polled_at: DateTime<Utc>,
    pub outcome: PollOutcome,
}

#[derive(Clone, Debug)]
pub enum PollOutcome {
    Ok {
        job: Box<JobSnapshot>,
        raw: String,
        /// The answer's X-request-Id, kept with a transition.
        request_id: Option<String>,
        /// Set when this poll is a transition.
        transition: Option<(Option<Phase>, Phase)>,
    },
    Failed {
        /// Stored as its text ([`ErrorKind::as_str`]) in `jobs.last_error_kind`.
        kind: ErrorKind,
        error: String,
    },
}

impl PollRecord {
    pub fn is_transition(&self) -> bool {
        matches!(
            self.outcome,
            PollOutcome::Ok {
                transition: Some(_),
                ..
            }
        )
    }
}
