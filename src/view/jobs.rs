//! The job list (`/` and `/api/v1/jobs`): every watched job with what the database knows of
//! it, filtered (state, app, account, text) and a page at a time in (app_id, job_id) order with an
//! opaque cursor, each with its 24-hour timeline; and the header above it (counts by state,
//! open alerts, API health per account, budget in use).
//!
//! The cost follows the page, not the watch list: the header's counts grouped in the database
//! ([`super::counts`]), one pass over the watch list keeping the page's keys in a heap, then
//! full rows and timelines for the page's jobs only; every job's phase is read only for a
//! state filter.

use super::counts::CountsCache;
use super::label::{self, Tone};
use super::timeline::{self, Change, Timeline};
use super::{Sources, ViewError, cursor_param, encode_cursor, parse_limit};
use crate::config::{Config, JobConfig};
use crate::domain::Timestamp;
use crate::domain::{JobKey, JobSource, Phase, timestamp};
use crate::status::{AccountOf, StatusRow};
use crate::store::{JobPhaseRow, JobRow, PhasePoint};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

/// Jobs per page: the default, and the most one request may ask for.
pub const PAGE_DEFAULT: usize = 100;
pub const PAGE_MAX: usize = 1000;

/// The window of the list's timelines.
pub const LIST_WINDOW: Duration = Duration::hours(24);

/// The list's query parameters as they arrive (a form sends blank fields as "").
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawJobsQuery {
    pub limit: Option<String>,
    pub after: Option<String>,
    pub state: Option<String>,
    pub app: Option<String>,
    pub account: Option<String>,
    pub q: Option<String>,
}

/// Which jobs the `state` filter keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum StateFilter {
    #[serde(rename = "RUNNING")]
    Running,
    #[serde(rename = "INIT")]
    Init,
    #[serde(rename = "STOPPED")]
    Stopped,
    /// Never polled, or in a state the API invented.
    #[serde(rename = "UNKNOWN")]
    Unknown,
    /// Its last poll failed.
    #[serde(rename = "FAILING")]
    Failing,
}

impl StateFilter {
    pub const ALL: [StateFilter; 5] = [
        StateFilter::Running,
        StateFilter::Init,
        StateFilter::Stopped,
        StateFilter::Unknown,
        StateFilter::Failing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StateFilter::Running => "RUNNING",
            StateFilter::Init => "INIT",
            StateFilter::Stopped => "STOPPED",
            StateFilter::Unknown => "UNKNOWN",
            StateFilter::Failing => "FAILING",
        }
    }

    fn parse(s: &str) -> Option<StateFilter> {
        let s = s.trim().to_ascii_uppercase();
        StateFilter::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// Whether a job with this row (None: never polled) passes.
    fn keeps(self, row: Option<&JobPhaseRow>) -> bool {
        self.keeps_phase(row.map(|r| {
            (
                r.state.as_deref(),
                r.stop_reason.as_deref(),
                r.consecutive_failures,
            )
        }))
    }

    /// [`StateFilter::keeps`] of a row's (state, stop reason, failures in a row): also what a
    /// group of rows counted together has.
    pub(super) fn keeps_phase(self, row: Option<(Option<&str>, Option<&str>, i64)>) -> bool {
        let phase = row.and_then(|(state, reason, _)| label::stored_phase(state, reason));
        match self {
            StateFilter::Failing => row.is_some_and(|(_, _, failures)| failures > 0),
            StateFilter::Running => {
                phase.is_some_and(|p| matches!(p.state, crate::domain::State::Running))
            }
            StateFilter::Init => {
                phase.is_some_and(|p| matches!(p.state, crate::domain::State::Init))
            }
            StateFilter::Stopped => {
                phase.is_some_and(|p| matches!(p.state, crate::domain::State::Stopped))
            }
            StateFilter::Unknown => {
                phase.is_none_or(|p| matches!(p.state, crate::domain::State::Other(_)))
            }
        }
    }
}

/// The list's query, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobsQuery {
    pub limit: usize,
    pub after: Option<(String, String)>,
    pub state: Option<StateFilter>,
    pub app: Option<String>,
    /// The name of the account that polls the job (checked against the configuration by
    /// [`JobsQuery::check_account`]).
    pub account: Option<String>,
    /// Matched case-insensitively against the name, the app id and the job id.
    pub q: Option<String>,
}

