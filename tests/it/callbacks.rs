//! The record-callback receiver as RTC (and an attacker) would use it: signed events are
//! stored once, everything else is refused with its status, counted, and leaves nothing in
//! the database.

use crate::harness::*;
use recwatch_rtc::callback::{HEADER_RAND, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign};
use recwatch_rtc::secret::Secret;
use sqlx::Row;
use std::net::SocketAddr;

const KEY_A: &str = "callback-key-of-app-a-0123456789ab";
const KEY_B: &str = "callback-key-of-app-b-0123456789ab";
const PATH: &str = "/rtc/record-callback";

/// A daemon with the receiver on port 0, two apps (`app-a`, `app-b`) and `/metrics` on port 0.
struct Rig {
    app: TestApp,
    _sim: recwatch_sim::Simulator,
    url: String,
    http: SocketAddr,
    client: reqwest::Client,
}

impl Rig {
    async fn start() -> Rig {
        let sim = start_sim(signed_sim(1)).await;
        let mut config = AppConfig::new(&sim, 1);
        config.listen = "127.0.0.1:0".into();
        config.extra = format!(
            "\n[callback]\nlisten = \"127.0.0.1:0\"\n\n[[apps]]\napp_id = \"app-a\"\nauth_key = \"{KEY_A}\"\n\n[[apps]]\napp_id = \"app-b\"\nauth_key = \"{KEY_B}\"\n"
        );
        let mut app = TestApp::new(&config);
        app.start();
        let addr = app.callback_addr().await;
        let http = app.http_addr().await;
        Rig {
            app,
            _sim: sim,
            url: format!("http://{addr}{PATH}"),
            http,
            client: reqwest::Client::new(),
        }
    }

    /// POSTs `body` signed with `key` (rand and timestamp make each signature distinct).
    async fn post_signed(&self, key: &str, rand: &str, body: &str) -> u16 {
        let sig = sign(&Secret::new(key), rand, "1700000000", body.as_bytes());
        self.post(body, Some((rand, &sig))).await
    }

    async fn post(&self, body: &str, signed: Option<(&str, &str)>) -> u16 {
        let mut req = self.client.post(&self.url).body(body.to_string());
        if let Some((rand, sig)) = signed {
            req = req
                .header(HEADER_RAND, rand)
                .header(HEADER_TIMESTAMP, "1700000000")
                .header(HEADER_SIGNATURE, sig);
        }
        req.send()
            .await
            .expect("the receiver answers")
            .status()
            .as_u16()
    }

