//! Reloads: a new configuration (or watch list) taking effect in the running dispatcher:
//! jobs removed, changed and added (the added ones polled at once as joiners), the budget,
//! the in-flight limit, the client and the cron schedule. A child of the dispatcher so it
//! works on the dispatcher's own state.

use super::super::budget::later;
use super::super::job::Seed;
use super::super::schedule::start_cron;
use super::{Dispatcher, Key, key};
use crate::config::{Config, JobConfig};
use crate::store::{JobRow, Store, StoreError};
use recwatch_rtc::client::RtcClient;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info};

impl Dispatcher {
    /// A reload: the jobs, settings and client of the configuration now in force.
    pub(super) async fn config_changed(&mut self, config: Arc<Config>) {
        // This poller's account's part of it (issue 25). An account the reload removed is
        // polled no more: the active set starts again without it (`startup/roles.rs`), and
        // until then this poller keeps what it had.
        let Some(config) = config.narrowed_shared(&self.poller.config.api.name) else {
            return;
        };
        // The reloader built a client from this configuration before publishing it, so this
        // cannot fail but for the process running out of something; then the old one stays.
        let client = match RtcClient::new(&config.api.client_config()) {
            Ok(c) => c,
            Err(e) => {
                error!("reload not applied to polling: cannot build the HTTP client: {e:#}");
                return;
            }
        };
        let config = self.poller.runtime.with_config(config);
        let old = &self.poller.config;
        if config.api.auth != old.api.auth || config.api.endpoint != old.api.endpoint {
            // New credentials (or a new endpoint) deserve a try now, not after the
            // back-off the old ones earned: one probe, then the usual rules.
            if self.health.auth_streak > 0 || !self.health.verified {
                info!(
                    "credentials or endpoint changed: lifting the back-off; one request probes them"
                );
            }
            self.poller.budget.clear_pause();
            self.health.auth_streak = 0;
            self.health.verified = false;
        }
        self.reload(config, client).await;
        self.owed
            .retain(|k| self.states.contains_key(k) || self.busy.contains(k));
    }

    /// Takes a new configuration: jobs removed, changed and added, the budget, the
    /// in-flight limit and the cron schedule.
    pub(super) async fn reload(&mut self, config: Arc<Config>, client: RtcClient) {
        let wanted = super::super::merge::watched_of(&config, &self.poller.watched);
        let before = self.states.len();
        self.states.retain(|k, _| wanted.contains_key(k));
        self.retired.retain(|k| wanted.contains_key(k));
        // Jobs in flight are not in `states`: they are dropped, or take their new
        // configuration, when they come back (see `finish`). One dropped that way is
        // removed too, and counted so: the log must not depend on whether its poll was
        // in flight at the moment of the reload.
        let removed = before - self.states.len()
            + self
                .busy
                .iter()
                .filter(|k| !wanted.contains_key(*k))
                .count();
        for (k, s) in self.states.iter_mut() {
            s.job = wanted[k].clone();
            s.origin = self.poller.runtime.origin(k);
        }
        let new_jobs: Vec<Arc<JobConfig>> = config
            .jobs
            .iter()
            .filter(|j| {
                let k = key(j);
                !self.states.contains_key(&k)
                    && !self.busy.contains(&k)
                    && !self.retired.contains(&k)
            })
            .cloned()
            .collect();
        // Without their rows the joiners start from no known state, as a new job does; the
        // failed read is said, not swallowed.
        let rows = rows_of(&self.poller.store, &new_jobs, self.states.len())
            .await
            .unwrap_or_else(|e| {
                error!(joining = new_jobs.len(), "cannot read the stored rows of the jobs joining the watch list: {e:#}; they start as new jobs");
                HashMap::new()
            });
        self.poller.budget.set_rate(config.api.rate_limit);
        self.resize_in_flight(config.api.max_in_flight).await;
        let schedule_changed = config.poll.schedule != self.poller.config.poll.schedule;
        self.poller.watched = wanted;
        self.poller.generation += 1;
        for s in self.states.values_mut() {
            s.generation = self.poller.generation;
        }
        self.poller.config = config;
        self.poller.client = client;
        let now = Instant::now();
        // New jobs are polled at once, ahead of the round (the lane's joiners, through the
        // budget), then at their interval: not after the whole round (issue 23).
        let mut added = 0;
        for job in &new_jobs {
            // A STOPPED job that was already on the list is not new: it stays unpolled.
            let Some((k, mut state)) = self.new_state(job, |k| rows.get(k).map(Seed::of_row))
            else {
                continue;
            };
            added += 1;
            if self.poller.config.poll.schedule.is_none() {
                let next = later(now, self.interval(&state));
                self.schedule.put(k.clone(), &mut state, next);
            }
            self.lane.join(k.clone(), now);
            self.states.insert(k, state);
        }
        if schedule_changed {
            self.restart_cron(now).await;
        }
        self.budget_changed();
        info!(
            jobs = self.states.len(),
            added, removed, "configuration reloaded"
        );
    }