impl JobsQuery {
    pub fn parse(raw: &RawJobsQuery) -> Result<JobsQuery, ViewError> {
        let text = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
        };
        let state = match text(&raw.state) {
            None => None,
            Some(s) => Some(StateFilter::parse(&s).ok_or_else(|| {
                ViewError::BadRequest(format!(
                    "state: {s:?} is not one of RUNNING, INIT, STOPPED, UNKNOWN, FAILING; e.g. ?state=STOPPED"
                ))
            })?),
        };
        Ok(JobsQuery {
            limit: parse_limit(raw.limit.as_deref(), PAGE_DEFAULT, PAGE_MAX)?,
            after: cursor_param("after", raw.after.as_deref())?,
            state,
            app: text(&raw.app),
            account: text(&raw.account),
            q: text(&raw.q).map(|q| q.to_lowercase()),
        })
    }

    /// The account filter names a configured account, or a 400 naming the ones there are.
    pub fn check_account(&self, config: &Config) -> Result<(), ViewError> {
        let Some(a) = &self.account else {
            return Ok(());
        };
        if config.account_named(a).is_some() {
            return Ok(());
        }
        let names = config.account_names();
        let known: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
        Err(ViewError::BadRequest(format!(
            "account: {a:?} is not a configured account; use one of {}, e.g. ?account={}",
            known.join(", "),
            names.first().map_or("default", |n| n)
        )))
    }

    /// Whether a watched job passes the filters (not the cursor); `accounts` says which
    /// account polls it.
    fn keeps(&self, job: &JobConfig, accounts: &AccountOf<'_>, row: Option<&JobPhaseRow>) -> bool {
        if self.app.as_ref().is_some_and(|a| *a != job.app_id()) {
            return false;
        }
        if self
            .account
            .as_ref()
            .is_some_and(|a| *a != accounts.of(job))
        {
            return false;
        }
        if self.state.is_some_and(|s| !s.keeps(row)) {
            return false;
        }
        match &self.q {
            None => true,
            Some(q) => [Some(job.app_id()), Some(job.job_id()), job.name.as_deref()]
                .into_iter()
                .flatten()
                .any(|field| field.to_lowercase().contains(q)),
        }
    }

    /// The same filters with another cursor, for links to the next or the first page.
    pub fn with_after(&self, after: Option<String>) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(s) = self.state {
            out.push(("state", s.as_str().to_string()));
        }
        if let Some(a) = &self.app {
            out.push(("app", a.clone()));
        }
        if let Some(a) = &self.account {
            out.push(("account", a.clone()));
        }
        if let Some(q) = &self.q {
            out.push(("q", q.clone()));
        }
        if self.limit != PAGE_DEFAULT {
            out.push(("limit", self.limit.to_string()));
        }
        if let Some(c) = after {
            out.push(("after", c));
        }
        out
    }
}

/// A job of the list: the row `recwatch status --json` shows, and how the page shows it.
#[derive(Clone, Debug, Serialize)]
pub struct JobItem {
    #[serde(flatten)]
    pub row: StatusRow,
    /// A friendly label beside the API's own `state` and `stop_reason`.
    pub label: &'static str,
    pub tone: Tone,
    /// Polls failed in a row since the last answer (0: the last poll answered).
    pub consecutive_failures: i64,
    pub timeline: Timeline,
}

/// A count in the header.
#[derive(Clone, Debug, Serialize)]
pub struct StateCount {
    /// The `?state=` value that lists these jobs.
    pub state: StateFilter,
    pub label: &'static str,
    pub tone: Tone,
    pub n: usize,
}

/// The header above the list.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub generated_at: Timestamp,
    pub jobs: usize,
    pub states: Vec<StateCount>,
    /// Jobs stopped by a rule that alerts (severity not off), plus open conditions.
    pub open_alerts: i64,
    /// Open condition episodes (stuck_init, job_not_found, api_unhealthy).
    pub open_conditions: i64,
    pub deliveries_pending: i64,
    pub deliveries_dead: i64,
    /// No account's API is failing.
    pub api_healthy: bool,
    /// Each configured account's API health, in the file's order.
    pub accounts: Vec<AccountHealth>,
    pub budget: BudgetUse,
}

/// An account's API health in the header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountHealth {
    pub name: String,
    /// False while the account's `api_unhealthy` condition is open.
    pub healthy: bool,
}

