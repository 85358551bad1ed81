//! `recwatch demo`: everything in one process, no credentials and no config file. The
//! simulator (checking real SDK-HMAC-SHA256 signatures), the daemon polling it with a
//! temporary database, and a webhook receiver that verifies each alert's Standard Webhooks
//! signature; state changes and alerts are printed as they happen.

use crate::config::{Auth, Config, JobConfig, WebhookConfig, WebhookSecret};
use crate::domain::{Status, StopReason};
use crate::poller::Event;
use crate::secret::Secret;
use crate::store::Store;
use anyhow::Context;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use recwatch_sim::{self as simulate, SimAuth, SimOptions, Simulator};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

/// The demo's output goes to a reader that may leave (`recwatch demo | head`): `println!`
/// would panic then; this one notes that the reader left ([`reader_left`]), and the demo stops
/// as after Ctrl-C, so its temporary directory is removed (exiting on the spot would leave it).
macro_rules! println {
    ($($arg:tt)*) => { say(format_args!($($arg)*)) };
}

/// Set once stdout's reader has gone; nothing is printed after that.
static READER_LEFT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn reader_left() -> bool {
    READER_LEFT.load(std::sync::atomic::Ordering::Relaxed)
}

fn say(args: std::fmt::Arguments<'_>) {
    if reader_left() {
        return;
    }
    if let Err(e) = crate::cli::emit(&format!("{args}\n")) {
        READER_LEFT.store(true, std::sync::atomic::Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("recwatch: cannot write to stdout: {e}; stopping the demo");
        }
    }
}

const DEMO_AK: &str = "DEMOACCESSKEY0000001";
const DEMO_SK: &str = "demo-secret-key-not-a-real-one";
const DEMO_PROJECT: &str = "demo-project";
/// A fixed demo key: base64 of 24 bytes.
const DEMO_WEBHOOK_SECRET: &str = "whsec_cmVjd2F0Y2gtZGVtby13ZWJob29rLWtleQ==";

#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// How many simulated jobs to watch (plus one that does not exist).
    #[arg(long, default_value_t = 12)]
    pub jobs: usize,
    /// How long each simulated phase lasts.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// How often each job is polled.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Stop by itself after this long (default: run until Ctrl-C).
    #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    // The demo's own output is the show; logs only for errors (RUST_LOG still wins). The
    // outbox logs each alert it raises as an error too: the demo prints those as ALERT lines.
    crate::telemetry::init(
        &crate::telemetry::LogFilter::from_static("error,recwatch::outbox=off"),
        crate::telemetry::LogFormat::Text,
    );
    let sim = start_sim(&args).await.context("starting the simulator")?;
    let (hook_url, deliveries) = start_receiver().await?;
    let dir = tempfile::Builder::new()
        .prefix("recwatch-demo-")
        .tempdir()?;
    let config = demo_config(&args, &sim.url(), &hook_url, dir.path())?;
    let plan = Plan::new(&args);
    print_intro(&config, &sim, &hook_url, &args, &plan);

    let (stop_tx, stop_rx) = watch::channel(false);
    // A second Ctrl-C exits at once: the temporary directory goes first.
    let dir_path = dir.path().to_path_buf();
    let shutdown = crate::startup::shutdown_on_signals_then(move || {
        let _ = std::fs::remove_dir_all(&dir_path);
    })?;
    let mut daemon = LiveDaemon::start(config.clone(), stop_rx);
    let ended = show_live(&mut daemon, &sim, &plan, shutdown, deliveries).await;
    let _ = stop_tx.send(true);
    let result = match ended {
        Some(result) => result,
        None => daemon.task.await,
    };
    result.context("the daemon task")??;
    print_summary(&config, &sim).await?;
    sim.shutdown();
    Ok(())
}

async fn start_sim(args: &DemoArgs) -> anyhow::Result<Simulator> {
    Ok(simulate::start(
        TcpListener::bind("127.0.0.1:0").await?,
        SimOptions {
            jobs: args.jobs,
            step: args.step,
            auth: SimAuth::AkSk {
                access_key: DEMO_AK.into(),
                secret_key: DEMO_SK.into(),
            },
            project_id: Some(DEMO_PROJECT.into()),
            rate_limit: Some(10),
            ..SimOptions::default()
        },
    )
    .await?)
}

