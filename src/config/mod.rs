//! Configuration: a TOML file layered under `RECWATCH_<SECTION>__<KEY>` environment variables,
//! parsed once into types that cannot hold a bad value.
//!
//! The `config` crate merges the sources ([`load()`]; the file's `[[jobs]]` are cut out of its
//! text and read a run at a time beside it, `split`); we then read the merged tree ourselves,
//! key by key (`raw`, `validate`, `channels`), so that every error names the exact key
//! (and the job by index and name) and says how to fix it, and so that a misspelt key is an
//! error instead of a silently ignored setting. Every default and bound is in [`defaults`].
//! What comes out is [`Config`]: values already parsed (addresses, header names, the cron
//! schedule, the log filter), so nothing downstream parses a config string again.

mod accounts;
mod auth;
mod budget;
mod callback;
mod channels;
mod chat;
pub mod defaults;
mod duration;
mod heartbeat;
mod lean;
mod list_bounds;
mod load;
mod raw;
mod schedule;
mod split;
mod storage;
mod validate;

pub use accounts::{
    AccountRef, DEFAULT_ACCOUNT, check_name as check_account_name, unknown as unknown_account,
};
pub use budget::{BudgetReport, GroupBudget, JobGroup, RUNTIME_FLOOR, share, stretched};
pub use callback::{AppConfig, CallbackConfig};
pub use channels::{RESERVED_HEADERS, WebhookSecret, decode_webhook_secret};
pub use chat::{ChatConfig, ChatKind, Language, SecretUrl};
pub use defaults::{
    DEFAULT_ENDPOINT, DEFAULT_PATH, MAX_CHANNEL_TIMEOUT, MAX_INTERVAL, MIN_AUTH_BACKOFF,
};
pub use duration::{format_duration, parse_duration};
pub use heartbeat::{HeartbeatConfig, HeartbeatUrl, PingMethod};
pub use list_bounds::WatchlistConfig;
pub use load::{load, load_beside, load_with_env, parse_str, resolve_path};
pub use schedule::Schedule;
pub use storage::{Database, StorageConfig, check_url as check_storage_url};

// What a feature's own config section (`remediation/config.rs`, `hold/config.rs`) reads its
// keys with.
pub(crate) use raw::Table;
pub(crate) use validate::check_range;

use crate::domain::JobKey;
use crate::secret::Secret;
use crate::telemetry::LogFilter;
use lettre::message::Mailbox;
use reqwest::header::{HeaderName, HeaderValue};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// `EX_CONFIG` from sysexits.h: systemd's `RestartPreventExitStatus=78` keys off it.
pub const EXIT_CONFIG: u8 = 78;

/// A configuration problem: where it is, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ConfigError {
    /// The key, e.g. `api.rate_limit` or `jobs[2] ("lobby camera").job_id`.
    pub location: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(location: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            location: location.into(),
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The file this was read from, if any (reload watches it).
    pub source: Option<PathBuf>,
    /// The account this configuration polls with: in the configuration as read, the first of
    /// `accounts` (`[api]`'s, when that is how the file gives it); in an account's poller, that
    /// account ([`Config::narrowed`]).
    pub api: ApiConfig,
    /// `[[accounts]]` (or `[api]` as the one account `default`), in the file's order; never
    /// empty.
    pub accounts: Vec<ApiConfig>,
    pub poll: PollConfig,
    pub storage: StorageConfig,
    pub rules: RulesConfig,
    pub notify: NotifyConfig,
    pub http: HttpConfig,
    pub callback: CallbackConfig,
    /// `[heartbeat]`: pings a dead man's switch while ready.
    pub heartbeat: HeartbeatConfig,
    /// `[remediate]`: re-creating dead recordings (off by default), with the per-job and
    /// per-app overrides of `[[jobs]]` and `[[apps]]`.
    pub remediate: crate::remediation::config::RemediateConfig,
    /// `[watchlist]`: the run-time watch list's bound.
    pub watchlist: WatchlistConfig,
    pub log: LogConfig,
    /// Each job in an allocation of its own, shared (not copied) by every holder: the
    /// published configuration, the poller's merged watch list, its `watched` map and each
    /// job's state (issue 23, item 1: a copy of every job per holder was ~200 bytes a job).
    pub jobs: Vec<Arc<JobConfig>>,
    /// The RTC apps whose record callbacks are accepted (`[[apps]]`).
    pub apps: Vec<AppConfig>,
    /// `[[maintenance]]`: recurring windows that hold notifications back.
    pub maintenance: Vec<crate::hold::config::MaintenanceWindow>,
    /// `RECWATCH_*` variables that set no key (a misspelling, one `_` for `__`), each as the
    /// warning that names it and what it most likely meant; never their values.
    pub unknown_env: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// The account's name (`default` for `[api]`): shared with every job that names it.
    pub name: Arc<str>,
    pub endpoint: Url,
    pub project_id: Option<String>,
    pub timeout: Duration,
    /// Requests per second shared by every poll.
    pub rate_limit: u32,
    pub max_in_flight: usize,
    /// `[api.auth]`: where the keys come from (`source`), a handle the client asks per
    /// request.
    pub auth: recwatch_rtc::Credentials,
    /// How long the whole poller waits after a throttled (429) answer.
    pub throttle_backoff: Duration,
    /// How long the poller stops after repeated refused credentials; the gateway locks an AK
    /// for 5 minutes after more than 5 failures, so this must stay above that.
    pub auth_backoff: Duration,
    /// `api.allow_short_auth_backoff`: lets `auth_backoff` go below [`MIN_AUTH_BACKOFF`], for
    /// tests against the simulator only (`check` and `run` warn about it).
    pub allow_short_auth_backoff: bool,
}

