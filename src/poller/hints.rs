//! Poll hints: a record callback says "look at this job now". Polling stays the truth; a hint
//! only moves a job to the front of the queue, in a priority lane inside the same request
//! budget.
//!
//! The path has two halves so that a callback never waits for the poller:
//! - [`Hints`], shared with the callback receiver: a coalescing intake. `send` takes a lock for
//!   a few operations and never awaits; a second hint for a job already waiting is merged into
//!   it. It has no other bound: it holds one entry per job hinted since the dispatcher last
//!   drained it, so its memory is bounded by the jobs, and a storm never loses a hint (issue
//!   23: polling is the only way to learn each stormed job's stop reason);
//! - [`Lane`], owned by the dispatcher: the jobs waiting for a slot ahead of the round (jobs
//!   that joined the watch list at run time first, then hinted jobs, each in arrival order and
//!   each job at most once), the per-job limit (one hinted poll per job per [`PER_JOB`]), the
//!   lane's share of the budget, the re-polls that follow `CLOUD_RECORD_SERVER_OVER`
//!   ([`FOLLOW_UPS`]) and hints for jobs the dispatcher does not know yet (kept for
//!   [`PARK_FOR`], so a job that joins through discovery is polled at once).
//!
//! Which slot goes to the lane is [`decide`], a pure function: the lane takes a slot while it
//! has used less than its share ([`share`], `rate_limit` less a tenth) in the last second, or
//! when no regular poll is due (a hint never waits for an idle budget). A storm thus takes most
//! of the budget while it lasts, the round keeping a tenth so configured jobs still move, and
//! the round has it all back once the lane is empty. Every poll, hinted or not, takes its slot
//! from the one [`super::Budget`], so the total never exceeds `rate_limit`.

use super::Key;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// At most one hinted poll of a job per this long: a burst of events for one job (a file
/// started and completed, the job over) is one poll, not three.
pub const PER_JOB: Duration = Duration::from_secs(1);

/// A hint for a job the dispatcher does not watch (yet) is kept this long: discovery adds the
/// job a moment after its first callback, and the hint then polls it at once.
pub const PARK_FOR: Duration = Duration::from_secs(5);

/// After `CLOUD_RECORD_SERVER_OVER`, the job is polled again this long after the event, until
/// it shows STOPPED (the API may lag the event by seconds).
pub const FOLLOW_UPS: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// How many waiting jobs, from the front, each look at the lane considers: the cost of a look
/// stays bounded under a storm, and jobs further back wait their turn anyway.
const SCAN: usize = 256;

/// How often hints parked for unknown jobs are checked against the watch list.
const UNPARK_EVERY: Duration = Duration::from_millis(100);

/// The window over which the lane's share is counted: the budget's second.
const SHARE_WINDOW: Duration = Duration::from_secs(1);

/// What a callback asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HintKind {
    /// Poll the job now.
    Poll,
    /// The job ended (`CLOUD_RECORD_SERVER_OVER`): poll now, and again over the next seconds
    /// until it shows STOPPED.
    Over,
}

impl HintKind {
    /// Two hints for one job merge into the stronger one.
    fn merge(self, other: HintKind) -> HintKind {
        if self == HintKind::Over || other == HintKind::Over {
            HintKind::Over
        } else {
            HintKind::Poll
        }
    }
}

/// `recwatch_poll_hints_total{outcome}`: what became of a hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HintOutcome {
    /// A hinted poll took a budget slot.
    Taken,
    /// Merged into a hint already waiting for the same job.
    Coalesced,
    /// Never counted since issue 23 (nothing is full: a hint is kept until its job is polled);
    /// the label stays so dashboards and alerts built on it keep their series.
    Dropped,
    /// For a job that is not polled: not watched (and not joined within `PARK_FOR`), or
    /// already STOPPED.
    Ignored,
}

