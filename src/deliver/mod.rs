//! The delivery worker: sends what the outbox holds, retries, and never counts a delivery as
//! sent before the receiver accepted it.
//!
//! Each channel has its own lane (`lane`): its own task and its own limit of sends in flight,
//! so a hung webhook or a silent SMTP server delays nothing but itself. Within a channel the
//! notices of one episode go out in order. When to retry and when to give up is decided by
//! pure functions (`policy`); the `deliveries` table is the queue (`store::deliveries`).
//!
//! A crash between a send and its `sent` mark means the same alert, with the same id, goes
//! out again on the next start: at-least-once, and receivers de-duplicate on the id
//! (webhook-id, Message-ID). Nothing is deleted unsent: a delivery still failing at
//! `notify.max_age` is marked dead with its last error.
//!
//! `forward` relays record callbacks to an app's `forward_to` from its own queue (the
//! `forwards` table), with the same retry policy.

pub mod forward;
pub mod group;
mod lane;
pub mod pace;
pub mod policy;

pub use policy::{AfterFailure, Clock, DeathCause, Policy, after_failure, retry_delay};

use crate::config::Config;
use crate::hold::config::MaintenanceWindow;
use crate::hold::deliver as hold;
use crate::notify::Channel;
use crate::store::Store;
/// The `deliveries` table as a queue; its statements live in the store.
use crate::store::deliveries as queue;
use lane::{Lane, Settings};
use queue::Filter;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

/// How long sends in flight may finish after a stop before they are abandoned (they stay
/// pending and are sent again, with the same id, on the next start).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long `poll-once` waits for the alerts it raised to be delivered.
pub const POLL_ONCE_WAIT: Duration = Duration::from_secs(30);

/// One channel's lane and what steers it.
struct Entry {
    /// Replaced on reload; dropping it stops the lane.
    settings: watch::Sender<Arc<Settings>>,
    /// The lane's own wake-up: the outbox's is fanned out to every lane.
    wake: Arc<Notify>,
    /// The lane itself until `run` gives it its task.
    lane: Option<Lane>,
}

pub struct Worker {
    store: Store,
    clock: Clock,
    /// Rung by the outbox when it commits new deliveries.
    wake: Arc<Notify>,
    lanes: BTreeMap<String, Entry>,
    /// Only these alerts (a JSON array of ids), for `poll-once`; None: every alert.
    only: Option<Arc<str>>,
    /// The maintenance windows in force (replaced on reload), read by the gate and the watch.
    windows: watch::Sender<Arc<Vec<MaintenanceWindow>>>,
    /// What every lane asks before a send (silences, windows).
    gate: hold::Gate,
}

impl Worker {
    pub fn new(store: Store, config: &Config, wake: Arc<Notify>) -> anyhow::Result<Worker> {
        Worker::build(store, config, wake, None)
    }

    fn build(
        store: Store,
        config: &Config,
        wake: Arc<Notify>,
        only: Option<Arc<str>>,
    ) -> anyhow::Result<Worker> {
        let (windows, rx) = watch::channel(Arc::new(config.maintenance.clone()));
        let mut worker = Worker {
            gate: hold::Gate::new(store.clone(), rx),
            store,
            clock: Clock::system(),
            wake,
            lanes: BTreeMap::new(),
            only,
            windows,
        };
        worker.set_channels(config)?;
        Ok(worker)
    }

    /// The clock the scheduler reads (a test's, to make it jump).
    pub fn with_clock(mut self, clock: Clock) -> Worker {
        for e in self.lanes.values_mut() {
            if let Some(l) = e.lane.as_mut() {
                l.clock = clock.clone();
            }
        }
        self.clock = clock;
        self
    }

    fn lane(
        &self,
        name: &str,
        settings: &watch::Sender<Arc<Settings>>,
        wake: &Arc<Notify>,
    ) -> Lane {
        Lane::new(
            Filter {
                channel: name.to_string(),
                only: self.only.clone(),
            },
            self.store.clone(),
            self.clock.clone(),
            settings.subscribe(),
            wake.clone(),
            self.gate.clone(),
        )
    }

