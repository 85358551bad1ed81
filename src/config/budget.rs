//! The request budget (`api.rate_limit`) shared between the watch list's two groups: the
//! config file's jobs (`configured`) and the run-time list's (`runtime`: the API, the CLI,
//! discovery, remediation). Configured jobs come first: when the budget cannot cover every
//! job at its interval, they keep their interval and the run-time jobs share what is left
//! ([`share`], pure). The dispatcher schedules by it, and `check`, `status`, the page, the
//! log and `/metrics` report it, so they never disagree.

use super::{Config, JobConfig};
use std::time::Duration;

/// The share of the budget the run-time jobs keep however many configured jobs there are:
/// without it a config file that alone overflows the budget would leave every run-time job
/// unpolled for ever (blind rather than slow).
pub const RUNTIME_FLOOR: f64 = 0.1;

/// Which of the two groups a watched job is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobGroup {
    /// The config file's `[[jobs]]`.
    Configured,
    /// The run-time watch list, whatever added it.
    Runtime,
}

impl JobGroup {
    pub const ALL: [JobGroup; 2] = [JobGroup::Configured, JobGroup::Runtime];

    /// The metric label and the word `check` and `status` print.
    pub fn as_str(self) -> &'static str {
        match self {
            JobGroup::Configured => "configured",
            JobGroup::Runtime => "runtime",
        }
    }
}

impl std::fmt::Display for JobGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one group asks of the budget and how far its intervals stretch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupBudget {
    pub jobs: usize,
    /// Polls per second the group asks for at its intervals.
    pub demand: f64,
    /// How much longer than configured the group's intervals become, >= 1.
    pub stretch: f64,
}

/// What the budget allows: used by the dispatcher, `check`, `status`, the page and `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetReport {
    /// Every watched job, whatever its source.
    pub jobs: usize,
    /// Requests per second the whole watch list asks for at its intervals.
    pub demand: f64,
    pub rate_limit: u32,
    /// `demand` over `rate_limit`, at least 1: how far intervals would stretch were the budget
    /// shared evenly (what `recwatch_rate_budget_demand_ratio` says, before the share).
    pub stretch: f64,
    pub configured: GroupBudget,
    pub runtime: GroupBudget,
}

impl BudgetReport {
    /// Whether every job is polled at its interval.
    pub fn fits(&self) -> bool {
        self.configured.stretch <= 1.0 && self.runtime.stretch <= 1.0
    }

    pub fn group(&self, g: JobGroup) -> &GroupBudget {
        match g {
            JobGroup::Configured => &self.configured,
            JobGroup::Runtime => &self.runtime,
        }
    }

    /// The interval a job of group `g` configured at `interval` is polled at.
    pub fn effective(&self, g: JobGroup, interval: Duration) -> Duration {
        stretched(interval, self.group(g).stretch)
    }

    /// One line per group for `check`, `status` and the log, e.g. `configured: 1 job,
    /// 0.10 requests/s, polled at its interval`.
    pub fn describe(&self, g: JobGroup) -> String {
        let b = self.group(g);
        let how = if b.stretch <= 1.0 {
            "polled at their interval".to_string()
        } else if b.stretch.is_finite() {
            format!("polled {:.1}x less often than configured", b.stretch)
        } else {
            "not polled (no budget left)".to_string()
        };
        format!(
            "{g}: {} job{}, {:.2} requests/s asked, {how}",
            b.jobs,
            if b.jobs == 1 { "" } else { "s" },
            b.demand
        )
    }
}

/// `interval` times `stretch`, saturating (an infinite stretch is a year: never in practice).
pub fn stretched(interval: Duration, stretch: f64) -> Duration {
    let secs = interval.as_secs_f64() * stretch.max(1.0);
    Duration::try_from_secs_f64(secs.min(365.0 * 86_400.0)).unwrap_or(interval)
}

/// How far each group's intervals stretch: `(configured, runtime)`, each >= 1. Demands are in
/// polls per second. Configured jobs take what they need, up to the whole budget less the
/// run-time jobs' floor ([`RUNTIME_FLOOR`], or what they ask if less); the run-time jobs share
/// the rest.
pub fn share(configured: f64, runtime: f64, rate_limit: f64) -> (f64, f64) {
    let rate = rate_limit.max(f64::MIN_POSITIVE);
    let runtime_floor = runtime.min(RUNTIME_FLOOR * rate);
    let configured_gets = configured.min(rate - runtime_floor);
    let runtime_gets = rate - configured_gets;
    let stretch = |asked: f64, got: f64| {
        if asked <= got { 1.0 } else { asked / got }
    };
    (
        stretch(configured, configured_gets),
        stretch(runtime, runtime_gets),
    )
}