impl HintOutcome {
    pub fn label(self) -> &'static str {
        match self {
            HintOutcome::Taken => "taken",
            HintOutcome::Coalesced => "coalesced",
            HintOutcome::Dropped => "dropped",
            HintOutcome::Ignored => "ignored",
        }
    }

    pub(super) fn count(self, n: u64) {
        metrics::counter!("recwatch_poll_hints_total", "outcome" => self.label()).increment(n);
    }
}

/// The intake the callback receiver sends hints into; the dispatcher drains it. Cheap to
/// share (`Arc<Hints>`), and `send` never waits.
#[derive(Default)]
pub struct Hints {
    intake: Mutex<Intake>,
    /// Rung on each new hint; the dispatcher's loop waits on it.
    wake: Notify,
    /// Rung when this process's receiver stored an event: the feed (`feed.rs`) reads it at
    /// once instead of at its next look.
    stored: Notify,
    /// The other accounts' intakes (issue 25: a poller per account, each with its own feed),
    /// rung with this one's `stored`: the callback receiver holds one intake.
    siblings: Arc<Mutex<Vec<Weak<Hints>>>>,
}

#[derive(Default)]
struct Intake {
    order: VecDeque<Key>,
    kinds: HashMap<Key, HintKind>,
}

impl Hints {
    pub fn new() -> Hints {
        Hints::default()
    }

    /// Hints that `key` should be polled now. Returns what became of the hint in the intake
    /// (`Taken` here means accepted; the dispatcher counts the poll itself).
    pub fn send(&self, key: Key, kind: HintKind) -> HintOutcome {
        let outcome = {
            let mut intake = self.intake.lock().expect("hint intake");
            if let Some(k) = intake.kinds.get_mut(&key) {
                *k = k.merge(kind);
                HintOutcome::Coalesced
            } else {
                intake.kinds.insert(key.clone(), kind);
                intake.order.push_back(key);
                HintOutcome::Taken
            }
        };
        match outcome {
            HintOutcome::Taken => self.wake.notify_one(),
            other => other.count(1),
        }
        outcome
    }

    /// Everything sent since the last call, oldest first.
    pub(super) fn take(&self) -> Vec<(Key, HintKind)> {
        let mut intake = self.intake.lock().expect("hint intake");
        let Intake { order, kinds } = &mut *intake;
        let taken = order
            .drain(..)
            .filter_map(|k| kinds.remove(&k).map(|kind| (k, kind)))
            .collect();
        kinds.clear();
        taken
    }

    /// Completes when a hint has been sent since the last wait.
    pub(super) async fn notified(&self) {
        self.wake.notified().await
    }

    /// Says a record callback was stored: its hint comes through the database (the feed), the
    /// one path for events any instance stored, so each event is hinted once.
    pub fn event_stored(&self) {
        self.stored.notify_one();
        let siblings = self.siblings.lock().expect("hint siblings");
        for h in siblings.iter().filter_map(Weak::upgrade) {
            h.stored.notify_one();
        }
    }

    /// A new intake (another account's poller) rung whenever this one hears of a stored
    /// event; it lives as long as its holder, and is forgotten then.
    pub fn beside(&self) -> Arc<Hints> {
        let h = Arc::new(Hints {
            siblings: self.siblings.clone(),
            ..Hints::default()
        });
        let mut siblings = self.siblings.lock().expect("hint siblings");
        siblings.retain(|w| w.strong_count() > 0);
        siblings.push(Arc::downgrade(&h));
        h
    }

    /// Completes when an event has been stored since the last wait.
    pub(super) async fn stored_notified(&self) {
        self.stored.notified().await
    }
}

/// What the lane knows of a job when it decides: whether it can be polled now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Candidate {
    /// Not before this (one hinted poll per job per [`PER_JOB`], a follow-up's time).
    pub(super) not_before: Instant,
    /// Watched, not being polled right now, and not STOPPED-and-done.
    pub(super) ready: bool,
}

/// What the next budget slot goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// The hinted job at this index of the candidates.
    Hinted(usize),
    /// The regular round's next due job.
    Round,
    /// Nothing is due.
    Nothing,
}

