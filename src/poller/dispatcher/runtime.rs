//! The dispatcher's side of the run-time watch list ([`crate::runtime_list`]): followed from the
//! start beside the configuration, and each change applied like a reload of the watch list
//! alone. A child of the dispatcher so it works on the dispatcher's own state.

use super::super::job::RETIRE_UNFOUND_AFTER;
use super::{Dispatcher, Key, Poller};
use crate::runtime_list::RuntimeList;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

impl Poller {
    /// Follows the run-time watch list too: its jobs are polled beside the configuration's
    /// from the start, and each change is applied like a reload of the watch list alone.
    pub fn follow_watchlist(&mut self, list: watch::Receiver<Arc<RuntimeList>>) {
        let config = self.runtime.follow(list);
        self.watched = super::super::merge::watched_of(&config, &self.watched);
        self.config = config;
    }
}

/// The least time between two applications of run-time list changes. Applying one re-merges
/// the whole list; a flood of discoveries (issue 22: 3,000 in 9 s) changes it faster than
/// that, and applied each time it kept the loop from ever reaching its next poll.
const LIST_GAP: Duration = Duration::from_millis(250);

impl Dispatcher {
    /// Whether a run-time list change may be applied now: changes arriving meanwhile are
    /// coalesced by the watch channel and applied together (the heartbeat wakes the loop).
    pub(super) fn list_due(&self) -> bool {
        self.list_applied.elapsed() >= LIST_GAP
    }

    /// The run-time watch list changed (here or in another process): jobs join (polled at
    /// once) or leave as on a reload; nothing else changes.
    pub(super) async fn watchlist_changed(&mut self) {
        self.list_applied = Instant::now();
        // The published list is read in place, not held while the change is applied (see
        // `Runtime::remerge`): the merged configuration holds each job's configuration and
        // key itself.
        let config = self.poller.runtime.with_published();
        let client = self.poller.client.clone();
        self.reload(config, client).await;
        self.owed
            .retain(|k| self.states.contains_key(k) || self.busy.contains(k));
    }
}

impl Dispatcher {
    /// A discovered job the API has never found, [`RETIRE_UNFOUND_AFTER`] polls in a row: it
    /// leaves the run-time list without an alert (nobody asked for it; issue 22 saw such ids
    /// polled for ever, each poll a job_not_found alert). A genuinely new callback for it may
    /// discover it again.
    pub(super) async fn retire(&mut self, k: Key) {
        info!(app_id = %k.app_id, job_id = %k.job_id, polls = RETIRE_UNFOUND_AFTER, "a discovered job the API does not know is no longer watched (never found, so never alerted)");
        metrics::counter!("recwatch_discovered_total", "result" => "retired").increment(1);
        self.lane.settled(&k);
        if let Err(e) = self.poller.store.watchlist().remove(&k).await {
            // Not polled again by this run either way (`retired`); the entry stays listed.
            warn!(app_id = %k.app_id, job_id = %k.job_id, "cannot remove the retired job from the run-time watch list: {e}");
        }
        self.retired.insert(k);
    }
}
