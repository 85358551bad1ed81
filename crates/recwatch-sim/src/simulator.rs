//! The simulator's state and its handle: the jobs each app serves, the change log, the fault
//! rules, the counters and the gateway's memory, all behind one lock held only for
//! bookkeeping; [`start`] and the [`Simulator`] handle that tests and the demo drive.

use crate::callbacks::{self, Outbox, Registered, SentCallback};
use crate::create::{CreateFault, CreatedJob};
use crate::faults::Fault;
use crate::gateway::Gate;
use crate::options::SimOptions;
use crate::script::{Change, churn, job_id, plus, scripted_job, timeline};
use crate::server;
use crate::stats::{Counters, SimStats};
use axum::body::Bytes;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recwatch_rtc::Kind;
use recwatch_rtc::model::{JobSnapshot, State, StopReason};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
// tokio's clock, not std's: the same outside tests, and a test on tokio's paused clock moves
// the script, the rate limit and the lockout exactly as far as it advances time.
use tokio::time::Instant;

#[derive(Clone)]
pub(crate) enum Job {
    /// Walks the script of this index.
    Scripted(usize),
    /// Served as is; the body is serialized once, when set.
    Fixed {
        snapshot: Arc<JobSnapshot>,
        body: Bytes,
    },
}

/// Everything that changes, behind one lock held only for bookkeeping (never across I/O).
pub(crate) struct Shared {
    pub(crate) apps: HashMap<String, HashMap<String, Job>>,
    /// Per scripted index: when its script stopped governing it (set, churned or removed).
    pub(crate) script_cut: Vec<Option<Duration>>,
    /// Changes made by `set_job` and churn; scripted ones are computed from the timeline.
    pub(crate) changes: Vec<Change>,
    pub(crate) faults: Vec<Fault>,
    pub(crate) counters: Counters,
    /// Per account: the AK lockout, a revoked key and the rate limits' memory.
    pub(crate) gate: Gate,
    /// Each app's record-callback registration.
    pub(crate) registrations: HashMap<String, Registered>,
    /// Seeded: which callbacks `callback_drop` leaves out, and each one's `X-Rtc-Rand`.
    pub(crate) callback_rng: StdRng,
    /// Stops already announced that the API shows only once due (`callback_lag`), oldest
    /// first; applied by [`Shared::apply_due`] before anything reads a job.
    pub(crate) pending: Vec<Pending>,
    /// The (app id, job id) of every mix-stream job; every other job is an individual one.
    /// A job keeps its kind when `set_job` replaces its record.
    pub(crate) mix: HashMap<String, HashSet<String>>,
    /// Every job a create made, oldest first, with the request it was made from.
    pub(crate) created: Vec<CreatedJob>,
    /// Fault rules for creates (apart from `faults`, which apply to polls).
    pub(crate) create_faults: Vec<CreateFault>,
}

/// A change the API shows from `due` on.
pub(crate) struct Pending {
    pub(crate) due: Instant,
    pub(crate) app_id: String,
    pub(crate) job_id: String,
    pub(crate) job: Job,
}

pub(crate) struct Inner {
    pub(crate) opts: SimOptions,
    pub(crate) addr: SocketAddr,
    pub(crate) epoch: Instant,
    pub(crate) epoch_utc: DateTime<Utc>,
    /// Account #0 (`default`, from `opts.auth`) and the others, as the gateway checks them.
    pub(crate) accounts: Vec<crate::accounts::Account>,
    /// The ECS metadata stand-in, when served.
    pub(crate) metadata: Option<crate::metadata::Metadata>,
    /// Request ids: a per-run random prefix and a counter, so ids never repeat across runs.
    pub(crate) id_prefix: u64,
    pub(crate) next_id: AtomicU64,
    pub(crate) shared: Mutex<Shared>,
    pub(crate) shutdown: watch::Sender<bool>,
    /// The record callbacks' queue, sender task and counters.
    pub(crate) callbacks: Outbox,
    /// Bumped by every registration: wakes the scripted jobs' announcer.
    pub(crate) registered: watch::Sender<u64>,
}

/// A handle to a running simulator; clones share it.
#[derive(Clone)]
pub struct Simulator {
    pub(crate) inner: Arc<Inner>,
}

