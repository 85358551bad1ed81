//! The API's health as the poller sees it: a pure state machine ([`Health`]) fed every poll's
//! outcome, and the task that writes its changes (the api_unhealthy episode) through the
//! outbox, keeping what the database refuses until it takes it.

use super::OWED_RETRY;
use super::budget::later;
use crate::config::Config;
use crate::outbox::{ApiHealthChange, Outbox, OwedHealth};
use crate::store::Store;
use recwatch_rtc::client::{ErrorKind, RtcError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// After this many refused requests in a row the poller stops for `api.auth_backoff`.
pub const AUTH_FAILURES_BEFORE_BACKOFF: u32 = 3;

/// At most this many polls in a row must fail before the API counts as unhealthy, however
/// many jobs are watched: with 10,000 jobs, 50 failures in a row and not one answer is an
/// outage, and it is seen within seconds.
const HEALTH_WINDOW_CAP: usize = 50;

/// How many polls in a row (with no answer between) must fail before the API counts as
/// unhealthy: `threshold`, and at least one per job being polled (up to
/// [`HEALTH_WINDOW_CAP`]). A job that keeps failing on its own, or a few that sit next to each
/// other in the schedule, never make a streak that long while the other jobs are answered, so
/// the alert does not fire and resolve every round.
pub fn failures_needed(threshold: u32, jobs: usize) -> u32 {
    threshold.max(jobs.min(HEALTH_WINDOW_CAP) as u32)
}

/// The API's health as seen across every poll: a pure state machine fed each poll's outcome,
/// so its rules are tested with a table.
///
/// - an answer (a job record, or the RTC service saying a job does not exist) is health;
/// - refusals: after [`AUTH_FAILURES_BEFORE_BACKOFF`] in a row polling stops, so the API is
///   unhealthy at once;
/// - throttling: `threshold` throttled answers in a row (the whole poller is paused);
/// - anything else (5xx, timeouts, connection errors, redirects, the gateway's 404, other 4xx,
///   unreadable answers, answers about another job): [`failures_needed`] in a row.
///
/// It becomes healthy again with the first answer.
#[derive(Default)]
pub(super) struct Health {
    /// A request has succeeded since start or since the last refusal.
    pub(super) verified: bool,
    pub(super) auth_streak: u32,
    pub(super) throttle_streak: u32,
    /// Failures in a row of any kind but not-found (the API answered about the job).
    pub(super) failure_streak: u32,
    pub(super) unhealthy: bool,
    pub(super) last_reminder_check: Option<Instant>,
}

/// What a poll's result asks of the health writer ([`Health::tell`]).
pub(super) enum Told {
    /// The API's health changed.
    Change(ApiHealthChange),
    /// Still down: a reminder may be due (checked at most once a second).
    Remind,
}

impl Health {
    /// Feeds a poll's result to the API's health: a change, or while the API is down a
    /// reminder check at most once a second, is for the health writer.
    pub(super) fn tell(
        &mut self,
        result: &Result<(), RtcError>,
        threshold: u32,
        in_rotation: usize,
        now: Instant,
    ) -> Option<Told> {
        let change = match result {
            Ok(()) => self.success(),
            Err(e) => self.failure(e, threshold, in_rotation),
        };
        match change {
            Some(change) => Some(Told::Change(change)),
            None if result.is_err()
                && self.unhealthy
                && self
                    .last_reminder_check
                    .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1)) =>
            {
                self.last_reminder_check = Some(now);
                Some(Told::Remind)
            }
            None => None,
        }
    }

    pub(super) fn success(&mut self) -> Option<ApiHealthChange> {
        self.verified = true;
        self.auth_streak = 0;
        self.throttle_streak = 0;
        self.failure_streak = 0;
        if std::mem::take(&mut self.unhealthy) {
            Some(ApiHealthChange::Recovered)
        } else {
            None
        }
    }

    /// A failed poll; `jobs` is how many jobs are being polled.
    pub(super) fn failure(
        &mut self,
        e: &RtcError,
        threshold: u32,
        jobs: usize,
    ) -> Option<ApiHealthChange> {
        let from_rtc = e
            .error_code
            .as_deref()
            .is_some_and(|c| c.starts_with("RTC."));
        match e.kind {
            // The RTC service answered, about this job only.
            ErrorKind::NotFound => return self.success(),
            ErrorKind::Unauthorized => {
                self.verified = false;
                self.auth_streak += 1;
            }
            ErrorKind::Throttled => self.throttle_streak += 1,
            // The RTC service itself answered (a deactivated app, a bad parameter): the
            // credentials work, though the failure still counts.
            _ if from_rtc => {
                self.verified = true;
                self.auth_streak = 0;
            }
            _ => {}
        }
        self.failure_streak = self.failure_streak.saturating_add(1);
        if self.unhealthy {
            return None;
        }
        let reason = if self.auth_streak >= AUTH_FAILURES_BEFORE_BACKOFF {
            format!(
                "the RTC API refused the credentials {} times in a row, so every poll stops for api.auth_backoff; the last: {}",
                self.auth_streak,
                e.cause()
            )
        } else if self.throttle_streak >= threshold {
            format!(
                "{} polls in a row were throttled; the last: {}",
                self.throttle_streak,
                e.cause()
            )
        } else if self.failure_streak >= failures_needed(threshold, jobs) {
            format!(
                "the last {} polls failed and none was answered; the last: {}",
                self.failure_streak,
                e.cause()
            )
        } else {
            return None;
        };
        self.unhealthy = true;
        Some(ApiHealthChange::Unhealthy { reason })
    }
}

