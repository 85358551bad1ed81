//! Leadership: of the `recwatch run` instances on one database, exactly one is active (it
//! polls and delivers); the others are standby and take over when it dies.
//!
//! The active instance holds a lease in the database (`store`'s `leader_lease`, expiring by
//! the database's clock) and renews it every [`Timing::renew_every`]. Locally it trusts the
//! lease only until (the monotonic instant *before* the renewal was sent) + ttl − margin: the
//! database set the expiry after that instant, so the local deadline always falls before the
//! database's, whatever the instances' wall clocks say. Past its deadline without a renewal
//! (the database unreachable, the process paused) the instance steps down and starts no poll
//! and no send; a standby acquires the lease once the database sees it expired, with the next
//! epoch, and every write of the old epoch is refused from then on (the fence, `store::Fence`).
//!
//! [`Leader`] is that rule as a pure state machine: lease outcomes and monotonic instants in,
//! the role, the local deadline and when to try next out; `task` drives it against the store
//! and publishes the role the daemon's wiring (`startup`) switches on.

mod task;

pub use task::{Leadership, Term, run};

use std::time::Duration;
use tokio::time::Instant;

/// How often the lease is renewed, how long it lasts, and how much of it the holder gives up
/// to be safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub renew_every: Duration,
    pub ttl: Duration,
    /// Taken off the local deadline: room for the database's clock to run faster than ours
    /// and for a write already inside the fence to commit.
    pub margin: Duration,
}

/// Renewed every 3 s, lasting 10 s: a dead leader is replaced within ttl + renew_every (13 s,
/// under the 15 s promised), and a leader survives two missed renewals.
pub const TIMING: Timing = Timing {
    renew_every: Duration::from_secs(3),
    ttl: Duration::from_secs(10),
    margin: Duration::from_secs(2),
};

/// How long an exclusive holder (SQLite) trusts its lease: for all practical purposes for
/// ever (no other instance can exist; a database that cannot be written must not stop polling,
/// whose outcomes are kept in memory until it can).
const EXCLUSIVE: Duration = Duration::from_secs(10 * 365 * 86_400);

/// The first retry after a failed lease statement; doubled per failure, capped at
/// `renew_every` (a leader must keep trying well before its deadline).
const FIRST_RETRY: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// This instance polls and delivers; its writes carry `epoch`.
    Active {
        epoch: i64,
    },
    Standby,
}

impl Role {
    pub fn is_active(&self) -> bool {
        matches!(self, Role::Active { .. })
    }
}

/// The instance that holds the lease, as told to people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// "host (pid N)".
    pub who: String,
    pub epoch: i64,
}

/// What one lease statement came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acquired, at this epoch.
    Acquired { epoch: i64 },
    /// Our lease extended.
    Renewed,
    /// Held by another instance (an acquisition refused, or a renewal that found the lease
    /// no longer ours); None when the holder could not be read.
    HeldBy(Option<Holder>),
    /// No answer: the database unreachable or the statement failed.
    Failed(String),
}

/// Why an active instance stopped being active.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepDown {
    /// A renewal found the lease taken or expired.
    Lost(Option<Holder>),
    /// No renewal came back before the local deadline.
    DeadlinePassed { last_error: Option<String> },
    /// A write was refused by the fence: the database shows this epoch now.
    Fenced { now: i64 },
}

/// A change of role, to log and to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    TookOver { epoch: i64 },
    SteppedDown { epoch: i64, why: StepDown },
}

/// The state machine (see the module's doc). Every input carries the monotonic instant it
/// happened at; nothing here reads a clock.
#[derive(Clone, Debug)]
pub struct Leader {
    timing: Timing,
    role: Role,
    /// While active: until when the lease is trusted here.
    deadline: Option<Instant>,
    next_try: Instant,
    /// Failed statements in a row, for the back-off.
    failures: u32,
    last_error: Option<String>,
    /// The only possible instance (SQLite's owner lock): the lease is taken whatever it
    /// says and never lapses locally for want of a renewal.
    exclusive: bool,
}

impl Leader {
    /// Standby, trying for the lease at once.
    pub fn new(timing: Timing, now: Instant) -> Leader {
        Leader {
            timing,
            role: Role::Standby,
            deadline: None,
            next_try: now,
            failures: 0,
            last_error: None,
            exclusive: false,
        }
    }

