//! The scripted jobs: each job's timeline, a pure function of its index and the time since
//! the start (see the crate docs, "The script"), the record a scripted job serves, and churn,
//! the benchmark's random changes.

use crate::simulator::{Inner, Pending, fixed, stopped};
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recwatch_rtc::model::{JobSnapshot, RecordParam, State, StopReason};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// One state change of one job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub app_id: String,
    pub job_id: String,
    pub state: String,
    pub stop_reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// The id of scripted job `index`.
pub fn job_id(index: usize) -> String {
    format!("job-{index:04}")
}

/// Scripted job `index`'s whole life, as offsets from the simulator's start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeline {
    pub running_at: Option<Duration>,
    pub stopped_at: Option<Duration>,
    pub stop_reason: Option<StopReason>,
    pub max_idle_time: u64,
}

/// Scripted job `index`'s timeline for phases of `step` (the table in the crate docs).
pub fn timeline(index: usize, step: Duration) -> Timeline {
    let offset = step * (index % 10) as u32 / 10;
    let running_at = step + offset;
    let stopped_at = running_at + step * 2;
    let (running, stopped, reason) = match index % 6 {
        0 => (true, true, Some(StopReason::InternalError)),
        1 => (true, true, Some(StopReason::ExceedMaxIdleTime)),
        2 => (true, true, Some(StopReason::TenantStop)),
        3 => (true, false, None),
        4 => (false, false, None),
        _ if (index / 6).is_multiple_of(2) => (true, true, None),
        _ => (
            true,
            true,
            Some(StopReason::Other("RECORDER_CRASHED".into())),
        ),
    };
    Timeline {
        running_at: running.then_some(running_at),
        stopped_at: stopped.then_some(stopped_at),
        stop_reason: if stopped { reason } else { None },
        max_idle_time: if index % 6 == 4 { 5 } else { 30 },
    }
}

/// Scripted job `index`'s state and stop reason `elapsed` after the start.
pub fn script_at(index: usize, elapsed: Duration, step: Duration) -> (State, Option<StopReason>) {
    let t = timeline(index, step);
    if t.stopped_at.is_some_and(|at| at <= elapsed) {
        (State::Stopped, t.stop_reason)
    } else if t.running_at.is_some_and(|at| at <= elapsed) {
        (State::Running, None)
    } else {
        (State::Init, None)
    }
}

/// A time as the API writes it: `2006-01-02T15:04:05.075Z`.
pub(crate) fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

