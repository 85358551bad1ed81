//! The dispatcher: the one task that owns the schedule (a heap of due times), the API's
//! health and every job's state while it is not being polled. It starts each poll when it is
//! due and the budget has a slot, takes back what the poll reports, and decides the job's next
//! poll from it; reloads and cron ticks arrive as [`Command`]s.

use super::batch::{self, Touches};
use super::budget::{Budget, failure_delay, later};
use super::health::{Health, HealthMessage, Told, write_api_health};
use super::hints::{Candidate, Hints, Lane, Pick};
use super::job::{JobState, RETIRE_UNFOUND_AFTER, Seed};
use super::schedule::{Schedule, start_cron};
use super::task::{Done, PollTask, Report, WRITER_WAIT};
use super::writer::GroupWriter;
use super::{Event, Key, OWED_RETRY, key};
use crate::config::{BudgetReport, Config, JobConfig};
use crate::domain::Phase;
use crate::outbox::{ApiHealthChange, Outbox};
use crate::store::Store;
use crate::vitals::Liveness;
use chrono::Utc;
use rand::Rng;
use recwatch_rtc::client::{ErrorKind, RtcClient, RtcError};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// The dispatcher's side of poll hints.
mod hinted;
mod next;
use next::{Answered, Next, Outcome, Pause};
mod refusals;
mod reload;
use reload::next_config;
mod runtime;
mod share;
#[cfg(test)]
mod shared_keys;
mod term;

/// The shared parts of a running poller.
pub struct Poller {
    /// Shared with every poll task: cloning a watch list of thousands of jobs per poll cost
    /// more than the poll itself.
    config: Arc<Config>,
    /// The watched jobs by key: a finished poll checks membership, and refreshes a job
    /// reloaded while it was in flight, without a scan. Each job's `JobState` shares the
    /// same allocation.
    watched: HashMap<Key, Arc<JobConfig>>,
    /// Counts reloads; see [`JobState::generation`].
    generation: u64,
    client: RtcClient,
    store: Store,
    outbox: Outbox,
    budget: Arc<Budget>,
    in_flight: Arc<Semaphore>,
    in_flight_limit: usize,
    events: broadcast::Sender<Event>,
    liveness: Arc<Liveness>,
    /// Cron ticks arrive here; the sender is handed out by `commands`.
    command_tx: mpsc::Sender<Command>,
    /// The configuration in force (see [`Poller::follow`]): a new value is a reload, applied
    /// between two of the dispatcher's steps, never in the middle of one.
    config_rx: Option<watch::Receiver<Arc<Config>>>,
    /// The run-time watch list (see [`Poller::follow_watchlist`]) and the configuration as
    /// published, without it: `config` is the two merged.
    runtime: super::merge::Runtime,
    command_rx: Option<mpsc::Receiver<Command>>,
    /// Told once polling is armed (systemd's READY=1 waits for it).
    armed: Option<tokio::sync::oneshot::Sender<()>>,
    /// Changes in the API's health (None: check whether a reminder is due), written in order
    /// by a task of their own.
    health_tx: mpsc::UnboundedSender<HealthMessage>,
    health_rx: Option<mpsc::UnboundedReceiver<HealthMessage>>,
    /// Poll hints from the callback receiver (see `hints.rs`).
    hints: Arc<Hints>,
}

/// Commands the daemon sends the dispatcher.
pub enum Command {
    /// A cron tick: poll every job now.
    Tick,
}

impl Poller {
    /// Hands what a poll told the API's health to the health writer, its own task: a locked
    /// database must not stall the dispatcher's loop. A change also flips the flag that holds
    /// per-job alerts back at once.
    fn send_health(&self, told: Option<Told>) {
        match told {
            Some(Told::Change(change)) => {
                self.outbox.set_api_unhealthy(
                    &self.config.api.name,
                    matches!(change, ApiHealthChange::Unhealthy { .. }),
                );
                let _ = self.health_tx.send((Some(change), self.config.clone()));
            }
            Some(Told::Remind) => {
                let _ = self.health_tx.send((None, self.config.clone()));
            }
            None => {}
        }
    }