impl Config {
    /// The budget over every watched job: this configuration's `[[jobs]]` and `runtime_jobs`
    /// run-time entries (polled at `poll.interval`; those the file also has are not counted).
    pub fn budget(&self, runtime_jobs: usize) -> BudgetReport {
        self.budget_over(self.jobs.iter().map(|j| &**j), runtime_jobs)
    }

    /// The budget over `configured` (the config file's jobs) and `runtime_jobs` run-time
    /// entries, for a caller holding the two merged (the status page).
    pub fn budget_over<'a>(
        &self,
        configured: impl IntoIterator<Item = &'a JobConfig>,
        runtime_jobs: usize,
    ) -> BudgetReport {
        self.budget_at(configured, runtime_jobs, self.api.rate_limit)
    }

    /// [`Config::budget_over`] at `rate_limit`: one account's budget, read from the whole
    /// configuration (`/metrics`, per account, without a narrowed copy of every job's list).
    pub fn budget_at<'a>(
        &self,
        configured: impl IntoIterator<Item = &'a JobConfig>,
        runtime_jobs: usize,
        rate_limit: u32,
    ) -> BudgetReport {
        let (mut configured_jobs, mut configured_demand) = (0, 0.0);
        for j in configured {
            configured_jobs += 1;
            configured_demand += match &self.poll.schedule {
                Some(_) => 1.0,
                None => 1.0 / self.job_interval(j).as_secs_f64(),
            };
        }
        let (configured, runtime) = match &self.poll.schedule {
            // A cron tick polls every job once; ticks are at least a second apart.
            Some(s) => {
                let p = s.min_period().as_secs_f64();
                (configured_demand / p, runtime_jobs as f64 / p)
            }
            None => (
                configured_demand,
                runtime_jobs as f64 / self.poll.interval.as_secs_f64(),
            ),
        };
        let rate = rate_limit as f64;
        let (cs, rs) = share(configured, runtime, rate);
        BudgetReport {
            jobs: configured_jobs + runtime_jobs,
            demand: configured + runtime,
            rate_limit,
            stretch: ((configured + runtime) / rate.max(f64::MIN_POSITIVE)).max(1.0),
            configured: GroupBudget {
                jobs: configured_jobs,
                demand: configured,
                stretch: cs,
            },
            runtime: GroupBudget {
                jobs: runtime_jobs,
                demand: runtime,
                stretch: rs,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_first_share_table() {
        // (name, configured demand, runtime demand, rate_limit, configured stretch, runtime stretch)
        let cases = [
            ("nothing watched", 0.0, 0.0, 20.0, 1.0, 1.0),
            ("both fit", 5.0, 10.0, 20.0, 1.0, 1.0),
            ("exactly the budget", 10.0, 10.0, 20.0, 1.0, 1.0),
            ("configured alone, over", 40.0, 0.0, 20.0, 2.0, 1.0),
            // Issue 22: 3,000 discovered jobs at 10 s beside one configured job.
            (
                "runtime floods, configured keeps its interval",
                0.1,
                300.0,
                20.0,
                1.0,
                300.0 / 19.9,
            ),
            ("runtime shares what is left", 15.0, 10.0, 20.0, 1.0, 2.0),
            (
                "configured over the budget, runtime keeps its floor",
                40.0,
                10.0,
                20.0,
                40.0 / 18.0,
                5.0,
            ),
            (
                "runtime asks less than its floor",
                40.0,
                1.0,
                20.0,
                40.0 / 19.0,
                1.0,
            ),
            (
                "no runtime jobs, configured gets everything",
                19.0,
                0.0,
                20.0,
                1.0,
                1.0,
            ),
        ];
        for (name, c, r, rate, want_c, want_r) in cases {
            let (got_c, got_r) = share(c, r, rate);
            assert!(
                (got_c - want_c).abs() < 1e-9,
                "{name}: configured {got_c}, want {want_c}"
            );
            assert!(
                (got_r - want_r).abs() < 1e-9,
                "{name}: runtime {got_r}, want {want_r}"
            );
            // Whatever the case, the two groups together never ask more than the budget.
            let used = c / got_c + r / got_r;
            assert!(used <= rate + 1e-9, "{name}: {used} requests/s over {rate}");
        }
    }

    #[test]
    fn stretched_intervals_saturate() {
        assert_eq!(
            stretched(Duration::from_secs(10), 0.5),
            Duration::from_secs(10)
        );
        assert_eq!(
            stretched(Duration::from_secs(10), 2.5),
            Duration::from_secs(25)
        );
        assert_eq!(
            stretched(Duration::from_secs(10), f64::INFINITY),
            Duration::from_secs(365 * 86_400)
        );
    }
}