    /// Builds the channels of `config` and gives each a lane, or new settings if it has one;
    /// a lane whose channel is gone stops (after its sends in flight).
    pub fn set_channels(&mut self, config: &Config) -> anyhow::Result<()> {
        let channels = Channel::of_config(config)?;
        let config = &config.notify;
        let policy = Policy::from_config(config);
        let mut next = BTreeMap::new();
        for c in channels {
            let name = c.name().to_string();
            let settings = Arc::new(Settings {
                channel: Arc::new(c),
                policy,
                group_wait: config.group_wait,
            });
            let entry = match self.lanes.remove(&name) {
                Some(e) => {
                    e.settings.send_replace(settings);
                    e
                }
                None => {
                    let (tx, _) = watch::channel(settings);
                    let wake = Arc::new(Notify::new());
                    let lane = self.lane(&name, &tx, &wake);
                    Entry {
                        settings: tx,
                        wake,
                        lane: Some(lane),
                    }
                }
            };
            next.insert(name, entry);
        }
        // What is left in self.lanes is removed: dropping the entries stops those lanes.
        self.lanes = next;
        Ok(())
    }

    /// One step of every lane, side by side: attempts what is due now and waits for each
    /// outcome; returns how many were attempted. Tests drive the worker with it.
    pub async fn step(&mut self) -> anyhow::Result<usize> {
        let mut set = JoinSet::new();
        for (name, e) in self.lanes.iter_mut() {
            if let Some(mut lane) = e.lane.take() {
                let name = name.clone();
                set.spawn(async move {
                    let n = lane.step().await;
                    (name, lane, n)
                });
            }
        }
        let mut total = 0;
        let mut first_error = None;
        while let Some(joined) = set.join_next().await {
            let (name, lane, n) = joined?;
            if let Some(e) = self.lanes.get_mut(&name) {
                e.lane = Some(lane);
            }
            match n {
                Ok(n) => total += n,
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    /// Runs until shutdown: every lane in its own task, pending deliveries picked up at once
    /// on start, then whenever the outbox commits new ones, a retry falls due, or a reload
    /// changes the channels. A lane that panics is logged and started again.
    pub async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        mut reload: watch::Receiver<Arc<Config>>,
    ) {
        self.bury_orphans().await;
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut names: HashMap<tokio::task::Id, String> = HashMap::new();
        self.spawn_lanes(&mut tasks, &mut names, &shutdown);
        // Held notifications: released every second (silences end in the database, maybe
        // by another process) and at once when a maintenance window ends.
        let (active_tx, mut active_windows) = watch::channel(hold::ActiveWindows::new());
        let clock = self.clock.clone();
        let windows = hold::watch_windows(
            self.windows.subscribe(),
            Arc::new(move || clock.now()),
            active_tx,
            shutdown.clone(),
        );
        tokio::pin!(windows);
        let mut windows_done = false;
        let mut release = tokio::time::interval(Duration::from_secs(1));
        release.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                changed = shutdown.changed() => if changed.is_err() { break },
                () = &mut windows, if !windows_done => windows_done = true,
                _ = release.tick() => self.release_held().await,
                Ok(()) = active_windows.changed() => self.release_held().await,
                // `changed` marks the value seen, so it is applied here.
                Ok(()) = reload.changed() => {
                    let cfg = reload.borrow_and_update().clone();
                    self.windows.send_replace(Arc::new(cfg.maintenance.clone()));
                    match self.set_channels(&cfg) {
                        Ok(()) => info!(channels = self.lanes.len(), "delivery channels reloaded"),
                        Err(e) => warn!("cannot rebuild the channels, keeping the old ones: {e}"),
                    }
                    self.spawn_lanes(&mut tasks, &mut names, &shutdown);
                    self.bury_orphans().await;
                }
                _ = self.wake.notified() => {
                    for e in self.lanes.values() {
                        e.wake.notify_one();
                    }
                }
                Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let (id, panicked) = match joined {
                        Ok((id, ())) => (id, None),
                        Err(e) => (e.id(), e.is_panic().then(|| panic_text(e))),
                    };
                    let name = names.remove(&id).unwrap_or_default();
                    if let Some(why) = panicked {
                        error!(channel = %name, "the delivery lane panicked ({why}); starting it again");
                        if let Some(e) = self.lanes.get_mut(&name) {
                            let lane = Lane::new(
                                Filter { channel: name.clone(), only: self.only.clone() },
                                self.store.clone(),
                                self.clock.clone(),
                                e.settings.subscribe(),
                                e.wake.clone(),
                                self.gate.clone(),
                            );
                            e.lane = Some(lane);
                        }
                        self.spawn_lanes(&mut tasks, &mut names, &shutdown);
                    }
                }
            }
        }
        // Each lane sees the shutdown itself and gives its sends in flight a grace period.
        while tasks.join_next().await.is_some() {}
    }

    fn spawn_lanes(
        &mut self,
        tasks: &mut JoinSet<()>,
        names: &mut HashMap<tokio::task::Id, String>,
        shutdown: &watch::Receiver<bool>,
    ) {
        for (name, e) in self.lanes.iter_mut() {
            if let Some(lane) = e.lane.take() {
                let handle = tasks.spawn(lane.run(shutdown.clone(), SHUTDOWN_GRACE));
                names.insert(handle.id(), name.clone());
            }
        }
    }

    /// Sends what a hold that has ended held back and is still true (see [`hold::release`]).
    async fn release_held(&self) {
        match hold::release(&self.store, &self.gate, self.clock.now()).await {
            Ok(0) => {}
            Ok(_) => {
                for e in self.lanes.values() {
                    e.wake.notify_one();
                }
            }
            Err(e) => hold::release_failed(&e),
        }
    }

    /// Deliveries to channels that are no longer configured are marked dead, with that
    /// reason; they stay in the database.
    async fn bury_orphans(&self) {
        let names: Vec<&str> = self.lanes.keys().map(String::as_str).collect();
        match self.store.deliveries().bury_orphans(&names).await {
            Ok(buried) => {
                for (channel, n) in buried {
                    error!(channel = %channel, deliveries = n, "channel {channel:?} is no longer configured: its pending deliveries are marked dead (see recwatch alerts)");
                    metrics::counter!("recwatch_deliveries_total", "channel" => channel, "kind" => "removed", "outcome" => "dead").increment(n);
                }
            }
            Err(e) => warn!("cannot check for deliveries to removed channels: {e:#}"),
        }
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    metrics::counter!("recwatch_task_panics_total", "task" => "delivery").increment(1);
    crate::vitals::panic_message(e.into_panic().as_ref())
}

/// Delivers the alerts `ids` (just raised by `poll-once`) through every channel, waiting at
/// most `wait`; returns how many of their deliveries are still pending then (they stay in
/// the outbox and are sent when `recwatch run` next starts).
pub async fn deliver_now(
    store: &Store,
    config: &Config,
    ids: &[crate::domain::AlertId],
    wait: Duration,
) -> anyhow::Result<i64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let only: Arc<str> = serde_json::to_string(ids)?.into();
    let mut worker = Worker::build(
        store.clone(),
        config,
        Arc::new(Notify::new()),
        Some(only.clone()),
    )?;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for e in worker.lanes.values_mut() {
        if let Some(lane) = e.lane.take() {
            // No grace: poll-once's wait is the bound.
            tasks.spawn(lane.run(stopped.clone(), Duration::ZERO));
        }
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut pending = store.deliveries().count_pending(&only).await?;
    while pending > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        pending = store.deliveries().count_pending(&only).await?;
    }
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(store.deliveries().count_pending(&only).await?)
}
