//! Configuration: a TOML file layered under `RECWATCH_<SECTION>__<KEY>` environment variables,
//! parsed once into types that cannot hold a bad value.
//!
//! The `config` crate merges the sources; we then read the merged tree ourselves, key by key,
//! so that every error names the exact key (and the job by index and name) and says how to fix
//! it, and so that a misspelt key is an error instead of a silently ignored setting.

use crate::secret::{Redactor, Secret};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// `EX_CONFIG` from sysexits.h: systemd's `RestartPreventExitStatus=78` keys off it.
pub const EXIT_CONFIG: u8 = 78;
pub const DEFAULT_PATH: &str = "/etc/recwatch/config.toml";
pub const DEFAULT_ENDPOINT: &str = "https://rtc-api.myhuaweicloud.com";
const ENV_PREFIX: &str = "RECWATCH_";

/// The gateway locks an access key for 5 minutes after more than 5 refused signatures: a
/// shorter `api.auth_backoff` walks straight back into the lock.
pub const MIN_AUTH_BACKOFF: Duration = Duration::from_secs(5 * 60);
/// The longest poll interval: anything longer is a typo ("30d" for "30s"), and a job polled
/// less often than monthly is not being watched.
pub const MAX_INTERVAL: Duration = Duration::from_secs(30 * 86400);
/// The longest a notification channel may take for one delivery: a hung receiver holds its
/// delivery (and, for email, its connection) this long before the retry policy takes over.
pub const MAX_CHANNEL_TIMEOUT: Duration = Duration::from_secs(120);

/// A configuration problem: where it is, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ConfigError {
    /// The key, e.g. `api.rate_limit` or `jobs[2] ("lobby camera").job_id`.
    pub location: String,
    pub message: String,
}

impl ConfigError {
    fn new(location: impl Into<String>, message: impl Into<String>) -> ConfigError {
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
    pub api: ApiConfig,
    pub poll: PollConfig,
    pub storage: StorageConfig,
    pub rules: RulesConfig,
    pub notify: NotifyConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub jobs: Vec<JobConfig>,
}

#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub endpoint: Url,
    pub project_id: Option<String>,
    pub timeout: Duration,
    /// Requests per second shared by every poll.
    pub rate_limit: u32,
    pub max_in_flight: usize,
    pub auth: Auth,
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
    pub schedule: Option<String>,
    pub stop_after_terminal: bool,
}

#[derive(Clone, Debug)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub retention: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobConfig {
    pub app_id: String,
    pub job_id: String,
    pub name: Option<String>,
    pub interval: Option<Duration>,
    /// Channels this job's alerts go to; `None` means every channel.
    pub notify: Option<Vec<String>>,
}

impl JobConfig {
    /// The label used in output and alerts: the name, or the job id.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.job_id)
    }
}

/// How loud a rule is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Each rule's severity; `None` is "off".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesConfig {
    pub stopped_unexpectedly: Option<Severity>,
    pub idle_timeout: Option<Severity>,
    pub stopped_by_tenant: Option<Severity>,
    pub stuck_init: Option<Severity>,
    pub job_not_found: Option<Severity>,
    pub api_unhealthy: Option<Severity>,
    pub init_grace: Duration,
    pub api_failure_threshold: u32,
    pub repeat_interval: Duration,
    pub send_resolved: bool,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            stopped_unexpectedly: Some(Severity::Critical),
            idle_timeout: Some(Severity::Warning),
            stopped_by_tenant: None,
            stuck_init: Some(Severity::Warning),
            job_not_found: Some(Severity::Warning),
            api_unhealthy: Some(Severity::Critical),
            init_grace: Duration::from_secs(60),
            api_failure_threshold: 3,
            repeat_interval: Duration::from_secs(4 * 3600),
            send_resolved: true,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct NotifyConfig {
    pub webhooks: Vec<WebhookConfig>,
    pub emails: Vec<EmailConfig>,
    /// A delivery still failing after this long is marked dead.
    pub max_age: Duration,
    /// The cap on the retry back-off.
    pub max_backoff: Duration,
}

impl NotifyConfig {
    pub fn channel_names(&self) -> Vec<&str> {
        self.webhooks
            .iter()
            .map(|w| w.name.as_str())
            .chain(self.emails.iter().map(|e| e.name.as_str()))
            .collect()
    }
}

#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub name: String,
    pub url: Url,
    /// The Standard Webhooks secret as written (`whsec_` + base64), checked at load;
    /// [`decode_webhook_secret`] gives the HMAC key.
    pub secret: Option<Secret>,
    /// Extra headers; values may carry credentials, so they are secrets.
    pub headers: Vec<(String, Secret)>,
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
    pub from: String,
    pub to: Vec<String>,
    pub timeout: Duration,
    /// Accept a self-signed certificate (for tests and private relays only).
    pub accept_invalid_certs: bool,
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// `None` turns the endpoint off.
    pub listen: Option<SocketAddr>,
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    pub level: String,
}

/// Where the configuration file is: `--config`, else `$RECWATCH_CONFIG`, else the default.
pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("RECWATCH_CONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

/// Loads the file at `path` under the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_env(path, std::env::vars())
}

/// Loads the file at `path` under the given environment (tests pass their own).
pub fn load_with_env(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let fix = if e.kind() == std::io::ErrorKind::NotFound {
            "not found; pass --config PATH, set RECWATCH_CONFIG, or start from config.example.toml"
                .to_string()
        } else {
            format!("cannot be read: {e}")
        };
        ConfigError::new(format!("config file {display}"), fix)
    })?;
    let mut config = parse_str(&text, env, path.parent()).map_err(|e| {
        // A value that came from the environment is not in the file: the location already
        // names the variable.
        if e.location.starts_with(ENV_PREFIX) {
            e
        } else {
            ConfigError::new(format!("{} in {display}", e.location), e.message)
        }
    })?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// Parses TOML text under the given environment. `base` resolves relative `*_file` paths.
pub fn parse_str(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
    base: Option<&Path>,
) -> Result<Config, ConfigError> {
    // Only RECWATCH_<SECTION>__<KEY> variables are overrides; RECWATCH_CONFIG names the file.
    let overrides: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k[ENV_PREFIX.len()..].contains("__"))
        .collect();
    // Syntax first, with our own message: the parser's quotes the offending line, which may
    // be a half-typed `secret_key = "...` (the file watcher reloads on every save).
    if let Err(e) = toml::from_str::<toml::Table>(text) {
        return Err(syntax_error(text, &e));
    }
    let vars: Vec<String> = overrides.keys().cloned().collect();
    let merged = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("RECWATCH")
                .prefix_separator("_")
                .separator("__")
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| ConfigError::new("TOML", format!("{}; check the syntax", masked(text, &e))))?;
    let tree: Value = merged
        .try_deserialize()
        .map_err(|e| ConfigError::new("TOML", masked(text, &e)))?;
    let Value::Object(root) = tree else {
        return Err(ConfigError::new(
            "TOML",
            "the file must be a table of sections",
        ));
    };
    from_tree(root, base).map_err(|e| name_the_variable(e, &vars))
}

