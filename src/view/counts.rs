//! The job list's header counts (jobs per state filter, jobs stopped by an alerting rule)
//! without a read of every job (issue 23, item 7): the `jobs` table grouped by phase from
//! its `jobs_by_phase` index (a few groups whatever the number of jobs), minus the rows of
//! jobs no longer watched (kept until retention), with the watched jobs that have no row yet
//! as "not known".
//!
//! Which rows belong to jobs no longer watched needs every row's key against the watch list:
//! that is read once per watch list (the cache lives as long as the list it was read for,
//! see [`CountsCache`]) and again only when the grouped total shows a row no watched job can
//! account for, or after [`UNWATCHED_REFRESH`].

use super::jobs::{StateFilter, alerting};
use super::{Sources, ViewError};
use crate::config::{BudgetReport, Config};
use crate::domain::JobKey;
use crate::store::PhaseCount;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long the keys of unwatched rows are trusted while the total of rows allows them: a
/// row written for a job after it left the list (a poll in flight at the removal) is left
/// out of the counts within this.
pub const UNWATCHED_REFRESH: Duration = Duration::from_secs(60);

/// What the header needs that depends only on the watch list and the rows of jobs not on
/// it. One per watch list: the page handlers keep it beside the list it was made for and
/// drop it with that list.
#[derive(Debug, Default)]
pub struct CountsCache {
    unwatched: Mutex<Option<Unwatched>>,
    budget: OnceLock<BudgetReport>,
}

/// The rows of jobs not watched, as last read.
#[derive(Debug)]
struct Unwatched {
    keys: Vec<JobKey>,
    read_at: Instant,
}

impl CountsCache {
    /// The budget the list asks for: O(jobs), so computed once per list.
    pub fn budget(&self, compute: impl FnOnce() -> BudgetReport) -> BudgetReport {
        *self.budget.get_or_init(compute)
    }
}

/// Whether the cached keys of unwatched rows must be read again: never read; older than
/// [`UNWATCHED_REFRESH`]; or more rows than the watched jobs and the known unwatched rows
/// together can be (a new row of a job not watched).
fn stale(cached: Option<(usize, Duration)>, rows: i64, watched: usize) -> bool {
    match cached {
        None => true,
        Some((unwatched, age)) => age >= UNWATCHED_REFRESH || rows > (unwatched + watched) as i64,
    }
}

/// The counts of the watch list in `config`: per state filter, and the jobs stopped by a rule
/// that alerts.
pub async fn counts(
    src: &Sources<'_>,
    cache: &CountsCache,
) -> Result<(HashMap<StateFilter, usize>, i64), ViewError> {
    let groups = src.store.page().job_phase_counts().await?;
    let rows: i64 = groups.iter().map(|g| g.n).sum();
    let watched = src.config.jobs.len();
    let cached = {
        let u = cache.unwatched.lock().expect("not poisoned");
        u.as_ref().map(|u| (u.keys.clone(), u.read_at.elapsed()))
    };
    let keys = match cached {
        Some((keys, age)) if !stale(Some((keys.len(), age)), rows, watched) => keys,
        _ => {
            let keys = unwatched_keys(src.config, src.store.page().job_keys().await?);
            *cache.unwatched.lock().expect("not poisoned") = Some(Unwatched {
                keys: keys.clone(),
                read_at: Instant::now(),
            });
            keys
        }
    };
    // Usually none: each is a primary-key look-up of its row as it is now.
    let pairs: Vec<(&str, &str)> = keys
        .iter()
        .map(|k| (k.app_id.as_str(), k.job_id.as_str()))
        .collect();
    let unwatched: Vec<PhaseCount> = src
        .store
        .jobs()
        .by_key(&pairs)
        .await?
        .into_values()
        .map(|r| PhaseCount {
            state: r.state,
            stop_reason: r.stop_reason,
            consecutive_failures: r.consecutive_failures,
            n: 1,
        })
        .collect();
    Ok(tally(
        |p| alerting(src.config, p),
        &groups,
        &unwatched,
        watched,
    ))
}

/// The keys of rows whose job is not in `config`'s list. CPU only; once per watch list.
fn unwatched_keys(config: &Config, rows: Vec<(String, String)>) -> Vec<JobKey> {
    let watched: HashSet<(&str, &str)> = config
        .jobs
        .iter()
        .map(|j| (j.app_id(), j.job_id()))
        .collect();
    rows.into_iter()
        .filter(|(a, j)| !watched.contains(&(a.as_str(), j.as_str())))
        .map(|(a, j)| JobKey::new(a, j))
        .collect()
}

