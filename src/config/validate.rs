//! Validation: each section of the raw tree read into its typed form, every value checked
//! against its bound (see [`super::defaults`]) with an error that names the key and
//! the fix.

use super::callback::{read_apps, read_callback};
use super::channels::read_notify;
use super::defaults::{self, *};
use super::duration::format_duration;
use super::heartbeat::read_heartbeat;
use super::raw::Table;
use super::split::Entries;
use super::{
    ApiConfig, Config, ConfigError, HttpConfig, JobConfig, LogConfig, NotifyConfig, PollConfig,
    RulesConfig, Schedule,
};
use crate::domain::Severity;
use crate::telemetry::LogFilter;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The whole tree, section by section; the sections' order decides which of two errors is
/// told first. With the config, every key path the readers know (see
/// [`super::raw::KnownKeys`]). `[[jobs]]` are the tree's, or `split`'s or `lean`'s when the
/// file's were cut out of it.
pub(super) fn from_tree(
    root: Map<String, Value>,
    base: Option<&Path>,
    entries: Entries<'_, '_>,
) -> Result<(Config, std::collections::BTreeSet<String>), ConfigError> {
    let mut root = Table::new("", root);
    let known_keys = root.known_keys();
    let accounts = super::accounts::read_accounts(&mut root, base)?;
    let names = super::accounts::refs(&accounts);
    let poll = read_poll(root.table("poll")?)?;
    let storage = super::storage::read_storage(root.table("storage")?, base)?;
    let rules = read_rules(root.table("rules")?)?;
    let notify = read_notify(root.table("notify")?, base)?;
    let http = read_http(root.table("http")?, base)?;
    let callback = read_callback(root.table("callback")?)?;
    let heartbeat = read_heartbeat(root.table("heartbeat")?, base)?;
    let mut remediate = crate::remediation::config::read_remediate(root.table("remediate")?)?;
    let watchlist = super::list_bounds::read_watchlist(root.table("watchlist")?)?;
    let log = read_log(root.table("log")?)?;
    let in_tree = root.array_of_tables("jobs")?;
    let jobs = match entries {
        Entries::InTree => read_jobs(
            in_tree.len(),
            in_tree.into_iter().map(Ok),
            &notify,
            &poll,
            &mut remediate.jobs,
            &names,
        )?,
        // Read as they are parsed, a run at a time: never every entry's table at once.
        Entries::Split(split) => read_jobs(
            split.count,
            split
                .entries()
                .enumerate()
                .map(|(i, t)| t.map(|t| Table::new(format!("jobs[{i}]"), t))),
            &notify,
            &poll,
            &mut remediate.jobs,
            &names,
        )?,
        // `lean`'s, read by the caller once the rest is known (and any reason to decline
        // never told: the caller reads the file again by the general path).
        Entries::Later => Vec::new(),
    };
    let apps = read_apps(
        root.array_of_tables("apps")?,
        &notify,
        &callback,
        base,
        &mut remediate.apps,
        &names,
    )?;
    let maintenance = crate::hold::config::read_maintenance(root.array_of_tables("maintenance")?)?;
    root.finish()?;
    let config = Config {
        source: None,
        api: accounts[0].clone(),
        accounts,
        poll,
        storage,
        rules,
        notify,
        http,
        callback,
        heartbeat,
        remediate,
        watchlist,
        log,
        jobs,
        apps,
        maintenance,
        unknown_env: Vec::new(),
    };
    let known = known_keys.borrow().clone();
    Ok((config, known))
}

/// `[api]`, or one `[[accounts]]` entry (its `name` already read), as the account `name`.
pub(super) fn read_api(
    mut t: Table,
    base: Option<&Path>,
    name: &str,
) -> Result<ApiConfig, ConfigError> {
    let endpoint = read_endpoint(&mut t)?;
    let project_id = read_project_id(&mut t)?;
    let (timeout, rate_limit, max_in_flight) = read_budget(&mut t)?;
    let (throttle_backoff, auth_backoff, allow_short_auth_backoff) = read_backoffs(&mut t)?;
    let auth = super::auth::read_auth(t.table("auth")?, base)?;
    t.finish()?;
    // The environment's or the profile's project id, as the SDK takes it, when none is here.
    let project_id = project_id.or_else(|| auth.project_id().map(str::to_string));
    if auth.signs() && project_id.is_none() {
        return Err(t.err(
            "project_id",
            "missing: AK/SK requests must carry X-Project-Id. Set project_id to the project ID of the region your RTC app is in: in the console, My Credentials > API Credentials lists one project ID per region (e.g. cn-north-4)",
        ));
    }
    Ok(ApiConfig {
        name: name.into(),
        endpoint,
        project_id,
        timeout,
        rate_limit,
        max_in_flight,
        auth,
        throttle_backoff,
        auth_backoff,
        allow_short_auth_backoff,
    })
}