    /// `config` may be the published `Arc`, shared rather than copied (every job in it).
    pub fn new(
        config: impl Into<Arc<Config>>,
        client: RtcClient,
        store: Store,
        outbox: Outbox,
    ) -> Poller {
        let (events, _) = broadcast::channel(1024);
        let (command_tx, command_rx) = mpsc::channel(16);
        let (health_tx, health_rx) = mpsc::unbounded_channel();
        let config: Arc<Config> = config.into();
        Poller {
            health_tx,
            health_rx: Some(health_rx),
            command_tx,
            command_rx: Some(command_rx),
            config_rx: None,
            runtime: super::merge::Runtime::new(config.clone()),
            armed: None,
            budget: Arc::new(Budget::new(config.api.rate_limit)),
            in_flight: Arc::new(Semaphore::new(config.api.max_in_flight)),
            in_flight_limit: config.api.max_in_flight,
            watched: super::merge::watched_of(&config, &HashMap::new()),
            generation: 0,
            config,
            client,
            store,
            outbox,
            events,
            liveness: Arc::new(Liveness::default()),
            hints: Arc::new(Hints::new()),
        }
    }

    /// Where the callback receiver sends poll hints.
    pub fn hints(&self) -> Arc<Hints> {
        self.hints.clone()
    }

    /// A receiver that completes once polling is armed.
    pub fn armed(&mut self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.armed = Some(tx);
        rx
    }

    /// Where to send cron ticks.
    pub fn commands(&self) -> mpsc::Sender<Command> {
        self.command_tx.clone()
    }

    /// Follows the daemon's configuration: each new value (already validated, its client
    /// buildable) is applied as a reload. Its current value is taken as seen: the poller
    /// starts from the configuration it was built with.
    pub fn follow(&mut self, mut config: watch::Receiver<Arc<Config>>) {
        config.mark_unchanged();
        self.config_rx = Some(config);
    }

    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn event_sender(&self) -> broadcast::Sender<Event> {
        self.events.clone()
    }

    pub fn liveness(&self) -> Arc<Liveness> {
        self.liveness.clone()
    }

    pub fn budget(&self) -> Arc<Budget> {
        self.budget.clone()
    }

    /// Runs until `shutdown` turns true, then lets polls in flight finish writing.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut commands = self.command_rx.take().expect("run is called once");
        let mut config_rx = self.config_rx.take();
        let health_rx = self.health_rx.take().expect("run is called once");
        let health_writer = tokio::spawn(write_api_health(
            self.outbox.clone(),
            self.store.clone(),
            health_rx,
        ));
        // Stored callback events become hints while this poller runs (aborted with it).
        let _feed = super::feed::start(self.store.clone(), self.hints.clone());
        let seeds = seeds_of(&self.store, &self.config.jobs).await?;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Report>();
        let touches = Arc::new(Touches::default());
        let (stop_touches, touches_stopped) = watch::channel(false);
        let touch_flusher =
            batch::start_flusher(touches.clone(), self.store.clone(), touches_stopped);
        let mut d = Dispatcher::new(self, touches, done_tx);
        d.budget_changed();
        d.arm(&seeds).await?;
        // Read once to arm, not kept (issue 23).
        drop(seeds);
        if *shutdown.borrow() {
            d.stop_dispatching();
        }
        d.run(&mut shutdown, &mut commands, &mut config_rx, &mut done_rx)
            .await;
        d.write_owed_before_stopping().await;
        if let Some(mut c) = d.cron.take() {
            let _ = c.shutdown().await;
        }
        let _ = stop_touches.send(true);
        let _ = touch_flusher.await;
        // Let the health writer finish what it was given: swap out our sender so it sees the
        // channel close.
        drop(std::mem::replace(
            &mut d.poller.health_tx,
            mpsc::unbounded_channel().0,
        ));
        let _ = health_writer.await;
        // Every poll came back, so once this loop's clones are gone the writer has nothing
        // left to write: wait for it, so nothing writes after `run` returns. Polls abandoned
        // after the drain time still hold it; then it is not waited for.
        let abandoned = !d.busy.is_empty();
        let writer_done = d.writer_done.take();
        drop(d);
        if let (false, Some(done)) = (abandoned, writer_done) {
            let _ = done.await;
        }
        info!("poller stopped");
        Ok(())
    }
}