/// Each of `names` with its health: unhealthy when among `unhealthy`. Pure.
pub fn account_health(names: &[Arc<str>], unhealthy: &[String]) -> Vec<AccountHealth> {
    names
        .iter()
        .map(|n| AccountHealth {
            name: n.to_string(),
            healthy: !unhealthy.iter().any(|u| **u == **n),
        })
        .collect()
}

/// How much of the request budget the watch list asks for.
#[derive(Clone, Debug, Serialize)]
pub struct BudgetUse {
    pub rate_limit: u32,
    /// Requests per second the watch list asks for at its intervals.
    pub demand_per_second: f64,
    /// demand / rate_limit, in percent (over 100: every interval is stretched).
    pub in_use_percent: f64,
    /// Every request is held now (throttled, or credentials refused).
    pub paused: bool,
    /// How many times longer than configured the config file's jobs are polled (served
    /// first) and the run-time list's (sharing what is left); 1: at their interval.
    pub configured_stretch: f64,
    pub runtime_stretch: f64,
}

/// One page of the list, with its header.
#[derive(Clone, Debug, Serialize)]
pub struct JobsPage {
    pub items: Vec<JobItem>,
    /// Pass as `?after=` for the next page; null on the last one.
    pub next_after: Option<String>,
    /// Jobs that pass the filters, on every page.
    pub matching: usize,
    /// The page's header; on the JSON's first page (without `after`) only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    #[serde(skip)]
    pub query: JobsQuery,
}

/// The `limit` jobs that pass `keep` and follow `after` in (app_id, job_id) order, and
/// whether more follow them. One pass keeping the `limit + 1` smallest keys in a heap: no copy
/// or sort of the whole list per request, so memory follows the page size.
pub fn page<'a>(
    jobs: &'a [Arc<JobConfig>],
    after: Option<&(String, String)>,
    limit: usize,
    mut keep: impl FnMut(&JobConfig) -> bool,
) -> (Vec<&'a JobConfig>, bool) {
    let key = |j: &'a JobConfig| (j.app_id(), j.job_id());
    let after = after.map(|(a, j)| (a.as_str(), j.as_str()));
    let mut heap: BinaryHeap<((&str, &str), usize)> = BinaryHeap::with_capacity(limit + 2);
    for (i, j) in jobs.iter().enumerate() {
        let k = key(j);
        if after.is_some_and(|a| k <= a) || !keep(j) {
            continue;
        }
        if heap.len() <= limit {
            heap.push((k, i));
        } else if heap.peek().is_some_and(|(top, _)| k < *top) {
            heap.pop();
            heap.push((k, i));
        }
    }
    let mut picked: Vec<&JobConfig> = heap
        .into_sorted_vec()
        .into_iter()
        .map(|(_, i)| &*jobs[i])
        .collect();
    let more = picked.len() > limit;
    picked.truncate(limit);
    (picked, more)
}

/// What one pass over the watch list found.
struct Scan {
    /// The page's jobs, in order.
    picked: Vec<JobConfig>,
    more: bool,
    matching: usize,
}

/// The pass over the watch list: filter and page. CPU only (milliseconds at 100,000 jobs),
/// so it runs off the async workers, which run the poller.
fn scan(config: &Config, q: &JobsQuery, phases: Option<&HashMap<JobKey, JobPhaseRow>>) -> Scan {
    let row_of = |j: &JobConfig| phases.and_then(|p| p.get(&JobKey::new(j.app_id(), j.job_id())));
    let accounts = AccountOf::new(config);
    let watched = &config.jobs;
    let mut matching = 0;
    let (picked, more) = page(watched, q.after.as_ref(), q.limit, |j| {
        let keep = q.keeps(j, &accounts, row_of(j));
        matching += keep as usize;
        keep
    });
    let picked: Vec<JobConfig> = picked.into_iter().cloned().collect();
    // `page` saw only the jobs after the cursor; count those before it too.
    if let Some((a, b)) = &q.after {
        matching += watched
            .iter()
            .filter(|j| {
                (j.app_id(), j.job_id()) <= (a.as_str(), b.as_str())
                    && q.keeps(j, &accounts, row_of(j))
            })
            .count();
    }
    Scan {
        picked,
        more,
        matching,
    }
}

