//! What the dispatcher polls: the configuration in force with the run-time watch list merged in
//! ([`crate::runtime_list`]). Either changing gives a new merged configuration, which the
//! dispatcher applies like a reload (jobs that join are polled at once, jobs that leave stop).

use super::Key;
use crate::config::{BudgetReport, Config, JobConfig, JobGroup};
use crate::domain::JobSource;
use crate::runtime_list::{RuntimeList, runtime_count, with_runtime};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::watch;

/// The two inputs of the watch list, as last seen.
pub(super) struct Runtime {
    /// The configuration as published (its own `[[jobs]]` only).
    base: Arc<Config>,
    /// The keys both `base` and `list` have (the file's entry wins): with `list`, which group
    /// a job is in, without a scan of the file's list. Only these, not every configured key:
    /// a set of the whole file was a copy of every job's key (issue 23).
    shadowed: HashSet<Key>,
    /// The list merged last when no channel is followed; empty otherwise (see
    /// [`Runtime::remerge`]).
    list: Arc<RuntimeList>,
    /// A followed list is read in `list`'s place (see [`Runtime::remerge`]).
    released: bool,
    /// `None` when the poller does not follow a run-time list (`poll-once`, tests).
    rx: Option<watch::Receiver<Arc<RuntimeList>>>,
}

/// The run-time list as the poller reads it: its own hold, or the published list borrowed
/// for the moment (never across an `.await`: a publisher waits for it).
pub(super) enum ListRef<'a> {
    Held(&'a RuntimeList),
    Published(watch::Ref<'a, Arc<RuntimeList>>),
}

impl std::ops::Deref for ListRef<'_> {
    type Target = RuntimeList;
    fn deref(&self) -> &RuntimeList {
        match self {
            ListRef::Held(l) => l,
            ListRef::Published(r) => r,
        }
    }
}

/// Where a watched job comes from, as far as polling cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Origin {
    /// Its share of the budget (see [`crate::config::share`]).
    pub(super) group: JobGroup,
    /// Added by discovery (source `callback`): nobody asked for it, so an id the API never
    /// finds is retired without an alert.
    pub(super) discovered: bool,
}

impl Runtime {
    /// `config` is shared, not copied: it is the poller's merged configuration too until a
    /// run-time entry joins.
    pub(super) fn new(config: Arc<Config>) -> Runtime {
        Runtime {
            shadowed: HashSet::new(),
            base: config,
            list: Arc::default(),
            released: false,
            rx: None,
        }
    }

