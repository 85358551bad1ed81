//! The dispatcher's side of the run-time watch list ([`crate::watchlist`]): followed from the
//! start beside the configuration, and each change applied like a reload of the watch list
//! alone. A child of the dispatcher so it works on the dispatcher's own state.

use super::{Dispatcher, Poller, key, rows_now};
use crate::watchlist::RuntimeList;
use std::sync::Arc;
use tokio::sync::watch;

impl Poller {
    /// Follows the run-time watch list too: its jobs are polled beside the configuration's
    /// from the start, and each change is applied like a reload of the watch list alone.
    pub fn follow_watchlist(&mut self, list: watch::Receiver<Arc<RuntimeList>>) {
        let config = self.runtime.follow(list);
        self.watched = config.jobs.iter().map(|j| (key(j), j.clone())).collect();
        self.config = Arc::new(config);
    }
}

impl Dispatcher {
    /// The run-time watch list changed (here or in another process): jobs join (polled at
    /// once) or leave as on a reload; nothing else changes.
    pub(super) async fn watchlist_changed(&mut self, list: Arc<RuntimeList>) {
        let config = self.poller.runtime.with_list(list);
        let rows = rows_now(&self.poller.store).await;
        let client = self.poller.client.clone();
        self.reload(config, client, &rows).await;
        self.owed
            .retain(|k| self.states.contains_key(k) || self.busy.contains(k));
    }
}