/// The daemon's configuration: the simulator's jobs (and one that does not exist), polled
/// every `--interval`, alerts to the demo's webhook receiver, the database in `dir`.
fn demo_config(
    args: &DemoArgs,
    sim_url: &str,
    hook_url: &str,
    dir: &std::path::Path,
) -> anyhow::Result<Config> {
    let mut config = Config::defaults(Auth::AkSk {
        access_key: DEMO_AK.into(),
        secret_key: Secret::new(DEMO_SK),
        security_token: None,
    });
    config.api.endpoint = sim_url.parse()?;
    config.api.project_id = Some(DEMO_PROJECT.into());
    config.poll.interval = args.interval;
    config.storage.path = dir.join("recwatch.db");
    // Short, so the job that never leaves INIT (max_idle_time 5 s) fires within seconds.
    config.rules.init_grace = args.step;
    config.notify.webhooks.push(WebhookConfig {
        name: "demo-hook".into(),
        url: hook_url.parse()?,
        secret: Some(
            WebhookSecret::parse(Secret::new(DEMO_WEBHOOK_SECRET)).map_err(anyhow::Error::msg)?,
        ),
        headers: Vec::new(),
        timeout: Duration::from_secs(5),
    });
    config.jobs = (0..args.jobs)
        .map(|i| JobConfig {
            app_id: "demo-app".into(),
            job_id: simulate::job_id(i),
            name: Some(format!("camera-{i:02}")),
            interval: None,
            notify: None,
        })
        .chain(std::iter::once(JobConfig {
            app_id: "demo-app".into(),
            job_id: "job-missing".into(),
            name: Some("deleted-job".into()),
            interval: None,
            notify: None,
        }))
        .collect();
    Ok(config)
}

/// The demo's two acts, in time: the script plays out, then the API fails for a while.
struct Plan {
    /// When the scripted jobs have started, run and stopped.
    script_end: Duration,
    /// How long act 2's outage lasts.
    outage: Duration,
    /// `--for`: the demo stops by itself after this long.
    stop_after: Option<Duration>,
}

impl Plan {
    fn new(args: &DemoArgs) -> Plan {
        Plan {
            script_end: args.step * 4 + args.interval * 2,
            outage: (args.step * 2).max(args.interval * 4),
            stop_after: args.duration,
        }
    }
}

fn print_intro(config: &Config, sim: &Simulator, hook_url: &str, args: &DemoArgs, plan: &Plan) {
    println!("recwatch demo");
    println!(
        "  simulated RTC API  {} (checks SDK-HMAC-SHA256 signatures, 10 requests/s budget)",
        sim.url()
    );
    println!("  webhook receiver   {hook_url} (checks Standard Webhooks signatures)");
    println!(
        "  database           {} (temporary)",
        config.storage.path.display()
    );
    println!(
        "  watching {} jobs every {}; the scripted jobs start, run and stop over about {},",
        config.jobs.len(),
        crate::config::format_duration(args.interval),
        crate::config::format_duration(plan.script_end)
    );
    println!(
        "  then the API fails for {} (act 2); a status line every {} when nothing happens",
        crate::config::format_duration(plan.outage),
        crate::config::format_duration(QUIET)
    );
    println!("  Ctrl-C to stop\n");
}

/// The daemon, run in this process, as the demo watches it.
struct LiveDaemon {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    events: mpsc::UnboundedReceiver<Event>,
    /// The daemon's own store, sent once polling is armed (None once received).
    store_rx: Option<oneshot::Receiver<Store>>,
    /// That store, for the status line (None until polling is armed).
    store: Option<Store>,
}

impl LiveDaemon {
    fn start(config: Config, stop: watch::Receiver<bool>) -> LiveDaemon {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (store_tx, store_rx) = oneshot::channel();
        let task = tokio::spawn(crate::startup::run(config, stop, move |running| {
            let _ = store_tx.send(running.store.clone());
            let mut rx = running.events.subscribe();
            tokio::spawn(async move {
                while let Ok(e) = rx.recv().await {
                    if events_tx.send(e).is_err() {
                        break;
                    }
                }
            });
        }));
        LiveDaemon {
            task,
            events,
            store_rx: Some(store_rx),
            store: None,
        }
    }
}

type DaemonEnded = Result<anyhow::Result<()>, tokio::task::JoinError>;

