//! Issue 23, the poller's items: the budget as the gateway counts it (never more than
//! `rate_limit` arrivals in any sliding second at the simulator, on a machine kept busy), jobs
//! added at run time polled ahead of the round, and storms of record callbacks: every stormed
//! job polled (no hint dropped), the round still going afterwards.

use crate::harness::*;
use crate::push::metric;
use recwatch_rtc::callback::{HEADER_RAND, HEADER_SIGNATURE, HEADER_TIMESTAMP, sign};
use recwatch_rtc::secret::Secret;
use recwatch_sim::{SimOptions, Simulator, job_id};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "test-api-token-0123456789";
/// 32 characters or more: what RTC takes as an auth_key.
const KEY: &str = "the-demo-app-callback-key-0123456789";

/// Processes that burn a CPU each for as long as this lives (killed, by their own ids, when
/// dropped, a failed assertion included).
struct Burners(Vec<Child>);

impl Burners {
    fn start(n: usize) -> Burners {
        Burners(
            (0..n)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("sh runs")
                })
                .collect(),
        )
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn steady_sim(jobs: usize) -> Simulator {
    start_sim(SimOptions {
        scripted: false,
        ..signed_sim(jobs)
    })
    .await
}

/// Item 2: with two processes burning the CPU beside the daemon and the simulator, and a
/// watch list that asks for more than the budget, no sliding second at the simulator ever
/// holds more than `rate_limit` (10) arrivals, over 40 s (about 400 requests); and the budget
/// is used (every job polled, more than once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrivals_never_exceed_the_rate_in_any_sliding_second_on_a_busy_machine() {
    let sim = steady_sim(40).await;
    let mut config = AppConfig::new(&sim, 40);
    config.interval = "1s";
    config.rate_limit = 10;
    config.max_in_flight = 8;
    let mut app = TestApp::new(&config);
    app.start();
    wait_for("polling under way", T, || async {
        (sim.stats().requests >= 5).then_some(())
    })
    .await;
    let burners = Burners::start(2);
    sim.reset_stats();
    let start = std::time::Instant::now();
    wait_for("40 s of polling beside the burners", T, || async {
        (start.elapsed() >= Duration::from_secs(40)).then_some(())
    })
    .await;
    let stats = sim.stats();
    drop(burners);
    app.stop().await;
    assert!(
        stats.max_per_sliding_second <= 10,
        "{} arrivals within one sliding second at the simulator, rate_limit 10 (per second: {:?})",
        stats.max_per_sliding_second,
        stats.per_second
    );
    let polled = stats.by_job.get("demo-app").map_or(0, |j| j.len());
    assert_eq!(polled, 40, "every job polled: {:?}", stats.by_job);
    assert!(stats.requests >= 100, "{} requests", stats.requests);
}

/// A daemon watching `jobs` jobs from its config file at `interval`, the HTTP write API on
/// (`TOKEN`) and the callback receiver on for demo-app.
fn daemon(sim: &Simulator, jobs: usize, tune: impl FnOnce(&mut AppConfig)) -> TestApp {
    let mut config = AppConfig::new(sim, jobs);
    config.listen = "127.0.0.1:0".into();
    config.extra = format!(
        "token = \"{TOKEN}\"\n\n[callback]\nlisten = \"127.0.0.1:0\"\n\n\
         [[apps]]\napp_id = \"demo-app\"\nauth_key = \"{KEY}\"\n"
    );
    tune(&mut config);
    let mut app = TestApp::new(&config);
    app.start();
    app
}

