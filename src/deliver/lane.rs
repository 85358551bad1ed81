//! One channel's delivery lane: its own task, its own limit of sends in flight, its own view
//! of the clock. A webhook that hangs or an SMTP server that never greets holds up only its
//! own lane; every other channel goes on.
//!
//! Within a lane, the notices of one episode go out in order: the queue does not hand out a
//! notice while an earlier one of its episode is pending on this channel (see
//! `Deliveries::due`), and a send in flight is still pending.

use super::group::{MAX_GROUP, release_at, restored_release};
use super::pace::Pace;
use super::policy::{
    AfterFailure, Age, Clock, DeathCause, JUMP_TOLERANCE, Policy, after_failure, detect_jump,
};
use super::queue::{Due, Filter, Outcome};
use crate::domain::{Alert, timestamp};
use crate::hold::deliver::{self as hold, Gate};
use crate::hold::domain::Subject;
use crate::notify::{Channel, DeliveryError, Retry};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tracing::{error, info, warn};

/// Sends one channel may have in flight at once: enough that one slow receiver answer does
/// not serialize a burst, few enough not to flood a receiver that is struggling.
pub const CONCURRENCY: usize = 4;

/// The longest a lane sleeps without looking at the queue and the clock again.
const IDLE: Duration = Duration::from_secs(60);

/// What a lane sends with; replaced as a whole on reload (sends in flight keep the old one).
pub struct Settings {
    pub channel: Arc<Channel>,
    pub policy: Policy,
    /// `notify.group_wait`; zero turns grouping off.
    pub group_wait: Duration,
}

impl Settings {
    /// Whether due alerts go out together: the channel groups, and grouping is on.
    fn grouping(&self) -> bool {
        self.channel.groups() && !self.group_wait.is_zero()
    }
}

type Sending = Result<(), DeliveryError>;

pub struct Lane {
    filter: Filter,
    store: Store,
    pub(super) clock: Clock,
    settings: watch::Receiver<Arc<Settings>>,
    /// Rung when the outbox commits new deliveries.
    wake: Arc<Notify>,
    /// Silences and maintenance windows, asked before each send.
    gate: Gate,
    /// Each pending delivery's age on the monotonic clock, by alert id (see `policy::Age`).
    ages: HashMap<String, Age>,
    /// The last look at both clocks, to notice a jump of the wall clock.
    last: (Instant, DateTime<Utc>),
    started: bool,
    /// The deliveries being attempted, by the task attempting them: one message each
    /// (several deliveries when a group goes out as one message).
    in_flight: HashMap<tokio::task::Id, Vec<Due>>,
    /// The vendor's pace, shared by this lane's sends (see `pace`).
    pace: Arc<Mutex<Pace>>,
    /// When this lane last released a group (grouping lanes only; see `group`), also in the
    /// database (`group_releases`), restored at start.
    last_release: Option<Instant>,
    /// Due deliveries are being held for the group window or the pace until then.
    held_until: Option<Instant>,
    /// Outcomes the database did not take (full disk, lock): written before anything else,
    /// and their deliveries are not attempted again meanwhile (a sent alert must not be
    /// sent again only because its mark was not written).
    unrecorded: Vec<(Due, u32, Outcome)>,
}

impl Lane {
    pub fn new(
        filter: Filter,
        store: Store,
        clock: Clock,
        settings: watch::Receiver<Arc<Settings>>,
        wake: Arc<Notify>,
        gate: Gate,
    ) -> Lane {
        let now = clock.now();
        let pace = Arc::new(Mutex::new(Pace::new(settings.borrow().channel.pace())));
        Lane {
            filter,
            store,
            clock,
            settings,
            wake,
            gate,
            ages: HashMap::new(),
            last: (Instant::now(), now),
            started: false,
            in_flight: HashMap::new(),
            pace,
            last_release: None,
            held_until: None,
            unrecorded: Vec::new(),
        }
    }

    fn name(&self) -> &str {
        &self.filter.channel
    }

    fn policy(&self) -> Policy {
        self.settings.borrow().policy
    }

    /// Attempts everything due now on this channel (up to [`CONCURRENCY`]) and waits for
    /// each outcome; returns how many were attempted. Tests drive a lane with it.
    pub async fn step(&mut self) -> anyhow::Result<usize> {
        self.start().await;
        let now = self.tick().await;
        self.flush_unrecorded().await;
        let mut set = JoinSet::new();
        let n = self.fill(&mut set, now).await?;
        while let Some(joined) = set.join_next_with_id().await {
            self.finish(joined).await;
        }
        Ok(n)
    }

