//! `recwatch run`: opens the store, arms the poller, the delivery worker, housekeeping and the
//! HTTP endpoint; tells systemd when it is ready and pings its watchdog while the poll loop is
//! alive; re-reads the configuration on SIGHUP or when the file changes; and turns
//! SIGINT/SIGTERM into a clean stop.

use crate::config::{self, Config};
use crate::outbox::Outbox;
use crate::poll::{Command, Event, Poller};
use crate::rtc::client::RtcClient;
use crate::store::Store;
use crate::systemd;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{debug, error, info, warn};

/// A running daemon's handles, for the demo and tests that run it in-process.
pub struct Running {
    pub events: broadcast::Sender<Event>,
    pub store: Store,
}

/// Runs until `shutdown` turns true. `on_start` is called once polling is armed.
pub async fn run(
    config: Config,
    mut shutdown: watch::Receiver<bool>,
    on_start: impl FnOnce(&Running),
) -> anyhow::Result<()> {
    // Before anything slow: SIGHUP's default action is to terminate the process.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    for w in config.warnings() {
        warn!("{w}");
    }
    let store = Store::open(&config.storage.path).await?;
    // Bound before READY: a taken port stops the start (exit 69) rather than leaving a
    // daemon whose /readyz and /metrics silently vanished. After the store, so a second
    // daemon on the same database is told about the database first.
    let listener = match config.http.listen {
        Some(addr) => Some(crate::startup::bind_http(addr).await?),
        None => None,
    };
    let client = RtcClient::new(&config.api).context("cannot build the HTTP client")?;
    let (events, _) = broadcast::channel(1024);
    let outbox = Outbox::new().with_events(events.clone());
    outbox.restore(&store).await?;
    let mut poller = Poller::new(config.clone(), client, store.clone(), outbox.clone());
    let armed = poller.armed();
    // The poller makes its own event sender; forward its events so one stream has both.
    let mut poll_events = poller.events();
    let fwd = events.clone();
    tokio::spawn(async move {
        while let Ok(e) = poll_events.recv().await {
            let _ = fwd.send(e);
        }
    });

    let shared_config = Arc::new(RwLock::new(config.clone()));
    let housekeeping = start_housekeeping(store.clone(), config.storage.retention).await?;
    let (notify_tx, notify_rx) = watch::channel(config.notify.clone());
    let worker = crate::deliver::Worker::new(store.clone(), &config, outbox.wake_handle())?;
    let worker_task = tokio::spawn(worker.run(shutdown.clone(), notify_rx));

    let liveness = poller.liveness();
    if let Some(listener) = listener {
        let state = crate::http::AppState {
            store: store.clone(),
            config: shared_config.clone(),
            liveness: liveness.clone(),
            outbox: outbox.clone(),
            budget: poller.budget(),
            metrics: crate::http::metrics_handle(),
        };
        tokio::spawn(crate::http::serve(listener, state, shutdown.clone()));
    }
    let live = liveness.clone();
    tokio::spawn(systemd::watchdog_task(
        move || live.age_ms() < crate::http::LIVENESS_LIMIT_MS,
        shutdown.clone(),
    ));

    let commands = poller.commands();
    let reloads = match config.source.clone() {
        Some(path) => {
            let reloader = Reloader {
                path,
                commands,
                shared: shared_config.clone(),
                notify: notify_tx.clone(),
            };
            tokio::spawn(reloader.run(hangup, shutdown.clone()))
        }
        None => tokio::spawn(async move {
            let mut hangup = hangup;
            while hangup.recv().await.is_some() {
                info!("SIGHUP ignored: this configuration was not read from a file");
            }
        }),
    };

    let poll_task = tokio::spawn(poller.run(shutdown.clone()));
    // READY=1 once the database is open and polling is armed.
    if armed.await.is_ok() {
        systemd::ready();
        systemd::status(&format!("watching {} jobs", config.jobs.len()));
        on_start(&Running {
            events: events.clone(),
            store: store.clone(),
        });
        info!(
            database = %store.path().display(),
            jobs = config.jobs.len(),
            endpoint = %config.api.endpoint,
            auth = %config.api.auth.describe(),
            "recwatch running"
        );
    }
    let stopping = async {
        let _ = shutdown.wait_for(|s| *s).await;
        systemd::stopping();
    };
    let (result, _) = tokio::join!(poll_task, stopping);
    let result = result.context("the poll loop panicked")?;
    if let Err(e) = &result {
        error!("poller failed: {e:#}");
    }
    // Sends in flight get deliver::SHUTDOWN_GRACE to finish; the rest stay pending for the
    // next start, which picks them up at once.
    let _ = worker_task.await;
    reloads.abort();
    drop(notify_tx);
    if let Some(mut h) = housekeeping {
        let _ = h.shutdown().await;
    }
    store.close().await;
    info!("stopped");
    result
}

