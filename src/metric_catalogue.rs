//! The metrics catalogue: every metric recwatch exports, with its type and help text, and
//! every label value known ahead. The one place a metric is added.
//!
//! Prometheus users write alert rules against these series, so `/metrics` must pass
//! `promtool check metrics` and a series must exist before its first event: a counter that
//! appears only with the first 429 makes `rate(...)` "no data" rather than 0, and an alert
//! written against it never fires. So:
//! - [`describe`] gives every metric in [`METRICS`] its HELP and TYPE (at start-up, once the
//!   recorder is installed);
//! - [`zero`] creates every series whose labels are known (every rule × severity, every
//!   outcome, every state, every configured channel) at 0; `/metrics` calls it on each scrape,
//!   so channels added by a reload appear too;
//! - `tests/metric_names.rs` checks that every `counter!`/`gauge!`/`histogram!` in `src/` names
//!   a metric listed here with the same type.
//!
//! **Adding a metric**: a line in [`METRICS`] (name, kind, help), its label values in a list
//! below and a loop in [`zero`] when they are known ahead, and a row in README.md's metrics
//! table. Rules: base units in names (`_seconds`, `_bytes`), `_total` on counters and only on
//! them, label values from a bounded set (never a job id, an error text or a URL).
//!
//! This module names metrics and their vocabularies; it imports no component (the poller,
//! the callback receiver and the delivery worker emit with literal names, checked by the test
//! above), so any component can emit without an import cycle.

use crate::config::Config;
use crate::domain::{Rule, Severity};

/// A metric's Prometheus type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The macro that records it (`counter`, `gauge`, `histogram`), for the source check.
    pub fn macro_name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One exported metric.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    /// The HELP text: what one unit of it is, and what its labels mean.
    pub help: &'static str,
}

const fn m(name: &'static str, kind: Kind, help: &'static str) -> Metric {
    Metric { name, kind, help }
}

use Kind::{Counter, Gauge, Histogram};

