//! When each job is polled next: the heap of due times the dispatcher takes polls from, and
//! the cron schedule (`poll.schedule`) whose ticks put every job on it at once.

use super::Key;
use super::dispatcher::Command;
use super::job::JobState;
use crate::config::JobGroup;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// An entry: when, its sequence number, whose.
pub(super) type Entry = (Instant, u64, Key);

/// The schedule: a heap of due times per group (see [`crate::config::share`]). Entries are
/// never taken out when a job is scheduled again; the job's `sched` names its live entry, and
/// the others are skipped as stale.
#[derive(Default)]
pub(super) struct Schedule {
    configured: BinaryHeap<Reverse<Entry>>,
    runtime: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

impl Schedule {
    /// Puts a job on the schedule at `at`, superseding any entry it already has there.
    pub(super) fn put(&mut self, k: Key, state: &mut JobState, at: Instant) {
        self.seq += 1;
        state.sched = self.seq;
        state.due = at;
        let heap = match state.origin.group {
            JobGroup::Configured => &mut self.configured,
            JobGroup::Runtime => &mut self.runtime,
        };
        heap.push(Reverse((at, self.seq, k)));
    }

    /// The entry that goes next at `now`: configured jobs first, so a due configured job goes
    /// before any run-time job however long that one has waited; otherwise the earliest.
    pub(super) fn peek(&self, now: Instant) -> Option<&Entry> {
        self.next(now)
            .and_then(|g| self.heap(g).peek())
            .map(|Reverse(e)| e)
    }

    /// Takes the entry [`Self::peek`] shows at the same `now`.
    pub(super) fn pop(&mut self, now: Instant) -> Option<Entry> {
        let g = self.next(now)?;
        let heap = match g {
            JobGroup::Configured => &mut self.configured,
            JobGroup::Runtime => &mut self.runtime,
        };
        heap.pop().map(|Reverse(e)| e)
    }

    /// Every entry's key, stale ones too.
    #[cfg(test)]
    pub(super) fn keys(&self) -> impl Iterator<Item = &Key> {
        self.configured
            .iter()
            .chain(self.runtime.iter())
            .map(|Reverse((_, _, k))| k)
    }

    fn heap(&self, g: JobGroup) -> &BinaryHeap<Reverse<Entry>> {
        match g {
            JobGroup::Configured => &self.configured,
            JobGroup::Runtime => &self.runtime,
        }
    }

    /// Which group's heap [`Self::peek`] takes from at `now`.
    fn next(&self, now: Instant) -> Option<JobGroup> {
        let c = self.configured.peek().map(|Reverse((t, _, _))| *t);
        let r = self.runtime.peek().map(|Reverse((t, _, _))| *t);
        match (c, r) {
            (Some(c), _) if c <= now => Some(JobGroup::Configured),
            (Some(c), Some(r)) if r < c => Some(JobGroup::Runtime),
            (Some(_), _) => Some(JobGroup::Configured),
            (None, Some(_)) => Some(JobGroup::Runtime),
            (None, None) => None,
        }
    }
}

/// Starts `poll.schedule`: each tick asks the dispatcher to poll every job now.
pub(super) async fn start_cron(
    expr: &str,
    tx: mpsc::Sender<Command>,
) -> anyhow::Result<tokio_cron_scheduler::JobScheduler> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let sched = JobScheduler::new().await?;
    sched
        .add(Job::new_async(expr, move |_, _| {
            let tx = tx.clone();
            Box::pin(async move {
                // A full queue means the last tick is still waiting: dropping this one keeps
                // ticks from piling up behind a slow budget.
                let _ = tx.try_send(Command::Tick);
            })
        })?)
        .await?;
    sched.start().await?;
    Ok(sched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JobConfig;
    use std::time::Duration;

    #[test]
    fn scheduling_a_job_again_supersedes_its_earlier_entry() {
        let job = JobConfig {
            account: None,
            kind: crate::domain::JobKind::Individual,
            key: crate::domain::JobKey::new("app", "job"),
            name: None,
            interval: None,
            notify: None,
        };
        let mut state = JobState::from_row(&job, None, false).expect("no row: polled");
        let k = Key::new("app", "job");
        let now = Instant::now();
        let mut s = Schedule::default();
        s.put(k.clone(), &mut state, now + Duration::from_secs(5));
        let first = state.sched;
        s.put(k.clone(), &mut state, now + Duration::from_secs(9));
        assert_ne!(state.sched, first, "the job names its newest entry");
        assert_eq!(state.due, now + Duration::from_secs(9));
        // Both entries are on the heap, the earlier first; only the newest is live.
        let (at, entry, _) = s.pop(now).expect("two entries");
        assert_eq!((at, entry), (now + Duration::from_secs(5), first));
        let (at, entry, key) = s.pop(now).expect("two entries");
        assert_eq!(
            (at, entry, key),
            (now + Duration::from_secs(9), state.sched, k)
        );
        assert!(s.peek(now).is_none());
    }

    #[test]
    fn a_due_configured_job_goes_before_any_run_time_job_table() {
        let job = JobConfig {
            account: None,
            kind: crate::domain::JobKind::Individual,
            key: crate::domain::JobKey::new("app", "job"),
            name: None,
            interval: None,
            notify: None,
        };
        let now = Instant::now();
        let secs = Duration::from_secs;
        // (name, configured job due at, run-time job due at, which goes first at `now`)
        let cases = [
            (
                "both due, the run-time one longer",
                now - secs(1),
                now - secs(9),
                "configured",
            ),
            ("both due at once", now, now, "configured"),
            (
                "only the run-time one due",
                now + secs(1),
                now - secs(1),
                "runtime",
            ),
            (
                "neither due, run-time sooner",
                now + secs(5),
                now + secs(2),
                "runtime",
            ),
            (
                "neither due, configured sooner",
                now + secs(2),
                now + secs(5),
                "configured",
            ),
        ];
        for (name, c_at, r_at, want) in cases {
            let mut s = Schedule::default();
            for (id, group, at) in [
                ("configured", JobGroup::Configured, c_at),
                ("runtime", JobGroup::Runtime, r_at),
            ] {
                let mut state = JobState::from_row(&job, None, false).expect("no row: polled");
                state.origin.group = group;
                s.put(Key::new("app", id), &mut state, at);
            }
            let peeked = s.peek(now).map(|(_, _, k)| k.job_id.clone());
            let (_, _, k) = s.pop(now).expect("two entries");
            assert_eq!(k.job_id, want, "{name}");
            assert_eq!(peeked.as_deref(), Some(want), "{name}: peek and pop agree");
        }
    }
}