/// What each of `jobs`' stored rows says (`seeds[i]` of `jobs[i]`; `None`: no row), read in
/// one pass over the table as each row's text goes by: no row is held whole, no key made, and
/// rows of jobs not watched cost nothing. At 100,000 stored rows, reading them all as
/// `JobRow`s into a map keyed anew was the daemon's peak (~90 MB more) and left ~20 MB of holes
/// among the jobs' states after it was freed (issue 23, item 1, BENCHMARKS.md part 27a).
async fn seeds_of(
    store: &Store,
    jobs: &[Arc<JobConfig>],
) -> Result<Vec<Option<Seed>>, crate::store::StoreError> {
    let at: HashMap<(&str, &str), usize, crate::domain::IdsHash> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| ((j.app_id(), j.job_id()), i))
        .collect();
    let mut seeds = vec![None; jobs.len()];
    store
        .jobs()
        .each_seed(|r| {
            if let Some(&i) = at.get(&(r.app_id, r.job_id)) {
                seeds[i] = Some(Seed::of(r.state, r.stop_reason, r.first_seen_at));
            }
        })
        .await?;
    Ok(seeds)
}

/// The dispatcher while it runs: the poller's shared parts and the state of its loop.
struct Dispatcher {
    poller: Poller,
    /// Jobs not being polled now, by key; a job being polled is in `busy` instead, its
    /// state travelling with its poll task.
    ///
    /// Boxed: a hash table keeps up to twice its entries' room (its buckets a power of two),
    /// and a state is 152 bytes; a box's room is 8 (issue 23, item 1).
    states: HashMap<Key, Box<JobState>>,
    schedule: Schedule,
    busy: HashSet<Key>,
    /// Jobs holding outcomes the database refused, written again every OWED_RETRY.
    owed: HashSet<Key>,
    owed_tried: Instant,
    health: Health,
    writer: GroupWriter,
    /// Ends once the writer has written everything it was given and every clone of
    /// `writer` is gone.
    writer_done: Option<JoinHandle<()>>,
    touches: Arc<Touches>,
    /// Poll tasks report here.
    done_tx: mpsc::UnboundedSender<Report>,
    cron: Option<tokio_cron_scheduler::JobScheduler>,
    /// No new polls: waiting for those in flight to finish writing.
    stopping: bool,
    /// How long polls in flight get to finish once stopping: their request, then their
    /// write. Past it, shutdown goes on without them rather than hang.
    drain: Duration,
    drain_until: Option<Instant>,
    /// Hinted jobs waiting for a slot, and the re-polls after a job's end (see `hints.rs`).
    lane: Lane,
    /// The lane's front as `next` last saw it (a buffer kept so a look allocates nothing).
    front: Vec<Candidate>,
    /// Each group's share of the budget over the watch list in force (see `share.rs`).
    budget: BudgetReport,
    /// The last report the log told of, so a flood of small changes is not logged each.
    budget_told: Option<BudgetReport>,
    /// Discovered jobs retired as never found (see `runtime.rs`): not let back in by a reload
    /// that runs before their removal from the run-time list is read back.
    retired: HashSet<Key>,
    /// When a run-time list change was last applied (see `runtime.rs`, `list_due`).
    list_applied: Instant,
}

impl Dispatcher {
    fn new(poller: Poller, touches: Arc<Touches>, done_tx: mpsc::UnboundedSender<Report>) -> Self {
        let drain = poller
            .config
            .api
            .timeout
            .saturating_add(Duration::from_secs(15));
        let (writer, writer_done) = GroupWriter::start(poller.outbox.clone(), poller.store.clone());
        Dispatcher {
            // An outage left open by the previous run is still open: the first answer
            // resolves it.
            health: Health {
                unhealthy: poller.outbox.api_unhealthy_for(&poller.config.api.name),
                ..Health::default()
            },
            writer,
            writer_done: Some(writer_done),
            states: HashMap::new(),
            schedule: Schedule::default(),
            busy: HashSet::new(),
            owed: HashSet::new(),
            owed_tried: Instant::now(),
            touches,
            done_tx,
            cron: None,
            stopping: false,
            drain,
            drain_until: None,
            lane: Lane::default(),
            front: Vec::new(),
            budget: poller.runtime.budget(),
            budget_told: None,
            retired: HashSet::new(),
            list_applied: Instant::now(),
            poller,
        }
    }