/// Writes the API's health changes as the poller decides them. A change the database
/// refuses stays owed (folded as [`OwedHealth`] says, so memory stays bounded) and is written
/// again every [`OWED_RETRY`] until it is taken, however long that is; a new change is tried
/// at once. Reminder checks (`None`) are folded into one per batch, and skipped while changes
/// are owed (the owed write brings the episode up to date first). A panic while writing is a
/// bug, not an outside fault: it is contained and reported, and what it tried to write is
/// dropped rather than retried into the same panic for ever.
pub(super) async fn write_api_health(
    outbox: Outbox,
    store: Store,
    mut rx: mpsc::UnboundedReceiver<HealthMessage>,
) {
    let mut w = HealthWriter {
        outbox,
        store,
        owed: OwedHealth::default(),
        config: None,
        retry_at: None,
        refusals: 0,
    };
    let mut open = true;
    loop {
        let retry_at = w.retry_at;
        let retry = async {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let (changed, remind) = tokio::select! {
            msg = rx.recv(), if open => match msg {
                // Stopping: one last try for what is owed.
                None => {
                    open = false;
                    (true, false)
                }
                Some(first) => {
                    let mut batch = vec![first];
                    while let Ok(next) = rx.try_recv() {
                        batch.push(next);
                    }
                    w.take(batch)
                }
            },
            _ = retry => (true, false),
        };
        // No configuration yet means no message yet, so nothing owed.
        let Some(config) = w.config.clone() else {
            if open {
                continue;
            }
            break;
        };
        w.write(&config, changed, remind).await;
        if !open {
            if !w.owed.is_empty() {
                error!(
                    "the API's health could not be written before stopping; the next start takes it up from the episode on record and its first polls"
                );
            }
            break;
        }
    }
}

/// What the dispatcher sends the health writer: a change of the API's health (`None`: check
/// whether a reminder is due) and the configuration to write it with.
pub(super) type HealthMessage = (Option<ApiHealthChange>, Arc<Config>);

/// The health writer's state between messages.
struct HealthWriter {
    outbox: Outbox,
    store: Store,
    owed: OwedHealth,
    /// The configuration that came with the latest message: rules and channels to write with.
    config: Option<Arc<Config>>,
    retry_at: Option<Instant>,
    /// Writes refused in a row, so the first refusal is a warning and the rest are not.
    refusals: u32,
}

impl HealthWriter {
    /// Takes a batch of messages: changes are noted at once and owed; returns whether any
    /// change came, and whether a reminder check was asked for.
    fn take(&mut self, batch: Vec<HealthMessage>) -> (bool, bool) {
        let (mut changed, mut remind) = (false, false);
        for (change, c) in batch {
            match change {
                Some(change) => {
                    self.outbox.note_api_health(&c.api.name, &change);
                    self.owed.push(change);
                    changed = true;
                }
                None => remind = true,
            }
            self.config = Some(c);
        }
        (changed, remind)
    }

    /// Writes what is owed (when something changed), or checks whether a reminder is due
    /// (when nothing is owed), and keeps what the database refused for the next try.
    async fn write(&mut self, config: &Config, changed: bool, remind: bool) {
        let (outbox, store, owed) = (&self.outbox, &self.store, &self.owed);
        let write = async {
            if changed && !owed.is_empty() {
                Some(outbox.write_api_health(store, owed, config).await)
            } else if remind && owed.is_empty() {
                if let Err(e) = outbox.api_still_unhealthy(store, config).await {
                    debug!(
                        "the api_unhealthy reminder check was not written: {e:#}; the next failed poll asks again"
                    );
                }
                None
            } else {
                None
            }
        };
        match crate::vitals::contain(write).await {
            Ok(None) => {}
            Ok(Some(Ok(()))) => {
                if self.refusals > 0 {
                    info!(
                        attempts = self.refusals + 1,
                        "the API's health is written at last"
                    );
                }
                self.owed.clear();
                self.refusals = 0;
                self.retry_at = None;
            }
            Ok(Some(Err(e))) => {
                self.refusals = self.refusals.saturating_add(1);
                if self.refusals == 1 {
                    warn!(
                        "cannot record the API's health yet: {e:#}; kept, and written again every {} s until the database takes it",
                        OWED_RETRY.as_secs()
                    );
                } else {
                    debug!(
                        attempt = self.refusals,
                        "cannot record the API's health yet: {e:#}"
                    );
                }
                self.retry_at = Some(later(Instant::now(), OWED_RETRY));
            }
            Err(why) => {
                error!(
                    "writing the API's health panicked: {why}; this change of it is not written"
                );
                metrics::counter!("recwatch_task_panics_total", "task" => "api_health")
                    .increment(1);
                self.owed.clear();
                self.refusals = 0;
                self.retry_at = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error of `kind` as the client would make it.
    /// `tell`: a change goes at once; while the API stays down a reminder check is asked for
    /// at most once a second of the poller's clock; the first answer is the recovery.
    #[test]
    fn a_down_api_asks_for_a_reminder_check_at_most_once_a_second() {
        let mut h = Health::default();
        let t0 = Instant::now();
        let s = |secs: u64| t0 + std::time::Duration::from_secs(secs);
        let down = Err(err(ErrorKind::Connection));
        // Connection failures in a row until the threshold (3 for 1 job) says it is down.
        let mut told = Vec::new();
        for _ in 0..5 {
            told.push(match h.tell(&down, 3, 1, s(0)) {
                Some(Told::Change(ApiHealthChange::Unhealthy { .. })) => "unhealthy",
                Some(Told::Change(_)) => "other change",
                Some(Told::Remind) => "remind",
                None => "-",
            });
        }
        assert_eq!(told, ["-", "-", "unhealthy", "remind", "-"]);
        assert!(
            h.tell(&down, 3, 1, s(0)).is_none(),
            "the same second: no second check"
        );
        assert!(matches!(h.tell(&down, 3, 1, s(1)), Some(Told::Remind)));
        assert!(
            h.tell(&Err(err(ErrorKind::Connection)), 3, 1, s(1))
                .is_none()
        );
        assert!(matches!(
            h.tell(&Ok(()), 3, 1, s(1)),
            Some(Told::Change(ApiHealthChange::Recovered))
        ));
        assert!(
            h.tell(&Ok(()), 3, 1, s(2)).is_none(),
            "healthy and told: nothing more"
        );
    }

    fn err(kind: ErrorKind) -> RtcError {
        let (status, code, detail) = match kind {
            ErrorKind::NotFound => (Some(404), Some("RTC.00001003"), None),
            ErrorKind::EndpointNotFound => (Some(404), Some("APIG.0101"), None),
            ErrorKind::Redirect => (Some(302), None, Some("to http://login.example/")),
            ErrorKind::Unauthorized => (Some(401), Some("APIG.0301"), None),
            ErrorKind::Throttled => (Some(429), Some("APIG.0308"), None),
            ErrorKind::Server => (Some(500), Some("RTC.00002001"), None),
            ErrorKind::Rejected => (Some(400), Some("RTC.00001016"), None),
            ErrorKind::Connection => (None, None, Some("Connection refused")),
            _ => (Some(200), None, None),
        };
        RtcError {
            kind,
            status,
            error_code: code.map(str::to_string),
            error_msg: None,
            request_id: Some("req-1".into()),
            detail: detail.map(str::to_string),
            clock_skew_minutes: None,
            not_sent: false,
        }
    }

    /// Long because it is a table: one named case of a few lines per rule of [`Health`].
    #[test]
    fn health_table() {
        use ErrorKind::*;
        // Each step: a poll's outcome (None: answered) and the change it makes: "-" none,
        // "U" unhealthy, "R" recovered. `why` must be in the unhealthy reason.
        type Step = (Option<ErrorKind>, &'static str);
        let ok: Option<ErrorKind> = None;
        let cases: Vec<(&str, u32, usize, Vec<Step>, &str)> = vec![
            (
                "three failures in a row with three jobs",
                3,
                3,
                vec![
                    (Some(Server), "-"),
                    (Some(Timeout), "-"),
                    (Some(Server), "U"),
                ],
                "the last 3 polls failed",
            ),
            (
                "one episode, one change; the first answer recovers",
                3,
                1,
                vec![
                    (Some(Server), "-"),
                    (Some(Server), "-"),
                    (Some(Server), "U"),
                    (Some(Server), "-"),
                    (ok, "R"),
                    (ok, "-"),
                ],
                "RTC.00002001",
            ),
            (
                "one job failing among answered ones never flaps",
                3,
                4,
                [(Some(Server), "-"), (ok, "-"), (ok, "-"), (ok, "-")].repeat(5),
                "",
            ),
            (
                "three adjacent failing jobs among ten do not flap",
                3,
                10,
                [
                    vec![
                        (Some(Server), "-"),
                        (Some(Timeout), "-"),
                        (Some(WrongJob), "-"),
                    ],
                    vec![(ok, "-"); 7],
                ]
                .concat()
                .repeat(3),
                "",
            ),
            (
                "every one of ten jobs failing is an outage",
                3,
                10,
                [
                    vec![(Some(Connection), "-"); 9],
                    vec![(Some(Connection), "U")],
                ]
                .concat(),
                "(Connection refused) [request id req-1]; check the network",
            ),
            (
                "the window is capped at 50 polls",
                3,
                10_000,
                [vec![(Some(Server), "-"); 49], vec![(Some(Server), "U")]].concat(),
                "the last 50 polls failed",
            ),
            (
                "a constant redirect says where to",
                3,
                2,
                vec![
                    (Some(Redirect), "-"),
                    (Some(Redirect), "-"),
                    (Some(Redirect), "U"),
                ],
                "redirected: HTTP 302 (to http://login.example/) [request id req-1]; check api.endpoint",
            ),
            (
                "a constant gateway 404 is the endpoint, not the jobs",
                3,
                3,
                vec![
                    (Some(EndpointNotFound), "-"),
                    (Some(EndpointNotFound), "-"),
                    (Some(EndpointNotFound), "U"),
                ],
                "HTTP 404 APIG.0101 [request id req-1]; check api.endpoint",
            ),
            (
                "the same 4xx on every poll",
                3,
                3,
                vec![
                    (Some(Rejected), "-"),
                    (Some(Rejected), "-"),
                    (Some(Rejected), "U"),
                ],
                "RTC.00001016",
            ),
            (
                "the RTC service's not-found is an answer",
                1,
                1,
                vec![(Some(NotFound), "-"), (Some(NotFound), "-")],
                "",
            ),
            (
                "not-found recovers an outage",
                2,
                1,
                vec![
                    (Some(Server), "-"),
                    (Some(Server), "U"),
                    (Some(NotFound), "R"),
                ],
                "",
            ),
            (
                "three refusals in a row stop polling: unhealthy at once",
                3,
                100,
                vec![
                    (Some(Unauthorized), "-"),
                    (Some(Unauthorized), "-"),
                    (Some(Unauthorized), "U"),
                ],
                "refused the credentials 3 times in a row",
            ),
            (
                "one job refused among answered ones never flaps",
                3,
                3,
                [(Some(Unauthorized), "-"), (ok, "-"), (ok, "-")].repeat(4),
                "",
            ),
            (
                "throttling is the whole gateway's",
                3,
                100,
                vec![
                    (Some(Throttled), "-"),
                    (Some(Throttled), "-"),
                    (Some(Throttled), "U"),
                ],
                "3 polls in a row were throttled",
            ),
            (
                "an answer breaks a streak",
                3,
                3,
                vec![
                    (Some(Server), "-"),
                    (Some(Server), "-"),
                    (ok, "-"),
                    (Some(Server), "-"),
                    (Some(Server), "-"),
                    (Some(Server), "U"),
                ],
                "",
            ),
        ];
        for (name, threshold, jobs, steps, why) in cases {
            let mut h = Health::default();
            for (i, (outcome, want)) in steps.iter().enumerate() {
                let change = match outcome {
                    None => h.success(),
                    Some(kind) => h.failure(&err(*kind), threshold, jobs),
                };
                let got = match &change {
                    None => "-",
                    Some(ApiHealthChange::Unhealthy { reason }) => {
                        assert!(reason.contains(why), "{name}: step {i}: {reason}");
                        "U"
                    }
                    Some(ApiHealthChange::Recovered) => "R",
                };
                assert_eq!(got, *want, "{name}: step {i}");
            }
        }
        let mut h = Health::default();
        h.failure(&err(ErrorKind::Unauthorized), 3, 1);
        assert!(!h.verified, "a refusal makes one request at a time again");
        h.failure(&err(ErrorKind::Rejected), 3, 1);
        assert!(h.verified, "an RTC answer shows the credentials work");
    }

    #[test]
    fn failures_needed_table() {
        let cases = [
            ("one job", 3, 1, 3),
            ("as many as jobs", 3, 8, 8),
            ("capped", 3, 100_000, 50),
            ("threshold above the cap", 80, 100_000, 80),
            ("no jobs", 3, 0, 3),
        ];
        for (name, threshold, jobs, want) in cases {
            assert_eq!(failures_needed(threshold, jobs), want, "{name}");
        }
    }
}
