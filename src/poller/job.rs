//! A job's state between polls: its last phase, its failures, and the outcomes the database
//! has not taken yet. It moves into the job's poll task and back, so a job is never polled
//! twice at once and transition detection needs no lock.

use super::merge::Origin;
use crate::config::JobConfig;
use crate::domain::Phase;
use crate::domain::{PollOutcome, PollRecord, State};
use crate::rules;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::warn;

/// How long a job has been in INIT, judged on tokio's monotonic clock: the wall clock is
/// read once, when this process first sees the job in INIT (its age since create_time then),
/// and only monotonic time is added after that. A step of the wall clock (an NTP correction,
/// a VM resumed a day later) moves nothing, so it cannot make every INIT job "stuck" at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct InitClock {
    /// The job's age in INIT when it was first seen there.
    age_then: Duration,
    /// When that was, on the monotonic clock.
    seen: Instant,
}

impl InitClock {
    pub(super) fn start(age_then: Duration, seen: Instant) -> InitClock {
        InitClock { age_then, seen }
    }

    pub(super) fn in_init(self, now: Instant) -> Duration {
        self.age_then
            .saturating_add(now.saturating_duration_since(self.seen))
    }
}

/// While the database refuses writes, how many transitions one job keeps in memory. A job
/// changes state a few times in its life; more than this is a flapping answer, and the
/// middle of the run is folded away (see [`keep_bounded`]) so memory stays bounded.
const MAX_UNWRITTEN: usize = 32;

/// What a job's state starts from of its stored row: its phase and when recwatch first saw
/// it. Read from the row's text as the row is read, so arming never holds the rows themselves
/// (issue 23, item 1).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Seed {
    phase: Option<Phase>,
    first_seen: Option<chrono::DateTime<Utc>>,
}

impl Seed {
    pub(super) fn of(
        state: Option<&str>,
        stop_reason: Option<&str>,
        first_seen_at: Option<crate::domain::Timestamp>,
    ) -> Seed {
        Seed {
            phase: state.map(|s| Phase::parse(s, stop_reason)),
            first_seen: first_seen_at.map(|t| t.to_datetime()),
        }
    }

    pub(super) fn of_row(r: &crate::store::JobRow) -> Seed {
        Seed::of(
            r.state.as_deref(),
            r.stop_reason.as_deref(),
            r.first_seen_at,
        )
    }
}

/// A job's state between polls. It moves into the poll task and back.
pub(super) struct JobState {
    /// Shared with the dispatcher's `watched` map (one allocation per job, not one per copy:
    /// issue 23 found five copies of every job's configuration in memory).
    pub(super) job: Arc<JobConfig>,
    pub(super) phase: Option<Phase>,
    pub(super) failures: u32,
    /// Outcomes not yet written because the database refused (locked); written, in order,
    /// with the next poll of this job.
    pub(super) unwritten: Vec<PollRecord>,
    /// First time recwatch saw the job (its row's `first_seen_at`), for stuck_init when the
    /// API gives no create_time.
    pub(super) first_seen: chrono::DateTime<Utc>,
    /// How long the job has been in INIT, on the monotonic clock; `None` while it is not
    /// (or no answer of this process has said so yet). Boxed: few jobs are in INIT at a time,
    /// and inline it cost every job 32 bytes (issue 23, item 1).
    pub(super) init_clock: Option<Box<InitClock>>,
    /// Whether a stuck_init / job_not_found episode may be open for this job. True until the
    /// first write of this run has evaluated the conditions; a wrong `true` only costs a
    /// write, a wrong `false` would miss a resolve, so these err towards `true`.
    pub(super) maybe_stuck_open: bool,
    pub(super) maybe_not_found_open: bool,
    /// Whether a poll_failing episode may be open: set by any failed poll written, cleared
    /// by an answer written (a quiet, batched answer could not resolve it).
    pub(super) maybe_failing_open: bool,
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
    /// such jobs are not polled. `job` is the dispatcher's shared `Arc` (kept shared) or a
    /// plain configuration (put in an allocation of its own).
    pub(super) fn from_row<J: Clone + Into<Arc<JobConfig>>>(
        job: &J,
        row: Option<&crate::store::JobRow>,
        skip_terminal: bool,
    ) -> Option<JobState> {
        JobState::from_seed(job, row.map(Seed::of_row), skip_terminal)
    }