pub(crate) fn plus(epoch: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    epoch + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The body of scripted job `index` at `elapsed` after `epoch`.
pub(crate) fn scripted_job(
    app_id: &str,
    index: usize,
    step: Duration,
    epoch: DateTime<Utc>,
    elapsed: Duration,
) -> JobSnapshot {
    let t = timeline(index, step);
    let (state, stop_reason) = script_at(index, elapsed, step);
    let happened = |at: Option<Duration>| at.filter(|at| *at <= elapsed);
    let (running_at, stopped_at) = (happened(t.running_at), happened(t.stopped_at));
    let updated = stopped_at.or(running_at).unwrap_or_default();
    let description = match (&state, &stop_reason) {
        (State::Init, _) => "initialising".to_string(),
        (State::Running, _) => "recording".to_string(),
        (_, Some(reason)) => format!("stopped: {reason}"),
        _ => "stopped".to_string(),
    };
    JobSnapshot {
        job_id: Some(job_id(index)),
        app_id: Some(app_id.to_string()),
        room_id: Some(format!("room-{}", index % 4)),
        user_id: Some(format!("user-{index}")),
        stream_name: Some(format!("stream-{index}")),
        is_record_audio: Some(true),
        video_type: Some("CAMERASTREAM".into()),
        select_stream_type: Some("HD".into()),
        max_idle_time: Some(t.max_idle_time),
        record_param: Some(RecordParam {
            record_rule_id: Some("rule-demo".into()),
            ..RecordParam::default()
        }),
        mix_param: None,
        create_time: Some(fmt_time(epoch)),
        update_time: Some(fmt_time(plus(epoch, updated))),
        start_time: running_at.map(|d| fmt_time(plus(epoch, d))),
        stop_time: stopped_at.map(|d| fmt_time(plus(epoch, d))),
        state: Some(state),
        stop_reason,
        description: Some(description),
    }
}

impl Inner {
    /// One churn step: flip a random scripted-id job between RUNNING and STOPPED, announced
    /// by callbacks like any change (a stop shown `callback_lag` later).
    pub(crate) fn churn_one(&self, rng: &mut StdRng) {
        if self.opts.jobs == 0 {
            return;
        }
        let index = rng.random_range(0..self.opts.jobs);
        let id = job_id(index);
        let now = Instant::now();
        let elapsed = now.duration_since(self.epoch);
        let at = plus(self.epoch_utc, elapsed);
        let mut guard = self.lock();
        let s = &mut *guard;
        s.apply_due(now, self.epoch);
        let Some(mut next) = s.served(self, &self.opts.app_id, &id, elapsed) else {
            return;
        };
        let before = next.state.clone();
        flip(&mut next, fmt_time(at), rng);
        s.announce(self, &self.opts.app_id, &id, before.as_ref(), &next, at);
        let lag = self.opts.callback_lag;
        let lags = !lag.is_zero() && next.state == Some(State::Stopped);
        let change = Change {
            app_id: self.opts.app_id.clone(),
            job_id: id.clone(),
            state: next
                .state
                .as_ref()
                .map(|st| st.as_str().to_string())
                .unwrap_or_default(),
            stop_reason: next.stop_reason.as_ref().map(|r| r.as_str().to_string()),
            at: if lags { plus(at, lag) } else { at },
        };
        s.pending
            .retain(|p| !(p.app_id == self.opts.app_id && p.job_id == id));
        if lags {
            s.pending.push(Pending {
                due: now + lag,
                app_id: self.opts.app_id.clone(),
                job_id: id,
                job: fixed(next),
            });
        } else if let Some(jobs) = s.apps.get_mut(&self.opts.app_id) {
            let previous = jobs.insert(id, fixed(next));
            s.cut_script(previous, elapsed);
        }
        s.changes.push(change);
    }
}

/// A RUNNING job stops (with a random reason), any other starts RUNNING; `now` as the API
/// writes times.
fn flip(next: &mut JobSnapshot, now: String, rng: &mut StdRng) {
    if next.state == Some(State::Running) {
        next.state = Some(State::Stopped);
        next.stop_reason = Some(
            [
                StopReason::InternalError,
                StopReason::ExceedMaxIdleTime,
                StopReason::TenantStop,
            ][rng.random_range(0..3)]
            .clone(),
        );
        next.stop_time = Some(now.clone());
        next.description = Some("stopped".into());
    } else {
        next.state = Some(State::Running);
        next.stop_reason = None;
        next.stop_time = None;
        next.start_time = Some(now.clone());
        next.description = Some("recording".into());
    }
    next.update_time = Some(now);
}

/// Runs churn steps `per_second` times a second until shutdown, seeded by `opts.seed`.
pub(crate) async fn churn(inner: Arc<Inner>, per_second: f64, mut shutdown: watch::Receiver<bool>) {
    let period = Duration::from_secs_f64(1.0 / per_second).max(Duration::from_micros(1));
    let mut ticker = tokio::time::interval(period);
    // Burst: above 1000/s ticks come late, and catching up keeps the average rate.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut rng = StdRng::seed_from_u64(inner.opts.seed);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => inner.churn_one(&mut rng),
            _ = stopped(&mut shutdown) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SimOptions, Simulator, start};
    use recwatch_rtc::sign;
    use tokio::net::TcpListener;

    // For the one test here that asks the API (the HTTP tests' harness is in tests/http).
    async fn spawn(opts: SimOptions) -> Simulator {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        start(listener, opts).await.unwrap()
    }

    async fn get_job_with(c: &reqwest::Client, sim: &Simulator, job_id: &str) -> JobSnapshot {
        let url = format!(
            "{}/v2/apps/{}/individual-stream-jobs/{}",
            sim.url(),
            sign::encode("demo-app"),
            sign::encode(job_id)
        );
        let response = c.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{job_id}");
        response.json().await.unwrap()
    }

    #[test]
    fn script_table() {
        let step = Duration::from_secs(10);
        let s = Duration::from_secs_f64;
        let cases = [
            ("kind 0 starts in INIT", 0, s(0.0), State::Init, None),
            (
                "kind 0 still INIT just before its step",
                0,
                s(9.999),
                State::Init,
                None,
            ),
            (
                "kind 0 RUNNING at the boundary",
                0,
                s(10.0),
                State::Running,
                None,
            ),
            (
                "kind 0 RUNNING for two steps",
                0,
                s(29.999),
                State::Running,
                None,
            ),
            (
                "kind 0 stops with INTERNAL_ERROR",
                0,
                s(30.0),
                State::Stopped,
                Some(StopReason::InternalError),
            ),
            (
                "kind 1 is staggered by a tenth of a step",
                1,
                s(10.5),
                State::Init,
                None,
            ),
            (
                "kind 1 stops idle",
                1,
                s(31.0),
                State::Stopped,
                Some(StopReason::ExceedMaxIdleTime),
            ),
            (
                "kind 2 still RUNNING before its stop",
                2,
                s(31.9),
                State::Running,
                None,
            ),
            (
                "kind 2 stops by the tenant",
                2,
                s(32.0),
                State::Stopped,
                Some(StopReason::TenantStop),
            ),
            ("kind 3 keeps RUNNING", 3, s(3600.0), State::Running, None),
            ("kind 4 never leaves INIT", 4, s(3600.0), State::Init, None),
            (
                "kind 5, even round: no reason",
                5,
                s(3600.0),
                State::Stopped,
                None,
            ),
            (
                "kind 5, odd round: an unknown reason",
                11,
                s(3600.0),
                State::Stopped,
                Some(StopReason::Other("RECORDER_CRASHED".into())),
            ),
            (
                "job 12 is kind 0 staggered by two tenths",
                12,
                s(11.9),
                State::Init,
                None,
            ),
            (
                "job 12 RUNNING after its stagger",
                12,
                s(12.0),
                State::Running,
                None,
            ),
        ];
        for (name, index, elapsed, state, reason) in cases {
            assert_eq!(script_at(index, elapsed, step), (state, reason), "{name}");
        }
    }

    #[test]
    fn script_staggers_changes_and_sets_idle_time() {
        let step = Duration::from_secs(5);
        let starts: std::collections::HashSet<_> = (0..10)
            .filter_map(|i| timeline(i, step).running_at)
            .collect();
        assert_eq!(
            starts.len(),
            9,
            "the 9 jobs that start RUNNING do so at different times"
        );
        assert_eq!(timeline(4, step).max_idle_time, 5);
        assert_eq!(timeline(3, step).max_idle_time, 30);
    }

    // Stays beside the churn step rather than with the HTTP tests in tests/: it takes the
    // crate-private step itself, and then asks the API what it serves.
    /// The test takes the churn steps itself (the churn task would change the job again at
    /// any moment, racing the request), then asks the API after each.
    #[tokio::test]
    async fn churned_state_is_what_the_api_serves() {
        let sim = spawn(SimOptions {
            jobs: 3,
            scripted: false,
            ..SimOptions::default()
        })
        .await;
        // no_proxy: a proxy from the environment must not see loopback traffic.
        let c = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut rng = StdRng::seed_from_u64(11);
        let mut reasons = std::collections::HashSet::new();
        for step in 1..=20 {
            sim.inner.churn_one(&mut rng);
            let changes = sim.changes();
            assert_eq!(changes.len(), step, "one change per churn step");
            let last = changes.last().unwrap();
            let job = get_job_with(&c, &sim, &last.job_id).await;
            assert_eq!(
                (
                    job.state.as_ref().map(State::as_str),
                    job.stop_reason.as_ref().map(|r| r.as_str().to_string())
                ),
                (Some(last.state.as_str()), last.stop_reason.clone()),
                "step {step}"
            );
            assert_eq!(job.update_time, Some(fmt_time(last.at)), "step {step}");
            reasons.extend(last.stop_reason.clone());
        }
        assert!(reasons.len() > 1, "stop reasons vary: {reasons:?}");
    }
}