/// Every metric recwatch itself exports (the process metrics of `metrics-process` describe
/// themselves: see [`describe`]).
pub const METRICS: &[Metric] = &[
    m(
        "recwatch_build_info",
        Gauge,
        "Always 1; the labels say which recwatch is running (version, and the git commit it was built from or \"unknown\").",
    ),
    m(
        "recwatch_polls_total",
        Counter,
        "Polls of a job's state, by account (the [[accounts]] name, default for [api]) and outcome: ok, or the error kind (throttled, server_error, timeout, connection, unauthorized, not_found, ...).",
    ),
    m(
        "recwatch_record_fields_unread_total",
        Counter,
        "Fields of a job's record left out because their value could not be read (a number out of range); the record itself is read without them.",
    ),
    m(
        "recwatch_poll_duration_seconds",
        Histogram,
        "How long one poll's request took, answer read, in seconds, by account.",
    ),
    m(
        "recwatch_transitions_total",
        Counter,
        "State changes seen, by the state changed to (INIT, RUNNING, STOPPED; other for a state the API invented).",
    ),
    m(
        "recwatch_alerts_total",
        Counter,
        "Alerts raised (firing, reminders and resolved notices), by rule and severity.",
    ),
    m(
        "recwatch_deliveries_total",
        Counter,
        "Delivery attempts that ended, by channel, its kind (webhook, email, feishu, dingtalk, wecom, slack, teams, pagerduty; removed for a channel no longer configured) and outcome: sent (the receiver accepted), retry (failed, tried again later), dead (given up after notify.max_age), silenced (held back by a silence or maintenance window instead of sent).",
    ),
    m(
        "recwatch_deliveries_pending",
        Gauge,
        "Deliveries not yet accepted by their receiver and still being retried, by channel.",
    ),
    m(
        "recwatch_deliveries_dead",
        Gauge,
        "Deliveries given up after notify.max_age (kept in the database, see recwatch alerts), by channel.",
    ),
    m(
        "recwatch_oldest_pending_delivery_age_seconds",
        Gauge,
        "Age of the oldest delivery still pending, in seconds; 0 when none is pending.",
    ),
    m(
        "recwatch_jobs",
        Gauge,
        "Watched jobs by their last seen state (INIT, RUNNING, STOPPED, other; UNKNOWN before the first answer).",
    ),
    m(
        "recwatch_jobs_watched",
        Gauge,
        "Jobs on the watch list, whatever their source (config file and run-time list).",
    ),
    m(
        "recwatch_rate_budget_stretch",
        Gauge,
        "How many times longer than configured a group's poll intervals are, by account and group (configured: the config file's jobs, served first; runtime: the run-time list's, sharing what is left); 1 when the budget covers them.",
    ),
    m(
        "recwatch_watchlist_full",
        Gauge,
        "1 while watchlist.max_jobs refuses new run-time jobs (POST /api/v1/jobs answers 507, discovery stops), 0 once one gets in again.",
    ),
    m(
        "recwatch_discovery_full",
        Gauge,
        "1 while an app's max_discovered stops its discovery, by app_id; 0 once one of its jobs is discovered again.",
    ),
    m(
        "recwatch_rate_budget_wait_seconds",
        Histogram,
        "How long a request waited for a slot of the request budget (api.rate_limit per second, and pauses after 429s or refused credentials), in seconds. Its _sum is the total wait.",
    ),
    m(
        "recwatch_rate_budget_demand_ratio",
        Gauge,
        "Requests per second the jobs an account polls need at their intervals, divided by its rate_limit, by account. Counts every watched job, whatever its source; above 1 intervals are stretched (configured jobs first, see recwatch_rate_budget_stretch).",
    ),
    m(
        "recwatch_api_rate_limit",
        Gauge,
        "An account's rate_limit: requests per second its budget allows, for all its polls together, by account (accounts sharing one static access key share one budget at the smallest of their limits).",
    ),
    m(
        "recwatch_throttled_total",
        Counter,
        "Answers of 429 (APIG.0308) from the API, by account; each pauses every poll of the account's budget.",
    ),
    m(
        "recwatch_api_unhealthy",
        Gauge,
        "1 while an account's api_unhealthy condition is open (credentials refused, or every poll failing), else 0, by account.",
    ),
    m(
        "recwatch_leader",
        Gauge,
        "1 while this instance is the active one (it holds the leadership lease: it polls and delivers), 0 on a standby.",
    ),
    m(
        "recwatch_leader_epoch",
        Gauge,
        "The leadership lease's epoch as this instance last saw it (its own while active); it rises by one at every takeover.",
    ),
    m(
        "recwatch_poll_loop_age_seconds",
        Gauge,
        "Seconds since the poll loop last went round (it does every second); /readyz reports a stall after 5. 0 on a standby instance, which runs no poll loop.",
    ),
    m(
        "recwatch_database_writable",
        Gauge,
        "1 when the database accepts writes (no failed write, the file in place and writable, the writer running), else 0.",
    ),
    m(
        "recwatch_ready",
        Gauge,
        "1 when /readyz answers 200 (the database readable and writable, the poll loop and its tasks running, the API healthy), else 0.",
    ),
    m(
        "recwatch_task_panics_total",
        Counter,
        "Panics contained in one poll, write, delivery, API health check, remediation pass or commit of record callbacks (callback_writer), by task; each is logged with its message.",
    ),
    m(
        "recwatch_alerts_silenced_total",
        Counter,
        "Alerts whose notifications a silence or maintenance window held back (counted once per alert, when first held), by what held them: silence or maintenance.",
    ),
    m(
        "recwatch_held_deliveries_ended_total",
        Counter,
        "Held deliveries whose silence or maintenance window ended, by outcome: released (still true, sent at once with the alert's id) or dropped (cleared meanwhile, never sent).",
    ),
    m(
        "recwatch_silences_active",
        Gauge,
        "Silences in force now (started and not ended).",
    ),
    m(
        "recwatch_maintenance_windows_active",
        Gauge,
        "[[maintenance]] windows in force now.",
    ),
    m(
        "recwatch_callbacks_total",
        Counter,
        "Requests to the record-callback receiver, by result (stored, duplicate, replay, unsigned, forged, unknown_app, too_large, too_slow: the body did not arrive within 5 s of its header, malformed, unavailable, not_found).",
    ),
    m(
        "recwatch_callback_commits_total",
        Counter,
        "Transactions the record-callback receiver committed: the events waiting while one commits share the next, so recwatch_callbacks_total{result=~\"stored|duplicate\"} over this is how many events a commit carried.",
    ),
    m(
        "recwatch_database_write_failures_total",
        Counter,
        "Writes the database refused (full, read-only, locked by another process, ...): each counted, while the log says it once, when the cause changes, and once a minute.",
    ),
    m(
        "recwatch_http_connections_closed_total",
        Counter,
        "Connections a listener (http, callback) closed at its connection cap, by reason: evicted (an idle connection, or one whose body was still arriving, closed to make room for a new one), refused (a new one closed because every connection was busy answering).",
    ),
    m(
        "recwatch_poll_hints_total",
        Counter,
        "Poll hints from record callbacks, by outcome: taken (a hinted poll took a budget slot), coalesced (merged into a hint already waiting for the job), dropped (always 0 since issue 23: no hint is dropped; kept so dashboards keep the series), ignored (the job is not polled: not watched, or done).",
    ),
    m(
        "recwatch_heartbeat_pings_total",
        Counter,
        "Pings of heartbeat.url, by result: ok (answered 2xx) or failed (no answer, or another status). None while recwatch is not ready.",
    ),
    m(
        "recwatch_forwards_total",
        Counter,
        "Attempts to relay a record callback to an app's forward_to, by outcome: sent (the receiver answered 2xx), retry (failed, tried again later), dead (still failing at notify.max_age; kept, see recwatch forwards).",
    ),
    m(
        "recwatch_forwards_pending",
        Gauge,
        "Record callbacks waiting to be relayed to forward_to (not yet accepted by the receiver); one that stays above 0 is a receiver that keeps failing.",
    ),
    m(
        "recwatch_api_writes_total",
        Counter,
        "Requests to the HTTP endpoint's write endpoints (POST/DELETE /api/v1/...), by result (created, exists, deleted, not_found, conflict, bad_request, unauthorized, forbidden, unavailable, full: 507, a bound of the run-time watch list reached).",
    ),
    m(
        "recwatch_discovered_total",
        Counter,
        "Jobs a record callback revealed for an app with discover = true, by result (watched: added to the run-time watch list; invalid: an id that cannot be watched; unwatched: an operator unwatched the job after the event was signed, so it is not added again; unavailable: the database refused; full: refused by watchlist.max_jobs or the app's max_discovered; retired: a discovered job the API never found, no longer watched).",
    ),
    m(
        "recwatch_remediations_total",
        Counter,
        "What [remediate] did about dead recordings, by result (recreated; failed: refused, nothing created; unknown: a job may exist, a human was alerted; retried: a create that proved nothing was made, tried again; dry_run; exhausted: max_restarts reached; cannot_rebuild: the last answer lacks a field the create needs).",
    ),
];