    /// A job's state from what its stored row says of it (`None`: no row, a new job); None
    /// when it is terminal and `skip_terminal` keeps such jobs unpolled.
    pub(super) fn from_seed<J: Clone + Into<Arc<JobConfig>>>(
        job: &J,
        seed: Option<Seed>,
        skip_terminal: bool,
    ) -> Option<JobState> {
        let (phase, first_seen) = seed.map_or((None, None), |s| (s.phase, s.first_seen));
        if skip_terminal && phase.as_ref().is_some_and(Phase::is_terminal) {
            return None;
        }
        let first_seen = first_seen.unwrap_or_else(Utc::now);
        Some(JobState {
            maybe_stuck_open: true,
            maybe_not_found_open: true,
            maybe_failing_open: true,
            job: job.clone().into(),
            phase,
            failures: 0,
            unwritten: Vec::new(),
            first_seen,
            init_clock: None,
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

    /// Follows the job's time in INIT from an answer read at `wall_now`: the first answer in
    /// INIT starts the clock at the age the wall clock gives then ([`rules::init_age`]); later
    /// ones keep it; another state stops it; no state says nothing.
    pub(super) fn observe_init(
        &mut self,
        job: &recwatch_rtc::model::JobSnapshot,
        wall_now: chrono::DateTime<Utc>,
    ) {
        match job.state {
            Some(State::Init) if self.init_clock.is_none() => {
                let age = rules::init_age(job.created(), self.first_seen, wall_now);
                self.init_clock = Some(Box::new(InitClock::start(age, Instant::now())));
            }
            Some(State::Init) | None => {}
            Some(_) => self.init_clock = None,
        }
    }

    /// How long the job has been in INIT now, as [`InitClock`] counts it.
    pub(super) fn in_init(&self) -> Option<Duration> {
        self.init_clock
            .as_deref()
            .map(|c| c.in_init(Instant::now()))
    }

    /// Keeps `record` to be written, bounded: of the polls that changed nothing only the
    /// latest is kept, and transitions past [`MAX_UNWRITTEN`] are folded (see [`keep_bounded`]).
    pub(super) fn keep(&mut self, record: PollRecord) {
        if self.unwritten.last().is_some_and(|r| !r.is_transition()) {
            self.unwritten.pop();
        }
        self.unwritten.push(record);
        if keep_bounded(&mut self.unwritten, MAX_UNWRITTEN) {
            warn!(app_id = %self.job.app_id(), job_id = %self.job.job_id(), kept = self.unwritten.len(), "the database has refused this job's writes for so many changes that intermediate ones are dropped from memory; the first and the latest are kept");
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

    /// Issue 22, item 9: a job first seen in INIT, then the wall clock steps 25 hours ahead
    /// between two polls. Judged on the monotonic clock it has been in INIT for 10 s, not 25 h:
    /// not stuck. It becomes stuck only once monotonic time passes max_idle_time + grace.
    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_step_does_not_age_a_job_in_init() {
        let job = JobConfig {
            account: None,
            key: crate::domain::JobKey::new("app", "j"),
            name: None,
            kind: crate::domain::JobKind::Individual,
            interval: None,
            notify: None,
        };
        let mut state = JobState::from_row(&Arc::new(job), None, true).unwrap();
        let t0 = Utc::now();
        let init = recwatch_rtc::model::JobSnapshot {
            state: Some(State::Init),
            create_time: Some(t0.to_rfc3339()),
            max_idle_time: Some(30),
            ..Default::default()
        };
        let grace = Duration::from_secs(60);
        let stuck = |s: &JobState| rules::snapshot_stuck_init(&init, s.in_init(), grace).unwrap();
        state.observe_init(&init, t0);
        assert!(!stuck(&state));
        tokio::time::advance(Duration::from_secs(10)).await;
        let stepped = t0 + chrono::Duration::hours(25);
        state.observe_init(&init, stepped);
        assert_eq!(state.in_init(), Some(Duration::from_secs(10)));
        assert!(!stuck(&state), "the wall clock's step is not time in INIT");
        // What the wall clock alone would have said.
        assert!(rules::is_stuck_init(
            &State::Init,
            rules::init_age(init.created(), t0, stepped),
            init.max_idle_time,
            grace
        ));
        tokio::time::advance(Duration::from_secs(81)).await;
        assert!(stuck(&state), "91 s in INIT, over 30 s + 60 s");
        // RUNNING stops the clock; INIT again starts a new one from the wall clock's age.
        let running = recwatch_rtc::model::JobSnapshot {
            state: Some(State::Running),
            ..init.clone()
        };
        state.observe_init(&running, stepped);
        assert_eq!(state.in_init(), None);
        // An answer without a state says nothing: the clock is kept.
        state.observe_init(&init, stepped);
        let before = state.in_init();
        state.observe_init(&recwatch_rtc::model::JobSnapshot::default(), stepped);
        assert_eq!(state.in_init(), before);
    }

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