/// Item 3: 300 configured jobs at 1 s against 10 requests/s (30 times the budget: the round
/// uses every slot). A job added through `POST /api/v1/jobs` is polled before the round has
/// made 20 more requests (two seconds of the budget; the round itself would take 30 s to come
/// round), and the log says "polled now" for it only once it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_added_at_run_time_is_polled_ahead_of_a_saturated_round() {
    let sim = steady_sim(301).await;
    let mut app = daemon(&sim, 300, |c| {
        c.interval = "1s";
        c.rate_limit = 10;
        c.max_in_flight = 4;
    });
    let http = app.http_addr().await;
    wait_for("the round under way", T, || async {
        (sim.stats().requests >= 30).then_some(())
    })
    .await;
    let joiner = job_id(300);
    let r = client()
        .post(format!("http://{http}/api/v1/jobs"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(format!(r#"{{"app_id": "demo-app", "job_id": "{joiner}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let added_at = sim.stats().requests;
    let first_poll_at = wait_for("the joiner's first poll", T, || async {
        let stats = sim.stats();
        (polls_of(&sim, &joiner) > 0).then_some(stats.requests)
    })
    .await;
    let round_polls = first_poll_at - added_at;
    assert!(
        round_polls <= 20,
        "{round_polls} requests went before the joiner's first poll"
    );
    let line = format!("job_id={joiner}");
    let log = app.log_text();
    let said = log
        .lines()
        .any(|l| l.contains("polled now") && l.contains(&line));
    assert!(said, "the poller says it polled the joiner now:\n{log}");
    let api_line = log
        .lines()
        .find(|l| l.contains("watching a new job"))
        .unwrap_or_default();
    assert!(
        !api_line.contains("polled now"),
        "the API does not claim a poll it has not seen: {api_line}"
    );
    assert_within_budget(&sim.stats(), 10, "joiners first");
    app.stop().await;
}

/// A signed record callback for `job` of demo-app: the status the receiver answered.
async fn callback(http: &reqwest::Client, addr: SocketAddr, n: usize, job: &str) -> u16 {
    event(http, addr, n, job, "RECORD_NEW_FILE_START").await
}

/// A signed record callback of type `event_type` for `job` of demo-app (`n` makes its nonce).
async fn event(
    http: &reqwest::Client,
    addr: SocketAddr,
    n: usize,
    job: &str,
    event_type: &str,
) -> u16 {
    let body = format!(r#"{{"event_type":"{event_type}","app_id":"demo-app","job_id":"{job}"}}"#);
    let rand = format!("storm-{n:08}");
    let sig = sign(&Secret::new(KEY), &rand, "1700000000", body.as_bytes());
    http.post(format!("http://{addr}/rtc/record-callback"))
        .header(HEADER_RAND, rand)
        .header(HEADER_TIMESTAMP, "1700000000")
        .header(HEADER_SIGNATURE, sig)
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Item 4: a storm of 5,000 hints, more than the old intake and lane held (4,096), sent while
/// every poll slot is held by stalled requests so none of them can drain: every stormed job is
/// polled (none dropped, the dropped count stays 0), and the round goes on afterwards (five
/// calm jobs at 2 s). The stormed jobs' own interval is an hour, so the round alone would
/// reach them in an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_hints_larger_than_the_old_intake_polls_every_stormed_job() {
    const STORM: usize = 5_000;
    const CALM: usize = 5;
    let sim = steady_sim(STORM + CALM).await;
    let mut app = daemon(&sim, STORM, |c| {
        c.interval = "1h";
        c.rate_limit = 300;
        c.max_in_flight = 4;
        c.timeout = "60s";
        for i in STORM..STORM + CALM {
            c.extra.push_str(&format!(
                "\n[[jobs]]\napp_id = \"demo-app\"\njob_id = \"{}\"\ninterval = \"2s\"\n",
                job_id(i)
            ));
        }
    });
    let http = app.http_addr().await;
    let cb = app.callback_addr().await;
    wait_for("the round under way", T, || async {
        (sim.stats().requests >= 3).then_some(())
    })
    .await;
    // Every slot held: the next four polls stall until the storm is in.
    sim.set_fault(
        recwatch_sim::Fault::new(recwatch_sim::FaultKind::Stall(Duration::from_secs(20))).times(4),
    );
    wait_for("four polls stalled", T, || async {
        (sim.stats().faults_applied >= 4).then_some(())
    })
    .await;
    let before = sim
        .stats()
        .by_job
        .get("demo-app")
        .cloned()
        .unwrap_or_default();
    let stormed: Vec<String> = (0..STORM).map(job_id).collect();
    let sender = client();
    use futures_util::StreamExt;
    let answers: Vec<u16> = futures_util::stream::iter(stormed.iter().enumerate())
        .map(|(n, job)| callback(&sender, cb, n, job))
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(answers.iter().all(|s| *s == 200), "every callback taken");
    let polled_since = |job: &String| {
        let now = polls_of(&sim, job);
        now > before.get(job).copied().unwrap_or(0)
    };
    wait_for("every stormed job polled", T, || async {
        stormed.iter().all(polled_since).then_some(())
    })
    .await;
    let text = crate::ha::scrape(http).await;
    assert_eq!(
        metric(&text, "recwatch_poll_hints_total{outcome=\"dropped\"}"),
        0.0,
        "no hint dropped"
    );
    // The round goes on: jobs outside the storm keep being polled.
    let calm: Vec<String> = (STORM..STORM + CALM).map(job_id).collect();
    let calm_polls = |sim: &Simulator| calm.iter().map(|j| polls_of(sim, j)).sum::<u64>();
    let after_storm = calm_polls(&sim);
    wait_for("the round after the storm", T, || async {
        (calm_polls(&sim) >= after_storm + 3).then_some(())
    })
    .await;
    assert_within_budget(&sim.stats(), 300, "storm");
    app.stop().await;
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Seconds from `RECWATCH_MEASURE_SECS`, else `default`.
fn measure_secs(default: u64) -> u64 {
    std::env::var("RECWATCH_MEASURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// BENCHMARKS.md part 14 (item 2): the most arrivals in any sliding second at the simulator,
/// rate_limit 10, 40 jobs at 1 s (4 times the budget), two CPU-burning processes beside it,
/// for `RECWATCH_MEASURE_SECS` (600 by default). Prints its figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (BENCHMARKS.md part 14): minutes long"]
async fn measure_arrivals_per_sliding_second_beside_two_burners() {
    let secs = measure_secs(600);
    let sim = steady_sim(40).await;
    let mut config = AppConfig::new(&sim, 40);
    config.interval = "1s";
    config.rate_limit = 10;
    config.max_in_flight = 8;
    let mut app = TestApp::new(&config);
    app.start();
    wait_for("polling under way", T, || async {
        (sim.stats().requests >= 5).then_some(())
    })
    .await;
    let burners = Burners::start(2);
    sim.reset_stats();
    let start = std::time::Instant::now();
    let mut loads = vec![loadavg()];
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(60).min(Duration::from_secs(secs))).await;
        loads.push(loadavg());
    }
    let stats = sim.stats();
    drop(burners);
    app.stop().await;
    let took = start.elapsed().as_secs_f64();
    let over: Vec<_> = stats.per_second.iter().filter(|(_, n)| *n > 10).collect();
    println!(
        "arrivals: {} requests in {took:.0} s ({:.2}/s; N / rate_limit would be 10.00/s), \
         max in any sliding second {}, calendar seconds over 10: {}, 429s {}",
        stats.requests,
        stats.requests as f64 / took,
        stats.max_per_sliding_second,
        over.len(),
        stats.throttled
    );
    println!("load averages, once a minute: {loads:?}");
}

/// BENCHMARKS.md part 15 (item 3): a joiner's first-poll latency with the budget saturated
/// (300 jobs at 1 s, rate_limit 10): ten jobs added through the API, 3 s apart; the time from
/// the API's 201 to the simulator's first request for the job (seen within 10 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (BENCHMARKS.md part 15)"]
async fn measure_joiner_first_poll_latency() {
    let sim = steady_sim(310).await;
    let mut app = daemon(&sim, 300, |c| {
        c.interval = "1s";
        c.rate_limit = 10;
        c.max_in_flight = 4;
    });
    let http = app.http_addr().await;
    wait_for("the round under way", T, || async {
        (sim.stats().requests >= 30).then_some(())
    })
    .await;
    let mut latencies = Vec::new();
    for i in 300..310 {
        let joiner = job_id(i);
        let r = client()
            .post(format!("http://{http}/api/v1/jobs"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(format!(r#"{{"app_id": "demo-app", "job_id": "{joiner}"}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let added = std::time::Instant::now();
        while polls_of(&sim, &joiner) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        latencies.push(added.elapsed().as_millis());
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    app.stop().await;
    latencies.sort();
    println!(
        "joiner first poll, ms after the 201 (sorted): {latencies:?}; load {}",
        loadavg()
    );
}

/// BENCHMARKS.md part 15 (item 4): 2,000 `CLOUD_RECORD_SERVER_OVER` within a minute for jobs
/// of a 10,000-job list (rate_limit 10, interval 30 s: the round 33 times the budget), a tenth
/// of them dead of INTERNAL_ERROR. Each job shows STOPPED at the simulator just before its
/// callback; the time until every stormed job has been polled since, against the floor of
/// 2,000 / 10 = 200 s, and the INTERNAL_ERROR deaths alerted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (BENCHMARKS.md part 15): about four minutes"]
async fn measure_a_storm_of_server_over() {
    const JOBS: usize = 10_000;
    let storm: usize = std::env::var("RECWATCH_STORM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    let sim = steady_sim(JOBS).await;
    let mut app = daemon(&sim, JOBS, |c| {
        c.interval = "30s";
        c.rate_limit = 10;
        c.max_in_flight = 4;
    });
    let cb = app.callback_addr().await;
    wait_for("the round under way", T, || async {
        (sim.stats().requests >= 20).then_some(())
    })
    .await;
    let stormed: Vec<String> = (0..storm).map(|i| job_id(i * (JOBS / storm))).collect();
    let before = sim
        .stats()
        .by_job
        .get("demo-app")
        .cloned()
        .unwrap_or_default();
    let sender = client();
    let start = std::time::Instant::now();
    let load_start = loadavg();
    // Spread over a minute, as classes ending on the hour.
    let gap = Duration::from_secs(60) / storm as u32;
    for (n, job) in stormed.iter().enumerate() {
        let reason = if n % 10 == 0 {
            Some("INTERNAL_ERROR")
        } else {
            None
        };
        set_state(&sim, job, "STOPPED", reason);
        let status = event(&sender, cb, n, job, "CLOUD_RECORD_SERVER_OVER").await;
        assert_eq!(status, 200);
        tokio::time::sleep_until(tokio::time::Instant::from_std(start) + gap * (n as u32 + 1))
            .await;
    }
    let sent = start.elapsed().as_secs_f64();
    let polled_since = |job: &String| polls_of(&sim, job) > before.get(job).copied().unwrap_or(0);
    wait_for(
        "every stormed job polled",
        Duration::from_secs(900),
        || async { stormed.iter().all(polled_since).then_some(()) },
    )
    .await;
    let classified = start.elapsed().as_secs_f64();
    let deaths = storm.div_ceil(10) as i64;
    let alerted = wait_for("the deaths alerted", T, || async {
        let n = app
            .scalar(
                "SELECT COUNT(DISTINCT job_id) FROM alerts WHERE payload LIKE '%INTERNAL_ERROR%'",
            )
            .await;
        (n >= deaths).then_some(n)
    })
    .await;
    let alerted_at = start.elapsed().as_secs_f64();
    let text = crate::ha::scrape(app.http_addr().await).await;
    let dropped = metric(&text, "recwatch_poll_hints_total{outcome=\"dropped\"}");
    let stats = sim.stats();
    app.stop().await;
    println!(
        "storm: {storm} CLOUD_RECORD_SERVER_OVER sent in {sent:.0} s; every stormed job polled \
         after {classified:.0} s (floor {:.0} s: {:.2}x); {alerted} of {deaths} INTERNAL_ERROR \
         deaths alerted by {alerted_at:.0} s; hints dropped {dropped}; max arrivals in a sliding \
         second {}; load at start {load_start}, at end {}",
        storm as f64 / 10.0,
        classified / (storm as f64 / 10.0),
        stats.max_per_sliding_second,
        loadavg()
    );
}