/// The list's page for `q`, with the header's `summary` when `with_summary` (the HTML page
/// always; the JSON on its first page). Every job's phase is read only when a state filter
/// needs it; the summary's counts are grouped in the database ([`super::counts`]), with what
/// depends only on the watch list kept in `cache` (one per list).
pub async fn jobs_page(
    src: &Sources<'_>,
    q: JobsQuery,
    with_summary: bool,
    cache: &CountsCache,
) -> Result<JobsPage, ViewError> {
    q.check_account(src.config)?;
    let phases: Option<HashMap<JobKey, JobPhaseRow>> = if q.state.is_some() {
        Some(
            src.store
                .page()
                .job_phases()
                .await?
                .into_iter()
                .map(|r| (JobKey::new(&r.app_id, &r.job_id), r))
                .collect(),
        )
    } else {
        None
    };
    let (config, q2) = (Arc::clone(src.config), q.clone());
    let scanned = tokio::task::spawn_blocking(move || scan(&config, &q2, phases.as_ref()))
        .await
        .map_err(|e| ViewError::Internal(e.to_string()))?;
    let summary = if with_summary {
        let (by_filter, stopped_alerting) = super::counts::counts(src, cache).await?;
        Some(summary(src, &by_filter, stopped_alerting, cache).await?)
    } else {
        None
    };
    let picked: Vec<&JobConfig> = scanned.picked.iter().collect();
    let items = items(src, &picked, LIST_WINDOW).await?;
    let next_after = scanned
        .more
        .then(|| {
            picked
                .last()
                .map(|j| encode_cursor(&(j.app_id(), j.job_id())))
        })
        .flatten();
    Ok(JobsPage {
        items,
        next_after,
        matching: scanned.matching,
        summary,
        query: q,
    })
}

/// Full rows and timelines over `window` (ending now) for these jobs, in their order.
pub(super) async fn items(
    src: &Sources<'_>,
    jobs: &[&JobConfig],
    window: Duration,
) -> Result<Vec<JobItem>, ViewError> {
    let keys: Vec<(&str, &str)> = jobs.iter().map(|j| (j.app_id(), j.job_id())).collect();
    let rows = src.store.jobs().by_key(&keys).await?;
    let start = src.now - window;
    let mut changes: HashMap<JobKey, Vec<Change>> = HashMap::new();
    for p in src
        .store
        .page()
        .phase_points(&keys, &timestamp(start))
        .await?
    {
        let c = change(&p);
        changes
            .entry(JobKey::new(p.app_id, p.job_id))
            .or_default()
            .push(c);
    }
    Ok(jobs
        .iter()
        .map(|j| {
            let key = JobKey::new(j.app_id(), j.job_id());
            let row = rows.get(&key);
            item(
                j,
                &src.config.account_of(j).name,
                &src.source_of(j),
                row,
                changes.get(&key).map_or(&[][..], Vec::as_slice),
                start,
                src.now,
            )
        })
        .collect())
}

fn change(p: &PhasePoint) -> Change {
    Change {
        at: p.observed_at.to_datetime(),
        phase: Phase::parse(&p.to_state, p.stop_reason.as_deref()),
    }
}

