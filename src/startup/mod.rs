//! `recwatch run`, the wiring: opens the store, arms the poller, the delivery worker,
//! housekeeping and the HTTP endpoint; tells systemd when it is ready and pings its watchdog
//! while the poll loop is alive; re-reads the configuration on SIGHUP or when the file changes
//! (`reload.rs`); and turns SIGINT/SIGTERM into a clean stop ([`shutdown_on_signals`]).
//!
//! It owns its database (a kernel lock beside it, see [`crate::dbfile::lock`]): a second
//! `run` on the same file refuses to start. The configuration in force is one
//! `watch<Arc<Config>>`: the reloader replaces it, the HTTP endpoint and the delivery worker
//! read it (the poller gets each new one as a command, with the client built from it). Every
//! task it starts is spawned on one [`TaskTracker`], so the shutdown waits for each of them,
//! as mini-redis does. The tasks are supervised: a panicking delivery worker is restarted, a
//! file check notices the database being deleted, replaced or made read-only, and if the poll
//! loop itself dies the daemon stops with an error so the service manager restarts it.

mod housekeeping;
mod reload;
mod roles;
mod signals;
mod supervise;

pub use signals::{shutdown_on_signals, shutdown_on_signals_then};

use crate::config::Config;
use crate::dbfile::lock::OwnerLock;
use crate::leader::Leadership;
use crate::outbox::Outbox;
use crate::poller::Event;
use crate::runtime_list::Watchlist;
use crate::store::Store;
use crate::systemd;
use crate::vitals::Vitals;
use anyhow::Context;
use recwatch_rtc::client::RtcClient;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::signal::unix::Signal;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

/// A running daemon's handles, for the demo and tests that run it in-process.
pub struct Running {
    pub events: broadcast::Sender<Event>,
    pub store: Store,
    /// Where the callback receiver listens (with `callback.listen`), its port resolved.
    pub callback_addr: Option<std::net::SocketAddr>,
    /// This instance's role as it changes (see [`crate::leader`]).
    pub leadership: Leadership,
}

/// Runs until `shutdown` turns true. `on_start` is called once this instance's role is known
/// and, when it is the active one, polling is armed.
pub async fn run(
    config: Config,
    shutdown: watch::Receiver<bool>,
    on_start: impl FnOnce(&Running),
) -> anyhow::Result<()> {
    crate::vitals::install_panic_hook();
    // Before anything slow: SIGHUP's default action is to terminate the process.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    prepare_process(&config);
    // On SQLite, one daemon per database, decided before the schema is touched: a second one
    // refuses here, and two started at once never race each other's migrations. On
    // PostgreSQL several may run; the migrator's advisory lock orders their migrations.
    let (store, owner) = Store::open_for(&config.storage, "run").await?;
    // Bound before READY: a taken port stops the start (exit 69) rather than leaving a
    // daemon whose /readyz and /metrics silently vanished. After the store, so a second
    // daemon on the same database is told about the database first.
    let listener = match config.http.listen {
        Some(addr) => Some(crate::http::bind_http(addr).await?),
        None => None,
    };
    let callback = match config.callback.listen {
        Some(addr) => Some(crate::callback::bind(addr).await?),
        None => None,
    };
    let callback_addr = callback.as_ref().and_then(|l| l.local_addr().ok());
    // Built here only to fail the start on a client that cannot be made; each term of
    // leadership builds its own from the configuration then in force.
    RtcClient::new(&config.api.client_config()).context("cannot build the HTTP client")?;
    let mut daemon = Daemon::start(
        config,
        store.clone(),
        [listener, callback],
        hangup,
        shutdown,
    )
    .await?;
    daemon.announce(on_start, &owner, callback_addr).await;
    let result = daemon.until_stopped().await;
    daemon.shut_down().await;
    // Every task has ended: the WAL goes into the file, so the file alone (a copy, a backup
    // taken with `cp` after the stop) is the whole database.
    if let Err(e) = store.db().checkpoint().await {
        warn!(
            "the WAL checkpoint at shutdown failed: {e}; the file needs its -wal beside it until the next start"
        );
    }
    store.close().await;
    // Released last: nothing of this process touches the database any more.
    drop(owner);
    info!("stopped");
    result
}

