//! The run-time watch list: jobs added and removed through the API (bearer token), the command
//! line (with and without a running daemon) and discovery by record callbacks; each is polled,
//! survives a restart and says where it came from (`source`). Bad input is refused with a clear
//! answer and leaves nothing in the database.

use crate::harness::*;
use recwatch_rtc::callback::{HEADER_RAND, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign};
use recwatch_rtc::secret::Secret;
use recwatch_sim::{Simulator, job_id};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

const TOKEN: &str = "test-api-token-0123456789";

/// A daemon watching job 0 of the simulator's 4 from its config file, with the HTTP endpoint
/// on port 0 and `extra` appended (inside `[http]` first: start it with `token = ...`).
async fn daemon(extra: &str) -> (TestApp, Simulator, SocketAddr) {
    let sim = start_sim(signed_sim(4)).await;
    let mut config = AppConfig::new(&sim, 1);
    config.listen = "127.0.0.1:0".into();
    config.extra = extra.to_string();
    let mut app = TestApp::new(&config);
    app.start();
    let addr = app.http_addr().await;
    (app, sim, addr)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn post(addr: SocketAddr, token: Option<&str>, body: &str) -> (u16, String) {
    let mut req = client()
        .post(format!("http://{addr}/api/v1/jobs"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn delete(addr: SocketAddr, token: Option<&str>, path: &str) -> (u16, String) {
    let mut req = client().delete(format!("http://{addr}/api/v1/jobs/{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `/api/v1/jobs` (one page of 1,000) as JSON items.
async fn api_jobs(addr: SocketAddr) -> Vec<Value> {
    let body: Value = client()
        .get(format!("http://{addr}/api/v1/jobs?limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["items"].as_array().unwrap().clone()
}

/// The `/api/v1/jobs` item of `job`, if it is watched.
async fn api_job(addr: SocketAddr, job: &str) -> Option<Value> {
    api_jobs(addr)
        .await
        .into_iter()
        .find(|j| j["job_id"] == job)
}

/// `status --json`'s row of `job`.
async fn status_row(app: &TestApp, job: &str) -> Option<Value> {
    let (code, out, err) = app.run_cmd(&["status", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    rows.into_iter().find(|r| r["job_id"] == job)
}

/// Waits until the daemon has polled `job` (the simulator saw it and its row has a state).
async fn wait_polled(app: &TestApp, sim: &Simulator, job: &str) {
    wait_for(&format!("{job} to be polled"), T, || async {
        (polls_of(sim, job) > 0 && app.job_row(job).await.is_some_and(|r| r.0.is_some()))
            .then_some(())
    })
    .await;
}

async fn watchlist_rows(app: &TestApp) -> i64 {
    app.scalar("SELECT COUNT(*) FROM watchlist").await
}

#[tokio::test]
async fn api_adds_lists_and_removes_jobs_and_refuses_bad_input() {
    let (app, sim, addr) = daemon(&format!("token = \"{TOKEN}\"\n")).await;
    let tok = Some(TOKEN);
    let new = job_id(1);

    let body = json!({"app_id": "demo-app", "job_id": new, "name": "lobby"}).to_string();
    let (code, text) = post(addr, tok, &body).await;
    assert_eq!(code, 201, "{text}");
    let added: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(added["source"], "api");
    assert_eq!(added["name"], "lobby");
    wait_polled(&app, &sim, &new).await;
    let item = api_job(addr, &new).await.expect("listed");
    assert_eq!(item["source"], "api");
    assert_eq!(item["name"], "lobby");
    assert_eq!(api_job(addr, &job_id(0)).await.unwrap()["source"], "config");

    // Already watched: 200, whether by the run-time list or by the config file.
    let (code, text) = post(addr, tok, &body).await;
    assert_eq!(code, 200, "{text}");
    let (code, text) = post(
        addr,
        tok,
        &json!({"app_id": "demo-app", "job_id": job_id(0)}).to_string(),
    )
    .await;
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("\"source\":\"config\""), "{text}");

    // The config file's job cannot be removed here.
    let (code, text) = delete(addr, tok, &format!("demo-app/{}", job_id(0))).await;
    assert_eq!(code, 409, "{text}");
    assert!(text.contains("edit the file"), "{text}");

    // Bad input: 400 with the reason, nothing stored.
    let long = "x".repeat(200);
    let bad_bodies: [(&str, String, &str); 9] = [
        ("not JSON", "{\"app_id\": ".into(), "not a job"),
        (
            "a field missing",
            json!({"app_id": "demo-app"}).to_string(),
            "job_id",
        ),
        (
            "dot",
            json!({"app_id": "demo-app", "job_id": "."}).to_string(),
            "not an id",
        ),
        (
            "dot dot",
            json!({"app_id": "..", "job_id": "j"}).to_string(),
            "not an id",
        ),
        (
            "a slash",
            json!({"app_id": "demo-app", "job_id": "a/b"}).to_string(),
            "'/'",
        ),
        (
            "a control character",
            json!({"app_id": "demo-app", "job_id": "a\u{1}b"}).to_string(),
            "control character",
        ),
        (
            "empty",
            json!({"app_id": "demo-app", "job_id": ""}).to_string(),
            "empty",
        ),
        (
            "over long",
            json!({"app_id": "demo-app", "job_id": long}).to_string(),
            "over the 128",
        ),
        (
            "unknown channels",
            json!({"app_id": "demo-app", "job_id": "j", "notify": ["pager", "chat"]}).to_string(),
            "[\"pager\", \"chat\"]",
        ),
    ];
    for (name, body, why) in &bad_bodies {
        let (code, text) = post(addr, tok, body).await;
        assert_eq!(code, 400, "{name}: {text}");
        assert!(text.contains(why), "{name}: {text}");
    }
    for (path, why) in [
        ("demo-app/a%01b", "control character"),
        ("demo-app/a%2Fb", "'/'"),
    ] {
        let (code, text) = delete(addr, tok, path).await;
        assert_eq!(code, 400, "{path}: {text}");
        assert!(text.contains(why), "{path}: {text}");
    }
    assert_eq!(watchlist_rows(&app).await, 1, "only the good job is stored");
    let log = app.log_text();
    assert!(log.contains("API write refused"), "refusals are logged");
    let metrics = client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("recwatch_api_writes_total{result=\"bad_request\"} 11"),
        "{metrics}"
    );

    // Removed: gone from the list, the database and the API; again is 404.
    let (code, text) = delete(addr, tok, &format!("demo-app/{new}")).await;
    assert_eq!(code, 200, "{text}");
    assert!(api_job(addr, &new).await.is_none());
    assert_eq!(watchlist_rows(&app).await, 0);
    let (code, _) = delete(addr, tok, &format!("demo-app/{new}")).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn writes_need_the_token_and_without_one_are_forbidden() {
    // A read token too: it is not a write token, and writes do not need it.
    let (app, _sim, addr) = daemon(&format!(
        "token = \"{TOKEN}\"\nread_token = \"reader-token-0123\"\n"
    ))
    .await;
    let body = json!({"app_id": "demo-app", "job_id": job_id(1)}).to_string();
    for token in [None, Some("wrong-token"), Some("reader-token-0123")] {
        let (code, text) = post(addr, token, &body).await;
        assert_eq!(code, 401, "{token:?}: {text}");
        let (code, _) = delete(addr, token, &format!("demo-app/{}", job_id(0))).await;
        assert_eq!(code, 401, "{token:?}");
    }
    assert_eq!(watchlist_rows(&app).await, 0);
    let (code, text) = post(addr, Some(TOKEN), &body).await;
    assert_eq!(code, 201, "the write token alone is enough: {text}");
    assert_eq!(watchlist_rows(&app).await, 1);
    assert!(
        !app.log_text().contains(TOKEN),
        "the token never reaches the log"
    );
    drop(app);

    let (app, _sim, addr) = daemon("").await;
    let (code, text) = post(addr, Some(TOKEN), &body).await;
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("[http] token"), "says how to set one: {text}");
    let (code, _) = delete(addr, Some(TOKEN), &format!("demo-app/{}", job_id(1))).await;
    assert_eq!(code, 403);
    assert_eq!(watchlist_rows(&app).await, 0);
}

#[tokio::test]
async fn cli_watch_while_the_daemon_runs_is_polled_and_unwatch_stops_it() {
    let (app, sim, addr) = daemon("").await;
    app.wait_running(1).await;
    let new = job_id(2);
    let (code, out, err) = app
        .run_cmd(&["watch", "demo-app", &new, "--name", "side door"])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("watching demo-app/{new}")), "{out}");
    wait_polled(&app, &sim, &new).await;
    let row = status_row(&app, &new).await.expect("in status");
    assert_eq!(row["source"], "cli");
    assert_eq!(row["name"], "side door");
    assert_eq!(
        status_row(&app, &job_id(0)).await.unwrap()["source"],
        "config"
    );
    let (_, table, _) = app.run_cmd(&["status"]).await;
    assert!(table.contains("SOURCE"), "{table}");

    // Again: nothing changes, said so.
    let (code, out, _) = app.run_cmd(&["watch", "demo-app", &new]).await;
    assert_eq!(code, 0);
    assert!(out.contains("already watched"), "{out}");

    // The config file's job: refused with the fix.
    let (code, _, err) = app.run_cmd(&["unwatch", "demo-app", &job_id(0)]).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("edit the file"), "{err}");

    // Bad ids and channels: 64, nothing stored.
    for args in [
        &["watch", "demo-app", ".."][..],
        &["watch", "demo-app", "a/b"],
        &["watch", "demo-app", "j", "--notify", "pager"],
    ] {
        let (code, _, err) = app.run_cmd(args).await;
        assert_eq!(code, 64, "{args:?}: {err}");
        assert!(err.contains("cannot watch"), "{args:?}: {err}");
    }
    assert_eq!(watchlist_rows(&app).await, 1);

    let (code, out, err) = app.run_cmd(&["unwatch", "demo-app", &new]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stopped watching"), "{out}");
    wait_for("the daemon to drop the job from its list", T, || async {
        api_job(addr, &new).await.is_none().then_some(())
    })
    .await;
    let (code, _, err) = app.run_cmd(&["unwatch", "demo-app", &new]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not watched"), "{err}");
}

#[tokio::test]
async fn cli_watch_without_a_daemon_is_polled_at_start_and_kept_across_restarts() {
    let sim = start_sim(signed_sim(4)).await;
    let config = AppConfig::new(&sim, 1);
    let mut app = TestApp::new(&config);
    let new = job_id(3);
    // No daemon and no database yet.
    let (code, out, err) = app.run_cmd(&["watch", "demo-app", &new]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("watching"), "{out}");
    app.start();
    wait_polled(&app, &sim, &new).await;
    assert_eq!(status_row(&app, &new).await.unwrap()["source"], "cli");
    assert_eq!(app.stop().await.code(), Some(0));

    // Restarted: still watched and polled again.
    let before = polls_of(&sim, &new);
    app.start();
    wait_for("the job to be polled after the restart", T, || async {
        (polls_of(&sim, &new) > before).then_some(())
    })
    .await;
    assert_eq!(status_row(&app, &new).await.unwrap()["source"], "cli");
}

/// POSTs `body` to the callback receiver signed with `key`.
async fn callback(addr: SocketAddr, key: &str, rand: &str, body: &str) -> u16 {
    let sig = sign(&Secret::new(key), rand, "1700000000", body.as_bytes());
    client()
        .post(format!("http://{addr}/rtc/record-callback"))
        .header(HEADER_RAND, rand)
        .header(HEADER_TIMESTAMP, "1700000000")
        .header(HEADER_SIGNATURE, sig)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_callback_discovers_a_job_of_a_discovering_app_only() {
    let sim = start_sim(signed_sim(4)).await;
    let mut config = AppConfig::new(&sim, 1);
    config.listen = "127.0.0.1:0".into();
    config.extra = "\n[callback]\nlisten = \"127.0.0.1:0\"\n\n\
        [[apps]]\napp_id = \"demo-app\"\nauth_key = \"key-demo-0123456789abcdef01234567\"\nname = \"studio\"\ndiscover = true\n\n\
        [[apps]]\napp_id = \"quiet-app\"\nauth_key = \"key-quiet-0123456789abcdef0123456\"\n"
        .into();
    let mut app = TestApp::new(&config);
    app.start();
    let cb = app.callback_addr().await;
    let http = app.http_addr().await;
    let event = |app_id: &str, job: &str| {
        format!(r#"{{"event_type":"RECORD_NEW_FILE_START","app_id":"{app_id}","job_id":"{job}"}}"#)
    };

    // discover = false: stored, not watched. Discovery is decided before the answer, so once
    // this is answered it is settled.
    assert_eq!(
        callback(
            cb,
            "key-quiet-0123456789abcdef0123456",
            "q1",
            &event("quiet-app", "quiet-job")
        )
        .await,
        200
    );
    let found = job_id(1);
    assert_eq!(
        callback(
            cb,
            "key-demo-0123456789abcdef01234567",
            "d1",
            &event("demo-app", &found)
        )
        .await,
        200
    );
    wait_polled(&app, &sim, &found).await;
    let item = api_job(http, &found).await.expect("discovered");
    assert_eq!(item["source"], "callback");
    assert_eq!(item["name"], format!("studio/{found}"));
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM callback_events").await,
        2,
        "both events stored"
    );
    assert_eq!(
        watchlist_rows(&app).await,
        1,
        "only the discovering app's job"
    );
    assert!(api_job(http, "quiet-job").await.is_none());

    // A callback for a job already watched (here, by the config file) adds nothing.
    assert_eq!(
        callback(
            cb,
            "key-demo-0123456789abcdef01234567",
            "d2",
            &event("demo-app", &job_id(0))
        )
        .await,
        200
    );
    assert_eq!(watchlist_rows(&app).await, 1);
    assert_eq!(api_job(http, &job_id(0)).await.unwrap()["source"], "config");
}
