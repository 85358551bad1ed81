//! The HTTP endpoint as an untrusted client can use it: thousands of idle connections,
//! half-open ones, a kept-alive one that goes quiet, and `/api/v1/jobs` page by page.

use crate::harness::*;
use crate::support::receiver::Receiver;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The address the daemon's endpoint bound (`http.listen = "127.0.0.1:0"`), from its log.
async fn endpoint(app: &TestApp) -> SocketAddr {
    app.wait_log("HTTP endpoint:", T).await;
    app.log_text()
        .lines()
        .filter(|l| l.contains("HTTP endpoint:"))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("address="))
        })
        .expect("address= in the endpoint's log line")
        .parse()
        .unwrap()
}

/// GET on a new connection; None if it fails or takes longer than 10 s.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = http.get(format!("http://{addr}{path}")).send().await.ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

/// Waits for /healthz to answer 200 on a new connection.
async fn healthy(addr: SocketAddr) {
    wait_for("/healthz to answer 200", T, || async {
        get(addr, "/healthz")
            .await
            .filter(|(code, body)| *code == 200 && body == "ok\n")
    })
    .await;
}

/// Descriptors a process holds.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(usize::MAX)
}

/// This test process opens many sockets itself: take the hard limit.
fn enough_descriptors_for(n: u64) {
    let (_, now) = recwatch::http::raise_nofile_limit().expect("this process's open-files limit");
    assert!(
        now >= n,
        "this test opens about {n} sockets but may hold only {now} descriptors: raise the hard limit (ulimit -Hn)"
    );
}

/// True once the server has closed the connection (EOF or reset); false if it is still open
/// after `T`. Whatever the server sends before closing is read and dropped.
async fn closed_by_server(mut s: TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(T, read_all).await.is_ok()
}