/// [`Slot`] with the job taken out of the lane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Pick {
    /// A job that joined the watch list at run time: its first poll.
    Joining(Key),
    Hinted(Key),
    Round,
    Nothing,
}

/// The lane's share: the polls it may start in any second while regular polls are due. All
/// but a tenth of `rate_limit` (at least one slot each way where the rate allows): a storm of
/// K hinted jobs takes about K / (0.9 rate_limit) s against a floor of K / rate_limit, and
/// the round keeps moving meanwhile. Half, before issue 23: a storm took twice its floor.
pub(super) fn share(rate_limit: u32) -> usize {
    let rate = rate_limit as usize;
    (rate - rate.div_ceil(10)).max(1)
}

/// Who gets the next slot. The first lane job that is ready and due goes first (candidates
/// come joiners first, then hints, each oldest first), unless the lane has used its share of
/// the last second (`lane_used >= share`) and a regular poll is due: then the round goes, so a
/// storm of callbacks cannot starve it. With no regular poll due, a hint never waits for its
/// share to free up.
pub(super) fn decide(
    now: Instant,
    candidates: &[Candidate],
    lane_used: usize,
    share: usize,
    round_due: bool,
) -> Slot {
    let hinted = candidates
        .iter()
        .position(|c| c.ready && c.not_before <= now);
    match hinted {
        Some(i) if lane_used < share || !round_due => Slot::Hinted(i),
        _ if round_due => Slot::Round,
        _ => Slot::Nothing,
    }
}

/// A hinted job waiting for a slot.
struct Waiting {
    key: Key,
    not_before: Instant,
}

/// The dispatcher's side: the joiners and hinted jobs waiting, each in arrival order.
#[derive(Default)]
pub(super) struct Lane {
    /// Jobs that joined the watch list at run time, before their first poll: served before
    /// hinted jobs (issue 23, "joiners first").
    joining: VecDeque<Waiting>,
    waiting: VecDeque<Waiting>,
    /// Keys in `joining` or `waiting`, for coalescing: a job waits in the lane at most once,
    /// so the lane's memory is bounded by the watch list however many hints come.
    queued: HashSet<Key>,
    /// When each job's last hinted poll started (entries older than [`PER_JOB`] are pruned).
    last_taken: HashMap<Key, Instant>,
    /// Start times of the lane's polls in the last [`SHARE_WINDOW`].
    recent: VecDeque<Instant>,
    /// Hints for jobs not watched (yet), until when they are kept.
    parked: HashMap<Key, (Instant, HintKind)>,
    /// Re-polls after `CLOUD_RECORD_SERVER_OVER`.
    follow_ups: FollowUps,
    /// When parked hints were last checked.
    unparked_at: Option<Instant>,
}

impl Lane {
    /// Takes a hint for a job the dispatcher watches (`known`) or not yet. Nothing is dropped:
    /// each job has at most one entry in each of the lane's maps, and a parked hint is kept
    /// only [`PARK_FOR`].
    pub(super) fn hint(&mut self, key: Key, kind: HintKind, known: bool, now: Instant) {
        if !known {
            let kind = self.parked.get(&key).map_or(kind, |(_, k)| k.merge(kind));
            self.parked.insert(key, (now + PARK_FOR, kind));
            return;
        }
        if kind == HintKind::Over {
            self.follow_ups.start(key.clone(), now);
        }
        self.enqueue(key, now);
    }

    /// A job joined the watch list at run time: its first poll goes ahead of hinted jobs and
    /// of the round (within the lane's share). A hint parked for it (the callback that had
    /// discovery add it) is served by that poll, not by a second one a second later; an
    /// `Over` keeps its re-polls.
    pub(super) fn join(&mut self, key: Key, now: Instant) {
        if let Some((_, kind)) = self.parked.remove(&key) {
            if kind == HintKind::Over {
                self.follow_ups.start(key.clone(), now);
            }
        }
        if self.queued.insert(key.clone()) {
            self.joining.push_back(Waiting {
                key,
                not_before: now,
            });
        }
    }

