//! What the dispatcher polls: the configuration in force with the run-time watch list merged in
//! ([`crate::watchlist`]). Either changing gives a new merged configuration, which the
//! dispatcher applies like a reload (jobs that join are polled at once, jobs that leave stop).

use crate::config::Config;
use crate::watchlist::{RuntimeList, with_runtime};
use std::sync::Arc;
use tokio::sync::watch;

/// The two inputs of the watch list, as last seen.
pub(super) struct Runtime {
    /// The configuration as published (its own `[[jobs]]` only).
    base: Arc<Config>,
    list: Arc<RuntimeList>,
    /// `None` when the poller does not follow a run-time list (`poll-once`, tests).
    rx: Option<watch::Receiver<Arc<RuntimeList>>>,
}

impl Runtime {
    pub(super) fn new(config: &Config) -> Runtime {
        Runtime {
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

    /// A reload: the new configuration with the run-time list merged in.
    pub(super) fn with_config(&mut self, config: Arc<Config>) -> Config {
        self.base = config;
        with_runtime(&self.base, &self.list)
    }

    /// A new run-time list: the configuration in force with it merged in.
    pub(super) fn with_list(&mut self, list: Arc<RuntimeList>) -> Config {
        self.list = list;
        with_runtime(&self.base, &self.list)
    }
}
