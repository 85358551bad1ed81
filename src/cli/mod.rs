//! The command line: parse, dispatch, print. Every command returns an exit code: config
//! errors are 78 (EX_CONFIG) so systemd's `RestartPreventExitStatus=78` stops a restart loop,
//! and start-up failures carry their sysexits code ([`crate::startup`]).
//!
//! Output goes through [`emit`], never `println!`: a reader that goes away
//! (`recwatch check | head -1`) ends the command quietly instead of panicking.

use crate::config::{self, Config, ConfigError, EXIT_CONFIG};
use crate::outbox::Outbox;
use crate::store::Store;
use clap::{Parser, Subcommand};
use recwatch_rtc::client::RtcClient;
use serde::Serialize;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Writes one formatted line to stdout; an error (a closed pipe) is for the caller's `?`.
macro_rules! out {
    ($($arg:tt)*) => { emit(&format!("{}\n", format_args!($($arg)*))) };
}

/// Writes `text` to stdout.
pub fn emit(text: &str) -> std::io::Result<()> {
    std::io::stdout().lock().write_all(text.as_bytes())
}

/// A message on stderr that cannot panic, even when stderr is closed.
fn complain(message: &str) {
    let _ = writeln!(std::io::stderr(), "recwatch: {message}");
}

/// True when the error is stdout's reader having gone away.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[derive(Parser, Debug)]
#[command(
    name = "recwatch",
    version,
    about = "Watches Huawei Cloud RTC individual stream recording jobs, records every state change in SQLite, and alerts when a recording stops unexpectedly.",
    after_help = "Configuration: --config PATH, else $RECWATCH_CONFIG, else /etc/recwatch/config.toml.\nAny key can be overridden as RECWATCH_<SECTION>__<KEY>, e.g. RECWATCH_API__AUTH__SECRET_KEY.\nTry it with no setup at all: recwatch demo"
)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = crate::telemetry::LogFormat::Text)]
    pub log_format: crate::telemetry::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: poll every watched job, record changes, send alerts.
    Run,
    /// Validate the configuration and print what it means; exit 0, or 78 with the error.
    Check,
    /// Poll every job once, record transitions, print a table, deliver the alerts this raised
    /// (waiting up to 30 s), and exit.
    ///
    /// Alerts it cannot deliver within the wait stay in the outbox: `recwatch alerts --pending`
    /// lists them and `recwatch run` sends them when it next starts. Exit 1 if a poll failed or
    /// an alert is still undelivered. Refused (exit 75) while `recwatch run` owns the
    /// database: the daemon is already polling and delivering.
    PollOnce,
    /// Each watched job with its last state, stop reason, last poll and last change.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Recorded transitions, newest first.
    History {
        /// Only this job id.
        #[arg(long, value_name = "JOB_ID")]
        job: Option<String>,
        /// Only transitions observed within this long ago, e.g. 1h, 7d.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
        since: Option<std::time::Duration>,
        /// At most this many rows.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Alerts with their delivery state per channel, newest first.
    Alerts {
        /// Only alerts with a delivery still pending.
        #[arg(long)]
        pending: bool,
        /// At most this many alerts.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send a test notification through each channel and report each result.
    TestAlert {
        /// Only this channel.
        #[arg(long, value_name = "NAME")]
        channel: Option<String>,
    },
    /// Run a fake RTC API (for the demo, tests and benchmarks).
    #[cfg(feature = "demo")]
    Simulate(recwatch_sim::SimulateArgs),
    /// Start the simulator and the daemon against it and show changes and alerts live.
    #[cfg(feature = "demo")]
    Demo(crate::demo::DemoArgs),
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    config::parse_duration(s)
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            complain(&format!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(dispatch(cli))
}

fn load(cli: &Cli) -> Result<Config, ExitCode> {
    let path = config::resolve_path(cli.config.as_deref());
    config::load(&path).map_err(|e| config_error(&e))
}

fn config_error(e: &ConfigError) -> ExitCode {
    complain(&format!("configuration error: {e}"));
    ExitCode::from(EXIT_CONFIG)
}

/// The error chain on stderr, and the exit code it means (1 unless a start-up or config
/// error in the chain says otherwise).
fn fail(e: anyhow::Error) -> ExitCode {
    if broken_pipe(&e) {
        return ExitCode::SUCCESS;
    }
    complain(&format!("error: {e:#}"));
    ExitCode::from(crate::startup::exit_code(&e).unwrap_or(1))
}

async fn dispatch(cli: Cli) -> ExitCode {
    match &cli.command {
        #[cfg(feature = "demo")]
        Command::Simulate(args) => {
            crate::telemetry::init("info", cli.log_format);
            return recwatch_sim::run(args.clone())
                .await
                .map(|_| ExitCode::SUCCESS)
                .unwrap_or_else(fail);
        }
        #[cfg(feature = "demo")]
        Command::Demo(args) => {
            return crate::demo::run(args.clone())
                .await
                .map(|_| ExitCode::SUCCESS)
                .unwrap_or_else(fail);
        }
        _ => {}
    }
    let config = match load(&cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::telemetry::init(&config.log.level, cli.log_format);
    let result = match cli.command {
        Command::Run => run(config).await,
        Command::Check => return check(&config).unwrap_or_else(fail),
        Command::PollOnce => poll_once(&config).await,
        Command::Status { json } => status(&config, json).await,
        Command::History {
            job,
            since,
            limit,
            json,
        } => history(&config, job, since, limit, json).await,
        Command::Alerts {
            pending,
            limit,
            json,
        } => alerts(&config, pending, limit, json).await,
        Command::TestAlert { channel } => {
            return test_alert(&config, channel.as_deref())
                .await
                .unwrap_or_else(fail);
        }
        #[cfg(feature = "demo")]
        Command::Simulate(_) | Command::Demo(_) => unreachable!("handled above"),
    };
    result.map(|_| ExitCode::SUCCESS).unwrap_or_else(fail)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = crate::daemon::shutdown_on_signals()?;
    crate::daemon::run(config, shutdown, |_| {}).await
}

/// Prints what the configuration means and what `run` would find: exit 0, or the exit code
/// `run` would fail with (73 storage, 69 a taken port, 78 a port it may not use).
fn check(c: &Config) -> anyhow::Result<ExitCode> {
    let source = c
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(built in)".into());
    out!("configuration OK: {source}")?;
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
    let b = c.budget();
    match &c.poll.schedule {
        Some(s) => out!("  poll       on cron schedule {s:?}")?,
        None => out!(
            "  poll       every {}",
            crate::config::format_duration(c.poll.interval)
        )?,
    }
    out!(
        "  demand     {:.2} requests/s for {} jobs ({:.0}% of the budget)",
        b.demand,
        b.jobs,
        100.0 * b.demand / b.rate_limit as f64
    )?;
    if b.fits() {
        out!("  effective  every job is polled at its interval")?;
    } else {
        out!(
            "  WARNING    the watch list needs {:.1} requests/s but api.rate_limit is {}: every job is polled {:.1}x less often than configured (every {} instead of {})",
            b.demand,
            b.rate_limit,
            b.stretch,
            crate::config::format_duration(round_secs(b.effective(c.poll.interval))),
            crate::config::format_duration(c.poll.interval)
        )?;
    }
    // What `run` would fail on: the first problem decides the exit code.
    let mut problems: Vec<crate::startup::StartError> = Vec::new();
    let retention = crate::config::format_duration(c.storage.retention);
    let storage = c.storage.path.display();
    match crate::startup::probe_storage(&c.storage.path) {
        Ok(crate::startup::StorageProbe::Exists) => {
            out!("  storage    {storage} (retention {retention}; exists, writable)")?
        }
        Ok(crate::startup::StorageProbe::WillCreate { dir }) => out!(
            "  storage    {storage} (retention {retention}; will be created under {}, directories 0700, file 0600)",
            dir.display()
        )?,
        Err(e) => {
            out!("  ERROR      {e}")?;
            problems.push(e);
        }
    }
    let channels = c.notify.channel_names();
    if channels.is_empty() {
        out!(
            "  notify     no channels: alerts are recorded but not sent (add [[notify.webhook]] or [[notify.email]])"
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
        for e in &c.notify.emails {
            out!(
                "  notify     email {:?} via {}:{} -> {}",
                e.name,
                e.smtp_host,
                e.smtp_port,
                e.to.join(", ")
            )?;
        }
    }
    let lvl = |s: Option<crate::config::Severity>| s.map(|s| s.as_str()).unwrap_or("off");
    let r = &c.rules;
    out!(
        "  rules      stopped_unexpectedly={} idle_timeout={} stopped_by_tenant={} stuck_init={} job_not_found={} api_unhealthy={}",
        lvl(r.stopped_unexpectedly),
        lvl(r.idle_timeout),
        lvl(r.stopped_by_tenant),
        lvl(r.stuck_init),
        lvl(r.job_not_found),
        lvl(r.api_unhealthy)
    )?;
    match c.http.listen.map(|a| (a, crate::startup::probe_listen(a))) {
        Some((a, Ok(crate::startup::ListenProbe::Free))) => {
            out!("  http       http://{a} (/healthz /readyz /metrics /api/v1/jobs)")?
        }
        Some((a, Ok(crate::startup::ListenProbe::HeldByRecwatch))) => out!(
            "  http       http://{a} (in use by a running recwatch, going by its /healthz: fine if that is this configuration's daemon, otherwise `run` would fail)"
        )?,
        Some((_, Err(e))) => {
            out!("  ERROR      {e}")?;
            problems.push(e);
        }
        None => out!("  http       off")?,
    }
    out!("  jobs       {}", c.jobs.len())?;
    for (i, j) in c.jobs.iter().enumerate() {
        let interval = match &c.poll.schedule {
            Some(_) => "cron".to_string(),
            None => crate::config::format_duration(round_secs(b.effective(c.job_interval(j))))
                .to_string(),
        };
        out!(
            "    [{i}] {:<24} app {} job {} every {interval}",
            j.label(),
            j.app_id,
            j.job_id
        )?;
    }
    if c.jobs.is_empty() {
        out!("    (none: add [[jobs]] entries with app_id and job_id)")?;
    }
    for w in c.warnings() {
        out!("  WARNING    {w}")?;
    }
    match problems.first() {
        None => Ok(ExitCode::SUCCESS),
        Some(first) => {
            for p in &problems {
                complain(&format!("`run` would fail: {p}"));
            }
            Ok(ExitCode::from(first.exit))
        }
    }
}

fn round_secs(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_secs(d.as_secs_f64().round() as u64)
}

async fn poll_once(config: &Config) -> anyhow::Result<()> {
    // Like `run`, it polls with its own rate budget and writes transitions and alerts: beside
    // a running daemon it would poll every job a second time, outside the daemon's budget.
    let owner = crate::lock::OwnerLock::acquire(&config.storage.path, "poll-once").await?;
    let store = Store::open_owned(&config.storage.path, &owner).await?;
    let client = RtcClient::new(&config.api.client_config())?;
    let outbox = Outbox::new().keeping_ids();
    outbox.restore(&store).await?;
    let results = crate::poll::poll_once(config, &client, &store, &outbox).await;
    let mut rows = vec![vec![
        "NAME".into(),
        "APP_ID".into(),
        "JOB_ID".into(),
        "STATE".into(),
        "STOP_REASON".into(),
        "RESULT".into(),
    ]];
    let mut failed = 0;
    for (job, result, changed) in results {
        let (state, reason, what) = match result {
            Ok(Some(p)) => (
                p.state,
                p.stop_reason.unwrap_or_else(|| "-".into()),
                if changed {
                    "changed".into()
                } else {
                    "unchanged".into()
                },
            ),
            Ok(None) => ("-".into(), "-".into(), "answer had no state".into()),
            Err(e) => {
                failed += 1;
                ("-".into(), "-".into(), e.to_string())
            }
        };
        rows.push(vec![
            job.name.clone().unwrap_or_else(|| "-".into()),
            job.app_id,
            job.job_id,
            state,
            reason,
            what,
        ]);
    }
    print_table(&rows)?;
    // Delivered now or said to be pending: never silently left for a later `run`.
    let raised = outbox.made();
    let undelivered =
        crate::deliver::deliver_now(&store, config, &raised, crate::deliver::POLL_ONCE_WAIT).await;
    store.close().await;
    let alerts = match raised.len() {
        1 => "1 alert".to_string(),
        n => format!("{n} alerts"),
    };
    match undelivered {
        _ if raised.is_empty() => {}
        Ok(0) => out!("{alerts} raised and delivered")?,
        Ok(n) => complain(&format!(
            "{alerts} raised; {n} of their deliveries still pending after {}: `recwatch alerts --pending` shows why; `recwatch run` sends them when it next starts",
            humantime::format_duration(crate::deliver::POLL_ONCE_WAIT)
        )),
        Err(ref e) => complain(&format!("cannot deliver the alerts raised: {e:#}")),
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} polls failed", rows.len() - 1);
    }
    if !raised.is_empty() && !matches!(undelivered, Ok(0)) {
        anyhow::bail!("not every alert raised was delivered");
    }
    Ok(())
}

/// A watched job with what the database knows of it: a row of `status --json` and of
/// `/api/v1/jobs`.
#[derive(Serialize)]
pub struct StatusRow {
    app_id: String,
    job_id: String,
    name: Option<String>,
    state: Option<String>,
    stop_reason: Option<String>,
    description: Option<String>,
    last_polled_at: Option<String>,
    last_changed_at: Option<String>,
    last_error: Option<String>,
    polled: bool,
}

impl StatusRow {
    /// `row` is the job's database row, None if it was never polled.
    pub fn new(j: &crate::config::JobConfig, r: Option<&crate::store::JobRow>) -> StatusRow {
        StatusRow {
            app_id: j.app_id.clone(),
            job_id: j.job_id.clone(),
            name: j.name.clone(),
            state: r.and_then(|r| r.state.clone()),
            stop_reason: r.and_then(|r| r.stop_reason.clone()),
            description: r.and_then(|r| r.description.clone()),
            last_polled_at: r.and_then(|r| r.last_polled_at.clone()),
            last_changed_at: r.and_then(|r| r.last_changed_at.clone()),
            last_error: r.and_then(|r| r.last_error.clone()),
            polled: r.is_some_and(|r| r.last_polled_at.is_some()),
        }
    }
}

/// Each watched job with what the database knows of it, in config order (`status --json`;
/// `/api/v1/jobs` serves the same rows a page at a time).
pub async fn status_rows(config: &Config, store: &Store) -> anyhow::Result<serde_json::Value> {
    let rows = store.jobs().await?;
    let out: Vec<StatusRow> = config
        .jobs
        .iter()
        .map(|j| StatusRow::new(j, rows.get(&(j.app_id.clone(), j.job_id.clone()))))
        .collect();
    Ok(serde_json::to_value(out)?)
}

async fn open_existing(config: &Config) -> anyhow::Result<Store> {
    if !config.storage.path.exists() {
        anyhow::bail!(
            "no database at {} yet: start `recwatch run` or `recwatch poll-once` first (or check storage.path)",
            config.storage.path.display()
        );
    }
    Store::open(&config.storage.path).await
}

async fn status(config: &Config, json: bool) -> anyhow::Result<()> {
    let store = open_existing(config).await?;
    let value = status_rows(config, &store).await?;
    // Closing checkpoints the WAL, so the next command does not have to read it back.
    store.close().await;
    if json {
        out!("{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    let mut rows = vec![
        [
            "NAME",
            "APP_ID",
            "JOB_ID",
            "STATE",
            "STOP_REASON",
            "LAST_POLL",
            "LAST_CHANGE",
            "ERROR",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in value.as_array().into_iter().flatten() {
        let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
        rows.push(vec![
            s("name"),
            s("app_id"),
            s("job_id"),
            s("state"),
            s("stop_reason"),
            s("last_polled_at"),
            s("last_changed_at"),
            s("last_error"),
        ]);
    }
    print_table(&rows)?;
    Ok(())
}

async fn history(
    config: &Config,
    job: Option<String>,
    since: Option<std::time::Duration>,
    limit: i64,
    json: bool,
) -> anyhow::Result<()> {
    let store = open_existing(config).await?;
    let since = since.map(|d| {
        chrono::Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
    });
    let rows = store.history(job.as_deref(), since, limit).await?;
    store.close().await;
    if json {
        out!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    let mut table = vec![
        [
            "OBSERVED_AT",
            "NAME",
            "APP_ID",
            "JOB_ID",
            "FROM",
            "TO",
            "STOP_REASON",
            "DESCRIPTION",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in rows {
        table.push(vec![
            r.observed_at,
            r.name.unwrap_or_else(|| "-".into()),
            r.app_id,
            r.job_id,
            r.from_state.unwrap_or_else(|| "(first seen)".into()),
            r.to_state,
            r.stop_reason.unwrap_or_else(|| "-".into()),
            r.description.unwrap_or_else(|| "-".into()),
        ]);
    }
    print_table(&table)?;
    Ok(())
}

async fn alerts(config: &Config, pending: bool, limit: i64, json: bool) -> anyhow::Result<()> {
    let store = open_existing(config).await?;
    let list = store.alerts(pending, limit).await?;
    store.close().await;
    if json {
        out!("{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    let mut table = vec![
        [
            "CREATED_AT",
            "ID",
            "RULE",
            "SEVERITY",
            "STATUS",
            "JOB",
            "DELIVERIES",
            "SUMMARY",
        ]
        .map(String::from)
        .to_vec(),
    ];
    // Why a delivery is dead or still failing, under the table: the last error as the
    // receiver gave it (HTTP status and body, SMTP reply), too long for a column.
    let mut reasons = Vec::new();
    for a in list {
        for d in &a.deliveries {
            if let (Some(e), false) = (&d.last_error, d.state == "sent") {
                reasons.push(format!("{} {} {}: {e}", a.id, d.channel, d.state));
            }
        }
        let deliveries = if a.deliveries.is_empty() {
            "(no channels)".to_string()
        } else {
            a.deliveries
                .iter()
                .map(|d| {
                    format!(
                        "{}:{}{}",
                        d.channel,
                        d.state,
                        if d.attempts > 1 {
                            format!("({}x)", d.attempts)
                        } else {
                            String::new()
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        table.push(vec![
            a.created_at,
            a.id,
            a.rule,
            a.severity,
            a.status,
            a.job_id.unwrap_or_else(|| "-".into()),
            deliveries,
            a.summary,
        ]);
    }
    print_table(&table)?;
    if !reasons.is_empty() {
        out!("\nlast errors:")?;
        for r in reasons {
            out!("  {r}")?;
        }
    }
    Ok(())
}

async fn test_alert(config: &Config, only: Option<&str>) -> anyhow::Result<ExitCode> {
    let channels = match crate::notify::Channel::from_config(&config.notify) {
        Ok(c) => c,
        Err(e) => return Ok(config_error(&e)),
    };
    let channels: Vec<_> = channels
        .into_iter()
        .filter(|c| only.is_none_or(|n| c.name() == n))
        .collect();
    if channels.is_empty() {
        match only {
            Some(n) => complain(&format!(
                "no channel is named {n:?}; the channels are {:?}",
                config.notify.channel_names()
            )),
            None => complain(
                "no channels are configured: add [[notify.webhook]] or [[notify.email]] (see config.example.toml)",
            ),
        }
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    let alert = crate::alert::test_alert();
    let mut failed = 0;
    for c in &channels {
        match c.send(&alert).await {
            Ok(()) => out!(
                "{:<8} {:<20} ok (alert id {})",
                c.kind(),
                c.name(),
                alert.id
            )?,
            Err(e) => {
                failed += 1;
                out!(
                    "{:<8} {:<20} FAILED{}: {e}",
                    c.kind(),
                    c.name(),
                    if e.needs_a_fix() {
                        " (refused: check the receiver and this channel's settings)"
                    } else {
                        ""
                    }
                )?;
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints rows as left-aligned columns; the last column is not padded.
pub fn print_table(rows: &[Vec<String>]) -> std::io::Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out!("{}", line.trim_end())?;
    }
    Ok(())
}