/// `recwatch_heartbeat_pings_total{result}`.
pub const HEARTBEAT_RESULTS: &[&str] = &["ok", "failed"];

/// `recwatch_polls_total{outcome}`: "ok", or recwatch-rtc's `ErrorKind::as_str`.
pub const POLL_OUTCOMES: &[&str] = &[
    "ok",
    "not_found",
    "endpoint_not_found",
    "redirect",
    "unauthorized",
    "throttled",
    "server_error",
    "rejected",
    "bad_response",
    "wrong_job",
    "no_state",
    "timeout",
    "connection",
    "credentials_unavailable",
];

/// `recwatch_transitions_total{to_state}`: recwatch-rtc's `State::label`.
pub const STATE_LABELS: &[&str] = &["INIT", "RUNNING", "STOPPED", "other"];

/// `recwatch_jobs{state}`: the state labels, and UNKNOWN for a job not answered yet.
pub const JOB_STATE_LABELS: &[&str] = &["INIT", "RUNNING", "STOPPED", "other", "UNKNOWN"];

/// `recwatch_deliveries_total{channel,kind,outcome}`'s outcomes.
pub const DELIVERY_OUTCOMES: &[&str] = &["sent", "retry", "dead", "silenced"];

/// `recwatch_alerts_silenced_total{by}`: `hold::domain::HeldBy::kind`.
pub const HELD_BY: &[&str] = &["silence", "maintenance"];

