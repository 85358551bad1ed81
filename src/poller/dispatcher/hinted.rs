//! The dispatcher's side of poll hints (see `poller/hints.rs`): hints taken from the
//! callback receiver's intake, the lane's turn at a budget slot, and a hinted job's poll. A
//! child of the dispatcher so it works on the dispatcher's own state, kept apart so the
//! dispatcher's loop stays readable.

use super::super::budget::Slot;
use super::super::hints::{self, Pick};
use super::Dispatcher;
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

    /// Decides who gets the next budget slot and reserves it: `None` when nothing is due or
    /// the budget has no slot now (a picked hint then goes back to the front of the lane).
    pub(super) fn take_slot(&mut self, now: Instant) -> Option<(Pick, Slot)> {
        let round_due = self.schedule.peek(now).is_some_and(|(t, _, _)| *t <= now);
        let share = hints::share(self.poller.config.api.rate_limit);
        let (states, busy) = (&self.states, &self.busy);
        let pick = self.lane.pick(now, share, round_due, |k| {
            if busy.contains(k) {
                Some(false)
            } else {
                states.contains_key(k).then_some(true)
            }
        });
        if pick == Pick::Nothing {
            return None;
        }
        match self.poller.budget.try_reserve(now) {
            Ok(slot) => Some((pick, slot)),
            Err(_) => {
                self.lane.put_back(pick, now);
                None
            }
        }
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
