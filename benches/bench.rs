//! The benchmark: the real daemon code against `recwatch simulate`, in seven parts (see
//! BENCHMARKS.md). Run with `cargo bench --bench bench` (or `benches/run.sh`, which also sets
//! up the Python SDK). Parts can be picked by name: `cargo bench --bench bench -- storage`.
//! Prints a table and writes `target/bench-results.json`.

use anyhow::{Context, bail};
use recwatch::config::{Auth, Config, JobConfig};
use recwatch::domain::{PollOutcome, PollRecord};
use recwatch::outbox::{JobContext, Outbox};
use recwatch::secret::Secret;
use recwatch::store::Store;
use recwatch_rtc::client::RtcClient;
use recwatch_rtc::model::{JobSnapshot, State, StopReason};
use recwatch_sim::SimStats;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// Part 7 in its own file (under parts/, so cargo does not take it for a bench target).
#[path = "parts/page.rs"]
mod page;
// Parts 8 and 9 (push) likewise.
#[path = "parts/push.rs"]
mod push;
// Part 23 (issue 23: the storm's sender, CPU and instruction counts).
#[path = "parts/storm.rs"]
mod storm;
// Part 10 (issue 13: two backends, several instances).
#[path = "parts/ha.rs"]
mod ha;
// Part 11 (issue 15: remediation).
#[path = "parts/remed.rs"]
mod remed;
// Part 17 (issue 23: discovery storms).
#[path = "parts/discover.rs"]
mod discover;
// Part 24 (issue 23: `recwatch run` as a process, in part 1's run).
#[path = "parts/process.rs"]
mod process;

const BIN_BUILT: &str = env!("CARGO_BIN_EXE_recwatch");

/// The `recwatch` binary the parts run: the one built with the harness, or `BENCH_BIN` (an
/// A/B of two builds with one harness).
fn bin() -> String {
    std::env::var("BENCH_BIN").unwrap_or_else(|_| BIN_BUILT.to_string())
}
const AK: &str = "BENCHAK0000000000000";
const SK: &str = "bench-secret-key";
const PROJECT: &str = "bench-project";
const APP: &str = "demo-app";

fn main() -> anyhow::Result<()> {
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |name: &str| picked.is_empty() || picked.iter().any(|p| p == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir_in(target_dir())?;
    let mut results = serde_json::Map::new();
    results.insert("machine".into(), machine());
    if want("throughput") {
        results.insert("throughput".into(), rt.block_on(throughput(dir.path()))?);
    }
    if want("latency") {
        results.insert("latency".into(), rt.block_on(latency(dir.path()))?);
    }
    if want("footprint") {
        results.insert("footprint".into(), rt.block_on(footprint(dir.path()))?);
    }
    if want("storage") {
        results.insert("storage".into(), rt.block_on(storage(dir.path()))?);
    }
    if want("prune") {
        results.insert("prune".into(), rt.block_on(prune(dir.path()))?);
    }
    if want("jobs_api") {
        results.insert("jobs_api".into(), rt.block_on(jobs_api(dir.path()))?);
    }
    if want("page") {
        results.insert("page".into(), rt.block_on(page::status_page(dir.path()))?);
    }
    if want("push") {
        results.insert("push".into(), rt.block_on(push::push(dir.path(), false))?);
    }
    // Waits out a whole polling round (about 17 minutes): only when asked for by name.
    if picked.iter().any(|p| p == "push_dropped") {
        results.insert(
            "push_dropped".into(),
            rt.block_on(push::push(dir.path(), true))?,
        );
    }
    if want("callback_storm") {
        results.insert(
            "callback_storm".into(),
            rt.block_on(push::callback_storm(dir.path(), None))?,
        );
    }
    // Part 17: about 5 minutes; only when asked for by name.
    if picked.iter().any(|p| p == "discovery_storm") {
        results.insert(
            "discovery_storm".into(),
            rt.block_on(discover::discovery_storm(dir.path()))?,
        );
    }
    // Needs a PostgreSQL server (BENCH_PG_URL): only when asked for by name.
    if picked.iter().any(|p| p == "callback_storm_pg") {
        let url = std::env::var("BENCH_PG_URL").context(
            "set BENCH_PG_URL=postgres://user@127.0.0.1:port/db (see BENCHMARKS.md, part 10)",
        )?;
        results.insert(
            "callback_storm_pg".into(),
            rt.block_on(push::callback_storm(dir.path(), Some(&url)))?,
        );
    }
    // Part 23: the daemon under valgrind (a few minutes); only when asked for by name, on
    // PostgreSQL with BENCH_PG_URL.
    if picked.iter().any(|p| p == "callback_cost") {
        let url = std::env::var("BENCH_PG_URL").ok();
        results.insert(
            "callback_cost".into(),
            rt.block_on(storm::callback_cost(dir.path(), url.as_deref()))?,
        );
    }
    // Needs a PostgreSQL server (BENCH_PG_URL): only when asked for by name.
    if picked.iter().any(|p| p == "outbox_pg") {
        results.insert("outbox_pg".into(), rt.block_on(ha::outbox_pg(dir.path()))?);
    }
    if picked.iter().any(|p| p == "takeover") {
        results.insert("takeover".into(), rt.block_on(ha::takeover(dir.path()))?);
    }
    if picked.iter().any(|p| p == "rss_pair") {
        results.insert("rss_pair".into(), rt.block_on(ha::rss_pair(dir.path()))?);
    }
    // Part 11: about 2 minutes for the two modes.
    if want("remediation") {
        for (name, callbacks) in [
            ("remediation_polling", false),
            ("remediation_callbacks", true),
        ] {
            results.insert(
                name.into(),
                rt.block_on(remed::remediation(dir.path(), callbacks))?,
            );
        }
    }
    if std::env::var_os("BENCH_KEEP").is_some() {
        println!("\nkept {}", dir.keep().display());
    }
    let out = target_dir().join("bench-results.json");
    std::fs::write(&out, serde_json::to_string_pretty(&Value::Object(results))?)?;
    println!("\nresults written to {}", out.display());
    Ok(())
}

fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target")
}

fn row(name: &str, value: String, target: &str) {
    println!("  {name:<58} {value:>18}   {target}");
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.to_string()))
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory": mem,
    })
}

// ---------------------------------------------------------------------------------------------
// Processes: the simulator and the daemon run as the real binary.

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM for a clean stop, then make sure.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Sim {
    _proc: Proc,
    url: String,
    http: reqwest::Client,
}