/// Starts serving on `listener` until [`Simulator::shutdown`].
pub async fn start(listener: TcpListener, opts: SimOptions) -> std::io::Result<Simulator> {
    let addr = listener.local_addr()?;
    let accounts = crate::accounts::accounts(&opts)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let metadata = opts.metadata.as_ref().map(|m| {
        let account = crate::accounts::index_of(&accounts, &m.account)
            .expect("accounts() checked the metadata's account");
        crate::metadata::Metadata::new(account, m.key_lifetime, opts.seed)
    });
    let epoch = Instant::now();
    let epoch_utc = Utc::now();
    let mut apps = HashMap::new();
    apps.insert(opts.app_id.clone(), initial_jobs(&opts, epoch_utc));
    let script_cut = vec![None; if opts.scripted { opts.jobs } else { 0 }];
    let (shutdown, _) = watch::channel(false);
    let mut registrations = HashMap::new();
    if let Some(url) = &opts.callback_url {
        registrations.insert(
            opts.app_id.clone(),
            Registered {
                url: url.clone(),
                auth_key: opts.callback_key.clone(),
                update_time: epoch_utc,
            },
        );
    }
    let callbacks = callbacks::outbox(opts.callback_queue, shutdown.subscribe());
    let inner = Arc::new(Inner {
        addr,
        epoch,
        epoch_utc,
        id_prefix: StdRng::seed_from_u64(opts.seed ^ epoch_utc.timestamp_micros() as u64).random(),
        next_id: AtomicU64::new(0),
        shared: Mutex::new(Shared {
            apps,
            script_cut,
            changes: Vec::new(),
            faults: Vec::new(),
            counters: Counters::starting(Some(epoch_utc)),
            gate: Gate::new(accounts.len()),
            registrations,
            // Its own stream, apart from churn's, so dropping callbacks changes no churn.
            callback_rng: StdRng::seed_from_u64(opts.seed ^ 0xca11_bac4),
            pending: Vec::new(),
            mix: HashMap::new(),
            created: Vec::new(),
            create_faults: opts.create_faults.clone(),
        }),
        shutdown,
        callbacks,
        registered: watch::channel(0).0,
        accounts,
        metadata,
        opts,
    });
    let router = server::router(inner.clone());
    tokio::spawn(server::accept_loop(
        listener,
        router,
        inner.shutdown.subscribe(),
    ));
    if inner.opts.scripted && inner.opts.jobs > 0 {
        tokio::spawn(callbacks::announce_script(
            inner.clone(),
            inner.shutdown.subscribe(),
        ));
    }
    if let Some(per_second) = inner.opts.churn.filter(|r| r.is_finite() && *r > 0.0) {
        tokio::spawn(churn(inner.clone(), per_second, inner.shutdown.subscribe()));
    }
    tracing::info!(%addr, jobs = inner.opts.jobs, app_id = %inner.opts.app_id, "simulator started");
    Ok(Simulator { inner })
}

/// The jobs `job-0000` upwards that `opts.app_id` serves from the start.
fn initial_jobs(opts: &SimOptions, epoch_utc: DateTime<Utc>) -> HashMap<String, Job> {
    let mut jobs = HashMap::new();
    for i in 0..opts.jobs {
        let job = if opts.scripted {
            Job::Scripted(i)
        } else {
            let mut snapshot = scripted_job(&opts.app_id, i, opts.step, epoch_utc, Duration::ZERO);
            snapshot.state = Some(State::Running);
            snapshot.start_time = snapshot.create_time.clone();
            snapshot.max_idle_time = Some(30);
            snapshot.description = Some("recording".into());
            fixed(snapshot)
        };
        jobs.insert(job_id(i), job);
    }
    jobs
}

/// A job served as is, its body serialized once.
pub(crate) fn fixed(snapshot: JobSnapshot) -> Job {
    let body = Bytes::from(serde_json::to_vec(&snapshot).expect("a JobSnapshot always serializes"));
    Job::Fixed {
        snapshot: Arc::new(snapshot),
        body,
    }
}

impl Simulator {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://{addr}`, the endpoint to give a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Serves `job` for this app and job id from now on, overriding any script; logged as a
    /// change.
    pub fn set_job(&self, app_id: &str, job_id: &str, job: JobSnapshot) {
        let body = Bytes::from(serde_json::to_vec(&job).expect("a JobSnapshot always serializes"));
        self.set_served(app_id, job_id, job, body);
    }

    /// Serves `body` (any bytes: invalid UTF-8, odd types) for this app and job id from now
    /// on, overriding any script; logged as a change with the state a lenient parse finds.
    pub fn set_job_body(&self, app_id: &str, job_id: &str, body: impl Into<Bytes>) {
        let body = body.into();
        let snapshot = recwatch_rtc::model::parse_job(&body).unwrap_or_default();
        self.set_served(app_id, job_id, snapshot, body);
    }

