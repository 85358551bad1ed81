//! The poller: one rate budget shared by every job, polls spread evenly over each interval,
//! and back-off that never turns a failure into a retry storm.
//!
//! One dispatcher task owns the schedule (a heap of due times) and the API's health; each poll
//! runs in its own task, bounded by a semaphore of `max_in_flight`, and reports back. A job is
//! never polled twice at once, so its last phase travels with its poll and transition
//! detection needs no lock.
//!
//! How failures are handled, and why:
//! - throttled (429): the whole poller pauses (3 s, doubling while it lasts, jittered); the
//!   provider advises 2-5 s, and a per-job retry would just add load to a saturated budget;
//! - refused credentials: the gateway locks an AK for 5 minutes after more than 5 failed
//!   signatures, so after 3 refusals in a row the poller stops for `api.auth_backoff`. Until a
//!   request has succeeded, requests go one at a time, so a wrong key costs at most 3;
//! - anything else: that job alone backs off exponentially with jitter, capped.
//!
//! A panic in a poll task is contained to it: the task reports it, the job's state is
//! reloaded from the database and the job is polled again. When the database cannot be
//! written (a full disk), polling goes on; what could not be written is kept per job
//! (bounded) and written as soon as the database takes writes again, without waiting for the
//! job's next poll.

use crate::config::{Config, JobConfig};
use crate::detect::{Detected, Phase, detect};
use crate::outbox::{self, ApiHealthChange, GroupWriter, Outbox, OwedHealth};
use crate::store::{Attempt, LOCK_RETRY, PollOutcome, PollRecord, Store, StoreError, retry_locked};
use chrono::Utc;
use rand::Rng;
use recwatch_rtc::client::{ErrorKind, Fetched, RtcClient, RtcError};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// The window over which `rate_limit` is enforced. A little over a second, so requests that
/// arrive a few milliseconds closer together than they were sent still fit in any one second
/// at the server.
const WINDOW: Duration = Duration::from_millis(1020);

/// A token budget of `rate` requests per second: requests are spaced at least `1/rate`
/// apart, and no `WINDOW` ever holds more than `rate` of them. A pause (throttling, refused
/// credentials) holds every request.
pub struct Budget {
    state: Mutex<BudgetState>,
    /// Nanoseconds spent waiting for the budget, for metrics.
    waited_ns: AtomicU64,
}

struct BudgetState {
    rate: u32,
    recent: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

/// The timer's resolution. Spacing requests closer than this would make every request wait a
/// whole timer tick (a 1 ms floor: 1,000 requests/s however high the budget), so the spacing
/// may be short by up to this much; the per-window count is never exceeded.
const SPACING_SLACK: Duration = Duration::from_millis(1);

impl BudgetState {
    fn ready_at(&self, now: Instant) -> Instant {
        let mut at = now;
        if let Some(p) = self.paused_until {
            at = at.max(p);
        }
        // `recent` is in time order: the ones still inside the window are at the back.
        let first = self
            .recent
            .partition_point(|t| now.duration_since(*t) >= WINDOW);
        let inside = self.recent.len() - first;
        if let Some(last) = self.recent.back().filter(|_| inside > 0) {
            let spacing = Duration::from_secs(1) / self.rate;
            at = at.max((*last + spacing).checked_sub(SPACING_SLACK).unwrap_or(now));
        }
        let rate = self.rate as usize;
        if inside >= rate {
            at = at.max(self.recent[self.recent.len() - rate] + WINDOW);
        }
        at
    }
}

impl Budget {
    pub fn new(rate: u32) -> Budget {
        Budget {
            state: Mutex::new(BudgetState {
                rate: rate.max(1),
                recent: VecDeque::new(),
                paused_until: None,
            }),
            waited_ns: AtomicU64::new(0),
        }
    }

    pub fn set_rate(&self, rate: u32) {
        self.state.lock().expect("budget lock").rate = rate.max(1);
    }

    /// Holds every request until `until` (extends, never shortens, a pause).
    pub fn pause_until(&self, until: Instant) {
        let mut s = self.state.lock().expect("budget lock");
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
        }
    }

    pub fn clear_pause(&self) {
        self.state.lock().expect("budget lock").paused_until = None;
    }

    pub fn paused_until(&self) -> Option<Instant> {
        self.state
            .lock()
            .expect("budget lock")
            .paused_until
            .filter(|p| *p > Instant::now())
    }

    /// When a request could go, without taking the slot.
    pub fn ready_at(&self, now: Instant) -> Instant {
        self.state.lock().expect("budget lock").ready_at(now)
    }

    /// Takes a slot and returns `None` if a request may go now, or says when it may.
    pub fn try_take(&self, now: Instant) -> Option<Instant> {
        let mut s = self.state.lock().expect("budget lock");
        while s
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            s.recent.pop_front();
        }
        let at = s.ready_at(now);
        if at > now {
            return Some(at);
        }
        s.paused_until = None;
        s.recent.push_back(now);
        None
    }

    /// Waits for a slot and takes it. Returns how long it waited.
    pub async fn acquire(&self) -> Duration {
        let start = Instant::now();
        while let Some(at) = self.try_take(Instant::now()) {
            tokio::time::sleep_until(at).await;
        }
        let waited = start.elapsed();
        self.record_wait(waited);
        waited
    }

    /// Counts time a request spent waiting for the budget, for metrics.
    fn record_wait(&self, waited: Duration) {
        self.waited_ns.fetch_add(
            u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        metrics::histogram!("recwatch_rate_budget_wait_seconds").record(waited.as_secs_f64());
    }

    pub fn total_wait(&self) -> Duration {
        Duration::from_nanos(self.waited_ns.load(Ordering::Relaxed))
    }
}

/// Delay before re-polling a job that failed `failures` times in a row: its interval,
/// doubling per failure, capped at the larger of the interval and 5 minutes, jittered by
/// +/-20% so failed jobs do not return in step. `jitter` is in [0, 1).
pub fn failure_delay(interval: Duration, failures: u32, jitter: f64) -> Duration {
    let cap = interval.max(Duration::from_secs(300));
    let exp = failures.saturating_sub(1).min(20);
    let base = interval.saturating_mul(1u32 << exp.min(16)).min(cap);
    mul_saturating(base, 0.8 + 0.4 * jitter.clamp(0.0, 1.0))
}

/// The whole poller's pause after `streak` throttled answers in a row: `base`, doubling,
/// capped at a minute, jittered by +/-20%.
pub fn throttle_pause(base: Duration, streak: u32, jitter: f64) -> Duration {
    let exp = streak.saturating_sub(1).min(8);
    mul_saturating(
        base.saturating_mul(1 << exp).min(Duration::from_secs(60)),
        0.8 + 0.4 * jitter.clamp(0.0, 1.0),
    )
}

/// `now + d`, saturating about 30 years ahead instead of panicking on an absurd duration (an
/// interval or back-off from the config): a poll that far off is "never" either way.
pub fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86400))
}

/// `d * f`, saturating at `Duration::MAX` instead of panicking.
pub fn mul_saturating(d: Duration, f: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * f).unwrap_or(Duration::MAX)
}

/// After this many refused requests in a row the poller stops for `api.auth_backoff`.
pub const AUTH_FAILURES_BEFORE_BACKOFF: u32 = 3;

/// How long a poll queues for the database's write connection before it keeps its outcome
/// for the job's next poll (see [`PollTask::writer_wait`]).
const WRITER_WAIT: Duration = Duration::from_millis(500);

/// While the database refuses writes, how many transitions one job keeps in memory. A job
/// changes state a few times in its life; more than this is a flapping answer, and the
/// middle of the run is folded away (see [`keep_bounded`]) so memory stays bounded.
const MAX_UNWRITTEN: usize = 32;

/// How often outcomes the database refused are written again without waiting for the job's
/// next poll, so they land within seconds of the database taking writes again.
const OWED_RETRY: Duration = Duration::from_secs(2);

/// Something the demo (and logs) want to see as it happens.
#[derive(Clone, Debug)]
pub enum Event {
    Transition {
        job: JobConfig,
        from: Option<Phase>,
        to: Phase,
        description: Option<String>,
    },
    PollFailed {
        job: JobConfig,
        error: RtcError,
    },
    Alert {
        summary: String,
        rule: String,
        severity: String,
        status: String,
    },
}

/// Shared with the watchdog and /readyz: when the dispatcher last went round its loop.
#[derive(Default)]
pub struct Liveness {
    last_tick_ms: AtomicU64,
}