    fn enqueue(&mut self, key: Key, now: Instant) {
        if self.queued.contains(&key) {
            HintOutcome::Coalesced.count(1);
            return;
        }
        let not_before = self
            .last_taken
            .get(&key)
            .map_or(now, |t| (*t + PER_JOB).max(now));
        self.queued.insert(key.clone());
        self.waiting.push_back(Waiting { key, not_before });
    }

    /// Moves parked hints of jobs that are watched now into the lane (`known` says which),
    /// and forgets those parked past [`PARK_FOR`]. Returns whether any moved.
    pub(super) fn unpark(&mut self, now: Instant, known: impl Fn(&Key) -> bool) -> bool {
        if self.parked.is_empty()
            || self
                .unparked_at
                .is_some_and(|t| now.duration_since(t) < UNPARK_EVERY)
        {
            return false;
        }
        self.unparked_at = Some(now);
        let mut joined = Vec::new();
        self.parked.retain(|k, (until, kind)| {
            if known(k) {
                joined.push((k.clone(), *kind));
                false
            } else if *until <= now {
                HintOutcome::Ignored.count(1);
                false
            } else {
                true
            }
        });
        let moved = !joined.is_empty();
        for (k, kind) in joined {
            self.hint(k, kind, true, now);
        }
        moved
    }

    /// Follow-ups due by `now` join the lane.
    pub(super) fn follow_up(&mut self, now: Instant) {
        for k in self.follow_ups.take_due(now) {
            self.enqueue(k, now);
        }
    }

    /// The job shows STOPPED (or is no longer watched): no more follow-ups for it.
    pub(super) fn settled(&mut self, key: &Key) {
        self.follow_ups.settle(key);
    }

    /// When the lane next has something to do, as the dispatcher's `next` would say from the
    /// lane alone: its earliest waiting job that is ready, or its next follow-up.
    #[cfg(test)]
    fn next_at(&self, ready: impl Fn(&Key) -> bool) -> Option<Instant> {
        let mut front = Vec::new();
        self.front(|k| Some(ready(k)), &mut front);
        let waiting = front.iter().filter(|c| c.ready).map(|c| c.not_before).min();
        waiting.into_iter().chain(self.next_follow_up()).min()
    }

    /// When the next re-poll after a job's end joins the lane (see [`Lane::follow_up`]).
    pub(super) fn next_follow_up(&self) -> Option<Instant> {
        self.follow_ups.next()
    }

