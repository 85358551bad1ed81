//! The dispatcher's answer to refused credentials: past a few refusals in a row every poll
//! stops for `api.auth_backoff`, so the gateway's 5-minute key lock is never provoked.

use super::super::budget::later;
use super::round;
use crate::poller::budget::Budget;
use recwatch_rtc::client::{ErrorKind, RtcError};
use std::time::Duration;
use tokio::time::Instant;
use tracing::error;

/// Refused credentials, `streak` times in a row: every poll stops for `pause`
/// (`api.auth_backoff`, doubling while it lasts, see `next::after_poll`) so the gateway
/// does not lock the key.
pub(super) fn pause_for_refusals(
    budget: &Budget,
    streak: u32,
    e: &RtcError,
    pause: Duration,
    now: Instant,
) {
    {
        budget.pause_until(later(now, pause));
        // A skewed clock is refused like a bad key: say which it is.
        let fix = match e.clock_skew_minutes {
            Some(m) => recwatch_rtc::client::clock_message(m),
            None => ErrorKind::Unauthorized.hint().to_string(),
        };
        error!(
            refused_in_a_row = streak,
            pause = %crate::config::format_duration(round(pause)),
            request_id = e.request_id.as_deref().unwrap_or("-"),
            "the API refused the credentials {} times in a row: stopping every poll so the gateway does not lock the key; {fix}",
            streak
        );
    }
}