    /// The only possible instance (see the field).
    pub fn exclusive(mut self) -> Leader {
        self.exclusive = true;
        self
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// While active: until when this instance may poll and send.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// When the loop should next act: the next statement, or the deadline if sooner.
    pub fn next_wake(&self) -> Instant {
        match self.deadline {
            Some(d) => d.min(self.next_try),
            None => self.next_try,
        }
    }

    /// Whether the next statement is due at `now` (the loop may wake earlier, for the
    /// deadline).
    pub fn is_due(&self, now: Instant) -> bool {
        now >= self.next_try
    }

    /// The last statement's failure while it lasts (for `/readyz`).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// A statement sent at `sent` came back with `outcome` at `now`.
    pub fn on_outcome(&mut self, sent: Instant, outcome: Outcome, now: Instant) -> Option<Change> {
        let valid_until = match self.exclusive {
            true => sent + EXCLUSIVE,
            false => sent + self.timing.ttl.saturating_sub(self.timing.margin),
        };
        if !matches!(outcome, Outcome::Failed(_)) {
            self.failures = 0;
            self.last_error = None;
            self.next_try = now + self.timing.renew_every;
        }
        match (self.role, outcome) {
            (Role::Standby, Outcome::Acquired { epoch }) if valid_until > now => {
                self.role = Role::Active { epoch };
                self.deadline = Some(valid_until);
                Some(Change::TookOver { epoch })
            }
            // Acquired, but the answer took longer than the lease is trusted: not acting on
            // it. The lease expires unused and the next acquisition raises the epoch again.
            (Role::Standby, Outcome::Acquired { .. }) => {
                self.next_try = now;
                None
            }
            (Role::Active { .. }, Outcome::Renewed) => {
                self.deadline = self.deadline.max(Some(valid_until));
                self.on_tick(now)
            }
            (Role::Active { epoch }, Outcome::HeldBy(by)) => {
                Some(self.step_down(epoch, StepDown::Lost(by)))
            }
            (_, Outcome::Failed(error)) => {
                self.failures = self.failures.saturating_add(1);
                let exp = self.failures.saturating_sub(1).min(16);
                let retry = FIRST_RETRY
                    .saturating_mul(1 << exp)
                    .min(self.timing.renew_every);
                self.next_try = now + retry;
                self.last_error = Some(error);
                self.on_tick(now)
            }
            // Standby and still held by another, or a late answer to what an active instance
            // asked before it stepped down: nothing changes.
            (Role::Standby, Outcome::Renewed | Outcome::HeldBy(_))
            | (Role::Active { .. }, Outcome::Acquired { .. }) => None,
        }
    }

    /// Time has passed: an active instance past its deadline steps down.
    pub fn on_tick(&mut self, now: Instant) -> Option<Change> {
        match (self.role, self.deadline) {
            (Role::Active { epoch }, Some(d)) if now >= d => {
                let last_error = self.last_error.clone();
                Some(self.step_down(epoch, StepDown::DeadlinePassed { last_error }))
            }
            _ => None,
        }
    }

    /// A write was refused by the fence; the database shows epoch `now_epoch`.
    pub fn on_fenced(&mut self, now_epoch: i64, now: Instant) -> Option<Change> {
        match self.role {
            Role::Active { epoch }
                if now_epoch != epoch || self.deadline.is_some_and(|d| now >= d) =>
            {
                Some(self.step_down(epoch, StepDown::Fenced { now: now_epoch }))
            }
            // Our own epoch with the lease expired by the database's clock: the next renewal
            // fails and says so; a refusal for an older term is news to nobody.
            Role::Active { epoch } if now_epoch == epoch => {
                self.next_try = now;
                None
            }
            _ => None,
        }
    }

    fn step_down(&mut self, epoch: i64, why: StepDown) -> Change {
        self.role = Role::Standby;
        self.deadline = None;
        Change::SteppedDown { epoch, why }
    }
}

/// Who takes a lease that has ended: on PostgreSQL a standby instance, at its next try; on
/// SQLite nobody waits (one `recwatch run` owns the file), so only the next `recwatch run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Successor {
    Standby,
    NextRun,
}

impl Successor {
    /// Who succeeds on the configured database.
    pub fn on(database: &crate::config::Database<'_>) -> Successor {
        match database {
            crate::config::Database::Sqlite(_) => Successor::NextRun,
            crate::config::Database::Postgres(_) => Successor::Standby,
        }
    }
}