    /// How many polls the lane started in the last [`SHARE_WINDOW`].
    pub(super) fn used(&mut self, now: Instant) -> usize {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= SHARE_WINDOW)
        {
            self.recent.pop_front();
        }
        self.recent.len()
    }

    /// The front of the lane as [`decide`] sees it, into `out` (cleared first): joiners, then
    /// hinted jobs, each oldest first, [`SCAN`] of each; `state` says of a waiting job whether
    /// it is watched (`Some`) and ready to poll now (`Some(true)`).
    pub(super) fn front(&self, state: impl Fn(&Key) -> Option<bool>, out: &mut Vec<Candidate>) {
        out.clear();
        out.extend(
            self.joining
                .iter()
                .take(SCAN)
                .chain(self.waiting.iter().take(SCAN))
                .map(|w| Candidate {
                    not_before: w.not_before,
                    ready: state(&w.key) == Some(true),
                }),
        );
    }

    /// Lets go of the waiting jobs at the front no longer watched (`state` is `None`).
    pub(super) fn let_go(&mut self, state: impl Fn(&Key) -> Option<bool>) {
        if self.queued.is_empty() {
            return;
        }
        let gone = let_go(&mut self.joining, &mut self.queued, &state)
            + let_go(&mut self.waiting, &mut self.queued, &state);
        if gone > 0 {
            HintOutcome::Ignored.count(gone as u64);
        }
    }

    /// Takes the job a decision chose out of the lane: `slot` indexes the candidates
    /// [`Lane::front`] gave, with nothing changed since. The caller must then poll it (and
    /// call [`Lane::took`]).
    pub(super) fn take(&mut self, slot: Slot) -> Pick {
        let joiners = self.joining.len().min(SCAN);
        match slot {
            Slot::Hinted(i) if i < joiners => {
                let w = self.joining.remove(i).expect("index from the candidates");
                self.queued.remove(&w.key);
                Pick::Joining(w.key)
            }
            Slot::Hinted(i) => {
                let w = self
                    .waiting
                    .remove(i - joiners)
                    .expect("index from the candidates");
                self.queued.remove(&w.key);
                Pick::Hinted(w.key)
            }
            Slot::Round => Pick::Round,
            Slot::Nothing => Pick::Nothing,
        }
    }

    /// Decides the next slot ([`decide`]) and takes a hinted pick out of the lane, the
    /// dispatcher's steps in one for the lane's tests (the dispatcher decides with its own
    /// `next`, which also weighs the budget and the round's time).
    #[cfg(test)]
    fn pick(
        &mut self,
        now: Instant,
        share: usize,
        round_due: bool,
        state: impl Fn(&Key) -> Option<bool>,
    ) -> Pick {
        self.let_go(&state);
        let mut candidates = Vec::new();
        self.front(&state, &mut candidates);
        let used = self.used(now);
        self.take(decide(now, &candidates, used, share, round_due))
    }

    /// A poll from the lane (of a hinted job, or a joiner's first) took a slot at `now`.
    pub(super) fn took(&mut self, pick: &Pick, now: Instant) {
        let key = match pick {
            Pick::Hinted(key) => {
                HintOutcome::Taken.count(1);
                key
            }
            Pick::Joining(key) => key,
            Pick::Round | Pick::Nothing => return,
        };
        self.recent.push_back(now);
        self.last_taken
            .retain(|_, t| now.duration_since(*t) < PER_JOB);
        self.last_taken.insert(key.clone(), now);
    }

    /// Whether a waiting job is this one (for tests and logs).
    #[cfg(test)]
    fn waiting_keys(&self) -> Vec<Key> {
        self.waiting.iter().map(|w| w.key.clone()).collect()
    }
}

/// The re-polls after `CLOUD_RECORD_SERVER_OVER`, ordered by when each is due: the
/// dispatcher looks at them on every turn of its loop, so a look costs the jobs due, not
/// every job of a storm still waiting for its STOPPED.
#[derive(Default)]
struct FollowUps {
    /// Per job: when the event came, and how many of [`FOLLOW_UPS`] are still to come.
    by_job: HashMap<Key, (Instant, usize)>,
    /// Each job's next re-poll, earliest first.
    due: BTreeSet<(Instant, Key)>,
}

impl FollowUps {
    fn next_due(at: Instant, left: usize) -> Instant {
        at + FOLLOW_UPS[FOLLOW_UPS.len() - left]
    }

    /// The event came at `now`: every re-poll to come, replacing any earlier series.
    fn start(&mut self, key: Key, now: Instant) {
        self.settle(&key);
        self.due
            .insert((Self::next_due(now, FOLLOW_UPS.len()), key.clone()));
        self.by_job.insert(key, (now, FOLLOW_UPS.len()));
    }

    fn settle(&mut self, key: &Key) {
        if let Some((at, left)) = self.by_job.remove(key) {
            self.due.remove(&(Self::next_due(at, left), key.clone()));
        }
    }

    /// The jobs whose re-poll is due by `now`; each moves on to its next one.
    fn take_due(&mut self, now: Instant) -> Vec<Key> {
        let mut out = Vec::new();
        while let Some((t, _)) = self.due.first() {
            if *t > now {
                break;
            }
            let (_, key) = self.due.pop_first().expect("just looked");
            if let Some((at, left)) = self.by_job.get_mut(&key) {
                *left -= 1;
                if *left == 0 {
                    self.by_job.remove(&key);
                } else {
                    self.due.insert((Self::next_due(*at, *left), key.clone()));
                }
            }
            out.push(key);
        }
        out
    }