    /// Serves `job` as a mix-stream job (on `.../mix-stream-jobs/{job_id}`, and no longer on
    /// the individual path) from now on, like [`set_job`](Self::set_job).
    pub fn set_mix_job(&self, app_id: &str, job_id: &str, job: JobSnapshot) {
        self.inner
            .lock()
            .mix
            .entry(app_id.to_string())
            .or_default()
            .insert(job_id.to_string());
        self.set_job(app_id, job_id, job);
    }

    fn set_served(&self, app_id: &str, job_id: &str, job: JobSnapshot, body: Bytes) {
        let inner = &self.inner;
        let now = Instant::now();
        let mut guard = inner.lock();
        let s = &mut *guard;
        s.apply_due(now, inner.epoch);
        s.serve(inner, app_id, job_id, job, body, now);
    }

    /// Registers `url` (and the key to sign with) as `app_id`'s record-callback URL, as a
    /// `PUT /v2/apps/{app_id}/record-callback` does; callbacks for its jobs' changes go there
    /// from now on.
    pub fn register_callback(&self, app_id: &str, url: &str, auth_key: Option<&str>) {
        let update_time = plus(self.inner.epoch_utc, self.inner.epoch.elapsed());
        self.inner.lock().registrations.insert(
            app_id.to_string(),
            Registered {
                url: url.to_string(),
                auth_key: auth_key
                    .filter(|k| !k.is_empty())
                    .map(recwatch_rtc::Secret::new),
                update_time,
            },
        );
        self.inner.registered.send_modify(|n| *n += 1);
    }

    /// The record callbacks POSTed so far (the last 100,000), oldest first.
    pub fn sent_callbacks(&self) -> Vec<SentCallback> {
        self.inner.callbacks.tally.log().iter().cloned().collect()
    }

