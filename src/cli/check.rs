//! `recwatch check`: what the configuration means and what `run` would find (the storage
//! path, the HTTP port), with the exit code `run` would fail with. With several
//! `[[accounts]]`, each account with its endpoint, project, credential source, budget and
//! demand, and which accounts share one key's budget.

use super::{complain, emit};
use crate::config::{Config, JobGroup};
use crate::exit::StartError;
use std::collections::HashMap;
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

/// The run-time watch list's entries the file does not have too (the daemon polls them
/// beside the file's jobs): how many, and how many each account polls.
#[derive(Debug, Default)]
struct Runtime {
    total: usize,
    by_account: HashMap<String, usize>,
}

impl Runtime {
    fn of(c: &Config, list: &crate::runtime_list::RuntimeList) -> Runtime {
        let in_file: std::collections::HashSet<&crate::domain::JobKey> =
            c.jobs.iter().map(|j| &j.key).collect();
        let mut r = Runtime::default();
        for (key, listed) in &list.jobs {
            if in_file.contains(key) {
                continue;
            }
            r.total += 1;
            let account = c.account_of(&listed.job).name.to_string();
            *r.by_account.entry(account).or_default() += 1;
        }
        r
    }

    fn of_account(&self, name: &str) -> usize {
        self.by_account.get(name).copied().unwrap_or(0)
    }
}

/// The run-time watch list's size as the database holds it (the daemon polls it beside the
/// file's jobs), or why it could not be read. A database without the current schema has no
/// list to read, and is left as it is (`check` changes nothing).
async fn runtime_jobs(c: &Config) -> Result<Runtime, String> {
    match c.storage.database() {
        crate::config::Database::Sqlite(path) if !path.exists() => return Ok(Runtime::default()),
        crate::config::Database::Sqlite(_) => {}
        crate::config::Database::Postgres(url) => match crate::store::postgres::probe(url).await {
            Ok(p) if p.missing == 0 => {}
            // Not made yet (or older): nothing to count; the storage line says which.
            Ok(_) => return Ok(Runtime::default()),
            Err(e) => return Err(e.to_string()),
        },
    }
    let read = async {
        let store = crate::store::Store::open_config(&c.storage).await?;
        let list = store.watchlist().all().await;
        store.close().await;
        let runtime = crate::runtime_list::RuntimeList::of(list?);
        anyhow::Ok(Runtime::of(c, &runtime))
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), read).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err("the database did not answer within 5 s".into()),
    }
}

/// The API (or each account), the rate budget, the poll interval and whether the watch list
/// fits the budget: every watched job, configured first (see [`crate::config::share`]).
fn print_api(c: &Config, runtime: &Result<Runtime, String>) -> std::io::Result<()> {
    let failed = runtime.as_ref().err().map(String::as_str);
    let empty = Runtime::default();
    let runtime = runtime.as_ref().unwrap_or(&empty);
    if !c.several_accounts() {
        print_account("api", &c.api)?;
        print_poll(c)?;
        return print_demand(c, runtime.total, failed, "api.rate_limit");
    }
    let names = c.account_names();
    out!(
        "  accounts   {}: {} (a job is polled by its own account, else its app's, else the first)",
        names.len(),
        names.iter().map(|n| &**n).collect::<Vec<_>>().join(", ")
    )?;
    print_poll(c)?;
    let mut demand: HashMap<&str, f64> = HashMap::new();
    for (i, a) in c.all_accounts().enumerate() {
        let Some(narrowed) = c.narrowed(&a.name) else {
            continue;
        };
        print_account(&format!("account    {}:", a.name), &narrowed.api)?;
        let n = runtime.of_account(&a.name);
        demand.insert(&a.name, narrowed.budget(n).demand);
        let key = format!("accounts[{i}] ({:?}).rate_limit", &*a.name);
        print_demand(&narrowed, n, failed.filter(|_| i == 0), &key)?;
    }
    for g in c.budget_groups() {
        let Some(first) = g.first().and_then(|n| c.narrowed(n)) else {
            continue;
        };
        let shared = SharedBudget {
            names: g.iter().map(|n| &**n).collect(),
            access_key: first.api.auth.budget_identity().unwrap_or(""),
            rate_limit: first.api.rate_limit,
            demand: g
                .iter()
                .map(|n| demand.get(&**n).copied().unwrap_or(0.0))
                .sum(),
        };
        if let Some(line) = shared.line() {
            out!("  shared     {line}")?;
        }
    }
    Ok(())
}

/// An account's endpoint, credential source (never a secret), project and budget; `label` is
/// what the first line starts with (`api`, or `account    NAME:`).
fn print_account(label: &str, api: &crate::config::ApiConfig) -> std::io::Result<()> {
    out!("  {label:<10} {} ({})", api.endpoint, api.auth.describe())?;
    if let Some(p) = &api.project_id {
        out!("             project {p}")?;
    }
    out!(
        "  budget     {} requests/s, {} in flight, timeout {}",
        api.rate_limit,
        api.max_in_flight,
        crate::config::format_duration(api.timeout)
    )
}

