//! The leadership loop: drives [`Leader`] against the lease in the database and publishes
//! the term (`Some` while this instance is active) on a watch channel that the daemon's
//! wiring switches on. It says in the log when this instance takes over or steps down and
//! why, keeps `recwatch_leader` / `recwatch_leader_epoch` and tells `/readyz` when the lease
//! cannot be read or renewed.
//!
//! Every statement is bounded by the lease's local deadline: a database that does not answer
//! cannot keep a leader active past it. A write refused by the fence reaches the loop at once
//! (the fence's channel), so the instance steps down without waiting for its next renewal.

use super::{Change, Holder, Leader, Outcome, Role, Timing};
use crate::store::{Claimant, Fence, LeaseRow, Store, StoreError};
use crate::vitals::Vitals;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

/// This instance's term as the active one.
#[derive(Clone, Debug)]
pub struct Term {
    pub epoch: i64,
    /// Fences the term's writes: see [`Store::fenced`].
    pub fence: Fence,
}

/// What the rest of the daemon sees of leadership.
#[derive(Clone)]
pub struct Leadership {
    me: Claimant,
    terms: watch::Receiver<Option<Term>>,
    /// Turns true once the first lease statement has come back (or failed).
    decided: watch::Receiver<bool>,
}

impl Leadership {
    /// The current term, changing as this instance takes over and steps down.
    pub fn terms(&self) -> watch::Receiver<Option<Term>> {
        self.terms.clone()
    }

    pub fn me(&self) -> &Claimant {
        &self.me
    }

    /// Waits until the first lease statement has come back, so the role is known (or the
    /// loop has ended).
    pub async fn decided(&self) {
        let _ = self.decided.clone().wait_for(|d| *d).await;
    }

    /// Gives the lease up if this instance holds it (a clean stop, once its active work has
    /// ended): a standby takes over at its next try instead of after the lease's time.
    pub async fn release(&self, store: &Store) {
        let Some(term) = self.terms.borrow().clone() else {
            return;
        };
        match store.lease().release(&self.me, term.epoch).await {
            Ok(true) => info!(
                epoch = term.epoch,
                "leadership released: a standby instance may take over at once"
            ),
            Ok(false) => {}
            Err(e) => warn!(
                "cannot release the leadership lease (a standby takes over when it expires): {e:#}"
            ),
        }
    }
}