    /// The job answers 404 from now on.
    pub fn remove_job(&self, app_id: &str, job_id: &str) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.inner.epoch);
        let mut shared = self.inner.lock();
        shared.apply_due(now, self.inner.epoch);
        shared
            .pending
            .retain(|p| !(p.app_id == app_id && p.job_id == job_id));
        let previous = shared
            .apps
            .get_mut(app_id)
            .and_then(|jobs| jobs.remove(job_id));
        shared.cut_script(previous, elapsed);
        if let Some(jobs) = shared.mix.get_mut(app_id) {
            jobs.remove(job_id);
        }
    }

    /// Every job a create made so far, oldest first, with the request it was made from.
    pub fn created(&self) -> Vec<CreatedJob> {
        self.inner.lock().created.clone()
    }

    /// Adds a fault rule for creates after the existing ones (the first live rule wins).
    pub fn set_create_fault(&self, fault: CreateFault) {
        self.inner.lock().create_faults.push(fault);
    }

    /// Removes every fault rule for creates.
    pub fn clear_create_faults(&self) {
        self.inner.lock().create_faults.clear();
    }

    /// Adds a fault rule after the existing ones (the first matching rule wins).
    pub fn set_fault(&self, fault: Fault) {
        self.inner.lock().faults.push(fault);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.inner.lock().faults.clear();
    }

    /// The API endpoint's request statistics since the start or the last reset.
    pub fn stats(&self) -> SimStats {
        let mut stats = self.inner.lock().counters.snapshot();
        stats.callbacks = self.inner.callbacks.tally.snapshot();
        stats
    }

    /// Starts counting afresh from now.
    pub fn reset_stats(&self) {
        let since = Some(plus(self.inner.epoch_utc, self.inner.epoch.elapsed()));
        self.inner.lock().counters = Counters::starting(since);
        self.inner.callbacks.tally.reset();
    }

    /// Every state change so far, oldest first.
    pub fn changes(&self) -> Vec<Change> {
        let inner = &self.inner;
        let elapsed = inner.epoch.elapsed();
        let shared = inner.lock();
        let mut out = shared.changes.clone();
        for (index, cut) in shared.script_cut.iter().enumerate() {
            let until = cut.unwrap_or(elapsed).min(elapsed);
            let t = timeline(index, inner.opts.step);
            let mut push = |at: Option<Duration>, state: State, reason: Option<&StopReason>| {
                if let Some(at) = at.filter(|at| *at <= until) {
                    out.push(Change {
                        app_id: inner.opts.app_id.clone(),
                        job_id: job_id(index),
                        state: state.as_str().to_string(),
                        stop_reason: reason.map(|r| r.as_str().to_string()),
                        at: plus(inner.epoch_utc, at),
                    });
                }
            };
            push(t.running_at, State::Running, None);
            push(t.stopped_at, State::Stopped, t.stop_reason.as_ref());
        }
        drop(shared);
        // A lagging stop is logged at the time the API shows it: not before that time.
        let now = plus(inner.epoch_utc, elapsed);
        out.retain(|c| c.at <= now);
        out.sort_by_key(|c| c.at);
        out
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

impl Shared {
    /// Serves `job` (whose body is `body`) for this app and job id from `now` on: announced
    /// by callbacks, logged as a change, a stop shown `callback_lag` late. Under the lock.
    pub(crate) fn serve(
        &mut self,
        inner: &Inner,
        app_id: &str,
        job_id: &str,
        job: JobSnapshot,
        body: Bytes,
        now: Instant,
    ) {
        let elapsed = now.duration_since(inner.epoch);
        // A newer change wins over a lagging one not yet shown.
        self.pending
            .retain(|p| !(p.app_id == app_id && p.job_id == job_id));
        let before = self.served(inner, app_id, job_id, elapsed);
        let announced_at = plus(inner.epoch_utc, elapsed);
        self.announce(
            inner,
            app_id,
            job_id,
            before.as_ref().and_then(|b| b.state.as_ref()),
            &job,
            announced_at,
        );
        // A stop is shown `callback_lag` after its callbacks, as the real API may lag them.
        let lag = inner.opts.callback_lag;
        let lags = !lag.is_zero()
            && job.state == Some(State::Stopped)
            && before.as_ref().and_then(|b| b.state.as_ref()) != Some(&State::Stopped);
        let change = Change {
            app_id: app_id.to_string(),
            job_id: job_id.to_string(),
            state: job
                .state
                .as_ref()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            stop_reason: job.stop_reason.as_ref().map(|r| r.as_str().to_string()),
            at: plus(inner.epoch_utc, if lags { elapsed + lag } else { elapsed }),
        };
        let job = Job::Fixed {
            snapshot: Arc::new(job),
            body,
        };
        if lags {
            self.pending.push(Pending {
                due: now + lag,
                app_id: app_id.to_string(),
                job_id: job_id.to_string(),
                job,
            });
        } else {
            let previous = self
                .apps
                .entry(app_id.to_string())
                .or_default()
                .insert(job_id.to_string(), job);
            self.cut_script(previous, elapsed);
        }
        self.changes.push(change);
    }

    /// Shows every lagging change that is due at `now`.
    pub(crate) fn apply_due(&mut self, now: Instant, epoch: Instant) {
        if self.pending.is_empty() || self.pending.iter().all(|p| p.due > now) {
            return;
        }
        let (due, later): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.due <= now);
        self.pending = later;
        for p in due {
            let previous = self
                .apps
                .entry(p.app_id)
                .or_default()
                .insert(p.job_id, p.job);
            // A scripted job follows its script until the lagging change shows.
            self.cut_script(previous, p.due.duration_since(epoch));
        }
    }

    /// The record `app_id`/`job_id` serves `elapsed` after the start, if it exists.
    pub(crate) fn served(
        &self,
        inner: &Inner,
        app_id: &str,
        job_id: &str,
        elapsed: Duration,
    ) -> Option<JobSnapshot> {
        match self.apps.get(app_id)?.get(job_id)? {
            Job::Scripted(index) => Some(scripted_job(
                &inner.opts.app_id,
                *index,
                inner.opts.step,
                inner.epoch_utc,
                elapsed,
            )),
            Job::Fixed { snapshot, .. } => Some((**snapshot).clone()),
        }
    }

    /// The kind of job `app_id`/`job_id` is (an individual one unless made a mix job).
    pub(crate) fn kind_of(&self, app_id: &str, job_id: &str) -> Kind {
        match self.mix.get(app_id) {
            Some(jobs) if jobs.contains(job_id) => Kind::Mix,
            _ => Kind::Individual,
        }
    }

    /// A scripted job that was replaced or removed leaves its script at `elapsed`.
    pub(crate) fn cut_script(&mut self, previous: Option<Job>, elapsed: Duration) {
        if let Some(Job::Scripted(index)) = previous
            && let Some(cut) = self.script_cut.get_mut(index)
        {
            cut.get_or_insert(elapsed);
        }
    }
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Resolves once shutdown was asked for (or can no longer be).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard wait_for returns is not Send: drop it here, not in the caller's select.
    let _ = shutdown.wait_for(|stop| *stop).await;
}
