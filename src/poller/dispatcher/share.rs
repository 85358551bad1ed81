//! The dispatcher's side of the budget's share ([`crate::config::share`]): the stretch each
//! group is polled at, recomputed whenever the watch list or the configuration changes, and
//! said in the log when it changes enough to matter (not on every discovered job).

use super::super::job::JobState;
use super::{Dispatcher, round};
use crate::config::{BudgetReport, JobGroup, format_duration};
use std::time::Duration;
use tracing::{info, warn};

/// A group's stretch must move by this factor (or cross 1) before the log says it again: a
/// flood of discovered jobs changes the list many times a second.
const RETELL_FACTOR: f64 = 1.5;

/// What the log says about a new budget report, given the last one it told.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Tell {
    Nothing,
    /// Over the budget: a warning with each group's stretch.
    Over,
    /// Back within the budget after a warning.
    FitsAgain,
}

/// Pure: whether `now` is worth a line after `told` (the last report logged, if any).
pub(super) fn tell(told: Option<&BudgetReport>, now: &BudgetReport) -> Tell {
    let moved = |g: JobGroup, last: &BudgetReport| {
        let (a, b) = (last.group(g).stretch, now.group(g).stretch);
        let ratio = if a > b { a / b } else { b / a };
        ratio.is_nan() || ratio >= RETELL_FACTOR
    };
    match told {
        None if now.fits() => Tell::Nothing,
        None => Tell::Over,
        Some(last) if last.fits() && now.fits() => Tell::Nothing,
        Some(_) if now.fits() => Tell::FitsAgain,
        Some(last) if last.fits() => Tell::Over,
        Some(last) if JobGroup::ALL.iter().any(|g| moved(*g, last)) => Tell::Over,
        Some(_) => Tell::Nothing,
    }
}

impl Dispatcher {
    /// The interval `state`'s job is polled at: its own, stretched by its group's share.
    pub(super) fn interval(&self, state: &JobState) -> Duration {
        let configured = self.poller.config.job_interval(&state.job);
        self.budget.effective(state.origin.group, configured)
    }

    /// Recomputes the share after the watch list or the configuration changed, and says so
    /// when it changed enough to matter.
    pub(super) fn budget_changed(&mut self) {
        self.budget = self.poller.runtime.budget();
        let interval = self.poller.config.poll.interval;
        match tell(self.budget_told.as_ref(), &self.budget) {
            Tell::Nothing => return,
            Tell::Over => log_over(&self.budget, interval),
            Tell::FitsAgain => info!(
                jobs = self.budget.jobs,
                needed_per_second = format!("{:.1}", self.budget.demand),
                rate_limit = self.budget.rate_limit,
                "the watch list fits api.rate_limit again: every job is polled at its interval"
            ),
        }
        self.budget_told = Some(self.budget);
    }
}

/// The warning: how far each group is stretched, configured jobs first.
fn log_over(b: &BudgetReport, interval: Duration) {
    let every = |g: JobGroup| format_duration(round(b.effective(g, interval))).to_string();
    warn!(
        jobs = b.jobs,
        needed_per_second = format!("{:.1}", b.demand),
        rate_limit = b.rate_limit,
        configured_stretch = format!("{:.1}", b.configured.stretch),
        runtime_stretch = format!("{:.1}", b.runtime.stretch),
        "the watch list needs more requests per second than api.rate_limit allows; configured jobs come first: {}; {} (every {} at poll.interval {})",
        b.describe(JobGroup::Configured),
        b.describe(JobGroup::Runtime),
        every(JobGroup::Runtime),
        format_duration(interval),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GroupBudget;

    fn report(configured: f64, runtime: f64) -> BudgetReport {
        let g = |stretch| GroupBudget {
            jobs: 1,
            demand: 1.0,
            stretch,
        };
        BudgetReport {
            jobs: 2,
            demand: 2.0,
            rate_limit: 1,
            stretch: 1.0,
            configured: g(configured),
            runtime: g(runtime),
        }
    }

    #[test]
    fn budget_log_lines_table() {
        let cases = [
            ("fits from the start", None, report(1.0, 1.0), Tell::Nothing),
            ("over from the start", None, report(1.0, 3.0), Tell::Over),
            (
                "starts to overflow",
                Some(report(1.0, 1.0)),
                report(1.0, 1.2),
                Tell::Over,
            ),
            (
                "a few more discovered jobs",
                Some(report(1.0, 3.0)),
                report(1.0, 3.3),
                Tell::Nothing,
            ),
            (
                "many more discovered jobs",
                Some(report(1.0, 3.0)),
                report(1.0, 4.5),
                Tell::Over,
            ),
            (
                "many fewer",
                Some(report(1.0, 4.5)),
                report(1.0, 3.0),
                Tell::Over,
            ),
            (
                "configured now stretched too",
                Some(report(1.0, 30.0)),
                report(1.6, 30.0),
                Tell::Over,
            ),
            (
                "fits again",
                Some(report(1.0, 3.0)),
                report(1.0, 1.0),
                Tell::FitsAgain,
            ),
            (
                "still fits",
                Some(report(1.0, 1.0)),
                report(1.0, 1.0),
                Tell::Nothing,
            ),
        ];
        for (name, told, now, want) in cases {
            assert_eq!(tell(told.as_ref(), &now), want, "{name}");
        }
    }
}