    /// Every stored event as (app_id, job_id, event_type).
    async fn events(&self) -> Vec<(String, Option<String>, String)> {
        let db = self.app.db().await.expect("the database exists");
        sqlx::query("SELECT app_id, job_id, event_type FROM callback_events ORDER BY id")
            .fetch_all(&db)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    async fn metrics(&self) -> String {
        self.client
            .get(format!("http://{}/metrics", self.http))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn event(app_id: &str, job_id: &str, event_type: &str) -> String {
    format!(r#"{{"event_type":"{event_type}","app_id":"{app_id}","job_id":"{job_id}"}}"#)
}

#[tokio::test]
async fn a_signed_event_is_stored_with_its_file() {
    let mut rig = Rig::start().await;
    let body = r#"{"event_type":"RECORD_FILE_COMPLETE","app_id":"app-a","job_id":"job-1","download_url":"https://obs.example.com/rec/1.mp4","record_duration":61,"file_size":"123456","obs_object":"rec/1.mp4"}"#;
    assert_eq!(rig.post_signed(KEY_A, "r1", body).await, 200);
    // An event without app_id: the key that verified it says which app sent it.
    let bare = r#"{"event_type":"CLOUD_RECORD_SERVER_OVER","job_id":"job-2"}"#;
    assert_eq!(rig.post_signed(KEY_B, "r2", bare).await, 200);
    let db = rig.app.db().await.unwrap();
    let row = sqlx::query(
        "SELECT app_id, job_id, event_type, download_url, record_duration, file_size, obs_object
         FROM callback_events WHERE job_id = 'job-1'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>(0), "app-a");
    assert_eq!(row.get::<String, _>(2), "RECORD_FILE_COMPLETE");
    assert_eq!(
        row.get::<Option<String>, _>(3).as_deref(),
        Some("https://obs.example.com/rec/1.mp4")
    );
    assert_eq!(row.get::<Option<i64>, _>(4), Some(61));
    assert_eq!(row.get::<Option<i64>, _>(5), Some(123456));
    assert_eq!(
        row.get::<Option<String>, _>(6).as_deref(),
        Some("rec/1.mp4")
    );
    assert_eq!(
        rig.events().await[1],
        (
            "app-b".to_string(),
            Some("job-2".to_string()),
            "CLOUD_RECORD_SERVER_OVER".to_string()
        )
    );
    assert!(
        rig.metrics()
            .await
            .contains("recwatch_callbacks_total{result=\"stored\"} 2")
    );
    rig.app.stop().await;
}

#[tokio::test]
async fn forged_unsigned_and_wrong_key_callbacks_get_401_and_store_nothing() {
    let mut rig = Rig::start().await;
    let body = event("app-a", "job-1", "RECORD_NEW_FILE_START");
    // No signature headers at all.
    assert_eq!(rig.post(&body, None).await, 401);
    // A well-formed signature that no configured key made.
    assert_eq!(
        rig.post_signed("not-a-configured-key", "r1", &body).await,
        401
    );
    // Signed with app-a's key, then the body altered.
    let sig = sign(&Secret::new(KEY_A), "r2", "1700000000", body.as_bytes());
    let altered = event("app-a", "job-9", "RECORD_NEW_FILE_START");
    assert_eq!(rig.post(&altered, Some(("r2", &sig))).await, 401);
    // Not hex at all.
    assert_eq!(rig.post(&body, Some(("r3", "zz"))).await, 401);
    // Another path on the receiver is not the callback.
    let other = rig.url.replace(PATH, "/other");
    let status = rig
        .client
        .post(other)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(status.status().as_u16(), 404);
    // The receiver got past every refusal: a good one is stored, and only it.
    assert_eq!(rig.post_signed(KEY_A, "r4", &body).await, 200);
    assert_eq!(rig.events().await.len(), 1);
    let metrics = rig.metrics().await;
    assert!(
        metrics.contains("recwatch_callbacks_total{result=\"unsigned\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("recwatch_callbacks_total{result=\"forged\"} 3"),
        "{metrics}"
    );
    let log = rig.app.log_text();
    assert!(log.contains("callback refused"), "{log}");
    for key in [KEY_A, KEY_B] {
        assert!(!log.contains(key), "a key in the log");
    }
    rig.app.stop().await;
}

#[tokio::test]
async fn a_body_naming_another_or_unknown_app_gets_404() {
    let mut rig = Rig::start().await;
    // Signed with app-a's key but naming app-b: a key holder cannot speak for another app.
    let other = event("app-b", "job-1", "RECORD_NEW_FILE_START");
    assert_eq!(rig.post_signed(KEY_A, "r1", &other).await, 404);
    let unknown = event("app-zzz", "job-1", "RECORD_NEW_FILE_START");
    assert_eq!(rig.post_signed(KEY_A, "r2", &unknown).await, 404);
    let good = event("app-b", "job-1", "RECORD_NEW_FILE_START");
    assert_eq!(rig.post_signed(KEY_B, "r3", &good).await, 200);
    assert_eq!(rig.events().await.len(), 1);
    assert!(
        rig.metrics()
            .await
            .contains("recwatch_callbacks_total{result=\"unknown_app\"} 2")
    );
    rig.app.stop().await;
}

#[tokio::test]
async fn oversized_and_malformed_bodies_are_refused() {
    let mut rig = Rig::start().await;
    let huge = format!(
        r#"{{"event_type":"RECORD_NEW_FILE_START","job_id":"j","detail_message":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    assert_eq!(rig.post_signed(KEY_A, "r1", &huge).await, 413);
    assert_eq!(rig.post_signed(KEY_A, "r2", "{not json").await, 400);
    assert_eq!(rig.post_signed(KEY_A, "r3", "[1,2]").await, 400);
    // A record event must name its job.
    assert_eq!(
        rig.post_signed(KEY_A, "r4", r#"{"event_type":"RECORD_FILE_COMPLETE"}"#)
            .await,
        400
    );
    assert_eq!(
        rig.post_signed(
            KEY_A,
            "r5",
            r#"{"event_type":"RECORD_FILE_COMPLETE","job_id":".."}"#
        )
        .await,
        400
    );
    let good = event("app-a", "job-1", "RECORD_NEW_FILE_START");
    assert_eq!(rig.post_signed(KEY_A, "r6", &good).await, 200);
    assert_eq!(rig.events().await.len(), 1);
    let metrics = rig.metrics().await;
    assert!(
        metrics.contains("recwatch_callbacks_total{result=\"too_large\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("recwatch_callbacks_total{result=\"malformed\"} 4"),
        "{metrics}"
    );
    rig.app.stop().await;
}

#[tokio::test]
async fn a_replay_and_a_resend_are_answered_200_and_stored_once() {
    let mut rig = Rig::start().await;
    let body = event("app-a", "job-1", "CLOUD_RECORD_SERVER_OVER");
    let sig = sign(&Secret::new(KEY_A), "r1", "1700000000", body.as_bytes());
    assert_eq!(rig.post(&body, Some(("r1", &sig))).await, 200);
    // The very same request again (a replay), in upper-case hex too.
    assert_eq!(rig.post(&body, Some(("r1", &sig))).await, 200);
    assert_eq!(
        rig.post(&body, Some(("r1", &sig.to_uppercase()))).await,
        200
    );
    // RTC sending the event again: a new signature over the same body.
    assert_eq!(rig.post_signed(KEY_A, "r2", &body).await, 200);
    assert_eq!(rig.events().await.len(), 1);
    let metrics = rig.metrics().await;
    assert!(
        metrics.contains("recwatch_callbacks_total{result=\"replay\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("recwatch_callbacks_total{result=\"duplicate\"} 1"),
        "{metrics}"
    );
    rig.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_take_the_event_gets_503_and_rtc_may_send_it_again() {
    let mut rig = Rig::start().await;
    let body = event("app-a", "job-1", "RECORD_FILE_COMPLETE");
    let sig = sign(&Secret::new(KEY_A), "r1", "1700000000", body.as_bytes());
    let holder = crate::faults::LockHolder::take(&rig.app.db_path).await;
    // The write lock is held past the busy timeout: the event cannot be stored.
    assert_eq!(rig.post(&body, Some(("r1", &sig))).await, 503);
    holder.release().await;
    // The same request again is not a replay (nothing was stored): it is stored now.
    assert_eq!(rig.post(&body, Some(("r1", &sig))).await, 200);
    assert_eq!(rig.events().await.len(), 1);
    let metrics = rig.metrics().await;
    assert!(
        metrics.contains("recwatch_callbacks_total{result=\"unavailable\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("recwatch_callbacks_total{result=\"stored\"} 1"),
        "{metrics}"
    );
    rig.app.stop().await;
}

/// The receiver faces the internet: a client that opens connections and never finishes a
/// request is cut off by the header-read timeout (the HTTP endpoint's serving loop), and
/// signed events are stored meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_a_request_are_closed_and_events_still_land() {
    use tokio::io::AsyncWriteExt;
    let mut rig = Rig::start().await;
    let addr = rig.app.callback_addr().await;
    let partial = format!("POST {PATH} HTTP/1.1\r\nHost: recwatch\r\n");
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(partial.as_bytes()).await.unwrap();
        idle.push(s);
    }
    let body = event("app-a", "job-9", "RECORD_NEW_FILE_START");
    assert_eq!(rig.post_signed(KEY_A, "half-open", &body).await, 200);
    assert_eq!(crate::endpoint::all_closed_by_server(idle).await, 20);
    assert_eq!(rig.events().await.len(), 1);
    rig.app.stop().await;
}
