//! A poller for one term of leadership (see `leader` and `startup`'s `roles`): built afresh
//! each time this instance takes over, sharing what outlives the term.

use super::{Dispatcher, Poller};
use crate::poller::{Budget, Hints};
use crate::vitals::Liveness;
use std::sync::Arc;

impl Poller {
    /// Takes the parts that outlive one term of leadership (a poller is built for each term,
    /// see `startup`): the hint intake the callback receiver holds, the liveness `/readyz`
    /// and the watchdog read, and the budget `/metrics` reads.
    pub fn sharing(
        mut self,
        hints: Arc<Hints>,
        liveness: Arc<Liveness>,
        budget: Arc<Budget>,
    ) -> Poller {
        budget.set_rate(self.config.api.rate_limit);
        self.hints = hints;
        self.liveness = liveness;
        self.budget = budget;
        self
    }
}

impl Dispatcher {
    /// Whether new polls may start: not stopping, and either this store is not an active
    /// instance's (`poll-once`, tests) or its leadership lease has not ended (see `leader`).
    pub(super) fn may_start(&self) -> bool {
        !self.stopping && self.poller.store.fence().is_none_or(|f| f.is_valid())
    }
}