/// `recwatch_held_deliveries_ended_total{outcome}`.
pub const HOLD_OUTCOMES: &[&str] = &["released", "dropped"];

/// `recwatch_task_panics_total{task}`.
pub const TASKS: &[&str] = &[
    "poll",
    "writer",
    "delivery",
    "api_health",
    "remediation",
    "callback_writer",
];

/// `recwatch_callbacks_total{result}`: `callback::Outcome::label`.
pub const CALLBACK_RESULTS: &[&str] = &[
    "stored",
    "duplicate",
    "replay",
    "unsigned",
    "forged",
    "unknown_app",
    "too_large",
    "too_slow",
    "malformed",
    "unavailable",
    "not_found",
];

/// `recwatch_poll_hints_total{outcome}`: `poller::HintOutcome::label`.
pub const HINT_OUTCOMES: &[&str] = &["taken", "coalesced", "dropped", "ignored"];

/// `recwatch_forwards_total{outcome}`: `deliver::forward::OUTCOMES`.
pub const FORWARD_OUTCOMES: &[&str] = &["sent", "retry", "dead"];

/// `recwatch_api_writes_total{result}`: `http::jobs` and `http::auth::Refusal::label`.
pub const API_WRITE_RESULTS: &[&str] = &[
    "created",
    "exists",
    "deleted",
    "not_found",
    "conflict",
    "bad_request",
    "unauthorized",
    "forbidden",
    "unavailable",
    "full",
];

/// `recwatch_remediations_total{result}`: `remediation::outbox` and the remediation worker.
pub const REMEDIATION_RESULTS: &[&str] = &[
    "recreated",
    "failed",
    "unknown",
    "retried",
    "dry_run",
    "exhausted",
    "cannot_rebuild",
];

/// `recwatch_discovered_total{result}`: `callback::tell_discovery` and the poller's retirement.
pub const DISCOVERED_RESULTS: &[&str] = &[
    "watched",
    "invalid",
    "unwatched",
    "unavailable",
    "full",
    "retired",
];

/// `recwatch_http_connections_closed_total{listener, reason}`: `http::Listener::label`, and
/// why the serving loop closed it.
pub const HTTP_LISTENERS: &[&str] = &["http", "callback"];
pub const CONNECTION_CLOSE_REASONS: &[&str] = &["evicted", "refused"];

/// Severities an alert can carry (a rule set to "off" raises none).
pub const SEVERITIES: [Severity; 3] = [Severity::Critical, Severity::Warning, Severity::Info];

/// Gives every metric its HELP and TYPE, sets `recwatch_build_info` and describes the
/// process metrics. Called once the recorder is installed (a description given before is
/// lost).
pub fn describe() {
    for d in METRICS {
        match d.kind {
            Counter => metrics::describe_counter!(d.name, d.help),
            Gauge => metrics::describe_gauge!(d.name, d.help),
            Histogram => metrics::describe_histogram!(d.name, d.help),
        }
    }
    metrics::gauge!(
        "recwatch_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => env!("RECWATCH_COMMIT"),
    )
    .set(1.0);
    process().describe();
    // Under the systemd unit's ProcSubset=pid, /proc/stat (the boot time) is hidden and
    // metrics-process cannot work out the start time. The recorder is installed as `run`
    // starts, so now is within a second of it; where /proc/stat is readable the collector
    // overwrites this with the kernel's figure on each scrape.
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        metrics::gauge!("process_start_time_seconds").set(now.as_secs() as f64);
    }
}

/// The process metrics (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
/// `process_open_fds`, `process_max_fds`, `process_start_time_seconds`, ...), read from
/// /proc by `metrics-process`: unprefixed, the names every Prometheus dashboard knows.
pub fn process() -> metrics_process::Collector {
    metrics_process::Collector::default()
}