pub use recwatch_rtc::Auth;

impl ApiConfig {
    /// What the RTC client needs of this section (the client never sees the daemon's types).
    pub fn client_config(&self) -> recwatch_rtc::ClientConfig {
        recwatch_rtc::ClientConfig {
            endpoint: self.endpoint.clone(),
            project_id: self.project_id.clone(),
            auth: self.auth.clone(),
            timeout: self.timeout,
            max_connections: self.max_in_flight,
        }
    }
}

#[derive(Clone, Debug)]
pub struct PollConfig {
    pub interval: Duration,
    /// A cron schedule (seconds field included) used instead of `interval`.
    pub schedule: Option<Schedule>,
    pub stop_after_terminal: bool,
}

/// A watched job as polling needs it.
///
/// Its ids are its [`JobKey`], one allocation the poller shares with its every map (issue 23,
/// item 1): as two `String`s of their own they were a second copy of the key's, about 130
/// bytes a job, and every lookup of a job's key made a new key from them. `job.app_id()` and
/// `job.job_id()` read through the key; no `Deref` to the key's ids, so what a job's
/// configuration holds is what its type says.
#[derive(Clone, PartialEq, Eq)]
pub struct JobConfig {
    pub key: JobKey,
    pub name: Option<String>,
    /// `kind`: an individual-stream job (the default) or a mix-stream job, polled on
    /// `.../mix-stream-jobs/{job_id}`.
    pub kind: crate::domain::JobKind,
    pub interval: Option<Duration>,
    /// Channels this job's alerts go to; `None` means every channel.
    pub notify: Option<Vec<String>>,
    /// `account`: the account that polls it, when the entry names one (else its app's, else
    /// the first: [`Config::account_of`]); the configured name's one allocation.
    pub account: Option<AccountRef>,
}

/// As the struct with its two id fields printed it, so logs and test output read the same.
impl std::fmt::Debug for JobConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobConfig")
            .field("app_id", &self.app_id())
            .field("job_id", &self.job_id())
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("interval", &self.interval)
            .field("notify", &self.notify)
            .field("account", &self.account)
            .finish()
    }
}

impl JobConfig {
    /// The application the job belongs to (read through its key).
    pub fn app_id(&self) -> &str {
        &self.key.app_id
    }

    /// The job's id (read through its key).
    pub fn job_id(&self) -> &str {
        &self.key.job_id
    }

    /// The label used in output and alerts: the name, or the job id.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(self.job_id())
    }
}

use crate::domain::Severity;

