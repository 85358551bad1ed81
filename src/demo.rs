//! `recwatch demo`: everything in one process, no credentials and no config file. The
//! simulator (checking real SDK-HMAC-SHA256 signatures), the daemon polling it with a
//! temporary database, and a webhook receiver that verifies each alert's Standard Webhooks
//! signature; state changes and alerts are printed as they happen.

use crate::config::{Auth, Config, JobConfig, WebhookConfig};
use crate::poll::Event;
use crate::secret::Secret;
use crate::simulate::{self, SimAuth, SimOptions};
use anyhow::Context;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

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
    // The demo's own output is the show; logs only for warnings (RUST_LOG still wins).
    crate::telemetry::init("error", crate::telemetry::LogFormat::Text);
    let sim = simulate::start(
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
    .await
    .context("starting the simulator")?;
    let (hook_url, mut deliveries) = start_receiver().await?;
    let dir = tempfile::Builder::new()
        .prefix("recwatch-demo-")
        .tempdir()?;

    let mut config = Config::defaults(Auth::AkSk {
        access_key: DEMO_AK.into(),
        secret_key: Secret::new(DEMO_SK),
        security_token: None,
    });
    config.api.endpoint = sim.url().parse()?;
    config.api.project_id = Some(DEMO_PROJECT.into());
    config.poll.interval = args.interval;
    config.storage.path = dir.path().join("recwatch.db");
    // Short, so the job that never leaves INIT (max_idle_time 5 s) fires within seconds.
    config.rules.init_grace = args.step;
    config.notify.webhooks.push(WebhookConfig {
        name: "demo-hook".into(),
        url: hook_url.parse()?,
        secret: Some(Secret::new(DEMO_WEBHOOK_SECRET)),
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
        "  watching {} jobs every {}; scripted jobs start, run and stop over about {}",
        config.jobs.len(),
        crate::config::format_duration(args.interval),
        crate::config::format_duration(args.step * 5)
    );
    println!("  Ctrl-C to stop\n");

    let (stop_tx, stop_rx) = watch::channel(false);
    // A second Ctrl-C exits at once: the temporary directory goes first.
    let dir_path = dir.path().to_path_buf();
    let shutdown = crate::daemon::shutdown_on_signals_then(move || {
        let _ = std::fs::remove_dir_all(&dir_path);
    })?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let daemon = tokio::spawn(crate::daemon::run(
        config.clone(),
        stop_rx,
        move |running| {
            let mut rx = running.events.subscribe();
            tokio::spawn(async move {
                while let Ok(e) = rx.recv().await {
                    if events_tx.send(e).is_err() {
                        break;
                    }
                }
            });
        },
    ));

    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut shutdown = shutdown;
    // A failing job is shown when its error changes, not at every poll.
    let mut last_error: std::collections::HashMap<String, String> = Default::default();
    // Checked after every print: the reader may leave at any line.
    while !reader_left() {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = until_deadline => break,
            Some(e) = events.recv() => {
                match &e {
                    Event::PollFailed { job, error } => {
                        if last_error.insert(job.job_id.clone(), error.kind.as_str().into()).as_deref() == Some(error.kind.as_str()) {
                            continue;
                        }
                    }
                    Event::Transition { job, .. } => {
                        last_error.remove(&job.job_id);
                    }
                    Event::Alert { .. } => {}
                }
                print_event(&e)
            }
            Some(line) = deliveries.recv() => println!("{}  {line}", clock()),
        }
    }
    let _ = stop_tx.send(true);
    daemon.await.context("the daemon task")??;

    let store = crate::store::Store::open(&config.storage.path).await?;
    let transitions = store.history(None, None, i64::MAX).await?.len();
    let alerts = crate::deliver::list_alerts(&store, false, i64::MAX).await?;
    let delivered = alerts
        .iter()
        .filter(|a| a.deliveries.iter().all(|d| d.state == "sent"))
        .count();
    let stats = sim.stats();
    println!(
        "\n{transitions} transitions recorded, {} alerts ({delivered} delivered), {} API requests (at most {} in any second)",
        alerts.len(),
        stats.requests,
        stats.max_per_sliding_second
    );
    store.close().await;
    sim.shutdown();
    Ok(())
}

fn clock() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

fn print_event(e: &Event) {
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
                .as_deref()
                .map(|r| format!("  {r}"))
                .unwrap_or_default();
            let desc = description
                .as_deref()
                .filter(|d| !d.is_empty())
                .map(|d| format!("  \"{d}\""))
                .unwrap_or_default();
            println!(
                "{}  {:<12} {:<12} {from:>7} -> {}{reason}{desc}",
                clock(),
                job.label(),
                job.job_id,
                to.state
            );
        }
        Event::PollFailed { job, error } => {
            println!(
                "{}  {:<12} {:<12} poll failed: {error}",
                clock(),
                job.label(),
                job.job_id
            );
        }
        Event::Alert {
            summary,
            rule,
            severity,
            status,
        } => {
            let tag = if status == "resolved" {
                "RESOLVED".to_string()
            } else {
                format!("ALERT {}", severity.to_uppercase())
            };
            println!("{}  {tag} {rule}: {summary}", clock());
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
