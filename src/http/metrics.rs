//! `/metrics`: Prometheus text. Gauges kept in memory are set at scrape time; the database's
//! (jobs by state, pending and dead deliveries, the oldest pending one) come from indexed
//! queries run at most once per [`GAUGE_MAX_AGE`], however many clients scrape.

use super::AppState;
use crate::config::{BudgetReport, Config, GroupBudget};
use crate::domain::JobKey;
use crate::runtime_list::RuntimeList;
use axum::Extension;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing::warn;

/// A scrape re-reads the database's gauges when they are older than this.
pub const GAUGE_MAX_AGE: Duration = Duration::from_secs(1);

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("recwatch_poll_duration_seconds".into()),
                    &[
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("recwatch_rate_budget_wait_seconds".into()),
                        &[0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0],
                    )
                })
                .expect("bucket lists are not empty");
            match builder.install_recorder() {
                Ok(h) => {
                    crate::metric_catalogue::describe();
                    h
                }
                // Another recorder is installed (tests that run a daemon in-process twice):
                // render from a private one rather than fail.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// How often the recorder folds the histograms' recorded samples into their buckets when
/// nobody scrapes: until then it keeps every sample (two per poll), so a daemon with `/metrics`
/// on and no Prometheus grew by a few hundred bytes a second at 10 requests/s, and by
/// 0.6 MB/s with the budget lifted (issue 23).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds recorded samples every `UPKEEP_EVERY` until `stop` turns true (a scrape does it
/// too).
pub async fn upkeep_until(handle: PrometheusHandle, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(UPKEEP_EVERY) => handle.run_upkeep(),
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The database's side of `/metrics` as last read: when, and when the oldest pending delivery
/// was created (its age is worked out at scrape time). One refresh at a time, in its own
/// task: a scrape waits for the refresh it started at most [`crate::vitals::PROBE_WAIT`], and
/// otherwise (the database slow or gone) renders what was last read, so a scrape never
/// outlasts Prometheus's timeout (issue 22, item 7: 20 s with PostgreSQL stopped).
#[derive(Clone, Default)]
pub(super) struct DbGaugesRead(Arc<GaugesShared>);

#[derive(Default)]
struct GaugesShared {
    last: Mutex<Option<GaugesRead>>,
    /// A refresh is in progress: scrapes meanwhile do not start another.
    refreshing: AtomicBool,
}

#[derive(Clone, Copy)]
struct GaugesRead {
    at: Instant,
    oldest_pending: Option<DateTime<Utc>>,
}

impl DbGaugesRead {
    fn last(&self) -> Option<GaugesRead> {
        *self.0.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the oldest pending delivery was created, as last read (refreshed first when stale,
    /// if the database answers in time).
    async fn oldest_pending(&self, s: &AppState) -> Option<DateTime<Utc>> {
        if let Some(r) = self.last().filter(|r| r.at.elapsed() < GAUGE_MAX_AGE) {
            return r.oldest_pending;
        }
        if !self.0.refreshing.swap(true, Ordering::AcqRel) {
            let (s, read) = (s.clone(), self.clone());
            let refresh = tokio::spawn(async move {
                match set_db_gauges(&s).await {
                    Ok(oldest_pending) => {
                        *read.0.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(GaugesRead {
                            at: Instant::now(),
                            oldest_pending,
                        })
                    }
                    Err(e) => warn!(
                        "/metrics: cannot read the database (its gauges keep their last values): {e:#}"
                    ),
                }
                read.0.refreshing.store(false, Ordering::Release);
            });
            // Dropping the handle does not stop the refresh: it ends on its own.
            let _ = tokio::time::timeout(crate::vitals::PROBE_WAIT, refresh).await;
        }
        self.last().and_then(|r| r.oldest_pending)
    }
}

pub(super) async fn metrics(
    State(s): State<AppState>,
    Extension(read): Extension<DbGaugesRead>,
) -> Response {
    // Both wait for the database at most PROBE_WAIT, side by side.
    let (oldest_pending, ()) = tokio::join!(read.oldest_pending(&s), set_readiness_gauges(&s));
    crate::metric_catalogue::zero(&s.config.borrow());
    set_live_gauges(&s, oldest_pending);
    crate::metric_catalogue::process().collect();
    s.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// Gauges read from memory at scrape time.
fn set_live_gauges(s: &AppState, oldest_pending: Option<DateTime<Utc>>) {
    // Every watched job, whatever its source: the run-time list too (issue 22).
    let budgets = {
        let config = s.config.borrow();
        let runtime = s.watchlist.current();
        account_budgets(&config, &runtime)
    };
    let mut watched = 0;
    for (account, budget) in &budgets {
        watched += budget.jobs;
        set_account_gauges(account, budget, s.outbox.api_unhealthy_for(account));
    }
    let names = budgets.iter().map(|(a, _)| a.clone()).collect();
    for gone in ACCOUNTS_SHOWN.swap(names) {
        // A reload removed it: its series would stay at their last value for ever (an
        // unhealthy one firing its rule); nothing polls it, so it is healthy, asks nothing.
        set_account_gauges(&gone, &NOTHING_POLLED, false);
    }
    metrics::gauge!("recwatch_jobs_watched").set(watched as f64);
    let age = oldest_pending
        .map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    metrics::gauge!("recwatch_oldest_pending_delivery_age_seconds").set(age);
    // A standby runs no poll loop: nothing of it can stall.
    let loop_age = match s.vitals.is_leading() {
        true => s.liveness.age_ms().min(u64::MAX / 2) as f64 / 1000.0,
        false => 0.0,
    };
    metrics::gauge!("recwatch_poll_loop_age_seconds").set(loop_age);
    metrics::gauge!("recwatch_leader").set(if s.vitals.is_leading() { 1.0 } else { 0.0 });
    metrics::gauge!("recwatch_leader_epoch").set(s.vitals.lease_epoch() as f64);
}

/// The gauges of one account (`account` label): its budget as its poller schedules by it and
/// whether its API is unhealthy.
fn set_account_gauges(account: &str, budget: &BudgetReport, unhealthy: bool) {
    for g in crate::config::JobGroup::ALL {
        metrics::gauge!("recwatch_rate_budget_stretch", "account" => account.to_string(), "group" => g.as_str())
            .set(budget.group(g).stretch);
    }
    metrics::gauge!("recwatch_api_rate_limit", "account" => account.to_string())
        .set(f64::from(budget.rate_limit));
    metrics::gauge!("recwatch_rate_budget_demand_ratio", "account" => account.to_string())
        .set(budget.demand / f64::from(budget.rate_limit.max(1)));
    metrics::gauge!("recwatch_api_unhealthy", "account" => account.to_string()).set(if unhealthy {
        1.0
    } else {
        0.0
    });
}

/// The budget of an account nothing polls (one a reload removed).
const NOTHING_POLLED: BudgetReport = BudgetReport {
    jobs: 0,
    demand: 0.0,
    rate_limit: 0,
    stretch: 1.0,
    configured: GroupBudget {
        jobs: 0,
        demand: 0.0,
        stretch: 1.0,
    },
    runtime: GroupBudget {
        jobs: 0,
        demand: 0.0,
        stretch: 1.0,
    },
};

/// The accounts the last scrape set gauges for, so the next can tell which a reload removed.
static ACCOUNTS_SHOWN: Shown = Shown(Mutex::new(Vec::new()));

struct Shown(Mutex<Vec<Arc<str>>>);

impl Shown {
    /// Keeps `now` and returns the accounts shown before that are not in it.
    fn swap(&self, now: Vec<Arc<str>>) -> Vec<Arc<str>> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let before = std::mem::replace(&mut *held, now);
        before.into_iter().filter(|a| !held.contains(a)).collect()
    }
}

/// Each account's budget as its poller has it (issue 25): the file's jobs it polls and the
/// run-time entries it polls (less those the file has too), at its budget's rate limit
/// ([`Config::budget_rate_limit`]). With one account, the whole configuration's budget, with
/// no pass over the jobs to share them out.
pub(super) fn account_budgets(
    config: &Config,
    runtime: &RuntimeList,
) -> Vec<(Arc<str>, BudgetReport)> {
    if !config.several_accounts() {
        let b = config.budget(crate::runtime_list::runtime_count(config, runtime));
        return vec![(config.api.name.clone(), b)];
    }
    let shadowed: HashSet<&JobKey> = config
        .jobs
        .iter()
        .map(|j| &j.key)
        .filter(|k| runtime.jobs.contains_key(*k))
        .collect();
    let mut listed: HashMap<&str, usize> = HashMap::new();
    for (k, r) in &runtime.jobs {
        if !shadowed.contains(k) {
            *listed.entry(&config.account_of(&r.job).name).or_default() += 1;
        }
    }
    config
        .all_accounts()
        .map(|a| {
            let own = config.jobs.iter().map(|j| &**j);
            let own = own.filter(|j| config.account_of(j).name == a.name);
            let runtime_jobs = listed.get(&*a.name).copied().unwrap_or(0);
            let b = config.budget_at(own, runtime_jobs, config.budget_rate_limit(a));
            (a.name.clone(), b)
        })
        .collect()
}

/// `recwatch_ready` (the same answer as `/readyz`) and `recwatch_database_writable`.
async fn set_readiness_gauges(s: &AppState) {
    let ready = super::health::problems(s).await.is_empty();
    metrics::gauge!("recwatch_ready").set(if ready { 1.0 } else { 0.0 });
    let writable = s.vitals.store.problems().is_empty();
    metrics::gauge!("recwatch_database_writable").set(if writable { 1.0 } else { 0.0 });
}

/// Reads the database's gauges ([`crate::store::Database::gauges`], indexed queries) and sets them; returns
/// when the oldest pending delivery was created.
async fn set_db_gauges(s: &AppState) -> anyhow::Result<Option<DateTime<Utc>>> {
    let g = s.store.db().gauges().await?;
    let now = Utc::now();
    let silences = s.store.silences().active(now).await?;
    metrics::gauge!("recwatch_silences_active").set(silences as f64);
    let windows = {
        let config = s.config.borrow();
        config
            .maintenance
            .iter()
            .filter(|w| w.active_until(now).is_some())
            .count()
    };
    metrics::gauge!("recwatch_maintenance_windows_active").set(windows as f64);
    let channels: Vec<String> = {
        let config = s.config.borrow();
        config
            .notify
            .channel_names()
            .into_iter()
            .map(String::from)
            .collect()
    };
    // A state or channel with nothing in it shows 0, not a stale count. States the API
    // invents share the label `other`, so they cannot grow the series.
    let mut by_label: BTreeMap<&'static str, i64> =
        ["INIT", "RUNNING", "STOPPED", "other", "UNKNOWN"]
            .into_iter()
            .map(|l| (l, 0))
            .collect();
    for (state, n) in g.jobs_by_state {
        let label = state
            .as_deref()
            .map(recwatch_rtc::model::state_label)
            .unwrap_or("UNKNOWN");
        *by_label.entry(label).or_default() += n;
    }
    for (label, n) in by_label {
        metrics::gauge!("recwatch_jobs", "state" => label).set(n as f64);
    }
    for name in channels {
        metrics::gauge!("recwatch_deliveries_pending", "channel" => name.clone()).set(0.0);
        metrics::gauge!("recwatch_deliveries_dead", "channel" => name).set(0.0);
    }
    for d in g.deliveries {
        if d.dead {
            metrics::gauge!("recwatch_deliveries_dead", "channel" => d.channel).set(d.n as f64);
        } else {
            metrics::gauge!("recwatch_deliveries_pending", "channel" => d.channel).set(d.n as f64);
        }
    }
    Ok(g.oldest_pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobKind, JobSource, RuntimeJob, Timestamp};

    fn parse(text: &str) -> Config {
        crate::config::parse_str(text, Vec::<(String, String)>::new(), None).unwrap()
    }

    fn entry(app: &str, job: &str, account: Option<&str>) -> RuntimeJob {
        RuntimeJob {
            key: JobKey::new(app, job),
            name: None,
            kind: JobKind::Individual,
            notify: None,
            source: JobSource::Api,
            added_at: Timestamp::parse("2026-12-08T00:00:00.000Z").unwrap(),
            account: account.map(str::to_string),
        }
    }

    /// (account, jobs, configured jobs, rate limit) of each account's budget.
    fn shown(budgets: &[(Arc<str>, BudgetReport)]) -> Vec<(String, usize, usize, u32)> {
        budgets
            .iter()
            .map(|(a, b)| (a.to_string(), b.jobs, b.configured.jobs, b.rate_limit))
            .collect()
    }

    #[test]
    fn each_account_counts_the_jobs_it_polls_table() {
        // "north" and "east" share one static key (one budget: the smaller limit).
        let keys = "access_key = \"AK\"\nsecret_key = \"SK\"";
        let several = parse(&format!(
            "[[accounts]]\nname = \"north\"\nproject_id = \"p1\"\nrate_limit = 8\n[accounts.auth]\n{keys}\n\
             [[accounts]]\nname = \"south\"\nproject_id = \"p2\"\n[accounts.auth]\ntoken = \"t\"\n\
             [[accounts]]\nname = \"east\"\nproject_id = \"p3\"\nrate_limit = 5\n[accounts.auth]\n{keys}\n\
             [[apps]]\napp_id = \"app-s\"\nauth_key = \"{}\"\naccount = \"south\"\n\n\
             [[jobs]]\napp_id = \"app-n\"\njob_id = \"j1\"\n\n\
             [[jobs]]\napp_id = \"app-s\"\njob_id = \"j2\"\n",
            "k".repeat(32)
        ));
        let one = parse(
            "[api]\nproject_id = \"p\"\n[api.auth]\ntoken = \"t\"\n\
             [[jobs]]\napp_id = \"a\"\njob_id = \"j\"\n",
        );
        let list = |e: Vec<RuntimeJob>| RuntimeList::of(e);
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, &Config, RuntimeList, Vec<(&str, usize, usize, u32)>)> = vec![
            (
                "one account: the whole list, shadowed entries left out",
                &one,
                list(vec![entry("a", "j", None), entry("a", "r1", None)]),
                vec![("default", 2, 1, 10)],
            ),
            (
                "several: each job to its own, its app's or the first account",
                &several,
                list(vec![
                    entry("app-s", "r1", None),
                    entry("app-n", "r2", Some("east")),
                    entry("app-x", "r3", None),
                    // The file has it: counted once, as the file's.
                    entry("app-s", "j2", Some("north")),
                ]),
                vec![("north", 2, 1, 5), ("south", 2, 1, 10), ("east", 1, 0, 5)],
            ),
            (
                "an account no longer configured falls to the first",
                &several,
                list(vec![entry("app-s", "r1", Some("gone"))]),
                vec![("north", 2, 1, 5), ("south", 1, 1, 10), ("east", 0, 0, 5)],
            ),
        ];
        for (name, config, runtime, want) in cases {
            let want: Vec<(String, usize, usize, u32)> = want
                .into_iter()
                .map(|(a, j, c, r)| (a.to_string(), j, c, r))
                .collect();
            assert_eq!(shown(&account_budgets(config, &runtime)), want, "{name}");
        }
    }

    #[test]
    fn a_removed_account_is_told_once() {
        let shown = Shown(Mutex::new(Vec::new()));
        let names = |n: &[&str]| n.iter().map(|a| Arc::<str>::from(*a)).collect::<Vec<_>>();
        assert!(shown.swap(names(&["a", "b"])).is_empty());
        assert_eq!(shown.swap(names(&["a"])), names(&["b"]));
        assert!(shown.swap(names(&["a"])).is_empty());
    }
}