    /// Puts every job on the schedule, starts the cron schedule if there is one, and says
    /// polling is armed.
    async fn arm(&mut self, seeds: &[Option<Seed>]) -> anyhow::Result<()> {
        let config = self.poller.config.clone();
        self.add_jobs(&config.jobs, seeds);
        if let Some(expr) = config.poll.schedule.clone() {
            self.cron = Some(start_cron(expr.as_str(), self.poller.command_tx.clone()).await?);
        }
        info!(
            jobs = self.states.len(),
            rate_limit = config.api.rate_limit,
            max_in_flight = config.api.max_in_flight,
            "polling armed"
        );
        self.poller.liveness.beat();
        if let Some(tx) = self.poller.armed.take() {
            let _ = tx.send(());
        }
        Ok(())
    }

    fn stop_dispatching(&mut self) {
        self.stopping = true;
        self.drain_until = Some(later(Instant::now(), self.drain));
    }

    /// The loop: until stopped and every poll in flight is back (or the drain time is over).
    async fn run(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        commands: &mut mpsc::Receiver<Command>,
        config_rx: &mut Option<watch::Receiver<Arc<Config>>>,
        done_rx: &mut mpsc::UnboundedReceiver<Report>,
    ) {
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        let hints = self.poller.hints.clone();
        loop {
            if self.stopping && self.busy.is_empty() {
                break;
            }
            self.lane_step();
            // The next poll goes when `next` says (due or hinted, and the budget has a slot).
            // The loop never blocks on the budget itself (a pause can last minutes), so
            // reloads, completions and the watchdog's heartbeat are handled meanwhile.
            let next = self.next(Instant::now());
            let sleep = async {
                match next {
                    // Not through the timer: it has 1 ms ticks, so even an elapsed deadline
                    // would wait for the next one and cap polling at 1,000/s.
                    Next::Poll(_) => {}
                    Next::At(t) => tokio::time::sleep_until(t).await,
                    Next::Idle => std::future::pending::<()>().await,
                }
            };
            let drain_until = self.drain_until;
            let drain_over = async {
                match drain_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.changed(), if !self.stopping => {
                    self.stop_dispatching();
                    info!(in_flight = self.busy.len(), "stopping: no new polls; waiting for those in flight to finish writing");
                }
                _ = drain_over => {
                    error!(in_flight = self.busy.len(), "polls still in flight {} after the stop was asked for; stopping without them", crate::config::format_duration(self.drain));
                    break;
                }
                Some(report) = done_rx.recv() => self.take_report(report).await,
                Some(cmd) = commands.recv() => self.command(cmd).await,
                _ = hints.notified() => self.take_hints(),
                Some(config) = next_config(config_rx) => self.config_changed(config).await,
                () = self.poller.runtime.changed(), if self.list_due() => self.watchlist_changed().await,
                _ = heartbeat.tick() => {
                    self.poller.liveness.beat();
                    self.retry_owed();
                }
                _ = sleep => {
                    if !self.dispatch_next(next).await {
                        continue;
                    }
                }
            }
            self.poller.liveness.beat();
        }
    }

    /// A poll task sharing this poller's client, writer and configuration.
    fn task(&self) -> PollTask {
        PollTask {
            client: self.poller.client.clone(),
            writer: self.writer.clone(),
            config: self.poller.config.clone(),
            events: self.poller.events.clone(),
            writer_wait: WRITER_WAIT,
            touches: Some(self.touches.clone()),
        }
    }