/// The key path an override variable sets: `RECWATCH_API__RATE_LIMIT` -> `api.rate_limit`.
fn env_key_path(var: &str) -> String {
    var[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join(".")
}

/// An error about a value that came from the environment names the variable, not the file
/// (where the operator would look for it in vain).
fn name_the_variable(mut e: ConfigError, vars: &[String]) -> ConfigError {
    if let Some(var) = vars.iter().find(|v| env_key_path(v) == e.location) {
        e.location = format!("{var} (overrides {})", e.location);
        return e;
    }
    let inside: Vec<&str> = vars
        .iter()
        .filter(|v| env_key_path(v).starts_with(&format!("{}.", e.location)))
        .map(String::as_str)
        .collect();
    if !inside.is_empty() {
        e.message = format!("{} (the environment sets {})", e.message, inside.join(", "));
    }
    e
}

/// A syntax error as one line: where, what, and the line with any secret value masked.
fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let redactor = Redactor::new(&crate::secret::toml_secret_values(text));
    let what = redactor.redact(e.message().trim());
    let at = e
        .span()
        .map(|s| s.start.min(text.len()))
        .filter(|&i| text.is_char_boundary(i));
    let Some(at) = at else {
        return ConfigError::new("TOML syntax", format!("{what}; check the syntax"));
    };
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_no = text[..at].matches('\n').count() + 1;
    let column = text[line_start..at].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("");
    let shown = redactor.redact(&crate::secret::mask_toml_line(line));
    ConfigError::new(
        format!("TOML syntax at line {line_no}, column {column}"),
        format!(
            "{what}: `{}`; check the syntax",
            crate::telemetry::escape_controls(shown.trim())
        ),
    )
}

/// Another parser's message about the file, with every quoted line's secret values masked.
fn masked(text: &str, e: &dyn fmt::Display) -> String {
    let redactor = Redactor::new(&crate::secret::toml_secret_values(text));
    let lines: Vec<String> = e
        .to_string()
        .lines()
        .map(crate::secret::mask_toml_line)
        .collect();
    redactor.redact(&lines.join(" "))
}

fn from_tree(root: Map<String, Value>, base: Option<&Path>) -> Result<Config, ConfigError> {
    let mut root = Table::new("", root);
    let api = read_api(root.table("api")?, base)?;
    let poll = read_poll(root.table("poll")?)?;
    let storage = read_storage(root.table("storage")?)?;
    let rules = read_rules(root.table("rules")?)?;
    let notify = read_notify(root.table("notify")?, base)?;
    let http = read_http(root.table("http")?)?;
    let log = read_log(root.table("log")?)?;
    let jobs = read_jobs(root.array_of_tables("jobs")?, &notify, &poll)?;
    root.finish()?;
    Ok(Config {
        source: None,
        api,
        poll,
        storage,
        rules,
        notify,
        http,
        log,
        jobs,
    })
}

fn read_api(mut t: Table, base: Option<&Path>) -> Result<ApiConfig, ConfigError> {
    let endpoint_text = t
        .string("endpoint")?
        .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
    let endpoint = parse_http_url(&endpoint_text).map_err(|m| t.err("endpoint", m))?;
    if endpoint.query().is_some() || endpoint.fragment().is_some() {
        return Err(t.err(
            "endpoint",
            format!("{endpoint_text:?} has a query or fragment, which would be sent unsigned and refused; give the base URL only, e.g. \"{DEFAULT_ENDPOINT}\""),
        ));
    }
    if !endpoint.username().is_empty() || endpoint.password().is_some() {
        return Err(t.err(
            "endpoint",
            "has a user name or password in it, which would be logged; give the base URL only and the credentials in [api.auth]",
        ));
    }
    let project_id = t.nonempty_string("project_id")?;
    if let Some(p) = &project_id {
        if p.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(t.err(
                "project_id",
                format!("{p:?} has a space or control character; copy the project ID from the console (My Credentials > Projects)"),
            ));
        }
    }
    let timeout = t.duration("timeout")?.unwrap_or(Duration::from_secs(10));
    check_range(
        &t,
        "timeout",
        timeout,
        MAX_API_TIMEOUT,
        "the official SDK waits 120 s for an answer; a poll hung longer holds its job and delays shutdown",
        "\"10s\"",
    )?;
    let rate_limit = t.integer("rate_limit")?.unwrap_or(10);
    if rate_limit == 0 || rate_limit > 100_000 {
        return Err(t.err(
            "rate_limit",
            format!("{rate_limit} is not a usable budget; set 1 or more requests per second (the API allows 10)"),
        ));
    }
    let max_in_flight = t.integer("max_in_flight")?.unwrap_or(4);
    if max_in_flight == 0 || max_in_flight > 10_000 {
        return Err(t.err("max_in_flight", "must be between 1 and 10000"));
    }
    let throttle_backoff = t
        .duration("throttle_backoff")?
        .unwrap_or(Duration::from_secs(3));
    check_range(
        &t,
        "throttle_backoff",
        throttle_backoff,
        MAX_THROTTLE_BACKOFF,
        "the pause doubles while throttling lasts and is capped at a minute, and the provider advises 2-5 s",
        "\"3s\"",
    )?;
    let auth_backoff = t
        .duration("auth_backoff")?
        .unwrap_or(Duration::from_secs(6 * 60));
    check_range(
        &t,
        "auth_backoff",
        auth_backoff,
        MAX_AUTH_BACKOFF,
        "it doubles up to 8 times while refusals go on, and the gateway's lock lasts 5 minutes",
        "\"6m\"",
    )?;
    let allow_short_auth_backoff = t.boolean("allow_short_auth_backoff")?.unwrap_or(false);
    if auth_backoff < MIN_AUTH_BACKOFF && !allow_short_auth_backoff {
        return Err(t.err(
            "auth_backoff",
            format!(
                "{} is shorter than the 5 minutes the gateway locks an access key after repeated refusals, so every retry would be refused again; use at least \"5m\" (default \"6m\"). Only tests against the simulator may go lower, with allow_short_auth_backoff = true",
                format_duration(auth_backoff)
            ),
        ));
    }
    let auth = read_auth(t.table("auth")?, base)?;
    t.finish()?;
    if matches!(auth, Auth::AkSk { .. }) && project_id.is_none() {
        return Err(t.err(
            "project_id",
            "missing: AK/SK requests must carry X-Project-Id. Set project_id to the project ID of the region your RTC app is in: in the console, My Credentials > API Credentials lists one project ID per region (e.g. cn-north-4)",
        ));
    }
    Ok(ApiConfig {
        endpoint,
        project_id,
        timeout,
        rate_limit: rate_limit as u32,
        max_in_flight: max_in_flight as usize,
        auth,
        throttle_backoff,
        auth_backoff,
        allow_short_auth_backoff,
    })
}

fn read_auth(mut t: Table, base: Option<&Path>) -> Result<Auth, ConfigError> {
    let access_key = t.nonempty_string("access_key")?;
    let secret_key = t.secret("secret_key", base)?;
    let security_token = t.secret("security_token", base)?;
    let token = t.secret("token", base)?;
    t.finish()?;
    let here = &t.path;
    match (access_key, secret_key, token) {
        (Some(access_key), Some(secret_key), None) => Ok(Auth::AkSk {
            access_key,
            secret_key,
            security_token,
        }),
        (None, None, Some(token)) => {
            if security_token.is_some() {
                return Err(ConfigError::new(
                    format!("{here}.security_token"),
                    "only goes with access_key/secret_key (temporary AK/SK), not with token",
                ));
            }
            Ok(Auth::Token { token })
        }
        (Some(_), None, None) => Err(ConfigError::new(
            format!("{here}.secret_key"),
            "missing: access_key is set, so set secret_key or secret_key_file too",
        )),
        (None, Some(_), None) => Err(ConfigError::new(
            format!("{here}.access_key"),
            "missing: secret_key is set, so set access_key too",
        )),
        (None, None, None) => Err(ConfigError::new(
            here.clone(),
            "no credentials: set access_key with secret_key (or secret_key_file), or token (or token_file)",
        )),
        (_, _, Some(_)) => Err(ConfigError::new(
            here.clone(),
            "two authentication methods: set either access_key/secret_key or token, not both",
        )),
    }
}

