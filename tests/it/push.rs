//! Push (issue 11): a record callback is a poll hint for its job, inside the same budget; a
//! job's end is followed by re-polls until it shows STOPPED; `forward_to` relays each event to
//! the user's own receiver through the durable outbox; a job's recorded files are shown.

use crate::alerts::{SECRET, notify_toml};
use crate::core::{snap, static_sim};
use crate::harness::*;
use crate::support::receiver::Receiver;
use recwatch_rtc::callback::{HEADER_RAND, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign};
use recwatch_rtc::secret::Secret;
use std::net::SocketAddr;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
pub const APP_KEY: &str = "callback-key-of-the-demo-app";
const PATH: &str = "/rtc/record-callback";

/// A daemon watching `jobs` static jobs of `demo-app`, with the receiver and `/metrics` on
/// port 0; `app_extra` is appended to the `[[apps]]` entry, `extra` to the config.
pub struct Rig {
    pub app: TestApp,
    pub sim: recwatch_sim::Simulator,
    url: String,
    http: SocketAddr,
    client: reqwest::Client,
}

impl Rig {
    pub async fn start(
        jobs: usize,
        interval: &'static str,
        rate_limit: u32,
        app_extra: &str,
        extra: &str,
    ) -> Rig {
        let sim = start_sim(static_sim(jobs)).await;
        let mut config = AppConfig::new(&sim, jobs);
        config.listen = "127.0.0.1:0".into();
        config.interval = interval;
        config.rate_limit = rate_limit;
        config.extra = format!(
            "\n[callback]\nlisten = \"127.0.0.1:0\"\n\n[[apps]]\napp_id = \"demo-app\"\nauth_key = \"{APP_KEY}\"\n{app_extra}\n{extra}"
        );
        let mut app = TestApp::new(&config);
        app.start();
        Rig::attach(app, sim).await
    }

    pub async fn attach(app: TestApp, sim: recwatch_sim::Simulator) -> Rig {
        let addr = app.callback_addr().await;
        let http = app.http_addr().await;
        Rig {
            app,
            sim,
            url: format!("http://{addr}{PATH}"),
            http,
            client: reqwest::Client::new(),
        }
    }

    /// POSTs `body` signed with the app's key, as RTC does; returns the status.
    pub async fn post(&self, rand: &str, body: &str) -> u16 {
        let sig = sign(&Secret::new(APP_KEY), rand, "1700000000", body.as_bytes());
        self.client
            .post(&self.url)
            .header(HEADER_RAND, rand)
            .header(HEADER_TIMESTAMP, "1700000000")
            .header(HEADER_SIGNATURE, sig)
            .body(body.to_string())
            .send()
            .await
            .expect("the receiver answers")
            .status()
            .as_u16()
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("http://{}/metrics", self.http))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("http://{}{path}", self.http))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn wait_polls(&self, job: &str, n: u64) {
        wait_for(&format!("{job} polled {n} times"), T, || async {
            (polls_of(&self.sim, job) >= n).then_some(())
        })
        .await;
    }
}