    fn next(&self) -> Option<Instant> {
        self.due.first().map(|(t, _)| *t)
    }
}

/// Lets go of the jobs at the front of `queue` (the [`SCAN`] a look considers) that are no
/// longer watched (`state` is `None`); returns how many. Only the front is looked at, so a
/// look costs the same with ten thousand jobs waiting.
fn let_go(
    queue: &mut VecDeque<Waiting>,
    queued: &mut HashSet<Key>,
    state: impl Fn(&Key) -> Option<bool>,
) -> usize {
    let front: Vec<Waiting> = queue.drain(..queue.len().min(SCAN)).collect();
    let before = front.len();
    let kept: Vec<Waiting> = front
        .into_iter()
        .filter(|w| {
            let keep = state(&w.key).is_some();
            if !keep {
                queued.remove(&w.key);
            }
            keep
        })
        .collect();
    let gone = before - kept.len();
    for w in kept.into_iter().rev() {
        queue.push_front(w);
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(job: &str) -> Key {
        Key::new("app", job)
    }

    #[test]
    fn decide_table() {
        let now = Instant::now();
        let ready = Candidate {
            not_before: now,
            ready: true,
        };
        let busy = Candidate {
            not_before: now,
            ready: false,
        };
        let later = Candidate {
            not_before: now + Duration::from_millis(300),
            ready: true,
        };
        // (name, candidates, lane used, share, round due, want)
        type Case = (&'static str, Vec<Candidate>, usize, usize, bool, Slot);
        let cases: [Case; 9] = [
            ("no hints, round due", vec![], 0, 5, true, Slot::Round),
            ("no hints, nothing due", vec![], 0, 5, false, Slot::Nothing),
            (
                "a hint under its share",
                vec![ready],
                0,
                5,
                true,
                Slot::Hinted(0),
            ),
            (
                "the lane at its share gives the slot to the round",
                vec![ready],
                5,
                5,
                true,
                Slot::Round,
            ),
            (
                "at its share with no regular poll due: the hint goes",
                vec![ready],
                5,
                5,
                false,
                Slot::Hinted(0),
            ),
            (
                "a job being polled is passed over for the next",
                vec![busy, ready],
                0,
                5,
                true,
                Slot::Hinted(1),
            ),
            (
                "a job hinted less than a second ago waits",
                vec![later],
                0,
                5,
                true,
                Slot::Round,
            ),
            (
                "the oldest ready hint goes first",
                vec![later, ready, ready],
                0,
                5,
                false,
                Slot::Hinted(1),
            ),
            (
                "only waiting hints and nothing due: nothing",
                vec![later, busy],
                0,
                5,
                false,
                Slot::Nothing,
            ),
        ];
        for (name, candidates, used, share, round_due, want) in cases {
            assert_eq!(
                decide(now, &candidates, used, share, round_due),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn outcome_labels_are_the_catalogues() {
        let labels: Vec<&str> = [
            HintOutcome::Taken,
            HintOutcome::Coalesced,
            HintOutcome::Dropped,
            HintOutcome::Ignored,
        ]
        .map(HintOutcome::label)
        .to_vec();
        assert_eq!(labels, crate::metric_catalogue::HINT_OUTCOMES);
    }

    #[test]
    fn share_is_all_but_a_tenth_of_the_rate_and_at_least_one() {
        for (rate, want) in [(10, 9), (1, 1), (2, 1), (3, 2), (50, 45), (100, 90)] {
            assert_eq!(share(rate), want, "rate {rate}");
        }
    }

    /// Issue 23: a storm larger than the old 4,096-hint intake loses nothing, and a second
    /// hint for a job merges into the first.
    #[test]
    fn the_intake_coalesces_and_never_drops() {
        let hints = Hints::new();
        assert_eq!(hints.send(k("a"), HintKind::Poll), HintOutcome::Taken);
        assert_eq!(hints.send(k("a"), HintKind::Over), HintOutcome::Coalesced);
        for i in 1..10_000 {
            assert_eq!(
                hints.send(k(&format!("j{i}")), HintKind::Over),
                HintOutcome::Taken,
                "hint {i}"
            );
        }
        let taken = hints.take();
        assert_eq!(taken.len(), 10_000);
        assert_eq!(
            taken[0],
            (k("a"), HintKind::Over),
            "merged into the stronger kind"
        );
        assert!(hints.take().is_empty());
    }

    /// Every hinted job of a storm of 10,000 is picked, once each, in hint order; joiners
    /// that arrive meanwhile go before the hints still waiting.
    #[tokio::test(start_paused = true)]
    async fn a_storm_is_polled_to_the_last_job_with_joiners_first() {
        let mut lane = Lane::default();
        let now = Instant::now();
        for i in 0..10_000 {
            lane.hint(k(&format!("j{i}")), HintKind::Over, true, now);
            lane.hint(k(&format!("j{i}")), HintKind::Poll, true, now);
        }
        let mut picked = Vec::new();
        for n in 0..10_002 {
            if n == 5 {
                lane.join(k("new-1"), now);
                lane.join(k("new-2"), now);
            }
            match lane.pick(Instant::now(), usize::MAX, false, all_ready) {
                Pick::Hinted(key) | Pick::Joining(key) => picked.push(key),
                other => panic!("pick {n}: {other:?}"),
            }
        }
        assert_eq!(picked[5..7], [k("new-1"), k("new-2")], "joiners first");
        let hinted: Vec<Key> = (0..10_000).map(|i| k(&format!("j{i}"))).collect();
        let mut rest = picked[..5].to_vec();
        rest.extend_from_slice(&picked[7..]);
        assert_eq!(rest, hinted, "every stormed job once, in hint order");
        assert_eq!(lane.pick(now, usize::MAX, false, all_ready), Pick::Nothing);
    }

    /// Every job watched and idle.
    fn all_ready(_: &Key) -> Option<bool> {
        Some(true)
    }

    #[tokio::test(start_paused = true)]
    async fn one_hinted_poll_per_job_per_second() {
        let mut lane = Lane::default();
        let t0 = Instant::now();
        lane.hint(k("a"), HintKind::Poll, true, t0);
        assert_eq!(lane.pick(t0, 5, true, all_ready), Pick::Hinted(k("a")));
        lane.took(&Pick::Hinted(k("a")), t0);
        // Another event for the same job 200 ms later waits for the second to be over.
        tokio::time::advance(Duration::from_millis(200)).await;
        let t1 = Instant::now();
        lane.hint(k("a"), HintKind::Poll, true, t1);
        assert_eq!(lane.pick(t1, 5, true, all_ready), Pick::Round);
        assert_eq!(lane.next_at(|_| true), Some(t0 + PER_JOB));
        tokio::time::advance(Duration::from_millis(800)).await;
        assert_eq!(
            lane.pick(Instant::now(), 5, true, all_ready),
            Pick::Hinted(k("a"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_storm_takes_at_most_its_share_while_the_round_is_due() {
        let mut lane = Lane::default();
        let now = Instant::now();
        for i in 0..20 {
            lane.hint(k(&format!("j{i}")), HintKind::Poll, true, now);
        }
        let mut hinted = 0;
        let mut round = 0;
        // Ten slots within one second (a budget of 10/s, round always due).
        for _ in 0..10 {
            let t = Instant::now();
            match lane.pick(t, share(10), true, all_ready) {
                Pick::Hinted(key) => {
                    lane.took(&Pick::Hinted(key), t);
                    hinted += 1;
                }
                Pick::Round => round += 1,
                other => panic!("unexpected {other:?}"),
            }
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert_eq!((hinted, round), (9, 1), "all but a tenth to the lane");
        assert_eq!(lane.waiting_keys().len(), 11, "the rest still waiting");
    }

    #[tokio::test(start_paused = true)]
    async fn hints_for_unknown_jobs_wait_briefly_for_them_to_join() {
        let mut lane = Lane::default();
        let t0 = Instant::now();
        lane.hint(k("new"), HintKind::Poll, false, t0);
        lane.hint(k("never"), HintKind::Poll, false, t0);
        assert_eq!(lane.pick(t0, 5, false, all_ready), Pick::Nothing);
        tokio::time::advance(Duration::from_secs(2)).await;
        // "new" joined (discovery); "never" did not.
        assert!(lane.unpark(Instant::now(), |key| key == &k("new")));
        assert_eq!(lane.waiting_keys(), vec![k("new")]);
        tokio::time::advance(PARK_FOR).await;
        assert!(!lane.unpark(Instant::now(), |_| false));
        assert!(lane.parked.is_empty(), "forgotten after PARK_FOR");
    }

    #[tokio::test(start_paused = true)]
    async fn server_over_polls_again_until_stopped() {
        let mut lane = Lane::default();
        let t0 = Instant::now();
        lane.hint(k("a"), HintKind::Over, true, t0);
        let mut polled_at = Vec::new();
        // Twenty seconds of dispatcher steps, every 100 ms.
        for _ in 0..200 {
            let now = Instant::now();
            lane.follow_up(now);
            if let Pick::Hinted(key) = lane.pick(now, 5, false, all_ready) {
                lane.took(&Pick::Hinted(key), now);
                polled_at.push(now.duration_since(t0));
            }
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        let s = Duration::from_secs;
        assert_eq!(polled_at, vec![s(0), s(1), s(2), s(4), s(8)]);
        assert_eq!(lane.next_at(|_| true), None, "no more follow-ups");

        // Once the job shows STOPPED, the follow-ups stop.
        let t1 = Instant::now();
        lane.hint(k("b"), HintKind::Over, true, t1);
        let Pick::Hinted(key) = lane.pick(t1, 5, false, all_ready) else {
            panic!("polled at once")
        };
        lane.took(&Pick::Hinted(key), t1);
        lane.settled(&k("b"));
        tokio::time::advance(Duration::from_secs(10)).await;
        lane.follow_up(Instant::now());
        assert!(lane.waiting_keys().is_empty());
    }

    /// A discovered job joins with a hint parked for it: one poll, not a joiner's and then a
    /// hinted one; an `Over` still brings its re-polls.
    #[tokio::test(start_paused = true)]
    async fn a_joiner_absorbs_the_hint_parked_for_it() {
        let mut lane = Lane::default();
        let t0 = Instant::now();
        lane.hint(k("new"), HintKind::Over, false, t0);
        lane.join(k("new"), t0);
        let pick = lane.pick(t0, 5, false, all_ready);
        assert_eq!(pick, Pick::Joining(k("new")));
        lane.took(&pick, t0);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(
            !lane.unpark(Instant::now(), |_| true),
            "nothing parked any more"
        );
        assert_eq!(
            lane.pick(Instant::now(), 5, false, all_ready),
            Pick::Nothing
        );
        tokio::time::advance(Duration::from_millis(800)).await;
        lane.follow_up(Instant::now());
        assert_eq!(
            lane.pick(Instant::now(), 5, false, all_ready),
            Pick::Hinted(k("new")),
            "the first re-poll after the job's end"
        );
    }

    #[test]
    fn waiting_jobs_no_longer_watched_are_let_go() {
        let mut lane = Lane::default();
        let now = Instant::now();
        lane.hint(k("gone"), HintKind::Poll, true, now);
        lane.hint(k("busy"), HintKind::Poll, true, now);
        let state = |key: &Key| (key != &k("gone")).then_some(false);
        assert_eq!(lane.pick(now, 5, false, state), Pick::Nothing);
        assert_eq!(lane.waiting_keys(), vec![k("busy")]);
    }
}