fn read_poll(mut t: Table) -> Result<PollConfig, ConfigError> {
    let given_interval = t.duration("interval")?;
    let interval = given_interval.unwrap_or(Duration::from_secs(30));
    check_interval(&t, "interval", interval)?;
    let schedule = t.nonempty_string("schedule")?;
    if let Some(s) = &schedule {
        validate_cron(s).map_err(|m| t.err("schedule", m))?;
        if given_interval.is_some() {
            return Err(t.err(
                "interval",
                "is set together with poll.schedule, and only one can decide when jobs are polled; remove one",
            ));
        }
    }
    let stop_after_terminal = t.boolean("stop_after_terminal")?.unwrap_or(true);
    t.finish()?;
    Ok(PollConfig {
        interval,
        schedule,
        stop_after_terminal,
    })
}

/// A poll interval between 100 ms and [`MAX_INTERVAL`].
fn check_interval(t: &Table, key: &str, interval: Duration) -> Result<(), ConfigError> {
    if interval < Duration::from_millis(100) {
        return Err(t.err(key, "must be at least 100ms, e.g. \"30s\""));
    }
    if interval > MAX_INTERVAL {
        return Err(t.err(
            key,
            format!(
                "{} is longer than 30 days; a job polled this rarely is not watched (did you mean seconds, e.g. \"30s\"?)",
                format_duration(interval)
            ),
        ));
    }
    Ok(())
}

/// A channel's timeout: above zero and at most [`MAX_CHANNEL_TIMEOUT`].
fn check_channel_timeout(t: &Table, timeout: Duration) -> Result<(), ConfigError> {
    if timeout.is_zero() || timeout > MAX_CHANNEL_TIMEOUT {
        return Err(t.err(
            "timeout",
            format!(
                "{} is not a usable timeout; use more than 0s and at most 120s (a hung receiver holds its delivery this long)",
                format_duration(timeout)
            ),
        ));
    }
    Ok(())
}

/// A duration key's sane range: longer than zero (zero would retry or time out at once, in a
/// loop) and at most `max` (past it a value cannot be meant, e.g. "30d" for "30s", and it
/// feeds time arithmetic). `why` says where the bound comes from.
fn check_range(
    t: &Table,
    key: &str,
    d: Duration,
    max: Duration,
    why: &str,
    example: &str,
) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(t.err(key, format!("must be longer than 0s, e.g. {example}")));
    }
    if d > max {
        return Err(t.err(
            key,
            format!(
                "{} is longer than {}, the most it may be ({why}); use at most {}, e.g. {example}",
                format_duration(d),
                format_duration(max),
                format_duration(max)
            ),
        ));
    }
    Ok(())
}

/// Checks a cron expression the way tokio-cron-scheduler will read it: seconds field required.
pub fn validate_cron(expr: &str) -> Result<(), String> {
    let fields = expr.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        return Err(format!(
            "{expr:?} has {fields} fields; recwatch schedules need 6 or 7 (seconds first), e.g. \"*/30 * * * * *\""
        ));
    }
    parse_cron(expr)
        .map(|_| ())
        .map_err(|e| format!("{expr:?} is not a valid cron schedule: {e}"))
}

/// Parses with the options tokio-cron-scheduler uses, so what passes here runs there.
fn parse_cron(expr: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
}

fn read_storage(mut t: Table) -> Result<StorageConfig, ConfigError> {
    let path = t
        .nonempty_string("path")?
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/recwatch/recwatch.db"));
    let retention = t
        .duration("retention")?
        .unwrap_or(Duration::from_secs(90 * 86400));
    if retention < Duration::from_secs(3600) {
        return Err(t.err("retention", "must be at least 1h, e.g. \"90d\""));
    }
    if retention > MAX_RETENTION {
        return Err(t.err(
            "retention",
            "must be at most 36500d (100 years), e.g. \"90d\"",
        ));
    }
    t.finish()?;
    Ok(StorageConfig { path, retention })
}

/// Upper bounds for durations that feed time arithmetic (see `rules`), so that `check`
/// refuses an absurd value with a clear error instead of `run` meeting it later.
const MAX_INIT_GRACE: Duration = Duration::from_secs(30 * 86400);
const MAX_REPEAT_INTERVAL: Duration = Duration::from_secs(365 * 86400);
const MAX_RETENTION: Duration = Duration::from_secs(36500 * 86400);
const MAX_API_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_THROTTLE_BACKOFF: Duration = Duration::from_secs(60);
const MAX_AUTH_BACKOFF: Duration = Duration::from_secs(86400);
const MAX_MAX_AGE: Duration = Duration::from_secs(30 * 86400);
const MAX_MAX_BACKOFF: Duration = Duration::from_secs(86400);

fn read_rules(mut t: Table) -> Result<RulesConfig, ConfigError> {
    let d = RulesConfig::default();
    let mut level =
        |key: &str, default: Option<Severity>| -> Result<Option<Severity>, ConfigError> {
            match t.string(key)? {
                None => Ok(default),
                Some(s) if s == "off" => Ok(None),
                Some(s) => Severity::parse(&s).map(Some).ok_or_else(|| {
                    t.err(
                    key,
                    format!(
                        "{s:?} is not a level; use \"critical\", \"warning\", \"info\" or \"off\""
                    ),
                )
                }),
            }
        };
    let rules = RulesConfig {
        stopped_unexpectedly: level("stopped_unexpectedly", d.stopped_unexpectedly)?,
        idle_timeout: level("idle_timeout", d.idle_timeout)?,
        stopped_by_tenant: level("stopped_by_tenant", d.stopped_by_tenant)?,
        stuck_init: level("stuck_init", d.stuck_init)?,
        job_not_found: level("job_not_found", d.job_not_found)?,
        api_unhealthy: level("api_unhealthy", d.api_unhealthy)?,
        init_grace: t.duration("init_grace")?.unwrap_or(d.init_grace),
        api_failure_threshold: match t.integer("api_failure_threshold")? {
            None => d.api_failure_threshold,
            Some(0) => return Err(t.err("api_failure_threshold", "must be 1 or more")),
            Some(n) => n.min(u32::MAX as u64) as u32,
        },
        repeat_interval: t.duration("repeat_interval")?.unwrap_or(d.repeat_interval),
        send_resolved: t.boolean("send_resolved")?.unwrap_or(d.send_resolved),
    };
    if rules.repeat_interval < Duration::from_secs(1) {
        return Err(t.err("repeat_interval", "must be at least 1s, e.g. \"4h\""));
    }
    // Upper bounds: past them a value cannot be meant, and it feeds time arithmetic.
    if rules.init_grace > MAX_INIT_GRACE {
        return Err(t.err(
            "init_grace",
            "must be at most 30d (it is added to each job's max_idle_time), e.g. \"60s\"",
        ));
    }
    if rules.repeat_interval > MAX_REPEAT_INTERVAL {
        return Err(t.err(
            "repeat_interval",
            "must be at most 365d, e.g. \"4h\"; set the rule to \"off\" for no alerts",
        ));
    }
    t.finish()?;
    Ok(rules)
}

