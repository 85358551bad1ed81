//! `recwatch run`: opens the store, arms the poller, the delivery worker, housekeeping and the
//! HTTP endpoint; tells systemd when it is ready and pings its watchdog while the poll loop is
//! alive; re-reads the configuration on SIGHUP or when the file changes; and turns
//! SIGINT/SIGTERM into a clean stop.
//!
//! It owns its database (a kernel lock beside it, see [`crate::storage::lock`]): a second `run` on the
//! same file refuses to start. The tasks it starts are supervised: a panicking delivery
//! worker is restarted, a file check notices the database being deleted, replaced or made
//! read-only, and if the poll loop itself dies the daemon stops with an error so the service
//! manager restarts it.

use crate::config::{self, Config};
use crate::outbox::Outbox;
use crate::poller::{Command, Event, Poller};
use crate::storage::lock::OwnerLock;
use crate::store::Store;
use crate::systemd;
use crate::vitals::Vitals;
use anyhow::Context;
use recwatch_rtc::client::RtcClient;
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

/// How often the database file is checked for having been deleted, replaced or made
/// read-only (`/readyz` says so within 10 s).
const FILE_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Runs until `shutdown` turns true. `on_start` is called once polling is armed.
pub async fn run(
    config: Config,
    shutdown: watch::Receiver<bool>,
    on_start: impl FnOnce(&Running),
) -> anyhow::Result<()> {
    crate::vitals::install_panic_hook();
    // Before anything slow: SIGHUP's default action is to terminate the process.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    for w in config.warnings() {
        warn!("{w}");
    }
    // Before anything opens descriptors: the usual soft limit (1024) is too low for the HTTP
    // endpoint's connections beside outbound requests; the hard limit is ours to take.
    match crate::http::raise_nofile_limit() {
        Ok((before, after)) if before < after => {
            info!("open-files limit raised from {before} to {after}")
        }
        Ok(_) => {}
        // Under the systemd unit the seccomp filter refuses this; LimitNOFILE= has set it.
        Err(e) => debug!("open-files limit left as it is: {e}"),
    }
    // One daemon per database, decided before the schema is touched: a second one refuses
    // here, and two started at once never race each other's migrations.
    let owner = OwnerLock::acquire(&config.storage.path, "run").await?;
    let store = Store::open_owned(&config.storage.path, &owner).await?;
    // Bound before READY: a taken port stops the start (exit 69) rather than leaving a
    // daemon whose /readyz and /metrics silently vanished. After the store, so a second
    // daemon on the same database is told about the database first.
    let listener = match config.http.listen {
        Some(addr) => Some(crate::http::bind_http(addr).await?),
        None => None,
    };
    let client =
        RtcClient::new(&config.api.client_config()).context("cannot build the HTTP client")?;
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
    // Every task stops on `stop`: the caller's shutdown, or the poll loop dying.
    let (stop_tx, stop) = watch::channel(*shutdown.borrow());
    let stop_tx = Arc::new(stop_tx);
    {
        let (mut shutdown, stop_tx) = (shutdown.clone(), stop_tx.clone());
        tokio::spawn(async move {
            let _ = shutdown.wait_for(|s| *s).await;
            let _ = stop_tx.send(true);
        });
    }

    let liveness = poller.liveness();
    let vitals = Arc::new(Vitals::new(liveness.clone(), store.health().clone()));
    let shared_config = Arc::new(RwLock::new(config.clone()));
    let (housekeeping, first_prune) =
        start_housekeeping(store.clone(), config.storage.retention, stop.clone()).await?;
    let (notify_tx, notify_rx) = watch::channel(config.notify.clone());
    // Built once here, so a broken channel configuration fails the start, not a restart.
    let worker = crate::deliver::Worker::new(store.clone(), &config, outbox.wake_handle())?;
    let worker_task = tokio::spawn(supervise_worker(
        worker,
        WorkerParts {
            store: store.clone(),
            config: shared_config.clone(),
            wake: outbox.wake_handle(),
            vitals: vitals.clone(),
        },
        stop.clone(),
        notify_rx,
    ));
    tokio::spawn(check_file(store.clone(), stop.clone()));

    if let Some(listener) = listener {
        let state = crate::http::AppState {
            store: store.clone(),
            config: shared_config.clone(),
            liveness: liveness.clone(),
            vitals: vitals.clone(),
            outbox: outbox.clone(),
            budget: poller.budget(),
            metrics: crate::http::metrics_handle(),
        };
        tokio::spawn(crate::http::serve(listener, state, stop.clone()));
    }
    let watched = vitals.clone();
    tokio::spawn(systemd::watchdog_task(
        move || !watched.restart_would_help(crate::http::LIVENESS_LIMIT_MS),
        stop.clone(),
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
            tokio::spawn(reloader.run(hangup, stop.clone()))
        }
        None => tokio::spawn(async move {
            let mut hangup = hangup;
            while hangup.recv().await.is_some() {
                info!("SIGHUP ignored: this configuration was not read from a file");
            }
        }),
    };

    let mut poll_task = tokio::spawn(poller.run(stop.clone()));
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
            lock = %owner.path().display(),
            jobs = config.jobs.len(),
            endpoint = %config.api.endpoint,
            auth = %config.api.auth.describe(),
            "recwatch running"
        );
    }
    let mut stopping = stop.clone();
    let result = tokio::select! {
        r = &mut poll_task => Some(r),
        _ = stopping.wait_for(|s| *s) => None,
    };
    systemd::stopping();
    let result = match result {
        // The poll loop ended before anyone asked it to: recwatch cannot do its job, and a
        // restart is what cures that. Stop the rest and exit with an error.
        Some(r) if !*stop.borrow() => {
            let why = match r {
                Ok(Ok(())) => "it returned".to_string(),
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) if e.is_panic() => {
                    format!(
                        "it panicked: {}",
                        crate::vitals::panic_message(e.into_panic().as_ref())
                    )
                }
                Err(e) => e.to_string(),
            };
            error!(
                "the poll loop stopped unexpectedly ({why}); stopping so the service manager restarts recwatch"
            );
            vitals.task_died("poll loop");
            let _ = stop_tx.send(true);
            Err(anyhow::anyhow!("the poll loop stopped unexpectedly: {why}"))
        }
        Some(r) => r
            .map_err(|e| anyhow::anyhow!("the poll loop failed: {e}"))
            .and_then(|r| r),
        None => match poll_task.await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("the poll loop failed while stopping: {e}")),
        },
    };
    if let Err(e) = &result {
        error!("poller failed: {e:#}");
    }
    // Sends in flight get deliver::SHUTDOWN_GRACE to finish; the rest stay pending for the
    // next start, which picks them up at once.
    let _ = worker_task.await;
    reloads.abort();
    drop(notify_tx);
    let mut housekeeping = housekeeping;
    let _ = housekeeping.shutdown().await;
    // A prune stops between two of its batches once shutdown is set.
    let _ = first_prune.await;
    store.close().await;
    // Released last: nothing of this process touches the database any more.
    drop(owner);
    info!("stopped");
    result
}

