//! A condition's episode: from the poll where the condition starts to hold (stuck_init,
//! job_not_found, api_unhealthy) to the poll where it no longer does. One episode is one
//! firing alert, a reminder every `repeat_interval` while it lasts, and one resolved notice.

use chrono::{DateTime, Utc};

/// An episode still open, as the database holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenEpisode {
    pub id: i64,
    /// When its last alert (the firing one or a reminder) was made.
    pub last_notified: DateTime<Utc>,
    /// Reminders made so far.
    pub reminders: i64,
}

/// What one evaluation of a condition does to its episode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EpisodeStep {
    /// Nothing to write: the condition is off and nothing is open, or a reminder is not due.
    Nothing,
    /// The condition starts: open an episode, fire.
    Open,
    /// The condition lasts and a reminder is due: this is reminder number `n` of episode `id`.
    Remind { id: i64, n: i64 },
    /// The condition is over: resolve episode `id`; `notify` says whether a resolved notice
    /// goes out (`rules.send_resolved`). The episode is resolved either way.
    Resolve { id: i64, notify: bool },
}

impl EpisodeStep {
    /// The step's part of the alert's dedup key (`e:{episode}:{step}`): stored, so it never
    /// changes. A step that makes no alert has none.
    pub fn key(&self) -> Option<String> {
        match self {
            EpisodeStep::Open => Some("firing".into()),
            EpisodeStep::Remind { n, .. } => Some(format!("reminder:{n}")),
            EpisodeStep::Resolve { notify: true, .. } => Some("resolved".into()),
            EpisodeStep::Resolve { notify: false, .. } | EpisodeStep::Nothing => None,
        }
    }
}