/// One job as the list shows it.
pub(super) fn item(
    j: &JobConfig,
    account: &str,
    source: &JobSource,
    row: Option<&JobRow>,
    changes: &[Change],
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> JobItem {
    let phase = row.and_then(JobRow::phase);
    let failures = row.map_or(0, |r| r.consecutive_failures);
    // Polls failing now: the state is unknown since the last answer (or since first seen).
    let failing_since = (failures > 0).then(|| {
        row.and_then(|r| r.last_ok_at.or(r.first_seen_at))
            .map_or(start, Timestamp::to_datetime)
    });
    JobItem {
        row: StatusRow::new(j, account, source, row),
        label: label::label(phase.as_ref()),
        tone: label::tone(phase.as_ref()),
        consecutive_failures: failures,
        // Watched since its first poll: a job added today is "not watched" before it, not
        // unknown (the config file's jobs have no time of adding; the first poll follows it).
        timeline: timeline::timeline(
            start,
            now,
            changes,
            failing_since,
            row.and_then(|r| r.first_seen_at)
                .map(Timestamp::to_datetime),
        ),
    }
}

/// The header: the counts of the whole watch list and what the database and the running
/// daemon know.
async fn summary(
    src: &Sources<'_>,
    by_filter: &HashMap<StateFilter, usize>,
    stopped_alerting: i64,
    cache: &CountsCache,
) -> Result<Summary, ViewError> {
    let jobs = src.config.jobs.len();
    let open_conditions = src.store.page().open_episodes_count().await?;
    let gauges = src.store.db().gauges().await?;
    let (mut pending, mut dead) = (0, 0);
    for d in gauges.deliveries {
        if d.dead {
            dead += d.n;
        } else {
            pending += d.n;
        }
    }
    // `config` holds the run-time jobs too: those in `sources` are the run-time group. A pass
    // over every job, so once per watch list.
    let report = cache.budget(|| {
        src.config.budget_over(
            src.config
                .jobs
                .iter()
                .filter(|j| {
                    !src.sources
                        .contains_key(&JobKey::new(j.app_id(), j.job_id()))
                })
                .map(|j| &**j),
            src.sources.len(),
        )
    });
    let states = StateFilter::ALL
        .into_iter()
        .map(|f| StateCount {
            state: f,
            label: filter_label(f),
            tone: filter_tone(f),
            n: by_filter.get(&f).copied().unwrap_or(0),
        })
        .collect();
    Ok(Summary {
        generated_at: Timestamp::from(src.now),
        jobs,
        states,
        open_alerts: stopped_alerting + open_conditions,
        open_conditions,
        deliveries_pending: pending,
        deliveries_dead: dead,
        api_healthy: !src.api_unhealthy,
        accounts: account_health(&src.config.account_names(), &src.unhealthy_accounts),
        budget: BudgetUse {
            rate_limit: report.rate_limit,
            demand_per_second: report.demand,
            in_use_percent: report.demand / f64::from(report.rate_limit.max(1)) * 100.0,
            configured_stretch: report.configured.stretch,
            runtime_stretch: report.runtime.stretch,
            paused: src.budget_paused,
        },
    })
}

/// Whether a job in this phase is alerting now: stopped by a rule whose severity is not off.
pub(super) fn alerting(config: &Config, p: &Phase) -> bool {
    crate::rules::transition_rule(p)
        .and_then(|rule| crate::rules::severity(&config.rules, rule))
        .is_some()
}

fn filter_label(f: StateFilter) -> &'static str {
    match f {
        StateFilter::Running => "recording",
        StateFilter::Init => "starting",
        StateFilter::Stopped => "stopped",
        StateFilter::Unknown => "not known",
        StateFilter::Failing => "polls failing",
    }
}

