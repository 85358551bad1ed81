//! A remediation's life (issue 15), as the `remediations` table keeps it:
//!
//! ```text
//! pending --(committed before the POST)--> posting --201--> recreated
//!    ^                                        |--4xx--> failed      (never retried)
//!    '---429 APIG.0308 / refused connection---'--5xx, timeout, lost, crash--> unknown
//! skipped: dry_run, exhausted, cannot be rebuilt (written so, never posted)
//! ```
//! Only an answer that proves nothing was created goes back to pending; a row found in
//! `posting` at start is a crash between the POST and its answer, and becomes unknown.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "TEXT", rename_all = "snake_case")]
pub enum RemediationState {
    /// Decided, not sent yet (or sent and proven not to have created anything).
    Pending,
    /// Marked just before the POST: if recwatch dies now, nobody knows whether a job exists.
    Posting,
    Recreated,
    /// Refused (4xx, or retries that never got through): nothing was created.
    Failed,
    Skipped,
    /// A job may or may not exist: a human was alerted.
    Unknown,
}

impl RemediationState {
    pub const ALL: [RemediationState; 6] = [
        RemediationState::Pending,
        RemediationState::Posting,
        RemediationState::Recreated,
        RemediationState::Failed,
        RemediationState::Skipped,
        RemediationState::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RemediationState::Pending => "pending",
            RemediationState::Posting => "posting",
            RemediationState::Recreated => "recreated",
            RemediationState::Failed => "failed",
            RemediationState::Skipped => "skipped",
            RemediationState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for RemediationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
