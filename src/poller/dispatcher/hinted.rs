//! The dispatcher's side of poll hints (see `poller/hints.rs`): hints taken from the
//! callback receiver's intake, the lane's turn at a budget slot, and a hinted job's poll. A
//! child of the dispatcher so it works on the dispatcher's own state, kept apart so the
//! dispatcher's loop stays readable.

use super::super::budget::Slot;
use super::super::hints::{self, Pick};
use super::next::{self, Look, Next};
use super::{Dispatcher, JobState, Key};
use std::collections::{HashMap, HashSet};
use tokio::time::Instant;
use tracing::{debug, info};

impl Dispatcher {
    /// Hints from the callback receiver join the lane.
    pub(super) fn take_hints(&mut self) {
        let now = Instant::now();
        for (k, kind) in self.poller.hints.take() {
            let known = self.poller.watched.contains_key(&k);
            self.lane.hint(k, kind, known, now);
        }
    }

    /// Before each look at the schedule: re-polls due after a job's end join the lane, and
    /// hints kept for jobs that have joined the watch list since are let in.
    pub(super) fn lane_step(&mut self) {
        let now = Instant::now();
        self.lane.follow_up(now);
        let watched = &self.poller.watched;
        self.lane.unpark(now, |k| watched.contains_key(k));
    }

    /// What [`next::next`] says at `now`, from what the dispatcher sees. Stale entries at the
    /// schedule's head (a removed job, one being polled, or one scheduled again since) are
    /// dropped first, so the round's time is its next real job's.
    pub(super) fn next(&mut self, now: Instant) -> Next {
        while let Some((_, entry, k)) = self.schedule.peek(now) {
            let stale =
                self.busy.contains(k) || self.states.get(k).is_none_or(|s| s.sched != *entry);
            if !stale {
                break;
            }
            self.schedule.pop(now);
        }
        // Jobs no longer watched leave the lane here, so the front `next` indexes is the one
        // `Lane::take` finds.
        let state = lane_state(&self.states, &self.busy);
        self.lane.let_go(&state);
        self.lane.front(&state, &mut self.front);
        // Until a request has succeeded, one at a time: a wrong key costs at most 3.
        let may_start = self.may_start()
            && (self.health.verified || self.busy.is_empty())
            && self.poller.in_flight.available_permits() > 0;
        next::next(&Look {
            now,
            may_start,
            round_at: self.schedule.peek(now).map(|(t, _, _)| *t),
            lane: &self.front,
            follow_up: self.lane.next_follow_up(),
            lane_used: self.lane.used(now),
            share: hints::share(self.poller.config.api.rate_limit),
            budget_at: self.poller.budget.ready_at(now),
        })
    }

    /// Polls a job from the lane now (its budget slot is reserved): a hinted job, or the first
    /// poll of a job that joined the watch list at run time.
    pub(super) async fn dispatch_lane(&mut self, pick: Pick, slot: Slot, now: Instant) {
        let (Pick::Hinted(k) | Pick::Joining(k)) = &pick else {
            return;
        };
        let k = k.clone();
        let permit = self
            .poller
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let state = self
            .states
            .remove(&k)
            .expect("the lane picks only idle jobs");
        self.lane.took(&pick, now);
        match pick {
            // Said here, when it is true (issue 23: the API said "polled now" when it added
            // the job, and the poll came a round later). Discovered jobs come in floods: not
            // a line each.
            Pick::Joining(_) if !state.origin.discovered => {
                info!(app_id = %k.app_id, job_id = %k.job_id, "a job added at run time: polled now, ahead of the round");
            }
            Pick::Joining(_) => {
                debug!(app_id = %k.app_id, job_id = %k.job_id, "a discovered job: polled now, ahead of the round");
            }
            _ => debug!(app_id = %k.app_id, job_id = %k.job_id, "hinted poll (record callback)"),
        }
        let work = self.task().poll(k.clone(), state, Some(slot));
        self.launch(k, Some(permit), work);
    }
}

/// What the lane asks of a waiting job: watched (`Some`) and idle, ready to poll
/// (`Some(true)`), or being polled now (`Some(false)`).
pub(super) fn lane_state<'a>(
    states: &'a HashMap<Key, Box<JobState>>,
    busy: &'a HashSet<Key>,
) -> impl Fn(&Key) -> Option<bool> + 'a {
    |k| {
        if busy.contains(k) {
            Some(false)
        } else {
            states.contains_key(k).then_some(true)
        }
    }
}
