//! Record callbacks as RTC sends them: which events a job's change makes and their bodies
//! (pure: [`events_for`], [`event_body`]), signed with the app's registered `auth_key`
//! (recwatch-rtc's `callback::sign`, rtc-api.md "Record callbacks"), and their delivery.
//!
//! Sending never holds up an API answer: a change puts its callbacks on a bounded queue
//! without waiting (a full queue drops the callback and counts it as `overflowed`), and one
//! sender task POSTs them, a bounded number at once. `callback_drop` leaves out a seeded
//! fraction (counted as `dropped`), so a test can prove that polling still catches what push
//! misses. Sent (a 2xx answer) and failed (anything else, or no answer) are counted too, and
//! the last sends are kept ([`SentCallback`]) so a benchmark can measure from the send.
//!
//! Scripted jobs announce their script's changes as they happen (a task walks every job's
//! timeline in time order); `set_job`, churn and the control API announce theirs when made.

use crate::script::{plus, scripted_job, timeline};
use crate::simulator::{Inner, Job, Shared, stopped};
use axum::body::Bytes;
use chrono::{DateTime, Utc};
use rand::Rng;
use recwatch_rtc::Secret;
use recwatch_rtc::callback::{self, EventType, HEADER_RAND, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use recwatch_rtc::model::{JobSnapshot, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, watch};

/// POSTs in flight at once: a slow receiver holds up at most this many, never the API.
const IN_FLIGHT: usize = 32;
/// How long one POST may take before it counts as failed.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Sends kept for [`crate::Simulator::sent_callbacks`], newest last.
const SENT_KEPT: usize = 100_000;

/// What an app has registered with `PUT /v2/apps/{app_id}/record-callback`.
#[derive(Clone)]
pub(crate) struct Registered {
    pub(crate) url: String,
    /// `None`: callbacks go out unsigned, as RTC sends them without an `auth_key`.
    pub(crate) auth_key: Option<Secret>,
    pub(crate) update_time: DateTime<Utc>,
}

/// The callbacks sent, failed, dropped and overflowed since the start or the last reset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackStats {
    /// Put on the queue to be sent.
    pub queued: u64,
    /// Answered with a 2xx.
    pub sent: u64,
    /// Answered with anything else, or not at all within 5 s.
    pub failed: u64,
    /// Left out by `callback_drop`.
    pub dropped: u64,
    /// Left out because the queue was full.
    pub overflowed: u64,
}

/// One callback the sender POSTed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentCallback {
    pub app_id: String,
    pub job_id: String,
    pub event_type: String,
    /// When the POST went out.
    pub sent_at: DateTime<Utc>,
    /// The receiver's status; `None` when no answer came.
    pub status: Option<u16>,
}

/// The events RTC sends when a job goes from `before` (`None`: it did not exist) to
/// `after`: the start of recording when it goes RUNNING, the finished file and the end of
/// the job when it stops after recording, only the end when it stops without having
/// recorded. Nothing for other changes (INIT, STOPPED again, a state RTC does not document).
pub fn events_for(before: Option<&State>, after: Option<&State>) -> Vec<EventType> {
    let was_running = before == Some(&State::Running);
    match after {
        Some(State::Running) if !was_running => vec![EventType::RecordNewFileStart],
        Some(State::Stopped) if was_running => vec![
            EventType::RecordFileComplete,
            EventType::CloudRecordServerOver,
        ],
        Some(State::Stopped) if before != Some(&State::Stopped) => {
            vec![EventType::CloudRecordServerOver]
        }
        _ => Vec::new(),
    }
}

/// A time as the callbacks write it: `YYYY-MM-DDThh:mm:ssZ`.
fn callback_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn api_time(text: Option<&str>) -> Option<DateTime<Utc>> {
    text.and_then(|t| t.parse::<DateTime<Utc>>().ok())
}

