//! `/healthz` (the process answers) and `/readyz` (it can do its job now), and how long the
//! poll loop may be silent before the systemd watchdog stops being fed.

use super::AppState;
use crate::outbox::Outbox;
use crate::store::Store;
use crate::vitals::Vitals;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The poll loop beats every second; this much silence means it is stuck for good, and the
/// systemd watchdog is no longer fed. (`/readyz` reports a stall sooner, see
/// [`crate::vitals::STALLED_AFTER_MS`].)
pub const LIVENESS_LIMIT_MS: u64 = 15_000;

/// 200 "ready", or 503 with every reason the daemon cannot do its job now: the database
/// cannot be read or written (full, read-only, deleted, replaced, locked), the poll loop is
/// stalled, a task it needs has stopped, or the RTC API is failing.
pub(super) async fn readyz(State(s): State<AppState>) -> Response {
    let problems = problems(&s).await;
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
            .into_response()
    }
}

pub(super) async fn problems(s: &AppState) -> Vec<String> {
    readiness_problems(&s.store, &s.vitals, &s.outbox).await
}

/// Every reason the daemon cannot do its job now; empty when it is ready. Answers within about
/// [`crate::vitals::PROBE_WAIT`], whatever the database does. `/readyz`,
/// `recwatch_ready` and the heartbeat all ask this, so they never disagree.
pub async fn readiness_problems(store: &Store, vitals: &Vitals, outbox: &Outbox) -> Vec<String> {
    let mut problems = Vec::new();
    // Never waits on the database for long: with it gone, the answer is what the last ping
    // found (issue 22, item 7).
    problems.extend(vitals.db.problem(store).await);
    problems.extend(vitals.problems());
    // Only while every account is: one blind account is its own api_unhealthy alert, and
    // the daemon goes on watching the others (issue 25).
    if outbox.every_account_unhealthy() {
        problems.push("the RTC API is failing (api_unhealthy)".into());
    }
    problems
}
