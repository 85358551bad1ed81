//! The simulator's state and its handle: the jobs each app serves, the change log, the fault
//! rules, the counters and the gateway's memory, all behind one lock held only for
//! bookkeeping; [`start`] and the [`Simulator`] handle that tests and the demo drive.

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
use recwatch_rtc::model::{JobSnapshot, State, StopReason};
use std::collections::HashMap;
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
    /// The AK lockout and the rate limit's memory.
    pub(crate) gate: Gate,
}

pub(crate) struct Inner {
    pub(crate) opts: SimOptions,
    pub(crate) addr: SocketAddr,
    pub(crate) epoch: Instant,
    pub(crate) epoch_utc: DateTime<Utc>,
    /// Request ids: a per-run random prefix and a counter, so ids never repeat across runs.
    pub(crate) id_prefix: u64,
    pub(crate) next_id: AtomicU64,
    pub(crate) shared: Mutex<Shared>,
    pub(crate) shutdown: watch::Sender<bool>,
}

/// A handle to a running simulator; clones share it.
#[derive(Clone)]
pub struct Simulator {
    pub(crate) inner: Arc<Inner>,
}

/// Starts serving on `listener` until [`Simulator::shutdown`].
pub async fn start(listener: TcpListener, opts: SimOptions) -> std::io::Result<Simulator> {
    let addr = listener.local_addr()?;
    let epoch = Instant::now();
    let epoch_utc = Utc::now();
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
    let mut apps = HashMap::new();
    apps.insert(opts.app_id.clone(), jobs);
    let script_cut = vec![None; if opts.scripted { opts.jobs } else { 0 }];
    let (shutdown, _) = watch::channel(false);
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
            gate: Gate::default(),
        }),
        shutdown,
        opts,
    });
    let router = server::router(inner.clone());
    tokio::spawn(server::accept_loop(
        listener,
        router,
        inner.shutdown.subscribe(),
    ));
    if let Some(per_second) = inner.opts.churn.filter(|r| r.is_finite() && *r > 0.0) {
        tokio::spawn(churn(inner.clone(), per_second, inner.shutdown.subscribe()));
    }
    tracing::info!(%addr, jobs = inner.opts.jobs, app_id = %inner.opts.app_id, "simulator started");
    Ok(Simulator { inner })
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

    fn set_served(&self, app_id: &str, job_id: &str, job: JobSnapshot, body: Bytes) {
        let inner = &self.inner;
        let elapsed = inner.epoch.elapsed();
        let change = Change {
            app_id: app_id.to_string(),
            job_id: job_id.to_string(),
            state: job
                .state
                .as_ref()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            stop_reason: job.stop_reason.as_ref().map(|r| r.as_str().to_string()),
            at: plus(inner.epoch_utc, elapsed),
        };
        let job = Job::Fixed {
            snapshot: Arc::new(job),
            body,
        };
        let mut shared = inner.lock();
        let previous = shared
            .apps
            .entry(app_id.to_string())
            .or_default()
            .insert(job_id.to_string(), job);
        shared.cut_script(previous, elapsed);
        shared.changes.push(change);
    }

    /// The job answers 404 from now on.
    pub fn remove_job(&self, app_id: &str, job_id: &str) {
        let elapsed = self.inner.epoch.elapsed();
        let mut shared = self.inner.lock();
        let previous = shared
            .apps
            .get_mut(app_id)
            .and_then(|jobs| jobs.remove(job_id));
        shared.cut_script(previous, elapsed);
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
        self.inner.lock().counters.snapshot()
    }

    /// Starts counting afresh from now.
    pub fn reset_stats(&self) {
        let since = Some(plus(self.inner.epoch_utc, self.inner.epoch.elapsed()));
        self.inner.lock().counters = Counters::starting(since);
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
        out.sort_by_key(|c| c.at);
        out
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

impl Shared {
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