/// Prints what happens, and plays the acts, until Ctrl-C, `--for`, the reader leaving, or the
/// daemon ending by itself (a start-up error: the demo ends with it, and its result is
/// returned).
async fn show_live(
    daemon: &mut LiveDaemon,
    sim: &Simulator,
    plan: &Plan,
    mut shutdown: watch::Receiver<bool>,
    mut deliveries: mpsc::UnboundedReceiver<String>,
) -> Option<DaemonEnded> {
    let started = tokio::time::Instant::now();
    let deadline = plan.stop_after.map(|d| started + d);
    // Act 2: after the script, the API answers 500 to everything for a while.
    let mut acts = vec![
        (started + plan.script_end + plan.outage, Act::OutageEnds),
        (started + plan.script_end, Act::OutageStarts),
    ];
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut shown = Shown::new(started);
    // Checked after every print: the reader may leave at any line.
    while !reader_left() {
        let next_act = acts.last().map(|(at, _)| *at);
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = sleep_until(deadline) => break,
            store = async { daemon.store_rx.as_mut().expect("polled only while Some").await }, if daemon.store_rx.is_some() => {
                daemon.store = store.ok();
                daemon.store_rx = None;
            }
            result = &mut daemon.task => return Some(result),
            _ = sleep_until(next_act) => {
                let (_, act) = acts.pop().expect("a next act");
                act.play(sim, plan, &mut shown);
            }
            _ = ticker.tick() => {
                if shown.quiet_for() >= QUIET {
                    let line = match &daemon.store {
                        Some(store) => status_line(store, &shown, &sim.stats()).await,
                        None => "starting...".to_string(),
                    };
                    shown.line(&line);
                }
            }
            Some(e) = daemon.events.recv() => shown.event(&e),
            Some(line) = deliveries.recv() => {
                shown.webhooks += 1;
                shown.line(&line);
            }
        }
    }
    None
}

/// Sleeps until `at`; never wakes for None.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the whole run recorded, from the database, and what the simulator served.
async fn print_summary(config: &Config, sim: &Simulator) -> anyhow::Result<()> {
    let store = Store::open(&config.storage.path).await?;
    let transitions = store.history(None, None, i64::MAX).await?.len();
    let alerts = store.alerts(false, i64::MAX).await?;
    let delivered = alerts
        .iter()
        .filter(|a| {
            a.deliveries
                .iter()
                .all(|d| d.state == crate::domain::DeliveryState::Sent)
        })
        .count();
    let stats = sim.stats();
    println!(
        "\n{} recorded, {} ({delivered} delivered), {} (at most {} in any second)",
        plural(transitions, "transition"),
        plural(alerts.len(), "alert"),
        plural(stats.requests as usize, "API request"),
        stats.max_per_sliding_second
    );
    store.close().await;
    Ok(())
}

/// After this long without output, the demo prints a status line.
const QUIET: Duration = Duration::from_secs(10);

enum Act {
    OutageStarts,
    OutageEnds,
}

impl Act {
    fn play(&self, sim: &Simulator, plan: &Plan, shown: &mut Shown) {
        match self {
            Act::OutageStarts => {
                sim.set_fault(simulate::Fault::new(simulate::FaultKind::ServerError));
                shown.line(&format!(
                    "-- act 2: the scripted jobs have played out; now the simulated API answers HTTP 500 to every request for {}. Each job backs off on its own; one api_unhealthy alert stands for them all --",
                    crate::config::format_duration(plan.outage)
                ));
            }
            Act::OutageEnds => {
                sim.clear_faults();
                shown.line("-- the API answers again: api_unhealthy resolves with the next successful poll (the jobs that backed off come back one by one) --");
            }
        }
    }
}

/// What the demo printed: events, with what it needs to print them well.
struct Shown {
    last_output: tokio::time::Instant,
    /// A failing job is shown when its error changes, not at every poll.
    last_error: std::collections::HashMap<String, String>,
    explained_tenant_stop: bool,
    alerts: usize,
    resolved: usize,
    webhooks: usize,
}

impl Shown {
    fn new(now: tokio::time::Instant) -> Shown {
        Shown {
            last_output: now,
            last_error: Default::default(),
            explained_tenant_stop: false,
            alerts: 0,
            resolved: 0,
            webhooks: 0,
        }
    }

    fn line(&mut self, text: &str) {
        println!("{}  {text}", clock());
        self.last_output = tokio::time::Instant::now();
    }

    fn quiet_for(&self) -> Duration {
        self.last_output.elapsed()
    }

