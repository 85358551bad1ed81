//! The types the rest of the daemon speaks: which job ([`JobKey`], of a [`JobKind`]) and its
//! [`Phase`] (the API's [`State`] and [`StopReason`], re-exported from `recwatch-rtc`, as are
//! a failed poll's [`ErrorKind`] and the job kind); what a poll came to ([`PollRecord`]); the alert [`Rule`]s with their
//! [`Severity`] and [`Status`], a condition's [`EpisodeStep`], the [`Alert`] payload and its
//! [`AlertId`]; the [`DeliveryState`]s; and how times are written. (Silences and what holds a
//! notification back are the `hold` feature's, `crate::hold::domain`.)
//!
//! Nothing here does I/O beyond reading the host name; every other module may depend on this
//! one and this one depends on none of them, so it is where a type goes when two steps of the
//! data path both need it.

mod alert;
mod delivery;
mod episode;
mod job;
mod phase;
mod poll;
mod rule;
mod time;
pub mod words;

pub use alert::{
    Alert, AlertId, DEFAULT_ACCOUNT, JobFacts, PAYLOAD_VERSION, RemediationAction,
    RemediationFacts, TransitionFacts, hostname, test_alert,
};
pub use delivery::DeliveryState;
pub use episode::{EpisodeStep, OpenEpisode};
pub use job::{IdsHash, JobIds, JobKey, JobSource, MAX_ID_CHARS, RuntimeJob, check_id, job_path};
pub use phase::Phase;
pub use poll::{PollOutcome, PollRecord};
pub use recwatch_rtc::ErrorKind;
/// Which of the API's two job kinds a watched job is (`individual` or `mix`): it picks the
/// path the job is polled on (and re-created on).
pub use recwatch_rtc::Kind as JobKind;
pub use recwatch_rtc::model::{State, StopReason};
pub use rule::{Rule, Severity, Status};
pub use time::{NotATime, Timestamp, mul_saturating, read_rfc3339, timestamp};