/// Which instance leads, as the lease shows it (`recwatch status`, `recwatch check`), and who
/// would take an ended lease.
pub fn describe(lease: Option<&crate::store::LeaseRow>, successor: Successor) -> String {
    let secs = |ms: i64| ms.unsigned_abs().div_ceil(1000);
    match lease {
        Some(l) if l.is_held() => format!(
            "{} (lease epoch {}, expires in {} s unless renewed)",
            l.who(),
            l.epoch,
            secs(l.expires_in_ms)
        ),
        Some(l) if !l.holder.is_empty() => format!(
            "none: the lease of {} (epoch {}) ended {} s ago; {}",
            l.who(),
            l.epoch,
            secs(l.expires_in_ms),
            match successor {
                Successor::Standby => "a standby takes it at its next try",
                Successor::NextRun =>
                    "nothing polls until `recwatch run` is started again (on SQLite one `run` owns the database; there is no standby)",
            }
        ),
        _ => "none: no instance has led on this database yet".to_string(),
    }
}

/// What `recwatch check` says this instance would be if it started now.
pub fn would_be(lease: Option<&crate::store::LeaseRow>) -> String {
    match lease {
        Some(l) if l.is_held() => {
            format!("standby: {} is active", describe(lease, Successor::Standby))
        }
        _ => "active: the lease is free, this instance would take it".to_string(),
    }
}

