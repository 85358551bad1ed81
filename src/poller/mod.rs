//! The poller: one rate budget shared by every job, polls spread evenly over each interval,
//! and back-off that never turns a failure into a retry storm.
//!
//! One dispatcher task owns the schedule (a heap of due times) and the API's health; each poll
//! runs in its own task, bounded by a semaphore of `max_in_flight`, and reports back. A job is
//! never polled twice at once, so its last phase travels with its poll and transition
//! detection needs no lock.
//!
//! How failures are handled, and why:
//! - throttled (429): the whole poller pauses (3 s, doubling while it lasts, jittered); the
//!   provider advises 2-5 s, and a per-job retry would just add load to a saturated budget;
//! - refused credentials: the gateway locks an AK for 5 minutes after more than 5 failed
//!   signatures, so after 3 refusals in a row the poller stops for `api.auth_backoff`. Until a
//!   request has succeeded, requests go one at a time, so a wrong key costs at most 3;
//! - anything else: that job alone backs off exponentially with jitter, capped.
//!
//! A panic in a poll task is contained to it: the task reports it, the job's state is
//! reloaded from the database and the job is polled again. When the database cannot be
//! written (a full disk), polling goes on; what could not be written is kept per job
//! (bounded) and written as soon as the database takes writes again, without waiting for the
//! job's next poll.
//!
//! What lives where:
//! - `dispatcher.rs`: the [`Poller`] and its dispatcher loop: the schedule, reloads, cron
//!   ticks, what a finished poll means for the job's next one, shutdown;
//! - `schedule.rs`: the heap of due times, and the cron schedule's ticks;
//! - `budget.rs`: the request budget and the back-off delays; `budgets.rs`: one per account
//!   (or per static access key several accounts share);
//! - `hints.rs`: poll hints from record callbacks: a priority lane inside the same budget,
//!   and the re-polls after a job's end; `feed.rs`: the stored events (whichever instance
//!   received them) read from the database by a cursor and turned into hints, once each;
//! - `health.rs`: the API's health (a pure state machine) and the task that writes its changes;
//! - `task.rs`: one poll, from request to committed write (transition detection included);
//! - `job.rs`: a job's state between polls, and the outcomes it still owes the database;
//! - `batch.rs`: polls that changed nothing, written once a second in one transaction;
//! - `writer.rs`: the group writer, the one task that commits poll outcomes through the outbox;
//! - `once.rs`: `recwatch poll-once`;
//! - `merge.rs`: the configuration's jobs and the run-time watch list, merged (what is
//!   polled); `dispatcher/runtime.rs` applies a change of the list like a reload of it;
//!
//! The poller uses the outbox (to write) and never the other way round: the [`Event`]s it
//! publishes are defined in the outbox, which publishes alerts on the same channel.

mod batch;
mod budget;
mod budgets;
mod dispatcher;
mod feed;
mod health;
mod hints;
mod job;
mod merge;
mod once;
mod schedule;
mod task;
mod writer;

pub use crate::outbox::Event;
pub use budget::{Budget, Sent, Slot, later};
pub use budgets::Budgets;
pub use dispatcher::{Command, Poller};
pub use hints::{HintKind, HintOutcome, Hints};
pub use once::poll_once;
pub use writer::GroupWriter;

use crate::config::JobConfig;
use std::time::Duration;

/// How often outcomes the database refused are written again without waiting for the job's
/// next poll, so they land within seconds of the database taking writes again.
const OWED_RETRY: Duration = Duration::from_secs(2);

/// A job's identity.
type Key = crate::domain::JobKey;

/// The job's own key: a reference count, not a new allocation (issue 23, item 1: a storm of
/// 30,000 discoveries made 8.2 million keys here only to look others up).
fn key(job: &JobConfig) -> Key {
    job.key.clone()
}