fn print_poll(c: &Config) -> std::io::Result<()> {
    match &c.poll.schedule {
        Some(s) => out!("  poll       on cron schedule {s:?}"),
        None => out!(
            "  poll       every {}",
            crate::config::format_duration(c.poll.interval)
        ),
    }
}

/// The demand of `c`'s jobs (an account's, narrowed, or the one `[api]`'s) and `runtime`
/// run-time jobs on `c.api`'s budget, each group's share and whether every job is polled at
/// its interval; `rate_limit_key` names the limit to raise; `failed`, why the run-time list
/// was not read.
fn print_demand(
    c: &Config,
    runtime: usize,
    failed: Option<&str>,
    rate_limit_key: &str,
) -> std::io::Result<()> {
    let b = c.budget(runtime);
    out!(
        "  demand     {:.2} requests/s for {} job{} ({:.0}% of the budget)",
        b.demand,
        b.jobs,
        if b.jobs == 1 { "" } else { "s" },
        100.0 * b.demand / b.rate_limit as f64
    )?;
    if let Some(e) = failed {
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
            "  WARNING    the watch list needs {:.1} requests/s but {rate_limit_key} is {}: configured jobs come first, polled {}; run-time jobs share what is left, polled {}",
            b.demand,
            b.rate_limit,
            how(JobGroup::Configured),
            how(JobGroup::Runtime),
        )?;
    }
    Ok(())
}

/// Accounts that share one request budget (one static access key, see
/// [`Config::budget_groups`]), as `check` tells it.
struct SharedBudget<'a> {
    names: Vec<&'a str>,
    access_key: &'a str,
    /// The key's limit: the smallest of its entries'.
    rate_limit: u32,
    /// What the accounts' jobs ask for together, requests/s.
    demand: f64,
}

impl SharedBudget<'_> {
    /// The line saying who shares the budget, or none for an account alone. Pure.
    fn line(&self) -> Option<String> {
        let (last, first) = self.names.split_last()?;
        if first.is_empty() {
            return None;
        }
        // The access key's first characters, as `Auth::describe` shows it: an identifier,
        // never the whole of it.
        let head: String = self.access_key.chars().take(4).collect();
        let over = match self.demand > f64::from(self.rate_limit) {
            true => ": more than it, so every one of them is polled less often",
            false => "",
        };
        Some(format!(
            "accounts {} and {last} share access key {head}…'s budget of {} requests/s (together {:.2} requests/s, {:.0}% of it{over})",
            first.join(", "),
            self.rate_limit,
            self.demand,
            100.0 * self.demand / f64::from(self.rate_limit.max(1)),
        ))
    }
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
fn print_jobs(c: &Config, runtime: &Result<Runtime, String>) -> std::io::Result<()> {
    let empty = Runtime::default();
    let runtime = runtime.as_ref().unwrap_or(&empty);
    let b = c.budget(runtime.total);
    // With several accounts, a job's interval stretches with its own account's budget.
    let several = c.several_accounts();
    let by_account: HashMap<&str, crate::config::BudgetReport> = match several {
        true => c
            .all_accounts()
            .filter_map(|a| {
                let n = c.narrowed(&a.name)?;
                Some((&*a.name, n.budget(runtime.of_account(&a.name))))
            })
            .collect(),
        false => HashMap::new(),
    };
    out!("  jobs       {}", c.jobs.len())?;
    for (i, j) in c.jobs.iter().enumerate() {
        let account = &*c.account_of(j).name;
        let b = by_account.get(account).unwrap_or(&b);
        let interval = match &c.poll.schedule {
            Some(_) => "cron".to_string(),
            None => crate::config::format_duration(round_secs(
                b.effective(JobGroup::Configured, c.job_interval(j)),
            ))
            .to_string(),
        };
        out!(
            "    [{i}] {:<24} app {} job {} every {interval}{}",
            j.label(),
            j.app_id(),
            j.job_id(),
            match several {
                true => format!(" (account {account})"),
                false => String::new(),
            }
        )?;
    }
    if c.jobs.is_empty() {
        out!("    (none: add [[jobs]] entries with app_id and job_id)")?;
    }
    let runtime = runtime.total;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_sharing_a_key_are_said_plainly() {
        let shared = |names: &[&'static str], demand: f64| SharedBudget {
            names: names.to_vec(),
            access_key: "HPUAEXAMPLEAK0000001",
            rate_limit: 10,
            demand,
        };
        let cases = [
            ("an account alone", shared(&["a"], 1.0), None),
            (
                "two",
                shared(&["a", "b"], 2.5),
                Some(
                    "accounts a and b share access key HPUA…'s budget of 10 requests/s (together 2.50 requests/s, 25% of it)",
                ),
            ),
            (
                "three, over the budget",
                shared(&["a", "b", "c"], 12.0),
                Some(
                    "accounts a, b and c share access key HPUA…'s budget of 10 requests/s (together 12.00 requests/s, 120% of it: more than it, so every one of them is polled less often)",
                ),
            ),
        ];
        for (name, s, want) in cases {
            let line = s.line();
            assert_eq!(line.as_deref(), want, "{name}");
            assert!(
                !line.unwrap_or_default().contains("EXAMPLEAK"),
                "{name}: the key's head only"
            );
        }
    }
}