impl std::fmt::Display for StepDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepDown::Lost(Some(h)) => {
                write!(f, "the lease was taken by {} (epoch {})", h.who, h.epoch)
            }
            StepDown::Lost(None) => write!(f, "the lease is no longer this instance's"),
            StepDown::DeadlinePassed {
                last_error: Some(e),
            } => write!(
                f,
                "the lease could not be renewed before its deadline (last error: {e})"
            ),
            StepDown::DeadlinePassed { last_error: None } => {
                write!(f, "the lease could not be renewed before its deadline")
            }
            StepDown::Fenced { now } => write!(
                f,
                "a write was refused: the lease is at epoch {now}, another instance leads"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn holder(epoch: i64) -> Holder {
        Holder {
            who: "b (pid 2)".into(),
            epoch,
        }
    }

    /// One step of a table: at `at` after the start, an outcome of a statement sent at
    /// `sent` (or only time passing, or a fenced write), then the role and deadline expected.
    enum Input {
        Answer { sent: Duration, outcome: Outcome },
        Tick,
        Fenced(i64),
    }

    struct Step {
        at: Duration,
        input: Input,
        change: Option<Change>,
        role: Role,
        /// Expected deadline, as an offset from the start.
        deadline: Option<Duration>,
    }

    fn answer(sent: u64, at: u64, outcome: Outcome) -> (Duration, Input) {
        (
            ms(at),
            Input::Answer {
                sent: ms(sent),
                outcome,
            },
        )
    }

    fn run_table(name: &str, steps: Vec<Step>) {
        let start = Instant::now();
        let mut l = Leader::new(TIMING, start);
        for (i, step) in steps.into_iter().enumerate() {
            let now = start + step.at;
            let change = match step.input {
                Input::Answer { sent, outcome } => l.on_outcome(start + sent, outcome, now),
                Input::Tick => l.on_tick(now),
                Input::Fenced(e) => l.on_fenced(e, now),
            };
            assert_eq!(change, step.change, "{name}: step {i}: change");
            assert_eq!(l.role(), step.role, "{name}: step {i}: role");
            assert_eq!(
                l.deadline(),
                step.deadline.map(|d| start + d),
                "{name}: step {i}: deadline"
            );
        }
    }

    fn step(
        (at, input): (Duration, Input),
        change: Option<Change>,
        role: Role,
        deadline: Option<Duration>,
    ) -> Step {
        Step {
            at,
            input,
            change,
            role,
            deadline,
        }
    }

    const ACTIVE1: Role = Role::Active { epoch: 1 };

    #[test]
    fn a_table_of_lease_histories() {
        let took = Some(Change::TookOver { epoch: 1 });
        // ttl 10 s − margin 2 s: trusted for 8 s from the instant the statement was sent.
        let cases: Vec<(&str, Vec<Step>)> = vec![
            (
                "acquired: active until sent + 8 s, each renewal counted from its own sending",
                vec![
                    step(
                        answer(0, 100, Outcome::Acquired { epoch: 1 }),
                        took.clone(),
                        ACTIVE1,
                        Some(s(8)),
                    ),
                    step(
                        answer(3_000, 3_900, Outcome::Renewed),
                        None,
                        ACTIVE1,
                        Some(ms(11_000)),
                    ),
                    step(
                        answer(6_000, 6_050, Outcome::Renewed),
                        None,
                        ACTIVE1,
                        Some(ms(14_000)),
                    ),
                ],
            ),
            (
                "a renewal answered late never moves the deadline back",
                vec![
                    step(
                        answer(0, 10, Outcome::Acquired { epoch: 1 }),
                        took.clone(),
                        ACTIVE1,
                        Some(s(8)),
                    ),
                    step(
                        answer(3_000, 3_010, Outcome::Renewed),
                        None,
                        ACTIVE1,
                        Some(s(11)),
                    ),
                    step(
                        answer(2_000, 3_020, Outcome::Renewed),
                        None,
                        ACTIVE1,
                        Some(s(11)),
                    ),
                ],
            ),
            (
                "the database unreachable: active until the deadline, then standby, even with no answer",
                vec![
                    step(
                        answer(0, 10, Outcome::Acquired { epoch: 1 }),
                        took.clone(),
                        ACTIVE1,
                        Some(s(8)),
                    ),
                    step(
                        answer(3_000, 4_000, Outcome::Failed("connection refused".into())),
                        None,
                        ACTIVE1,
                        Some(s(8)),
                    ),
                    step((ms(7_999), Input::Tick), None, ACTIVE1, Some(s(8))),
                    step(
                        (ms(8_000), Input::Tick),
                        Some(Change::SteppedDown {
                            epoch: 1,
                            why: StepDown::DeadlinePassed {
                                last_error: Some("connection refused".into()),
                            },
                        }),
                        Role::Standby,
                        None,
                    ),
                    // The renewal sent before the deadline answers after it: too late, ignored.
                    step(
                        answer(7_000, 9_000, Outcome::Renewed),
                        None,
                        Role::Standby,
                        None,
                    ),
                ],
            ),
            (
                "a renewal that finds the lease taken steps down at once, naming the new holder",
                vec![
                    step(
                        answer(0, 10, Outcome::Acquired { epoch: 1 }),
                        took.clone(),
                        ACTIVE1,
                        Some(s(8)),
                    ),
                    step(
                        answer(3_000, 3_010, Outcome::HeldBy(Some(holder(2)))),
                        Some(Change::SteppedDown {
                            epoch: 1,
                            why: StepDown::Lost(Some(holder(2))),
                        }),
                        Role::Standby,
                        None,
                    ),
                ],
            ),
            (
                "a fenced write of a newer epoch steps down before the next renewal",
                vec![
                    step(
                        answer(0, 10, Outcome::Acquired { epoch: 1 }),
                        took.clone(),
                        ACTIVE1,
                        Some(s(8)),
                    ),
                    step(
                        (ms(500), Input::Fenced(2)),
                        Some(Change::SteppedDown {
                            epoch: 1,
                            why: StepDown::Fenced { now: 2 },
                        }),
                        Role::Standby,
                        None,
                    ),
                ],
            ),
            (
                "a refusal naming our own epoch (expired by the database's clock) waits for the renewal to say",
                vec![
                    step(
                        answer(0, 10, Outcome::Acquired { epoch: 1 }),
                        took.clone(),
                        ACTIVE1,
                        Some(s(8)),
                    ),
                    step((ms(500), Input::Fenced(1)), None, ACTIVE1, Some(s(8))),
                ],
            ),
            (
                "standby: refused while another holds it, then acquires with its epoch",
                vec![
                    step(
                        answer(0, 10, Outcome::HeldBy(Some(holder(4)))),
                        None,
                        Role::Standby,
                        None,
                    ),
                    step(
                        answer(3_000, 3_010, Outcome::Failed("timeout".into())),
                        None,
                        Role::Standby,
                        None,
                    ),
                    step(
                        answer(6_000, 6_010, Outcome::Acquired { epoch: 5 }),
                        Some(Change::TookOver { epoch: 5 }),
                        Role::Active { epoch: 5 },
                        Some(s(14)),
                    ),
                ],
            ),
            (
                "an acquisition answered after its lease's local deadline is not acted on",
                vec![
                    step(
                        answer(0, 8_000, Outcome::Acquired { epoch: 1 }),
                        None,
                        Role::Standby,
                        None,
                    ),
                    step(
                        answer(8_000, 8_010, Outcome::Acquired { epoch: 2 }),
                        Some(Change::TookOver { epoch: 2 }),
                        Role::Active { epoch: 2 },
                        Some(s(16)),
                    ),
                ],
            ),
        ];
        for (name, steps) in cases {
            run_table(name, steps);
        }
    }

    #[test]
    fn how_the_lease_is_told() {
        use crate::store::LeaseRow;
        let row = |holder: &str, epoch, left| LeaseRow {
            holder: holder.into(),
            host: "db1".into(),
            pid: 42,
            epoch,
            acquired_at: "2026-01-01T00:00:00Z".parse().ok(),
            expires_in_ms: left,
        };
        let cases = [
            (
                "never held",
                Some(row("", 0, 0)),
                "none: no instance has led on this database yet",
                "active: the lease is free, this instance would take it",
            ),
            (
                "no row",
                None,
                "none: no instance has led on this database yet",
                "active: the lease is free, this instance would take it",
            ),
            (
                "held",
                Some(row("h", 3, 7_200)),
                "db1 (pid 42) (lease epoch 3, expires in 8 s unless renewed)",
                "standby: db1 (pid 42) (lease epoch 3, expires in 8 s unless renewed) is active",
            ),
            (
                "expired",
                Some(row("h", 3, -4_000)),
                "none: the lease of db1 (pid 42) (epoch 3) ended 4 s ago; a standby takes it at its next try",
                "active: the lease is free, this instance would take it",
            ),
        ];
        for (name, lease, told, would) in cases {
            assert_eq!(describe(lease.as_ref(), Successor::Standby), told, "{name}");
            assert_eq!(would_be(lease.as_ref()), would, "{name}");
        }
        // On SQLite no standby waits: an ended lease is taken by the next `run` only.
        let ended = describe(Some(&row("h", 3, -4_000)), Successor::NextRun);
        assert_eq!(
            ended,
            "none: the lease of db1 (pid 42) (epoch 3) ended 4 s ago; nothing polls until `recwatch run` is started again (on SQLite one `run` owns the database; there is no standby)"
        );
    }

    /// SQLite's single owner: a database that cannot be written (a full disk) never ends its
    /// term; only the lease found taken does.
    #[test]
    fn an_exclusive_holder_outlives_failed_renewals() {
        let start = Instant::now();
        let mut l = Leader::new(TIMING, start).exclusive();
        let took = l.on_outcome(start, Outcome::Acquired { epoch: 7 }, start);
        assert_eq!(took, Some(Change::TookOver { epoch: 7 }));
        for n in 1..100u64 {
            let at = start + s(3 * n);
            assert_eq!(
                l.on_outcome(at, Outcome::Failed("disk full".into()), at),
                None
            );
            assert_eq!(l.on_tick(at), None);
        }
        assert_eq!(l.role(), Role::Active { epoch: 7 });
        let at = start + s(400);
        assert_eq!(
            l.on_outcome(at, Outcome::HeldBy(None), at),
            Some(Change::SteppedDown {
                epoch: 7,
                why: StepDown::Lost(None)
            })
        );
    }

    /// Retries after failures: 250 ms, 500 ms, 1 s, 2 s, then every 3 s (renew_every); a
    /// success brings the normal pace back; the wake is never after the deadline.
    #[test]
    fn failures_back_off_up_to_the_renewal_interval_and_the_deadline_wakes_first() {
        let start = Instant::now();
        let mut l = Leader::new(TIMING, start);
        assert_eq!(l.next_wake(), start, "tries at once");
        let mut now = start;
        let mut waits = Vec::new();
        for _ in 0..6 {
            l.on_outcome(now, Outcome::Failed("refused".into()), now);
            waits.push(l.next_wake() - now);
            now = l.next_wake();
        }
        assert_eq!(waits, [ms(250), ms(500), s(1), s(2), s(3), s(3)]);
        assert_eq!(l.last_error(), Some("refused"));
        l.on_outcome(now, Outcome::Acquired { epoch: 1 }, now);
        assert_eq!(l.last_error(), None);
        assert_eq!(l.next_wake(), now + s(3));
        l.on_outcome(now + s(3), Outcome::Failed("x".into()), now + s(3));
        l.on_outcome(now + s(3), Outcome::Failed("x".into()), now + ms(7_900));
        assert_eq!(
            l.next_wake(),
            now + s(8),
            "the deadline comes before the retry"
        );
    }
}