/// What the process needs before it opens anything: the configuration's warnings said, and
/// the open-files limit raised.
fn prepare_process(config: &Config) {
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
}

/// What every task of the daemon is started with.
struct Shared {
    /// Every task `run` starts is spawned here, so the shutdown waits for each of them.
    tasks: TaskTracker,
    /// Turns true on the caller's shutdown, or when the poll loop dies; every task stops on
    /// it. Shared with the task that relays the caller's shutdown.
    stop_tx: Arc<watch::Sender<bool>>,
    stop: watch::Receiver<bool>,
    /// The configuration in force (see the module's doc).
    config: watch::Receiver<Arc<Config>>,
    store: Store,
    /// The poller's events and the outbox's, in one stream.
    events: broadcast::Sender<Event>,
    vitals: Arc<Vitals>,
}

/// A started daemon: what it runs and what stopping it needs.
struct Daemon {
    shared: Shared,
    leadership: Leadership,
    /// Stops the leadership loop: set only once the active work has stopped, so the lease is
    /// renewed while it drains and released after it.
    leader_stop: watch::Sender<bool>,
    /// Completes once the first term's polling is armed (taken by [`Daemon::announce`]).
    armed: Option<oneshot::Receiver<()>>,
    /// The role switch (`roles`): ends with an error if a term's poll loop dies.
    roles: JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    /// Starts every task, in the order they must start: the leadership loop, the tasks that
    /// run whatever the role (the loops before the endpoints that read them), then the role
    /// switch, which runs the poller, the delivery worker, the forwarder and housekeeping
    /// while this instance is active.
    async fn start(
        config: Config,
        store: Store,
        // The HTTP endpoint's listener and the callback receiver's, each bound before the start.
        listeners: [Option<TcpListener>; 2],
        hangup: Signal,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Daemon> {
        // Built once here, so a broken channel configuration fails the start, not a takeover.
        crate::deliver::Worker::new(store.clone(), &config, Arc::new(tokio::sync::Notify::new()))?;
        let watchlist = Watchlist::load(store.clone())
            .await
            .context("cannot read the run-time watch list from the database")?;
        let budgets = crate::poller::Budgets::new(&config);
        let (shared, config_tx) = Shared::new(config, store, *shutdown.borrow());
        let (leader_stop, leader_stopped) = watch::channel(false);
        // SQLite: the owner lock already makes this the only `run`, so the lease is taken
        // whatever it says (a kill -9 left it unexpired): one code path, no wait.
        let exclusive = shared.store.db().pg_pool().is_none();
        let (leadership, leading) = crate::leader::run(
            shared.store.clone(),
            crate::leader::TIMING,
            exclusive,
            shared.vitals.clone(),
            leader_stopped,
        );
        shared.relay_shutdown(shutdown);
        shared.tasks.spawn(leading);
        let parts = shared.start_services(listeners, hangup, config_tx, watchlist, budgets);
        let (armed_tx, armed) = oneshot::channel();
        let roles = shared.tasks.spawn(roles::switch(
            parts,
            leadership.terms(),
            shared.stop.clone(),
            Some(armed_tx),
        ));
        Ok(Daemon {
            shared,
            leadership,
            leader_stop,
            armed: Some(armed),
            roles,
        })
    }
}

impl Shared {
    /// What every task shares, before any starts: the stop signal (already set if the caller
    /// asked for a stop), the event stream, the vitals (standby until the lease says
    /// otherwise) and the configuration in force, with the sender a reload sets it through.
    fn new(config: Config, store: Store, stopped: bool) -> (Shared, watch::Sender<Arc<Config>>) {
        let tasks = TaskTracker::new();
        let (stop_tx, stop) = watch::channel(stopped);
        let stop_tx = Arc::new(stop_tx);
        let (events, _) = broadcast::channel(1024);
        let liveness = Arc::new(crate::vitals::Liveness::default());
        let vitals = Arc::new(Vitals::new(liveness, store.health().clone()));
        // Standby until the lease says otherwise.
        vitals.set_leading(false);
        let (config_tx, config_rx) = watch::channel(Arc::new(config));
        let shared = Shared {
            tasks,
            stop_tx,
            stop,
            config: config_rx,
            store,
            events,
            vitals,
        };
        (shared, config_tx)
    }