    /// The run-time list as last applied, or the published one once let go.
    pub(super) fn current(&self) -> ListRef<'_> {
        match (&self.rx, self.released) {
            (Some(rx), true) => ListRef::Published(rx.borrow()),
            _ => ListRef::Held(&self.list),
        }
    }

    /// Starts following `rx`; its current value counts as seen. Returns the merged
    /// configuration to start from.
    pub(super) fn follow(&mut self, rx: watch::Receiver<Arc<RuntimeList>>) -> Arc<Config> {
        self.rx = Some(rx);
        self.remerge()
    }

    /// Returns once a new list is published (merged by [`Self::with_published`]); pending for
    /// ever without one (or once its sender is gone), so the dispatcher's other branches go on.
    pub(super) async fn changed(&mut self) {
        if let Some(rx) = &mut self.rx {
            if rx.changed().await.is_ok() {
                return;
            }
        }
        std::future::pending().await
    }

    /// Which group `k` is in (the config file wins over a run-time entry with its key), and
    /// whether discovery added it.
    pub(super) fn origin(&self, k: &Key) -> Origin {
        let listed = match self.shadowed.contains(k) {
            true => None,
            false => self
                .current()
                .jobs
                .get(k)
                .map(|r| r.source == JobSource::Callback),
        };
        match listed {
            None => Origin {
                group: JobGroup::Configured,
                discovered: false,
            },
            Some(discovered) => Origin {
                group: JobGroup::Runtime,
                discovered,
            },
        }
    }

    /// The budget over every watched job, each group's share of it: the run-time entries
    /// less those the file has too (`shadowed`, the same count [`runtime_count`] makes
    /// without a key made per configured job).
    pub(super) fn budget(&self) -> BudgetReport {
        let list = self.current();
        debug_assert!(
            self.base.several_accounts()
                || list.jobs.len() - self.shadowed.len() == runtime_count(&self.base, &list)
        );
        let listed = match self.base.several_accounts() {
            // Another account's run-time entries are another poller's (issue 25).
            true => list
                .jobs
                .values()
                .filter(|r| self.base.polls(&r.job))
                .count(),
            false => list.jobs.len(),
        };
        let runtime = listed.saturating_sub(self.shadowed.len());
        drop(list);
        self.base.budget(runtime)
    }

    /// A reload: the new configuration with the run-time list merged in.
    pub(super) fn with_config(&mut self, config: Arc<Config>) -> Arc<Config> {
        self.base = config;
        self.remerge()
    }

    /// The list just published (see [`Self::changed`]) merged into the configuration in force.
    pub(super) fn with_published(&mut self) -> Arc<Config> {
        self.remerge()
    }

    /// A list of the caller's (no channel followed, or a test's): held, and merged in.
    #[cfg(test)]
    pub(super) fn with_list(&mut self, list: Arc<RuntimeList>) -> Arc<Config> {
        self.list = list;
        self.released = false;
        self.shadowed = shadowed(&self.base, &self.list);
        merged(&self.base, &self.list)
    }

    /// The configuration in force with the run-time list merged in. A followed list is read
    /// in place and never held (issue 23, item 1): it is published as an `Arc` that each
    /// commit of discoveries changes in place when nobody else holds it (`Arc::make_mut`).
    /// Held by the dispatcher, first until a change was applied, then until it was merged,
    /// a commit meanwhile copied the whole map (its B-tree nodes, ~10 MB at 100,000 jobs),
    /// about every other commit of a storm, and the copies' freed nodes were what the storm's
    /// new jobs landed among (BENCHMARKS.md parts 27a and 29a). Read under the channel's
    /// lock instead, a commit waits for the merge (no `.await` inside it: the run-time
    /// entries' `Arc`s collected, the file's keys looked up); until the next change the
    /// published list is read in its place, briefly ([`ListRef`]): it is the merged one or
    /// newer, and a newer one only adds what the next change applies anyway.
    fn remerge(&mut self) -> Arc<Config> {
        let Some(rx) = &mut self.rx else {
            self.shadowed = shadowed(&self.base, &self.list);
            return merged(&self.base, &self.list);
        };
        let list = rx.borrow_and_update();
        self.shadowed = shadowed(&self.base, &list);
        let merged = merged(&self.base, &list);
        drop(list);
        self.list = Arc::default();
        self.released = true;
        merged
    }
}

/// `base` with `list` merged in; without run-time entries, the published configuration
/// itself rather than a copy of its every job.
fn merged(base: &Arc<Config>, list: &RuntimeList) -> Arc<Config> {
    if list.jobs.is_empty() {
        return base.clone();
    }
    let mut merged = with_runtime(base, list);
    if merged.several_accounts() {
        // `base` is this poller's account's (see `Poller::narrowed`); the list is everyone's.
        let jobs = merged
            .jobs
            .iter()
            .filter(|j| merged.polls(j))
            .cloned()
            .collect();
        merged.jobs = jobs;
    }
    Arc::new(merged)
}

/// The keys of `config`'s jobs that `list` has too.
fn shadowed(config: &Config, list: &RuntimeList) -> HashSet<Key> {
    if list.jobs.is_empty() {
        return HashSet::new();
    }
    config
        .jobs
        .iter()
        .filter(|j| list.jobs.contains_key(&j.key))
        .map(|j| super::key(j))
        .collect()
}

/// The watched jobs by key, each configuration the `Arc` `config` holds (shared with every
/// job's state, see [`super::job::JobState::job`]). Each key is one allocation shared with the
/// rest of the poller (issue 23, item 1): the one `before` has for the job (the map this one
/// replaces, whose keys `states`, the schedule and the lane hold), else the job's own (a
/// run-time job's is the list's, see [`crate::runtime_list::Listed`]). Looked up by the job's
/// own key, and without the list: no key made per job per change of the list, and the list
/// need not be held while a change is applied (see [`Runtime::remerge`]).
pub(super) fn watched_of(
    config: &Config,
    before: &HashMap<Key, Arc<JobConfig>>,
) -> HashMap<Key, Arc<JobConfig>> {
    let mut watched = HashMap::with_capacity(config.jobs.len());
    for j in &config.jobs {
        let k = match before.get_key_value(&j.key) {
            Some((shared, _)) => shared.clone(),
            None => super::key(j),
        };
        watched.insert(k, j.clone());
    }
    watched
}