fn read_notify(mut t: Table, base: Option<&Path>) -> Result<NotifyConfig, ConfigError> {
    let max_age = t
        .duration("max_age")?
        .unwrap_or(Duration::from_secs(24 * 3600));
    check_range(
        &t,
        "max_age",
        max_age,
        MAX_MAX_AGE,
        "an alert older than that is history, not news",
        "\"24h\"",
    )?;
    let max_backoff = t
        .duration("max_backoff")?
        .unwrap_or(Duration::from_secs(600));
    check_range(
        &t,
        "max_backoff",
        max_backoff,
        MAX_MAX_BACKOFF,
        "a refused delivery is tried again only this often, so a fixed receiver would wait that long",
        "\"10m\"",
    )?;
    let mut names = HashSet::new();
    let mut webhooks = Vec::new();
    for mut w in t.array_of_tables("webhook")? {
        w.known(&["name", "url", "secret", "secret_file", "headers", "timeout"])?;
        let name = w.required_string("name")?;
        if !names.insert(name.clone()) {
            return Err(w.err(
                "name",
                format!("channel name {name:?} is used twice; names must be unique"),
            ));
        }
        let url_text = w.required_string("url")?;
        let url = parse_http_url(&url_text).map_err(|m| w.err("url", m))?;
        let secret = w.secret("secret", base)?;
        if let Some(s) = &secret {
            decode_webhook_secret(s.expose()).map_err(|m| w.err("secret", m))?;
        }
        let mut headers = Vec::new();
        if let Some(mut h) = w.table_opt("headers")? {
            let keys: Vec<String> = h.map.keys().cloned().collect();
            for key in keys {
                if reqwest::header::HeaderName::from_bytes(key.as_bytes()).is_err() {
                    return Err(h.err(&key, "is not a valid HTTP header name"));
                }
                let value = h.required_string(&key)?;
                headers.push((key, Secret::new(value)));
            }
        }
        let timeout = w.duration("timeout")?.unwrap_or(Duration::from_secs(10));
        check_channel_timeout(&w, timeout)?;
        w.finish()?;
        webhooks.push(WebhookConfig {
            name,
            url,
            secret,
            headers,
            timeout,
        });
    }
    let mut emails = Vec::new();
    for mut e in t.array_of_tables("email")? {
        e.known(&[
            "name",
            "smtp_host",
            "smtp_port",
            "tls",
            "username",
            "password",
            "password_file",
            "from",
            "to",
            "timeout",
            "accept_invalid_certs",
        ])?;
        let name = e.required_string("name")?;
        if !names.insert(name.clone()) {
            return Err(e.err(
                "name",
                format!("channel name {name:?} is used twice; names must be unique"),
            ));
        }
        let smtp_host = e.required_string("smtp_host")?;
        let tls = match e.string("tls")?.as_deref() {
            None | Some("starttls") => Tls::StartTls,
            Some("tls") => Tls::Tls,
            Some("none") => Tls::None,
            Some(other) => {
                return Err(e.err(
                    "tls",
                    format!("{other:?} is not a mode; use \"starttls\", \"tls\" or \"none\""),
                ));
            }
        };
        let default_port = match tls {
            Tls::StartTls => 587,
            Tls::Tls => 465,
            Tls::None => 25,
        };
        let smtp_port = match e.integer("smtp_port")? {
            None => default_port,
            Some(p) if (1..=65535).contains(&p) => p as u16,
            Some(p) => return Err(e.err("smtp_port", format!("{p} is not a port"))),
        };
        let username = e.nonempty_string("username")?;
        let password = e.secret("password", base)?;
        if password.is_some() && username.is_none() {
            return Err(e.err(
                "username",
                "missing: a password is set, so set the username too",
            ));
        }
        let from = e.required_string("from")?;
        from.parse::<lettre::message::Mailbox>()
            .map_err(|err| e.err("from", format!("{from:?} is not an address: {err}")))?;
        let to = e.string_list("to")?.unwrap_or_default();
        if to.is_empty() {
            return Err(e.err(
                "to",
                "missing: list at least one recipient, e.g. [\"oncall@example.com\"]",
            ));
        }
        for addr in &to {
            addr.parse::<lettre::message::Mailbox>()
                .map_err(|err| e.err("to", format!("{addr:?} is not an address: {err}")))?;
        }
        let timeout = e.duration("timeout")?.unwrap_or(Duration::from_secs(30));
        check_channel_timeout(&e, timeout)?;
        let accept_invalid_certs = e.boolean("accept_invalid_certs")?.unwrap_or(false);
        e.finish()?;
        emails.push(EmailConfig {
            name,
            smtp_host,
            smtp_port,
            tls,
            username,
            password,
            from,
            to,
            timeout,
            accept_invalid_certs,
        });
    }
    t.finish()?;
    Ok(NotifyConfig {
        webhooks,
        emails,
        max_age,
        max_backoff,
    })
}

/// Standard Webhooks keys are base64, conventionally prefixed `whsec_`; the HMAC key is the
/// decoded bytes, so a receiver's library and we agree on it.
pub fn decode_webhook_secret(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let b64 = text.strip_prefix("whsec_").unwrap_or(text);
    let key = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| {
        "is not a Standard Webhooks secret: use \"whsec_\" followed by base64, e.g. the output of `openssl rand -base64 32` with whsec_ in front".to_string()
    })?;
    if key.len() < 16 {
        return Err("is too short: use at least 16 random bytes (24 base64 characters)".into());
    }
    Ok(key)
}

fn read_http(mut t: Table) -> Result<HttpConfig, ConfigError> {
    let listen = match t.string("listen")? {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9187))),
        Some(s) if s.trim().is_empty() => None,
        Some(s) => Some(s.parse().map_err(|_| {
            t.err("listen", format!("{s:?} is not an address; use IP:PORT like \"127.0.0.1:9187\", or \"\" to turn the endpoint off"))
        })?),
    };
    t.finish()?;
    Ok(HttpConfig { listen })
}

fn read_log(mut t: Table) -> Result<LogConfig, ConfigError> {
    let level = t.string("level")?.unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        return Err(t.err(
            "level",
            format!("{level:?} is not a level or filter; use e.g. \"info\" or \"recwatch=debug\""),
        ));
    }
    t.finish()?;
    Ok(LogConfig { level })
}

fn read_jobs(
    tables: Vec<Table>,
    notify: &NotifyConfig,
    poll: &PollConfig,
) -> Result<Vec<JobConfig>, ConfigError> {
    let channels = notify.channel_names();
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut jobs = Vec::new();
    for mut t in tables {
        // Name the job in every message about it, so the operator finds it in a long list.
        let name = t.nonempty_string("name")?;
        if let Some(n) = &name {
            t.path = format!("{} ({n:?})", t.path);
            if n.chars().any(char::is_control) {
                return Err(t.err(
                    "name",
                    "has a control character; names go into log lines and alerts, so use printable text",
                ));
            }
        }
        // Before the required keys: a misspelt `appid` is the error, not a missing `app_id`.
        t.known(&["name", "app_id", "job_id", "interval", "notify"])?;
        let app_id = t.required_string("app_id")?;
        check_id(&t, "app_id", &app_id)?;
        let job_id = t.required_string("job_id")?;
        check_id(&t, "job_id", &job_id)?;
        let interval = t.duration("interval")?;
        if let Some(i) = interval {
            check_interval(&t, "interval", i)?;
            if poll.schedule.is_some() {
                return Err(t.err(
                    "interval",
                    "is set while poll.schedule polls every job on its ticks; remove one",
                ));
            }
        }
        let notify_names = t.string_list("notify")?;
        if let Some(list) = &notify_names {
            for n in list {
                if !channels.contains(&n.as_str()) {
                    return Err(t.err(
                        "notify",
                        format!("no channel is named {n:?}; the channels are {channels:?}"),
                    ));
                }
            }
        }
        t.finish()?;
        if let Some(first) = seen.insert((app_id.clone(), job_id.clone()), t.path.clone()) {
            return Err(ConfigError::new(
                t.path.clone(),
                format!(
                    "app_id {app_id:?} job_id {job_id:?} is already watched by {first}; remove one"
                ),
            ));
        }
        jobs.push(JobConfig {
            app_id,
            job_id,
            name,
            interval,
            notify: notify_names,
        });
    }
    Ok(jobs)
}

/// An id is sent as one URL path segment. The URL layer drops a `.` or `..` segment after
/// the request is signed, so the signature cannot match and every request is refused (three
/// refusals stop every poll for `api.auth_backoff`); a control character cannot be what the
/// console shows.
fn check_id(t: &Table, key: &str, id: &str) -> Result<(), ConfigError> {
    if id == "." || id == ".." {
        return Err(t.err(
            key,
            format!("{id:?} is not an id: the URL would lose it after signing and every request would be refused; copy the id from the console"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(t.err(
            key,
            format!("{id:?} has a control character; copy the id from the console"),
        ));
    }
    Ok(())
}

fn parse_http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{text:?} must be an http:// or https:// URL with a host"
        ));
    }
    Ok(url)
}