    /// Runs a job's poll (or owed write) in a task of its own; the job is busy until it
    /// reports back.
    fn launch(
        &mut self,
        k: Key,
        permit: Option<OwnedSemaphorePermit>,
        work: impl Future<Output = Report> + Send + 'static,
    ) {
        self.busy.insert(k.clone());
        let tx = self.done_tx.clone();
        // A poll's future is kilobytes (the request, the parse, the write and its retries):
        // moved by value, it was copied several times on its way into the task (issue 23,
        // item 6: a third of the daemon's instructions per poll). Boxed, it is copied once.
        let work = Box::pin(work);
        tokio::spawn(async move {
            // A panic anywhere in the poll is reported, so the job is not left "in flight"
            // for ever (which would also hang shutdown).
            let report = match crate::vitals::contain(work).await {
                Ok(report) => report,
                Err(why) => Report::Panicked { key: k, why },
            };
            drop(permit);
            let _ = tx.send(report);
        });
    }

    /// Starts the poll [`next::next`] picks (its budget slot reserved first): `looked`, the
    /// loop's look, when it said "now" (nothing ran between that look and this call), else
    /// a new look after the sleep. Returns false when there was none to start after all (the
    /// budget's slot taken meanwhile by another of its users, or nothing due yet): the loop
    /// then looks again at once.
    async fn dispatch_next(&mut self, looked: Next) -> bool {
        let now = Instant::now();
        let Next::Poll(choice) = (match looked {
            Next::Poll(_) => looked,
            Next::At(_) | Next::Idle => self.next(now),
        }) else {
            return false;
        };
        let Ok(slot) = self.poller.budget.try_reserve(now) else {
            return false;
        };
        match self.lane.take(choice) {
            pick @ (Pick::Hinted(_) | Pick::Joining(_)) => {
                self.dispatch_lane(pick, slot, now).await;
                return true;
            }
            Pick::Round | Pick::Nothing => {}
        }
        let Some((due, _, k)) = self.schedule.pop(now) else {
            return false;
        };
        self.poller
            .budget
            .record_wait(now.saturating_duration_since(due));
        let permit = self
            .poller
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let state = self
            .states
            .remove(&k)
            .expect("a stale head is dropped by `next`");
        let work = self.task().poll(k.clone(), state, Some(slot));
        self.launch(k, Some(permit), work);
        true
    }

    /// Every OWED_RETRY, writes again what jobs owe the database. While the database is
    /// known to refuse writes, one job probes it; once it takes them, every job's owed
    /// outcomes go.
    fn retry_owed(&mut self) {
        if self.stopping || self.owed.is_empty() || self.owed_tried.elapsed() < OWED_RETRY {
            return;
        }
        self.owed_tried = Instant::now();
        let probe_only = self.poller.store.health().is_failing();
        let ready: Vec<Key> = self
            .owed
            .iter()
            .filter(|k| !self.busy.contains(*k) && self.states.contains_key(*k))
            .take(if probe_only { 1 } else { usize::MAX })
            .cloned()
            .collect();
        for k in ready {
            let state = self.states.remove(&k).expect("checked above");
            let work = self.task().write_owed(k.clone(), state);
            self.launch(k, None, work);
        }
    }

    async fn take_report(&mut self, report: Report) {
        let k = match &report {
            Report::Done(d) => d.key.clone(),
            Report::Panicked { key, .. } => key.clone(),
        };
        self.busy.remove(&k);
        // The finished job is in neither map until `finish` puts it back.
        let in_rotation = self.states.len() + self.busy.len() + 1;
        match self.finish(report, in_rotation).await {
            Some(true) => {
                self.owed.insert(k);
            }
            _ => {
                self.owed.remove(&k);
            }
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Tick => {
                let now = Instant::now();
                for (k, s) in self
                    .states
                    .iter_mut()
                    .filter(|(k, _)| !self.busy.contains(*k))
                {
                    self.schedule.put(k.clone(), s, now);
                }
            }
        }
    }

