//! One poll, from request to committed write: the request, transition detection, the choice
//! between a batched touch and a full write, and the write through the group writer with the
//! retries a locked database calls for.

use super::Key;
use super::batch::{Touch, Touches};
use super::budget::Slot;
use super::job::JobState;
use super::writer::GroupWriter;
use crate::config::{Config, JobConfig};
use crate::detect::{Detected, detect};
use crate::domain::{PollOutcome, PollRecord};
use crate::outbox::{Event, WriteError};
use crate::store::{Attempt, LOCK_RETRY, retry_locked};
use chrono::Utc;
use recwatch_rtc::client::{ErrorKind, Fetched, RtcClient, RtcError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

/// How long a poll queues for the database's write connection before it keeps its outcome
/// for the job's next poll (see [`PollTask::writer_wait`]).
pub(super) const WRITER_WAIT: Duration = Duration::from_millis(500);

/// What a poll task reports back.
pub(super) enum Report {
    Done(Box<Done>),
    /// The task panicked (or writing its outcomes did): its state is gone and is rebuilt
    /// from the database.
    Panicked {
        key: Key,
        why: String,
    },
}

pub(super) struct Done {
    pub(super) key: Key,
    pub(super) state: Box<JobState>,
    /// `None`: the task only wrote outcomes owed from earlier polls; nothing was asked.
    pub(super) result: Option<Result<(), RtcError>>,
}

/// Whether this answer is a discovered id the API has never found: nobody asked for it, so
/// its "not found" is neither written nor alerted (no job_not_found); it is counted, and the
/// dispatcher retires the job after [`super::job::RETIRE_UNFOUND_AFTER`] in a row.
fn never_found(state: &JobState, fetched: &Result<Fetched, RtcError>) -> bool {
    matches!(fetched, Err(e) if e.kind == ErrorKind::NotFound)
        && state.origin.discovered
        && state.phase.is_none()
}

/// One poll, from request to committed write.
pub(super) struct PollTask {
    pub(super) client: RtcClient,
    pub(super) writer: GroupWriter,
    pub(super) config: Arc<Config>,
    pub(super) events: broadcast::Sender<Event>,
    /// How long to queue for the write connection before keeping the outcome for the next
    /// poll. Short in the daemon: while another process holds the database's write lock, the
    /// one write waiting on it holds the connection for up to the busy timeout, and polls
    /// queued behind it would stop all polling.
    pub(super) writer_wait: Duration,
    /// Where a poll that changed nothing records its time and snapshot, written in batches;
    /// `None` writes every poll at once (poll-once).
    pub(super) touches: Option<Arc<Touches>>,
}

impl PollTask {
    /// Whether this outcome needs no write of its own: no transition, and nothing a
    /// condition rule could do with it.
    fn is_quiet(&self, record: &PollRecord, state: &JobState) -> bool {
        let PollOutcome::Ok {
            job,
            transition: None,
            ..
        } = &record.outcome
        else {
            return false;
        };
        if state.maybe_not_found_open || state.maybe_stuck_open || state.maybe_failing_open {
            return false;
        }
        let stuck_now = self.config.rules.stuck_init.is_some()
            && crate::rules::snapshot_stuck_init(
                job,
                state.in_init(),
                self.config.rules.init_grace,
            )
            .unwrap_or(false);
        !stuck_now
    }

    /// After a write: which condition episodes may now be open for this job.
    fn note_conditions(&self, state: &mut JobState) {
        let Some(last) = state.unwritten.last() else {
            return;
        };
        match &last.outcome {
            PollOutcome::Ok { job, .. } => {
                state.maybe_not_found_open = false;
                state.maybe_failing_open = false;
                // Only an answer with a state says whether the job is still in INIT.
                if let Some(stuck) = crate::rules::snapshot_stuck_init(
                    job,
                    state.in_init(),
                    self.config.rules.init_grace,
                ) {
                    state.maybe_stuck_open = stuck;
                }
            }
            PollOutcome::Failed {
                kind: ErrorKind::NotFound,
                ..
            } => state.maybe_not_found_open = true,
            PollOutcome::Failed { .. } => state.maybe_failing_open = true,
        }
    }

    /// Polls `k`. `slot` is the budget slot reserved for it, stamped sent right before the
    /// request goes and closed when its answer came (see `budget.rs`); `None` when the
    /// caller keeps the budget itself.
    pub(super) async fn poll(self, k: Key, mut state: Box<JobState>, slot: Option<Slot>) -> Report {
        let sent = match slot {
            Some(slot) => Some(slot.send().await),
            None => None,
        };
        let started = std::time::Instant::now();
        // A mix job on its own path; the answer is read the same way.
        let fetched = self
            .client
            .get_job_of(state.job.kind, &k.app_id, &k.job_id)
            .await;
        drop(sent);
        let elapsed = started.elapsed();
        // The poller's configuration is its account's (narrowed): `api` is the account.
        let account = self.config.api.name.to_string();
        metrics::histogram!("recwatch_poll_duration_seconds", "account" => account.clone())
            .record(elapsed.as_secs_f64());
        let outcome_label = match &fetched {
            Ok(_) => "ok",
            Err(e) => e.kind.as_str(),
        };
        metrics::counter!("recwatch_polls_total", "account" => account, "outcome" => outcome_label)
            .increment(1);
        if never_found(&state, &fetched) {
            state.unfound += 1;
            debug!(app_id = %k.app_id, job_id = %k.job_id, in_a_row = state.unfound, "discovered job not found (not alerted: nobody asked for it)");
            let result = Some(fetched.map(|_| ()));
            return Report::Done(Box::new(Done {
                key: k,
                state,
                result,
            }));
        }
        state.unfound = 0;
        let polled_at = Utc::now();
        let (outcome, result) = match fetched {
            Ok(fetched) => (self.answered(&k, &mut state, fetched), Ok(())),
            Err(e) => (self.failed(&k, &state, &e), Err(e)),
        };
        let record = PollRecord {
            app_id: k.app_id.clone(),
            job_id: k.job_id.clone(),
            name: state.job.name.clone(),
            kind: state.job.kind,
            polled_at,
            outcome,
        };
        // A poll that changed nothing and cannot open, remind or resolve a condition only
        // refreshes the job's poll time and snapshot: batched, so the database does work per
        // change rather than per poll.
        if let Some(touches) = &self.touches {
            if state.unwritten.is_empty() && self.is_quiet(&record, &state) {
                if let PollOutcome::Ok { job, raw, .. } = record.outcome {
                    touches.touch(
                        k.clone(),
                        Touch {
                            polled_at,
                            raw,
                            description: job.description,
                        },
                    );
                }
                return Report::Done(Box::new(Done {
                    key: k,
                    state,
                    result: Some(result),
                }));
            }
            touches.forget(&k);
        }
        state.keep(record);
        self.write(k, state, polled_at, Some(result)).await
    }

    /// An answer: detects the transition (telling it as it happens) and keeps the new phase.
    fn answered(&self, k: &Key, state: &mut JobState, fetched: Fetched) -> PollOutcome {
        let Fetched {
            job,
            raw,
            request_id,
            unread,
            ..
        } = fetched;
        if !unread.is_empty() {
            // The record is read without them (state and stop reason included); only these
            // fields are lost, and the raw answer is kept with the poll.
            warn!(app_id = %k.app_id, job_id = %k.job_id, request_id = request_id.as_deref().unwrap_or("-"), fields = %unread.join(","), "the API's answer has fields whose values cannot be read (a number out of range?); read without them");
            metrics::counter!("recwatch_record_fields_unread_total").increment(unread.len() as u64);
        }
        state.observe_init(&job, Utc::now());
        let detected = detect(state.phase.as_ref(), &job);
        let transition = match detected {
            Detected::Transition { from, to } => {
                info!(
                    app_id = %k.app_id, job_id = %k.job_id, name = state.job.label(),
                    from = from.as_ref().map(|p| p.state.as_str()).unwrap_or("-"),
                    to = %to.state, stop_reason = to.stop_reason_str().unwrap_or("-"),
                    request_id = request_id.as_deref().unwrap_or("-"),
                    "state change"
                );
                // Unknown states share one label: the API cannot grow the series.
                metrics::counter!("recwatch_transitions_total", "to_state" => to.state.label())
                    .increment(1);
                let _ = self.events.send(Event::Transition {
                    job: JobConfig::clone(&state.job),
                    from: from.clone(),
                    to: to.clone(),
                    description: job.description.clone(),
                });
                state.phase = Some(to.clone());
                Some((from, to))
            }
            Detected::Unchanged => None,
            Detected::NoState => {
                warn!(app_id = %k.app_id, job_id = %k.job_id, request_id = request_id.as_deref().unwrap_or("-"), "the API's answer has no state field; keeping the last known state");
                None
            }
        };
        PollOutcome::Ok {
            job: Box::new(job),
            raw,
            request_id,
            transition,
        }
    }

    /// A failed request: told, and recorded as a failed outcome.
    fn failed(&self, k: &Key, state: &JobState, e: &RtcError) -> PollOutcome {
        let level_warn = !matches!(e.kind, ErrorKind::Throttled);
        if level_warn {
            warn!(app_id = %k.app_id, job_id = %k.job_id, name = state.job.label(), kind = e.kind.as_str(), "poll failed: {e}");
        } else {
            debug!(app_id = %k.app_id, job_id = %k.job_id, "poll throttled: {e}");
        }
        let _ = self.events.send(Event::PollFailed {
            job: JobConfig::clone(&state.job),
            error: e.clone(),
        });
        PollOutcome::Failed {
            kind: e.kind,
            error: e.to_string(),
        }
    }

    /// Writes only what the job owes from earlier polls (the database refused it then).
    pub(super) async fn write_owed(self, k: Key, state: Box<JobState>) -> Report {
        self.write(k, state, Utc::now(), None).await
    }

    /// Writes the job's unwritten outcomes and the alerts they cause. What cannot be written
    /// stays in `state.unwritten`, for the next write.
    async fn write(
        self,
        k: Key,
        mut state: Box<JobState>,
        now: chrono::DateTime<Utc>,
        result: Option<Result<(), RtcError>>,
    ) -> Report {
        // Keep trying for a while (`LOCK_RETRY`): a lock held by another process usually
        // clears quickly. A database that refuses for any other reason (a full disk) does not
        // recover in a second: the outcomes are kept and written again every OWED_RETRY.
        // The error is `Some(why)` when the write panicked, `None` when the outcomes are kept.
        let unwritten = state.unwritten.len();
        let written = retry_locked(LOCK_RETRY, |attempt| {
            // Waits at most `writer_wait`: while another process holds the database's write
            // lock, the writer is stuck for up to the busy timeout, and a poll waiting on it
            // would hold its in-flight slot and stop polling. A write given up on here may
            // still land later; sending it again with the next poll is safe, because a
            // transition is only written (and alerted) if the job's row still shows its
            // `from` state.
            let write = self.writer.write(
                state.unwritten.clone(),
                JobConfig::clone(&state.job),
                state.in_init(),
                now,
                self.config.clone(),
            );
            let (k, wait) = (&k, self.writer_wait);
            async move {
                let Ok(written) = tokio::time::timeout(wait, write).await else {
                    debug!(app_id = %k.app_id, job_id = %k.job_id, unwritten, "the database writer is busy (the database is probably locked by another process): kept for this job's next poll");
                    return Attempt::Done(Err(None));
                };
                after_write(k, attempt, unwritten, written)
            }
        })
        .await;
        match written {
            Ok(()) => {
                self.note_conditions(&mut state);
                // Not `clear`: the emptied vector would keep its room for a record in every
                // job polled once, the whole watch list's worth (issue 23).
                state.unwritten = Vec::new();
            }
            // Written again as they are, these outcomes would panic again: the job starts
            // over from what the database holds.
            Err(Some(why)) => return Report::Panicked { key: k, why },
            Err(None) => {}
        }
        Report::Done(Box::new(Done {
            key: k,
            state,
            result,
        }))
    }
}

/// What one try of a job's write came to: written; refused on another process's lock, for a
/// job written alone or in a group alike (tried again shortly); or done failing, `Some(why)`
/// when the write panicked (the job starts over), `None` when the outcomes are kept.
pub(super) fn after_write(
    k: &Key,
    attempt: u32,
    unwritten: usize,
    written: Result<(), WriteError>,
) -> Attempt<(), Option<String>> {
    match written {
        Ok(()) => Attempt::Done(Ok(())),
        Err(WriteError::Panicked(why)) => Attempt::Done(Err(Some(why))),
        Err(e) if e.is_locked() => {
            debug!(app_id = %k.app_id, job_id = %k.job_id, attempt, unwritten, "cannot write the poll outcome (database locked by another process): {e:#}");
            Attempt::Locked(None)
        }
        Err(e) => {
            debug!(app_id = %k.app_id, job_id = %k.job_id, unwritten, "cannot write the poll outcome: {e:#}; kept and written again shortly");
            Attempt::Done(Err(None))
        }
    }
}