    /// Starts the tasks that run whatever the role: the file check, the heartbeat, the watch
    /// list's follower, the HTTP endpoint, the callback receiver, the watchdog and the
    /// reloader. Returns what an active term runs with.
    fn start_services(
        &self,
        [listener, callback]: [Option<TcpListener>; 2],
        hangup: Signal,
        config_tx: watch::Sender<Arc<Config>>,
        watchlist: Watchlist,
        budgets: crate::poller::Budgets,
    ) -> roles::TermParts {
        let outbox = Outbox::new().with_events(self.events.clone());
        let hints = Arc::new(crate::poller::Hints::new());
        let forward_wake = Arc::new(tokio::sync::Notify::new());
        self.tasks
            .spawn(supervise::check_file(self.store.clone(), self.stop.clone()));
        self.start_heartbeat(outbox.clone());
        // Changes other processes make to the run-time watch list reach the poller from here.
        self.tasks
            .spawn(watchlist.clone().follow(self.stop.clone()));
        if let Some(listener) = listener {
            let first = budgets.of(&self.config.borrow().api);
            self.start_http(listener, &first, outbox.clone(), &watchlist);
        }
        if let Some(listener) = callback {
            self.tasks.spawn(crate::callback::serve(
                listener,
                self.config.clone(),
                self.store.clone(),
                hints.clone(),
                forward_wake.clone(),
                watchlist.clone(),
                self.stop.clone(),
            ));
        }
        self.start_watchdog();
        self.start_reloader(hangup, config_tx);
        roles::TermParts {
            config: self.config.clone(),
            store: self.store.clone(),
            outbox,
            events: self.events.clone(),
            vitals: self.vitals.clone(),
            hints,
            budgets,
            watchlist,
            forward_wake,
        }
    }

