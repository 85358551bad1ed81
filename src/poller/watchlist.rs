//! What the dispatcher polls: the configuration in force with the run-time watch list merged in
//! ([`crate::watchlist`]). Either changing gives a new merged configuration, which the
//! dispatcher applies like a reload (jobs that join are polled at once, jobs that leave stop).

use super::Key;
use crate::config::{BudgetReport, Config, JobGroup};
use crate::domain::JobSource;
use crate::watchlist::{RuntimeList, runtime_count, with_runtime};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::watch;

/// The two inputs of the watch list, as last seen.
pub(super) struct Runtime {
    /// The configuration as published (its own `[[jobs]]` only).
    base: Arc<Config>,
    /// `base`'s jobs by key: which group a job is in, without a scan of the file's list.
    configured: HashSet<Key>,
    list: Arc<RuntimeList>,
    /// `None` when the poller does not follow a run-time list (`poll-once`, tests).
    rx: Option<watch::Receiver<Arc<RuntimeList>>>,
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
    pub(super) fn new(config: &Config) -> Runtime {
        Runtime {
            configured: configured_keys(config),
            base: Arc::new(config.clone()),
            list: Arc::default(),
            rx: None,
        }
    }

    /// Starts following `rx`; its current value counts as seen. Returns the merged
    /// configuration to start from.
    pub(super) fn follow(&mut self, mut rx: watch::Receiver<Arc<RuntimeList>>) -> Config {
        self.list = rx.borrow_and_update().clone();
        self.rx = Some(rx);
        with_runtime(&self.base, &self.list)
    }

    /// The next list published; pending for ever without one (or once its sender is gone),
    /// so the dispatcher's other branches go on.
    pub(super) async fn changed(&mut self) -> Option<Arc<RuntimeList>> {
        if let Some(rx) = &mut self.rx {
            if rx.changed().await.is_ok() {
                return Some(rx.borrow_and_update().clone());
            }
        }
        std::future::pending().await
    }

    /// Which group `k` is in (the config file wins over a run-time entry with its key), and
    /// whether discovery added it.
    pub(super) fn origin(&self, k: &Key) -> Origin {
        if self.configured.contains(k) {
            return Origin {
                group: JobGroup::Configured,
                discovered: false,
            };
        }
        Origin {
            group: JobGroup::Runtime,
            discovered: self
                .list
                .jobs
                .get(k)
                .is_some_and(|r| r.source == JobSource::Callback),
        }
    }

    /// The budget over every watched job, each group's share of it.
    pub(super) fn budget(&self) -> BudgetReport {
        self.base.budget(runtime_count(&self.base, &self.list))
    }

    /// A reload: the new configuration with the run-time list merged in.
    pub(super) fn with_config(&mut self, config: Arc<Config>) -> Config {
        self.configured = configured_keys(&config);
        self.base = config;
        with_runtime(&self.base, &self.list)
    }

    /// A new run-time list: the configuration in force with it merged in.
    pub(super) fn with_list(&mut self, list: Arc<RuntimeList>) -> Config {
        self.list = list;
        with_runtime(&self.base, &self.list)
    }
}

fn configured_keys(config: &Config) -> HashSet<Key> {
    config.jobs.iter().map(super::key).collect()
}
