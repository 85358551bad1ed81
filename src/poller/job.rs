//! A job's state between polls: its last phase, its failures, and the outcomes the database
//! has not taken yet. It moves into the job's poll task and back, so a job is never polled
//! twice at once and transition detection needs no lock.

use super::watchlist::Origin;
use crate::config::JobConfig;
use crate::domain::Phase;
use crate::domain::{PollOutcome, PollRecord};
use chrono::Utc;
use tokio::time::Instant;
use tracing::warn;

/// While the database refuses writes, how many transitions one job keeps in memory. A job
/// changes state a few times in its life; more than this is a flapping answer, and the
/// middle of the run is folded away (see [`keep_bounded`]) so memory stays bounded.
const MAX_UNWRITTEN: usize = 32;

/// A job's state between polls. It moves into the poll task and back.
pub(super) struct JobState {
    pub(super) job: JobConfig,
    pub(super) phase: Option<Phase>,
    pub(super) failures: u32,
    /// Outcomes not yet written because the database refused (locked); written, in order,
    /// with the next poll of this job.
    pub(super) unwritten: Vec<PollRecord>,
    /// First time this run saw the job, for stuck_init when the API gives no create_time.
    pub(super) first_seen: chrono::DateTime<Utc>,
    /// Whether a stuck_init / job_not_found episode may be open for this job. True until the
    /// first write of this run has evaluated the conditions; a wrong `true` only costs a
    /// write, a wrong `false` would miss a resolve, so these err towards `true`.
    pub(super) maybe_stuck_open: bool,
    pub(super) maybe_not_found_open: bool,
    /// The sequence number of the job's live schedule entry: entries with another are stale
    /// (superseded by a later scheduling) and skipped.
    pub(super) sched: u64,
    /// When the job's next poll is due (what a write of owed outcomes puts back).
    pub(super) due: Instant,
    /// The configuration generation `job` was taken from; a poll in flight during a reload
    /// comes back with an older one and is refreshed.
    pub(super) generation: u64,
    /// Its group and whether discovery added it (set by the dispatcher; refreshed with
    /// `generation`).
    pub(super) origin: Origin,
    /// Polls in a row that found no such job while it was never found: a discovered job is
    /// retired at [`RETIRE_UNFOUND_AFTER`].
    pub(super) unfound: u32,
}

/// How many "not found" answers in a row retire a discovered job that was never found: a few,
/// so a job the callback announced a moment before the API lists it is not dropped at once.
pub(super) const RETIRE_UNFOUND_AFTER: u32 = 3;

impl JobState {
    /// A job's state from its stored row; `None` when it is STOPPED and `skip_terminal` says
    /// such jobs are not polled.
    pub(super) fn from_row(
        job: &JobConfig,
        row: Option<&crate::store::JobRow>,
        skip_terminal: bool,
    ) -> Option<JobState> {
        let phase = row.and_then(|r| r.phase());
        if skip_terminal && phase.as_ref().is_some_and(Phase::is_terminal) {
            return None;
        }
        let first_seen = row
            .and_then(|r| r.first_seen_at.as_deref())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(Utc::now);
        Some(JobState {
            maybe_stuck_open: true,
            maybe_not_found_open: true,
            job: job.clone(),
            phase,
            failures: 0,
            unwritten: Vec::new(),
            first_seen,
            sched: 0,
            due: Instant::now(),
            generation: 0,
            origin: Origin {
                group: crate::config::JobGroup::Configured,
                discovered: false,
            },
            unfound: 0,
        })
    }

    /// Keeps `record` to be written, bounded: of the polls that changed nothing only the
    /// latest is kept, and transitions past [`MAX_UNWRITTEN`] are folded (see [`keep_bounded`]).
    pub(super) fn keep(&mut self, record: PollRecord) {
        if self.unwritten.last().is_some_and(|r| !r.is_transition()) {
            self.unwritten.pop();
        }
        self.unwritten.push(record);
        if keep_bounded(&mut self.unwritten, MAX_UNWRITTEN) {
            warn!(app_id = %self.job.app_id, job_id = %self.job.job_id, kept = self.unwritten.len(), "the database has refused this job's writes for so many changes that intermediate ones are dropped from memory; the first and the latest are kept");
        }
    }
}