impl Sim {
    fn spawn(args: &[&str]) -> anyhow::Result<Sim> {
        let mut child = Command::new(bin())
            .arg("simulate")
            .args([
                "--listen",
                "127.0.0.1:0",
                "--access-key",
                AK,
                "--secret-key",
                SK,
            ])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting recwatch simulate")?;
        let stdout = child.stdout.take().expect("piped");
        let proc = Proc(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .with_context(|| format!("no address in the simulator's first line {line:?}"))?
            .to_string();
        Ok(Sim {
            _proc: proc,
            url,
            http: reqwest::Client::new(),
        })
    }

    async fn stats(&self) -> anyhow::Result<SimStats> {
        Ok(self
            .http
            .get(format!("{}/_sim/stats", self.url))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn reset_stats(&self) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/_sim/reset-stats", self.url))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    async fn changes(&self) -> anyhow::Result<Vec<recwatch_sim::Change>> {
        Ok(self
            .http
            .get(format!("{}/_sim/changes", self.url))
            .send()
            .await?
            .json()
            .await?)
    }
}

fn jobs(n: usize) -> Vec<Arc<JobConfig>> {
    (0..n)
        .map(|i| {
            Arc::new(JobConfig {
                account: None,
                kind: recwatch::domain::JobKind::Individual,
                key: recwatch::domain::JobKey::new(APP, recwatch_sim::job_id(i)),
                name: None,
                interval: None,
                notify: None,
            })
        })
        .collect()
}

fn auth() -> Auth {
    Auth::AkSk {
        access_key: AK.into(),
        secret_key: Secret::new(SK),
        security_token: None,
    }
}

/// A config file for `recwatch run`.
fn config_file(dir: &Path, name: &str, endpoint: &str, jobs: usize, extra: &str) -> PathBuf {
    let db = dir.join(format!("{name}.db"));
    let mut text = format!(
        r#"[api]
endpoint = "{endpoint}"
project_id = "{PROJECT}"
[api.auth]
access_key = "{AK}"
secret_key = "{SK}"
[storage]
path = "{}"
[http]
listen = ""
{extra}
"#,
        db.display()
    );
    for i in 0..jobs {
        text.push_str(&format!(
            "[[jobs]]\napp_id = \"{APP}\"\njob_id = \"{}\"\n",
            recwatch_sim::job_id(i)
        ));
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

fn spawn_daemon(config: &Path) -> anyhow::Result<Proc> {
    let child = Command::new(bin())
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting recwatch run")?;
    Ok(Proc(child))
}

// ---------------------------------------------------------------------------------------------
// 1. Engine throughput with the budget lifted.

const THROUGHPUT_JOBS: usize = 10_000;
const MEASURE: Duration = Duration::from_secs(10);

async fn throughput(dir: &Path) -> anyhow::Result<Value> {
    println!("\n1. engine throughput, budget lifted ({THROUGHPUT_JOBS} jobs, AK/SK signed)");
    let sim = Sim::spawn(&["--static", "--jobs", &THROUGHPUT_JOBS.to_string()])?;
    let mut out = serde_json::Map::new();
    for in_flight in [32usize, 64] {
        let mut config = Config::defaults(auth());
        config.api.endpoint = sim.url.parse()?;
        config.api.project_id = Some(PROJECT.into());
        config.api.rate_limit = 1_000_000;
        config.api.max_in_flight = in_flight;
        // Every job is due again at once: the poller is never idle.
        config.poll.interval = Duration::from_millis(1);
        config.storage.path = dir.join(format!("engine-{in_flight}.db"));
        config.jobs = jobs(THROUGHPUT_JOBS);
        sim.reset_stats().await?;
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let started = Instant::now();
        let daemon = tokio::spawn(recwatch::startup::run(config.clone(), shutdown, |_| {}));
        // The first pass writes one transition per job (unknown -> RUNNING).
        while sim.stats().await?.requests < THROUGHPUT_JOBS as u64 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let first_pass = started.elapsed();
        sim.reset_stats().await?;
        let t0 = Instant::now();
        tokio::time::sleep(MEASURE).await;
        let stats = sim.stats().await?;
        let secs = t0.elapsed().as_secs_f64();
        stop.send_replace(true);
        daemon.await??;
        let ok = stats.by_status.get(&200).copied().unwrap_or(0);
        let rate = stats.requests as f64 / secs;
        let store = Store::open(&config.storage.path).await?;
        let transitions: i64 = sqlx::query_scalar("SELECT count(*) FROM transitions")
            .fetch_one(store.db().reader())
            .await?;
        store.close().await;
        row(
            &format!("recwatch poller, max_in_flight {in_flight}: steady state"),
            format!("{rate:.0} polls/s"),
            "",
        );
        row(
            &format!("  first pass ({THROUGHPUT_JOBS} polls + transitions)"),
            format!(
                "{:.0} polls/s",
                THROUGHPUT_JOBS as f64 / first_pass.as_secs_f64()
            ),
            "",
        );
        out.insert(
            format!("engine_{in_flight}"),
            json!({
                "polls_per_second": rate,
                "requests": stats.requests,
                "ok": ok,
                "seconds": secs,
                "first_pass_seconds": first_pass.as_secs_f64(),
                "transitions_written": transitions,
            }),
        );
    }

    out.insert("process_32".into(), process::run_process(&sim, dir).await?);

    for in_flight in [32usize, 64] {
        sim.reset_stats().await?;
        let rate = plain_client(&sim.url, in_flight).await?;
        let stats = sim.stats().await?;
        row(
            &format!("plain reqwest keep-alive, {in_flight} concurrent, signed"),
            format!("{rate:.0} req/s"),
            "",
        );
        out.insert(
            format!("plain_{in_flight}"),
            json!({ "requests_per_second": rate, "requests": stats.requests, "by_status": stats.by_status }),
        );
    }

    let python = std::env::var("BENCH_PYTHON")
        .unwrap_or_else(|_| format!("{}/.venv-bench/bin/python", env!("CARGO_MANIFEST_DIR")));
    if Path::new(&python).exists() {
        sim.reset_stats().await?;
        let script = format!("{}/benches/sdk_poll.py", env!("CARGO_MANIFEST_DIR"));
        let output = tokio::process::Command::new(&python)
            .args([
                &script,
                &sim.url,
                AK,
                SK,
                PROJECT,
                APP,
                &THROUGHPUT_JOBS.to_string(),
                &MEASURE.as_secs().to_string(),
            ])
            .output()
            .await?;
        if !output.status.success() {
            bail!(
                "sdk_poll.py failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let sdk: Value = serde_json::from_slice(&output.stdout)?;
        let stats = sim.stats().await?;
        row(
            "official Python SDK, one loop",
            format!("{:.0} req/s", sdk["per_second"].as_f64().unwrap_or(0.0)),
            &format!("errors {}", sdk["errors"]),
        );
        out.insert(
            "sdk".into(),
            json!({ "sdk": sdk, "simulator_by_status": stats.by_status }),
        );
    } else {
        println!(
            "  (no {python}: the Python SDK comparison is skipped; benches/run.sh sets it up)"
        );
    }

    let engine = out["engine_32"]["polls_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        .max(out["engine_64"]["polls_per_second"].as_f64().unwrap_or(0.0));
    let plain = out["plain_32"]["requests_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        .max(
            out["plain_64"]["requests_per_second"]
                .as_f64()
                .unwrap_or(0.0),
        );
    let sdk = out
        .get("sdk")
        .and_then(|s| s["sdk"]["per_second"].as_f64())
        .unwrap_or(f64::NAN);
    row(
        "engine / plain client",
        format!("{:.2}", engine / plain),
        target(engine / plain >= 0.5, ">= 0.5"),
    );
    row(
        "engine / SDK loop",
        format!("{:.1}x", engine / sdk),
        target(engine / sdk >= 10.0, ">= 10x"),
    );
    let process = out["process_32"]["polls_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    row(
        "recwatch run (process) / plain client",
        format!("{:.2}", process / plain),
        "",
    );
    row(
        "recwatch run (process) / SDK loop",
        format!("{:.1}x", process / sdk),
        target(process / sdk >= 25.0, ">= 25x (issue 23)"),
    );
    Ok(Value::Object(out))
}

fn target(met: bool, what: &str) -> &'static str {
    let s = format!("target {what}: {}", if met { "met" } else { "NOT met" });
    Box::leak(s.into_boxed_str())
}

/// `in_flight` keep-alive connections asking for the jobs round-robin, each request signed
/// exactly as recwatch signs it, for `MEASURE`.
async fn plain_client(url: &str, in_flight: usize) -> anyhow::Result<f64> {
    let mut api = Config::defaults(auth()).api;
    api.endpoint = url.parse()?;
    api.project_id = Some(PROJECT.into());
    api.max_in_flight = in_flight;
    let signer = RtcClient::new(&api.client_config())?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(in_flight)
        .build()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..in_flight {
        let http = http.clone();
        let signer = signer.clone();
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            let mut i = t;
            while started.elapsed() < MEASURE {
                let path = signer.job_path(APP, &recwatch_sim::job_id(i % THROUGHPUT_JOBS));
                let mut request = http.get(format!("{url}{path}"));
                for (name, value) in signer.headers(&path, chrono::Utc::now()) {
                    if name != "Host" {
                        request = request.header(name, value);
                    }
                }
                let response = request.send().await?;
                anyhow::ensure!(response.status() == 200, "status {}", response.status());
                response.bytes().await?;
                n += 1;
                i += in_flight;
            }
            Ok::<_, anyhow::Error>(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// 2. Detection latency at a budget.

const LATENCY_JOBS: usize = 100;
const LATENCY_RATE: u32 = 10;
const LATENCY_INTERVAL: Duration = Duration::from_secs(10);
const LATENCY_RUN: Duration = Duration::from_secs(90);
const CHURN: f64 = 2.0;

#[derive(Clone)]
struct Arrival {
    at: chrono::DateTime<chrono::Utc>,
    body: Value,
}

async fn receiver() -> anyhow::Result<(String, Arc<Mutex<Vec<Arrival>>>)> {
    use axum::routing::post;
    let seen: Arc<Mutex<Vec<Arrival>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| {
            let at = chrono::Utc::now();
            let s = s.clone();
            async move {
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                s.lock().unwrap().push(Arrival { at, body });
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, seen))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn latency(dir: &Path) -> anyhow::Result<Value> {
    let period = LATENCY_INTERVAL
        .as_secs_f64()
        .max(LATENCY_JOBS as f64 / LATENCY_RATE as f64);
    println!(
        "\n2. detection latency: {LATENCY_JOBS} jobs, rate_limit {LATENCY_RATE}/s, interval {}s, P = {period}s, churn {CHURN}/s, {}s",
        LATENCY_INTERVAL.as_secs(),
        LATENCY_RUN.as_secs()
    );
    let sim = Sim::spawn(&[
        "--static",
        "--jobs",
        &LATENCY_JOBS.to_string(),
        "--rate-limit",
        &LATENCY_RATE.to_string(),
        "--churn",
        &CHURN.to_string(),
        "--seed",
        "7",
    ])?;
    let (hook, arrivals) = receiver().await?;
    let config = config_file(
        dir,
        "latency",
        &sim.url,
        LATENCY_JOBS,
        &format!(
            r#"[poll]
interval = "{}s"
stop_after_terminal = false
[rules]
stopped_by_tenant = "warning"
[[notify.webhook]]
name = "bench"
url = "{hook}"
"#,
            LATENCY_INTERVAL.as_secs()
        ),
    );
    api_rate(&config, LATENCY_RATE)?;
    sim.reset_stats().await?;
    let daemon = spawn_daemon(&config)?;
    let started = chrono::Utc::now();
    tokio::time::sleep(LATENCY_RUN).await;
    drop(daemon);
    let stats = sim.stats().await?;
    let changes = sim.changes().await?;
    let arrivals = arrivals.lock().unwrap().clone();

    // Changes to STOPPED after the first full pass, and early enough to be seen before the end.
    let from = started + chrono::Duration::milliseconds((period * 1000.0) as i64);
    let until = started + chrono::Duration::from_std(LATENCY_RUN).unwrap()
        - chrono::Duration::milliseconds((period * 1000.0) as i64 + 2000);
    let mut latencies = Vec::new();
    let mut matched = std::collections::HashSet::new();
    for a in &arrivals {
        if a.body["status"] != "firing" || a.body["transition"]["to"] != "STOPPED" {
            continue;
        }
        let job = a.body["job"]["job_id"].as_str().unwrap_or_default();
        let observed: chrono::DateTime<chrono::Utc> = a.body["transition"]["observed_at"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or(a.at);
        // The change the poll saw: that job's latest change to STOPPED before it was observed.
        let Some((i, c)) = changes
            .iter()
            .enumerate()
            .rfind(|(_, c)| c.job_id == job && c.state == "STOPPED" && c.at <= observed)
        else {
            continue;
        };
        if c.at < from || c.at > until {
            continue;
        }
        matched.insert(i);
        latencies.push((a.at - c.at).num_microseconds().unwrap_or(0) as f64 / 1e6);
    }
    latencies.sort_by(f64::total_cmp);
    let stops: Vec<usize> = changes
        .iter()
        .enumerate()
        .filter(|(_, c)| c.state == "STOPPED" && c.at >= from && c.at <= until)
        .map(|(i, _)| i)
        .collect();
    let missed: Vec<usize> = stops
        .iter()
        .copied()
        .filter(|i| !matched.contains(i))
        .collect();
    // A stop is invisible to polling when the job changed again before its next poll.
    let undone_within_p = missed
        .iter()
        .filter(|i| {
            let c = &changes[**i];
            changes.iter().any(|d| {
                d.job_id == c.job_id
                    && d.at > c.at
                    && (d.at - c.at).num_milliseconds() as f64 <= period * 1000.0 + 1000.0
            })
        })
        .count();
    let p50 = percentile(&latencies, 50.0);
    let p99 = percentile(&latencies, 99.0);
    let max = latencies.last().copied().unwrap_or(f64::NAN);
    row(
        "changes to STOPPED in the window / alerted",
        format!("{} / {}", stops.len(), latencies.len()),
        &format!(
            "not alerted: {} ({} changed back within P + 1 s)",
            missed.len(),
            undone_within_p
        ),
    );
    row("latency p50", format!("{p50:.2} s"), "");
    row(
        "latency p99",
        format!("{p99:.2} s"),
        target(
            p99 <= period + 1.0,
            &format!("<= P + 1 s = {:.0} s", period + 1.0),
        ),
    );
    row("latency max", format!("{max:.2} s"), "");
    row(
        "max requests in any sliding second (simulator)",
        format!("{}", stats.max_per_sliding_second),
        target(
            stats.max_per_sliding_second <= LATENCY_RATE as u64,
            &format!("<= {LATENCY_RATE}"),
        ),
    );
    row(
        "requests / throttled (429)",
        format!("{} / {}", stats.requests, stats.throttled),
        "",
    );
    Ok(json!({
        "period_seconds": period,
        "changes_to_stopped": stops.len(),
        "alerted": latencies.len(),
        "not_alerted": missed.len(),
        "not_alerted_changed_back_within_p": undone_within_p,
        "p50_seconds": p50,
        "p99_seconds": p99,
        "max_seconds": max,
        "webhooks": arrivals.len(),
        "requests": stats.requests,
        "throttled": stats.throttled,
        "max_per_sliding_second": stats.max_per_sliding_second,
    }))
}

/// Sets `api.rate_limit` in a config file written by `config_file`.
fn api_rate(config: &Path, rate: u32) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)?;
    std::fs::write(
        config,
        text.replacen("[api]\n", &format!("[api]\nrate_limit = {rate}\n"), 1),
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Footprint.

const FOOTPRINT_JOBS: usize = 10_000;
const FOOTPRINT_WARMUP: Duration = Duration::from_secs(10);
const FOOTPRINT_RUN: Duration = Duration::from_secs(60);

fn proc_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').context("odd /proc stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

fn proc_status_kb(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .with_context(|| format!("no {key}"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("odd status line")?
        .parse()?)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

async fn footprint(dir: &Path) -> anyhow::Result<Value> {
    println!(
        "\n3. footprint of `recwatch run`: {FOOTPRINT_JOBS} jobs at 10 requests/s, measured over {}s after {}s",
        FOOTPRINT_RUN.as_secs(),
        FOOTPRINT_WARMUP.as_secs()
    );
    let sim = Sim::spawn(&[
        "--static",
        "--jobs",
        &FOOTPRINT_JOBS.to_string(),
        "--rate-limit",
        "10",
    ])?;
    let config = config_file(dir, "footprint", &sim.url, FOOTPRINT_JOBS, "");
    let daemon = spawn_daemon(&config)?;
    let pid = daemon.0.id();
    tokio::time::sleep(FOOTPRINT_WARMUP).await;
    sim.reset_stats().await?;
    let t0 = Instant::now();
    let ticks0 = proc_ticks(pid)?;
    tokio::time::sleep(FOOTPRINT_RUN).await;
    let ticks1 = proc_ticks(pid)?;
    let wall = t0.elapsed().as_secs_f64();
    let hwm = proc_status_kb(pid, "VmHWM")?;
    let rss = proc_status_kb(pid, "VmRSS")?;
    let stats = sim.stats().await?;
    drop(daemon);
    let cpu = (ticks1 - ticks0) as f64 / clock_ticks() / wall * 100.0;
    let hwm_mb = hwm as f64 / 1024.0;
    row(
        "peak RSS (VmHWM)",
        format!("{hwm_mb:.1} MiB"),
        target(hwm_mb <= 50.0, "<= 50 MB"),
    );
    row(
        "RSS at the end (VmRSS)",
        format!("{:.1} MiB", rss as f64 / 1024.0),
        "",
    );
    row(
        "CPU share of one core",
        format!("{cpu:.2} %"),
        target(cpu <= 3.0, "<= 3%"),
    );
    row(
        "polls in the window",
        format!("{:.1} /s", stats.requests as f64 / wall),
        &format!("max in a sliding second {}", stats.max_per_sliding_second),
    );
    Ok(json!({
        "vm_hwm_kib": hwm,
        "vm_rss_kib": rss,
        "cpu_percent_of_one_core": cpu,
        "seconds": wall,
        "requests": stats.requests,
        "max_per_sliding_second": stats.max_per_sliding_second,
    }))
}

// ---------------------------------------------------------------------------------------------
// 4. Storage.

const HISTORY_ROWS: i64 = 1_000_000;
const HISTORY_JOBS: i64 = 10_000;
const WRITE_RUN: Duration = Duration::from_secs(5);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn storage(dir: &Path) -> anyhow::Result<Value> {
    println!(
        "\n4. storage: history on {HISTORY_ROWS} transitions, and sustained transition writes"
    );
    let config = config_file(dir, "history", "http://127.0.0.1:9", 0, "");
    let db = dir.join("history.db");
    let store = Store::open(&db).await?;
    let built = Instant::now();
    let snapshot = serde_json::to_string(&snapshot_for(0, true))?;
    let mut tx = store.db().writer().begin().await?;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 - 1)
         INSERT INTO transitions (app_id, job_id, from_state, to_state, stop_reason, description,
             create_time, start_time, stop_time, update_time, observed_at, snapshot)
         SELECT 'demo-app', printf('job-%04d', i % ?2),
             CASE WHEN i < ?2 THEN NULL WHEN (i / ?2) % 2 = 1 THEN 'RUNNING' ELSE 'STOPPED' END,
             CASE WHEN (i / ?2) % 2 = 1 THEN 'STOPPED' ELSE 'RUNNING' END,
             CASE WHEN (i / ?2) % 2 = 1 THEN 'INTERNAL_ERROR' END, 'bench',
             '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:01.000Z', NULL,
             strftime('%Y-%m-%dT%H:%M:%fZ', 1767225600 + i, 'unixepoch'),
             strftime('%Y-%m-%dT%H:%M:%fZ', 1767225600 + i, 'unixepoch'), ?3
         FROM n",
    )
    .bind(HISTORY_ROWS)
    .bind(HISTORY_JOBS)
    .bind(&snapshot)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO jobs (app_id, job_id, state, first_seen_at)
         SELECT DISTINCT app_id, job_id, 'RUNNING', '2026-01-01T00:00:00.000Z' FROM transitions",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    // One transaction of a million rows leaves a 460 MB WAL that every later process would
    // scan when it opens the file (130 ms). The daemon's WAL never grows like that (SQLite
    // checkpoints every 1000 pages), so start from the file a daemon would leave.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(store.db().writer())
        .await?;
    let build_secs = built.elapsed().as_secs_f64();
    store.close().await;
    row(
        &format!("build {HISTORY_ROWS} transitions (one transaction)"),
        format!("{build_secs:.1} s"),
        "",
    );
    let size_mb = std::fs::metadata(&db)?.len() as f64 / 1e6;

    let job = "job-0042";
    let mut cli = Vec::new();
    let mut lines = 0;
    for _ in 0..9 {
        let t = Instant::now();
        let out = Command::new(bin())
            .args(["--config"])
            .arg(&config)
            .args(["history", "--job", job])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .output()?;
        cli.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(out.status.success(), "recwatch history failed");
        lines = out.stdout.split(|b| *b == b'\n').count();
    }
    let mut cli_version = Vec::new();
    for _ in 0..9 {
        let t = Instant::now();
        Command::new(bin())
            .arg("--version")
            .stdout(Stdio::null())
            .status()?;
        cli_version.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let store = Store::open(&db).await?;
    let mut query_job = Vec::new();
    let mut query_all = Vec::new();
    for i in 0..21 {
        let t = Instant::now();
        let rows = store.transitions().history(Some(job), None, 1000).await?;
        query_job.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(rows.len() == (HISTORY_ROWS / HISTORY_JOBS) as usize);
        let j = recwatch_sim::job_id(i * 97 % HISTORY_JOBS as usize);
        let t = Instant::now();
        store.transitions().history(Some(&j), None, 1000).await?;
        query_job.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        store.transitions().history(None, None, 1000).await?;
        query_all.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    store.close().await;
    let (cli_ms, version_ms, q_ms, all_ms) = (
        median(cli),
        median(cli_version),
        median(query_job),
        median(query_all),
    );
    row(
        &format!("`recwatch history --job {job}` wall time, median of 9"),
        format!("{cli_ms:.1} ms"),
        &format!("{} lines; `recwatch --version` {version_ms:.1} ms", lines),
    );
    row(
        "Transitions::history(job, limit 1000) query, median",
        format!("{q_ms:.2} ms"),
        target(q_ms < 10.0, "< 10 ms"),
    );
    row(
        "Transitions::history(all jobs, limit 1000) query, median",
        format!("{all_ms:.2} ms"),
        "",
    );

    let full = write_rate(dir, "writes-full", false).await?;
    let normal = write_rate(dir, "writes-normal", true).await?;
    row(
        "transition writes through Outbox, synchronous=FULL",
        format!("{full:.0} /s"),
        "(what recwatch uses)",
    );
    row(
        "transition writes through Outbox, synchronous=NORMAL",
        format!("{normal:.0} /s"),
        "(for comparison only)",
    );
    Ok(json!({
        "rows": HISTORY_ROWS,
        "database_mb": size_mb,
        "build_seconds": build_secs,
        "history_cli_ms_median": cli_ms,
        "history_cli_lines": lines,
        "version_cli_ms_median": version_ms,
        "history_query_job_ms_median": q_ms,
        "history_query_all_ms_median": all_ms,
        "writes_per_second_full": full,
        "writes_per_second_normal": normal,
    }))
}

fn snapshot_for(i: usize, stopped: bool) -> JobSnapshot {
    JobSnapshot {
        job_id: Some(recwatch_sim::job_id(i)),
        app_id: Some(APP.into()),
        state: Some(if stopped {
            State::Stopped
        } else {
            State::Running
        }),
        stop_reason: stopped.then_some(StopReason::InternalError),
        description: Some("bench".into()),
        create_time: Some("2026-01-01T00:00:00.000Z".into()),
        start_time: Some("2026-01-01T00:00:01.000Z".into()),
        ..JobSnapshot::default()
    }
}

/// Transitions per second, one poll outcome per transaction as the poller writes them:
/// jobs flip RUNNING <-> STOPPED (INTERNAL_ERROR), so every other write also makes an alert.
async fn write_rate(dir: &Path, name: &str, normal: bool) -> anyhow::Result<f64> {
    let store = Store::open(&dir.join(format!("{name}.db"))).await?;
    if normal {
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(store.db().writer())
            .await?;
    }
    let rate = write_rate_on(&store).await?;
    store.close().await;
    Ok(rate)
}

/// [`write_rate`] on an open store of either backend, for `WRITE_RUN`.
async fn write_rate_on(store: &Store) -> anyhow::Result<f64> {
    let before = transitions(store).await?;
    let mut config = Config::defaults(auth());
    config.jobs = jobs(1000);
    let outbox = Outbox::new();
    let mut phases: Vec<Option<recwatch::domain::Phase>> = vec![None; config.jobs.len()];
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed() < WRITE_RUN {
        let i = n % config.jobs.len();
        let stopped = phases[i]
            .as_ref()
            .is_some_and(|p| matches!(p.state, State::Running));
        let job = snapshot_for(i, stopped);
        let to = recwatch::domain::Phase {
            state: if stopped {
                State::Stopped
            } else {
                State::Running
            },
            stop_reason: stopped.then_some(StopReason::InternalError),
        };
        let record = PollRecord {
            app_id: APP.into(),
            job_id: job.job_id.clone().unwrap_or_default(),
            name: None,
            kind: recwatch::domain::JobKind::Individual,
            polled_at: chrono::Utc::now(),
            outcome: PollOutcome::Ok {
                raw: serde_json::to_string(&job)?,
                job: Box::new(job),
                request_id: None,
                transition: Some((phases[i].clone(), to.clone())),
            },
        };
        let ctx = JobContext {
            job: &config.jobs[i],
            in_init: None,
            now: chrono::Utc::now(),
        };
        outbox
            .write_job_polls(store, &[record], &ctx, &config)
            .await?;
        phases[i] = Some(to);
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let written = transitions(store).await? - before;
    anyhow::ensure!(written as usize == n, "one transition row per change");
    Ok(rate)
}

async fn transitions(store: &Store) -> anyhow::Result<i64> {
    let count = "SELECT count(*) FROM transitions";
    Ok(match store.db().pg_pool() {
        Some(pg) => sqlx::query_scalar(count).fetch_one(pg).await?,
        None => {
            sqlx::query_scalar(count)
                .fetch_one(store.db().reader())
                .await?
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Shared by parts 5 and 6: the real daemon with its log read line by line.

/// `recwatch run` with RUST_LOG `filter`; each stderr line arrives with when it was read.
fn spawn_daemon_logged(
    config: &Path,
    filter: &str,
) -> anyhow::Result<(Proc, std::sync::mpsc::Receiver<(Instant, String)>)> {
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", filter)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting recwatch run")?;
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), line));
        }
    });
    Ok((Proc(child), rx))
}

/// Waits for a log line containing `needle`; the lines before it are dropped.
async fn wait_line(
    rx: &std::sync::mpsc::Receiver<(Instant, String)>,
    needle: &str,
    timeout: Duration,
) -> anyhow::Result<(Instant, String)> {
    let start = Instant::now();
    loop {
        while let Ok((at, line)) = rx.try_recv() {
            if line.contains(needle) {
                return Ok((at, line));
            }
        }
        if start.elapsed() > timeout {
            bail!("no log line with {needle:?} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `key=value` from a text log line.
fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .map(|v| v.trim_matches('"'))
}

// ---------------------------------------------------------------------------------------------
// 5. Retention: a million old rows pruned while polling at the budget.

const PRUNE_TRANSITIONS: i64 = 1_000_000;
const PRUNE_ALERTS: i64 = 100_000;
const PRUNE_EPISODES: i64 = 50_000;
const PRUNE_JOBS: usize = 30;
/// 30 jobs every 3 s = 10 requests/s = the default `api.rate_limit`: polling at the budget.
const PRUNE_PERIOD: Duration = Duration::from_secs(3);

/// Polls as the simulator sees them (its per-job counters, read every 50 ms) and what the
/// daemon logs meanwhile.
#[derive(Default)]
struct PollWatch {
    polls: std::collections::HashMap<String, Vec<Instant>>,
    counts: std::collections::BTreeMap<String, u64>,
    /// Lines at WARN or ERROR (e.g. a 429 from the simulator), with when they were read.
    warnings: Vec<(Instant, String)>,
    /// The daemon's "pruned rows" line.
    pruned: Option<(Instant, String)>,
}

impl PollWatch {
    async fn sample(
        &mut self,
        sim: &Sim,
        log: &std::sync::mpsc::Receiver<(Instant, String)>,
    ) -> anyhow::Result<()> {
        let stats = sim.stats().await?;
        let now = Instant::now();
        for (job, n) in stats.by_job.get(APP).into_iter().flatten() {
            let seen = self.counts.entry(job.clone()).or_default();
            for _ in *seen..*n {
                self.polls.entry(job.clone()).or_default().push(now);
            }
            *seen = *n;
        }
        while let Ok((at, line)) = log.try_recv() {
            if line.contains("pruned rows") {
                self.pruned = Some((at, line));
            } else if line.contains("WARN") || line.contains("ERROR") {
                self.warnings.push((at, line));
            }
        }
        Ok(())
    }

    /// Gaps between a job's consecutive polls whose later poll came in [from, to), sorted,
    /// and the longest of those that do not span a throttle pause (a 429 from the simulator
    /// pauses every poll for 2-3 s by design; such a gap says nothing about the database).
    fn gaps(&self, from: Instant, to: Instant) -> (Vec<f64>, f64, usize) {
        let throttles: Vec<Instant> = self
            .warnings
            .iter()
            .filter(|(_, l)| l.contains("throttled"))
            .map(|(at, _)| *at)
            .collect();
        let (mut gaps, mut unthrottled_max, mut spanning) = (Vec::new(), 0f64, 0);
        for times in self.polls.values() {
            for w in times.windows(2) {
                if w[1] < from || w[1] >= to {
                    continue;
                }
                let gap = w[1].duration_since(w[0]).as_secs_f64();
                gaps.push(gap);
                if throttles.iter().any(|t| *t >= w[0] && *t <= w[1]) {
                    spanning += 1;
                } else {
                    unthrottled_max = unthrottled_max.max(gap);
                }
            }
        }
        gaps.sort_by(f64::total_cmp);
        (gaps, unthrottled_max, spanning)
    }
}

fn gap_summary(gaps: &[f64]) -> Value {
    let pick = |p: f64| {
        if gaps.is_empty() {
            f64::NAN
        } else {
            percentile(gaps, p)
        }
    };
    json!({
        "count": gaps.len(),
        "p50_seconds": pick(0.5),
        "p99_seconds": pick(0.99),
        "max_seconds": gaps.last().copied().unwrap_or(f64::NAN),
        "over_1_5_p": gaps.iter().filter(|g| **g > PRUNE_PERIOD.as_secs_f64() * 1.5).count(),
    })
}

/// How long the baseline (the same daemon and jobs, nothing to prune) is watched.
const PRUNE_BASELINE: Duration = Duration::from_secs(90);

async fn prune(dir: &Path) -> anyhow::Result<Value> {
    println!(
        "\n5. retention: prune {PRUNE_TRANSITIONS} transitions, {PRUNE_ALERTS} alerts with {} deliveries and {PRUNE_EPISODES} closed episodes, all 200 days old, while `recwatch run` polls {PRUNE_JOBS} jobs every {}s at 10 requests/s; first {}s of the same with nothing to prune",
        2 * PRUNE_ALERTS,
        PRUNE_PERIOD.as_secs(),
        PRUNE_BASELINE.as_secs()
    );
    let p = PRUNE_PERIOD.as_secs_f64();
    let sim = Sim::spawn(&[
        "--static",
        "--jobs",
        &PRUNE_JOBS.to_string(),
        "--rate-limit",
        "10",
    ])?;
    let extra = format!("[poll]\ninterval = \"{}s\"\n", PRUNE_PERIOD.as_secs());

    // The baseline: how regular polling is on this machine now, with an empty database.
    let config = config_file(dir, "prune-baseline", &sim.url, PRUNE_JOBS, &extra);
    let (daemon, log) = spawn_daemon_logged(&config, "warn,recwatch=info")?;
    let started = Instant::now();
    let mut base = PollWatch::default();
    while started.elapsed() < PRUNE_BASELINE {
        base.sample(&sim, &log).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(daemon);
    let base_429 = sim.stats().await?.throttled;
    // The first round of polls is spread over P: gaps count from the second.
    let (base_gaps, base_unthrottled, base_spanning) =
        base.gaps(started + PRUNE_PERIOD, Instant::now());

    let config = config_file(dir, "prune", &sim.url, PRUNE_JOBS, &extra);
    let db = dir.join("prune.db");
    let built = Instant::now();
    build_old_rows(&db).await?;
    let build_secs = built.elapsed().as_secs_f64();
    row(
        "build the old rows (one transaction per table)",
        format!("{build_secs:.1} s"),
        &format!("{:.0} MB", std::fs::metadata(&db)?.len() as f64 / 1e6),
    );
    sim.reset_stats().await?;
    let (daemon, log) = spawn_daemon_logged(&config, "warn,recwatch=info")?;
    let started = Instant::now();
    let mut watch = PollWatch::default();
    loop {
        watch.sample(&sim, &log).await?;
        // Keep measuring for 10 periods after the prune, to compare with.
        if let Some((at, _)) = &watch.pruned
            && at.elapsed() > PRUNE_PERIOD * 10
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!("no \"pruned rows\" log line within 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(daemon);
    let prune_429 = sim.stats().await?.throttled;
    let (done_at, line) = watch.pruned.clone().expect("loop ends with it");
    let prune_secs = done_at.duration_since(started).as_secs_f64();
    let (during, during_unthrottled, during_spanning) = watch.gaps(started + PRUNE_PERIOD, done_at);
    let (after, _, _) = watch.gaps(done_at, Instant::now());
    let field = |k: &str| log_field(&line, k).and_then(|v| v.parse::<u64>().ok());
    let store = Store::open(&db).await?;
    let left = |sql: &'static str| {
        let store = store.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(store.db().reader())
                .await
        }
    };
    let kept = json!({
        "transitions": left("SELECT count(*) FROM transitions").await?,
        "alerts": left("SELECT count(*) FROM alerts").await?,
        "deliveries": left("SELECT count(*) FROM deliveries").await?,
        "episodes": left("SELECT count(*) FROM episodes").await?,
    });
    store.close().await;

    let show = |gaps: &[f64]| {
        let g = gap_summary(gaps);
        format!(
            "{:.2} / {:.2} / {:.2} s",
            g["p50_seconds"].as_f64().unwrap_or(f64::NAN),
            g["p99_seconds"].as_f64().unwrap_or(f64::NAN),
            g["max_seconds"].as_f64().unwrap_or(f64::NAN)
        )
    };
    row(
        "prune, from daemon start to its log line",
        format!("{prune_secs:.1} s"),
        &format!(
            "{} rows in {} transactions",
            ["alerts", "deliveries", "episodes", "transitions"]
                .iter()
                .filter_map(|k| field(k))
                .sum::<u64>(),
            field("batches").unwrap_or(0)
        ),
    );
    row(
        "longest transaction (write lock held)",
        format!("{} ms", field("longest_batch_ms").unwrap_or(0)),
        "",
    );
    row(
        &format!("baseline, nothing to prune: gaps p50 / p99 / max (P = {p:.0} s)"),
        show(&base_gaps),
        &format!(
            "{} gaps; {base_429} answered 429, {base_spanning} gaps span the pause; max of the others {base_unthrottled:.2} s",
            base_gaps.len()
        ),
    );
    row(
        "during the prune: gaps p50 / p99 / max",
        show(&during),
        &format!(
            "{} gaps; {prune_429} answered 429 (whole run), {during_spanning} gaps span the pause; max of the others {during_unthrottled:.2} s",
            during.len()
        ),
    );
    row(
        "no poll late by more than P (a gap of at most 2P), 429 pauses aside",
        format!("{:.2} s", during_unthrottled - p),
        target(during_unthrottled - p <= p, "late <= P"),
    );
    row("after it: gaps p50 / p99 / max", show(&after), "");
    row("rows left (recent ones only)", kept.to_string(), "");
    for (at, w) in &watch.warnings {
        println!(
            "  daemon warning at {:.1} s: {w}",
            at.duration_since(started).as_secs_f64()
        );
    }
    Ok(json!({
        "old_rows": {
            "transitions": PRUNE_TRANSITIONS,
            "alerts": PRUNE_ALERTS,
            "deliveries": 2 * PRUNE_ALERTS,
            "episodes": PRUNE_EPISODES,
        },
        "period_seconds": p,
        "build_seconds": build_secs,
        "prune_seconds": prune_secs,
        "log_line": line,
        "pruned": {
            "alerts": field("alerts"),
            "deliveries": field("deliveries"),
            "episodes": field("episodes"),
            "transitions": field("transitions"),
            "batches": field("batches"),
            "longest_batch_ms": field("longest_batch_ms"),
        },
        "baseline": {
            "seconds": PRUNE_BASELINE.as_secs(),
            "gaps": gap_summary(&base_gaps),
            "throttled_429": base_429,
            "gaps_spanning_a_throttle_pause": base_spanning,
            "max_other_gap_seconds": base_unthrottled,
        },
        "during": {
            "gaps": gap_summary(&during),
            "throttled_429_whole_run": prune_429,
            "gaps_spanning_a_throttle_pause": during_spanning,
            "max_other_gap_seconds": during_unthrottled,
            "max_lateness_other_seconds": during_unthrottled - p,
        },
        "after": { "gaps": gap_summary(&after) },
        "daemon_warnings": watch.warnings.iter().map(|(at, l)| json!([at.duration_since(started).as_secs_f64(), l])).collect::<Vec<_>>(),
        "left": kept,
    }))
}

/// A database such as a year of running leaves: rows 200 days old in every table retention
/// covers (transitions with a ~400-byte snapshot, alerts with a ~600-byte payload and two
/// finished deliveries each, closed episodes), checkpointed like a daemon's file.
async fn build_old_rows(db: &Path) -> anyhow::Result<()> {
    let store = Store::open(db).await?;
    let snapshot = serde_json::to_string(&snapshot_for(0, true))?;
    let payload = format!("{{\"bench\":\"{}\"}}", "x".repeat(600));
    let base = chrono::Utc::now().timestamp() - 200 * 86_400;
    let mut tx = store.db().writer().begin().await?;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 - 1)
         INSERT INTO transitions (app_id, job_id, from_state, to_state, stop_reason, description,
             create_time, start_time, stop_time, update_time, observed_at, snapshot)
         SELECT 'demo-app', printf('job-%04d', i % 1000), 'RUNNING', 'STOPPED', 'INTERNAL_ERROR',
             'bench', NULL, NULL, NULL, NULL,
             strftime('%Y-%m-%dT%H:%M:%fZ', ?2 + i / 100, 'unixepoch'), ?3
         FROM n",
    )
    .bind(PRUNE_TRANSITIONS)
    .bind(base)
    .bind(&snapshot)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 - 1)
         INSERT INTO episodes (rule, app_id, job_id, opened_at, last_notified_at, resolved_at)
         SELECT 'stuck_init', 'demo-app', printf('job-%06d', i),
             strftime('%Y-%m-%dT%H:%M:%fZ', ?2 + i, 'unixepoch'),
             strftime('%Y-%m-%dT%H:%M:%fZ', ?2 + i, 'unixepoch'),
             strftime('%Y-%m-%dT%H:%M:%fZ', ?2 + i + 60, 'unixepoch')
         FROM n",
    )
    .bind(PRUNE_EPISODES)
    .bind(base)
    .execute(&mut *tx)
    .await?;
    // Half the alerts point at a transition, the other half at an episode.
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 - 1)
         INSERT INTO alerts (id, dedup_key, rule, severity, status, app_id, job_id, transition_id,
             episode_id, summary, payload, created_at)
         SELECT printf('rw_bench%016d', i), printf('bench:%d', i), 'stopped_unexpectedly',
             'critical', 'firing', 'demo-app', printf('job-%04d', i % 1000),
             CASE WHEN i % 2 = 0 THEN i * 5 + 1 END, CASE WHEN i % 2 = 1 THEN i / 2 + 1 END,
             'bench alert', ?3, strftime('%Y-%m-%dT%H:%M:%fZ', ?2 + i, 'unixepoch')
         FROM n",
    )
    .bind(PRUNE_ALERTS)
    .bind(base)
    .bind(&payload)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO deliveries (alert_id, channel, state, attempts, next_attempt_at, sent_at, created_at)
         SELECT id, 'bench-hook', 'sent', 1, created_at, created_at, created_at FROM alerts
         UNION ALL
         SELECT id, 'bench-mail', 'dead', 9, created_at, NULL, created_at FROM alerts",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(store.db().writer())
        .await?;
    store.close().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 6. /api/v1/jobs for 100,000 jobs: memory.

const API_JOBS: usize = 100_000;
const API_PAGE: usize = 1000;
const API_PARALLEL: usize = 20;

fn vm_rss_kib(pid: u32) -> u64 {
    proc_status_kb(pid, "VmRSS").unwrap_or(0)
}

/// Walks every page; returns (pages, items, largest page in bytes).
async fn walk_jobs(http: &reqwest::Client, base: &str) -> anyhow::Result<(usize, usize, usize)> {
    let (mut pages, mut items, mut largest) = (0, 0, 0);
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/v1/jobs?limit={API_PAGE}");
        if let Some(c) = &after {
            url.push_str(&format!("&after={c}"));
        }
        let body = http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let page: Value = serde_json::from_slice(&body)?;
        pages += 1;
        items += page["items"].as_array().map_or(0, |a| a.len());
        largest = largest.max(body.len());
        match page["next_after"].as_str() {
            Some(c) => after = Some(c.to_string()),
            None => return Ok((pages, items, largest)),
        }
    }
}

/// Runs `work` while sampling the process's RSS every 10 ms; returns its result and the peak.
async fn peak_rss_during<T>(
    pid: u32,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, u64)> {
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn({
        let done = done.clone();
        async move {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(vm_rss_kib(pid));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak.max(vm_rss_kib(pid))
        }
    });
    let out = work.await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await?;
    Ok((out?, peak))
}

async fn jobs_api(dir: &Path) -> anyhow::Result<Value> {
    println!(
        "\n6. /api/v1/jobs with {API_JOBS} jobs: memory of `recwatch run` while walking every page (limit {API_PAGE}), once and {API_PARALLEL} at a time"
    );
    let sim = Sim::spawn(&[
        "--static",
        "--jobs",
        &API_JOBS.to_string(),
        "--rate-limit",
        "10",
    ])?;
    let config = config_file(dir, "api", &sim.url, API_JOBS, "");
    let text = std::fs::read_to_string(&config)?
        .replace("[http]\nlisten = \"\"", "[http]\nlisten = \"127.0.0.1:0\"");
    std::fs::write(&config, text)?;
    // Every job with a row, as after a first round of polls.
    let db = dir.join("api.db");
    let store = Store::open(&db).await?;
    let snapshot = serde_json::to_string(&snapshot_for(0, false))?;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 - 1)
         INSERT INTO jobs (app_id, job_id, state, description, snapshot, first_seen_at,
             last_polled_at, last_ok_at, last_changed_at)
         SELECT 'demo-app', printf('job-%04d', i), 'RUNNING', 'bench', ?2,
             '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z',
             '2026-01-01T00:00:00.000Z'
         FROM n",
    )
    .bind(API_JOBS as i64)
    .bind(&snapshot)
    .execute(store.db().writer())
    .await?;
    store.close().await;

    let started = Instant::now();
    let (daemon, log) = spawn_daemon_logged(&config, "warn,recwatch=info")?;
    let pid = daemon.0.id();
    let (_, line) = wait_line(&log, "HTTP endpoint:", Duration::from_secs(300)).await?;
    let addr = log_field(&line, "address").context("address in the endpoint's log line")?;
    let base = format!("http://{addr}");
    wait_line(&log, "recwatch running", Duration::from_secs(300)).await?;
    let start_secs = started.elapsed().as_secs_f64();
    // Let start-up settle (first polls, the gauges' first refresh).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let http = reqwest::Client::new();
    let before = vm_rss_kib(pid);

    let t = Instant::now();
    let ((pages, items, largest), peak_one) = peak_rss_during(pid, walk_jobs(&http, &base)).await?;
    let one_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        items == API_JOBS,
        "one walk saw {items} jobs, not {API_JOBS}"
    );
    let after_one = vm_rss_kib(pid);

    let t = Instant::now();
    let (walks, peak_parallel) = peak_rss_during(pid, async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..API_PARALLEL {
            let (http, base) = (http.clone(), base.clone());
            set.spawn(async move { walk_jobs(&http, &base).await });
        }
        let mut all = Vec::new();
        while let Some(r) = set.join_next().await {
            all.push(r??);
        }
        Ok(all)
    })
    .await?;
    let parallel_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(walks.iter().all(|w| w.1 == API_JOBS));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after_parallel = vm_rss_kib(pid);
    let hwm = proc_status_kb(pid, "VmHWM")?;
    drop(daemon);

    // What one unpaginated answer would be: `status --json` prints all of it at once.
    let out = Command::new(bin())
        .args(["--config"])
        .arg(&config)
        .args(["status", "--json"])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .output()?;
    anyhow::ensure!(out.status.success(), "recwatch status --json failed");
    let mib = |k: u64| k as f64 / 1024.0;
    row(
        &format!("start with {API_JOBS} jobs (config read, store opened)"),
        format!("{start_secs:.1} s"),
        "",
    );
    row("RSS before", format!("{:.1} MiB", mib(before)), "");
    row(
        &format!("one walk: {pages} pages, peak RSS"),
        format!("{:.1} MiB", mib(peak_one)),
        &format!(
            "+{:.1} MiB; {one_secs:.1} s; largest page {:.0} KB",
            mib(peak_one.saturating_sub(before)),
            largest as f64 / 1e3
        ),
    );
    row(
        &format!("{API_PARALLEL} walks at once, peak RSS"),
        format!("{:.1} MiB", mib(peak_parallel)),
        &format!(
            "+{:.1} MiB; {parallel_secs:.1} s",
            mib(peak_parallel.saturating_sub(before))
        ),
    );
    row(
        "RSS 5 s after them",
        format!("{:.1} MiB", mib(after_parallel)),
        &format!("(after one walk: {:.1} MiB)", mib(after_one)),
    );
    row(
        "for scale: `status --json` (all jobs in one array)",
        format!("{:.1} MB", out.stdout.len() as f64 / 1e6),
        "",
    );
    Ok(json!({
        "jobs": API_JOBS,
        "page_limit": API_PAGE,
        "pages": pages,
        "largest_page_bytes": largest,
        "start_seconds": start_secs,
        "rss_before_kib": before,
        "peak_rss_one_walk_kib": peak_one,
        "one_walk_seconds": one_secs,
        "rss_after_one_walk_kib": after_one,
        "parallel_walks": API_PARALLEL,
        "peak_rss_parallel_kib": peak_parallel,
        "parallel_seconds": parallel_secs,
        "rss_after_parallel_kib": after_parallel,
        "vm_hwm_kib": hwm,
        "status_json_bytes": out.stdout.len(),
    }))
}