impl Liveness {
    pub fn beat(&self) {
        self.last_tick_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Milliseconds since the last beat (u64::MAX if never).
    pub fn age_ms(&self) -> u64 {
        match self.last_tick_ms.load(Ordering::Relaxed) {
            0 => u64::MAX,
            t => now_ms().saturating_sub(t),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

type Key = (String, String);

fn key(job: &JobConfig) -> Key {
    (job.app_id.clone(), job.job_id.clone())
}

/// A job's state between polls. It moves into the poll task and back.
struct JobState {
    job: JobConfig,
    phase: Option<Phase>,
    failures: u32,
    /// Outcomes not yet written because the database refused (locked); written, in order,
    /// with the next poll of this job.
    unwritten: Vec<PollRecord>,
    /// First time this run saw the job, for stuck_init when the API gives no create_time.
    first_seen: chrono::DateTime<Utc>,
    /// Whether a stuck_init / job_not_found episode may be open for this job. True until the
    /// first write of this run has evaluated the conditions; a wrong `true` only costs a
    /// write, a wrong `false` would miss a resolve, so these err towards `true`.
    maybe_stuck_open: bool,
    maybe_not_found_open: bool,
    /// The sequence number of the job's live schedule entry: entries with another are stale
    /// (superseded by a later scheduling) and skipped.
    sched: u64,
    /// When the job's next poll is due (what a write of owed outcomes puts back).
    due: Instant,
    /// The configuration generation `job` was taken from; a poll in flight during a reload
    /// comes back with an older one and is refreshed.
    generation: u64,
}

impl JobState {
    /// A job's state from its stored row; `None` when it is STOPPED and `skip_terminal` says
    /// such jobs are not polled.
    fn from_row(
        job: &JobConfig,
        row: Option<&crate::store::JobRow>,
        skip_terminal: bool,
    ) -> Option<JobState> {
        let phase = row.and_then(|r| r.phase());
        if skip_terminal && phase.as_ref().is_some_and(Phase::is_terminal) {
            return None;
        }
        let first_seen = row
            .and_then(|r| r.first_seen_at.as_deref())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(Utc::now);
        Some(JobState {
            maybe_stuck_open: true,
            maybe_not_found_open: true,
            job: job.clone(),
            phase,
            failures: 0,
            unwritten: Vec::new(),
            first_seen,
            sched: 0,
            due: Instant::now(),
            generation: 0,
        })
    }

    /// Keeps `record` to be written, bounded: of the polls that changed nothing only the
    /// latest is kept, and transitions past [`MAX_UNWRITTEN`] are folded (see [`keep_bounded`]).
    fn keep(&mut self, record: PollRecord) {
        if self.unwritten.last().is_some_and(|r| !r.is_transition()) {
            self.unwritten.pop();
        }
        self.unwritten.push(record);
        if keep_bounded(&mut self.unwritten, MAX_UNWRITTEN) {
            warn!(app_id = %self.job.app_id, job_id = %self.job.job_id, kept = self.unwritten.len(), "the database has refused this job's writes for so many changes that intermediate ones are dropped from memory; the first and the latest are kept");
        }
    }
}

/// Folds a run of unwritten records that has grown past `max`: the second-oldest transition
/// is dropped and the next one starts from where the dropped one started, so the chain of
/// states stays unbroken (a transition is only written if the row shows its `from`). The
/// first transition, the one owed longest, and the latest are kept. Returns whether it
/// dropped anything.
fn keep_bounded(records: &mut Vec<PollRecord>, max: usize) -> bool {
    let mut dropped = false;
    while records.len() > max.max(3) {
        let removed = records.remove(1);
        dropped = true;
        let from = match removed.outcome {
            PollOutcome::Ok {
                transition: Some((from, _)),
                ..
            } => from,
            // Not a transition: nothing to splice.
            _ => continue,
        };
        if let Some(PollOutcome::Ok {
            transition: Some((next_from, _)),
            ..
        }) = records
            .iter_mut()
            .skip(1)
            .map(|r| &mut r.outcome)
            .find(|o| {
                matches!(
                    o,
                    PollOutcome::Ok {
                        transition: Some(_),
                        ..
                    }
                )
            })
        {
            *next_from = from;
        }
    }
    dropped
}

/// A poll that changed nothing: what the job's row should show.
struct Touch {
    polled_at: chrono::DateTime<Utc>,
    raw: String,
    description: Option<String>,
}

/// Poll times and snapshots of polls that changed nothing, written once a second in one
/// transaction. Losing a second of them to a crash loses no transition or alert: those are
/// written at once.
#[derive(Default)]
pub struct Touches {
    pending: Mutex<HashMap<Key, Touch>>,
}

impl Touches {
    fn touch(&self, k: Key, t: Touch) {
        self.pending.lock().expect("touches lock").insert(k, t);
    }

    /// The job goes through a full write: its batched touch is superseded.
    fn forget(&self, k: &Key) {
        self.pending.lock().expect("touches lock").remove(k);
    }

    /// Writes what is pending; on failure it is kept for the next flush (unless newer came).
    pub async fn flush(&self, store: &Store) -> Result<usize, StoreError> {
        let batch: Vec<(Key, Touch)> = self.pending.lock().expect("touches lock").drain().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        match store
            .touch_jobs(batch.iter().map(|(k, t)| {
                (
                    &k.0,
                    &k.1,
                    t.polled_at,
                    t.raw.as_str(),
                    t.description.as_deref(),
                )
            }))
            .await
        {
            Ok(()) => Ok(n),
            Err(e) => {
                let mut pending = self.pending.lock().expect("touches lock");
                for (k, t) in batch {
                    pending.entry(k).or_insert(t);
                }
                Err(e)
            }
        }
    }
}

/// What a poll task reports back.
enum Report {
    Done(Box<Done>),
    /// The task panicked (or writing its outcomes did): its state is gone and is rebuilt
    /// from the database.
    Panicked {
        key: Key,
        why: String,
    },
}

struct Done {
    key: Key,
    state: JobState,
    /// `None`: the task only wrote outcomes owed from earlier polls; nothing was asked.
    result: Option<Result<(), RtcError>>,
}

/// The shared parts of a running poller.
pub struct Poller {
    /// Shared with every poll task: cloning a watch list of thousands of jobs per poll cost
    /// more than the poll itself.
    config: Arc<Config>,
    /// The watched jobs by key: a finished poll checks membership, and refreshes a job
    /// reloaded while it was in flight, without a scan.
    watched: HashMap<Key, JobConfig>,
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
    /// Cron ticks and reloads arrive here; the sender is handed out by `commands`.
    command_tx: mpsc::Sender<Command>,
    command_rx: Option<mpsc::Receiver<Command>>,
    /// Told once polling is armed (systemd's READY=1 waits for it).
    armed: Option<tokio::sync::oneshot::Sender<()>>,
    /// Changes in the API's health (None: check whether a reminder is due), written in order
    /// by a task of their own.
    health_tx: mpsc::UnboundedSender<(Option<ApiHealthChange>, Arc<Config>)>,
    health_rx: Option<mpsc::UnboundedReceiver<(Option<ApiHealthChange>, Arc<Config>)>>,
}

/// Commands the daemon sends the dispatcher.
pub enum Command {
    /// A new, already validated configuration.
    Reload(Box<(Config, RtcClient)>),
    /// A cron tick: poll every job now.
    Tick,
}

impl Poller {
    pub fn new(config: Config, client: RtcClient, store: Store, outbox: Outbox) -> Poller {
        let (events, _) = broadcast::channel(1024);
        let (command_tx, command_rx) = mpsc::channel(16);
        let (health_tx, health_rx) = mpsc::unbounded_channel();
        Poller {
            health_tx,
            health_rx: Some(health_rx),
            command_tx,
            command_rx: Some(command_rx),
            armed: None,
            budget: Arc::new(Budget::new(config.api.rate_limit)),
            in_flight: Arc::new(Semaphore::new(config.api.max_in_flight)),
            in_flight_limit: config.api.max_in_flight,
            watched: config.jobs.iter().map(|j| (key(j), j.clone())).collect(),
            generation: 0,
            config: Arc::new(config),
            client,
            store,
            outbox,
            events,
            liveness: Arc::new(Liveness::default()),
        }
    }

    /// A receiver that completes once polling is armed.
    pub fn armed(&mut self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.armed = Some(tx);
        rx
    }

    /// Where to send reloads (and cron ticks).
    pub fn commands(&self) -> mpsc::Sender<Command> {
        self.command_tx.clone()
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

    /// Says so when the watch list cannot be polled at its interval within the budget.
    pub fn warn_if_over_budget(config: &Config) {
        let b = config.budget();
        if !b.fits() {
            warn!(
                jobs = b.jobs,
                needed_per_second = format!("{:.1}", b.demand),
                rate_limit = b.rate_limit,
                effective_interval = %crate::config::format_duration(round(b.effective(config.poll.interval))),
                "the watch list needs more requests per second than api.rate_limit allows; every job will be polled {:.1}x less often than configured",
                b.stretch
            );
        }
    }

    /// Runs until `shutdown` turns true, then lets polls in flight finish writing.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut commands = self.command_rx.take().expect("run is called once");
        let health_rx = self.health_rx.take().expect("run is called once");
        let health_writer = tokio::spawn(write_api_health(
            self.outbox.clone(),
            self.store.clone(),
            health_rx,
        ));
        let rows = self.store.jobs().await?;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Report>();
        let mut states: HashMap<Key, JobState> = HashMap::new();
        let mut heap: BinaryHeap<Reverse<(Instant, u64, Key)>> = BinaryHeap::new();
        let mut seq = 0u64;
        let mut busy: HashMap<Key, ()> = HashMap::new();
        // Jobs holding outcomes the database refused, written again every OWED_RETRY.
        let mut owed: HashSet<Key> = HashSet::new();
        let mut owed_tried = Instant::now();
        // An outage left open by the previous run is still open: the first answer resolves it.
        let mut health = Health {
            unhealthy: self.outbox.api_unhealthy(),
            ..Health::default()
        };
        let writer = GroupWriter::start(self.outbox.clone(), self.store.clone());
        let touches = Arc::new(Touches::default());
        let (stop_touches, mut touches_stopped) = watch::channel(false);
        let touch_flusher = {
            let (touches, store) = (touches.clone(), self.store.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                loop {
                    let last = tokio::select! {
                        _ = every.tick() => false,
                        _ = touches_stopped.wait_for(|s| *s) => true,
                    };
                    match touches.flush(&store).await {
                        Ok(0) => {}
                        Ok(_) => store.health().write_ok(),
                        Err(e) => {
                            store.health().write_failed(&e);
                            debug!("poll times not written yet (kept for the next try): {e:#}");
                        }
                    }
                    if last {
                        return;
                    }
                }
            })
        };

        Self::warn_if_over_budget(&self.config);
        let mut cron = None;
        self.add_jobs(
            &self.config.jobs.clone(),
            &rows,
            &mut states,
            &mut heap,
            &mut seq,
        );
        if let Some(expr) = self.config.poll.schedule.clone() {
            cron = Some(start_cron(&expr, self.command_tx.clone()).await?);
        }
        info!(
            jobs = states.len(),
            rate_limit = self.config.api.rate_limit,
            max_in_flight = self.config.api.max_in_flight,
            "polling armed"
        );
        self.liveness.beat();
        if let Some(tx) = self.armed.take() {
            let _ = tx.send(());
        }
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        let mut stopping = *shutdown.borrow();
        // How long polls in flight get to finish once stopping: their request, then their
        // write. Past it, shutdown goes on without them rather than hang.
        let drain = self
            .config
            .api
            .timeout
            .saturating_add(Duration::from_secs(15));
        let mut drain_until = stopping.then(|| later(Instant::now(), drain));

        loop {
            if stopping && busy.is_empty() {
                break;
            }
            // The next poll goes when it is due and the budget has a slot. The loop never
            // blocks on the budget itself (a pause can last minutes), so reloads, completions
            // and the watchdog's heartbeat are handled meanwhile.
            let next_due = heap
                .peek()
                .map(|Reverse((t, _, _))| (*t).max(self.budget.ready_at(Instant::now())));
            // Until a request has succeeded, one at a time: a wrong key costs at most 3.
            let may_dispatch = !stopping
                && (health.verified || busy.is_empty())
                && self.in_flight.available_permits() > 0;
            let sleep = async {
                match (may_dispatch, next_due) {
                    // Not through the timer: it has 1 ms ticks, so even an elapsed deadline
                    // would wait for the next one and cap polling at 1,000/s.
                    (true, Some(t)) if t <= Instant::now() => {}
                    (true, Some(t)) => tokio::time::sleep_until(t).await,
                    _ => std::future::pending::<()>().await,
                }
            };
            let drain_over = async {
                match drain_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.changed(), if !stopping => {
                    stopping = true;
                    drain_until = Some(later(Instant::now(), drain));
                    info!(in_flight = busy.len(), "stopping: no new polls; waiting for those in flight to finish writing");
                }
                _ = drain_over => {
                    error!(in_flight = busy.len(), "polls still in flight {} after the stop was asked for; stopping without them", crate::config::format_duration(drain));
                    break;
                }
                Some(report) = done_rx.recv() => {
                    let k = match &report {
                        Report::Done(d) => d.key.clone(),
                        Report::Panicked { key, .. } => key.clone(),
                    };
                    busy.remove(&k);
                    // The finished job is in neither map until `finish` puts it back.
                    let in_rotation = states.len() + busy.len() + 1;
                    match self.finish(report, &mut states, &mut heap, &mut seq, &mut health, in_rotation).await {
                        Some(true) => { owed.insert(k); }
                        _ => { owed.remove(&k); }
                    }
                }
                Some(cmd) = commands.recv() => match cmd {
                    Command::Tick => {
                        let now = Instant::now();
                        for (k, s) in states.iter_mut().filter(|(k, _)| !busy.contains_key(*k)) {
                            schedule(&mut heap, &mut seq, k.clone(), s, now);
                        }
                    }
                    Command::Reload(boxed) => {
                        let (config, client) = *boxed;
                        let rows = rows_now(&self.store).await;
                        if config.api.auth != self.config.api.auth || config.api.endpoint != self.config.api.endpoint {
                            // New credentials (or a new endpoint) deserve a try now, not after
                            // the back-off the old ones earned: one probe, then the usual rules.
                            if health.auth_streak > 0 || !health.verified {
                                info!("credentials or endpoint changed: lifting the back-off; one request probes them");
                            }
                            self.budget.clear_pause();
                            health.auth_streak = 0;
                            health.verified = false;
                        }
                        self.reload(config, client, &rows, &busy, &mut states, &mut heap, &mut seq, &mut cron).await;
                        owed.retain(|k| states.contains_key(k) || busy.contains_key(k));
                    }
                },
                _ = heartbeat.tick() => {
                    self.liveness.beat();
                    if !stopping && !owed.is_empty() && owed_tried.elapsed() >= OWED_RETRY {
                        owed_tried = Instant::now();
                        // While the database is known to refuse writes, one job probes it;
                        // once it takes them, every job's owed outcomes go.
                        let probe_only = self.store.health().is_failing();
                        let ready: Vec<Key> = owed
                            .iter()
                            .filter(|k| !busy.contains_key(*k) && states.contains_key(*k))
                            .take(if probe_only { 1 } else { usize::MAX })
                            .cloned()
                            .collect();
                        for k in ready {
                            let state = states.remove(&k).expect("checked above");
                            busy.insert(k.clone(), ());
                            let task = self.task(&writer, &touches);
                            let tx = done_tx.clone();
                            tokio::spawn(async move {
                                let report = match crate::vitals::contain(task.write_owed(k.clone(), state)).await {
                                    Ok(report) => report,
                                    Err(why) => Report::Panicked { key: k, why },
                                };
                                let _ = tx.send(report);
                            });
                        }
                    }
                }
                _ = sleep => {
                    // Stale heap entries (a removed job, one being polled, or one scheduled
                    // again since) are skipped.
                    if let Some(Reverse((_, entry, k))) = heap.peek() {
                        if busy.contains_key(k) || states.get(k).is_none_or(|s| s.sched != *entry) {
                            heap.pop();
                            continue;
                        }
                    }
                    let now = Instant::now();
                    if self.budget.try_take(now).is_some() {
                        continue;
                    }
                    let Some(Reverse((due, _, k))) = heap.pop() else { continue };
                    self.budget.record_wait(now.saturating_duration_since(due));
                    let permit = self.in_flight.clone().acquire_owned().await.expect("semaphore never closed");
                    let state = states.remove(&k).expect("checked above");
                    busy.insert(k.clone(), ());
                    let task = self.task(&writer, &touches);
                    let tx = done_tx.clone();
                    tokio::spawn(async move {
                        // A panic anywhere in the poll is reported, so the job is not left
                        // "in flight" for ever (which would also hang shutdown).
                        let report = match crate::vitals::contain(task.poll(k.clone(), state)).await {
                            Ok(report) => report,
                            Err(why) => Report::Panicked { key: k, why },
                        };
                        drop(permit);
                        let _ = tx.send(report);
                    });
                }
            }
            self.liveness.beat();
        }
        // Last chance for outcomes the database refused earlier. The first refusal ends it:
        // the others would be refused too, each after the busy timeout.
        for s in states.values_mut().filter(|s| !s.unwritten.is_empty()) {
            let write = writer.write(
                s.unwritten.clone(),
                s.job.clone(),
                s.first_seen,
                Utc::now(),
                self.config.clone(),
            );
            match tokio::time::timeout(Duration::from_secs(10), write).await {
                Ok(Ok(())) => s.unwritten.clear(),
                _ => break,
            }
        }
        let lost: usize = states.values().map(|s| s.unwritten.len()).sum();
        if lost > 0 {
            error!(
                outcomes = lost,
                "the database refused these poll outcomes until the end; they were not written and will be re-observed on the next start"
            );
        }
        if let Some(mut c) = cron {
            let _ = c.shutdown().await;
        }
        let _ = stop_touches.send(true);
        let _ = touch_flusher.await;
        // Let the health writer finish what it was given: swap out our sender so it sees the
        // channel close.
        drop(std::mem::replace(
            &mut self.health_tx,
            mpsc::unbounded_channel().0,
        ));
        let _ = health_writer.await;
        info!("poller stopped");
        Ok(())
    }

    /// A poll task sharing this poller's client, writer and configuration.
    fn task(&self, writer: &GroupWriter, touches: &Arc<Touches>) -> PollTask {
        PollTask {
            client: self.client.clone(),
            writer: writer.clone(),
            config: self.config.clone(),
            events: self.events.clone(),
            writer_wait: WRITER_WAIT,
            touches: Some(touches.clone()),
        }
    }

    fn add_jobs(
        &self,
        jobs: &[JobConfig],
        rows: &HashMap<Key, crate::store::JobRow>,
        states: &mut HashMap<Key, JobState>,
        heap: &mut BinaryHeap<Reverse<(Instant, u64, Key)>>,
        seq: &mut u64,
    ) {
        let now = Instant::now();
        let n = jobs.len().max(1) as u32;
        for (i, job) in jobs.iter().enumerate() {
            let k = key(job);
            let Some(mut state) =
                JobState::from_row(job, rows.get(&k), self.config.poll.stop_after_terminal)
            else {
                debug!(app_id = %job.app_id, job_id = %job.job_id, "already STOPPED: not polled (poll.stop_after_terminal)");
                continue;
            };
            state.generation = self.generation;
            if self.config.poll.schedule.is_none() {
                // Spread the first polls evenly over the interval so they never fire together.
                let offset = self.config.job_interval(job).mul_f64(i as f64 / n as f64);
                schedule(heap, seq, k.clone(), &mut state, later(now, offset));
            }
            states.insert(k, state);
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn reload(
        &mut self,
        config: Config,
        client: RtcClient,
        rows: &HashMap<Key, crate::store::JobRow>,
        busy: &HashMap<Key, ()>,
        states: &mut HashMap<Key, JobState>,
        heap: &mut BinaryHeap<Reverse<(Instant, u64, Key)>>,
        seq: &mut u64,
        cron: &mut Option<tokio_cron_scheduler::JobScheduler>,
    ) {
        let wanted: HashMap<Key, &JobConfig> = config.jobs.iter().map(|j| (key(j), j)).collect();
        let before = states.len();
        states.retain(|k, _| wanted.contains_key(k));
        let removed = before - states.len();
        // Jobs in flight are not in `states`: they are dropped, or take their new
        // configuration, when they come back (see `finish`).
        for (k, s) in states.iter_mut() {
            s.job = wanted[k].clone();
        }
        let new_jobs: Vec<JobConfig> = config
            .jobs
            .iter()
            .filter(|j| !states.contains_key(&key(j)) && !busy.contains_key(&key(j)))
            .cloned()
            .collect();
        self.budget.set_rate(config.api.rate_limit);
        if config.api.max_in_flight != self.in_flight_limit {
            if config.api.max_in_flight > self.in_flight_limit {
                self.in_flight
                    .add_permits(config.api.max_in_flight - self.in_flight_limit);
            } else {
                let fewer = (self.in_flight_limit - config.api.max_in_flight) as u32;
                if let Ok(p) = self.in_flight.clone().acquire_many_owned(fewer).await {
                    p.forget();
                }
            }
            self.in_flight_limit = config.api.max_in_flight;
        }
        let schedule_changed = config.poll.schedule != self.config.poll.schedule;
        self.watched = config.jobs.iter().map(|j| (key(j), j.clone())).collect();
        self.generation += 1;
        for s in states.values_mut() {
            s.generation = self.generation;
        }
        self.config = Arc::new(config);
        self.client = client;
        let now = Instant::now();
        // New jobs are polled at once (through the budget), not after a whole interval.
        let mut added = 0;
        for job in &new_jobs {
            let k = key(job);
            // A STOPPED job that was already on the list is not new: it stays unpolled.
            let Some(mut state) =
                JobState::from_row(job, rows.get(&k), self.config.poll.stop_after_terminal)
            else {
                continue;
            };
            added += 1;
            state.generation = self.generation;
            schedule(heap, seq, k.clone(), &mut state, now);
            states.insert(k, state);
        }
        if schedule_changed {
            if let Some(mut c) = cron.take() {
                let _ = c.shutdown().await;
            }
            if let Some(expr) = self.config.poll.schedule.clone() {
                match start_cron(&expr, self.command_tx.clone()).await {
                    Ok(c) => *cron = Some(c),
                    Err(e) => error!("cannot start poll.schedule {expr:?}: {e:#}"),
                }
            } else {
                for (k, s) in states.iter_mut() {
                    schedule(heap, seq, k.clone(), s, now);
                }
            }
        }
        Self::warn_if_over_budget(&self.config);
        info!(
            jobs = states.len(),
            added, removed, "configuration reloaded"
        );
    }

    /// Takes a finished task's report: the job's state goes back in, scheduled for its next
    /// poll. Returns whether the job still owes outcomes to the database (`None` when it is
    /// no longer polled).
    async fn finish(
        &mut self,
        report: Report,
        states: &mut HashMap<Key, JobState>,
        heap: &mut BinaryHeap<Reverse<(Instant, u64, Key)>>,
        seq: &mut u64,
        health: &mut Health,
        in_rotation: usize,
    ) -> Option<bool> {
        let now = Instant::now();
        let jitter = || rand::rng().random::<f64>();
        let Done {
            key: k,
            mut state,
            result,
        } = match report {
            Report::Done(done) => *done,
            Report::Panicked { key: k, why } => {
                metrics::counter!("recwatch_task_panics_total", "task" => "poll").increment(1);
                let job = self.watched.get(&k)?.clone();
                error!(app_id = %k.0, job_id = %k.1, name = job.label(), "the poll task failed (panicked: {why}); the job's state is reloaded from the database and it is polled again");
                let row = match self.store.job(&k.0, &k.1).await {
                    Ok(row) => row,
                    Err(e) => {
                        warn!(app_id = %k.0, job_id = %k.1, "cannot read the job's row after the failure: {e:#}; it starts again from no known state");
                        None
                    }
                };
                let mut state =
                    JobState::from_row(&job, row.as_ref(), self.config.poll.stop_after_terminal)?;
                state.generation = self.generation;
                state.failures = 1;
                let at = later(
                    now,
                    failure_delay(self.config.job_interval(&state.job), 1, jitter()),
                );
                schedule(heap, seq, k.clone(), &mut state, at);
                states.insert(k, state);
                return Some(false);
            }
        };
        if !self.watched.contains_key(&k) {
            debug!(app_id = %k.0, job_id = %k.1, "removed from the watch list while in flight");
            return None;
        }
        // A reload while this job was in flight: take its new name, notify list, interval.
        if state.generation != self.generation {
            state.job = self.watched[&k].clone();
            state.generation = self.generation;
        }
        let Some(result) = result else {
            // Only owed outcomes were written: the job's poll stays when it was due (on a
            // cron schedule a job has a due time only while it backs off after a failure).
            let owes = !state.unwritten.is_empty();
            if self.config.poll.schedule.is_none() || state.failures > 0 {
                let due = state.due;
                schedule(heap, seq, k.clone(), &mut state, due);
            }
            states.insert(k, state);
            return Some(owes);
        };
        let change = match &result {
            Ok(()) => health.success(),
            Err(e) => health.failure(e, self.config.rules.api_failure_threshold, in_rotation),
        };
        // Written by its own task: a locked database must not stall this loop.
        match change {
            Some(change) => {
                self.outbox
                    .set_api_unhealthy(matches!(change, ApiHealthChange::Unhealthy { .. }));
                let _ = self.health_tx.send((Some(change), self.config.clone()));
            }
            None if result.is_err()
                && health.unhealthy
                && health
                    .last_reminder_check
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) =>
            {
                health.last_reminder_check = Some(now);
                let _ = self.health_tx.send((None, self.config.clone()));
            }
            None => {}
        }
        let next = match &result {
            Ok(()) => {
                state.failures = 0;
                if self.config.poll.stop_after_terminal
                    && state.phase.as_ref().is_some_and(Phase::is_terminal)
                {
                    info!(app_id = %k.0, job_id = %k.1, "job is STOPPED: no longer polled (poll.stop_after_terminal)");
                    if state.unwritten.is_empty() {
                        return None;
                    }
                    // Keep it until what it saw is written: the next poll writes it.
                    Some(later(
                        now,
                        self.config
                            .job_interval(&state.job)
                            .min(Duration::from_secs(5)),
                    ))
                } else {
                    Some(later(now, self.config.job_interval(&state.job)))
                }
            }
            Err(e) => match e.kind {
                ErrorKind::Throttled => {
                    let pause = throttle_pause(
                        self.config.api.throttle_backoff,
                        health.throttle_streak,
                        jitter(),
                    );
                    self.budget.pause_until(later(now, pause));
                    metrics::counter!("recwatch_throttled_total").increment(1);
                    warn!(pause = ?round(pause), streak = health.throttle_streak, request_id = e.request_id.as_deref().unwrap_or("-"), "throttled by the API gateway (APIG.0308): pausing every poll");
                    Some(now)
                }
                ErrorKind::Unauthorized => {
                    if health.auth_streak >= AUTH_FAILURES_BEFORE_BACKOFF {
                        let extra = health.auth_streak - AUTH_FAILURES_BEFORE_BACKOFF;
                        let pause = self
                            .config
                            .api
                            .auth_backoff
                            .saturating_mul(1 << extra.min(3));
                        self.budget.pause_until(later(now, pause));
                        // A skewed clock is refused like a bad key: say which it is.
                        let fix = match e.clock_skew_minutes {
                            Some(m) => recwatch_rtc::client::clock_message(m),
                            None => ErrorKind::Unauthorized.hint().to_string(),
                        };
                        error!(
                            refused_in_a_row = health.auth_streak,
                            pause = %crate::config::format_duration(round(pause)),
                            request_id = e.request_id.as_deref().unwrap_or("-"),
                            "the API refused the credentials {} times in a row: stopping every poll so the gateway does not lock the key; {fix}",
                            health.auth_streak
                        );
                    }
                    Some(now)
                }
                _ => {
                    state.failures = state.failures.saturating_add(1);
                    let interval = self.config.job_interval(&state.job);
                    Some(later(
                        now,
                        failure_delay(interval, state.failures, jitter()),
                    ))
                }
            },
        };
        let owes = !state.unwritten.is_empty();
        if let Some(at) = next {
            if self.config.poll.schedule.is_none() || result.is_err() {
                schedule(heap, seq, k.clone(), &mut state, at);
            }
        }
        states.insert(k, state);
        Some(owes)
    }
}

/// Puts a job on the schedule at `at`, superseding any entry it already has there.
fn schedule(
    heap: &mut BinaryHeap<Reverse<(Instant, u64, Key)>>,
    seq: &mut u64,
    k: Key,
    state: &mut JobState,
    at: Instant,
) {
    *seq += 1;
    state.sched = *seq;
    state.due = at;
    heap.push(Reverse((at, *seq, k)));
}

/// Writes the API's health changes as the poller decides them. A change the database
/// refuses stays owed (folded as [`OwedHealth`] says, so memory stays bounded) and is written
/// again every [`OWED_RETRY`] until it is taken, however long that is; a new change is tried
/// at once. Reminder checks (`None`) are folded into one per batch, and skipped while changes
/// are owed (the owed write brings the episode up to date first). A panic while writing is a
/// bug, not an outside fault: it is contained and reported, and what it tried to write is
/// dropped rather than retried into the same panic for ever.
async fn write_api_health(
    outbox: Outbox,
    store: Store,
    mut rx: mpsc::UnboundedReceiver<(Option<ApiHealthChange>, Arc<Config>)>,
) {
    let mut owed = OwedHealth::default();
    // The configuration that came with the latest message: rules and channels to write with.
    let mut config: Option<Arc<Config>> = None;
    let mut retry_at: Option<Instant> = None;
    let mut refusals = 0u32;
    let mut open = true;
    loop {
        let retry = async {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let (mut changed, mut remind) = (false, false);
        tokio::select! {
            msg = rx.recv(), if open => match msg {
                // Stopping: one last try for what is owed.
                None => {
                    open = false;
                    changed = true;
                }
                Some(first) => {
                    let mut batch = vec![first];
                    while let Ok(next) = rx.try_recv() {
                        batch.push(next);
                    }
                    for (change, c) in batch {
                        config = Some(c);
                        match change {
                            Some(change) => {
                                outbox.note_api_health(&change);
                                owed.push(change);
                                changed = true;
                            }
                            None => remind = true,
                        }
                    }
                }
            },
            _ = retry => changed = true,
        }
        // No configuration yet means no message yet, so nothing owed.
        let Some(config) = config.clone() else {
            if open {
                continue;
            }
            break;
        };
        let write = async {
            if changed && !owed.is_empty() {
                Some(outbox.write_api_health(&store, &owed, &config).await)
            } else if remind && owed.is_empty() {
                if let Err(e) = outbox.api_still_unhealthy(&store, &config).await {
                    debug!(
                        "the api_unhealthy reminder check was not written: {e:#}; the next failed poll asks again"
                    );
                }
                None
            } else {
                None
            }
        };
        match crate::vitals::contain(write).await {
            Ok(None) => {}
            Ok(Some(Ok(()))) => {
                if refusals > 0 {
                    info!(
                        attempts = refusals + 1,
                        "the API's health is written at last"
                    );
                }
                owed.clear();
                refusals = 0;
                retry_at = None;
            }
            Ok(Some(Err(e))) => {
                refusals = refusals.saturating_add(1);
                if refusals == 1 {
                    warn!(
                        "cannot record the API's health yet: {e:#}; kept, and written again every {} s until the database takes it",
                        OWED_RETRY.as_secs()
                    );
                } else {
                    debug!(
                        attempt = refusals,
                        "cannot record the API's health yet: {e:#}"
                    );
                }
                retry_at = Some(later(Instant::now(), OWED_RETRY));
            }
            Err(why) => {
                error!(
                    "writing the API's health panicked: {why}; this change of it is not written"
                );
                metrics::counter!("recwatch_task_panics_total", "task" => "api_health")
                    .increment(1);
                owed.clear();
                refusals = 0;
                retry_at = None;
            }
        }
        if !open {
            if !owed.is_empty() {
                error!(
                    "the API's health could not be written before stopping; the next start takes it up from the episode on record and its first polls"
                );
            }
            break;
        }
    }
}

async fn rows_now(store: &Store) -> HashMap<Key, crate::store::JobRow> {
    store.jobs().await.unwrap_or_default()
}

async fn start_cron(
    expr: &str,
    tx: mpsc::Sender<Command>,
) -> anyhow::Result<tokio_cron_scheduler::JobScheduler> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let sched = JobScheduler::new().await?;
    sched
        .add(Job::new_async(expr, move |_, _| {
            let tx = tx.clone();
            Box::pin(async move {
                // A full queue means the last tick is still waiting: dropping this one keeps
                // ticks from piling up behind a slow budget.
                let _ = tx.try_send(Command::Tick);
            })
        })?)
        .await?;
    sched.start().await?;
    Ok(sched)
}

/// At most this many polls in a row must fail before the API counts as unhealthy, however
/// many jobs are watched: with 10,000 jobs, 50 failures in a row and not one answer is an
/// outage, and it is seen within seconds.
const HEALTH_WINDOW_CAP: usize = 50;

/// How many polls in a row (with no answer between) must fail before the API counts as
/// unhealthy: `threshold`, and at least one per job being polled (up to
/// [`HEALTH_WINDOW_CAP`]). A job that keeps failing on its own, or a few that sit next to each
/// other in the schedule, never make a streak that long while the other jobs are answered, so
/// the alert does not fire and resolve every round.
pub fn failures_needed(threshold: u32, jobs: usize) -> u32 {
    threshold.max(jobs.min(HEALTH_WINDOW_CAP) as u32)
}

/// The API's health as seen across every poll: a pure state machine fed each poll's outcome,
/// so its rules are tested with a table.
///
/// - an answer (a job record, or the RTC service saying a job does not exist) is health;
/// - refusals: after [`AUTH_FAILURES_BEFORE_BACKOFF`] in a row polling stops, so the API is
///   unhealthy at once;
/// - throttling: `threshold` throttled answers in a row (the whole poller is paused);
/// - anything else (5xx, timeouts, connection errors, redirects, the gateway's 404, other 4xx,
///   unreadable answers, answers about another job): [`failures_needed`] in a row.
///
/// It becomes healthy again with the first answer.
#[derive(Default)]
struct Health {
    /// A request has succeeded since start or since the last refusal.
    verified: bool,
    auth_streak: u32,
    throttle_streak: u32,
    /// Failures in a row of any kind but not-found (the API answered about the job).
    failure_streak: u32,
    unhealthy: bool,
    last_reminder_check: Option<Instant>,
}

impl Health {
    fn success(&mut self) -> Option<ApiHealthChange> {
        self.verified = true;
        self.auth_streak = 0;
        self.throttle_streak = 0;
        self.failure_streak = 0;
        if std::mem::take(&mut self.unhealthy) {
            Some(ApiHealthChange::Recovered)
        } else {
            None
        }
    }

    /// A failed poll; `jobs` is how many jobs are being polled.
    fn failure(&mut self, e: &RtcError, threshold: u32, jobs: usize) -> Option<ApiHealthChange> {
        let from_rtc = e
            .error_code
            .as_deref()
            .is_some_and(|c| c.starts_with("RTC."));
        match e.kind {
            // The RTC service answered, about this job only.
            ErrorKind::NotFound => return self.success(),
            ErrorKind::Unauthorized => {
                self.verified = false;
                self.auth_streak += 1;
            }
            ErrorKind::Throttled => self.throttle_streak += 1,
            // The RTC service itself answered (a deactivated app, a bad parameter): the
            // credentials work, though the failure still counts.
            _ if from_rtc => {
                self.verified = true;
                self.auth_streak = 0;
            }
            _ => {}
        }
        self.failure_streak = self.failure_streak.saturating_add(1);
        if self.unhealthy {
            return None;
        }
        let reason = if self.auth_streak >= AUTH_FAILURES_BEFORE_BACKOFF {
            format!(
                "the RTC API refused the credentials {} times in a row, so every poll stops for api.auth_backoff; the last: {}",
                self.auth_streak,
                e.cause()
            )
        } else if self.throttle_streak >= threshold {
            format!(
                "{} polls in a row were throttled; the last: {}",
                self.throttle_streak,
                e.cause()
            )
        } else if self.failure_streak >= failures_needed(threshold, jobs) {
            format!(
                "the last {} polls failed and none was answered; the last: {}",
                self.failure_streak,
                e.cause()
            )
        } else {
            return None;
        };
        self.unhealthy = true;
        Some(ApiHealthChange::Unhealthy { reason })
    }
}

/// One poll, from request to committed write.
struct PollTask {
    client: RtcClient,
    writer: GroupWriter,
    config: Arc<Config>,
    events: broadcast::Sender<Event>,
    /// How long to queue for the write connection before keeping the outcome for the next
    /// poll. Short in the daemon: while another process holds the database's write lock, the
    /// one write waiting on it holds the connection for up to the busy timeout, and polls
    /// queued behind it would stop all polling.
    writer_wait: Duration,
    /// Where a poll that changed nothing records its time and snapshot, written in batches;
    /// `None` writes every poll at once (poll-once).
    touches: Option<Arc<Touches>>,
}

impl PollTask {
    /// Whether this outcome needs no write of its own: no transition, and nothing a
    /// condition rule could do with it.
    fn is_quiet(&self, record: &PollRecord, state: &JobState) -> bool {
        let PollOutcome::Ok {
            job,
            transition: None,
            ..
        } = &record.outcome
        else {
            return false;
        };
        if state.maybe_not_found_open || state.maybe_stuck_open {
            return false;
        }
        let stuck_now = self.config.rules.stuck_init.is_some()
            && crate::rules::snapshot_stuck_init(
                job,
                state.first_seen,
                self.config.rules.init_grace,
                record.polled_at,
            )
            .unwrap_or(false);
        !stuck_now
    }

    /// After a write: which condition episodes may now be open for this job.
    fn note_conditions(&self, state: &mut JobState, now: chrono::DateTime<Utc>) {
        let Some(last) = state.unwritten.last() else {
            return;
        };
        match &last.outcome {
            PollOutcome::Ok { job, .. } => {
                state.maybe_not_found_open = false;
                // Only an answer with a state says whether the job is still in INIT.
                if let Some(stuck) = crate::rules::snapshot_stuck_init(
                    job,
                    state.first_seen,
                    self.config.rules.init_grace,
                    now,
                ) {
                    state.maybe_stuck_open = stuck;
                }
            }
            PollOutcome::Failed { kind, .. } if kind == "not_found" => {
                state.maybe_not_found_open = true
            }
            PollOutcome::Failed { .. } => {}
        }
    }

    async fn poll(self, k: Key, mut state: JobState) -> Report {
        let started = std::time::Instant::now();
        let fetched = self.client.get_job(&k.0, &k.1).await;
        let elapsed = started.elapsed();
        metrics::histogram!("recwatch_poll_duration_seconds").record(elapsed.as_secs_f64());
        let outcome_label = match &fetched {
            Ok(_) => "ok",
            Err(e) => e.kind.as_str(),
        };
        metrics::counter!("recwatch_polls_total", "outcome" => outcome_label).increment(1);
        let polled_at = Utc::now();
        let (outcome, result) = match fetched {
            Ok(Fetched {
                job,
                raw,
                request_id,
                ..
            }) => {
                let detected = detect(state.phase.as_ref(), &job);
                let transition = match detected {
                    Detected::Transition { from, to } => {
                        info!(
                            app_id = %k.0, job_id = %k.1, name = state.job.label(),
                            from = from.as_ref().map(|p| p.state.as_str()).unwrap_or("-"),
                            to = %to.state, stop_reason = to.stop_reason.as_deref().unwrap_or("-"),
                            request_id = request_id.as_deref().unwrap_or("-"),
                            "state change"
                        );
                        // Unknown states share one label: the API cannot grow the series.
                        metrics::counter!("recwatch_transitions_total", "to_state" => recwatch_rtc::model::state_label(&to.state)).increment(1);
                        let _ = self.events.send(Event::Transition {
                            job: state.job.clone(),
                            from: from.clone(),
                            to: to.clone(),
                            description: job.description.clone(),
                        });
                        state.phase = Some(to.clone());
                        Some((from, to))
                    }
                    Detected::Unchanged => None,
                    Detected::NoState => {
                        warn!(app_id = %k.0, job_id = %k.1, request_id = request_id.as_deref().unwrap_or("-"), "the API's answer has no state field; keeping the last known state");
                        None
                    }
                };
                let outcome = PollOutcome::Ok {
                    job: Box::new(job),
                    raw,
                    request_id,
                    transition,
                };
                (outcome, Ok(()))
            }
            Err(e) => {
                let level_warn = !matches!(e.kind, ErrorKind::Throttled);
                if level_warn {
                    warn!(app_id = %k.0, job_id = %k.1, name = state.job.label(), kind = e.kind.as_str(), "poll failed: {e}");
                } else {
                    debug!(app_id = %k.0, job_id = %k.1, "poll throttled: {e}");
                }
                let _ = self.events.send(Event::PollFailed {
                    job: state.job.clone(),
                    error: e.clone(),
                });
                let outcome = PollOutcome::Failed {
                    kind: e.kind.as_str().into(),
                    error: e.to_string(),
                };
                (outcome, Err(e))
            }
        };
        let record = PollRecord {
            app_id: k.0.clone(),
            job_id: k.1.clone(),
            name: state.job.name.clone(),
            polled_at,
            outcome,
        };
        // A poll that changed nothing and cannot open, remind or resolve a condition only
        // refreshes the job's poll time and snapshot: batched, so the database does work per
        // change rather than per poll.
        if let Some(touches) = &self.touches {
            if state.unwritten.is_empty() && self.is_quiet(&record, &state) {
                if let PollOutcome::Ok { job, raw, .. } = record.outcome {
                    touches.touch(
                        k.clone(),
                        Touch {
                            polled_at,
                            raw,
                            description: job.description,
                        },
                    );
                }
                return Report::Done(Box::new(Done {
                    key: k,
                    state,
                    result: Some(result),
                }));
            }
            touches.forget(&k);
        }
        state.keep(record);
        self.write(k, state, polled_at, Some(result)).await
    }

    /// Writes only what the job owes from earlier polls (the database refused it then).
    async fn write_owed(self, k: Key, state: JobState) -> Report {
        self.write(k, state, Utc::now(), None).await
    }

    /// Writes the job's unwritten outcomes and the alerts they cause. What cannot be written
    /// stays in `state.unwritten`, for the next write.
    async fn write(
        self,
        k: Key,
        mut state: JobState,
        now: chrono::DateTime<Utc>,
        result: Option<Result<(), RtcError>>,
    ) -> Report {
        // Keep trying for a while (`LOCK_RETRY`): a lock held by another process usually
        // clears quickly. A database that refuses for any other reason (a full disk) does not
        // recover in a second: the outcomes are kept and written again every OWED_RETRY.
        // The error is `Some(why)` when the write panicked, `None` when the outcomes are kept.
        let unwritten = state.unwritten.len();
        let written = retry_locked(LOCK_RETRY, |attempt| {
            // Waits at most `writer_wait`: while another process holds the database's write
            // lock, the writer is stuck for up to the busy timeout, and a poll waiting on it
            // would hold its in-flight slot and stop polling. A write given up on here may
            // still land later; sending it again with the next poll is safe, because a
            // transition is only written (and alerted) if the job's row still shows its
            // `from` state.
            let write = self.writer.write(
                state.unwritten.clone(),
                state.job.clone(),
                state.first_seen,
                now,
                self.config.clone(),
            );
            let (k, wait) = (&k, self.writer_wait);
            async move {
                let Ok(written) = tokio::time::timeout(wait, write).await else {
                    debug!(app_id = %k.0, job_id = %k.1, unwritten, "the database writer is busy (the database is probably locked by another process): kept for this job's next poll");
                    return Attempt::Done(Err(None));
                };
                let Err(e) = written else {
                    return Attempt::Done(Ok(()));
                };
                if let Some(p) = e.downcast_ref::<outbox::WritePanicked>() {
                    return Attempt::Done(Err(Some(p.0.clone())));
                }
                if !matches!(e.downcast_ref::<StoreError>(), Some(StoreError::Locked(_))) {
                    debug!(app_id = %k.0, job_id = %k.1, unwritten, "cannot write the poll outcome: {e:#}; kept and written again shortly");
                    return Attempt::Done(Err(None));
                }
                debug!(app_id = %k.0, job_id = %k.1, attempt, unwritten, "cannot write the poll outcome (database locked by another process): {e:#}");
                Attempt::Locked(None)
            }
        })
        .await;
        match written {
            Ok(()) => {
                self.note_conditions(&mut state, now);
                state.unwritten.clear();
            }
            // Written again as they are, these outcomes would panic again: the job starts
            // over from what the database holds.
            Err(Some(why)) => return Report::Panicked { key: k, why },
            Err(None) => {}
        }
        Report::Done(Box::new(Done {
            key: k,
            state,
            result,
        }))
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs().max(if d.is_zero() { 0 } else { 1 }))
}

/// `recwatch poll-once`: every job once, through the same budget, client and store.
pub async fn poll_once(
    config: &Config,
    client: &RtcClient,
    store: &Store,
    outbox: &Outbox,
) -> Vec<(JobConfig, Result<Option<Phase>, String>, bool)> {
    let budget = Budget::new(config.api.rate_limit);
    let rows = store.jobs().await.unwrap_or_default();
    let sem = Arc::new(Semaphore::new(config.api.max_in_flight));
    let shared = Arc::new(config.clone());
    let writer = GroupWriter::start(outbox.clone(), store.clone());
    let mut tasks = Vec::new();
    let (events, _) = broadcast::channel(16);
    for job in &config.jobs {
        budget.acquire().await;
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let k = key(job);
        let row = rows.get(&k);
        let state = JobState::from_row(job, row, false).expect("terminal jobs are kept when asked");
        let task = PollTask {
            client: client.clone(),
            writer: writer.clone(),
            config: shared.clone(),
            events: events.clone(),
            // poll-once has nothing better to do than wait its turn.
            writer_wait: Duration::from_secs(30),
            touches: None,
        };
        let before = state.phase.clone();
        let job = job.clone();
        tasks.push(tokio::spawn(async move {
            let report = crate::vitals::contain(task.poll(k, state)).await;
            drop(permit);
            (job, before, report)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        let Ok((job, before, report)) = t.await else {
            continue;
        };
        let done = match report {
            Ok(Report::Done(done)) => *done,
            Ok(Report::Panicked { why, .. }) | Err(why) => {
                error!(app_id = %job.app_id, job_id = %job.job_id, "the poll failed (panicked: {why})");
                out.push((job, Err(format!("internal error (panicked: {why})")), false));
                continue;
            }
        };
        if !done.state.unwritten.is_empty() {
            error!(app_id = %done.key.0, job_id = %done.key.1, "could not write this job's outcome");
        }
        let changed = done.state.phase != before;
        out.push((
            done.state.job.clone(),
            match done.result {
                Some(Ok(())) => Ok(done.state.phase.clone()),
                Some(Err(e)) => Err(e.to_string()),
                None => Ok(done.state.phase.clone()),
            },
            changed,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_delay_table() {
        let s = Duration::from_secs;
        let cases = [
            ("first failure is one interval", s(30), 1, 0.5, s(30)),
            ("doubles", s(30), 2, 0.5, s(60)),
            ("doubles again", s(30), 3, 0.5, s(120)),
            ("capped at 5 minutes", s(30), 10, 0.5, s(300)),
            (
                "huge streak does not overflow",
                s(30),
                u32::MAX,
                0.5,
                s(300),
            ),
            ("long interval caps at itself", s(600), 4, 0.5, s(600)),
            (
                "interval of Duration::MAX saturates",
                Duration::MAX,
                3,
                1.0,
                Duration::MAX,
            ),
            ("jitter low", s(30), 1, 0.0, s(24)),
            ("jitter high", s(30), 1, 1.0, s(36)),
        ];
        for (name, interval, failures, jitter, want) in cases {
            assert_eq!(failure_delay(interval, failures, jitter), want, "{name}");
        }
    }

    #[test]
    fn throttle_pause_table() {
        let s = Duration::from_secs;
        let cases = [
            ("first", 1, 0.5, s(3)),
            ("second doubles", 2, 0.5, s(6)),
            ("capped at a minute", 30, 0.5, s(60)),
        ];
        for (name, streak, jitter, want) in cases {
            assert_eq!(throttle_pause(s(3), streak, jitter), want, "{name}");
        }
    }

    /// Config values that would overflow an `Instant` or a `Duration` saturate instead.
    #[test]
    fn absurd_durations_saturate_table() {
        let now = Instant::now();
        let far = Duration::from_secs(30 * 365 * 86400);
        let cases = [
            (
                "small",
                Duration::from_secs(30),
                now + Duration::from_secs(30),
            ),
            ("Duration::MAX", Duration::MAX, now + far),
            ("2^64-1 s", Duration::from_secs(u64::MAX), now + far),
        ];
        for (name, d, want) in cases {
            assert_eq!(later(now, d), want, "{name}");
        }
        let mul = [
            (
                "small",
                Duration::from_secs(10),
                1.2,
                Duration::from_secs(12),
            ),
            ("Duration::MAX * 1.2", Duration::MAX, 1.2, Duration::MAX),
            (
                "times infinity",
                Duration::from_secs(1),
                f64::INFINITY,
                Duration::MAX,
            ),
            ("times NaN", Duration::from_secs(1), f64::NAN, Duration::MAX),
        ];
        for (name, d, f, want) in mul {
            assert_eq!(mul_saturating(d, f), want, "{name}");
        }
        assert_eq!(
            throttle_pause(Duration::MAX, u32::MAX, 1.0),
            Duration::from_secs(72),
            "a huge throttle back-off is capped at a minute (+20%)"
        );
    }

    fn rec(from: Option<&str>, to: Option<&str>) -> PollRecord {
        let phase = |s: &str| Phase {
            state: s.into(),
            stop_reason: None,
        };
        PollRecord {
            app_id: "a".into(),
            job_id: "j".into(),
            name: None,
            polled_at: Utc::now(),
            outcome: PollOutcome::Ok {
                job: Box::default(),
                raw: "{}".into(),
                request_id: None,
                transition: to.map(|to| (from.map(phase), phase(to))),
            },
        }
    }

    fn chain(records: &[PollRecord]) -> Vec<(Option<String>, Option<String>)> {
        records
            .iter()
            .map(|r| match &r.outcome {
                PollOutcome::Ok {
                    transition: Some((from, to)),
                    ..
                } => (
                    from.as_ref().map(|p| p.state.clone()),
                    Some(to.state.clone()),
                ),
                _ => (None, None),
            })
            .collect()
    }

    #[test]
    fn unwritten_outcomes_stay_bounded_and_chained_table() {
        let s = |x: &str| Some(x.to_string());
        type Chain = Vec<(Option<String>, Option<String>)>;
        let cases: Vec<(&str, Vec<PollRecord>, usize, bool, Chain)> = vec![
            (
                "under the bound: untouched",
                vec![rec(None, Some("A")), rec(Some("A"), Some("B"))],
                4,
                false,
                vec![(None, s("A")), (s("A"), s("B"))],
            ),
            (
                "one over: the second is folded into the third",
                vec![
                    rec(None, Some("A")),
                    rec(Some("A"), Some("B")),
                    rec(Some("B"), Some("C")),
                    rec(Some("C"), Some("D")),
                    rec(Some("D"), Some("E")),
                ],
                4,
                true,
                vec![
                    (None, s("A")),
                    (s("A"), s("C")),
                    (s("C"), s("D")),
                    (s("D"), s("E")),
                ],
            ),
            (
                "a trailing unchanged poll is kept last",
                vec![
                    rec(None, Some("A")),
                    rec(Some("A"), Some("B")),
                    rec(Some("B"), Some("C")),
                    rec(Some("C"), Some("D")),
                    rec(None, None),
                ],
                4,
                true,
                vec![
                    (None, s("A")),
                    (s("A"), s("C")),
                    (s("C"), s("D")),
                    (None, None),
                ],
            ),
            (
                "far over: first and latest kept, chain unbroken",
                (0..40)
                    .map(|i| {
                        let from = (i > 0).then(|| (i - 1).to_string());
                        rec(from.as_deref(), Some(&i.to_string()))
                    })
                    .collect(),
                4,
                true,
                vec![
                    (None, s("0")),
                    (s("0"), s("37")),
                    (s("37"), s("38")),
                    (s("38"), s("39")),
                ],
            ),
        ];
        for (name, mut records, max, want_dropped, want) in cases {
            assert_eq!(keep_bounded(&mut records, max), want_dropped, "{name}");
            assert_eq!(chain(&records), want, "{name}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn budget_never_lets_a_window_hold_more_than_the_rate() {
        let budget = Budget::new(10);
        let mut sent = Vec::new();
        let start = Instant::now();
        for _ in 0..55 {
            budget.acquire().await;
            sent.push(Instant::now());
        }
        for (i, t) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
                .count();
            assert!(
                in_window <= 10,
                "{in_window} requests within a second starting at request {i}"
            );
        }
        // And it is not needlessly slow: 55 requests at ~10/s take ~5.5 s.
        let took = start.elapsed();
        assert!(took < Duration::from_millis(5700), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn ready_at_is_when_a_slot_can_be_taken() {
        let budget = Budget::new(5);
        for _ in 0..40 {
            let now = Instant::now();
            let at = budget.ready_at(now);
            if at > now {
                assert!(budget.try_take(now).is_some(), "not ready before ready_at");
                tokio::time::sleep_until(at).await;
            }
            assert!(
                budget.try_take(Instant::now()).is_none(),
                "ready at ready_at"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_request() {
        let budget = Budget::new(100);
        budget.pause_until(Instant::now() + Duration::from_secs(3));
        let start = Instant::now();
        budget.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(3));
    }

    /// An error of `kind` as the client would make it.
    fn err(kind: ErrorKind) -> RtcError {
        let (status, code, detail) = match kind {
            ErrorKind::NotFound => (Some(404), Some("RTC.00001003"), None),
            ErrorKind::EndpointNotFound => (Some(404), Some("APIG.0101"), None),
            ErrorKind::Redirect => (Some(302), None, Some("to http://login.example/")),
            ErrorKind::Unauthorized => (Some(401), Some("APIG.0301"), None),
            ErrorKind::Throttled => (Some(429), Some("APIG.0308"), None),
            ErrorKind::Server => (Some(500), Some("RTC.00002001"), None),
            ErrorKind::Rejected => (Some(400), Some("RTC.00001016"), None),
            ErrorKind::Connection => (None, None, Some("Connection refused")),
            _ => (Some(200), None, None),
        };
        RtcError {
            kind,
            status,
            error_code: code.map(str::to_string),
            error_msg: None,
            request_id: Some("req-1".into()),
            detail: detail.map(str::to_string),
            clock_skew_minutes: None,
        }
    }

    #[test]
    fn health_table() {
        use ErrorKind::*;
        // Each step: a poll's outcome (None: answered) and the change it makes: "-" none,
        // "U" unhealthy, "R" recovered. `why` must be in the unhealthy reason.
        type Step = (Option<ErrorKind>, &'static str);
        let ok: Option<ErrorKind> = None;
        let cases: Vec<(&str, u32, usize, Vec<Step>, &str)> = vec![
            (
                "three failures in a row with three jobs",
                3,
                3,
                vec![
                    (Some(Server), "-"),
                    (Some(Timeout), "-"),
                    (Some(Server), "U"),
                ],
                "the last 3 polls failed",
            ),
            (
                "one episode, one change; the first answer recovers",
                3,
                1,
                vec![
                    (Some(Server), "-"),
                    (Some(Server), "-"),
                    (Some(Server), "U"),
                    (Some(Server), "-"),
                    (ok, "R"),
                    (ok, "-"),
                ],
                "RTC.00002001",
            ),
            (
                "one job failing among answered ones never flaps",
                3,
                4,
                [(Some(Server), "-"), (ok, "-"), (ok, "-"), (ok, "-")].repeat(5),
                "",
            ),
            (
                "three adjacent failing jobs among ten do not flap",
                3,
                10,
                [
                    vec![
                        (Some(Server), "-"),
                        (Some(Timeout), "-"),
                        (Some(WrongJob), "-"),
                    ],
                    vec![(ok, "-"); 7],
                ]
                .concat()
                .repeat(3),
                "",
            ),
            (
                "every one of ten jobs failing is an outage",
                3,
                10,
                [
                    vec![(Some(Connection), "-"); 9],
                    vec![(Some(Connection), "U")],
                ]
                .concat(),
                "(Connection refused) [request id req-1]; check the network",
            ),
            (
                "the window is capped at 50 polls",
                3,
                10_000,
                [vec![(Some(Server), "-"); 49], vec![(Some(Server), "U")]].concat(),
                "the last 50 polls failed",
            ),
            (
                "a constant redirect says where to",
                3,
                2,
                vec![
                    (Some(Redirect), "-"),
                    (Some(Redirect), "-"),
                    (Some(Redirect), "U"),
                ],
                "redirected: HTTP 302 (to http://login.example/) [request id req-1]; check api.endpoint",
            ),
            (
                "a constant gateway 404 is the endpoint, not the jobs",
                3,
                3,
                vec![
                    (Some(EndpointNotFound), "-"),
                    (Some(EndpointNotFound), "-"),
                    (Some(EndpointNotFound), "U"),
                ],
                "HTTP 404 APIG.0101 [request id req-1]; check api.endpoint",
            ),
            (
                "the same 4xx on every poll",
                3,
                3,
                vec![
                    (Some(Rejected), "-"),
                    (Some(Rejected), "-"),
                    (Some(Rejected), "U"),
                ],
                "RTC.00001016",
            ),
            (
                "the RTC service's not-found is an answer",
                1,
                1,
                vec![(Some(NotFound), "-"), (Some(NotFound), "-")],
                "",
            ),
            (
                "not-found recovers an outage",
                2,
                1,
                vec![
                    (Some(Server), "-"),
                    (Some(Server), "U"),
                    (Some(NotFound), "R"),
                ],
                "",
            ),
            (
                "three refusals in a row stop polling: unhealthy at once",
                3,
                100,
                vec![
                    (Some(Unauthorized), "-"),
                    (Some(Unauthorized), "-"),
                    (Some(Unauthorized), "U"),
                ],
                "refused the credentials 3 times in a row",
            ),
            (
                "one job refused among answered ones never flaps",
                3,
                3,
                [(Some(Unauthorized), "-"), (ok, "-"), (ok, "-")].repeat(4),
                "",
            ),
            (
                "throttling is the whole gateway's",
                3,
                100,
                vec![
                    (Some(Throttled), "-"),
                    (Some(Throttled), "-"),
                    (Some(Throttled), "U"),
                ],
                "3 polls in a row were throttled",
            ),
            (
                "an answer breaks a streak",
                3,
                3,
                vec![
                    (Some(Server), "-"),
                    (Some(Server), "-"),
                    (ok, "-"),
                    (Some(Server), "-"),
                    (Some(Server), "-"),
                    (Some(Server), "U"),
                ],
                "",
            ),
        ];
        for (name, threshold, jobs, steps, why) in cases {
            let mut h = Health::default();
            for (i, (outcome, want)) in steps.iter().enumerate() {
                let change = match outcome {
                    None => h.success(),
                    Some(kind) => h.failure(&err(*kind), threshold, jobs),
                };
                let got = match &change {
                    None => "-",
                    Some(ApiHealthChange::Unhealthy { reason }) => {
                        assert!(reason.contains(why), "{name}: step {i}: {reason}");
                        "U"
                    }
                    Some(ApiHealthChange::Recovered) => "R",
                };
                assert_eq!(got, *want, "{name}: step {i}");
            }
        }
        let mut h = Health::default();
        h.failure(&err(ErrorKind::Unauthorized), 3, 1);
        assert!(!h.verified, "a refusal makes one request at a time again");
        h.failure(&err(ErrorKind::Rejected), 3, 1);
        assert!(h.verified, "an RTC answer shows the credentials work");
    }

    #[test]
    fn failures_needed_table() {
        let cases = [
            ("one job", 3, 1, 3),
            ("as many as jobs", 3, 8, 8),
            ("capped", 3, 100_000, 50),
            ("threshold above the cap", 80, 100_000, 80),
            ("no jobs", 3, 0, 3),
        ];
        for (name, threshold, jobs, want) in cases {
            assert_eq!(failures_needed(threshold, jobs), want, "{name}");
        }
    }
}