/// Formats a duration in its largest whole unit ("90d", "30s", "1500ms"), the way an operator
/// writes it in the config file.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    if ms >= 10_000 {
        return format!("{}s", (ms as f64 / 1000.0).round());
    }
    format!("{ms}ms")
}

/// Parses a humantime duration ("30s", "1h 30m", "90d").
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{text:?} is not a duration ({e}); write e.g. \"30s\", \"5m\", \"90d\"")
    })
}

/// One TOML table being read: keys are taken out as they are read, so whatever is left at
/// `finish` is unknown.
struct Table {
    path: String,
    map: Map<String, Value>,
    /// The keys read so far, to suggest one for a misspelt key.
    read: Vec<String>,
}

impl Table {
    fn new(path: impl Into<String>, map: Map<String, Value>) -> Table {
        Table {
            path: path.into(),
            map,
            read: Vec::new(),
        }
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.key_path(key), message)
    }

    fn finish(&self) -> Result<(), ConfigError> {
        let read: Vec<&str> = self.read.iter().map(String::as_str).collect();
        self.unknown(&read)
    }

    /// Refuses any key not in `keys`, before anything is read: a table whose required key is
    /// misspelt gets "unknown key appid", not "app_id missing".
    fn known(&self, keys: &[&str]) -> Result<(), ConfigError> {
        self.unknown(keys)
    }

    /// An error for the first key left in the table that is not in `known`.
    fn unknown(&self, known: &[&str]) -> Result<(), ConfigError> {
        let Some(key) = self.map.keys().find(|k| !known.contains(&k.as_str())) else {
            return Ok(());
        };
        let what = if self.path.is_empty() {
            "section"
        } else {
            "key"
        };
        let hint = match suggest(key, known) {
            Some(s) => format!(" (did you mean {s}?)"),
            None => String::new(),
        };
        Err(self.err(
            key,
            format!("unknown {what} {key}{hint}; check the spelling against config.example.toml"),
        ))
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.read.push(key.to_string());
        self.map.remove(key)
    }

    fn table(&mut self, key: &str) -> Result<Table, ConfigError> {
        Ok(self
            .table_opt(key)?
            .unwrap_or_else(|| Table::new(self.key_path(key), Map::new())))
    }

    fn table_opt(&mut self, key: &str) -> Result<Option<Table>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Table::new(self.key_path(key), m))),
            Some(_) => Err(self.err(key, format!("must be a table ([{}])", self.key_path(key)))),
        }
    }

    fn array_of_tables(&mut self, key: &str) -> Result<Vec<Table>, ConfigError> {
        match self.take(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Object(m) => Ok(Table::new(format!("{}[{i}]", self.key_path(key)), m)),
                    _ => Err(self.err(
                        key,
                        format!("entry {i} must be a table ([[{}]])", self.key_path(key)),
                    )),
                })
                .collect(),
            Some(_) => Err(self.err(
                key,
                format!("must be a list of tables ([[{}]])", self.key_path(key)),
            )),
        }
    }

    /// A string; numbers are accepted as their text, since ids are often numeric.
    fn string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(self.err(key, "must be a string")),
        }
    }

    fn nonempty_string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.string(key)? {
            Some(s) if s.trim().is_empty() => {
                Err(self.err(key, "is empty; give a value or remove the key"))
            }
            other => Ok(other.map(|s| s.trim().to_string())),
        }
    }

    fn required_string(&mut self, key: &str) -> Result<String, ConfigError> {
        self.nonempty_string(key)?
            .ok_or_else(|| self.err(key, "missing; this key is required"))
    }

    fn string_list(&mut self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) if !s.trim().is_empty() => Ok(s),
                    _ => Err(self.err(key, "must be a list of non-empty strings")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            // From the environment a list arrives as one comma-separated string.
            Some(Value::String(s)) => Ok(Some(
                s.split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect(),
            )),
            Some(_) => Err(self.err(key, "must be a list of strings")),
        }
    }

    fn integer(&mut self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(Value::String(s)) if s.trim().parse::<u64>().is_ok() => Ok(s.trim().parse().ok()),
            Some(v) => Err(self.err(key, format!("{v} is not a whole number 0 or above"))),
        }
    }

    fn boolean(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(v) => Err(self.err(key, format!("{v} is not true or false"))),
        }
    }

    fn duration(&mut self, key: &str) -> Result<Option<Duration>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => parse_duration(&s).map(Some).map_err(|m| self.err(key, m)),
        }
    }

    /// A secret given inline as `key` or read from the file named by `key_file` (trimmed, so
    /// systemd credentials and files ending in a newline work). Both at once is an error.
    fn secret(&mut self, key: &str, base: Option<&Path>) -> Result<Option<Secret>, ConfigError> {
        let file_key = format!("{key}_file");
        // Read the inline value by hand: its text must never appear in an error message.
        let inline = match self.take(key) {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => return Err(self.err(key, "must be a string")),
        };
        let file = self.nonempty_string(&file_key)?;
        match (inline, file) {
            (Some(_), Some(_)) => {
                Err(self.err(key, format!("set either {key} or {file_key}, not both")))
            }
            (Some(s), None) if s.trim().is_empty() => Err(self.err(key, "is empty")),
            (Some(s), None) => Ok(Some(Secret::new(s))),
            (None, Some(path)) => {
                let mut p = PathBuf::from(&path);
                // Relative to the config file, so a config and its secrets can move together.
                if p.is_relative() {
                    if let Some(b) = base {
                        p = b.join(p);
                    }
                }
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    self.err(
                        &file_key,
                        format!(
                            "cannot read {}: {e}; check the path and that recwatch may read it",
                            p.display()
                        ),
                    )
                })?;
                let value = text.trim();
                if value.is_empty() {
                    return Err(self.err(&file_key, format!("{} is empty", p.display())));
                }
                Ok(Some(Secret::new(value)))
            }
            (None, None) => Ok(None),
        }
    }
}

/// The known key `key` was most likely meant to be: the same letters without `_`/`-` or
/// case, or at most two edits away.
fn suggest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let k = squash(key);
    known
        .iter()
        .map(|c| (edit_distance(&k, &squash(c)), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, for [`suggest`] (keys are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// What the budget allows: used at start and by `check`.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetReport {
    pub jobs: usize,
    /// Requests per second the watch list asks for at its intervals.
    pub demand: f64,
    pub rate_limit: u32,
    /// How much longer than configured every interval becomes, >= 1.
    pub stretch: f64,
}

impl BudgetReport {
    pub fn fits(&self) -> bool {
        self.stretch <= 1.0
    }

    pub fn effective(&self, interval: Duration) -> Duration {
        interval.mul_f64(self.stretch.max(1.0))
    }
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
            if !addr.ip().is_loopback() {
                out.push(format!(
                    "http.listen {addr} is not a loopback address: anyone who can reach it can read job names, states and errors from /api/v1/jobs and /metrics; listen on 127.0.0.1 and put a reverse proxy with authentication in front, or firewall the port"
                ));
            }
        }
        out
    }

    /// The interval each job is polled at, before the budget.
    pub fn job_interval(&self, job: &JobConfig) -> Duration {
        job.interval.unwrap_or(self.poll.interval)
    }

    pub fn budget(&self) -> BudgetReport {
        let demand: f64 = match &self.poll.schedule {
            // A cron tick polls every job once; ticks are at least a second apart.
            Some(_) => {
                self.jobs.len() as f64
                    / cron_min_period(self.poll.schedule.as_deref()).as_secs_f64()
            }
            None => self
                .jobs
                .iter()
                .map(|j| 1.0 / self.job_interval(j).as_secs_f64())
                .sum(),
        };
        let rate = self.api.rate_limit as f64;
        BudgetReport {
            jobs: self.jobs.len(),
            demand,
            rate_limit: self.api.rate_limit,
            stretch: (demand / rate).max(1.0),
        }
    }

    /// A config with every default and no jobs, for the demo and tests.
    pub fn defaults(auth: Auth) -> Config {
        Config {
            source: None,
            api: ApiConfig {
                endpoint: Url::parse(DEFAULT_ENDPOINT).expect("default endpoint parses"),
                project_id: None,
                timeout: Duration::from_secs(10),
                rate_limit: 10,
                max_in_flight: 4,
                auth,
                throttle_backoff: Duration::from_secs(3),
                auth_backoff: Duration::from_secs(6 * 60),
                allow_short_auth_backoff: false,
            },
            poll: PollConfig {
                interval: Duration::from_secs(30),
                schedule: None,
                stop_after_terminal: true,
            },
            storage: StorageConfig {
                path: PathBuf::from("/var/lib/recwatch/recwatch.db"),
                retention: Duration::from_secs(90 * 86400),
            },
            rules: RulesConfig::default(),
            notify: NotifyConfig {
                webhooks: Vec::new(),
                emails: Vec::new(),
                max_age: Duration::from_secs(24 * 3600),
                max_backoff: Duration::from_secs(600),
            },
            http: HttpConfig { listen: None },
            log: LogConfig {
                level: "info".into(),
            },
            jobs: Vec::new(),
        }
    }
}

