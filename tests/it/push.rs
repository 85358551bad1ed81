//! Push (issue 11): a record callback is a poll hint for its job, inside the same budget; a
//! job's end is followed by re-polls until it shows STOPPED; `forward_to` relays each event to
//! the user's own receiver through the durable outbox; a job's recorded files are shown.

use crate::harness::*;
use crate::support::receiver::Receiver;
use recwatch_rtc::callback::{HEADER_RAND, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign};
use recwatch_rtc::secret::Secret;
use std::net::SocketAddr;
use std::time::Duration;

pub const APP_KEY: &str = "callback-key-of-the-demo-app-0123456";
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
    set_state(&rig.sim, &job, "STOPPED", Some("INTERNAL_ERROR"));
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

/// A relay receiver on loopback: records each request's headers and raw body, answers 200.
/// It checks nothing itself; the tests verify the signature with the app's key by hand.
/// A request as the relay receiver got it: its headers and raw body.
type Relayed = (axum::http::HeaderMap, Vec<u8>);

pub struct RelayReceiver {
    got: std::sync::Arc<std::sync::Mutex<Vec<Relayed>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl RelayReceiver {
    pub fn serve(listener: tokio::net::TcpListener) -> RelayReceiver {
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = got.clone();
        let app = axum::Router::new().fallback(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push((headers, body.to_vec()));
                    "ok"
                }
            },
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        RelayReceiver { got, _task: task }
    }

    fn bodies(&self) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    async fn wait_for(&self, n: usize) -> Vec<Relayed> {
        wait_for(&format!("{n} relayed events"), T, || async {
            let got = self.got.lock().unwrap().clone();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

/// hex HMAC-SHA256(app key, rand + timestamp + body), computed here, not by recwatch.
fn rtc_signature(rand: &str, ts: &str, body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(APP_KEY.as_bytes()).unwrap();
    mac.update(rand.as_bytes());
    mac.update(ts.as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn header<'a>(h: &'a axum::http::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn forward_to(addr: SocketAddr) -> String {
    format!("forward_to = \"http://{addr}/rtc-callback?token=their-secret-token\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_to_relays_each_event_byte_for_byte_re_signed_and_once() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let relay = RelayReceiver::serve(listener);
    let mut rig = Rig::start(1, "1h", 10, &forward_to(addr), "").await;
    let job = recwatch_sim::job_id(0);
    // Odd spacing and key order, unicode: relayed as received, not re-serialized.
    let first = format!(
        "{{ \"job_id\":\"{job}\",  \"event_type\":\"RECORD_NEW_FILE_START\", \"app_id\":\"demo-app\", \"detail_message\":\"caf\u{e9} \\u00e9\" }}"
    );
    assert_eq!(rig.post("r1", &first).await, 200);
    let got = relay.wait_for(1).await;
    let (headers, body) = &got[0];
    assert_eq!(body, first.as_bytes(), "byte for byte");
    let (rand, ts) = (
        header(headers, "x-rtc-rand"),
        header(headers, "x-rtc-timestamp"),
    );
    assert!(!rand.is_empty() && !ts.is_empty(), "{headers:?}");
    assert_ne!(rand, "r1", "re-signed with a fresh rand");
    assert_eq!(
        header(headers, "x-rtc-signature"),
        rtc_signature(rand, ts, body)
    );
    let id = header(headers, "x-recwatch-forward-id").to_string();
    assert!(!id.is_empty(), "a stable id: {headers:?}");
    // RTC sends the same event again (new signature): stored once, relayed once. A later,
    // different event arriving proves the worker got past the resend.
    assert_eq!(rig.post("r2", &first).await, 200);
    let second = event(&job, "CLOUD_RECORD_SERVER_OVER", "");
    assert_eq!(rig.post("r3", &second).await, 200);
    relay.wait_for(2).await;
    assert_eq!(relay.bodies(), vec![first.clone(), second.clone()]);
    let m = rig.metrics().await;
    assert_eq!(
        metric(&m, "recwatch_forwards_total{outcome=\"sent\"}"),
        2.0,
        "{m}"
    );
    let (code, out, err) = rig.app.run_cmd(&["forwards", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{out}");
    assert_eq!(list[1]["id"].to_string(), id);
    assert_eq!(list[1]["state"], "sent");
    // The receiver's URL carries a token: never in the log.
    assert!(!rig.app.log_text().contains("their-secret-token"));
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_waits_for_its_receiver_across_a_restart() {
    let port = crate::support::ClosedPort::new();
    let addr = port.addr();
    let notify = notify_toml(None, None, "");
    let mut rig = Rig::start(1, "1h", 10, &forward_to(addr), &notify).await;
    let job = recwatch_sim::job_id(0);
    let body = event(
        &job,
        "RECORD_FILE_COMPLETE",
        r#","download_url":"https://obs.example.com/a.mp4""#,
    );
    assert_eq!(rig.post("r1", &body).await, 200);
    // The receiver is down: the forward fails, stays pending, and says why.
    wait_for("a failed attempt", T, || async {
        (rig.app
            .scalar("SELECT attempts FROM forwards WHERE state = 'pending'")
            .await
            >= 1)
            .then_some(())
    })
    .await;
    let (code, out, _) = rig.app.run_cmd(&["forwards", "--pending"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("pending") && out.contains("forward_to request failed"),
        "{out}"
    );
    assert!(!out.contains("their-secret-token"), "{out}");
    let m = rig.metrics().await;
    assert!(
        metric(&m, "recwatch_forwards_total{outcome=\"retry\"}") >= 1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "recwatch_forwards_pending"), 1.0, "{m}");
    // A restart loses nothing: the new run picks the pending forward up and, once the
    // receiver is up, delivers it.
    rig.app.stop().await;
    rig.app.start();
    let relay = RelayReceiver::serve(port.listen());
    let got = relay.wait_for(1).await;
    assert_eq!(got[0].1, body.as_bytes());
    wait_for("the forward marked sent", T, || async {
        (rig.app
            .scalar("SELECT COUNT(*) FROM forwards WHERE state = 'sent'")
            .await
            == 1)
            .then_some(())
    })
    .await;
    assert_eq!(relay.bodies().len(), 1, "delivered once");
    rig.app.stop().await;
}