/// What a restarted delivery worker is built from.
struct WorkerParts {
    store: Store,
    config: Arc<RwLock<Config>>,
    wake: Arc<tokio::sync::Notify>,
    vitals: Arc<Vitals>,
}

/// Runs the delivery worker until `stop`; if it panics, logs it and starts a new one (from
/// the configuration as it is now) after a pause that grows while it keeps panicking.
async fn supervise_worker(
    first: crate::deliver::Worker,
    parts: WorkerParts,
    stop: watch::Receiver<bool>,
    notify: watch::Receiver<crate::config::NotifyConfig>,
) {
    let mut worker = Some(first);
    let mut pause = Duration::from_secs(1);
    loop {
        let w = match worker.take() {
            Some(w) => w,
            None => {
                let config = parts.config.read().expect("config lock").clone();
                match crate::deliver::Worker::new(parts.store.clone(), &config, parts.wake.clone())
                {
                    Ok(w) => w,
                    Err(e) => {
                        error!("cannot restart the delivery worker: {e:#}");
                        parts.vitals.task_died("delivery worker");
                        return;
                    }
                }
            }
        };
        let started = tokio::time::Instant::now();
        match tokio::spawn(w.run(stop.clone(), notify.clone())).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                let why = crate::vitals::panic_message(e.into_panic().as_ref());
                error!(
                    "the delivery worker panicked ({why}); restarting it in {}",
                    crate::config::format_duration(pause)
                );
                metrics::counter!("recwatch_task_panics_total", "task" => "delivery").increment(1);
            }
            Err(_) => return,
        }
        if started.elapsed() > Duration::from_secs(300) {
            pause = Duration::from_secs(1);
        }
        let mut s = stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = s.wait_for(|s| *s) => return,
        }
        pause = (pause * 2).min(Duration::from_secs(60));
    }
}