pub(crate) async fn all_closed_by_server(conns: Vec<TcpStream>) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    for s in conns {
        tasks.spawn(closed_by_server(s));
    }
    let mut closed = 0;
    while let Some(r) = tasks.join_next().await {
        closed += usize::from(r.unwrap());
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_leave_the_endpoint_and_webhooks_working() {
    enough_descriptors_for(2_500);
    let hook = Receiver::start(Some(SECRET)).await;
    let sim = start_sim(static_sim(2)).await;
    let mut cfg = AppConfig::new(&sim, 2);
    cfg.listen = "127.0.0.1:0".into();
    cfg.extra = format!(
        "\n[notify]\nmax_backoff = \"300ms\"\n\n[[notify.webhook]]\nname = \"hook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
        hook.url()
    );
    let mut app = TestApp::new(&cfg);
    // A host's usual limit with nothing raising it: the daemon may hold 1,024 descriptors, so
    // 2,000 connections held open would take them all if the endpoint accepted every one.
    app.start_with_nofile(1024);
    app.wait_running(2).await;
    let addr = endpoint(&app).await;

    let mut idle = Vec::with_capacity(2000);
    for i in 0..2000 {
        let s = tokio::time::timeout(T, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connection {i} not accepted within {T:?}"))
            .unwrap();
        idle.push(s);
    }
    // With all 2,000 still open on this side, the endpoint answers a new client...
    healthy(addr).await;
    // ...and holds at most its cap (a quarter of its 1,024 descriptors) of them, plus its own
    // files: the database, the listener, the RTC client's connections.
    let pid = app.pid();
    wait_for(
        "the daemon to hold fewer than 400 descriptors",
        T,
        || async { (open_fds(pid) < 1024 / 4 + 144).then_some(()) },
    )
    .await;
    // A webhook goes out while they are open.
    set_state(&sim, "job-0001", "STOPPED", Some("INTERNAL_ERROR"));
    let got = hook.wait_for(1, T).await;
    assert_eq!(
        got[0].alert.job.as_ref().map(|j| j.job_id.as_str()),
        Some("job-0001")
    );
    healthy(addr).await;
    // The server closed the ones it made room with: most of them by now.
    drop(idle);
    let log = app.log_text();
    assert!(
        !log.contains("Too many open files") && !log.contains("os error 24"),
        "{log}"
    );
    assert!(log.contains("at its cap of 256 connections"), "{log}");
    assert!(app.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_and_quiet_kept_alive_connections_are_closed() {
    enough_descriptors_for(1_000);
    let sim = start_sim(static_sim(1)).await;
    let mut cfg = AppConfig::new(&sim, 1);
    cfg.listen = "127.0.0.1:0".into();
    let mut app = TestApp::new(&cfg);
    app.start();
    let addr = endpoint(&app).await;
    let partial = b"GET /healthz HTTP/1.1\r\nHost: recwatch\r\n";

    // Fewer than the cap, so nothing is closed to make room: only the header timeout can
    // close these. One client asks once and keeps its connection; 100 never finish a header.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: recwatch\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"ok\n") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(T, kept.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before answering: {answer:?}");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    let mut conns = vec![kept];
    for _ in 0..100 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(partial).await.unwrap();
        conns.push(s);
    }
    healthy(addr).await;
    assert_eq!(all_closed_by_server(conns).await, 101);

    // 500 half-open at once: more than the cap (256). All are closed, and the endpoint
    // answers meanwhile.
    let mut half = Vec::new();
    for _ in 0..500 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(partial).await.unwrap();
        half.push(s);
    }
    healthy(addr).await;
    assert_eq!(all_closed_by_server(half).await, 500);
    healthy(addr).await;
    assert!(app.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_pages_walk_every_job_exactly_once() {
    let jobs = 250;
    let sim = start_sim(static_sim(jobs)).await;
    let mut cfg = AppConfig::new(&sim, jobs);
    cfg.listen = "127.0.0.1:0".into();
    // Config order is not the pages' order: the ids sort differently once reversed.
    cfg.jobs.reverse();
    let mut app = TestApp::spawn(&cfg, jobs as i64).await;
    let addr = endpoint(&app).await;

    let mut items: Vec<serde_json::Value> = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            None => "/api/v1/jobs?limit=7".to_string(),
            Some(c) => format!("/api/v1/jobs?limit=7&after={c}"),
        };
        let (code, body) = get(addr, &path).await.expect("an answer");
        assert_eq!(code, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= 7);
        items.extend(got.iter().cloned());
        pages += 1;
        match page["next_after"].as_str() {
            Some(c) => after = Some(c.to_string()),
            None => break,
        }
        assert!(pages <= jobs, "the walk does not end");
    }
    assert_eq!(pages, jobs.div_ceil(7));
    let keys: Vec<(String, String)> = items
        .iter()
        .map(|i| {
            (
                i["app_id"].as_str().unwrap().to_string(),
                i["job_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Strictly ascending: in key order, and no job twice.
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    let mut expected: Vec<(String, String)> = cfg
        .jobs
        .iter()
        .map(|j| ("demo-app".to_string(), j.clone()))
        .collect();
    expected.sort();
    assert_eq!(keys, expected, "every job exactly once");
    // The rows carry what the database knows, like `status --json` (in config order there).
    assert!(items.iter().all(|i| i["state"] == "RUNNING"));
    let (_, out, _) = app.run_cmd(&["status", "--json"]).await;
    let mut cli: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    cli.sort_by_key(|i| i["job_id"].as_str().unwrap().to_string());
    for row in cli.iter_mut().chain(items.iter_mut()) {
        row.as_object_mut().unwrap().remove("last_polled_at");
    }
    assert_eq!(cli.len(), items.len());
    assert_eq!(cli, status_fields(&items, &cli));

    // Without a limit: the default page of 100.
    let (code, body) = get(addr, "/api/v1/jobs").await.expect("an answer");
    assert_eq!(code, 200);
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 100);
    assert!(page["next_after"].is_string());
    // Bad input: 400 naming the parameter and the fix.
    for (query, names) in [
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("limit=ten", "limit"),
        ("after=not-a-cursor", "after"),
    ] {
        let (code, body) = get(addr, &format!("/api/v1/jobs?{query}"))
            .await
            .expect("an answer");
        assert_eq!(code, 400, "{query}: {body}");
        assert!(body.starts_with(names), "{query}: {body}");
    }
    assert!(app.stop().await.success());
}
