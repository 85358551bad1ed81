//! Request statistics of the API endpoint: [`SimStats`] as the tests and the benchmark read
//! it, and the counters behind it, which take every arrival's instant as an argument so a test
//! drives them without a clock.

use crate::gateway::Verdict;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;
// tokio's clock, not std's: a test on tokio's paused clock moves the sliding second exactly as
// far as it advances time.
use tokio::time::Instant;

/// How long the per-second request counts are kept.
const PER_SECOND_KEPT: i64 = 600;

/// Request statistics of the API endpoint (control requests are not counted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// When counting started: the start, or the last reset.
    pub since: Option<DateTime<Utc>>,
    pub requests: u64,
    /// Answers by status; connections reset by a fault are counted in `resets` instead.
    pub by_status: BTreeMap<u16, u64>,
    /// The most requests that arrived within any 1 s window.
    pub max_per_sliding_second: u64,
    /// `(unix second, requests)`, oldest first, the last 10 minutes with traffic.
    pub per_second: Vec<(i64, u64)>,
    /// Requests refused for their credentials (lockout and the RefuseAuth fault included).
    pub refused_auth: u64,
    /// Requests answered 429 by the rate limit or the Throttle fault.
    pub throttled: u64,
    pub resets: u64,
    /// Requests a fault rule applied to.
    pub faults_applied: u64,
    /// Requests per app id, then job id.
    pub by_job: BTreeMap<String, BTreeMap<String, u64>>,
    /// Requests to `/v2/apps/{app_id}/record-callback` (the API's 60 requests/min group:
    /// not in `requests`, which are the job group's).
    #[serde(default)]
    pub app_requests: u64,
    /// The record callbacks the simulator sent, failed to send or dropped.
    #[serde(default)]
    pub callbacks: crate::callbacks::CallbackStats,
    /// Create requests (`POST .../individual-stream-jobs` or `.../mix-stream-jobs`), whatever
    /// their answer; they are also in `requests` (the job group's budget).
    #[serde(default)]
    pub creates: u64,
    /// Jobs those creates made (a create answered 500 or stalled by a fault still makes one).
    #[serde(default)]
    pub created: u64,
    /// Stop requests (`DELETE` of a job), whatever their answer; also in `requests`.
    #[serde(default)]
    pub stops: u64,
    /// The job group's requests per account (`default` first among equals), by the key they
    /// are signed with; a request signed with a key no account has is in none.
    #[serde(default)]
    pub by_account: BTreeMap<String, AccountStats>,
    /// Requests to the ECS metadata stand-in (in none of the counts above).
    #[serde(default)]
    pub metadata: crate::metadata::MetadataStats,
}

/// One account's share of the job group's requests, counted as they arrived (whatever the
/// answer), like the totals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountStats {
    pub requests: u64,
    /// The most of its requests that arrived within any 1 s window.
    pub max_per_sliding_second: u64,
    pub refused_auth: u64,
    /// Answered 429 by its rate limit.
    pub throttled: u64,
    /// Of `requests`, those signed with a temporary key from the metadata stand-in.
    pub temporary: u64,
}

/// One account's counts and the arrivals of its last second.
#[derive(Default)]
struct AccountCounters {
    stats: AccountStats,
    window: VecDeque<Instant>,
}

/// Pushes `now` into a window of arrivals, forgetting those a second or more before it, and
/// says how many the window holds.
fn slide(window: &mut VecDeque<Instant>, now: Instant) -> u64 {
    while window
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        window.pop_front();
    }
    window.push_back(now);
    window.len() as u64
}

/// Counts API requests; every method takes the arrival instant so tests can drive it.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) since: Option<DateTime<Utc>>,
    pub(crate) requests: u64,
    pub(crate) by_status: BTreeMap<u16, u64>,
    /// Arrivals within the last second, oldest first.
    window: VecDeque<Instant>,
    max_per_sliding_second: u64,
    per_second: VecDeque<(i64, u64)>,
    pub(crate) refused_auth: u64,
    pub(crate) throttled: u64,
    pub(crate) resets: u64,
    pub(crate) faults_applied: u64,
    by_job: HashMap<String, HashMap<String, u64>>,
    pub(crate) app_requests: u64,
    pub(crate) creates: u64,
    pub(crate) created: u64,
    pub(crate) stops: u64,
    by_account: BTreeMap<String, AccountCounters>,
    pub(crate) metadata: crate::metadata::MetadataStats,
}

impl Counters {
    /// Nothing counted yet, counting since `since`.
    pub(crate) fn starting(since: Option<DateTime<Utc>>) -> Counters {
        Counters {
            since,
            ..Counters::default()
        }
    }

    /// One request of the job group at `now`; `job_id` is the job it names (a create names
    /// none, and is not counted in `by_job`).
    pub(crate) fn arrival(
        &mut self,
        now: Instant,
        unix_second: i64,
        app_id: &str,
        job_id: Option<&str>,
    ) {
        self.requests += 1;
        let in_window = slide(&mut self.window, now);
        self.max_per_sliding_second = self.max_per_sliding_second.max(in_window);
        match self.per_second.back_mut() {
            Some((s, n)) if *s == unix_second => *n += 1,
            _ => self.per_second.push_back((unix_second, 1)),
        }
        while self
            .per_second
            .front()
            .is_some_and(|(s, _)| *s <= unix_second - PER_SECOND_KEPT)
        {
            self.per_second.pop_front();
        }
        let Some(job_id) = job_id else {
            return;
        };
        // get_mut first: the common case allocates nothing.
        let app = match self.by_job.get_mut(app_id) {
            Some(app) => app,
            None => self.by_job.entry(app_id.to_string()).or_default(),
        };
        match app.get_mut(job_id) {
            Some(n) => *n += 1,
            None => {
                app.insert(job_id.to_string(), 1);
            }
        }
    }