/// `api.endpoint`: a base URL that signs cleanly and carries no credential of its own.
fn read_endpoint(t: &mut Table) -> Result<Url, ConfigError> {
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
    Ok(endpoint)
}

fn read_project_id(t: &mut Table) -> Result<Option<String>, ConfigError> {
    let project_id = t.nonempty_string("project_id")?;
    if let Some(p) = &project_id {
        if p.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(t.err(
                "project_id",
                format!("{p:?} has a space or control character; copy the project ID from the console (My Credentials > Projects)"),
            ));
        }
    }
    Ok(project_id)
}

/// `api.timeout`, `api.rate_limit` and `api.max_in_flight`: what one poll may cost.
fn read_budget(t: &mut Table) -> Result<(Duration, u32, usize), ConfigError> {
    let timeout = t.duration("timeout")?.unwrap_or(defaults::API_TIMEOUT);
    check_range(
        t,
        "timeout",
        timeout,
        MAX_API_TIMEOUT,
        "the official SDK waits 120 s for an answer; a poll hung longer holds its job and delays shutdown",
        &quoted(defaults::API_TIMEOUT),
    )?;
    let rate_limit = t.integer("rate_limit")?.unwrap_or(defaults::RATE_LIMIT);
    if rate_limit == 0 || rate_limit > MAX_RATE_LIMIT {
        return Err(t.err(
            "rate_limit",
            format!("{rate_limit} is not a usable budget; set 1 or more requests per second (the API allows 10)"),
        ));
    }
    let max_in_flight = t
        .integer("max_in_flight")?
        .unwrap_or(defaults::MAX_IN_FLIGHT);
    if max_in_flight == 0 || max_in_flight > MAX_MAX_IN_FLIGHT {
        return Err(t.err("max_in_flight", "must be between 1 and 10000"));
    }
    Ok((timeout, rate_limit as u32, max_in_flight as usize))
}

/// `api.throttle_backoff`, `api.auth_backoff` and its escape hatch.
fn read_backoffs(t: &mut Table) -> Result<(Duration, Duration, bool), ConfigError> {
    let throttle_backoff = t
        .duration("throttle_backoff")?
        .unwrap_or(defaults::THROTTLE_BACKOFF);
    check_range(
        t,
        "throttle_backoff",
        throttle_backoff,
        MAX_THROTTLE_BACKOFF,
        "the pause doubles while throttling lasts and is capped at a minute, and the provider advises 2-5 s",
        &quoted(defaults::THROTTLE_BACKOFF),
    )?;
    let auth_backoff = t
        .duration("auth_backoff")?
        .unwrap_or(defaults::AUTH_BACKOFF);
    check_range(
        t,
        "auth_backoff",
        auth_backoff,
        MAX_AUTH_BACKOFF,
        "it doubles up to 8 times while refusals go on, and the gateway's lock lasts 5 minutes",
        &quoted(defaults::AUTH_BACKOFF),
    )?;
    let allow_short_auth_backoff = t.boolean("allow_short_auth_backoff")?.unwrap_or(false);
    if auth_backoff < MIN_AUTH_BACKOFF && !allow_short_auth_backoff {
        return Err(t.err(
            "auth_backoff",
            format!(
                "{} is shorter than the 5 minutes the gateway locks an access key after repeated refusals, so every retry would be refused again; use at least \"5m\" (default {}). Only tests against the simulator may go lower, with allow_short_auth_backoff = true",
                format_duration(auth_backoff),
                quoted(defaults::AUTH_BACKOFF)
            ),
        ));
    }
    Ok((throttle_backoff, auth_backoff, allow_short_auth_backoff))
}

/// A default as the example in a message: `"6m"`, quoted the way the file writes it.
pub(super) fn quoted(d: Duration) -> String {
    format!("\"{}\"", format_duration(d))
}

