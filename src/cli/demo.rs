//! `recwatch demo`: everything in one process, no credentials and no config file. The
//! simulator (checking real SDK-HMAC-SHA256 signatures), the daemon polling it with a
//! temporary database, and a webhook receiver that verifies each alert's Standard Webhooks
//! signature; state changes and alerts are printed as they happen. The daemon's callback
//! receiver is registered at the simulator as `recwatch callback set` would, so every change
//! is also pushed: act 3 shows a job polled only once an hour seen recording, then its death
//! alerted, each right after the callback that announced it.

use crate::config::{AppConfig, Auth, Config, JobConfig, WebhookConfig, WebhookSecret};
use crate::domain::{Status, StopReason};
use crate::poller::Event;
use crate::secret::Secret;
use crate::store::Store;
use anyhow::Context;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use recwatch_rtc::RtcClient;
use recwatch_rtc::model::{JobSnapshot, State};
use recwatch_rtc::registration::CallbackUpdate;
use recwatch_sim::{self as simulate, SimAuth, SimOptions, Simulator};

mod regions;
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
/// The demo app's record-callback key (RTC takes 32 to 64 characters).
const DEMO_CALLBACK_KEY: &str = "demo-callback-key-not-a-real-one-0123";
/// Act 3's job: polled only once an hour ([`PUSH_JOB_INTERVAL`]), so only a callback gets
/// it polled within the demo.
const PUSH_JOB: &str = "job-push";
/// Act 3's second job: in no config; its first callback makes recwatch watch it (the demo
/// app has `discover = true`).
const FOUND_JOB: &str = "job-found";
/// Act 3's job's own poll interval.
const PUSH_JOB_INTERVAL: Duration = Duration::from_secs(3600);

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
    let mut opts = SimOptions {
        jobs: args.jobs,
        step: args.step,
        auth: SimAuth::AkSk {
            access_key: DEMO_AK.into(),
            secret_key: DEMO_SK.into(),
        },
        project_id: Some(DEMO_PROJECT.into()),
        rate_limit: Some(10),
        ..SimOptions::default()
    };
    regions::add_account(&mut opts);
    let sim = simulate::start(TcpListener::bind("127.0.0.1:0").await?, opts).await?;
    regions::add_jobs(&sim);
    // Act 3's job waits in INIT until its act (with an idle time longer than the demo, so
    // no stuck_init alert fires for it meanwhile).
    sim.set_job("demo-app", PUSH_JOB, push_job(State::Init));
    Ok(sim)
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
    // Push: the receiver on a port of its own, and the demo app's key.
    config.callback.listen = Some("127.0.0.1:0".parse()?);
    config.apps.push(AppConfig {
        account: None,
        app_id: "demo-app".into(),
        auth_key: Secret::new(DEMO_CALLBACK_KEY),
        name: Some("demo".into()),
        notify: None,
        forward_to: None,
        discover: true,
        max_discovered: crate::config::defaults::APP_MAX_DISCOVERED,
    });
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
            account: None,
            kind: crate::domain::JobKind::Individual,
            key: crate::domain::JobKey::new("demo-app", simulate::job_id(i)),
            name: Some(format!("camera-{i:02}")),
            interval: None,
            notify: None,
        })
        .chain(std::iter::once(JobConfig {
            account: None,
            kind: crate::domain::JobKind::Individual,
            key: crate::domain::JobKey::new("demo-app", PUSH_JOB),
            name: Some("camera-push".into()),
            interval: Some(PUSH_JOB_INTERVAL),
            notify: None,
        }))
        .chain(std::iter::once(JobConfig {
            account: None,
            kind: crate::domain::JobKind::Individual,
            key: crate::domain::JobKey::new("demo-app", "job-missing"),
            name: Some("deleted-job".into()),
            interval: None,
            notify: None,
        }))
        .map(std::sync::Arc::new)
        .collect();
    regions::configure(&mut config, args.step);
    Ok(config)
}

/// The demo's three acts, in time: the script plays out, then the API fails for a while,
/// then a job in no config is discovered by its first callback and a job polled once an hour
/// starts and dies, each change pushed by a callback.
struct Plan {
    /// When act 4's region loses its key, and when it gets it back.
    key_lost: Duration,
    key_back: Duration,
    /// When the scripted jobs have started, run and stopped.
    script_end: Duration,
    /// How long act 2's outage lasts.
    outage: Duration,
    /// When act 3 starts (its job's death follows once the job is seen RUNNING).
    push_at: Duration,
    /// `--for`: the demo stops by itself after this long.
    stop_after: Option<Duration>,
}

