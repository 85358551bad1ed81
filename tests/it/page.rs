//! The status page in a real browser (headless Chromium, see `browser`) against the daemon
//! watching simulated jobs: names and states after the page's script ran, a job's
//! transitions, a hostile job name shown as text with no script run, and the same page with
//! JavaScript off. `RECWATCH_SCREENSHOT=path.png` keeps screenshots for a person to look at.

use crate::browser::Browser;
use crate::harness::*;
use crate::support::receiver::Receiver;
use std::net::SocketAddr;
use std::time::Duration;

const PUBLIC_URL: &str = "https://recwatch.example.com/ops";

/// A job name that would run script if the page did not escape it: an inline script, an
/// image whose error handler runs, and markup that would close the cell.
const HOSTILE: &str = "<script>document.documentElement.dataset.pwned=1</script><img src=x onerror=document.documentElement.dataset.pwned=2></td>";

/// The daemon watching three simulated jobs: `cam-0` recording, `cam-1` died with
/// INTERNAL_ERROR (alerted to a webhook), and one whose name is [`HOSTILE`].
async fn watched_jobs() -> (recwatch_sim::Simulator, Receiver, TestApp, SocketAddr) {
    let sim = start_sim(static_sim(3)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 2);
    cfg.listen = "127.0.0.1:0".into();
    // `public_url` goes inside [http] (the extra text follows it); alerts link to the page.
    cfg.extra = format!(
        "public_url = \"{PUBLIC_URL}\"\n{}",
        notify_toml(Some(hook.url().as_str()), None, "")
    );
    // TOML basic string: the name's quotes-free markup needs no escaping but the backslash.
    cfg.extra.push_str(&format!(
        "\n[[jobs]]\napp_id = \"demo-app\"\njob_id = \"job-0002\"\nname = \"{HOSTILE}\"\n"
    ));
    let mut app = TestApp::new(&cfg);
    app.start();
    let addr = app.http_addr().await;
    app.wait_running(3).await;
    set_state(&sim, "job-0001", "STOPPED", Some("INTERNAL_ERROR"));
    wait_for("job-0001 stopped and alerted", T, || async {
        let stopped = app.job_row("job-0001").await?.0.as_deref() == Some("STOPPED");
        (stopped && !hook.received().is_empty()).then_some(())
    })
    .await;
    (sim, hook, app, addr)
}

/// The `<tr>` of the job list whose text contains `needle`.
fn row_with<'a>(html: &'a str, needle: &str) -> &'a str {
    html.split("<tr class=\"job ")
        .skip(1)
        .map(|r| r.split("</tr>").next().unwrap())
        .find(|r| r.contains(needle))
        .unwrap_or_else(|| panic!("no job row contains {needle:?} in\n{html}"))
}

/// The rectangles of a row's timeline: (tone class, x, width), in thousandths of the bar.
fn rects(row: &str) -> Vec<(String, f64, f64)> {
    row.split("<rect class=\"")
        .skip(1)
        .map(|r| {
            let attr = |name: &str| {
                let v = r.split(&format!(" {name}=\"")).nth(1).unwrap();
                v[..v.find('"').unwrap()].parse::<f64>().unwrap()
            };
            (
                r[..r.find('"').unwrap()].to_string(),
                attr("x"),
                attr("width"),
            )
        })
        .collect()
}

