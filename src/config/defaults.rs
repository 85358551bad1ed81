//! Every default and every bound of the configuration, written once: the loader falls back
//! to these, [`Config::defaults`](super::Config::defaults) is built from them, and the error
//! messages that quote a default take it from here. `config.example.toml` shows the same
//! values (a test in `tests.rs` keeps the two in step).

use crate::domain::Severity;
use crate::telemetry::LogFilter;
use std::net::SocketAddr;
use std::time::Duration;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

const DAY: u64 = 86_400;

pub const DEFAULT_PATH: &str = "/etc/recwatch/config.toml";

// [api]
pub const DEFAULT_ENDPOINT: &str = "https://rtc-api.myhuaweicloud.com";
pub const API_TIMEOUT: Duration = secs(10);
/// The API allows 10 requests per second per account.
pub const RATE_LIMIT: u64 = 10;
pub const MAX_IN_FLIGHT: u64 = 4;
/// The provider advises 2-5 s after a 429.
pub const THROTTLE_BACKOFF: Duration = secs(3);
/// A minute past the gateway's 5-minute lock ([`MIN_AUTH_BACKOFF`]).
pub const AUTH_BACKOFF: Duration = secs(6 * 60);

// [poll]
pub const POLL_INTERVAL: Duration = secs(30);
pub const STOP_AFTER_TERMINAL: bool = true;

// [storage]
pub const STORAGE_PATH: &str = "/var/lib/recwatch/recwatch.db";
pub const RETENTION: Duration = secs(90 * DAY);

// [rules]
pub const STOPPED_UNEXPECTEDLY: Option<Severity> = Some(Severity::Critical);
pub const IDLE_TIMEOUT: Option<Severity> = Some(Severity::Warning);
/// A tenant's own stop is usually intended: off.
pub const STOPPED_BY_TENANT: Option<Severity> = None;
pub const STUCK_INIT: Option<Severity> = Some(Severity::Warning);
pub const JOB_NOT_FOUND: Option<Severity> = Some(Severity::Warning);
pub const API_UNHEALTHY: Option<Severity> = Some(Severity::Critical);
pub const POLL_FAILING: Option<Severity> = Some(Severity::Warning);
/// One job's polls failed this many times in a row while the API answers the others.
pub const POLL_FAILING_AFTER: u32 = 5;
/// A lineage re-created `max_restarts` times within the window and dead again: a human must look.
pub const REMEDIATION_EXHAUSTED: Option<Severity> = Some(Severity::Critical);
/// A re-creation whose outcome is unknown (a crash while posting, a 5xx, a timeout: a billable
/// job may exist) or that was refused, told on its own: a human must look.
pub const REMEDIATION_FAILED: Option<Severity> = Some(Severity::Critical);
/// A re-creation told after the death's alert had gone out (it came later than 5 s).
pub const REMEDIATED: Option<Severity> = Some(Severity::Info);
pub const INIT_GRACE: Duration = secs(60);
pub const API_FAILURE_THRESHOLD: u32 = 3;
pub const REPEAT_INTERVAL: Duration = secs(4 * 3600);
pub const SEND_RESOLVED: bool = true;

// [notify]
pub const MAX_AGE: Duration = secs(24 * 3600);
pub const MAX_BACKOFF: Duration = secs(600);
pub const WEBHOOK_TIMEOUT: Duration = secs(10);
pub const EMAIL_TIMEOUT: Duration = secs(30);
pub const SMTP_PORT_STARTTLS: u16 = 587;
pub const SMTP_PORT_TLS: u16 = 465;
pub const SMTP_PORT_NONE: u16 = 25;
pub const CHAT_TIMEOUT: Duration = secs(10);
/// PagerDuty's Events API v2.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// Long enough to gather a storm's alerts, short enough that the second word of trouble is
/// not late; the first goes out at once anyway.
pub const GROUP_WAIT: Duration = secs(10);

// [http]
/// Loopback only: the endpoint has no authentication of its own.
pub const HTTP_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9187,
));

// [callback]
/// The path RTC posts record callbacks to; the receiver is off unless `callback.listen` is set.
pub const CALLBACK_PATH: &str = "/rtc/record-callback";

// [heartbeat]
/// Healthchecks.io's and Uptime Kuma's usual period.
pub const HEARTBEAT_INTERVAL: Duration = secs(60);
pub const HEARTBEAT_TIMEOUT: Duration = secs(10);
pub const MAX_HEARTBEAT_INTERVAL: Duration = secs(DAY);

// [remediate]
/// Off: a re-creation makes a billable job.
pub const REMEDIATE_ENABLED: bool = false;
pub const REMEDIATE_MAX_RESTARTS: u32 = 3;
pub const REMEDIATE_WINDOW: Duration = secs(3600);
pub const REMEDIATE_DRY_RUN: bool = false;

// [watchlist] and [[apps]] max_discovered
/// The run-time watch list's bound: far above any real account, low enough that a flood of
/// forged or runaway ids stops long before memory does.
pub const WATCHLIST_MAX_JOBS: u64 = 1_000_000;
/// What one app may add by discovery.
pub const APP_MAX_DISCOVERED: u64 = 100_000;

// [log]
pub const LOG_LEVEL: LogFilter = LogFilter::from_static("info");

// Bounds.

/// The gateway locks an access key for 5 minutes after more than 5 refused signatures: a
/// shorter `api.auth_backoff` walks straight back into the lock.
pub const MIN_AUTH_BACKOFF: Duration = secs(5 * 60);
/// The shortest poll interval.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The longest poll interval: anything longer is a typo ("30d" for "30s"), and a job polled
/// less often than monthly is not being watched.
pub const MAX_INTERVAL: Duration = secs(30 * DAY);
/// The longest a notification channel may take for one delivery: a hung receiver holds its
/// delivery (and, for email, its connection) this long before the retry policy takes over.
pub const MAX_CHANNEL_TIMEOUT: Duration = secs(120);
pub const MAX_RATE_LIMIT: u64 = 100_000;
pub const MAX_MAX_IN_FLIGHT: u64 = 10_000;
pub const MIN_RETENTION: Duration = secs(3600);
pub const MIN_REPEAT_INTERVAL: Duration = secs(1);

// Upper bounds for durations that feed time arithmetic (see `rules`), so that `check`
// refuses an absurd value with a clear error instead of `run` meeting it later.
pub const MAX_INIT_GRACE: Duration = secs(30 * DAY);
pub const MAX_REPEAT_INTERVAL: Duration = secs(365 * DAY);
pub const MAX_RETENTION: Duration = secs(36500 * DAY);
pub const MAX_API_TIMEOUT: Duration = secs(300);
pub const MAX_THROTTLE_BACKOFF: Duration = secs(60);
pub const MAX_AUTH_BACKOFF: Duration = secs(DAY);
pub const MAX_MAX_AGE: Duration = secs(30 * DAY);
pub const MAX_MAX_BACKOFF: Duration = secs(DAY);
/// Past a week a lineage's restarts are not one incident any more; `max_restarts` above this
/// is no bound.
pub const MAX_REMEDIATE_WINDOW: Duration = secs(7 * DAY);
pub const MAX_REMEDIATE_RESTARTS: u32 = 100;
/// Every alert after the first in a storm waits up to this long.
pub const MAX_GROUP_WAIT: Duration = secs(600);