/// The body of `event` about `job` (of `app_id`/`job_id`), made at `at`, with the fields the
/// docs list; a `RECORD_FILE_COMPLETE` carries the file that ran from the job's start to
/// `at`. Pure.
pub fn event_body(
    event: &EventType,
    app_id: &str,
    job_id: &str,
    job: &JobSnapshot,
    at: DateTime<Utc>,
) -> Vec<u8> {
    let mut body = json!({
        "event_type": event.as_str(),
        "app_id": app_id,
        "job_id": job_id,
        "room_id": job.room_id,
        "stream_name": job.stream_name,
        "record_format": "MP4",
        "detail_message": match event {
            EventType::RecordNewFileStart => "a new recording file was started",
            EventType::RecordFileComplete => "the recording file is complete",
            _ => "the recording job has ended",
        },
    });
    if *event == EventType::RecordFileComplete {
        let start = api_time(job.start_time.as_deref()).unwrap_or(at).min(at);
        let duration = (at - start).num_seconds().max(0);
        let object = format!("record/{app_id}/{job_id}/{}.mp4", start.timestamp());
        let file = json!({
            "download_url": format!("https://sim-rtc-bucket.obs.cn-north-4.myhuaweicloud.com/{object}"),
            "record_duration": duration,
            // About 2 Mbit/s, an HD camera's stream.
            "file_size": duration * 250_000,
            "width": 1280,
            "height": 720,
            "start_time": callback_time(start),
            "end_time": callback_time(at),
            "obs_location": "https://obs.cn-north-4.myhuaweicloud.com",
            "obs_bucket": "sim-rtc-bucket",
            "obs_object": object,
        });
        if let (Value::Object(b), Value::Object(f)) = (&mut body, file) {
            b.extend(f);
        }
    }
    serde_json::to_vec(&body).expect("a JSON object always serializes")
}

/// One callback on its way.
struct Outgoing {
    url: String,
    auth_key: Option<Secret>,
    body: Bytes,
    rand: String,
    timestamp: String,
    app_id: String,
    job_id: String,
    event_type: EventType,
}

/// The counters and the log of sends, shared by the API side and the sender task.
#[derive(Default)]
pub(crate) struct Tally {
    queued: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    overflowed: AtomicU64,
    log: Mutex<VecDeque<SentCallback>>,
}

impl Tally {
    pub(crate) fn snapshot(&self) -> CallbackStats {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CallbackStats {
            queued: n(&self.queued),
            sent: n(&self.sent),
            failed: n(&self.failed),
            dropped: n(&self.dropped),
            overflowed: n(&self.overflowed),
        }
    }

    pub(crate) fn reset(&self) {
        for c in [
            &self.queued,
            &self.sent,
            &self.failed,
            &self.dropped,
            &self.overflowed,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.log().clear();
    }

    pub(crate) fn log(&self) -> std::sync::MutexGuard<'_, VecDeque<SentCallback>> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, sent: SentCallback) {
        let ok = sent.status.is_some_and(|s| (200..300).contains(&s));
        let counter = if ok { &self.sent } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut log = self.log();
        if log.len() >= SENT_KEPT {
            log.pop_front();
        }
        log.push_back(sent);
    }
}

/// The API side of the queue: where changes put their callbacks.
pub(crate) struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    pub(crate) tally: Arc<Tally>,
}

/// Starts the sender task; the queue holds at most `capacity` callbacks.
pub(crate) fn outbox(capacity: usize, shutdown: watch::Receiver<bool>) -> Outbox {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let tally = Arc::new(Tally::default());
    tokio::spawn(send_loop(rx, tally.clone(), shutdown));
    Outbox { tx, tally }
}