/// `job`'s key and configuration as `watched` holds them, shared; allocations of their own
/// when `watched` lacks it.
pub(super) fn shared(
    watched: &HashMap<Key, Arc<JobConfig>>,
    job: &Arc<JobConfig>,
) -> (Key, Arc<JobConfig>) {
    match watched.get_key_value(&job.key) {
        Some((k, shared)) => (k.clone(), shared.clone()),
        None => (super::key(job), job.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobKey, JobKind, RuntimeJob};

    fn config(jobs: usize) -> Config {
        let mut c = Config::defaults(crate::config::Auth::Token {
            token: crate::secret::Secret::new("t"),
        });
        c.jobs = (0..jobs)
            .map(|i| JobConfig {
                account: None,
                key: crate::domain::JobKey::new("app", format!("f{i}")),
                name: None,
                kind: JobKind::Individual,
                interval: None,
                notify: Some(vec!["ops".into()]),
            })
            .map(Arc::new)
            .collect();
        c
    }

    fn list(ids: &[&str]) -> Arc<RuntimeList> {
        Arc::new(RuntimeList::of(ids.iter().map(|id| RuntimeJob {
            account: None,
            key: JobKey::new("app", *id),
            name: None,
            kind: JobKind::Individual,
            notify: None,
            source: JobSource::Callback,
            added_at: "2026-12-07T00:00:00.000Z".parse().unwrap(),
        })))
    }

    /// Issue 23, item 1: the poller merges a published list without holding it, so the
    /// next commit of discoveries changes it in place instead of copying it whole (with the
    /// list held until the change was applied, this count was 2 for the whole reload).
    #[tokio::test]
    async fn a_published_list_is_merged_in_place() {
        let mut runtime = Runtime::new(Arc::new(config(2)));
        let (tx, rx) = watch::channel(Arc::new(RuntimeList::default()));
        runtime.follow(rx);
        tx.send(list(&["r1", "f0"])).unwrap();
        runtime.changed().await;
        let merged = runtime.with_published();
        assert_eq!(
            merged.jobs.len(),
            3,
            "two from the file, one of the list's own"
        );
        assert_eq!(
            Arc::strong_count(&tx.borrow()),
            1,
            "the published list is held by the channel alone"
        );
        let r1 = JobKey::new("app", "r1");
        let listed = &tx.borrow().jobs[&r1].job;
        assert!(
            merged.jobs.iter().any(|j| Arc::ptr_eq(j, listed)),
            "the list's own configuration is merged"
        );
        assert_eq!(runtime.origin(&r1).group, JobGroup::Runtime);
        assert_eq!(
            runtime.origin(&JobKey::new("app", "f0")).group,
            JobGroup::Configured,
            "the file wins"
        );
    }

    /// Issue 23, item 1: what the poller holds per job is held once. Without run-time
    /// entries the merged configuration is the published one itself, not a copy of its every
    /// job; with them, the groups are still told apart (a file entry the list shadows is
    /// configured); and a job's state shares its configuration's allocation with `watched`.
    #[test]
    fn each_jobs_configuration_is_held_once() {
        let base = Arc::new(config(3));
        let mut runtime = Runtime::new(base.clone());
        let (tx, rx) = watch::channel(Arc::new(RuntimeList::default()));
        let merged = runtime.follow(rx);
        assert!(Arc::ptr_eq(&merged, &base), "no run-time entry: no copy");
        let reloaded = Arc::new(config(4));
        assert!(Arc::ptr_eq(
            &runtime.with_config(reloaded.clone()),
            &reloaded
        ));

        let merged = runtime.with_list(list(&["f1", "r1"]));
        assert_eq!(
            merged.jobs.len(),
            5,
            "four from the file, one of the list's own"
        );
        let origin = |id: &str| runtime.origin(&JobKey::new("app", id));
        assert_eq!(origin("f1").group, JobGroup::Configured, "the file wins");
        assert_eq!(origin("f0").group, JobGroup::Configured);
        assert_eq!(
            origin("r1"),
            Origin {
                group: JobGroup::Runtime,
                discovered: true
            }
        );
        assert!(
            merged.jobs.capacity() <= merged.jobs.len() + 1,
            "the merged jobs keep no larger vector's room: {} for {}",
            merged.jobs.capacity(),
            merged.jobs.len()
        );
        drop(tx);

        let watched = watched_of(&merged, &HashMap::new());
        for j in &merged.jobs {
            let k = super::super::key(j);
            let state = super::super::job::JobState::from_row(&watched[&k], None, false).unwrap();
            assert!(Arc::ptr_eq(&state.job, &watched[&k]), "{k}: one allocation");
        }
    }
}