pub fn event(job_id: &str, event_type: &str, extra: &str) -> String {
    format!(r#"{{"event_type":"{event_type}","app_id":"demo-app","job_id":"{job_id}"{extra}}}"#)
}

/// The value of a counter or gauge line in a Prometheus text, 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_gets_a_job_with_a_long_interval_polled() {
    let mut rig = Rig::start(1, "1h", 10, "", "").await;
    let job = recwatch_sim::job_id(0);
    // Its first poll comes at once; the next by the round would be an hour later.
    rig.wait_polls(&job, 1).await;
    assert_eq!(
        rig.post("r1", &event(&job, "RECORD_NEW_FILE_START", ""))
            .await,
        200
    );
    rig.wait_polls(&job, 2).await;
    let m = rig.metrics().await;
    assert_eq!(
        metric(&m, "recwatch_poll_hints_total{outcome=\"taken\"}"),
        1.0,
        "{m}"
    );
    assert!(m.contains("# HELP recwatch_poll_hints_total"), "{m}");
    // A hint for a job nobody watches polls nothing (it is kept a few seconds, then let go).
    assert_eq!(
        rig.post("r2", &event("job-unwatched", "RECORD_NEW_FILE_START", ""))
            .await,
        200
    );
    wait_for("the unwatched job's hint to be let go", T, || async {
        (metric(
            &rig.metrics().await,
            "recwatch_poll_hints_total{outcome=\"ignored\"}",
        ) >= 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(polls_of(&rig.sim, "job-unwatched"), 0);
    rig.app.stop().await;
}

/// Half the jobs get a callback storm (far more hints than the budget); the other half must
/// still be polled by the round, and the whole stays within `rate_limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_storm_stays_within_the_budget_and_the_round_goes_on() {
    let rate = 4;
    let jobs = 24;
    let mut rig = Rig::start(jobs, "1s", rate, "", "").await;
    let ids: Vec<String> = (0..jobs).map(recwatch_sim::job_id).collect();
    let (stormed, quiet) = ids.split_at(jobs / 2);
    rig.wait_polls(&ids[jobs - 1], 1).await;
    rig.sim.reset_stats();
    let before: Vec<u64> = quiet.iter().map(|j| polls_of(&rig.sim, j)).collect();
    assert!(before.iter().all(|n| *n == 0), "stats were reset");
    // Events with distinct bodies (each stored), for every stormed job, until the test ends.
    let storm = {
        let url = rig.url.clone();
        let stormed = stormed.to_vec();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for n in 0u64.. {
                for j in &stormed {
                    let body = event(
                        j,
                        "RECORD_NEW_FILE_START",
                        &format!(r#","detail_message":"{n}""#),
                    );
                    let rand = format!("{j}-{n}");
                    let sig = sign(&Secret::new(APP_KEY), &rand, "1700000000", body.as_bytes());
                    let _ = client
                        .post(&url)
                        .header(HEADER_RAND, rand)
                        .header(HEADER_TIMESTAMP, "1700000000")
                        .header(HEADER_SIGNATURE, sig)
                        .body(body)
                        .send()
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    // The storm is on: hinted polls happen...
    wait_for("hinted polls", T, || async {
        (metric(
            &rig.metrics().await,
            "recwatch_poll_hints_total{outcome=\"taken\"}",
        ) >= 10.0)
            .then_some(())
    })
    .await;
    // ...and every quiet job is still polled by the round, twice.
    for j in quiet {
        rig.wait_polls(j, 2).await;
    }
    storm.abort();
    assert_within_budget(&rig.sim.stats(), rate as u64, "under a callback storm");
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_over_is_followed_by_polls_until_the_job_shows_stopped() {
    let hook = Receiver::start(Some(SECRET)).await;
    let notify = notify_toml(Some(hook.url().as_str()), None, "");
    let mut rig = Rig::start(1, "1h", 10, "", &notify).await;
    let job = recwatch_sim::job_id(0);
    rig.wait_polls(&job, 1).await;
    assert_eq!(
        rig.post("r1", &event(&job, "CLOUD_RECORD_SERVER_OVER", ""))
            .await,
        200
    );
    // The hinted poll right after the event still sees RUNNING (the API lags)...
    rig.wait_polls(&job, 2).await;
    assert_eq!(
        rig.app.job_row(&job).await.unwrap().0.as_deref(),
        Some("RUNNING")
    );
    // ...then the API catches up, and a re-poll sees it, long before the hour is over.
    rig.sim.set_job(
        "demo-app",
        &job,
        snap(&job, "STOPPED", Some("INTERNAL_ERROR")),
    );
    wait_for("the stop to be recorded", T, || async {
        (rig.app.job_row(&job).await?.0.as_deref() == Some("STOPPED")).then_some(())
    })
    .await;
    let alerts = hook.wait_for(1, T).await;
    assert_eq!(alerts[0].alert.rule.as_str(), "stopped_unexpectedly");
    assert_eq!(
        alerts[0].alert.job.as_ref().map(|j| j.job_id.clone()),
        Some(job.clone())
    );
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_recorded_files_show_in_history_and_its_api_record() {
    let mut rig = Rig::start(2, "1h", 10, "", "").await;
    let job = recwatch_sim::job_id(0);
    rig.wait_polls(&job, 1).await;
    let url = "https://obs.example.com/rec/1.mp4?AccessKeyId=AK&Signature=s%2Fig&Expires=1";
    let file = event(
        &job,
        "RECORD_FILE_COMPLETE",
        &format!(
            r#","record_format":"MP4","download_url":"{url}","record_duration":61,"file_size":123456,"obs_bucket":"bucket","obs_object":"rec/1.mp4","start_time":"2026-01-01T00:00:00Z","end_time":"2026-01-01T00:01:01Z""#
        ),
    );
    assert_eq!(rig.post("r1", &file).await, 200);
    // Another job's file is not this job's.
    let other = event(
        &recwatch_sim::job_id(1),
        "RECORD_FILE_COMPLETE",
        r#","download_url":"https://obs.example.com/other.mp4""#,
    );
    assert_eq!(rig.post("r2", &other).await, 200);

    let (code, out, err) = rig.app.run_cmd(&["history", "--job", &job]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("recorded files:"), "{out}");
    assert!(out.contains(url), "the download URL whole: {out}");
    assert!(out.contains("bucket/rec/1.mp4"), "{out}");
    assert!(!out.contains("other.mp4"), "{out}");

    let (code, out, err) = rig.app.run_cmd(&["history", "--files", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let files: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(files.as_array().map(Vec::len), Some(2), "{out}");
    assert_eq!(files[1]["download_url"], url, "newest first: {out}");
    assert_eq!(files[1]["record_duration"], 61);
    assert_eq!(files[1]["file_size"], 123456);

    let (code, body) = rig.get(&format!("/api/v1/jobs/demo-app/{job}")).await;
    assert_eq!(code, 200, "{body}");
    let record: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(record["job_id"], job.as_str());
    assert_eq!(record["state"], "RUNNING");
    assert_eq!(record["files"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(record["files"][0]["download_url"], url);
    assert_eq!(record["files"][0]["obs_object"], "rec/1.mp4");
    assert_eq!(record["files"][0]["end_time"], "2026-01-01T00:01:01Z");
    let (code, body) = rig.get("/api/v1/jobs/demo-app/not-watched").await;
    assert_eq!(code, 404, "{body}");
    // The URL may carry a signature: it is shown to the user, never written to the log.
    assert!(!rig.app.log_text().contains("Signature=s%2Fig"));
    rig.app.stop().await;
}