/// Re-reads the configuration on SIGHUP and when the file changes.
struct Reloader {
    path: PathBuf,
    commands: mpsc::Sender<Command>,
    shared: Arc<RwLock<Config>>,
    notify: watch::Sender<crate::config::NotifyConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Signal,
    FileChanged,
}

impl Reloader {
    async fn run(
        self,
        mut hangup: tokio::signal::unix::Signal,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let (tx, mut rx) = mpsc::channel::<Trigger>(16);
        let signals = tx.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                info!("SIGHUP received: re-reading the configuration");
                let _ = signals.send(Trigger::Signal).await;
            }
        });
        // Keep the watcher alive as long as this task.
        let _watcher = match watch_file(&self.path, tx.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(
                    "cannot watch {} for changes: {e:#}; reload with SIGHUP (systemctl reload recwatch)",
                    self.path.display()
                );
                None
            }
        };
        let mut last_text = std::fs::read(&self.path).ok();
        loop {
            let trigger = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                t = rx.recv() => match t { Some(t) => t, None => return },
            };
            // Editors write in several steps (truncate, write, rename): let them finish, and
            // fold the burst into one reload.
            let mut signal = trigger == Trigger::Signal;
            tokio::time::sleep(Duration::from_millis(250)).await;
            while let Ok(t) = rx.try_recv() {
                signal |= t == Trigger::Signal;
            }
            let text = std::fs::read(&self.path).ok();
            if !signal && text == last_text {
                debug!("config file event without a change in content");
                continue;
            }
            last_text = text;
            self.reload(if signal { "SIGHUP" } else { "file changed" })
                .await;
        }
    }

    async fn reload(&self, why: &str) {
        systemd::reloading();
        match config::load(&self.path) {
            Err(e) => {
                error!("reload ({why}) refused, keeping the previous configuration: {e}");
            }
            Ok(new) => match RtcClient::new(&new.api) {
                Err(e) => error!(
                    "reload ({why}) refused, keeping the previous configuration: cannot build the HTTP client: {e:#}"
                ),
                Ok(client) => {
                    let old = self.shared.read().expect("config lock").clone();
                    warn_restart_only(&old, &new);
                    for w in new.warnings() {
                        warn!("{w}");
                    }
                    *self.shared.write().expect("config lock") = new.clone();
                    let _ = self.notify.send(new.notify.clone());
                    info!(reason = why, jobs = new.jobs.len(), "configuration re-read");
                    if self
                        .commands
                        .send(Command::Reload(Box::new((new, client))))
                        .await
                        .is_err()
                    {
                        warn!("the poller is gone; reload not applied");
                    }
                }
            },
        }
        systemd::ready();
    }
}

/// Settings a running daemon cannot change: say so rather than ignore them silently.
fn warn_restart_only(old: &Config, new: &Config) {
    if old.storage.path != new.storage.path {
        warn!("storage.path changed: takes effect at the next restart");
    }
    if old.http.listen != new.http.listen {
        warn!("http.listen changed: takes effect at the next restart");
    }
    if old.log.level != new.log.level {
        warn!("log.level changed: takes effect at the next restart (or set RUST_LOG)");
    }
    if old.storage.retention != new.storage.retention {
        info!("storage.retention changed: used from the next daily pruning after a restart");
    }
}

/// Watches the config file's directory, so an editor that writes a new file and renames it
/// over the old one is seen too.
fn watch_file(
    path: &Path,
    tx: mpsc::Sender<Trigger>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = path.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            let ours = event
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
            if ours && !matches!(event.kind, notify::EventKind::Access(_)) {
                let _ = tx.try_send(Trigger::FileChanged);
            }
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Prunes old transitions at start and daily at 03:17 UTC.
async fn start_housekeeping(
    store: Store,
    retention: Duration,
) -> anyhow::Result<Option<tokio_cron_scheduler::JobScheduler>> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    prune(&store, retention).await;
    let sched = JobScheduler::new().await?;
    let s = store.clone();
    sched
        .add(Job::new_async("0 17 3 * * *", move |_, _| {
            let s = s.clone();
            Box::pin(async move { prune(&s, retention).await })
        })?)
        .await?;
    sched.start().await?;
    Ok(Some(sched))
}

async fn prune(store: &Store, retention: Duration) {
    let cutoff =
        chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    match store.prune(cutoff).await {
        Ok(0) => {}
        Ok(n) => info!(rows = n, "pruned transitions older than storage.retention"),
        Err(e) => warn!("retention pruning failed (will retry tomorrow): {e:#}"),
    }
}

/// A watch channel that turns true on SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
        }
        let _ = tx.send(true);
        // A second signal while stopping means "now".
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        warn!("second signal: exiting without waiting");
        std::process::exit(130);
    });
    Ok(rx)
}
