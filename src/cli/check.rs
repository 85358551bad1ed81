//! `recwatch check`: what the configuration means and what `run` would find (the storage
//! path, the HTTP port), with the exit code `run` would fail with.

use super::{complain, emit};
use crate::config::{Config, JobGroup};
use crate::exit::StartError;
use std::process::ExitCode;

/// Prints what the configuration means and what `run` would find: exit 0, or the exit code
/// `run` would fail with (73 storage, 69 a taken port, 78 a port it may not use); with
/// `online`, also whether the API takes the credentials (see [`super::online`]).
pub(super) async fn check(c: &Config, online: bool) -> anyhow::Result<ExitCode> {
    let source = c
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(built in)".into());
    out!("configuration OK: {source}")?;
    let runtime = runtime_jobs(c).await;
    print_api(c, &runtime)?;
    // What `run` would fail on: the first problem decides the exit code.
    let mut problems: Vec<StartError> = Vec::new();
    // Not a reason `run` would fail (it starts, and alerts api_unhealthy), so told apart.
    let api_problem = match online {
        true => super::online::check_online(c).await?,
        false => None,
    };
    match c.storage.database() {
        crate::config::Database::Sqlite(_) => {
            problems.extend(check_storage(c)?);
            // SQLite: the owner lock admits one `run` per database file, which always leads.
            out!(
                "  role       active: with SQLite one `recwatch run` owns the database and holds the leadership lease"
            )?;
        }
        crate::config::Database::Postgres(url) => {
            problems.extend(check_postgres(c, url).await?);
        }
    }
    print_notify(c)?;
    print_rules(c)?;
    crate::hold::cli::print_check(c)?;
    problems.extend(check_http(c)?);
    problems.extend(check_callback(c).await?);
    crate::remediation::cli::print_check(c)?;
    print_heartbeat(c)?;
    print_jobs(c, &runtime)?;
    for w in c.warnings() {
        out!("  WARNING    {w}")?;
    }
    for p in &problems {
        complain(&format!("`run` would fail: {p}"));
    }
    if let Some(p) = &api_problem {
        complain(&format!("the API check failed: {p}"));
    }
    match problems.first().or(api_problem.as_ref()) {
        None => Ok(ExitCode::SUCCESS),
        Some(first) => Ok(ExitCode::from(first.exit)),
    }
}

/// The run-time watch list's size as the database holds it (the daemon polls it beside the
/// file's jobs), or why it could not be read. A database without the current schema has no
/// list to read, and is left as it is (`check` changes nothing).
async fn runtime_jobs(c: &Config) -> Result<usize, String> {
    match c.storage.database() {
        crate::config::Database::Sqlite(path) if !path.exists() => return Ok(0),
        crate::config::Database::Sqlite(_) => {}
        crate::config::Database::Postgres(url) => match crate::store::postgres::probe(url).await {
            Ok(p) if p.missing == 0 => {}
            // Not made yet (or older): nothing to count; the storage line says which.
            Ok(_) => return Ok(0),
            Err(e) => return Err(e.to_string()),
        },
    }
    let read = async {
        let store = crate::store::Store::open_config(&c.storage).await?;
        let list = store.watchlist().all().await;
        store.close().await;
        let runtime = crate::runtime_list::RuntimeList::of(list?);
        anyhow::Ok(crate::runtime_list::runtime_count(c, &runtime))
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), read).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err("the database did not answer within 5 s".into()),
    }
}

/// The API, the rate budget, the poll interval and whether the watch list fits the budget:
/// every watched job, configured first (see [`crate::config::share`]).
fn print_api(c: &Config, runtime: &Result<usize, String>) -> std::io::Result<()> {
    out!(
        "  api        {} ({})",
        c.api.endpoint,
        c.api.auth.describe()
    )?;
    if let Some(p) = &c.api.project_id {
        out!("             project {p}")?;
    }
    out!(
        "  budget     {} requests/s, {} in flight, timeout {}",
        c.api.rate_limit,
        c.api.max_in_flight,
        crate::config::format_duration(c.api.timeout)
    )?;
    let b = c.budget(*runtime.as_ref().unwrap_or(&0));
    match &c.poll.schedule {
        Some(s) => out!("  poll       on cron schedule {s:?}")?,
        None => out!(
            "  poll       every {}",
            crate::config::format_duration(c.poll.interval)
        )?,
    }
    out!(
        "  demand     {:.2} requests/s for {} job{} ({:.0}% of the budget)",
        b.demand,
        b.jobs,
        if b.jobs == 1 { "" } else { "s" },
        100.0 * b.demand / b.rate_limit as f64
    )?;
    if let Err(e) = runtime {
        out!("  runtime    the run-time watch list could not be read ({e}): counted as empty")?;
    }
    for g in JobGroup::ALL {
        out!("  group      {}", b.describe(g))?;
    }
    if b.fits() {
        out!("  effective  every job is polled at its interval")?;
    } else {
        let how = |g: JobGroup| {
            let every = crate::config::format_duration(round_secs(b.effective(g, c.poll.interval)));
            match b.group(g).stretch {
                s if s <= 1.0 => format!("at their interval (every {every})"),
                s => format!(
                    "{s:.1}x less often than configured (every {every} instead of {})",
                    crate::config::format_duration(c.poll.interval)
                ),
            }
        };
        out!(
            "  WARNING    the watch list needs {:.1} requests/s but api.rate_limit is {}: configured jobs come first, polled {}; run-time jobs share what is left, polled {}",
            b.demand,
            b.rate_limit,
            how(JobGroup::Configured),
            how(JobGroup::Runtime),
        )?;
    }
    Ok(())
}