/// The header's counts from every row's group (`groups`) less the rows of jobs not watched
/// (`unwatched`); the `watched` jobs without a row are not known (never polled). `alerting`:
/// whether a job in this phase counts as an open alert.
pub(super) fn tally(
    alerting: impl Fn(&crate::domain::Phase) -> bool,
    groups: &[PhaseCount],
    unwatched: &[PhaseCount],
    watched: usize,
) -> (HashMap<StateFilter, usize>, i64) {
    let mut by_filter: HashMap<StateFilter, i64> = HashMap::new();
    let mut stopped_alerting = 0i64;
    let mut rows = 0i64;
    for (g, sign) in groups
        .iter()
        .map(|g| (g, 1))
        .chain(unwatched.iter().map(|g| (g, -1)))
    {
        let n = g.n * sign;
        rows += n;
        let row = Some((
            g.state.as_deref(),
            g.stop_reason.as_deref(),
            g.consecutive_failures,
        ));
        for f in StateFilter::ALL {
            if f.keeps_phase(row) {
                *by_filter.entry(f).or_default() += n;
            }
        }
        let phase = super::label::stored_phase(g.state.as_deref(), g.stop_reason.as_deref());
        if phase.is_some_and(|p| alerting(&p)) {
            stopped_alerting += n;
        }
    }
    *by_filter.entry(StateFilter::Unknown).or_default() += (watched as i64 - rows).max(0);
    let by_filter = by_filter
        .into_iter()
        .map(|(f, n)| (f, n.max(0) as usize))
        .collect();
    (by_filter, stopped_alerting.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_the_unwatched_rows_are_read_again() {
        struct Case {
            name: &'static str,
            cached: Option<(usize, Duration)>,
            rows: i64,
            watched: usize,
            stale: bool,
        }
        let s = Duration::from_secs;
        let cases = [
            Case {
                name: "never read",
                cached: None,
                rows: 0,
                watched: 0,
                stale: true,
            },
            Case {
                name: "every watched job has a row, none other",
                cached: Some((0, s(5))),
                rows: 100,
                watched: 100,
                stale: false,
            },
            Case {
                name: "jobs not yet polled: fewer rows than jobs",
                cached: Some((0, s(5))),
                rows: 40,
                watched: 100,
                stale: false,
            },
            Case {
                name: "a row no watched job accounts for",
                cached: Some((2, s(5))),
                rows: 103,
                watched: 100,
                stale: true,
            },
            Case {
                name: "the known unwatched rows account for the rest",
                cached: Some((3, s(5))),
                rows: 103,
                watched: 100,
                stale: false,
            },
            Case {
                name: "read too long ago",
                cached: Some((0, UNWATCHED_REFRESH)),
                rows: 10,
                watched: 100,
                stale: true,
            },
        ];
        for c in cases {
            assert_eq!(stale(c.cached, c.rows, c.watched), c.stale, "{}", c.name);
        }
    }

    #[test]
    fn counts_leave_out_unwatched_rows_and_count_unpolled_jobs_as_unknown() {
        let g = |state: Option<&str>, reason: Option<&str>, failures: i64, n: i64| PhaseCount {
            state: state.map(String::from),
            stop_reason: reason.map(String::from),
            consecutive_failures: failures,
            n,
        };
        let groups = [
            g(Some("RUNNING"), None, 0, 5),
            g(Some("RUNNING"), None, 2, 1),
            g(Some("INIT"), None, 0, 2),
            g(Some("STOPPED"), Some("CLOUD_RECORD_SERVER_OVER"), 0, 3),
            g(Some("SOMETHING_NEW"), None, 0, 1),
        ];
        // One stopped row and one running row belong to jobs no longer watched.
        let unwatched = [
            g(Some("STOPPED"), Some("CLOUD_RECORD_SERVER_OVER"), 0, 1),
            g(Some("RUNNING"), None, 0, 1),
        ];
        // 12 rows, 10 of them watched; 14 watched jobs, so 4 never polled.
        let stopped = |p: &crate::domain::Phase| matches!(p.state, crate::domain::State::Stopped);
        let (by, alerting) = tally(stopped, &groups, &unwatched, 14);
        assert_eq!(alerting, 2, "the stopped rows of watched jobs");
        let n = |f| by.get(&f).copied().unwrap_or(0);
        assert_eq!(n(StateFilter::Running), 5);
        assert_eq!(n(StateFilter::Init), 2);
        assert_eq!(n(StateFilter::Stopped), 2);
        assert_eq!(n(StateFilter::Unknown), 1 + 4);
        assert_eq!(n(StateFilter::Failing), 1);
    }
}