    /// The account a job-group request arriving at `now` is signed for (`temporary`: with
    /// one of its temporary keys).
    pub(crate) fn account_arrival(&mut self, account: &str, now: Instant, temporary: bool) {
        let counters = match self.by_account.get_mut(account) {
            Some(c) => c,
            None => self.by_account.entry(account.to_string()).or_default(),
        };
        let stats = &mut counters.stats;
        stats.requests += 1;
        stats.temporary += u64::from(temporary);
        let in_window = slide(&mut counters.window, now);
        stats.max_per_sliding_second = stats.max_per_sliding_second.max(in_window);
    }

    /// What the gateway answered a request of `account`'s.
    pub(crate) fn account_verdict(&mut self, account: &str, verdict: &Verdict) {
        let Some(counters) = self.by_account.get_mut(account) else {
            return;
        };
        match verdict {
            Verdict::Pass => {}
            Verdict::Refused(_) => counters.stats.refused_auth += 1,
            Verdict::Throttled(_) => counters.stats.throttled += 1,
        }
    }

    pub(crate) fn status(&mut self, status: StatusCode) {
        *self.by_status.entry(status.as_u16()).or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> SimStats {
        SimStats {
            since: self.since,
            requests: self.requests,
            by_status: self.by_status.clone(),
            max_per_sliding_second: self.max_per_sliding_second,
            per_second: self.per_second.iter().copied().collect(),
            refused_auth: self.refused_auth,
            throttled: self.throttled,
            resets: self.resets,
            faults_applied: self.faults_applied,
            by_job: self
                .by_job
                .iter()
                .map(|(app, jobs)| {
                    (
                        app.clone(),
                        jobs.iter().map(|(j, n)| (j.clone(), *n)).collect(),
                    )
                })
                .collect(),
            app_requests: self.app_requests,
            callbacks: Default::default(),
            creates: self.creates,
            created: self.created,
            stops: self.stops,
            by_account: self
                .by_account
                .iter()
                .map(|(name, c)| (name.clone(), c.stats.clone()))
                .collect(),
            metadata: self.metadata.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_second_counts_table() {
        let ms = Duration::from_millis;
        let cases: [(&str, &[u64], u64); 5] = [
            ("one request", &[0], 1),
            ("spread over seconds", &[0, 1000, 2000, 3000], 1),
            ("a window is shorter than a second", &[0, 100, 900, 1000], 3),
            (
                "a burst straddling two calendar seconds",
                &[900, 950, 1000, 1050, 1100, 1899],
                6,
            ),
            (
                "the most crowded window wins",
                &[0, 10, 20, 1500, 1600, 1700, 1800, 2000, 2600],
                5,
            ),
        ];
        let t0 = Instant::now();
        for (name, arrivals, max) in cases {
            let mut c = Counters::default();
            for a in arrivals {
                c.arrival(t0 + ms(*a), (*a / 1000) as i64, "app", Some("job"));
            }
            let stats = c.snapshot();
            assert_eq!(stats.max_per_sliding_second, max, "{name}");
            assert_eq!(stats.requests, arrivals.len() as u64, "{name}");
            assert_eq!(
                stats.per_second.iter().map(|(_, n)| n).sum::<u64>(),
                arrivals.len() as u64,
                "{name}"
            );
        }
    }

    #[test]
    fn accounts_are_counted_apart() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut c = Counters::default();
        // (account, arrival in ms, temporary)
        let arrivals = [
            ("a", 0, false),
            ("b", 10, false),
            ("a", 500, true),
            ("a", 999, false),
            ("b", 1000, true),
            ("a", 1000, false),
            ("a", 1499, false),
        ];
        for (account, at, temporary) in arrivals {
            c.arrival(t0 + ms(at), 0, "app", Some("job"));
            c.account_arrival(account, t0 + ms(at), temporary);
        }
        c.account_verdict("a", &Verdict::Throttled(Some(3)));
        c.account_verdict(
            "b",
            &Verdict::Refused(crate::gateway::Refusal::bad_key("x")),
        );
        c.account_verdict("b", &Verdict::Pass);
        c.account_verdict("nobody", &Verdict::Pass);
        let stats = c.snapshot();
        assert_eq!(stats.max_per_sliding_second, 5, "all of them");
        let want = |requests, max, refused_auth, throttled, temporary| AccountStats {
            requests,
            max_per_sliding_second: max,
            refused_auth,
            throttled,
            temporary,
        };
        assert_eq!(stats.by_account["a"], want(5, 4, 0, 1, 1));
        assert_eq!(stats.by_account["b"], want(2, 2, 1, 0, 1), "990 ms apart");
        assert_eq!(stats.by_account.len(), 2);
    }

    #[test]
    fn per_second_keeps_ten_minutes() {
        let mut c = Counters::default();
        let t0 = Instant::now();
        c.arrival(t0, 1000, "a", Some("j"));
        c.arrival(t0, 1599, "a", Some("j"));
        assert_eq!(c.snapshot().per_second, vec![(1000, 1), (1599, 1)]);
        c.arrival(t0, 1600, "a", Some("j"));
        assert_eq!(c.snapshot().per_second, vec![(1599, 1), (1600, 1)]);
    }
}