    fn event(&mut self, e: &Event) {
        match e {
            Event::PollFailed { job, error } => {
                let kind = error.kind.as_str();
                if self
                    .last_error
                    .insert(job.job_id.clone(), kind.into())
                    .as_deref()
                    == Some(kind)
                {
                    return;
                }
            }
            Event::Transition { job, .. } => {
                self.last_error.remove(&job.job_id);
            }
            Event::Alert {
                status: Status::Resolved,
                ..
            } => self.resolved += 1,
            Event::Alert { .. } => self.alerts += 1,
        }
        self.line(&event_line(e));
        if let Event::Transition { to, .. } = e
            && matches!(to.stop_reason, Some(StopReason::TenantStop))
            && !self.explained_tenant_stop
        {
            self.explained_tenant_stop = true;
            self.line("   no alert for TENANT_STOP: the application stopped the recording itself, on purpose (set rules.stopped_by_tenant = \"warning\" to be told anyway)");
        }
    }
}

/// `n thing` or `n things`.
fn plural(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// One line on where things stand, from the daemon's database and the simulator.
async fn status_line(store: &Store, shown: &Shown, stats: &simulate::SimStats) -> String {
    let jobs = match store.jobs().await {
        Ok(jobs) => jobs,
        Err(e) => return format!("status: cannot read the database: {e:#}"),
    };
    let mut by_state = std::collections::BTreeMap::<&str, usize>::new();
    for row in jobs.values() {
        *by_state
            .entry(row.state.as_deref().unwrap_or("never seen"))
            .or_default() += 1;
    }
    let failing = jobs.values().filter(|r| r.consecutive_failures > 0).count();
    let states: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
    format!(
        "status: {} ({}; {failing} failing now), {} raised and {} resolved, {} received; {} so far, at most {} in any second",
        plural(jobs.len(), "job"),
        states.join(", "),
        plural(shown.alerts, "alert"),
        shown.resolved,
        plural(shown.webhooks, "webhook"),
        plural(stats.requests as usize, "API request"),
        stats.max_per_sliding_second
    )
}

fn clock() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

fn event_line(e: &Event) -> String {
    match e {
        Event::Transition {
            job,
            from,
            to,
            description,
        } => {
            let from = from.as_ref().map(|p| p.state.as_str()).unwrap_or("(new)");
            let reason = to
                .stop_reason
                .as_ref()
                .map(|r| format!("  {r}"))
                .unwrap_or_default();
            let desc = crate::outbox::informative_description(
                description.as_deref(),
                to.state.as_str(),
                to.stop_reason_str(),
            )
            .map(|d| format!("  \"{d}\""))
            .unwrap_or_default();
            format!(
                "{:<12} {:<12} {from:>7} -> {}{reason}{desc}",
                job.label(),
                job.job_id,
                to.state
            )
        }
        Event::PollFailed { job, error } => {
            format!(
                "{:<12} {:<12} poll failed: {error}",
                job.label(),
                job.job_id
            )
        }
        Event::Alert {
            summary,
            rule,
            severity,
            status,
        } => {
            let tag = match status {
                Status::Resolved => "RESOLVED".to_string(),
                Status::Firing => format!("ALERT {}", severity.as_str().to_uppercase()),
            };
            format!("{tag} {rule}: {summary}")
        }
    }
}

/// A webhook receiver that checks each delivery's signature the way any Standard Webhooks
/// library does, and reports what arrived.
async fn start_receiver() -> anyhow::Result<(String, mpsc::UnboundedReceiver<String>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let (tx, rx) = mpsc::unbounded_channel();
    let key =
        crate::config::decode_webhook_secret(DEMO_WEBHOOK_SECRET).map_err(anyhow::Error::msg)?;
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            let key = key.clone();
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                let (id, ts, sig) = (
                    h("webhook-id"),
                    h("webhook-timestamp"),
                    h("webhook-signature"),
                );
                let expected =
                    crate::notify::webhook::signature(&key, &id, ts.parse().unwrap_or(0), &body);
                let verified = sig.split(' ').any(|s| s == expected);
                let alert: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let _ = tx.send(format!(
                    "webhook received {} {} ({}), signature {}",
                    alert["rule"].as_str().unwrap_or("?"),
                    alert["status"].as_str().unwrap_or("?"),
                    id,
                    if verified { "verified" } else { "INVALID" }
                ));
                if verified {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::UNAUTHORIZED
                }
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, rx))
}