/// The lease statements the loop makes; the store's, or a test's model of a database.
pub(crate) trait LeaseDb: Send + Sync + 'static {
    fn acquire(
        &self,
        me: &Claimant,
        ttl: std::time::Duration,
        force: bool,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;
    fn renew(
        &self,
        me: &Claimant,
        epoch: i64,
        ttl: std::time::Duration,
        exclusive: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn read(&self) -> impl Future<Output = Result<Option<LeaseRow>, StoreError>> + Send;
}

impl LeaseDb for Store {
    fn acquire(
        &self,
        me: &Claimant,
        ttl: std::time::Duration,
        force: bool,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send {
        self.lease().acquire(me, ttl, force)
    }
    fn renew(
        &self,
        me: &Claimant,
        epoch: i64,
        ttl: std::time::Duration,
        exclusive: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.lease().renew(me, epoch, ttl, exclusive)
    }
    fn read(&self) -> impl Future<Output = Result<Option<LeaseRow>, StoreError>> + Send {
        self.lease().read()
    }
}

/// Starts nothing: returns the handle and the loop to spawn. `force` takes the lease
/// whatever its state (SQLite, whose owner lock already proves this the only `run`). The
/// loop ends when `stop` turns true, leaving the lease as it is (see
/// [`Leadership::release`]).
pub fn run(
    store: Store,
    timing: Timing,
    force: bool,
    vitals: Arc<Vitals>,
    stop: watch::Receiver<bool>,
) -> (Leadership, impl Future<Output = ()> + Send) {
    drive(store, Claimant::this_process(), timing, force, vitals, stop)
}

pub(crate) fn drive<D: LeaseDb>(
    db: D,
    me: Claimant,
    timing: Timing,
    force: bool,
    vitals: Arc<Vitals>,
    stop: watch::Receiver<bool>,
) -> (Leadership, impl Future<Output = ()> + Send) {
    let (terms_tx, terms) = watch::channel(None);
    let (decided_tx, decided) = watch::channel(false);
    let handle = Leadership {
        me: me.clone(),
        terms,
        decided,
    };
    let looped = Loop {
        db,
        me,
        timing,
        force,
        vitals,
        terms: terms_tx,
        decided: decided_tx,
        until: None,
        last_seen: None,
    };
    (handle, looped.run(stop))
}

struct Loop<D> {
    db: D,
    me: Claimant,
    timing: Timing,
    force: bool,
    vitals: Arc<Vitals>,
    terms: watch::Sender<Option<Term>>,
    decided: watch::Sender<bool>,
    /// The current term's deadline, read by its fence.
    until: Option<watch::Sender<Instant>>,
    /// The holder last logged while standby, to log a new one once.
    last_seen: Option<Holder>,
}

impl<D: LeaseDb> Loop<D> {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let (refused_tx, mut refused) = mpsc::unbounded_channel();
        let mut leader = Leader::new(self.timing, Instant::now());
        if self.force {
            leader = leader.exclusive();
        }
        self.publish_role(Role::Standby, Some(0));
        loop {
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                changed = stop.changed() => if changed.is_err() { break },
                Some(epoch) = refused.recv() => {
                    let change = leader.on_fenced(epoch, Instant::now());
                    self.apply(change, &leader, &refused_tx);
                    continue;
                }
                _ = tokio::time::sleep_until(leader.next_wake()) => {}
            }
            let now = Instant::now();
            let change = leader.on_tick(now);
            self.apply(change, &leader, &refused_tx);
            if !leader.is_due(now) {
                continue;
            }
            let sent = Instant::now();
            // Never past the deadline: an unanswered renewal must not keep us active.
            let limit = leader
                .deadline()
                .map_or(sent + self.timing.ttl, |d| d.min(sent + self.timing.ttl));
            let outcome = tokio::select! {
                changed = stop.changed() => if changed.is_err() { break } else { continue },
                o = tokio::time::timeout_at(limit, self.attempt(leader.role())) => o.unwrap_or_else(|_| {
                    Outcome::Failed(format!(
                        "the database did not answer within {} ms",
                        (limit - sent).as_millis()
                    ))
                }),
            };
            self.vitals.set_lease_problem(match &outcome {
                Outcome::Failed(e) => Some(format!(
                    "the leadership lease cannot be read or renewed: {e}"
                )),
                _ => None,
            });
            if let Outcome::HeldBy(Some(h)) = &outcome {
                self.note_holder(h);
            }
            let change = leader.on_outcome(sent, outcome, Instant::now());
            self.apply(change, &leader, &refused_tx);
            self.decided.send_replace(true);
        }
    }

    /// Says once which instance leads while this one stands by.
    fn note_holder(&mut self, holder: &Holder) {
        if self.last_seen.as_ref() != Some(holder) {
            info!(
                epoch = holder.epoch,
                "standby: {} is the active instance (lease epoch {})", holder.who, holder.epoch
            );
            self.vitals.set_lease_epoch(holder.epoch);
            self.last_seen = Some(holder.clone());
        }
    }

    /// One statement: renew while active, else try to acquire; who holds it when refused.
    async fn attempt(&self, role: Role) -> Outcome {
        let result = match role {
            Role::Active { epoch } => self
                .db
                .renew(&self.me, epoch, self.timing.ttl, self.force)
                .await
                .map(|ok| ok.then_some(Outcome::Renewed)),
            Role::Standby => self
                .db
                .acquire(&self.me, self.timing.ttl, self.force)
                .await
                .map(|e| e.map(|epoch| Outcome::Acquired { epoch })),
        };
        match result {
            Ok(Some(o)) => o,
            Ok(None) => match self.db.read().await {
                Ok(row) => Outcome::HeldBy(row.filter(LeaseRow::is_held).map(|r| Holder {
                    who: r.who(),
                    epoch: r.epoch,
                })),
                Err(_) => Outcome::HeldBy(None),
            },
            Err(e) => Outcome::Failed(format!("{e:#}")),
        }
    }

    fn apply(
        &mut self,
        change: Option<Change>,
        leader: &Leader,
        refused: &mpsc::UnboundedSender<i64>,
    ) {
        // A renewal moves the deadline the term's fence reads.
        if let (Some(until), Some(d)) = (&self.until, leader.deadline()) {
            until.send_if_modified(|u| {
                let moved = *u != d;
                *u = d;
                moved
            });
        }
        match change {
            None => {}
            Some(Change::TookOver { epoch }) => {
                let deadline = leader.deadline().unwrap_or_else(Instant::now);
                let (until, until_rx) = watch::channel(deadline);
                self.until = Some(until);
                self.last_seen = None;
                info!(
                    epoch,
                    "taking over as the active instance (lease epoch {epoch}): polling and delivering from here"
                );
                let mut fence = Fence::new(epoch, until_rx, refused.clone());
                if self.force {
                    fence = fence.exclusive();
                }
                self.terms.send_replace(Some(Term { epoch, fence }));
                self.publish_role(Role::Active { epoch }, Some(epoch));
            }
            Some(Change::SteppedDown { epoch, why }) => {
                // The fence refuses from this instant, before anything is told to stop.
                if let Some(until) = self.until.take() {
                    until.send_replace(Instant::now());
                }
                warn!(
                    epoch,
                    "stepping down to standby: {why}; no poll and no send from this instance until it leads again"
                );
                self.terms.send_replace(None);
                self.publish_role(Role::Standby, None);
            }
        }
    }

    /// What `/readyz`, the watchdog and `/metrics` (`recwatch_leader`,
    /// `recwatch_leader_epoch`, set at each scrape) read.
    fn publish_role(&self, role: Role, epoch: Option<i64>) {
        self.vitals.set_leading(role.is_active());
        if let Some(e) = epoch {
            self.vitals.set_lease_epoch(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreHealth;
    use crate::vitals::Liveness;
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A database as the loop sees it, on tokio's (paused) clock: the lease row, and the
    /// claimants whose statements hang (a cut connection, a paused process's socket).
    #[derive(Clone, Default)]
    struct Model(Arc<Mutex<ModelState>>);

    #[derive(Default)]
    struct ModelState {
        holder: String,
        who: String,
        epoch: i64,
        expires: Option<Instant>,
        cut: HashSet<String>,
    }

    impl Model {
        fn cut(&self, me: &Claimant, cut: bool) {
            let mut s = self.0.lock().unwrap();
            match cut {
                true => s.cut.insert(me.holder.clone()),
                false => s.cut.remove(&me.holder),
            };
        }

        async fn reachable(&self, me: &Claimant) {
            if self.0.lock().unwrap().cut.contains(&me.holder) {
                std::future::pending::<()>().await;
            }
        }
    }

    impl LeaseDb for Model {
        async fn acquire(
            &self,
            me: &Claimant,
            ttl: Duration,
            force: bool,
        ) -> Result<Option<i64>, StoreError> {
            self.reachable(me).await;
            let mut s = self.0.lock().unwrap();
            let now = Instant::now();
            if force || s.expires.is_none_or(|e| e <= now) {
                s.holder = me.holder.clone();
                s.who = format!("{} (pid {})", me.host, me.pid);
                s.epoch += 1;
                s.expires = Some(now + ttl);
                return Ok(Some(s.epoch));
            }
            Ok(None)
        }

        async fn renew(
            &self,
            me: &Claimant,
            epoch: i64,
            ttl: Duration,
            _exclusive: bool,
        ) -> Result<bool, StoreError> {
            self.reachable(me).await;
            let mut s = self.0.lock().unwrap();
            let now = Instant::now();
            if s.holder == me.holder && s.epoch == epoch && s.expires.is_some_and(|e| e > now) {
                s.expires = Some(now + ttl);
                return Ok(true);
            }
            Ok(false)
        }

        async fn read(&self) -> Result<Option<LeaseRow>, StoreError> {
            let s = self.0.lock().unwrap();
            let left = s.expires.map_or(0, |e| {
                e.saturating_duration_since(Instant::now()).as_millis() as i64
            });
            Ok(Some(LeaseRow {
                holder: s.holder.clone(),
                host: s.who.clone(),
                pid: 0,
                epoch: s.epoch,
                acquired_at: None,
                expires_in_ms: left,
            }))
        }
    }

    fn claimant(n: i64) -> Claimant {
        Claimant {
            holder: format!("h{n}"),
            host: format!("host{n}"),
            pid: n,
        }
    }

    fn vitals() -> Arc<Vitals> {
        Arc::new(Vitals::new(
            Arc::new(Liveness::default()),
            Arc::new(StoreHealth::default()),
        ))
    }

    /// Waits (on the paused clock) until `terms` shows `active`; returns the instant.
    async fn until_role(
        terms: &mut watch::Receiver<Option<Term>>,
        active: bool,
    ) -> (Instant, Option<i64>) {
        let t = terms
            .wait_for(|t| t.is_some() == active)
            .await
            .unwrap()
            .clone();
        (Instant::now(), t.map(|t| t.epoch))
    }

    /// A leader cut off from the database steps down at its local deadline (the last renewal
    /// sent + ttl − margin), its fence refusing from then on; the standby takes over with the
    /// next epoch once the database sees the lease expired, never before the old leader has
    /// stepped down, and within 15 s of the old leader's last renewal.
    #[tokio::test(start_paused = true)]
    async fn a_leader_cut_off_steps_down_at_its_deadline_and_the_standby_takes_over_after() {
        let db = Model::default();
        let (a, b) = (claimant(1), claimant(2));
        let (_stop_tx, stop) = watch::channel(false);
        let va = vitals();
        let (lead_a, run_a) = drive(
            db.clone(),
            a.clone(),
            super::super::TIMING,
            false,
            va.clone(),
            stop.clone(),
        );
        tokio::spawn(run_a);
        let mut terms_a = lead_a.terms();
        let (_, epoch) = until_role(&mut terms_a, true).await;
        assert_eq!(epoch, Some(1));
        assert!(va.is_leading());
        let fence = terms_a.borrow().clone().unwrap().fence;

        let vb = vitals();
        let (lead_b, run_b) = drive(
            db.clone(),
            b.clone(),
            super::super::TIMING,
            false,
            vb.clone(),
            stop.clone(),
        );
        tokio::spawn(run_b);
        lead_b.decided().await;
        assert!(
            lead_b.terms().borrow().is_none(),
            "b stands by while a leads"
        );
        assert!(!vb.is_leading());

        // Let a renew a few times, then cut it off just after a renewal.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(terms_a.borrow().is_some(), "a still leads while it renews");
        let last_renewal = Instant::now();
        db.cut(&a, true);
        let (stepped_down, _) = until_role(&mut terms_a, false).await;
        assert!(
            !fence.is_valid(),
            "the fence refuses once a has stepped down"
        );
        assert!(!va.is_leading());
        assert!(
            stepped_down <= last_renewal + Duration::from_secs(8),
            "steps down by its deadline"
        );

        let mut terms_b = lead_b.terms();
        let (took_over, epoch) = until_role(&mut terms_b, true).await;
        assert_eq!(epoch, Some(2), "the next epoch");
        assert!(took_over > stepped_down, "never two leaders at once");
        assert!(
            took_over <= last_renewal + Duration::from_secs(15),
            "within 15 s"
        );

        // Reconnected, a is refused the lease while b renews it; it names b.
        db.cut(&a, false);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(terms_a.borrow().is_none());
        assert!(terms_b.borrow().is_some());
    }

    /// On a real database file: a write through the leader's fenced store after another
    /// instance took the lease is refused, and the refusal alone makes the leader step down
    /// (its renewals are a minute apart here, so nothing else could).
    #[tokio::test]
    async fn a_refused_write_steps_the_leader_down_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let a = Store::open(&path).await.unwrap();
        let b = Store::open(&path).await.unwrap();
        let slow = Timing {
            renew_every: Duration::from_secs(60),
            ttl: Duration::from_secs(120),
            margin: Duration::from_secs(2),
        };
        let (_stop_tx, stop) = watch::channel(false);
        let (lead, looped) = drive(a.clone(), claimant(1), slow, false, vitals(), stop);
        tokio::spawn(looped);
        let mut terms = lead.terms();
        let term = tokio::time::timeout(Duration::from_secs(60), terms.wait_for(|t| t.is_some()))
            .await
            .expect("a takes the lease")
            .unwrap()
            .clone()
            .unwrap();
        let fenced = a.fenced(term.fence.clone());
        fenced.jobs().record(&[]).await.unwrap();
        let taken = b
            .lease()
            .acquire(&claimant(2), slow.ttl, true)
            .await
            .unwrap();
        assert_eq!(taken, Some(term.epoch + 1));
        let e = fenced.begin_write().await.err().expect("refused");
        assert!(matches!(e, StoreError::Fenced { .. }), "{e:?}");
        tokio::time::timeout(Duration::from_secs(60), terms.wait_for(|t| t.is_none()))
            .await
            .expect("a steps down on the refusal")
            .unwrap();
        assert!(!term.fence.is_valid());
    }

    /// A clean stop releases the lease: the standby takes over at its next try, well before
    /// the lease would have expired.
    #[tokio::test(start_paused = true)]
    async fn a_released_lease_is_taken_at_the_next_try() {
        let db = Model::default();
        let (stop_a_tx, stop_a) = watch::channel(false);
        let (_stop_b_tx, stop_b) = watch::channel(false);
        let (lead_a, run_a) = drive(
            db.clone(),
            claimant(1),
            super::super::TIMING,
            false,
            vitals(),
            stop_a,
        );
        let a = tokio::spawn(run_a);
        let mut terms_a = lead_a.terms();
        until_role(&mut terms_a, true).await;
        let (lead_b, run_b) = drive(
            db.clone(),
            claimant(2),
            super::super::TIMING,
            false,
            vitals(),
            stop_b,
        );
        tokio::spawn(run_b);
        lead_b.decided().await;
        // What `Leadership::release` does, on the model.
        {
            let mut s = db.0.lock().unwrap();
            s.expires = Some(Instant::now());
        }
        let released = Instant::now();
        stop_a_tx.send(true).unwrap();
        a.await.unwrap();
        let (took_over, _) = until_role(&mut lead_b.terms(), true).await;
        assert!(
            took_over <= released + Duration::from_secs(3),
            "at b's next try"
        );
    }
}