    /// Last chance for outcomes the database refused earlier. The first refusal ends it: the
    /// others would be refused too, each after the busy timeout.
    async fn write_owed_before_stopping(&mut self) {
        for s in self.states.values_mut().filter(|s| !s.unwritten.is_empty()) {
            let write = self.writer.write(
                s.unwritten.clone(),
                JobConfig::clone(&s.job),
                s.in_init(),
                Utc::now(),
                self.poller.config.clone(),
            );
            match tokio::time::timeout(Duration::from_secs(10), write).await {
                Ok(Ok(())) => s.unwritten = Vec::new(),
                _ => break,
            }
        }
        let lost: usize = self.states.values().map(|s| s.unwritten.len()).sum();
        if lost > 0 {
            error!(
                outcomes = lost,
                "the database refused these poll outcomes until the end; they were not written and will be re-observed on the next start"
            );
        }
    }

    /// Puts `jobs` (the watch list at start) on the schedule, their first polls spread
    /// evenly over the interval so they never fire together.
    /// `seeds[i]` is what `jobs[i]`'s stored row says (see [`seeds_of`]).
    fn add_jobs(&mut self, jobs: &[Arc<JobConfig>], seeds: &[Option<Seed>]) {
        let now = Instant::now();
        let n = jobs.len().max(1) as u32;
        for (i, job) in jobs.iter().enumerate() {
            let seed = seeds.get(i).cloned().flatten();
            let Some((k, mut state)) = self.new_state(job, |_| seed) else {
                debug!(app_id = %job.app_id(), job_id = %job.job_id(), "already STOPPED: not polled (poll.stop_after_terminal)");
                continue;
            };
            if self.poller.config.poll.schedule.is_none() {
                let offset = self.interval(&state).mul_f64(i as f64 / n as f64);
                self.schedule.put(k.clone(), &mut state, later(now, offset));
            }
            self.states.insert(k, state);
        }
    }

    /// A job joining the watch list, from its database row (`row` of its key), in the current
    /// generation, with its key as `watched` holds it (one allocation, see [`Key`]); None when
    /// it is already STOPPED and `poll.stop_after_terminal` keeps it unpolled.
    fn new_state(
        &self,
        job: &Arc<JobConfig>,
        seed: impl FnOnce(&Key) -> Option<Seed>,
    ) -> Option<(Key, Box<JobState>)> {
        let (k, job) = super::merge::shared(&self.poller.watched, job);
        let mut state =
            JobState::from_seed(&job, seed(&k), self.poller.config.poll.stop_after_terminal)?;
        state.generation = self.poller.generation;
        state.origin = self.poller.runtime.origin(&k);
        Some((k, Box::new(state)))
    }

    /// Takes a finished task's report: the job's state goes back in, scheduled for its next
    /// poll. Returns whether the job still owes outcomes to the database (`None` when it is
    /// no longer polled).
    async fn finish(&mut self, report: Report, in_rotation: usize) -> Option<bool> {
        let now = Instant::now();
        let Done {
            key: k,
            mut state,
            result,
        } = match report {
            Report::Done(done) => *done,
            Report::Panicked { key, why } => return self.restart_panicked(key, why, now).await,
        };
        if !self.poller.watched.contains_key(&k) {
            debug!(app_id = %k.app_id, job_id = %k.job_id, "removed from the watch list while in flight");
            self.lane.settled(&k);
            return None;
        }
        // A reload while this job was in flight: take its new name, notify list, interval.
        if state.generation != self.poller.generation {
            state.job = self.poller.watched[&k].clone();
            state.generation = self.poller.generation;
            state.origin = self.poller.runtime.origin(&k);
        }
        let Some(result) = result else {
            // Only owed outcomes were written: the job's poll stays when it was due (on a
            // cron schedule a job has a due time only while it backs off after a failure).
            let owes = !state.unwritten.is_empty();
            if self.poller.config.poll.schedule.is_none() || state.failures > 0 {
                let due = state.due;
                self.schedule.put(k.clone(), &mut state, due);
            }
            self.states.insert(k, state);
            return Some(owes);
        };
        let threshold = self.poller.config.rules.api_failure_threshold;
        let told = self.health.tell(&result, threshold, in_rotation, now);
        self.poller.send_health(told);
        if state.unfound >= RETIRE_UNFOUND_AFTER {
            self.retire(k).await;
            return None;
        }
        if state.phase.as_ref().is_some_and(Phase::is_terminal) {
            // Shows STOPPED: the re-polls after its end have done their job.
            self.lane.settled(&k);
        }
        let at = self.next_poll(&k, &mut state, &result, now)?;
        let owes = !state.unwritten.is_empty();
        if self.poller.config.poll.schedule.is_none() || result.is_err() {
            self.schedule.put(k.clone(), &mut state, at);
        }
        self.states.insert(k, state);
        Some(owes)
    }