impl Shared {
    /// Puts the callbacks for `job_id`'s change from `before` to `after` (made at `at`) on the
    /// queue, if its app registered a URL. Called under the lock; never waits.
    pub(crate) fn announce(
        &mut self,
        inner: &Inner,
        app_id: &str,
        job_id: &str,
        before: Option<&State>,
        after: &JobSnapshot,
        at: DateTime<Utc>,
    ) {
        let events = events_for(before, after.state.as_ref());
        if events.is_empty() {
            return;
        }
        let Some(registered) = self.registrations.get(app_id) else {
            return;
        };
        let (url, auth_key) = (registered.url.clone(), registered.auth_key.clone());
        let tally = &inner.callbacks.tally;
        for event in events {
            // Drawn for every event, sent or not, so a seed gives the same choices whatever
            // the receiver answers.
            let drop = self.callback_rng.random::<f64>() < inner.opts.callback_drop;
            let rand = self
                .callback_rng
                .random_range(100_000u32..1_000_000)
                .to_string();
            if drop {
                tally.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let outgoing = Outgoing {
                url: url.clone(),
                auth_key: auth_key.clone(),
                body: event_body(&event, app_id, job_id, after, at).into(),
                rand,
                timestamp: at.timestamp().to_string(),
                app_id: app_id.to_string(),
                job_id: job_id.to_string(),
                event_type: event,
            };
            match inner.callbacks.tx.try_send(outgoing) {
                Ok(()) => tally.queued.fetch_add(1, Ordering::Relaxed),
                Err(_) => tally.overflowed.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
}

async fn send_loop(
    mut rx: mpsc::Receiver<Outgoing>,
    tally: Arc<Tally>,
    mut shutdown: watch::Receiver<bool>,
) {
    let http = match reqwest::Client::builder()
        .no_proxy()
        .timeout(SEND_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the simulator cannot send callbacks");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let outgoing = tokio::select! {
            next = rx.recv() => match next {
                Some(o) => o,
                None => break,
            },
            _ = stopped(&mut shutdown) => break,
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (http, tally) = (http.clone(), tally.clone());
        tokio::spawn(async move {
            let sent = post(&http, outgoing).await;
            tally.record(sent);
            drop(permit);
        });
    }
}

async fn post(http: &reqwest::Client, o: Outgoing) -> SentCallback {
    let mut request = http
        .post(&o.url)
        .header("content-type", "application/json")
        .body(o.body.clone());
    if let Some(key) = &o.auth_key {
        let signature = callback::sign(key, &o.rand, &o.timestamp, &o.body);
        request = request
            .header(HEADER_RAND, &o.rand)
            .header(HEADER_TIMESTAMP, &o.timestamp)
            .header(HEADER_SIGNATURE, signature);
    }
    let sent_at = Utc::now();
    let status = match request.send().await {
        Ok(response) => Some(response.status().as_u16()),
        Err(e) => {
            tracing::debug!(url = %o.url, error = %e, "a callback was not answered");
            None
        }
    };
    SentCallback {
        app_id: o.app_id,
        job_id: o.job_id,
        event_type: o.event_type.as_str().to_string(),
        sent_at,
        status,
    }
}

/// When scripted job `index` announces what: its start, and its stop `lag` before the API
/// shows it (never before its start).
fn script_events(jobs: usize, step: Duration, lag: Duration) -> Vec<(Duration, usize, bool)> {
    let mut events = Vec::new();
    for index in 0..jobs {
        let t = timeline(index, step);
        if let Some(at) = t.running_at {
            events.push((at, index, false));
        }
        if let Some(at) = t.stopped_at {
            let floor = t.running_at.unwrap_or_default();
            events.push((at.saturating_sub(lag).max(floor), index, true));
        }
    }
    events.sort();
    events
}

/// Walks every scripted job's timeline and announces each change when it happens, unless
/// the job left its script before then. While the app has no registered URL it waits for one
/// without a timer (RTC sends nothing then, and a test on a paused clock sees no timer of
/// its own move time), and skips the changes made before the registration.
pub(crate) async fn announce_script(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    let opts = &inner.opts;
    let mut registered = inner.registered.subscribe();
    let mut registered_from = Duration::ZERO;
    for (at, index, stop) in script_events(opts.jobs, opts.step, opts.callback_lag) {
        let mut waited = false;
        while !inner.lock().registrations.contains_key(&opts.app_id) {
            waited = true;
            tokio::select! {
                changed = registered.changed() => if changed.is_err() { return },
                _ = stopped(&mut shutdown) => return,
            }
        }
        if waited {
            registered_from = inner.epoch.elapsed();
        }
        if at < registered_from {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(inner.epoch + at) => {}
            _ = stopped(&mut shutdown) => return,
        }
        announce_scripted(&inner, at, index, stop);
    }
}

/// Announces scripted job `index`'s start (or stop) at `at`.
fn announce_scripted(inner: &Inner, at: Duration, index: usize, stop: bool) {
    let opts = &inner.opts;
    let t = timeline(index, opts.step);
    // The record the API shows (or is about to, with a lag) after this change.
    let shown_at = if stop { t.stopped_at.unwrap_or(at) } else { at };
    let after = scripted_job(&opts.app_id, index, opts.step, inner.epoch_utc, shown_at);
    let before = match (stop, t.running_at) {
        (true, Some(_)) => State::Running,
        _ => State::Init,
    };
    let mut guard = inner.lock();
    let s = &mut *guard;
    let id = crate::script::job_id(index);
    let still_scripted = matches!(
        s.apps.get(&opts.app_id).and_then(|jobs| jobs.get(&id)),
        Some(Job::Scripted(_))
    ) && s.script_cut.get(index).is_none_or(|cut| cut.is_none());
    if still_scripted {
        s.announce(
            inner,
            &opts.app_id,
            &id,
            Some(&before),
            &after,
            plus(inner.epoch_utc, at),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_table() {
        use EventType::*;
        let (init, running, stopped) = (
            Some(&State::Init),
            Some(&State::Running),
            Some(&State::Stopped),
        );
        let other = State::Other("PAUSED".into());
        type Case<'a> = (
            &'a str,
            Option<&'a State>,
            Option<&'a State>,
            &'a [EventType],
        );
        let cases: &[Case] = &[
            ("starts recording", init, running, &[RecordNewFileStart]),
            ("appears recording", None, running, &[RecordNewFileStart]),
            (
                "restarts after a stop",
                stopped,
                running,
                &[RecordNewFileStart],
            ),
            ("still recording", running, running, &[]),
            (
                "stops after recording",
                running,
                stopped,
                &[RecordFileComplete, CloudRecordServerOver],
            ),
            (
                "stops before recording",
                init,
                stopped,
                &[CloudRecordServerOver],
            ),
            ("appears stopped", None, stopped, &[CloudRecordServerOver]),
            ("stopped again", stopped, stopped, &[]),
            ("back to INIT", running, init, &[]),
            ("an undocumented state", running, Some(&other), &[]),
            ("no state", running, None, &[]),
        ];
        for (name, before, after, want) in cases {
            assert_eq!(events_for(*before, *after), *want, "{name}");
        }
    }

    #[test]
    fn file_complete_body_carries_the_file() {
        let at: DateTime<Utc> = "2026-11-28T06:01:05Z".parse().unwrap();
        let job = JobSnapshot {
            room_id: Some("room-1".into()),
            stream_name: Some("s_j1".into()),
            start_time: Some("2026-11-28T06:00:00.500Z".into()),
            state: Some(State::Stopped),
            ..Default::default()
        };
        let body = event_body(&EventType::RecordFileComplete, "app", "j1", &job, at);
        // What the receiver reads, through recwatch-rtc's own parser.
        let event = recwatch_rtc::RecordEvent::parse(&body).unwrap();
        assert_eq!(event.event_type, EventType::RecordFileComplete);
        assert_eq!(event.job_id.as_deref(), Some("j1"));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["record_duration"], 64);
        assert_eq!(v["start_time"], "2026-11-28T06:00:00Z");
        assert_eq!(v["end_time"], "2026-11-28T06:01:05Z");
        assert_eq!(v["file_size"], 64 * 250_000);
        assert_eq!(v["room_id"], "room-1");
        assert!(
            v["download_url"]
                .as_str()
                .unwrap()
                .ends_with(v["obs_object"].as_str().unwrap())
        );
        let over = event_body(&EventType::CloudRecordServerOver, "app", "j1", &job, at);
        let v: Value = serde_json::from_slice(&over).unwrap();
        assert_eq!(v["event_type"], "CLOUD_RECORD_SERVER_OVER");
        assert!(v.get("download_url").is_none());
    }

    #[test]
    fn script_events_come_in_time_order_with_stops_moved_by_the_lag() {
        let step = Duration::from_secs(10);
        let events = script_events(12, step, Duration::ZERO);
        assert!(events.windows(2).all(|w| w[0] <= w[1]));
        // Job 0: running at 10 s, stopped at 30 s; job 4 never runs nor stops.
        assert!(events.contains(&(Duration::from_secs(10), 0, false)));
        assert!(events.contains(&(Duration::from_secs(30), 0, true)));
        assert!(!events.iter().any(|e| e.1 == 4));
        let lagged = script_events(12, step, Duration::from_secs(3));
        assert!(lagged.contains(&(Duration::from_secs(27), 0, true)));
        // A lag longer than the run puts the stop's event at the start, never before it.
        let long = script_events(1, step, Duration::from_secs(60));
        assert_eq!(long[1], (Duration::from_secs(10), 0, true));
    }
}