impl Plan {
    fn new(args: &DemoArgs) -> Plan {
        let script_end = args.step * 4 + args.interval * 2;
        let outage = (args.step * 2).max(args.interval * 4);
        let push_at = script_end + outage + args.step;
        Plan {
            key_lost: push_at + args.step * 4,
            key_back: push_at + args.step * 8,
            script_end,
            outage,
            push_at,
            stop_after: args.duration,
        }
    }
}

fn print_intro(config: &Config, sim: &Simulator, hook_url: &str, args: &DemoArgs, plan: &Plan) {
    println!("recwatch demo");
    println!(
        "  simulated RTC API  {} (checks SDK-HMAC-SHA256 signatures; two regions' accounts, 10 requests/s each)",
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
        "  then the API fails for {} (act 2), then a job in no config is discovered by its first callback and a job polled once an hour starts and dies (act 3);",
        crate::config::format_duration(plan.outage),
    );
    println!(
        "  then region {} loses its access key while {} goes on (act 4: two accounts, each its own 10 requests/s);",
        regions::SECOND,
        regions::FIRST
    );
    println!(
        "  every change is also pushed to the daemon's callback receiver as a signed RTC record callback;"
    );
    println!(
        "  a status line every {} when nothing happens",
        crate::config::format_duration(QUIET)
    );
    println!("  Ctrl-C to stop\n");
}

/// The daemon, run in this process, as the demo watches it.
struct LiveDaemon {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    events: mpsc::UnboundedReceiver<Event>,
    /// The daemon's own store and its callback receiver's address, sent once polling is
    /// armed (None once received).
    store_rx: Option<oneshot::Receiver<(Store, Option<std::net::SocketAddr>)>>,
    /// That store, for the status line (None until polling is armed).
    store: Option<Store>,
}