/// What the job list must show whether or not its script ran.
fn assert_list(html: &str) {
    let running = row_with(html, ">cam-0<");
    assert!(
        running.contains("<code class=\"state\">RUNNING</code>"),
        "{running}"
    );
    assert!(running.contains("recording"), "{running}");
    assert!(
        running.contains("<svg class=\"tl\""),
        "a timeline: {running}"
    );
    assert!(
        running.contains("<td class=\"wide\">config</td>"),
        "the Source column: {running}"
    );
    // Watched for seconds of the 24 hours: the rest is "not watched", and the watched span
    // is drawn wide enough to see (recwatch::view::timeline::MIN_WATCHED), in its colour.
    let bar = rects(running);
    assert_eq!(bar[0].0, "t-not_watched", "{bar:?}");
    assert_eq!(bar[0].1, 0.0, "{bar:?}");
    assert_eq!(bar.last().unwrap().0, "t-running", "{bar:?}");
    let watched: f64 = bar[1..].iter().map(|r| r.2).sum();
    assert!(
        watched >= recwatch::view::timeline::MIN_WATCHED - 0.5,
        "{bar:?}"
    );
    let dead = row_with(html, ">cam-1<");
    assert!(
        dead.contains("<code class=\"state\">STOPPED</code>"),
        "{dead}"
    );
    assert!(
        dead.contains("<code class=\"reason\">INTERNAL_ERROR</code>"),
        "{dead}"
    );
    assert!(dead.contains("died: service error"), "{dead}");
    assert!(
        dead.contains("t-stopped_error"),
        "coloured by state: {dead}"
    );
    // The hostile name is text: escaped in the DOM, never an element, and nothing it holds ran.
    let hostile = row_with(html, "job-0002");
    assert!(
        hostile.contains(
            "&lt;script&gt;document.documentElement.dataset.pwned=1&lt;/script&gt;&lt;img src=x"
        ),
        "{hostile}"
    );
    assert!(!html.contains("data-pwned"), "the hostile name ran script");
    assert!(!html.contains("<img"), "the hostile name made an element");
    // The header counts by state.
    assert!(html.contains("<strong>3</strong> jobs"), "header");
    assert!(html.contains("<strong>1</strong> STOPPED"), "header");
    assert!(html.contains("<strong>2</strong> RUNNING"), "header");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_a_browser_shows_jobs_transitions_and_hostile_names_as_text() {
    let (_sim, _hook, mut app, addr) = watched_jobs().await;
    let base = format!("http://{addr}");
    let shot = std::env::var_os("RECWATCH_SCREENSHOT").map(std::path::PathBuf::from);
    let (list, job, alerts, shots) = tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch(true);
        b.open(&format!("{base}/"));
        // The page's script marks the document and turns every time into local time.
        let list = b.html_when("the page's script to run", |h| {
            h.contains("data-script=\"ran\"") && h.contains("data-local")
        });
        let mut shots = Vec::new();
        if shot.is_some() {
            shots.push(b.screenshot());
        }
        b.open(&format!("{base}/jobs/demo-app/job-0001"));
        let job = b.html_when("the job page's script to run", |h| {
            h.contains("data-script=\"ran\"")
        });
        if shot.is_some() {
            shots.push(b.screenshot());
        }
        b.open(&format!("{base}/alerts"));
        let alerts = b.html_when("the alerts page", |h| h.contains("data-script=\"ran\""));
        (list, job, alerts, shots)
    })
    .await
    .unwrap();
    assert_list(&list);
    // A localised time keeps UTC on hover.
    assert!(list.contains(" UTC\" data-local"), "UTC in the title");

    // The job page: its transitions from -> to with reason, newest first, and its alert.
    let transitions = job
        .split("<table class=\"transitions\">")
        .nth(1)
        .expect("a transitions table");
    // The "to" cells, each with its colour and text.
    let stop = transitions
        .find("t-stopped_error\" aria-hidden=\"true\"></span><code>STOPPED</code>")
        .expect("the death");
    let start = transitions
        .find("t-running\" aria-hidden=\"true\"></span><code>RUNNING</code>")
        .expect("the first poll");
    assert!(stop < start, "newest first: {transitions}");
    assert!(transitions.contains("<code>INTERNAL_ERROR</code>"));
    assert!(transitions.contains("first seen"));
    assert!(
        transitions.contains("<td class=\"wide\"><code>"),
        "the request id of the answer that showed it: {transitions}"
    );
    assert!(
        job.contains("<code>stopped_unexpectedly</code>"),
        "its alert: {job}"
    );
    assert!(
        job.contains("hook: <strong>sent</strong>")
            || job.contains("hook: <strong>pending</strong>"),
        "delivery state"
    );
    assert!(job.contains("Last 7 days"));
    // What the job is, where it came from, and who polls it now (as `recwatch status` says).
    assert!(job.contains("<dt>Kind</dt><dd>individual</dd>"), "{job}");
    assert!(job.contains("<dt>Source</dt><dd>config</dd>"), "{job}");
    assert!(
        job.contains(&format!(
            "<dd class=\"active-instance\">{} (pid {}), lease epoch ",
            recwatch::domain::hostname(),
            app.pid()
        )),
        "{job}"
    );
    assert!(
        alerts.contains("<code>stopped_unexpectedly</code>"),
        "{alerts}"
    );
    assert!(
        alerts.contains("href=\"/jobs/demo-app/job-0001\""),
        "alerts link to the job"
    );

    if let Some(path) = std::env::var_os("RECWATCH_SCREENSHOT").map(std::path::PathBuf::from) {
        std::fs::write(&path, &shots[0]).unwrap();
        std::fs::write(path.with_extension("job.png"), &shots[1]).unwrap();
        eprintln!(
            "screenshots written to {} and {}",
            path.display(),
            path.with_extension("job.png").display()
        );
    }
    assert!(app.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_works_with_javascript_off() {
    let (_sim, _hook, mut app, addr) = watched_jobs().await;
    let base = format!("http://{addr}");
    let (list, filtered, job) = tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch(false);
        b.open(&format!("{base}/"));
        let list = b.html();
        b.open(&format!("{base}/?state=stopped"));
        let filtered = b.html();
        b.open(&format!("{base}/jobs/demo-app/job-0001"));
        let job = b.html();
        (list, filtered, job)
    })
    .await
    .unwrap();
    assert!(!list.contains("data-script"), "JavaScript was off");
    assert_list(&list);
    // Times stay in UTC text; a reload every few seconds stands in for the live refresh.
    assert!(list.contains(" UTC</time>"), "UTC text without the script");
    assert!(list.contains("<noscript>"), "{list}");
    // The filter form's GET works without script: only the dead job is listed.
    assert!(filtered.contains(">cam-1<"));
    assert!(!filtered.contains(">cam-0<"), "filtered out");
    assert!(job.contains("<code>INTERNAL_ERROR</code>"));
    assert!(job.contains("first seen"));
    assert!(app.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_data_as_json_filters_pages_and_refuses_bad_input() {
    let (_sim, hook, mut app, addr) = watched_jobs().await;
    // The webhook's payload links to the job's page under `public_url`.
    let sent = &hook.received()[0];
    assert_eq!(
        sent.alert.job_url.as_deref(),
        Some("https://recwatch.example.com/ops/jobs/demo-app/job-0001")
    );
    let raw: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        raw["job_url"],
        "https://recwatch.example.com/ops/jobs/demo-app/job-0001"
    );
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        async move {
            let r = http
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            (code, r.text().await.unwrap())
        }
    };
    let json = |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap();

    let (code, body) = get("/api/v1/jobs?state=STOPPED".into()).await;
    assert_eq!(code, 200, "{body}");
    let v = json(&body);
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["job_id"], "job-0001");
    assert_eq!(items[0]["state"], "STOPPED");
    assert_eq!(items[0]["stop_reason"], "INTERNAL_ERROR");
    assert_eq!(items[0]["label"], "died: service error");
    assert_eq!(items[0]["tone"], "stopped_error");
    let segments = items[0]["timeline"]["segments"].as_array().unwrap();
    assert_eq!(segments.last().unwrap()["state"], "STOPPED");
    assert_eq!(v["matching"], 1);
    assert_eq!(v["summary"]["jobs"], 3);
    assert!(v["summary"]["open_alerts"].as_i64().unwrap() >= 1);
    assert_eq!(v["summary"]["api_healthy"], true);

    // Text search over names (case-insensitive), and paging with the filters kept.
    let (_, body) = get("/api/v1/jobs?q=CAM&limit=1".into()).await;
    let first = json(&body);
    assert_eq!(first["items"][0]["name"], "cam-0");
    assert_eq!(first["matching"], 2);
    let after = first["next_after"].as_str().unwrap().to_string();
    let (_, body) = get(format!("/api/v1/jobs?q=CAM&limit=1&after={after}")).await;
    let second = json(&body);
    assert_eq!(second["items"][0]["name"], "cam-1");
    assert_eq!(second["next_after"], serde_json::Value::Null);

    let (code, body) = get("/api/v1/jobs/demo-app/job-0001".into()).await;
    assert_eq!(code, 200, "{body}");
    let v = json(&body);
    let to: Vec<&str> = v["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["to_state"].as_str().unwrap())
        .collect();
    assert_eq!(to, ["STOPPED", "RUNNING"], "newest first");
    assert_eq!(v["alerts"][0]["rule"], "stopped_unexpectedly");
    assert_eq!(v["alerts"][0]["deliveries"][0]["channel"], "hook");
    assert_eq!(v["watched"], true);

    let (code, body) = get("/api/v1/alerts".into()).await;
    assert_eq!(code, 200);
    let v = json(&body);
    assert_eq!(v["items"][0]["job_id"], "job-0001");

    // The page and the API answer the same bad input the same way: 400 naming the parameter.
    for path in [
        "/api/v1/jobs?state=DEAD",
        "/?state=DEAD",
        "/?limit=0",
        "/alerts?before=zz",
        "/jobs/demo-app/job-0001?before=zz",
    ] {
        let (code, body) = get(path.into()).await;
        assert_eq!(code, 400, "{path}: {body}");
    }
    for path in [
        "/jobs/demo-app/no-such-job",
        "/api/v1/jobs/demo-app/no-such-job",
    ] {
        let (code, body) = get(path.into()).await;
        assert_eq!(code, 404, "{path}: {body}");
        assert!(body.contains("no-such-job"), "{body}");
    }
    // The page's own files, from the binary; the page forbids any other script.
    let r = http.get(format!("http://{addr}/")).send().await.unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let (code, js) = get("/static/page.js".into()).await;
    assert_eq!(code, 200);
    assert!(js.contains("data-live"));
    let (code, css) = get("/static/page.css".into()).await;
    assert_eq!(code, 200);
    assert!(css.contains("prefers-color-scheme: dark"));
    assert!(app.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_token_guards_the_page_and_the_api_but_not_health() {
    const TOKEN: &str = "wall-screen-t0ken";
    let sim = start_sim(static_sim(1)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.listen = "127.0.0.1:0".into();
    // Appended inside [http].
    cfg.extra = format!("read_token = \"{TOKEN}\"\n");
    let mut app = TestApp::new(&cfg);
    app.start();
    let addr = app.http_addr().await;
    app.wait_running(1).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let status = |path: &'static str, bearer: Option<&'static str>| {
        let http = http.clone();
        async move {
            let mut r = http.get(format!("http://{addr}{path}"));
            if let Some(b) = bearer {
                r = r.bearer_auth(b);
            }
            r.send().await.unwrap().status().as_u16()
        }
    };
    for path in [
        "/",
        "/alerts",
        "/jobs/demo-app/job-0000",
        "/api/v1/jobs",
        "/api/v1/alerts",
    ] {
        assert_eq!(status(path, None).await, 401, "{path} without the token");
        assert_eq!(
            status(path, Some("wrong")).await,
            401,
            "{path} with a wrong token"
        );
        assert_eq!(
            status(path, Some(TOKEN)).await,
            200,
            "{path} with the token"
        );
    }
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/static/page.css",
        "/static/page.js",
    ] {
        assert_eq!(status(path, None).await, 200, "{path} stays open");
    }
    let r = http
        .get(format!("http://{addr}/?state=RUNNING&token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(
        r.headers()["location"],
        "/?state=RUNNING",
        "the token leaves the address"
    );
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("recwatch_read=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(TOKEN),
        "the cookie is not the token: {cookie}"
    );

    // A browser: the token once in the address, then the cookie carries on.
    let base = format!("http://{addr}");
    let (list, job) = tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch(true);
        b.open_landing(&format!("{base}/?token={TOKEN}"), &format!("{base}/"));
        let list = b.html_when("the page", |h| h.contains("data-script=\"ran\""));
        b.open(&format!("{base}/jobs/demo-app/job-0000"));
        let job = b.html();
        (list, job)
    })
    .await
    .unwrap();
    assert!(list.contains(">cam-0<"), "{list}");
    assert!(job.contains("Transitions"), "{job}");
    assert!(!app.log_text().contains(TOKEN), "the token reached the log");
    assert!(app.stop().await.success());
}

/// The header's counts (grouped in the database, issue 23 item 7) are of the watch list only:
/// each state's count is what listing that state gives, they add up to the watched jobs, and a
/// job removed from the list (its row kept for its history) leaves them at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_counts_are_the_watch_lists_and_leave_out_an_unwatched_jobs_row() {
    const TOKEN: &str = "test-api-token-0123456789";
    let sim = start_sim(static_sim(4)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.listen = "127.0.0.1:0".into();
    cfg.extra = format!("token = \"{TOKEN}\"\n");
    let mut app = TestApp::new(&cfg);
    app.start();
    let addr = app.http_addr().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    for job in ["job-0001", "job-0002"] {
        let r = http
            .post(format!("http://{addr}/api/v1/jobs"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(serde_json::json!({"app_id": "demo-app", "job_id": job}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    for job in ["job-0000", "job-0001", "job-0002"] {
        wait_for(&format!("{job} polled"), T, || async {
            app.job_row(job).await.and_then(|r| r.0).map(|_| ())
        })
        .await;
    }
    let get = |path: String| {
        let http = http.clone();
        async move {
            let r = http
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    // Every state's count against the list of that state; the four phases partition the jobs.
    let check = |watched: u64| {
        let get = &get;
        async move {
            let v = get("/api/v1/jobs".into()).await;
            assert_eq!(v["summary"]["jobs"], watched);
            let mut phases = 0;
            for s in v["summary"]["states"].as_array().unwrap() {
                let state = s["state"].as_str().unwrap();
                let listed = get(format!("/api/v1/jobs?state={state}")).await;
                assert_eq!(s["n"], listed["matching"], "{state}: {v}");
                if state != "FAILING" {
                    phases += s["n"].as_u64().unwrap();
                }
            }
            assert_eq!(phases, watched, "{v}");
        }
    };
    check(3).await;

    let r = http
        .delete(format!("http://{addr}/api/v1/jobs/demo-app/job-0002"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(app.job_row("job-0002").await.is_some(), "its row stays");
    check(2).await;
    assert!(app.stop().await.success());
}