    /// A poll task panicked: the job's state is rebuilt from the database and it is polled
    /// again after a failure's back-off.
    async fn restart_panicked(&mut self, k: Key, why: String, now: Instant) -> Option<bool> {
        metrics::counter!("recwatch_task_panics_total", "task" => "poll").increment(1);
        let job = self.poller.watched.get(&k)?.clone();
        error!(app_id = %k.app_id, job_id = %k.job_id, name = job.label(), "the poll task failed (panicked: {why}); the job's state is reloaded from the database and it is polled again");
        let row = match self.poller.store.jobs().get(&k.app_id, &k.job_id).await {
            Ok(row) => row,
            Err(e) => {
                warn!(app_id = %k.app_id, job_id = %k.job_id, "cannot read the job's row after the failure: {e:#}; it starts again from no known state");
                None
            }
        };
        let (k, mut state) = self.new_state(&job, |_| row.as_ref().map(Seed::of_row))?;
        state.failures = 1;
        let at = later(now, failure_delay(self.interval(&state), 1, jitter()));
        self.schedule.put(k.clone(), &mut state, at);
        self.states.insert(k, state);
        Some(false)
    }

    /// When the job is polled next after this result ([`next::after_poll`] decides); `None`
    /// when it is no longer polled. Applies a pause of every poll and says why.
    fn next_poll(
        &self,
        k: &Key,
        state: &mut JobState,
        result: &Result<(), RtcError>,
        now: Instant,
    ) -> Option<Instant> {
        let config = &self.poller.config;
        let outcome = match result {
            Ok(()) => Outcome::Answered,
            Err(e) if matches!(e.kind, ErrorKind::Throttled) => Outcome::Throttled,
            Err(e) if matches!(e.kind, ErrorKind::Unauthorized) => Outcome::Refused,
            Err(_) => Outcome::Failed,
        };
        let done =
            config.poll.stop_after_terminal && state.phase.as_ref().is_some_and(Phase::is_terminal);
        let after = next::after_poll(&Answered {
            now,
            outcome,
            interval: self.interval(state),
            failures: state.failures,
            done,
            owes: !state.unwritten.is_empty(),
            throttle_backoff: config.api.throttle_backoff,
            throttle_streak: self.health.throttle_streak,
            auth_backoff: config.api.auth_backoff,
            auth_streak: self.health.auth_streak,
            // A draw only where a back-off uses it: an answer's next poll is not jittered.
            jitter: if outcome == Outcome::Answered {
                0.0
            } else {
                jitter()
            },
        });
        state.failures = after.failures;
        if done && outcome == Outcome::Answered {
            info!(app_id = %k.app_id, job_id = %k.job_id, "job is STOPPED: no longer polled (poll.stop_after_terminal)");
        }
        match (after.pause, result) {
            (Some(Pause::Throttled(pause)), Err(e)) => {
                self.poller.budget.pause_until(later(now, pause));
                let account = self.poller.config.api.name.to_string();
                metrics::counter!("recwatch_throttled_total", "account" => account).increment(1);
                warn!(pause = ?round(pause), streak = self.health.throttle_streak, request_id = e.request_id.as_deref().unwrap_or("-"), "throttled by the API gateway (APIG.0308): pausing every poll");
            }
            (Some(Pause::Refused(pause)), Err(e)) => {
                let streak = self.health.auth_streak;
                refusals::pause_for_refusals(&self.poller.budget, streak, e, pause, now)
            }
            _ => {}
        }
        after.at
    }
}

fn jitter() -> f64 {
    rand::rng().random::<f64>()
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs().max(if d.is_zero() { 0 } else { 1 }))
}