/// Each rule's severity; `None` is "off".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesConfig {
    pub stopped_unexpectedly: Option<Severity>,
    pub idle_timeout: Option<Severity>,
    pub stopped_by_tenant: Option<Severity>,
    pub stuck_init: Option<Severity>,
    pub job_not_found: Option<Severity>,
    pub api_unhealthy: Option<Severity>,
    pub poll_failing: Option<Severity>,
    pub remediation_exhausted: Option<Severity>,
    pub remediation_failed: Option<Severity>,
    pub remediated: Option<Severity>,
    pub init_grace: Duration,
    pub api_failure_threshold: u32,
    /// How many of one job's polls in a row must fail (at least 2) for `poll_failing`.
    pub poll_failing_after: u32,
    pub repeat_interval: Duration,
    pub send_resolved: bool,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            stopped_unexpectedly: defaults::STOPPED_UNEXPECTEDLY,
            idle_timeout: defaults::IDLE_TIMEOUT,
            stopped_by_tenant: defaults::STOPPED_BY_TENANT,
            stuck_init: defaults::STUCK_INIT,
            job_not_found: defaults::JOB_NOT_FOUND,
            api_unhealthy: defaults::API_UNHEALTHY,
            poll_failing: defaults::POLL_FAILING,
            remediation_exhausted: defaults::REMEDIATION_EXHAUSTED,
            remediation_failed: defaults::REMEDIATION_FAILED,
            remediated: defaults::REMEDIATED,
            init_grace: defaults::INIT_GRACE,
            api_failure_threshold: defaults::API_FAILURE_THRESHOLD,
            poll_failing_after: defaults::POLL_FAILING_AFTER,
            repeat_interval: defaults::REPEAT_INTERVAL,
            send_resolved: defaults::SEND_RESOLVED,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct NotifyConfig {
    pub webhooks: Vec<WebhookConfig>,
    pub emails: Vec<EmailConfig>,
    /// Feishu, DingTalk, WeCom, Slack, Teams and PagerDuty channels, in that order.
    pub chats: Vec<ChatConfig>,
    /// The language of chat messages.
    pub language: Language,
    /// How long alerts after a first one are collected into one message per chat or e-mail
    /// channel; zero sends each at once.
    pub group_wait: Duration,
    /// A delivery still failing after this long is marked dead.
    pub max_age: Duration,
    /// The cap on the retry back-off.
    pub max_backoff: Duration,
}

impl NotifyConfig {
    /// Every channel as (name, kind), in the order of [`NotifyConfig::channel_names`]; the
    /// kind is what `Notifier::kind` says (`webhook`, `email`, `feishu`, ...).
    pub fn channel_kinds(&self) -> Vec<(&str, &'static str)> {
        self.webhooks
            .iter()
            .map(|w| (w.name.as_str(), "webhook"))
            .chain(self.emails.iter().map(|e| (e.name.as_str(), "email")))
            .chain(
                self.chats
                    .iter()
                    .map(|c| (c.name.as_str(), c.kind.as_str())),
            )
            .collect()
    }

    pub fn channel_names(&self) -> Vec<&str> {
        self.webhooks
            .iter()
            .map(|w| w.name.as_str())
            .chain(self.emails.iter().map(|e| e.name.as_str()))
            .chain(self.chats.iter().map(|c| c.name.as_str()))
            .collect()
    }
}

#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub name: String,
    pub url: Url,
    /// The Standard Webhooks secret; `None` sends unsigned.
    pub secret: Option<WebhookSecret>,
    /// Extra headers, in the order written. Values may carry credentials: each is marked
    /// sensitive, so it stays out of Debug output.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    StartTls,
    Tls,
    None,
}

#[derive(Clone, Debug)]
pub struct EmailConfig {
    pub name: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub tls: Tls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub from: Mailbox,
    /// At least one.
    pub to: Vec<Mailbox>,
    pub timeout: Duration,
    /// Accept a self-signed certificate (for tests and private relays only).
    pub accept_invalid_certs: bool,
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// `None` turns the endpoint off.
    pub listen: Option<SocketAddr>,
    /// `read_token` / `read_token_file`: when set, the status page and the read API ask for it
    /// (bearer, or `?token=` that sets a cookie). `/healthz`, `/readyz` and `/metrics` stay open.
    pub read_token: Option<Secret>,
    /// Where people reach recwatch's pages (`http.public_url`): chat messages link to
    /// `{public_url}/jobs/{app_id}/{job_id}`. `None`: no links.
    pub public_url: Option<Url>,
    /// `http.token` (or `token_file`): the bearer token the write endpoints ask for
    /// (`POST`/`DELETE /api/v1/...`); `None` refuses every write with 403. Prints as `***`.
    pub token: Option<Secret>,
}

impl HttpConfig {
    /// The job's page under `public_url`, each id one percent-encoded path segment.
    pub fn job_link(&self, app_id: &str, job_id: &str) -> Option<String> {
        let mut u = self.public_url.clone()?;
        u.path_segments_mut()
            .ok()?
            .pop_if_empty()
            .extend(["jobs", app_id, job_id]);
        Some(u.to_string())
    }
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Used when `RUST_LOG` is not set.
    pub level: LogFilter,
}