fn filter_tone(f: StateFilter) -> Tone {
    match f {
        StateFilter::Running => Tone::Running,
        StateFilter::Init => Tone::Init,
        StateFilter::Stopped => Tone::StoppedError,
        StateFilter::Unknown => Tone::Unknown,
        StateFilter::Failing => Tone::Failing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(app: &str, id: &str, name: Option<&str>) -> Arc<JobConfig> {
        Arc::new(JobConfig {
            account: None,
            kind: crate::domain::JobKind::Individual,
            key: crate::domain::JobKey::new(app, id),
            name: name.map(String::from),
            interval: None,
            notify: None,
        })
    }

    fn ids(page: &[&JobConfig]) -> Vec<String> {
        page.iter()
            .map(|j| format!("{}/{}", j.app_id(), j.job_id()))
            .collect()
    }

    #[test]
    fn pages_follow_key_order_from_the_cursor() {
        // Config order is not key order; an app id sorts before its job ids.
        let jobs = vec![
            job("b", "1", None),
            job("a", "3", None),
            job("a", "1", None),
            job("c", "0", None),
            job("a", "2", None),
        ];
        let key = |a: &str, j: &str| (a.to_string(), j.to_string());
        struct Case {
            name: &'static str,
            after: Option<(String, String)>,
            limit: usize,
            page: &'static [&'static str],
            more: bool,
        }
        let cases = [
            Case {
                name: "first page",
                after: None,
                limit: 2,
                page: &["a/1", "a/2"],
                more: true,
            },
            Case {
                name: "from a cursor",
                after: Some(key("a", "2")),
                limit: 2,
                page: &["a/3", "b/1"],
                more: true,
            },
            Case {
                name: "exactly the rest: no more",
                after: Some(key("a", "3")),
                limit: 2,
                page: &["b/1", "c/0"],
                more: false,
            },
            Case {
                name: "fewer than the limit left",
                after: Some(key("b", "1")),
                limit: 10,
                page: &["c/0"],
                more: false,
            },
            Case {
                name: "after the last job",
                after: Some(key("c", "0")),
                limit: 2,
                page: &[],
                more: false,
            },
            Case {
                name: "a cursor whose job was removed goes on from its place",
                after: Some(key("a", "25")),
                limit: 1,
                page: &["a/3"],
                more: true,
            },
            Case {
                name: "everything in one page",
                after: None,
                limit: 5,
                page: &["a/1", "a/2", "a/3", "b/1", "c/0"],
                more: false,
            },
        ];
        for c in cases {
            let (page, more) = page(&jobs, c.after.as_ref(), c.limit, |_| true);
            assert_eq!(ids(&page), c.page, "{}", c.name);
            assert_eq!(more, c.more, "{}", c.name);
        }
        assert_eq!(page(&[], None, 3, |_| true), (vec![], false), "no jobs");
        let (only_a, more) = page(&jobs, None, 10, |j| j.app_id() == "a");
        assert_eq!(ids(&only_a), ["a/1", "a/2", "a/3"], "a filter");
        assert!(!more);
    }

    #[test]
    fn walking_pages_returns_every_job_once() {
        // Deterministic shuffle: job i at position i * 7919 mod n.
        let n = 1000;
        let jobs: Vec<Arc<JobConfig>> = (0..n)
            .map(|i| {
                job(
                    &format!("app-{}", (i * 7919) % 7),
                    &format!("job-{:04}", (i * 7919) % n),
                    None,
                )
            })
            .collect();
        for limit in [1, 3, 100, 999, 1000] {
            let mut seen = Vec::new();
            let mut after: Option<(String, String)> = None;
            loop {
                let (page, more) = page(&jobs, after.as_ref(), limit, |_| true);
                assert!(page.len() <= limit);
                seen.extend(ids(&page));
                if !more {
                    break;
                }
                let last = page.last().unwrap();
                let cursor = encode_cursor(&(last.app_id(), last.job_id()));
                after = Some(super::super::decode_cursor(&cursor).unwrap());
            }
            let mut expected = ids(&jobs.iter().map(|j| &**j).collect::<Vec<_>>());
            expected.sort();
            assert_eq!(seen, expected, "limit {limit}");
        }
    }

    fn phase_row(state: Option<&str>, reason: Option<&str>, failures: i64) -> JobPhaseRow {
        JobPhaseRow {
            app_id: "a".into(),
            job_id: "j".into(),
            state: state.map(String::from),
            stop_reason: reason.map(String::from),
            consecutive_failures: failures,
        }
    }

    #[test]
    fn filters_table() {
        let raw = |state: &str, app: &str, q: &str| RawJobsQuery {
            state: Some(state.into()),
            app: Some(app.into()),
            q: Some(q.into()),
            ..RawJobsQuery::default()
        };
        let cam = job("studio", "job-1", Some("Cam <North>"));
        let running = phase_row(Some("RUNNING"), None, 0);
        let dead = phase_row(Some("STOPPED"), Some("INTERNAL_ERROR"), 0);
        let failing = phase_row(Some("RUNNING"), None, 3);
        let invented = phase_row(Some("PAUSED"), None, 0);
        let cases: [(&str, RawJobsQuery, Option<&JobPhaseRow>, bool); 14] = [
            ("no filter", raw("", "", ""), Some(&running), true),
            ("blank fields are no filter", raw(" ", "", " "), None, true),
            (
                "state matches",
                raw("RUNNING", "", ""),
                Some(&running),
                true,
            ),
            (
                "state in lower case",
                raw("stopped", "", ""),
                Some(&dead),
                true,
            ),
            (
                "state differs",
                raw("STOPPED", "", ""),
                Some(&running),
                false,
            ),
            (
                "never polled is UNKNOWN",
                raw("UNKNOWN", "", ""),
                None,
                true,
            ),
            (
                "an invented state is UNKNOWN",
                raw("UNKNOWN", "", ""),
                Some(&invented),
                true,
            ),
            ("failing", raw("FAILING", "", ""), Some(&failing), true),
            ("not failing", raw("FAILING", "", ""), Some(&running), false),
            ("app matches", raw("", "studio", ""), Some(&running), true),
            ("app differs", raw("", "other", ""), Some(&running), false),
            (
                "text in the name, any case",
                raw("", "", "north>"),
                Some(&running),
                true,
            ),
            (
                "text in the job id",
                raw("", "", "JOB-1"),
                Some(&running),
                true,
            ),
            ("text nowhere", raw("", "", "south"), Some(&running), false),
        ];
        let config = Config::defaults(crate::config::Auth::Token {
            token: crate::secret::Secret::new("t"),
        });
        let accounts = AccountOf::new(&config);
        for (name, raw, row, want) in cases {
            let q = JobsQuery::parse(&raw).unwrap();
            assert_eq!(q.keeps(&cam, &accounts, row), want, "{name}");
        }
        let e = JobsQuery::parse(&raw("DEAD", "", ""))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("state:") && e.contains("STOPPED"), "{e}");
    }

    /// Two accounts: `north` polls app `a` (the first account), `south` polls app `s` (its
    /// app's account) and the job `a/own` (its own).
    fn two_accounts() -> Config {
        let keys = "[accounts.auth]\naccess_key = \"AK1\"\nsecret_key = \"sk\"\n";
        let text = format!(
            "[[accounts]]\nname = \"north\"\nproject_id = \"p\"\n{keys}\
             [[accounts]]\nname = \"south\"\nproject_id = \"p\"\n{keys}\
             [[apps]]\napp_id = \"s\"\nauth_key = \"{}\"\naccount = \"south\"\n",
            "k".repeat(32)
        );
        crate::config::parse_str(&text, Vec::<(String, String)>::new(), None).unwrap()
    }

    #[test]
    fn the_account_filter_keeps_the_jobs_of_that_account() {
        let config = two_accounts();
        let accounts = AccountOf::new(&config);
        let mut own = (*job("a", "own", None)).clone();
        own.account = Some(Arc::new("south".to_string()));
        let jobs = [
            (
                "app without an account: the first",
                (*job("a", "1", None)).clone(),
            ),
            ("the app's account", (*job("s", "1", None)).clone()),
            ("the job's own account", own),
        ];
        let cases = [
            ("no filter", "", [true, true, true]),
            ("north", "north", [true, false, false]),
            ("south", "south", [false, true, true]),
            ("blank is no filter", " ", [true, true, true]),
        ];
        for (name, account, want) in cases {
            let raw = RawJobsQuery {
                account: Some(account.into()),
                ..RawJobsQuery::default()
            };
            let q = JobsQuery::parse(&raw).unwrap();
            q.check_account(&config).unwrap();
            for ((what, j), want) in jobs.iter().zip(want) {
                assert_eq!(q.keeps(j, &accounts, None), want, "{name}: {what}");
            }
        }
        let q = JobsQuery::parse(&RawJobsQuery {
            account: Some("west".into()),
            ..RawJobsQuery::default()
        })
        .unwrap();
        let e = q.check_account(&config).unwrap_err();
        assert!(matches!(e, ViewError::BadRequest(_)), "{e}");
        let e = e.to_string();
        assert!(
            e.starts_with("account: \"west\"") && e.contains("\"north\", \"south\""),
            "names the known accounts: {e}"
        );
    }

    #[test]
    fn each_account_is_healthy_unless_it_is_blind() {
        let names: Vec<Arc<str>> = vec!["north".into(), "south".into()];
        let cases: [(&str, &[&str], [bool; 2]); 4] = [
            ("all healthy", &[], [true, true]),
            ("one blind", &["south"], [true, false]),
            ("both blind", &["south", "north"], [false, false]),
            ("an account no longer configured", &["west"], [true, true]),
        ];
        for (name, unhealthy, want) in cases {
            let unhealthy: Vec<String> = unhealthy.iter().map(|u| u.to_string()).collect();
            let got: Vec<bool> = account_health(&names, &unhealthy)
                .iter()
                .map(|a| a.healthy)
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn links_keep_the_filters() {
        let q = JobsQuery::parse(&RawJobsQuery {
            state: Some("stopped".into()),
            q: Some("Cam".into()),
            ..RawJobsQuery::default()
        })
        .unwrap();
        assert_eq!(
            q.with_after(Some("xyz".into())),
            [
                ("state", "STOPPED".to_string()),
                ("q", "cam".to_string()),
                ("after", "xyz".to_string())
            ]
        );
    }
}