    /// Grows or shrinks the number of polls in flight. Shrinking waits for polls to come
    /// back and keeps their permits.
    async fn resize_in_flight(&mut self, limit: usize) {
        let p = &mut self.poller;
        if limit == p.in_flight_limit {
            return;
        }
        if limit > p.in_flight_limit {
            p.in_flight.add_permits(limit - p.in_flight_limit);
        } else {
            let fewer = (p.in_flight_limit - limit) as u32;
            if let Ok(permit) = p.in_flight.clone().acquire_many_owned(fewer).await {
                permit.forget();
            }
        }
        p.in_flight_limit = limit;
    }

    /// After `poll.schedule` changed: the old cron schedule stops, a new one starts, or
    /// without one every job is polled now and then at its interval.
    async fn restart_cron(&mut self, now: Instant) {
        if let Some(mut c) = self.cron.take() {
            let _ = c.shutdown().await;
        }
        if let Some(expr) = self.poller.config.poll.schedule.clone() {
            match start_cron(expr.as_str(), self.poller.command_tx.clone()).await {
                Ok(c) => self.cron = Some(c),
                Err(e) => error!("cannot start poll.schedule {expr:?}: {e:#}"),
            }
        } else {
            for (k, s) in self.states.iter_mut() {
                self.schedule.put(k.clone(), s, now);
            }
        }
    }
}

/// The stored rows of jobs joining the watch list (`staying` jobs are watched already): each
/// read alone when they are few (a discovery, an API add), by key a page at a time when they
/// are a small part of the list (a burst of discoveries), every row in one read otherwise (a
/// reload that adds most of the list). Reading every row for each change cost a scan of the
/// whole table per discovered job (issue 22), and a copy of every stored row in memory per
/// change of the list during a storm of discoveries (issue 23, item 1: each row a few hundred
/// bytes, for a few hundred joiners). A failed read is the caller's to report.
async fn rows_of(
    store: &Store,
    jobs: &[Arc<JobConfig>],
    staying: usize,
) -> Result<HashMap<Key, JobRow>, StoreError> {
    const ONE_BY_ONE: usize = 64;
    // A look-up by key costs SQLite about four rows of a scan (BENCHMARKS.md part 22).
    const BY_KEY_COST: usize = 4;
    const PAGE: usize = 1_000;
    if jobs.len() <= ONE_BY_ONE {
        let mut rows = HashMap::new();
        for j in jobs {
            if let Some(row) = store.jobs().get(j.app_id(), j.job_id()).await? {
                rows.insert(key(j), row);
            }
        }
        return Ok(rows);
    }
    if jobs.len() * BY_KEY_COST >= staying + jobs.len() {
        return store.jobs().all().await;
    }
    let mut rows = HashMap::new();
    for page in jobs.chunks(PAGE) {
        let keys: Vec<(&str, &str)> = page.iter().map(|j| (j.app_id(), j.job_id())).collect();
        rows.extend(store.jobs().by_key(&keys).await?);
    }
    Ok(rows)
}

/// The next configuration published on `rx`; pending for ever without one (or once its
/// sender is gone), so the loop's other branches go on.
pub(super) async fn next_config(
    rx: &mut Option<watch::Receiver<Arc<Config>>>,
) -> Option<Arc<Config>> {
    if let Some(r) = rx {
        if r.changed().await.is_ok() {
            return Some(r.borrow_and_update().clone());
        }
    }
    std::future::pending().await
}