impl LiveDaemon {
    fn start(config: Config, stop: watch::Receiver<bool>) -> LiveDaemon {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (store_tx, store_rx) = oneshot::channel();
        let task = tokio::spawn(crate::startup::run(config, stop, move |running| {
            let _ = store_tx.send((running.store.clone(), running.callback_addr));
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
    mut deliveries: mpsc::UnboundedReceiver<Delivery>,
) -> Option<DaemonEnded> {
    let started = tokio::time::Instant::now();
    let deadline = plan.stop_after.map(|d| started + d);
    // Latest last: act 2 after the script (the API answers 500 to everything for a while),
    // act 3 after that (a job polled once an hour starts; it dies once seen recording).
    let mut acts = vec![
        (started + plan.key_back, Act::KeyBack),
        (started + plan.key_lost, Act::KeyLost),
        (started + plan.push_at, Act::PushJobAppears),
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
            armed = async { daemon.store_rx.as_mut().expect("polled only while Some").await }, if daemon.store_rx.is_some() => {
                daemon.store_rx = None;
                if let Ok((store, callback_addr)) = armed {
                    daemon.store = Some(store);
                    register_receiver(sim, callback_addr, &mut shown).await;
                }
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
            Some(e) = daemon.events.recv() => {
                shown.event(&e);
                if shown.push_job_found(&e, sim) {
                    // Dies once it has been seen recording, whatever the machine's speed.
                    let at = tokio::time::Instant::now() + PUSH_RUN;
                    acts.push((at, Act::PushJobDies));
                    acts.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
                }
            }
            Some(delivery) = deliveries.recv() => {
                shown.webhooks += 1;
                shown.line(&delivery.line);
                shown.push_job_delivered(&delivery, sim);
            }
        }
    }
    None
}

/// How long act 3's job records, once seen recording, before it dies.
const PUSH_RUN: Duration = Duration::from_secs(2);

/// Registers the daemon's callback receiver as the demo app's record-callback URL, through
/// the simulated API's `PUT /v2/apps/{app_id}/record-callback`, as `recwatch callback set`
/// does.
async fn register_receiver(
    sim: &Simulator,
    callback_addr: Option<std::net::SocketAddr>,
    shown: &mut Shown,
) {
    let Some(addr) = callback_addr else {
        return;
    };
    let url = format!("http://{addr}{}", crate::config::defaults::CALLBACK_PATH);
    let registered = async {
        let mut api = recwatch_rtc::ClientConfig::new(
            sim.url().parse()?,
            Auth::AkSk {
                access_key: DEMO_AK.into(),
                secret_key: Secret::new(DEMO_SK),
                security_token: None,
            },
        );
        api.project_id = Some(DEMO_PROJECT.into());
        let update = CallbackUpdate::new(&url, Some(Secret::new(DEMO_CALLBACK_KEY)))
            .map_err(anyhow::Error::msg)?;
        RtcClient::new(&api)?
            .put_record_callback("demo-app", &update)
            .await?;
        anyhow::Ok(())
    };
    match registered.await {
        Ok(()) => shown.line(&format!(
            "-- push: the daemon's callback receiver {url} is registered as demo-app's record-callback URL (what `recwatch callback set` does); from now on the simulated RTC also POSTs every change to it, signed with the app's key --"
        )),
        Err(e) => shown.line(&format!("cannot register the callback receiver: {e:#}")),
    }
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
    let transitions = store
        .transitions()
        .history(None, None, i64::MAX)
        .await?
        .len();
    let alerts = store.alerts().list(false, i64::MAX).await?;
    let delivered = alerts
        .iter()
        .filter(|a| {
            a.deliveries
                .iter()
                .all(|d| d.state == crate::domain::DeliveryState::Sent)
        })
        .count();
    let stats = sim.stats();
    let peaks = regions::peaks(sim);
    let peak = peaks.iter().map(|(_, n)| *n).max().unwrap_or(0);
    let each: Vec<String> = peaks.iter().map(|(a, n)| format!("{a} {n}")).collect();
    println!(
        "\n{} recorded, {} ({delivered} delivered), {} pushed, {} (at most {peak} in any second for one account: {})",
        plural(transitions, "transition"),
        plural(alerts.len(), "alert"),
        plural(stats.callbacks.sent as usize, "record callback"),
        plural(stats.requests as usize, "API request"),
        each.join(", ")
    );
    store.close().await;
    Ok(())
}

/// After this long without output, the demo prints a status line.
const QUIET: Duration = Duration::from_secs(10);

enum Act {
    KeyLost,
    KeyBack,
    OutageStarts,
    OutageEnds,
    PushJobAppears,
    PushJobDies,
}

impl Act {
    fn play(&self, sim: &Simulator, plan: &Plan, shown: &mut Shown) {
        match self {
            Act::KeyLost => shown.line(&regions::lose_key(sim)),
            Act::KeyBack => shown.line(&regions::restore_key(sim)),
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
            Act::PushJobAppears => {
                sim.set_job("demo-app", FOUND_JOB, demo_job(FOUND_JOB, State::Running));
                shown.line(&format!(
                    "-- act 3: push. {FOUND_JOB} is in no config: RTC's first callback for it (RECORD_NEW_FILE_START) makes recwatch watch it ([[apps]] discover = true, source \"callback\", named demo/{FOUND_JOB}) and poll it at once --"
                ));
                sim.set_job("demo-app", PUSH_JOB, push_job(State::Running));
                shown.line(&format!(
                    "-- camera-push ({PUSH_JOB}) has its own interval of {}, so polling alone would see it change within the hour; it starts recording now, and RTC's callback (RECORD_NEW_FILE_START) puts it at the front of the poll queue --",
                    crate::config::format_duration(PUSH_JOB_INTERVAL)
                ));
            }
            Act::PushJobDies => {
                let mut dead = push_job(State::Stopped);
                dead.stop_reason = Some(StopReason::InternalError);
                dead.description = Some("the recorder crashed".into());
                sim.set_job("demo-app", PUSH_JOB, dead);
                shown.line(&format!(
                    "-- camera-push dies (INTERNAL_ERROR). RTC announces it with CLOUD_RECORD_SERVER_OVER: that callback has the job polled now, not at its turn ({} away) --",
                    crate::config::format_duration(PUSH_JOB_INTERVAL)
                ));
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
    /// Act 3's job was seen recording.
    push_found: bool,
    /// Act 3's death alert arrived at the webhook receiver.
    push_delivered: bool,
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
            push_found: false,
            push_delivered: false,
        }
    }

    /// True the first time act 3's job is seen RUNNING; says how long after the callback
    /// that revealed it.
    fn push_job_found(&mut self, e: &Event, sim: &Simulator) -> bool {
        let Event::Transition { job, to, .. } = e else {
            return false;
        };
        if self.push_found || job.job_id() != PUSH_JOB || to.state != State::Running {
            return false;
        }
        self.push_found = true;
        let line = match since_callback(sim, "RECORD_NEW_FILE_START") {
            Some(s) => format!("   seen RUNNING {s:.2} s after RECORD_NEW_FILE_START was sent"),
            None => "   seen RUNNING (its callback was not seen sent)".to_string(),
        };
        self.line(&line);
        true
    }

    /// Says, once, how long after the callback announcing act 3's death its alert arrived.
    fn push_job_delivered(&mut self, delivery: &Delivery, sim: &Simulator) {
        if self.push_delivered
            || delivery.job_id.as_deref() != Some(PUSH_JOB)
            || delivery.status != Some(crate::domain::Status::Firing)
        {
            return;
        }
        self.push_delivered = true;
        let line = match since_callback_at(sim, "CLOUD_RECORD_SERVER_OVER", delivery.at) {
            Some(s) => format!(
                "   pushed: the alert reached the webhook {s:.2} s after CLOUD_RECORD_SERVER_OVER was sent"
            ),
            None => "   the alert reached the webhook (its callback was not seen sent)".to_string(),
        };
        self.line(&line);
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
                    .insert(job.job_id().to_owned(), kind.into())
                    .as_deref()
                    == Some(kind)
                {
                    return;
                }
            }
            Event::Transition { job, .. } => {
                self.last_error.remove(job.job_id());
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

/// Seconds from the simulator's send of act 3's `event` callback to now.
fn since_callback(sim: &Simulator, event: &str) -> Option<f64> {
    since_callback_at(sim, event, chrono::Utc::now())
}

/// Seconds from the simulator's (latest) send of act 3's `event` callback to `at`.
fn since_callback_at(
    sim: &Simulator,
    event: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Option<f64> {
    let sent = sim
        .sent_callbacks()
        .into_iter()
        .rfind(|c| c.job_id == PUSH_JOB && c.event_type == event)?;
    Some((at - sent.sent_at).num_milliseconds().max(0) as f64 / 1000.0)
}

/// Act 3's job as the simulated API serves it.
fn push_job(state: State) -> JobSnapshot {
    demo_job(PUSH_JOB, state)
}

/// An act 3 job as the simulated API serves it.
fn demo_job(job_id: &str, state: State) -> JobSnapshot {
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    JobSnapshot {
        job_id: Some(job_id.into()),
        app_id: Some("demo-app".into()),
        room_id: Some("room-push".into()),
        stream_name: Some(format!("s_{job_id}_room-push_user-push")),
        state: Some(state),
        max_idle_time: Some(PUSH_JOB_INTERVAL.as_secs() * 24),
        start_time: Some(now.clone()),
        create_time: Some(now.clone()),
        update_time: Some(now),
        description: Some("recording".into()),
        ..Default::default()
    }
}

/// One webhook that reached the demo's receiver.
struct Delivery {
    /// What to print about it.
    line: String,
    job_id: Option<String>,
    /// The alert's `status`, if it reads as one.
    status: Option<crate::domain::Status>,
    at: chrono::DateTime<chrono::Utc>,
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
    let jobs = match store.jobs().all().await {
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
        "status: {} ({}; {failing} failing now), {} raised and {} resolved, {} received; {} so far, at most {} in any second for one account",
        plural(jobs.len(), "job"),
        states.join(", "),
        plural(shown.alerts, "alert"),
        shown.resolved,
        plural(shown.webhooks, "webhook"),
        plural(stats.requests as usize, "API request"),
        stats
            .by_account
            .values()
            .map(|a| a.max_per_sliding_second)
            .max()
            .unwrap_or(0)
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
                job.job_id(),
                to.state
            )
        }
        Event::PollFailed { job, error } => {
            format!(
                "{:<12} {:<12} poll failed: {error}",
                job.label(),
                job.job_id()
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
async fn start_receiver() -> anyhow::Result<(String, mpsc::UnboundedReceiver<Delivery>)> {
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
                let at = chrono::Utc::now();
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
                let _ = tx.send(Delivery {
                    line: format!(
                        "webhook received {} {} ({}), signature {}",
                        alert["rule"].as_str().unwrap_or("?"),
                        alert["status"].as_str().unwrap_or("?"),
                        id,
                        if verified { "verified" } else { "INVALID" }
                    ),
                    job_id: alert["job"]["job_id"].as_str().map(str::to_string),
                    status: serde_json::from_value(alert["status"].clone()).ok(),
                    at,
                });
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