impl Config {
    /// Settings that work but that the operator should know about, each one sentence:
    /// printed by `check` and logged by `run` at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.api.allow_short_auth_backoff {
            out.push(format!(
                "api.allow_short_auth_backoff is set (auth_backoff {}): after refused credentials recwatch retries before the gateway's 5-minute lock ends, so the real API keeps the key locked; use it only for tests against the simulator",
                format_duration(self.api.auth_backoff)
            ));
        }
        if let Some(addr) = self.http.listen {
            if !addr.ip().is_loopback() && self.http.read_token.is_none() {
                out.push(format!(
                    "http.listen {addr} is not a loopback address: anyone who can reach it can read job names, states and errors from the status page, /api/v1 and /metrics; set http.read_token (the page and the API then ask for it), listen on 127.0.0.1 behind a reverse proxy with authentication, or firewall the port"
                ));
            }
        }
        out.extend(self.silent_notify_lists());
        out.extend(self.unknown_env.iter().cloned());
        out.extend(callback::shared_key_warnings(&self.apps));
        out
    }

    /// `notify = []` on a job or an app: accepted (it may be meant), but its alerts are
    /// recorded and sent nowhere, which is rarely what was meant; the warning says so.
    fn silent_notify_lists(&self) -> Vec<String> {
        let empty = |n: &Option<Vec<String>>| n.as_ref().is_some_and(Vec::is_empty);
        let jobs = self.jobs.iter().enumerate().filter(|(_, j)| empty(&j.notify)).map(|(i, j)| {
            format!(
                "jobs[{i}] ({:?}) has notify = []: its alerts are recorded but sent to no channel; list channels, or remove notify to use every channel",
                j.label()
            )
        });
        let apps = self.apps.iter().enumerate().filter(|(_, a)| empty(&a.notify)).map(|(i, a)| {
            format!(
                "apps[{i}] ({:?}) has notify = []: the alerts of the jobs it discovers are recorded but sent to no channel; list channels, or remove notify to use every channel",
                a.app_id
            )
        });
        jobs.chain(apps).collect()
    }

    /// The interval each job is polled at, before the budget.
    pub fn job_interval(&self, job: &JobConfig) -> Duration {
        job.interval.unwrap_or(self.poll.interval)
    }

    /// A config with every default and no jobs, for the demo and tests.
    pub fn defaults(auth: impl Into<recwatch_rtc::Credentials>) -> Config {
        let api = ApiConfig {
            name: DEFAULT_ACCOUNT.into(),
            endpoint: Url::parse(DEFAULT_ENDPOINT).expect("default endpoint parses"),
            project_id: None,
            timeout: defaults::API_TIMEOUT,
            rate_limit: defaults::RATE_LIMIT as u32,
            max_in_flight: defaults::MAX_IN_FLIGHT as usize,
            auth: auth.into(),
            throttle_backoff: defaults::THROTTLE_BACKOFF,
            auth_backoff: defaults::AUTH_BACKOFF,
            allow_short_auth_backoff: false,
        };
        Config {
            source: None,
            accounts: vec![api.clone()],
            api,
            poll: PollConfig {
                interval: defaults::POLL_INTERVAL,
                schedule: None,
                stop_after_terminal: defaults::STOP_AFTER_TERMINAL,
            },
            storage: StorageConfig::default(),
            rules: RulesConfig::default(),
            notify: NotifyConfig {
                webhooks: Vec::new(),
                emails: Vec::new(),
                chats: Vec::new(),
                language: Language::En,
                group_wait: defaults::GROUP_WAIT,
                max_age: defaults::MAX_AGE,
                max_backoff: defaults::MAX_BACKOFF,
            },
            // Off, unlike the loader's default (`defaults::HTTP_LISTEN`): the demo and the
            // benchmark build on this and must not take port 9187 from a daemon running beside
            // them.
            http: HttpConfig {
                listen: None,
                read_token: None,
                public_url: None,
                token: None,
            },
            callback: CallbackConfig::default(),
            heartbeat: HeartbeatConfig::default(),
            remediate: crate::remediation::config::RemediateConfig::default(),
            watchlist: WatchlistConfig::default(),
            log: LogConfig {
                level: defaults::LOG_LEVEL,
            },
            jobs: Vec::new(),
            apps: Vec::new(),
            maintenance: Vec::new(),
            unknown_env: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