    /// Runs until `stop` turns true or the channel is removed (its settings sender dropped).
    /// Sends in flight then get `grace` to finish; any still running are abandoned and stay
    /// pending, to be sent again (same alert id) by the next start.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>, grace: Duration) {
        self.start().await;
        let mut set: JoinSet<Sending> = JoinSet::new();
        loop {
            if *stop.borrow() {
                break;
            }
            let now = self.tick().await;
            self.flush_unrecorded().await;
            let wait = match self.fill(&mut set, now).await {
                // Refused by the fence: this instance is stepping down, its term's stop follows.
                Err(e) if e.is_fenced() => Duration::from_secs(1),
                Err(e) => {
                    warn!(channel = %self.name(), "cannot read the outbox: {e:#}");
                    Duration::from_secs(1)
                }
                // Every slot busy: only a finished send (or news) can change anything.
                Ok(_) if set.len() >= CONCURRENCY => IDLE,
                // A group is out: the next one forms when it is settled.
                Ok(_) if self.settings.borrow().grouping() && !set.is_empty() => IDLE,
                Ok(_) => match self.held_until.take() {
                    Some(at) => at.saturating_duration_since(Instant::now()).min(IDLE),
                    None => self.next_wait(now).await,
                },
            };
            tokio::select! {
                changed = stop.changed() => if changed.is_err() { break },
                Some(joined) = set.join_next_with_id(), if !set.is_empty() => {
                    self.finish(joined).await;
                }
                changed = self.settings.changed() => match changed {
                    Err(_) => {
                        info!(channel = %self.name(), "channel removed from the configuration: its lane stops");
                        break;
                    }
                    // A shorter max_backoff holds for retries already scheduled too.
                    Ok(()) => self.cap(self.clock.now(), "after a reload").await,
                },
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let drained = tokio::time::timeout(grace, async {
            while let Some(joined) = set.join_next_with_id().await {
                self.finish(joined).await;
            }
        })
        .await;
        if drained.is_err() {
            warn!(
                channel = %self.name(),
                abandoned = set.len(),
                "stopping with sends still in flight; they stay pending and are sent again (same alert id) on the next start"
            );
        }
        set.abort_all();
        self.flush_unrecorded().await;
    }

    /// Once, before the first attempt: anchor every pending delivery's age, and bring any
    /// next attempt further out than now + max_backoff forward (the clock may have gone back
    /// while recwatch was stopped; nothing we schedule lies further out).
    async fn start(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        let now = self.clock.now();
        self.last = (Instant::now(), now);
        match self.store.deliveries().pending_created(self.name()).await {
            Ok(rows) => {
                for (id, created) in rows {
                    self.ages.insert(id, Age::anchor(created, now));
                }
            }
            Err(e) => warn!(channel = %self.name(), "cannot read the pending deliveries: {e:#}"),
        }
        self.cap(now, "at start").await;
        self.restore_release(now).await;
    }

    /// The group window a previous run (or another instance) opened on this channel goes on.
    async fn restore_release(&mut self, now: DateTime<Utc>) {
        let stored = match self.store.deliveries().group_release(self.name()).await {
            Ok(s) => s,
            Err(e) => {
                warn!(channel = %self.name(), "cannot read the last group release: {e}; the next group goes out when due");
                return;
            }
        };
        let Some(released) = stored.map(|t| t.to_datetime()) else {
            return;
        };
        let group_wait = self.settings.borrow().group_wait;
        self.last_release = restored_release(released, now, Instant::now(), group_wait);
    }

    /// Reads the clock; on a jump of the wall clock, reschedules this channel's pending
    /// deliveries so a due one is still attempted within its back-off. Ages are kept on the
    /// monotonic clock, so a jump never makes a delivery old.
    async fn tick(&mut self) -> DateTime<Utc> {
        let (mono, wall) = (Instant::now(), self.clock.now());
        let (last_mono, last_wall) = self.last;
        self.last = (mono, wall);
        if let Some(jump) = detect_jump(mono - last_mono, wall - last_wall, JUMP_TOLERANCE) {
            warn!(
                channel = %self.name(),
                jump_seconds = jump.num_seconds(),
                "the wall clock jumped by {}; rescheduling this channel's pending deliveries (their ages are measured on the monotonic clock, so none dies of the jump)",
                describe(jump)
            );
            // Back: a retry scheduled before the jump would wait the jump's length on top.
            if jump < chrono::Duration::zero() {
                if let Err(e) = self
                    .store
                    .deliveries()
                    .shift_next_attempts(self.name(), jump, wall)
                    .await
                {
                    warn!(channel = %self.name(), "cannot reschedule after the clock jump: {e:#}");
                }
            }
            self.cap(wall, "after the clock jump").await;
        }
        wall
    }

    async fn cap(&self, now: DateTime<Utc>, when: &str) {
        // Saturating: a max_backoff past the end of the calendar caps nothing.
        let latest = crate::rules::checked_after(now, self.policy().max_backoff)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        match self
            .store
            .deliveries()
            .cap_next_attempts(self.name(), latest)
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                info!(channel = %self.name(), deliveries = n, "{when}: next attempts later than notify.max_backoff from now were brought forward")
            }
            Err(e) => warn!(channel = %self.name(), "cannot cap the next attempts {when}: {e:#}"),
        }
    }

    /// Alert ids not to hand out again: in flight, or with an outcome still to write.
    fn busy(&self) -> HashSet<String> {
        self.in_flight
            .values()
            .flatten()
            .map(|d| d.alert_id.clone())
            .chain(self.unrecorded.iter().map(|(d, _, _)| d.alert_id.clone()))
            .collect()
    }

    /// Starts sends for what is due, as many as there are free slots (a grouping lane: the
    /// whole group, when its window allows); returns how many deliveries.
    async fn fill(
        &mut self,
        set: &mut JoinSet<Sending>,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        self.held_until = None;
        let settings = self.settings.borrow().clone();
        self.follow_pace(&settings);
        let grouping = settings.grouping();
        let free = self.free_slots(set, grouping);
        if free == 0 {
            return Ok(0);
        }
        let due = self.take_due(now, free).await?;
        if due.is_empty() {
            return Ok(0);
        }
        if grouping {
            let mono = Instant::now();
            let pace_free = self.pace.lock().expect("pace lock").next_free(mono);
            let at = release_at(self.last_release, settings.group_wait, pace_free, mono);
            if at > mono {
                self.held_until = Some(at);
                return Ok(0);
            }
            self.note_release(mono, now).await?;
        }
        // Claimed just before the send, in a fenced write: an instance that no longer leads
        // is refused here and sends nothing.
        let due = self.store.deliveries().claim(due).await?;
        let ready = self.readable(due, now).await;
        let n = ready.len();
        self.spawn_sends(set, &settings, ready);
        Ok(n)
    }

    /// The pace of the channel's vendor as configured now.
    fn follow_pace(&self, settings: &Settings) {
        if !self
            .pace
            .lock()
            .expect("pace lock")
            .is_for(settings.channel.pace())
        {
            // A reload changed the channel's kind: its vendor's pace from here on.
            *self.pace.lock().expect("pace lock") = Pace::new(settings.channel.pace());
        }
    }

    /// How many deliveries may start now.
    fn free_slots(&self, set: &JoinSet<Sending>, grouping: bool) -> usize {
        // A grouping lane has one group out at a time: what falls due meanwhile joins the next.
        match grouping {
            true if !set.is_empty() || !self.unrecorded.is_empty() => 0,
            true => MAX_GROUP,
            false => CONCURRENCY.saturating_sub(set.len()),
        }
    }

    /// The claimed deliveries with their alerts read back; one whose stored alert cannot be
    /// read is settled as never deliverable.
    async fn readable(&mut self, due: Vec<Due>, now: DateTime<Utc>) -> Vec<(Due, Alert)> {
        let mut ready = Vec::with_capacity(due.len());
        for d in due {
            self.ages
                .entry(d.alert_id.clone())
                .or_insert_with(|| Age::anchor(d.created_at, now));
            match serde_json::from_str::<Alert>(&d.payload) {
                Ok(alert) => ready.push((d, alert)),
                Err(e) => {
                    let err = DeliveryError::never(format!(
                        "the stored alert cannot be read ({e}); it stays in the database"
                    ));
                    self.settle(d, Err(err)).await;
                }
            }
        }
        ready
    }

    /// One send per message: each alert alone, or, on a grouping lane, the groups the channel
    /// splits them into.
    fn spawn_sends(
        &mut self,
        set: &mut JoinSet<Sending>,
        settings: &Settings,
        ready: Vec<(Due, Alert)>,
    ) {
        let sizes = match settings.grouping() {
            true => {
                let alerts: Vec<Alert> = ready.iter().map(|(_, a)| a.clone()).collect();
                settings.channel.split(&alerts)
            }
            false => vec![1; ready.len()],
        };
        let mut ready = ready.into_iter();
        for size in sizes {
            let (dues, alerts): (Vec<Due>, Vec<Alert>) = ready.by_ref().take(size).unzip();
            if dues.is_empty() {
                break;
            }
            if dues.len() > 1 {
                info!(channel = %self.name(), alerts = dues.len(), "sending {} alerts as one message", dues.len());
            }
            let task = set.spawn(send_paced(
                settings.channel.clone(),
                self.pace.clone(),
                self.store.fence().cloned(),
                alerts,
            ));
            self.in_flight.insert(task.id(), dues);
        }
    }

    /// A group is released now: its window starts, here and in the database (before the
    /// send, so a crash after it still finds the window open). Refused by the fence (this
    /// instance no longer leads), the error goes up as the claim's would: nothing is sent.
    async fn note_release(&mut self, mono: Instant, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.last_release = Some(mono);
        match self
            .store
            .deliveries()
            .set_group_release(self.name(), &timestamp(now))
            .await
        {
            Err(e) if e.is_fenced() => Err(e),
            Err(e) => {
                warn!(channel = %self.name(), "cannot note the group's release: {e}; a restart would not wait for this window");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// Up to `free` deliveries due now and not busy, less those a silence or maintenance
    /// window holds back: asked just before the send, and before grouping (a held alert never
    /// delays the next group).
    async fn take_due(&mut self, now: DateTime<Utc>, free: usize) -> Result<Vec<Due>, StoreError> {
        let busy = self.busy();
        let due: Vec<Due> = self
            .store
            .deliveries()
            .due(&self.filter, now, free + busy.len())
            .await?
            .into_iter()
            .filter(|d| !busy.contains(&d.alert_id))
            .take(free)
            .collect();
        self.hold_back(due, now).await
    }

    /// Marks `silenced` each delivery a silence or maintenance window holds back now (see
    /// `hold`); returns the others, to send.
    async fn hold_back(
        &mut self,
        due: Vec<Due>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Due>, StoreError> {
        if due.is_empty() {
            return Ok(due);
        }
        let holds = self.gate.holds(now).await?;
        let kind = self.settings.borrow().channel.kind();
        let mut send = Vec::with_capacity(due.len());
        for d in due {
            let held = serde_json::from_str::<Alert>(&d.payload)
                .ok()
                .and_then(|a| holds.held_by(&Subject::of(&a)));
            match held {
                Some(by) => {
                    hold::hold(&self.store, &d.alert_id, (&d.channel, kind), &by).await?;
                    self.ages.remove(&d.alert_id);
                }
                None => send.push(d),
            }
        }
        Ok(send)
    }

    /// A send finished (or panicked: the delivery then counts as failed and is retried).
    async fn finish(&mut self, joined: Result<(tokio::task::Id, Sending), JoinError>) {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(e) => {
                let why = if e.is_panic() {
                    metrics::counter!("recwatch_task_panics_total", "task" => "delivery")
                        .increment(1);
                    "the send panicked"
                } else {
                    "the send was cancelled"
                };
                (e.id(), Err(DeliveryError::transient(why)))
            }
        };
        if let Err(DeliveryError {
            retry: Retry::After(Some(wait)),
            ..
        }) = &result
        {
            // Throttled: the vendor counts the whole channel, so every send waits (at most
            // max_backoff, like the retry itself).
            let wait = (*wait).min(self.policy().max_backoff);
            self.pace
                .lock()
                .expect("pace lock")
                .hold(Instant::now() + wait);
        }
        for due in self.in_flight.remove(&id).unwrap_or_default() {
            self.settle(due, result.clone()).await;
        }
    }

    /// Decides and writes an attempt's outcome, and says so in the log and the metrics.
    async fn settle(&mut self, d: Due, result: Sending) {
        let now = self.clock.now();
        let attempts = d.attempts.saturating_add(1);
        let policy = self.policy();
        let age = self
            .ages
            .get(&d.alert_id)
            .map(Age::now)
            .unwrap_or_else(|| Age::anchor(d.created_at, now).now());
        let channel = d.channel.clone();
        let kind = self.settings.borrow().channel.kind();
        let outcome = match result {
            Ok(()) => {
                info!(alert_id = %d.alert_id, channel = %d.channel, app_id = %d.app_id, job_id = %d.job_id, attempts, "alert delivered");
                metrics::counter!("recwatch_deliveries_total", "channel" => channel, "kind" => kind, "outcome" => "sent").increment(1);
                Outcome::Sent { at: now }
            }
            Err(e) => {
                let jitter = rand::rng().random::<f64>();
                match after_failure(e.retry, attempts, age, &policy, jitter) {
                    AfterFailure::RetryIn(delay) => {
                        let next = crate::rules::checked_after(now, delay)
                            .unwrap_or(DateTime::<Utc>::MAX_UTC);
                        warn!(alert_id = %d.alert_id, channel = %d.channel, app_id = %d.app_id, job_id = %d.job_id, attempts, next_attempt = %timestamp(next),
                            "delivery failed: {e}; next attempt in {}", humantime::format_duration(round(delay)));
                        metrics::counter!("recwatch_deliveries_total", "channel" => channel, "kind" => kind, "outcome" => "retry").increment(1);
                        Outcome::Retry {
                            next,
                            error: e.message,
                        }
                    }
                    AfterFailure::Dead(cause) => {
                        // The real reason first; the rule that ended the retries after it.
                        let why = match cause {
                            DeathCause::MaxAge => format!(
                                "still failing after {attempts} attempts over {} (notify.max_age is {})",
                                humantime::format_duration(round(age)),
                                humantime::format_duration(policy.max_age)
                            ),
                            DeathCause::NeverRetry => "no retry can help".to_string(),
                        };
                        error!(alert_id = %d.alert_id, channel = %d.channel, app_id = %d.app_id, job_id = %d.job_id, attempts,
                            "delivery dead: {e}; {why}. It stays in the database (recwatch alerts)");
                        metrics::counter!("recwatch_deliveries_total", "channel" => channel, "kind" => kind, "outcome" => "dead").increment(1);
                        Outcome::Dead { error: e.message }
                    }
                }
            }
        };
        if !matches!(outcome, Outcome::Retry { .. }) {
            self.ages.remove(&d.alert_id);
        }
        self.record(d, attempts, outcome).await;
    }

    async fn record(&mut self, d: Due, attempts: u32, outcome: Outcome) {
        if let Err(e) = self
            .store
            .deliveries()
            .record(&d.alert_id, &d.channel, attempts, &outcome)
            .await
        {
            warn!(alert_id = %d.alert_id, channel = %d.channel, app_id = %d.app_id, job_id = %d.job_id,
                "cannot record the delivery outcome: {e:#}; kept in memory and written as soon as the database takes it");
            self.unrecorded.push((d, attempts, outcome));
        }
    }

    async fn flush_unrecorded(&mut self) {
        for (d, attempts, outcome) in std::mem::take(&mut self.unrecorded) {
            self.record(d, attempts, outcome).await;
            // One refusal is enough to know the database is still not taking writes.
            if !self.unrecorded.is_empty() {
                break;
            }
        }
    }

    /// How long until the next delivery that is not in flight falls due.
    async fn next_wait(&self, now: DateTime<Utc>) -> Duration {
        let busy = self.busy();
        match self
            .store
            .deliveries()
            .next_due(&self.filter, busy.len() + 1)
            .await
        {
            Ok(rows) => rows
                .into_iter()
                .find(|(id, _)| !busy.contains(id))
                .map(|(_, at)| (at - now).to_std().unwrap_or(Duration::ZERO).min(IDLE))
                // A floor so that a row the queue calls due but cannot hand out (a race with
                // a write) does not spin the loop.
                .map(|d| d.max(Duration::from_millis(10)))
                .unwrap_or(IDLE),
            Err(e) => {
                warn!(channel = %self.name(), "cannot read the outbox: {e:#}");
                Duration::from_secs(1)
            }
        }
    }
}

/// Sends one message when the vendor's pace lets it go, if this instance still leads then.
async fn send_paced(
    channel: Arc<Channel>,
    pace: Arc<Mutex<Pace>>,
    fence: Option<crate::store::Fence>,
    alerts: Vec<Alert>,
) -> Sending {
    // The token is taken when the message is about to go, in the order asked.
    let at = pace.lock().expect("pace lock").reserve(Instant::now());
    tokio::time::sleep_until(at).await;
    if fence.is_some_and(|f| !f.is_valid()) {
        // The lease ended while the pace held it: the next leader sends it.
        return Err(DeliveryError::transient(
            "not sent: this instance stepped down before the send",
        ));
    }
    channel.send_all(&alerts).await
}

/// Milliseconds below a second, tenths below a minute, whole seconds above, for log lines.
fn round(d: Duration) -> Duration {
    if d < Duration::from_secs(1) {
        Duration::from_millis(d.as_millis() as u64)
    } else if d < Duration::from_secs(60) {
        Duration::from_millis((d.as_millis() / 100 * 100) as u64)
    } else {
        Duration::from_secs(d.as_secs())
    }
}

fn describe(jump: chrono::Duration) -> String {
    let d = round(jump.abs().to_std().unwrap_or(Duration::ZERO));
    let dir = if jump < chrono::Duration::zero() {
        "back"
    } else {
        "forward"
    };
    format!("{} {dir}", humantime::format_duration(d))
}