/// Checks every [`FILE_CHECK_EVERY`] that the database file is still the one open, and
/// writable; [`crate::store::StoreHealth`] logs a change and `/readyz` reports it.
async fn check_file(store: Store, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(FILE_CHECK_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let s = store.clone();
        // Blocking calls (stat, access): off the runtime's threads, in case the file system hangs.
        if let Ok(problem) = tokio::task::spawn_blocking(move || s.check_file()).await {
            store.health().set_file_problem(problem);
        }
    }
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
            Ok(new) => match RtcClient::new(&new.api.client_config()) {
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

/// Prunes what is older than `storage.retention` once at start and daily at 03:17 UTC. The
/// start's prune runs beside polling, not before it: on a big database it takes a while, and
/// its short batches let the poller's writes through.
async fn start_housekeeping(
    store: Store,
    retention: Duration,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(
    tokio_cron_scheduler::JobScheduler,
    tokio::task::JoinHandle<()>,
)> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let first = tokio::spawn({
        let store = store.clone();
        let stop = shutdown.clone();
        async move { prune(&store, retention, &stop).await }
    });
    let sched = JobScheduler::new().await?;
    sched
        .add(Job::new_async("0 17 3 * * *", move |_, _| {
            let (s, stop) = (store.clone(), shutdown.clone());
            Box::pin(async move { prune(&s, retention, &stop).await })
        })?)
        .await?;
    sched.start().await?;
    Ok((sched, first))
}

async fn prune(store: &Store, retention: Duration, stop: &watch::Receiver<bool>) {
    // A retention longer than the calendar reaches back keeps everything.
    let Some(cutoff) = crate::rules::checked_before(chrono::Utc::now(), retention) else {
        return;
    };
    match store.prune(cutoff, crate::store::PRUNE_BATCH, stop).await {
        Ok(p) if p.rows() == 0 => {}
        Ok(p) => info!(
            alerts = p.alerts,
            deliveries = p.deliveries,
            episodes = p.episodes,
            transitions = p.transitions,
            batches = p.batches,
            longest_batch_ms = p.longest_batch.as_millis() as u64,
            interrupted = p.stopped,
            "pruned rows older than storage.retention (alerts with a pending delivery are kept)"
        ),
        Err(e) => warn!("retention pruning failed (will retry tomorrow): {e:#}"),
    }
}

/// A watch channel that turns true on SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> anyhow::Result<watch::Receiver<bool>> {
    shutdown_on_signals_then(|| {})
}

/// [`shutdown_on_signals`], running `on_abort` before the second signal exits at once (the
/// demo removes its temporary directory there: nothing else would).
pub fn shutdown_on_signals_then(
    on_abort: impl FnOnce() + Send + 'static,
) -> anyhow::Result<watch::Receiver<bool>> {
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
        on_abort();
        std::process::exit(130);
    });
    Ok(rx)
}