/// The shortest gap between two runs of a cron schedule, looked at over the next few runs.
pub fn cron_min_period(schedule: Option<&str>) -> Duration {
    let Some(expr) = schedule else {
        return Duration::from_secs(1);
    };
    let Ok(cron) = parse_cron(expr) else {
        return Duration::from_secs(1);
    };
    let now = chrono::Utc::now();
    let times: Vec<_> = cron.iter_after(now).take(8).collect();
    times
        .windows(2)
        .filter_map(|w| (w[1] - w[0]).to_std().ok())
        .min()
        .unwrap_or(Duration::from_secs(60))
        .max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[api]
project_id = "0a1b2c3d4e5f67890a1b2c3d4e5f6789"

[api.auth]
access_key = "AK"
secret_key = "SK"

[[jobs]]
app_id = "app"
job_id = "job"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_str(text, Vec::<(String, String)>::new(), None)
    }

    #[test]
    fn minimal_config_takes_every_default() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(
            c.api.endpoint.as_str(),
            "https://rtc-api.myhuaweicloud.com/"
        );
        assert_eq!(c.api.rate_limit, 10);
        assert_eq!(c.api.max_in_flight, 4);
        assert_eq!(c.poll.interval, Duration::from_secs(30));
        assert!(c.poll.stop_after_terminal);
        assert_eq!(c.storage.retention, Duration::from_secs(90 * 86400));
        assert_eq!(c.jobs.len(), 1);
        assert_eq!(c.rules, RulesConfig::default());
        assert_eq!(c.http.listen, Some("127.0.0.1:9187".parse().unwrap()));
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = vec![
            (
                "RECWATCH_API__AUTH__SECRET_KEY".to_string(),
                "from-env".to_string(),
            ),
            ("RECWATCH_API__RATE_LIMIT".to_string(), "5".to_string()),
            (
                "RECWATCH_POLL__STOP_AFTER_TERMINAL".to_string(),
                "false".to_string(),
            ),
            // Not an override: names the file.
            ("RECWATCH_CONFIG".to_string(), "/x.toml".to_string()),
        ];
        let c = parse_str(MINIMAL, env, None).unwrap();
        let Auth::AkSk { secret_key, .. } = &c.api.auth else {
            panic!("aksk")
        };
        assert_eq!(secret_key.expose(), "from-env");
        assert_eq!(c.api.rate_limit, 5);
        assert!(!c.poll.stop_after_terminal);
    }

    #[test]
    fn secret_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sk"), "  s3cret\n").unwrap();
        let text = MINIMAL.replace("secret_key = \"SK\"", "secret_key_file = \"sk\"");
        let c = parse_str(&text, Vec::<(String, String)>::new(), Some(dir.path())).unwrap();
        let Auth::AkSk { secret_key, .. } = &c.api.auth else {
            panic!("aksk")
        };
        assert_eq!(secret_key.expose(), "s3cret");
    }

    /// Every bad-config case: the key the message must name, and a phrase of the fix.
    #[test]
    fn table_of_bad_configs() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "unknown section",
                "[apii]\nx = 1\n",
                "apii",
                "unknown section",
            ),
            (
                "unknown key",
                "[poll]\nintervall = \"3s\"\n",
                "poll.intervall",
                "unknown key",
            ),
            (
                "bad duration",
                "[poll]\ninterval = \"soon\"\n",
                "poll.interval",
                "not a duration",
            ),
            (
                "bad cron",
                "[poll]\nschedule = \"* * * * *\"\n",
                "poll.schedule",
                "6 or 7",
            ),
            (
                "bad cron field",
                "[poll]\nschedule = \"99 * * * * *\"\n",
                "poll.schedule",
                "not a valid cron",
            ),
            (
                "rate limit zero",
                "[api]\nrate_limit = 0\n",
                "api.rate_limit",
                "1 or more",
            ),
            (
                "bad endpoint",
                "[api]\nendpoint = \"ftp://x\"\n",
                "api.endpoint",
                "http",
            ),
            (
                "endpoint with a query: it would be sent unsigned",
                "[api]\nendpoint = \"https://rtc.example.com/?region=x\"\n",
                "api.endpoint",
                "query",
            ),
            (
                "endpoint with a password: it would be logged",
                "[api]\nendpoint = \"https://u:p@rtc.example.com\"\n",
                "api.endpoint",
                "password",
            ),
            (
                "auth_backoff inside the gateway's lock",
                "[api]\nauth_backoff = \"4m\"\n",
                "api.auth_backoff",
                "5 minutes",
            ),
            (
                "interval over 30 days",
                "[poll]\ninterval = \"31d\"\n",
                "poll.interval",
                "30 days",
            ),
            (
                "interval and schedule",
                "[poll]\ninterval = \"10s\"\nschedule = \"*/30 * * * * *\"\n",
                "poll.interval",
                "poll.schedule",
            ),
            (
                "webhook timeout over 120s",
                "[[notify.webhook]]\nname = \"h\"\nurl = \"http://127.0.0.1:1/\"\ntimeout = \"121s\"\n",
                "notify.webhook[0].timeout",
                "at most 120s",
            ),
            (
                "email timeout zero",
                "[[notify.email]]\nname = \"m\"\nsmtp_host = \"h\"\nfrom = \"a@b.c\"\nto = [\"a@b.c\"]\ntimeout = \"0s\"\n",
                "notify.email[0].timeout",
                "more than 0s",
            ),
            (
                "misspelt required key of a channel",
                "[[notify.webhook]]\nnmae = \"h\"\nurl = \"http://127.0.0.1:1/\"\n",
                "notify.webhook[0].nmae",
                "unknown key nmae (did you mean name?)",
            ),
            (
                "misspelt section",
                "[pol]\ninterval = \"5s\"\n",
                "pol",
                "unknown section pol (did you mean poll?)",
            ),
        ];
        for (name, extra, key, fix) in cases {
            let e = parse(&with(extra)).expect_err(name);
            assert!(e.location.contains(key), "{name}: {e}");
            assert!(e.message.contains(fix), "{name}: {e}");
        }
    }

    /// MINIMAL with `extra` added: a section MINIMAL already has gets the keys inserted
    /// (TOML refuses a table defined twice); anything else goes in front.
    fn with(extra: &str) -> String {
        match extra.split_once('\n') {
            Some((header, body))
                if header.starts_with('[') && MINIMAL.contains(&format!("\n{header}\n")) =>
            {
                MINIMAL.replacen(
                    &format!("\n{header}\n"),
                    &format!("\n{header}\n{body}\n"),
                    1,
                )
            }
            _ => format!("{extra}\n{MINIMAL}"),
        }
    }

    #[test]
    fn auth_errors() {
        let job = "[[jobs]]\napp_id = \"a\"\njob_id = \"j\"\n";
        let cases: &[(&str, &str, &str, &str)] = &[
            ("no auth", "", "api.auth", "no credentials"),
            (
                "two methods",
                "[api.auth]\naccess_key=\"a\"\nsecret_key=\"s\"\ntoken=\"t\"\n",
                "api.auth",
                "two authentication methods",
            ),
            (
                "ak without sk",
                "[api.auth]\naccess_key=\"a\"\n",
                "api.auth.secret_key",
                "missing",
            ),
            (
                "sk and sk file",
                "[api.auth]\naccess_key=\"a\"\nsecret_key=\"s\"\nsecret_key_file=\"/f\"\n",
                "api.auth.secret_key",
                "not both",
            ),
            (
                "unreadable secret file",
                "[api.auth]\naccess_key=\"a\"\nsecret_key_file=\"/nonexistent/sk\"\n",
                "api.auth.secret_key_file",
                "cannot read",
            ),
        ];
        for (name, auth, key, fix) in cases {
            let e = parse(&format!("{auth}{job}")).expect_err(name);
            assert!(e.location.contains(key), "{name}: {e}");
            assert!(e.message.contains(fix), "{name}: {e}");
            assert!(
                !e.to_string().contains("\"s\""),
                "{name}: secret leaked: {e}"
            );
        }
    }

    #[test]
    fn job_errors_name_the_job() {
        let auth = "[api.auth]\ntoken = \"t\"\n";
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "empty job id",
                "[[jobs]]\napp_id=\"a\"\njob_id=\"\"\nname=\"lobby\"\n",
                "jobs[0] (\"lobby\").job_id",
                "empty",
            ),
            (
                "missing app id",
                "[[jobs]]\njob_id=\"j\"\n",
                "jobs[0].app_id",
                "missing",
            ),
            (
                "duplicate",
                "[[jobs]]\napp_id=\"a\"\njob_id=\"j\"\n[[jobs]]\napp_id=\"a\"\njob_id=\"j\"\nname=\"dup\"\n",
                "jobs[1] (\"dup\")",
                "already watched by jobs[0]",
            ),
            (
                "unknown channel",
                "[[jobs]]\napp_id=\"a\"\njob_id=\"j\"\nnotify=[\"pager\"]\n",
                "jobs[0].notify",
                "no channel",
            ),
            (
                "dot job id: the URL drops it after signing",
                "[[jobs]]\napp_id=\"a\"\njob_id=\".\"\nname=\"lobby\"\n",
                "jobs[0] (\"lobby\").job_id",
                "not an id",
            ),
            (
                "dot-dot app id",
                "[[jobs]]\napp_id=\"..\"\njob_id=\"j\"\n",
                "jobs[0].app_id",
                "not an id",
            ),
            (
                "control character in a job id",
                "[[jobs]]\napp_id=\"a\"\njob_id=\"j\\u0007\"\nname=\"bell\"\n",
                "jobs[0] (\"bell\").job_id",
                "control character",
            ),
            (
                "control character in a name",
                "[[jobs]]\napp_id=\"a\"\njob_id=\"j\"\nname=\"x\\r\\ny\"\n",
                ".name",
                "control character",
            ),
            (
                "misspelt app_id",
                "[[jobs]]\nappid=\"a\"\njob_id=\"j\"\nname=\"cam\"\n",
                "jobs[0] (\"cam\").appid",
                "unknown key appid (did you mean app_id?)",
            ),
            (
                "job interval over 30 days",
                "[[jobs]]\napp_id=\"a\"\njob_id=\"j\"\ninterval=\"45d\"\n",
                "jobs[0].interval",
                "30 days",
            ),
            (
                "job interval under a cron schedule",
                "[poll]\nschedule=\"*/30 * * * * *\"\n[[jobs]]\napp_id=\"a\"\njob_id=\"j\"\ninterval=\"10s\"\n",
                "jobs[0].interval",
                "poll.schedule",
            ),
        ];
        for (name, jobs, key, fix) in cases {
            let e = parse(&format!("{auth}{jobs}")).expect_err(name);
            assert!(e.location.contains(key), "{name}: {e}");
            assert!(e.message.contains(fix), "{name}: {e}");
        }
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let c = parse(MINIMAL).unwrap();
        let dump = format!("{c:?}");
        assert!(!dump.contains("\"SK\""), "{dump}");
        assert!(dump.contains("***"));
    }

    #[test]
    fn budget_stretches_when_the_list_is_too_long() {
        let mut c = parse(MINIMAL).unwrap();
        let job = c.jobs[0].clone();
        c.jobs = (0..600)
            .map(|i| JobConfig {
                job_id: format!("j{i}"),
                ..job.clone()
            })
            .collect();
        let b = c.budget();
        assert!((b.demand - 20.0).abs() < 1e-9);
        assert!(!b.fits());
        assert_eq!(
            b.effective(Duration::from_secs(30)),
            Duration::from_secs(60)
        );
        c.jobs.truncate(300);
        assert!(c.budget().fits());
    }

    #[test]
    fn durations_print_the_way_they_are_written() {
        let cases = [
            (90 * 86_400_000, "90d"),
            (30_000, "30s"),
            (1_500, "1500ms"),
            (4 * 3_600_000, "4h"),
            (300_000, "5m"),
            (61_000, "61s"),
            (12_345, "12s"),
        ];
        for (ms, want) in cases {
            assert_eq!(format_duration(Duration::from_millis(ms)), want);
        }
    }

    #[test]
    fn webhook_secret_must_be_standard() {
        assert!(decode_webhook_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert!(decode_webhook_secret("not base64!").is_err());
        assert!(decode_webhook_secret("whsec_c2hvcnQ=").is_err());
    }

    #[test]
    fn project_id_is_required_with_aksk_only() {
        let aksk = MINIMAL.replace("project_id = \"0a1b2c3d4e5f67890a1b2c3d4e5f6789\"\n", "");
        let e = parse(&aksk).expect_err("AK/SK without a project id");
        assert_eq!(e.location, "api.project_id");
        assert!(e.message.contains("X-Project-Id"), "{e}");
        assert!(e.message.contains("My Credentials"), "{e}");
        let token = "[api.auth]\ntoken = \"t0ken\"\n[[jobs]]\napp_id = \"a\"\njob_id = \"j\"\n";
        assert!(
            parse(token).is_ok(),
            "an IAM token is project-scoped itself"
        );
        let spaced = MINIMAL.replace("0a1b2c3d4e5f67890a1b2c3d4e5f6789", "0a1b 2c3d");
        assert_eq!(parse(&spaced).unwrap_err().location, "api.project_id");
    }

    #[test]
    fn the_escape_hatch_allows_a_short_auth_backoff_with_a_warning() {
        let c = parse(&with(
            "[api]\nauth_backoff = \"1s\"\nallow_short_auth_backoff = true\n",
        ))
        .unwrap();
        assert_eq!(c.api.auth_backoff, Duration::from_secs(1));
        let w = c.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("allow_short_auth_backoff"), "{w:?}");
        assert!(parse(MINIMAL).unwrap().warnings().is_empty());
    }

    #[test]
    fn listening_beyond_loopback_is_a_warning() {
        let cases = [
            ("127.0.0.1:9187", false),
            ("[::1]:9187", false),
            ("0.0.0.0:9187", true),
            ("192.0.2.7:9187", true),
        ];
        for (addr, warns) in cases {
            let c = parse(&with(&format!("[http]\nlisten = \"{addr}\"\n"))).unwrap();
            let w = c.warnings();
            assert_eq!(!w.is_empty(), warns, "{addr}: {w:?}");
            if warns {
                assert!(w[0].contains("anyone who can reach it"), "{w:?}");
            }
        }
    }

    #[test]
    fn errors_from_the_environment_name_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        // (case, the variable and its value, where the error is, what it says)
        let cases: &[(&str, (&str, &str), &str, &str)] = &[
            (
                "bad value",
                ("RECWATCH_API__RATE_LIMIT", "lots"),
                "RECWATCH_API__RATE_LIMIT (overrides api.rate_limit)",
                "\"lots\" is not a whole number",
            ),
            (
                "unknown key",
                ("RECWATCH_POLL__INTERVALL", "5s"),
                "RECWATCH_POLL__INTERVALL (overrides poll.intervall)",
                "did you mean interval?",
            ),
            (
                "a conflict inside a table the variable sets a key of",
                ("RECWATCH_API__AUTH__TOKEN", "t0ken-value"),
                "api.auth in ",
                "the environment sets RECWATCH_API__AUTH__TOKEN",
            ),
        ];
        for (name, (var, value), location, fix) in cases {
            let e = load_with_env(&path, env(var, value)).expect_err(name);
            assert!(e.location.starts_with(location), "{name}: {e}");
            assert!(e.message.contains(fix), "{name}: {e}");
            assert!(!e.to_string().contains("t0ken-value"), "{name}: {e}");
        }
        let e = load_with_env(&path, env("RECWATCH_API__RATE_LIMIT", "0")).unwrap_err();
        assert!(
            !e.to_string().contains("config.toml"),
            "the value is not in the file: {e}"
        );
    }

    #[test]
    fn a_syntax_error_never_shows_a_secret() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "half-typed secret key",
                "[api.auth]\naccess_key = \"AK\"\nsecret_key = \"hunter2-the-key\n",
                "line 3",
            ),
            (
                "unquoted password",
                "[[notify.email]]\npassword = hunter2-the-key\n",
                "line 2",
            ),
            (
                "header value in an unclosed inline table",
                "[[notify.webhook]]\nheaders = { Authorization = \"Bearer hunter2-the-key\" \n",
                "line 2",
            ),
            (
                "the secret is fine, the next line is not",
                "[api.auth]\nsecret_key = \"hunter2-the-key\"\nx = = 1\n",
                "line 3",
            ),
        ];
        for (name, text, line) in cases {
            let e = parse(text).expect_err(name);
            let shown = e.to_string();
            assert!(!shown.contains("hunter2"), "{name}: {shown}");
            assert!(e.location.contains(line), "{name}: {shown}");
            assert!(e.location.contains("TOML syntax"), "{name}: {shown}");
            assert!(!shown.contains('\n'), "{name}: one line: {shown}");
        }
        let e = parse("[api.auth]\nsecret_key = \"hunter2-the-key\n").unwrap_err();
        assert!(e.message.contains("`secret_key = ***`"), "{e}");
    }

    #[test]
    fn suggestions_table() {
        let known = ["app_id", "job_id", "name", "interval", "notify"];
        let cases = [
            ("appid", Some("app_id")),
            ("APP_ID", Some("app_id")),
            ("jobid", Some("job_id")),
            ("intervall", Some("interval")),
            ("nmae", Some("name")),
            ("colour", None),
        ];
        for (key, want) in cases {
            assert_eq!(suggest(key, &known), want, "{key}");
        }
    }

    /// Every duration key has an upper bound (and, where zero would loop, a lower one): each
    /// bound is refused just past it, with the key and the fix; the largest allowed passes.
    #[test]
    fn absurd_durations_are_refused_table() {
        // (name, config text, None if accepted or Some((key, phrase of the fix)))
        type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>);
        let cases: &[Case] = &[
            (
                "grace at its bound",
                "[rules]\ninit_grace = \"30d\"\n",
                None,
            ),
            (
                "grace past its bound",
                "[rules]\ninit_grace = \"31d\"\n",
                Some(("rules.init_grace", "at most 30d")),
            ),
            (
                "grace of 2^64-1 seconds",
                "[rules]\ninit_grace = \"18446744073709551615s\"\n",
                Some(("rules.init_grace", "at most 30d")),
            ),
            (
                "repeat at its bound",
                "[rules]\nrepeat_interval = \"365d\"\n",
                None,
            ),
            (
                "repeat past its bound",
                "[rules]\nrepeat_interval = \"1000y\"\n",
                Some(("rules.repeat_interval", "at most 365d")),
            ),
            (
                "retention at its bound",
                "[storage]\nretention = \"36500d\"\n",
                None,
            ),
            (
                "retention past its bound",
                "[storage]\nretention = \"100000y\"\n",
                Some(("storage.retention", "at most 36500d")),
            ),
            (
                "api timeout at its bound",
                "[api]\ntimeout = \"5m\"\n",
                None,
            ),
            (
                "api timeout past its bound",
                "[api]\ntimeout = \"301s\"\n",
                Some(("api.timeout", "use at most 5m")),
            ),
            (
                "api timeout of zero",
                "[api]\ntimeout = \"0s\"\n",
                Some(("api.timeout", "longer than 0s")),
            ),
            (
                "throttle back-off at its bound",
                "[api]\nthrottle_backoff = \"1m\"\n",
                None,
            ),
            (
                "throttle back-off past its bound",
                "[api]\nthrottle_backoff = \"3h\"\n",
                Some(("api.throttle_backoff", "use at most 1m")),
            ),
            (
                "throttle back-off of zero",
                "[api]\nthrottle_backoff = \"0s\"\n",
                Some(("api.throttle_backoff", "longer than 0s")),
            ),
            (
                "auth back-off at its bound",
                "[api]\nauth_backoff = \"24h\"\n",
                None,
            ),
            (
                "auth back-off of 2^64-1 seconds",
                "[api]\nauth_backoff = \"18446744073709551615s\"\n",
                Some(("api.auth_backoff", "use at most 1d")),
            ),
            (
                "auth back-off of zero, even for the simulator",
                "[api]\nauth_backoff = \"0s\"\nallow_short_auth_backoff = true\n",
                Some(("api.auth_backoff", "longer than 0s")),
            ),
            (
                "max age at its bound",
                "[notify]\nmax_age = \"30d\"\n",
                None,
            ),
            (
                "max age past its bound",
                "[notify]\nmax_age = \"1y\"\n",
                Some(("notify.max_age", "use at most 30d")),
            ),
            (
                "max age of zero",
                "[notify]\nmax_age = \"0s\"\n",
                Some(("notify.max_age", "longer than 0s")),
            ),
            (
                "max back-off at its bound",
                "[notify]\nmax_backoff = \"24h\"\n",
                None,
            ),
            (
                "max back-off past its bound",
                "[notify]\nmax_backoff = \"1000y\"\n",
                Some(("notify.max_backoff", "use at most 1d")),
            ),
            (
                "max back-off of zero (a retry loop)",
                "[notify]\nmax_backoff = \"0s\"\n",
                Some(("notify.max_backoff", "longer than 0s")),
            ),
        ];
        for (name, extra, want) in cases {
            // Keys of [api] go into MINIMAL's own [api] table (a second one is a TOML error).
            let text = match extra.strip_prefix("[api]\n") {
                Some(keys) => MINIMAL.replacen("[api]\n", &format!("[api]\n{keys}"), 1),
                None => format!("{extra}\n{MINIMAL}"),
            };
            let got = parse(&text);
            match (want, got) {
                (None, Ok(_)) => {}
                (None, Err(e)) => panic!("{name}: refused: {e}"),
                (Some(_), Ok(_)) => panic!("{name}: accepted"),
                (Some((key, fix)), Err(e)) => {
                    assert!(e.location.contains(key), "{name}: {e}");
                    assert!(e.message.contains(fix), "{name}: {e}");
                }
            }
        }
    }
}