fn read_poll(mut t: Table) -> Result<PollConfig, ConfigError> {
    let given_interval = t.duration("interval")?;
    let interval = given_interval.unwrap_or(defaults::POLL_INTERVAL);
    check_interval(&t, "interval", interval)?;
    let schedule = match t.nonempty_string("schedule")? {
        Some(s) => Some(Schedule::parse(&s).map_err(|m| t.err("schedule", m))?),
        None => None,
    };
    if schedule.is_some() && given_interval.is_some() {
        return Err(t.err(
            "interval",
            "is set together with poll.schedule, and only one can decide when jobs are polled; remove one",
        ));
    }
    let stop_after_terminal = t
        .boolean("stop_after_terminal")?
        .unwrap_or(defaults::STOP_AFTER_TERMINAL);
    t.finish()?;
    Ok(PollConfig {
        interval,
        schedule,
        stop_after_terminal,
    })
}

/// A poll interval between [`MIN_INTERVAL`] and [`MAX_INTERVAL`].
fn check_interval(t: &Table, key: &str, interval: Duration) -> Result<(), ConfigError> {
    if interval < MIN_INTERVAL {
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
pub(super) fn check_channel_timeout(t: &Table, timeout: Duration) -> Result<(), ConfigError> {
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
pub(crate) fn check_range(
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
        poll_failing: level("poll_failing", d.poll_failing)?,
        remediation_exhausted: level("remediation_exhausted", d.remediation_exhausted)?,
        remediation_failed: level("remediation_failed", d.remediation_failed)?,
        remediated: level("remediated", d.remediated)?,
        init_grace: t.duration("init_grace")?.unwrap_or(d.init_grace),
        api_failure_threshold: match t.integer("api_failure_threshold")? {
            None => d.api_failure_threshold,
            Some(0) => return Err(t.err("api_failure_threshold", "must be 1 or more")),
            Some(n) => n.min(u32::MAX as u64) as u32,
        },
        // One failure is a blip; the API's health needs a round of polls to see an outage, so
        // a single failure could alert for a job that is only part of one.
        poll_failing_after: match t.integer("poll_failing_after")? {
            None => d.poll_failing_after,
            Some(n) if n < 2 => {
                return Err(t.err(
                    "poll_failing_after",
                    "must be 2 or more (polls of one job failed in a row), e.g. 5",
                ));
            }
            Some(n) => n.min(u32::MAX as u64) as u32,
        },
        repeat_interval: t.duration("repeat_interval")?.unwrap_or(d.repeat_interval),
        send_resolved: t.boolean("send_resolved")?.unwrap_or(d.send_resolved),
    };
    if rules.repeat_interval < MIN_REPEAT_INTERVAL {
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

fn read_http(mut t: Table, base: Option<&Path>) -> Result<HttpConfig, ConfigError> {
    let public_url = match t.nonempty_string("public_url")? {
        None => None,
        Some(s) => {
            let u = parse_http_url(&s).map_err(|m| t.err("public_url", m))?;
            if u.query().is_some() || u.fragment().is_some() {
                return Err(t.err(
                    "public_url",
                    format!("{s:?} has a query or fragment; give the address pages live under, e.g. \"https://recwatch.example.com\""),
                ));
            }
            Some(u)
        }
    };
    let listen = match t.string("listen")? {
        None => Some(defaults::HTTP_LISTEN),
        Some(s) if s.trim().is_empty() => None,
        Some(s) => Some(s.parse().map_err(|_| {
            t.err("listen", format!("{s:?} is not an address; use IP:PORT like \"127.0.0.1:9187\", or \"\" to turn the endpoint off"))
        })?),
    };
    let read_token = t.secret("read_token", base)?;
    // The bearer token of the write endpoints; without one they answer 403.
    let token = t.secret("token", base)?;
    if token
        .as_ref()
        .is_some_and(|s| s.expose().chars().any(|c| c.is_control() || c == ' '))
    {
        return Err(t.err(
            "token",
            "has a space or control character, which an Authorization header cannot carry; use e.g. the output of `openssl rand -hex 32`",
        ));
    }
    t.finish()?;
    Ok(HttpConfig {
        listen,
        read_token,
        public_url,
        token,
    })
}

fn read_log(mut t: Table) -> Result<LogConfig, ConfigError> {
    let level = match t.string("level")? {
        None => defaults::LOG_LEVEL,
        Some(level) => LogFilter::parse(&level).map_err(|_| {
            t.err(
                "level",
                format!(
                    "{level:?} is not a level or filter; use e.g. \"info\" or \"recwatch=debug\""
                ),
            )
        })?,
    };
    t.finish()?;
    Ok(LogConfig { level })
}

/// The keys a `[[jobs]]` entry may have.
const JOB_KEYS: &[&str] = &[
    "name",
    "app_id",
    "job_id",
    "kind",
    "interval",
    "notify",
    "remediate",
    "account",
];

/// `count` entries from `tables`, in the file's order.
fn read_jobs(
    count: usize,
    tables: impl Iterator<Item = Result<Table, ConfigError>>,
    notify: &NotifyConfig,
    poll: &PollConfig,
    remediate: &mut BTreeMap<crate::domain::JobKey, bool>,
    accounts: &[super::AccountRef],
) -> Result<Vec<Arc<JobConfig>>, ConfigError> {
    let channels = notify.channel_names();
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    // Exactly one per table: a vector grown by doubling kept up to twice the room, for the
    // life of the configuration (issue 23).
    let mut jobs = Vec::with_capacity(count);
    for t in tables {
        let mut t = t?;
        let job = read_job(&mut t, &channels, poll, remediate, accounts)?;
        let (app_id, job_id) = (job.app_id(), job.job_id());
        if let Some(first) = seen.insert((app_id.to_owned(), job_id.to_owned()), t.path.clone()) {
            return Err(ConfigError::new(
                t.path.clone(),
                format!(
                    "app_id {app_id:?} job_id {job_id:?} is already watched by {first}; remove one"
                ),
            ));
        }
        jobs.push(Arc::new(job));
    }
    Ok(jobs)
}

/// One `[[jobs]]` entry, every key checked in the order its errors are told; `t.path` names
/// the job from its name on.
fn read_job(
    t: &mut Table,
    channels: &[&str],
    poll: &PollConfig,
    remediate: &mut BTreeMap<crate::domain::JobKey, bool>,
    accounts: &[super::AccountRef],
) -> Result<JobConfig, ConfigError> {
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
    t.known(JOB_KEYS)?;
    let app_id = t.required_string("app_id")?;
    check_id(t, "app_id", &app_id)?;
    let job_id = t.required_string("job_id")?;
    check_id(t, "job_id", &job_id)?;
    let kind = match t.string("kind")? {
        None => crate::domain::JobKind::default(),
        Some(k) => k.parse().map_err(|m: String| t.err("kind", m))?,
    };
    let interval = t.duration("interval")?;
    if let Some(i) = interval {
        check_interval(t, "interval", i)?;
        if poll.schedule.is_some() {
            return Err(t.err(
                "interval",
                "is set while poll.schedule polls every job on its ticks; remove one",
            ));
        }
    }
    let notify_names = t.string_list("notify")?;
    check_channels(t, channels, notify_names.as_deref())?;
    // `remediate = true|false` overrides `[remediate] enabled` for this job.
    if let Some(on) = t.boolean("remediate")? {
        remediate.insert(crate::domain::JobKey::new(&app_id, &job_id), on);
    }
    let account = super::accounts::read_account_ref(t, accounts)?;
    t.finish()?;
    Ok(JobConfig {
        key: crate::domain::JobKey::new(app_id, job_id),
        name,
        kind,
        interval,
        notify: notify_names,
        account,
    })
}

/// Every channel an entry's `notify` names exists.
pub(super) fn check_channels(
    t: &Table,
    channels: &[&str],
    names: Option<&[String]>,
) -> Result<(), ConfigError> {
    for n in names.into_iter().flatten() {
        if !channels.contains(&n.as_str()) {
            return Err(t.err(
                "notify",
                format!("no channel is named {n:?}; the channels are {channels:?}"),
            ));
        }
    }
    Ok(())
}

/// An id is checked as everywhere else ([`crate::domain::check_id`]), the error placed at its key.
pub(super) fn check_id(t: &Table, key: &str, id: &str) -> Result<(), ConfigError> {
    crate::domain::check_id(id).map_err(|m| t.err(key, m))
}

pub(super) fn parse_http_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{text:?} must be an http:// or https:// URL with a host"
        ));
    }
    Ok(url)
}