/// Folds a run of unwritten records that has grown past `max`: the second-oldest transition
/// is dropped and the next one starts from where the dropped one started, so the chain of
/// states stays unbroken (a transition is only written if the row shows its `from`). The
/// first transition, the one owed longest, and the latest are kept. Returns whether it
/// dropped anything.
fn keep_bounded(records: &mut Vec<PollRecord>, max: usize) -> bool {
    let mut dropped = false;
    while records.len() > max.max(3) {
        let removed = records.remove(1);
        dropped = true;
        let from = match removed.outcome {
            PollOutcome::Ok {
                transition: Some((from, _)),
                ..
            } => from,
            // Not a transition: nothing to splice.
            _ => continue,
        };
        if let Some(PollOutcome::Ok {
            transition: Some((next_from, _)),
            ..
        }) = records
            .iter_mut()
            .skip(1)
            .map(|r| &mut r.outcome)
            .find(|o| {
                matches!(
                    o,
                    PollOutcome::Ok {
                        transition: Some(_),
                        ..
                    }
                )
            })
        {
            *next_from = from;
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(from: Option<&str>, to: Option<&str>) -> PollRecord {
        let phase = |s: &str| Phase::parse(s, None);
        PollRecord {
            app_id: "a".into(),
            job_id: "j".into(),
            name: None,
            kind: crate::domain::JobKind::Individual,
            polled_at: Utc::now(),
            outcome: PollOutcome::Ok {
                job: Box::default(),
                raw: "{}".into(),
                request_id: None,
                transition: to.map(|to| (from.map(phase), phase(to))),
            },
        }
    }

    fn chain(records: &[PollRecord]) -> Vec<(Option<String>, Option<String>)> {
        records
            .iter()
            .map(|r| match &r.outcome {
                PollOutcome::Ok {
                    transition: Some((from, to)),
                    ..
                } => (
                    from.as_ref().map(|p| p.state.as_str().to_string()),
                    Some(to.state.as_str().to_string()),
                ),
                _ => (None, None),
            })
            .collect()
    }

    #[test]
    fn unwritten_outcomes_stay_bounded_and_chained_table() {
        let s = |x: &str| Some(x.to_string());
        type Chain = Vec<(Option<String>, Option<String>)>;
        let cases: Vec<(&str, Vec<PollRecord>, usize, bool, Chain)> = vec![
            (
                "under the bound: untouched",
                vec![rec(None, Some("A")), rec(Some("A"), Some("B"))],
                4,
                false,
                vec![(None, s("A")), (s("A"), s("B"))],
            ),
            (
                "one over: the second is folded into the third",
                vec![
                    rec(None, Some("A")),
                    rec(Some("A"), Some("B")),
                    rec(Some("B"), Some("C")),
                    rec(Some("C"), Some("D")),
                    rec(Some("D"), Some("E")),
                ],
                4,
                true,
                vec![
                    (None, s("A")),
                    (s("A"), s("C")),
                    (s("C"), s("D")),
                    (s("D"), s("E")),
                ],
            ),
            (
                "a trailing unchanged poll is kept last",
                vec![
                    rec(None, Some("A")),
                    rec(Some("A"), Some("B")),
                    rec(Some("B"), Some("C")),
                    rec(Some("C"), Some("D")),
                    rec(None, None),
                ],
                4,
                true,
                vec![
                    (None, s("A")),
                    (s("A"), s("C")),
                    (s("C"), s("D")),
                    (None, None),
                ],
            ),
            (
                "far over: first and latest kept, chain unbroken",
                (0..40)
                    .map(|i| {
                        let from = (i > 0).then(|| (i - 1).to_string());
                        rec(from.as_deref(), Some(&i.to_string()))
                    })
                    .collect(),
                4,
                true,
                vec![
                    (None, s("0")),
                    (s("0"), s("37")),
                    (s("37"), s("38")),
                    (s("38"), s("39")),
                ],
            ),
        ];
        for (name, mut records, max, want_dropped, want) in cases {
            assert_eq!(keep_bounded(&mut records, max), want_dropped, "{name}");
            assert_eq!(chain(&records), want, "{name}");
        }
    }
}