    /// The caller's shutdown sets `stop`. The relay also ends when `stop` is set otherwise
    /// (the poll loop died), so the shutdown never waits for it.
    fn relay_shutdown(&self, mut shutdown: watch::Receiver<bool>) {
        let (stop_tx, mut stop) = (self.stop_tx.clone(), self.stop.clone());
        self.tasks.spawn(async move {
            tokio::select! {
                // Also when the caller's sender is gone: nobody is left to ask for a stop.
                _ = shutdown.wait_for(|s| *s) => { let _ = stop_tx.send(true); }
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }

    fn start_http(
        &self,
        listener: TcpListener,
        budget: &Arc<crate::poller::Budget>,
        outbox: Outbox,
        watchlist: &Watchlist,
    ) {
        let state = crate::http::AppState {
            store: self.store.clone(),
            config: self.config.clone(),
            liveness: self.vitals.liveness.clone(),
            vitals: self.vitals.clone(),
            outbox,
            budget: budget.clone(),
            metrics: crate::http::metrics_handle(),
            watchlist: watchlist.clone(),
        };
        self.tasks.spawn(crate::http::upkeep_until(
            state.metrics.clone(),
            self.stop.clone(),
        ));
        self.tasks
            .spawn(crate::http::serve(listener, state, self.stop.clone()));
    }

    /// The dead man's switch: pings `heartbeat.url` while `/readyz` would say ready. Runs
    /// without a URL too, so a reload can set one.
    fn start_heartbeat(&self, outbox: Outbox) {
        let client = match reqwest::Client::builder()
            .user_agent(concat!("recwatch/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                warn!("heartbeat: cannot build an HTTP client, no pings will be sent: {e}");
                return;
            }
        };
        let (store, vitals) = (self.store.clone(), self.vitals.clone());
        let ready = move || {
            let (store, vitals, outbox) = (store.clone(), vitals.clone(), outbox.clone());
            async move { crate::http::readiness_problems(&store, &vitals, &outbox).await }
        };
        self.tasks.spawn(crate::heartbeat::run(
            self.config.clone(),
            ready,
            crate::heartbeat::pinger(client),
            self.stop.clone(),
        ));
    }

    fn start_watchdog(&self) {
        let watched = self.vitals.clone();
        self.tasks.spawn(systemd::watchdog_task(
            move || !watched.restart_would_help(crate::http::LIVENESS_LIMIT_MS),
            self.stop.clone(),
        ));
    }

    fn start_reloader(&self, hangup: Signal, config: watch::Sender<Arc<Config>>) {
        let source = self.config.borrow().source.clone();
        match source {
            Some(path) => {
                let reloader = reload::Reloader { path, config };
                self.tasks
                    .spawn(reloader.run(self.tasks.clone(), hangup, self.stop.clone()));
            }
            None => {
                self.tasks
                    .spawn(reload::ignore_hangups(hangup, self.stop.clone()));
            }
        }
    }
}

impl Daemon {
    /// READY=1 once the database is open and this instance's role is known (the active one:
    /// once polling is armed); then `on_start`.
    async fn announce(
        &mut self,
        on_start: impl FnOnce(&Running),
        owner: &Option<OwnerLock>,
        callback_addr: Option<std::net::SocketAddr>,
    ) {
        let Some(armed) = self.armed.take() else {
            return;
        };
        self.leadership.decided().await;
        let active = self.leadership.terms().borrow().is_some();
        if active && armed.await.is_err() {
            // The term ended before it armed: `until_stopped` says why, or a standby waits.
            if self.roles.is_finished() {
                return;
            }
        }
        let config = self.shared.config.borrow().clone();
        let role = match self.leadership.terms().borrow().as_ref() {
            Some(t) => format!("active (lease epoch {})", t.epoch),
            None => "standby".to_string(),
        };
        systemd::ready();
        systemd::status(&format!("{role}, watching {} jobs", config.jobs.len()));
        on_start(&Running {
            events: self.shared.events.clone(),
            store: self.shared.store.clone(),
            callback_addr,
            leadership: self.leadership.clone(),
        });
        info!(
            database = %self.shared.store.location(),
            lock = %owner
                .as_ref()
                .map_or_else(|| "none (PostgreSQL)".to_string(), |o| o.path().display().to_string()),
            jobs = config.jobs.len(),
            endpoint = %config.api.endpoint,
            auth = %config.api.auth.describe(),
            role = %role,
            "recwatch running"
        );
        // Start-up's transient peak (the watch list parsed, the jobs' rows read) is freed by
        // now: handed back, and whatever later work frees, every little while.
        self.shared
            .tasks
            .spawn(crate::memory::trim_until(self.shared.stop.clone()));
    }

    /// Waits for the stop, or for a term's poll loop to end by itself, and returns how it
    /// ended.
    async fn until_stopped(&mut self) -> anyhow::Result<()> {
        let mut stopping = self.shared.stop.clone();
        let ended = tokio::select! {
            r = &mut self.roles => Some(r),
            _ = stopping.wait_for(|s| *s) => None,
        };
        systemd::stopping();
        let ended = match ended {
            Some(r) => r,
            None => (&mut self.roles).await,
        };
        let result = match ended {
            Ok(Ok(())) => Ok(()),
            // The poll loop ended before anyone asked it to: recwatch cannot do its job, and
            // a restart is what cures that. Stop the rest and exit with an error.
            Ok(Err(why)) => {
                error!(
                    "the poll loop stopped unexpectedly ({why:#}); stopping so the service manager restarts recwatch"
                );
                self.shared.vitals.task_died("poll loop");
                let _ = self.shared.stop_tx.send(true);
                Err(anyhow::anyhow!(
                    "the poll loop stopped unexpectedly: {why:#}"
                ))
            }
            Err(e) => {
                let _ = self.shared.stop_tx.send(true);
                Err(anyhow::anyhow!("the role switch failed: {e}"))
            }
        };
        if let Err(e) = &result {
            error!("poller failed: {e:#}");
        }
        result
    }

    /// Waits for every task `run` started. The active work has stopped by now (the role
    /// switch stops it before it returns): sends in flight got deliver::SHUTDOWN_GRACE to
    /// finish, the rest stay pending for the next leader. Then the lease is released, so a
    /// standby takes over at once, and the leadership loop stops.
    async fn shut_down(self) {
        self.leadership.release(&self.shared.store).await;
        let _ = self.leader_stop.send(true);
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Auth, JobConfig};
    use crate::secret::Secret;
    use recwatch_sim::{SimAuth, SimOptions, Simulator};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    use tokio::sync::broadcast::error::TryRecvError;

    /// A simulator with two jobs that stay RUNNING, and a configuration watching them with
    /// its database in `dir`.
    async fn setup(dir: &std::path::Path) -> (Simulator, Config) {
        let sim = recwatch_sim::start(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            SimOptions {
                jobs: 2,
                scripted: false,
                auth: SimAuth::AkSk {
                    access_key: "AK".into(),
                    secret_key: "SK".into(),
                },
                project_id: Some("p".into()),
                ..SimOptions::default()
            },
        )
        .await
        .unwrap();
        let mut config = Config::defaults(Auth::AkSk {
            access_key: "AK".into(),
            secret_key: Secret::new("SK"),
            security_token: None,
        });
        config.api.endpoint = sim.url().parse().unwrap();
        config.api.project_id = Some("p".into());
        config.storage.path = dir.join("recwatch.db");
        config.jobs = (0..2)
            .map(|i| JobConfig {
                account: None,
                kind: crate::domain::JobKind::Individual,
                key: crate::domain::JobKey::new("demo-app", recwatch_sim::job_id(i)),
                name: None,
                interval: None,
                notify: None,
            })
            .map(Arc::new)
            .collect();
        (sim, config)
    }

    /// `run` returns only once every task it started has ended: by then nothing is left that
    /// could send on the daemon's event stream (the poll loop, the forwarder, the outbox's
    /// holders), so a receiver of it finds the stream closed, not merely empty.
    #[tokio::test]
    async fn run_returns_after_every_task_it_started_has_ended() {
        let dir = tempfile::tempdir().unwrap();
        let (_sim, config) = setup(dir.path()).await;
        let (stop, shutdown) = watch::channel(false);
        let (started, events) = oneshot::channel();
        let daemon = tokio::spawn(run(config, shutdown, move |r: &Running| {
            let _ = started.send(r.events.subscribe());
        }));
        let mut events = events.await.expect("the daemon started");
        // A first poll's transition: the poll loop and the forwarder are at work.
        tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .expect("an event within 60 s")
            .expect("the stream is open while the daemon runs");
        stop.send(true).unwrap();
        daemon.await.unwrap().unwrap();
        loop {
            match events.try_recv() {
                Ok(_) | Err(TryRecvError::Lagged(_)) => continue,
                Err(TryRecvError::Closed) => break,
                Err(TryRecvError::Empty) => {
                    panic!("`run` returned while a task that can send events still runs")
                }
            }
        }
    }

    /// The shutdown cannot finish while a task on the daemon's tracker is still running after
    /// the stop (as a send in its grace period, or a prune between two batches, would be);
    /// it finishes once that task has.
    #[tokio::test]
    async fn the_shutdown_waits_for_a_task_still_running_after_the_stop() {
        let dir = tempfile::tempdir().unwrap();
        let (_sim, config) = setup(dir.path()).await;
        let store = Store::open(&config.storage.path).await.unwrap();
        let hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).unwrap();
        let (stop, shutdown) = watch::channel(false);
        let mut daemon = Daemon::start(config, store.clone(), [None, None], hangup, shutdown)
            .await
            .unwrap();
        // A task that outlives the stop until it is let go.
        let (let_go, held) = oneshot::channel::<()>();
        let ended = Arc::new(AtomicBool::new(false));
        let mut stopped = daemon.shared.stop.clone();
        let flag = ended.clone();
        daemon.shared.tasks.spawn(async move {
            let _ = stopped.wait_for(|s| *s).await;
            let _ = held.await;
            flag.store(true, Ordering::SeqCst);
        });
        stop.send(true).unwrap();
        daemon.until_stopped().await.unwrap();
        let mut shutting = Box::pin(daemon.shut_down());
        // Everything else stops promptly; the shutdown then waits for the held task alone.
        for _ in 0..100 {
            let polled = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(shutting.as_mut().poll(cx).is_ready())
            })
            .await;
            assert!(
                !polled,
                "the shutdown finished while a tracked task was running"
            );
            tokio::task::yield_now().await;
        }
        let_go.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(60), shutting)
            .await
            .expect("the shutdown finishes once the task has");
        assert!(ended.load(Ordering::SeqCst), "the held task ran to its end");
        store.close().await;
    }
}
