//! The demo's second region (issue 25): the simulator serves a second account with its own
//! keys, project and 10 requests/s, recwatch polls its jobs with that account's own poller,
//! and act 4 takes its key away: that region alone goes blind (one api_unhealthy naming it),
//! the first goes on; the key comes back and the alert resolves.

use crate::config::{ApiConfig, Auth, Config, JobConfig};
use crate::secret::Secret;
use recwatch_rtc::State;
use recwatch_sim::{SimAccount, SimOptions, Simulator};
use std::sync::Arc;
use std::time::Duration;

/// The first region's name (the simulator's default account).
pub(super) const FIRST: &str = "cn-north-4";
/// The second region: its account at the simulator, and in recwatch.
pub(super) const SECOND: &str = "ap-southeast-1";
const SECOND_AK: &str = "DEMOACCESSKEYSEA0002";
const SECOND_SK: &str = "demo-secret-key-of-the-second-region";
const SECOND_PROJECT: &str = "demo-project-sea";
/// The second region's jobs.
const JOBS: [&str; 2] = ["sea-0000", "sea-0001"];

/// The simulator's second account.
pub(super) fn add_account(opts: &mut SimOptions) {
    opts.accounts.push(SimAccount::new(
        SECOND,
        SECOND_AK,
        SECOND_SK,
        SECOND_PROJECT,
    ));
}

/// The second region's jobs, recording from the start.
pub(super) fn add_jobs(sim: &Simulator) {
    for job in JOBS {
        sim.set_job("demo-app", job, super::demo_job(job, State::Running));
    }
}

/// The configuration's two accounts (`config.api` is the first, renamed) and the second's
/// jobs. Its `auth_backoff` is short so the demo sees the key come back: only against a
/// simulator (the real gateway locks a key for 5 minutes).
pub(super) fn configure(config: &mut Config, step: Duration) {
    config.api.name = FIRST.into();
    let mut second: ApiConfig = config.api.clone();
    second.name = SECOND.into();
    second.project_id = Some(SECOND_PROJECT.into());
    second.auth = Auth::AkSk {
        access_key: SECOND_AK.into(),
        secret_key: Secret::new(SECOND_SK),
        security_token: None,
    }
    .into();
    second.auth_backoff = step * 2;
    second.allow_short_auth_backoff = true;
    config.accounts = vec![config.api.clone(), second];
    let account = Arc::new(SECOND.to_string());
    for (i, job) in JOBS.iter().enumerate() {
        config.jobs.push(Arc::new(JobConfig {
            account: Some(account.clone()),
            kind: crate::domain::JobKind::Individual,
            key: crate::domain::JobKey::new("demo-app", *job),
            name: Some(format!("sea-camera-{i:02}")),
            interval: None,
            notify: None,
        }));
    }
}

/// Act 4: the second region's key is revoked.
pub(super) fn lose_key(sim: &Simulator) -> String {
    sim.revoke_key(SECOND);
    format!(
        "-- act 4: two regions. {SECOND}'s access key is revoked at its gateway: its poller stops after 3 refusals (so the key is not locked) and raises one api_unhealthy naming {SECOND}; {FIRST}'s jobs are polled on, each region within its own 10 requests/s --"
    )
}

/// Act 4 ends: the key is back.
pub(super) fn restore_key(sim: &Simulator) -> String {
    sim.restore_key(SECOND);
    format!(
        "-- {SECOND}'s key is restored: after its auth_backoff one request probes it, and api_unhealthy of {SECOND} resolves --"
    )
}

/// `(account, most requests in any sliding second)` for each region, at the simulator.
pub(super) fn peaks(sim: &Simulator) -> Vec<(String, u64)> {
    let stats = sim.stats();
    let mut peaks: Vec<(String, u64)> = stats
        .by_account
        .iter()
        .map(|(name, a)| {
            let name = match name.as_str() {
                recwatch_sim::DEFAULT_ACCOUNT => FIRST.to_string(),
                other => other.to_string(),
            };
            (name, a.max_per_sliding_second)
        })
        .collect();
    peaks.sort();
    peaks
}