/// The counters with one label whose values are all known ahead, in the catalogue's order:
/// (name, label, values).
const ONE_LABEL_COUNTERS: &[(&str, &str, &[&str])] = &[
    ("recwatch_transitions_total", "to_state", STATE_LABELS),
    ("recwatch_task_panics_total", "task", TASKS),
    ("recwatch_callbacks_total", "result", CALLBACK_RESULTS),
    ("recwatch_poll_hints_total", "outcome", HINT_OUTCOMES),
    (
        "recwatch_heartbeat_pings_total",
        "result",
        HEARTBEAT_RESULTS,
    ),
    ("recwatch_forwards_total", "outcome", FORWARD_OUTCOMES),
    ("recwatch_alerts_silenced_total", "by", HELD_BY),
    (
        "recwatch_held_deliveries_ended_total",
        "outcome",
        HOLD_OUTCOMES,
    ),
    ("recwatch_api_writes_total", "result", API_WRITE_RESULTS),
    ("recwatch_discovered_total", "result", DISCOVERED_RESULTS),
    ("recwatch_remediations_total", "result", REMEDIATION_RESULTS),
];

/// The counters without labels.
const UNLABELLED_COUNTERS: &[&str] = &[
    "recwatch_record_fields_unread_total",
    "recwatch_database_write_failures_total",
    "recwatch_callback_commits_total",
];

/// The gauges without labels.
const UNLABELLED_GAUGES: &[&str] = &[
    "recwatch_forwards_pending",
    "recwatch_silences_active",
    "recwatch_maintenance_windows_active",
    "recwatch_watchlist_full",
];

/// Creates every series whose label values are known ahead at 0 (a counter's `increment(0)`
/// and a gauge's `increment(0.0)` leave a value already there untouched), so alert rules see
/// 0 rather than no data. Cheap enough for every scrape: a few dozen map look-ups. A new
/// family is a row in the tables above, or a loop here when its labels are two or come from
/// the configuration.
pub fn zero(config: &Config) {
    let counter = |name: &'static str, labels: &[(&'static str, String)]| {
        metrics::counter!(name, labels).increment(0);
    };
    for (name, label, values) in ONE_LABEL_COUNTERS {
        for value in *values {
            counter(name, &[(label, value.to_string())]);
        }
    }
    for name in UNLABELLED_COUNTERS {
        counter(name, &[]);
    }
    for name in UNLABELLED_GAUGES {
        metrics::gauge!(*name).increment(0.0);
    }
    for rule in Rule::ALL {
        for severity in SEVERITIES {
            counter(
                "recwatch_alerts_total",
                &[
                    ("rule", rule.as_str().to_string()),
                    ("severity", severity.as_str().to_string()),
                ],
            );
        }
    }
    for listener in HTTP_LISTENERS {
        for reason in CONNECTION_CLOSE_REASONS {
            counter(
                "recwatch_http_connections_closed_total",
                &[
                    ("listener", listener.to_string()),
                    ("reason", reason.to_string()),
                ],
            );
        }
    }
    zero_configured(config);
    for state in JOB_STATE_LABELS {
        metrics::gauge!("recwatch_jobs", "state" => *state).increment(0.0);
    }
}