/// The storage path as `run` would find it; the problem it would fail on, if any.
fn check_storage(c: &Config) -> std::io::Result<Option<StartError>> {
    let retention = crate::config::format_duration(c.storage.retention);
    let storage = c.storage.path.display();
    match crate::dbfile::probe_storage(&c.storage.path) {
        Ok(crate::dbfile::StorageProbe::Exists) => {
            out!("  storage    {storage} (retention {retention}; exists, writable)")?
        }
        Ok(crate::dbfile::StorageProbe::WillCreate { dir }) => out!(
            "  storage    {storage} (retention {retention}; will be created under {}, directories 0700, file 0600)",
            dir.display()
        )?,
        Err(e) => {
            out!("  ERROR      {e}")?;
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// The PostgreSQL server as `run` would find it: reachable, its version, the schema.
async fn check_postgres(
    c: &Config,
    url: &crate::secret::Secret,
) -> std::io::Result<Option<StartError>> {
    let retention = crate::config::format_duration(c.storage.retention);
    match crate::store::postgres::probe(url).await {
        Ok(p) => {
            let schema = match p.missing {
                0 => "schema up to date".to_string(),
                n if n == p.migrations => "empty: `run` creates the schema".to_string(),
                n => format!("{n} of {} migrations to apply at `run`", p.migrations),
            };
            out!(
                "  storage    PostgreSQL {} (retention {retention}; server version {}; {schema})",
                p.location,
                p.version
            )?;
            // Which role `run` would take now: the lease says who leads (never changed here).
            let role = match p.missing {
                0 => match crate::store::peek_postgres(url).await {
                    Ok(lease) => crate::leader::would_be(lease.as_ref()),
                    Err(e) => format!("unknown: the leadership lease cannot be read ({e})"),
                },
                _ => crate::leader::would_be(None),
            };
            out!("  role       {role}")?;
            Ok(None)
        }
        Err(e) => {
            out!("  ERROR      {e}")?;
            Ok(Some(e))
        }
    }
}

/// The notification channels, secrets masked.
fn print_notify(c: &Config) -> std::io::Result<()> {
    let channels = c.notify.channel_names();
    if channels.is_empty() {
        out!(
            "  notify     no channels: alerts are recorded but not sent (add [[notify.webhook]], [[notify.email]] or a chat channel such as [[notify.slack]])"
        )?;
    } else {
        for w in &c.notify.webhooks {
            out!(
                "  notify     webhook {:?} -> {}{}",
                w.name,
                crate::secret::mask_url(&w.url),
                if w.secret.is_some() {
                    " (signed)"
                } else {
                    " (unsigned)"
                }
            )?;
        }
        for ch in &c.notify.chats {
            out!(
                "  notify     {} {:?} -> {}{}",
                ch.kind.as_str(),
                ch.name,
                ch.url.masked(),
                if ch.secret.is_some() { " (signed)" } else { "" }
            )?;
        }
        for e in &c.notify.emails {
            out!(
                "  notify     email {:?} via {}:{} -> {}",
                e.name,
                e.smtp_host,
                e.smtp_port,
                e.to.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
    }
    Ok(())
}

/// Each rule's severity, or off.
fn print_rules(c: &Config) -> std::io::Result<()> {
    let lvl = |s: Option<crate::domain::Severity>| s.map(|s| s.as_str()).unwrap_or("off");
    let r = &c.rules;
    out!(
        "  rules      stopped_unexpectedly={} idle_timeout={} stopped_by_tenant={} stuck_init={} job_not_found={} api_unhealthy={} poll_failing={} (after {} failed polls in a row)",
        lvl(r.stopped_unexpectedly),
        lvl(r.idle_timeout),
        lvl(r.stopped_by_tenant),
        lvl(r.stuck_init),
        lvl(r.job_not_found),
        lvl(r.api_unhealthy),
        lvl(r.poll_failing),
        r.poll_failing_after
    )?;
    Ok(())
}

/// `http.listen` as `run` would find it; the problem it would fail on, if any.
fn check_http(c: &Config) -> std::io::Result<Option<StartError>> {
    match c.http.listen.map(|a| (a, crate::http::probe_listen(a))) {
        Some((a, Ok(crate::http::ListenProbe::Free))) => {
            out!("  http       http://{a} (/healthz /readyz /metrics /api/v1/jobs)")?
        }
        Some((a, Ok(crate::http::ListenProbe::HeldByRecwatch))) => out!(
            "  http       http://{a} (in use by a running recwatch, going by its /healthz: fine if that is this configuration's daemon, otherwise `run` would fail)"
        )?,
        Some((_, Err(e))) => {
            out!("  ERROR      {e}")?;
            return Ok(Some(e));
        }
        None => out!("  http       off")?,
    }
    Ok(None)
}

/// `[callback]` and `[[apps]]` as `run` would serve them, keys never shown; the problem `run`
/// would fail on (the listener cannot be bound: 69 taken, 78 never usable), if any.
async fn check_callback(c: &Config) -> std::io::Result<Option<StartError>> {
    let mut problem = None;
    match c.callback.listen {
        None => out!("  callback   off (no record callbacks; polling alone)")?,
        Some(addr) => match crate::callback::bind(addr).await {
            Ok(listener) => {
                drop(listener);
                out!(
                    "  callback   http://{addr}{} (record callbacks from {} app(s))",
                    c.callback.path,
                    c.apps.len()
                )?
            }
            // Beside this configuration's running daemon the port is held by it: the HTTP
            // endpoint's /healthz tells (the receiver has no health path of its own).
            Err(_)
                if c.http.listen.is_some_and(|a| {
                    matches!(
                        crate::http::probe_listen(a),
                        Ok(crate::http::ListenProbe::HeldByRecwatch)
                    )
                }) =>
            {
                out!(
                    "  callback   http://{addr}{} (in use, most likely by the running recwatch that holds http.listen; otherwise `run` would fail)",
                    c.callback.path
                )?
            }
            Err(e) => {
                out!("  ERROR      {e}")?;
                problem = Some(e);
            }
        },
    }
    for a in &c.apps {
        let mut parts = vec![format!("key {}", crate::secret::MASK)];
        parts.push(match a.discover {
            true => format!("discover on (at most {} jobs)", a.max_discovered),
            false => "discover off".into(),
        });
        if let Some(f) = &a.forward_to {
            parts.push(format!("forward_to {}", crate::secret::mask_url(f)));
        }
        if let Some(n) = &a.notify {
            parts.push(format!("notify [{}]", n.join(", ")));
        }
        out!(
            "  app        {}{} {}",
            a.app_id,
            a.name
                .as_deref()
                .map(|n| format!(" ({n:?})"))
                .unwrap_or_default(),
            parts.join(", ")
        )?;
    }
    Ok(problem)
}

/// `[heartbeat]`: off, or where (scheme and host only: the URL's path is the check's key) and
/// how often.
fn print_heartbeat(c: &Config) -> std::io::Result<()> {
    let h = &c.heartbeat;
    match &h.url {
        None => out!("  heartbeat  off"),
        Some(u) => out!(
            "  heartbeat  {} {}://{}/{} every {} (timeout {})",
            match h.method {
                crate::config::PingMethod::Get => "GET",
                crate::config::PingMethod::Post => "POST",
            },
            u.url().scheme(),
            u.url().host_str().unwrap_or(""),
            crate::secret::MASK,
            crate::config::format_duration(h.interval),
            crate::config::format_duration(h.ping_timeout())
        ),
    }
}

/// Each watched job with the interval it is polled at, within the budget.
fn print_jobs(c: &Config, runtime: &Result<usize, String>) -> std::io::Result<()> {
    let runtime = *runtime.as_ref().unwrap_or(&0);
    let b = c.budget(runtime);
    out!("  jobs       {}", c.jobs.len())?;
    for (i, j) in c.jobs.iter().enumerate() {
        let interval = match &c.poll.schedule {
            Some(_) => "cron".to_string(),
            None => crate::config::format_duration(round_secs(
                b.effective(JobGroup::Configured, c.job_interval(j)),
            ))
            .to_string(),
        };
        out!(
            "    [{i}] {:<24} app {} job {} every {interval}",
            j.label(),
            j.app_id(),
            j.job_id()
        )?;
    }
    if c.jobs.is_empty() {
        out!("    (none: add [[jobs]] entries with app_id and job_id)")?;
    }
    if runtime > 0 {
        let every = match &c.poll.schedule {
            Some(_) => "cron".to_string(),
            None => crate::config::format_duration(round_secs(
                b.effective(JobGroup::Runtime, c.poll.interval),
            ))
            .to_string(),
        };
        out!(
            "    and {runtime} run-time job{} (recwatch status lists them) every {every}",
            if runtime == 1 { "" } else { "s" }
        )?;
    }
    Ok(())
}

fn round_secs(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_secs(d.as_secs_f64().round() as u64)
}