/// The series labelled by what the configuration names: each channel's deliveries, each
/// app's discovery, each account's polls and budget (the `account` label: configured names
/// only, so its values are bounded by the file).
fn zero_configured(config: &Config) {
    for account in config.account_names() {
        let account = account.to_string();
        for outcome in POLL_OUTCOMES {
            metrics::counter!("recwatch_polls_total", "account" => account.clone(), "outcome" => *outcome)
                .increment(0);
        }
        metrics::counter!("recwatch_throttled_total", "account" => account.clone()).increment(0);
        for group in crate::config::JobGroup::ALL {
            metrics::gauge!("recwatch_rate_budget_stretch", "account" => account.clone(), "group" => group.as_str())
                .increment(0.0);
        }
    }
    for (channel, kind) in config.notify.channel_kinds() {
        for outcome in DELIVERY_OUTCOMES {
            metrics::counter!(
                "recwatch_deliveries_total",
                "channel" => channel.to_string(),
                "kind" => kind.to_string(),
                "outcome" => outcome.to_string()
            )
            .increment(0);
        }
        for name in ["recwatch_deliveries_pending", "recwatch_deliveries_dead"] {
            metrics::gauge!(name, "channel" => channel.to_string()).increment(0.0);
        }
    }
    for app in &config.apps {
        metrics::gauge!("recwatch_discovery_full", "app_id" => app.app_id.clone()).increment(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recwatch_rtc::ErrorKind;
    use std::collections::BTreeSet;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = BTreeSet::new();
        for d in METRICS {
            assert!(seen.insert(d.name), "{} is listed twice", d.name);
            assert!(
                d.name.starts_with("recwatch_")
                    && d.name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}: recwatch_ and snake_case",
                d.name
            );
            assert_eq!(
                d.name.ends_with("_total"),
                d.kind == Counter,
                "{}: _total on counters and only on them",
                d.name
            );
            for bad in ["_ms", "_milliseconds", "_minutes", "_kb", "_mb", "_percent"] {
                assert!(!d.name.contains(bad), "{}: base units only", d.name);
            }
            assert!(d.help.len() > 10, "{}: a help text", d.name);
        }
    }

    /// The lists above name every value their owners can emit: a variant added there without
    /// a label here fails to compile (the exhaustive matches) or fails this test.
    #[test]
    fn label_lists_match_their_owners() {
        let kinds = [
            ErrorKind::NotFound,
            ErrorKind::EndpointNotFound,
            ErrorKind::Redirect,
            ErrorKind::Unauthorized,
            ErrorKind::Throttled,
            ErrorKind::Server,
            ErrorKind::Rejected,
            ErrorKind::BadResponse,
            ErrorKind::WrongJob,
            ErrorKind::NoState,
            ErrorKind::Timeout,
            ErrorKind::Connection,
            ErrorKind::CredentialsUnavailable,
        ];
        for k in kinds {
            // Exhaustive: a new ErrorKind must be added to `kinds` (and so to POLL_OUTCOMES).
            match k {
                ErrorKind::NotFound
                | ErrorKind::EndpointNotFound
                | ErrorKind::Redirect
                | ErrorKind::Unauthorized
                | ErrorKind::Throttled
                | ErrorKind::Server
                | ErrorKind::Rejected
                | ErrorKind::BadResponse
                | ErrorKind::WrongJob
                | ErrorKind::NoState
                | ErrorKind::Timeout
                | ErrorKind::Connection
                | ErrorKind::CredentialsUnavailable => {}
            }
        }
        let want: BTreeSet<&str> = std::iter::once("ok")
            .chain(kinds.iter().map(|k| k.as_str()))
            .collect();
        assert_eq!(want, POLL_OUTCOMES.iter().copied().collect());

        use crate::callback::Outcome as O;
        let outcomes = [
            O::Stored,
            O::Duplicate,
            O::Replay,
            O::Unsigned,
            O::Forged,
            O::UnknownApp,
            O::TooLarge,
            O::TooSlow,
            O::Malformed,
            O::Unavailable,
            O::NotFound,
        ];
        for o in outcomes {
            match o {
                O::Stored
                | O::Duplicate
                | O::Replay
                | O::Unsigned
                | O::Forged
                | O::UnknownApp
                | O::TooLarge
                | O::TooSlow
                | O::Malformed
                | O::Unavailable
                | O::NotFound => {}
            }
        }
        let want: BTreeSet<&str> = outcomes.iter().map(|o| o.label()).collect();
        assert_eq!(want, CALLBACK_RESULTS.iter().copied().collect());

        use recwatch_rtc::State;
        for s in [
            State::Init,
            State::Running,
            State::Stopped,
            State::Other("X".into()),
        ] {
            assert!(STATE_LABELS.contains(&s.label()), "{s:?}");
            assert!(JOB_STATE_LABELS.contains(&s.label()), "{s:?}");
        }
    }
}
