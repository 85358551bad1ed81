//! Parts 8 and 9: push. The daemon's callback receiver registered at the simulator (a real
//! `PUT /v2/apps/{app_id}/record-callback`), 10,000 watched jobs at `rate_limit = 10` (a
//! polling round of P = 1,000 s), and deaths the simulator announces by signed callbacks.
//!
//! - `push`: 100 deaths, detect-to-deliver from the `CLOUD_RECORD_SERVER_OVER` callback's send
//!   (the simulator's own record of it) to the webhook's arrival at the receiver; the most
//!   requests the simulator saw in any second.
//! - `push_dropped`: the same with every callback dropped (`--callback-drop 1`): detection
//!   now waits for each job's turn in the round, bounded by P (measured from the change).
//! - `callback_storm`: 1,000 signed callbacks/s (`BENCH_STORM_RATE`, e.g. 5000) for 10 s
//!   straight at the receiver: answer latency from when each was due, the daemon's peak
//!   RSS, and the CPU the daemon and the sender spent per callback; `callback_storm_pg` the
//!   same with the database on PostgreSQL (`BENCH_PG_URL`). The sender is `storm`'s lean
//!   one (part 23).

use super::storm::{
    Sent, cpu_of, loadavg, postgres_pids, proc_cpu_seconds, reqwest_sender, storm_requests,
    storm_sender,
};
use super::*;
use recwatch_rtc::registration::CallbackUpdate;
use recwatch_rtc::{ClientConfig, RtcClient};
use std::collections::{HashMap, HashSet};

pub(super) const PUSH_JOBS: usize = 10_000;

/// The watch list's size: `PUSH_JOBS`, or `BENCH_PUSH_JOBS` (the dropped run waits out a
/// whole round, P = jobs / rate_limit seconds: 17 minutes at 10,000).
fn push_jobs() -> usize {
    std::env::var("BENCH_PUSH_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(PUSH_JOBS)
}
pub(super) const PUSH_RATE: u32 = 10;
const PUSH_DEATHS: usize = 100;
/// Between two deaths: 100 deaths over 30 s, about 3 hinted polls a second.
const DEATH_SPACING: Duration = Duration::from_millis(300);
/// Jobs polled at least once before the deaths start, so each death is a RUNNING job's.
const WARM_POLLED: usize = 400;
pub(super) const KEY: &str = "bench-callback-key-0123456789abcdef";
const STORM_RATE: u64 = 1_000;

/// The storm's rate: `STORM_RATE`, or `BENCH_STORM_RATE`.
fn storm_rate() -> u64 {
    std::env::var("BENCH_STORM_RATE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(STORM_RATE)
}
const STORM_RUN: Duration = Duration::from_secs(10);
/// Requests in flight at most during the storm: the sender's keep-alive connections, below
/// the receiver's connection cap (256), so the receiver never has to close one to make room.
const STORM_IN_FLIGHT: usize = 200;

/// The simulator's record of the callbacks it sent.
async fn sent_callbacks(sim: &Sim) -> anyhow::Result<Vec<recwatch_sim::SentCallback>> {
    Ok(sim
        .http
        .get(format!("{}/_sim/callbacks", sim.url))
        .send()
        .await?
        .json()
        .await?)
}

fn push_config(
    dir: &Path,
    name: &str,
    sim: &Sim,
    hook: &str,
    jobs: usize,
) -> anyhow::Result<PathBuf> {
    let config = config_file(
        dir,
        name,
        &sim.url,
        jobs,
        &format!(
            r#"[poll]
interval = "10s"
[callback]
listen = "127.0.0.1:0"
[[apps]]
app_id = "{APP}"
auth_key = "{KEY}"
[[notify.webhook]]
name = "bench"
url = "{hook}"
"#
        ),
    );
    api_rate(&config, PUSH_RATE)?;
    Ok(config)
}

/// Starts the daemon, reads its receiver's address from the log and registers it at the
/// simulator, as `recwatch callback set` would.
pub(super) async fn registered_daemon(
    config: &Path,
    sim: &Sim,
) -> anyhow::Result<(Proc, std::sync::mpsc::Receiver<(Instant, String)>, String)> {
    let (daemon, log) = spawn_daemon_logged(config, "warn,recwatch::callback=info")?;
    let (_, line) = wait_line(&log, "callback receiver", Duration::from_secs(120)).await?;
    let addr = log_field(&line, "address").context("the receiver's address")?;
    let url = format!("http://{addr}/rtc/record-callback");
    let mut client = ClientConfig::new(sim.url.parse()?, auth());
    client.project_id = Some(PROJECT.into());
    RtcClient::new(&client)?
        .put_record_callback(
            APP,
            &CallbackUpdate::new(&url, Some(Secret::new(KEY))).map_err(anyhow::Error::msg)?,
        )
        .await
        .context("registering the receiver")?;
    Ok((daemon, log, url))
}

/// Part 8 (`dropped` false) or its control without push (`dropped` true).
pub async fn push(dir: &Path, dropped: bool) -> anyhow::Result<Value> {
    let jobs = push_jobs();
    let period = jobs as f64 / PUSH_RATE as f64;
    println!(
        "\n{}. push: {jobs} jobs, rate_limit {PUSH_RATE}/s (P = {period:.0} s), {PUSH_DEATHS} deaths {}",
        if dropped { "8b" } else { "8" },
        if dropped {
            "with every callback dropped"
        } else {
            "announced by callbacks"
        }
    );
    let sim = Sim::spawn(&[
        "--static",
        "--jobs",
        &jobs.to_string(),
        "--rate-limit",
        &PUSH_RATE.to_string(),
        "--seed",
        "11",
        "--callback-drop",
        if dropped { "1" } else { "0" },
    ])?;
    let (hook, arrivals) = receiver().await?;
    let name = if dropped { "push_dropped" } else { "push" };
    let config = push_config(dir, name, &sim, &hook, jobs)?;
    let (daemon, _log, _) = registered_daemon(&config, &sim).await?;

    // The victims: jobs the daemon has already seen RUNNING, in the order it polled them.
    let polled = loop {
        let stats = sim.stats().await?;
        let polled: Vec<String> = stats
            .by_job
            .get(APP)
            .map(|jobs| jobs.keys().cloned().collect())
            .unwrap_or_default();
        if polled.len() >= WARM_POLLED {
            break polled;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let victims: Vec<String> = polled.into_iter().take(PUSH_DEATHS).collect();
    sim.reset_stats().await?;
    let measured_from = chrono::Utc::now();
    let stopped = json!({
        "state": "STOPPED",
        "stop_reason": "INTERNAL_ERROR",
        "start_time": "2026-11-28T06:00:00.000Z",
        "description": "recorder crashed",
    });
    let mut ticker = tokio::time::interval(DEATH_SPACING);
    for job in &victims {
        ticker.tick().await;
        sim.http
            .put(format!("{}/_sim/jobs/{APP}/{job}", sim.url))
            .json(&stopped)
            .send()
            .await?
            .error_for_status()?;
    }
    // Every death alerted, or the deadline: a minute with push; without, two rounds and a
    // margin (a 429 on a loaded machine pauses every poll for throttle_backoff, so a round
    // can take longer than P).
    let deadline = Instant::now()
        + if dropped {
            Duration::from_secs_f64(2.0 * period + 60.0)
        } else {
            Duration::from_secs(60)
        };
    let wanted: HashSet<&String> = victims.iter().collect();
    let alerted = |arrivals: &[Arrival]| -> HashMap<String, chrono::DateTime<chrono::Utc>> {
        let mut first = HashMap::new();
        for a in arrivals {
            let job = a.body["job"]["job_id"].as_str().unwrap_or_default();
            if a.body["status"] == "firing"
                && a.body["transition"]["to"] == "STOPPED"
                && wanted.contains(&job.to_string())
            {
                first.entry(job.to_string()).or_insert(a.at);
            }
        }
        first
    };
    while Instant::now() < deadline && alerted(&arrivals.lock().unwrap()).len() < victims.len() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = sim.stats().await?;
    let sent = sent_callbacks(&sim).await?;
    let changes = sim.changes().await?;
    drop(daemon);
    let first_alert = alerted(&arrivals.lock().unwrap());

    // From the SERVER_OVER's send with push; from the change itself without.
    let over: HashMap<&str, chrono::DateTime<chrono::Utc>> = sent
        .iter()
        .filter(|s| s.event_type == "CLOUD_RECORD_SERVER_OVER" && s.sent_at >= measured_from)
        .map(|s| (s.job_id.as_str(), s.sent_at))
        .collect();
    let changed: HashMap<&str, chrono::DateTime<chrono::Utc>> = changes
        .iter()
        .filter(|c| c.state == "STOPPED" && c.at >= measured_from)
        .map(|c| (c.job_id.as_str(), c.at))
        .collect();
    let mut latencies = Vec::new();
    for job in &victims {
        let from = if dropped {
            changed.get(job.as_str())
        } else {
            over.get(job.as_str())
        };
        if let (Some(from), Some(at)) = (from, first_alert.get(job)) {
            latencies.push((*at - *from).num_microseconds().unwrap_or(0) as f64 / 1e6);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let p50 = percentile(&latencies, 50.0);
    let p99 = percentile(&latencies, 99.0);
    let max = latencies.last().copied().unwrap_or(f64::NAN);
    let from = if dropped {
        "the change"
    } else {
        "the callback's send"
    };
    row(
        "deaths / alerted",
        format!("{} / {}", victims.len(), latencies.len()),
        "",
    );
    if !dropped {
        row(
            "callbacks sent / failed / dropped",
            format!(
                "{} / {} / {}",
                stats.callbacks.sent, stats.callbacks.failed, stats.callbacks.dropped
            ),
            "",
        );
    } else {
        row(
            "callbacks dropped",
            format!("{}", stats.callbacks.dropped),
            "",
        );
    }
    row(
        &format!("detect-to-deliver p50 (from {from})"),
        format!("{p50:.2} s"),
        "",
    );
    let (limit, what) = if dropped {
        (period + 1.0, format!("<= P + 1 s = {:.0} s", period + 1.0))
    } else {
        (2.0, "<= 2 s".to_string())
    };
    row(
        &format!("detect-to-deliver p99 (from {from})"),
        format!("{p99:.2} s"),
        target(p99 <= limit && latencies.len() == victims.len(), &what),
    );
    row("detect-to-deliver max", format!("{max:.2} s"), "");
    row(
        "max requests in any sliding second (simulator)",
        format!("{}", stats.max_per_sliding_second),
        target(
            stats.max_per_sliding_second <= PUSH_RATE as u64,
            &format!("<= {PUSH_RATE}"),
        ),
    );
    row(
        "requests / throttled (429)",
        format!("{} / {}", stats.requests, stats.throttled),
        "",
    );
    Ok(json!({
        "jobs": jobs,
        "rate_limit": PUSH_RATE,
        "period_seconds": period,
        "callbacks_dropped": dropped,
        "deaths": victims.len(),
        "alerted": latencies.len(),
        "measured_from": from,
        "p50_seconds": p50,
        "p99_seconds": p99,
        "max_seconds": max,
        "max_per_sliding_second": stats.max_per_sliding_second,
        "requests": stats.requests,
        "throttled": stats.throttled,
        "callbacks": stats.callbacks,
    }))
}

/// Part 9 (and 16): a storm of signed callbacks straight at the receiver, the database on
/// SQLite or (with `pg_url`) on PostgreSQL.
pub async fn callback_storm(dir: &Path, pg_url: Option<&str>) -> anyhow::Result<Value> {
    let rate = storm_rate();
    println!(
        "\n9/16. callback storm: {rate} signed callbacks/s for {} s at the receiver, {PUSH_JOBS} jobs watched, on {}",
        STORM_RUN.as_secs(),
        if pg_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    let sim = Sim::spawn(&[
        "--static",
        "--jobs",
        &PUSH_JOBS.to_string(),
        "--rate-limit",
        &PUSH_RATE.to_string(),
    ])?;
    let (hook, _arrivals) = receiver().await?;
    let config = storm_config(dir, "storm", &sim, &hook, PUSH_JOBS, pg_url)?;
    let (daemon, _log, url) = registered_daemon(&config, &sim).await?;
    let pid = daemon.0.id();
    // Settled: the first polls made, the pools warm.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_before = proc_status_kb(pid, "VmRSS")?;
    let total = rate * STORM_RUN.as_secs();
    // Every request signed and written out before the clock starts: RTC signs on its own
    // machines, so signing is not the receiver's cost, and a sender that spends the shared
    // cores on it measures itself (see `storm_sender`).
    let requests = storm_requests(&url, total)?;
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(kb) = proc_status_kb(pid, "VmRSS") {
                    peak.fetch_max(kb, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let load_before = loadavg();
    let cpu_before = proc_cpu_seconds(pid)?;
    let server = match pg_url {
        Some(url) => Some(postgres_pids(url).await?),
        None => None,
    };
    let server_before = server.as_deref().map(cpu_of).unwrap_or(0.0);
    let addr: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .context("the receiver's address")?
        .parse()?;
    // BENCH_STORM_SENDER=reqwest: the sender parts 9 and 16 used, for comparison.
    let old_sender = std::env::var("BENCH_STORM_SENDER").is_ok_and(|s| s == "reqwest");
    let sent = tokio::task::spawn_blocking(move || match old_sender {
        true => reqwest_sender(url, total, rate, STORM_IN_FLIGHT),
        false => storm_sender(addr, requests, rate, STORM_IN_FLIGHT),
    })
    .await??;
    let daemon_cpu = proc_cpu_seconds(pid)? - cpu_before;
    let server_cpu = server.as_deref().map(cpu_of).unwrap_or(0.0) - server_before;
    let load_after = loadavg();
    sampler.abort();
    let peak_kb = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .max(proc_status_kb(pid, "VmRSS").unwrap_or(0));
    let hwm_kb = proc_status_kb(pid, "VmHWM").unwrap_or(0);
    drop(daemon);
    let callbacks = sent.latencies.len().max(1) as f64;
    let mut out = storm_report(rate, sent, daemon_cpu, (&load_before, &load_after));
    out["backend"] = json!(if pg_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    });
    if server.is_some() {
        row(
            "CPU per callback: the PostgreSQL server",
            format!("{:.0} us", server_cpu * 1e6 / callbacks),
            "",
        );
        out["postgres_cpu_seconds"] = json!(server_cpu);
    }
    row(
        "daemon RSS before / peak during (VmHWM)",
        format!(
            "{:.1} / {:.1} MiB",
            rss_before as f64 / 1024.0,
            peak_kb as f64 / 1024.0
        ),
        &format!("VmHWM {:.1} MiB", hwm_kb as f64 / 1024.0),
    );
    out["rss_before_kib"] = json!(rss_before);
    out["rss_peak_kib"] = json!(peak_kb);
    out["vm_hwm_kib"] = json!(hwm_kb);
    Ok(out)
}

/// Part 9's configuration (`push_config`), on PostgreSQL when `pg_url` is given.
pub(super) fn storm_config(
    dir: &Path,
    name: &str,
    sim: &Sim,
    hook: &str,
    jobs: usize,
    pg_url: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let config = push_config(dir, name, sim, hook, jobs)?;
    if let Some(url) = pg_url {
        let text = std::fs::read_to_string(&config)?;
        let db = dir.join(format!("{name}.db"));
        let text = text.replace(
            &format!("path = \"{}\"", db.display()),
            &format!("url = \"{url}\""),
        );
        std::fs::write(&config, text)?;
    }
    Ok(config)
}

/// The storm's table rows and JSON: answers, latency, the load around the run and the CPU
/// each side spent per callback (CPU time, unlike latency, hardly moves with the load).
fn storm_report(rate: u64, sent: Sent, daemon_cpu: f64, load: (&str, &str)) -> Value {
    let total = sent.latencies.len() as u64;
    let mut latencies = sent.latencies;
    latencies.sort_by(f64::total_cmp);
    let ok = sent.by_status.get("200").copied().unwrap_or(0);
    for (status, n) in &sent.by_status {
        if status != "200" {
            row(&format!("  {n} answered"), status.clone(), "");
        }
    }
    let p50 = percentile(&latencies, 50.0) * 1000.0;
    let p99 = percentile(&latencies, 99.0) * 1000.0;
    let max = latencies.last().copied().unwrap_or(f64::NAN) * 1000.0;
    row(
        "callbacks sent in / rate",
        format!("{total} in {:.1} s", sent.sending),
        &format!("{:.0}/s", total as f64 / sent.sending),
    );
    row(
        "answered 200",
        format!("{ok} / {total}"),
        target(ok == total, "all"),
    );
    row("load average (1/5/15 min) before", load.0.to_string(), "");
    row("load average (1/5/15 min) after", load.1.to_string(), "");
    row("answer latency p50", format!("{p50:.1} ms"), "");
    row(
        "answer latency p99",
        format!("{p99:.1} ms"),
        target(p99 <= 50.0, "<= 50 ms idle, <= 250 ms busy at 1,000/s"),
    );
    row("answer latency max", format!("{max:.1} ms"), "");
    let per = |seconds: f64| seconds * 1e6 / total.max(1) as f64;
    row(
        "CPU per callback: daemon / sender",
        format!(
            "{:.0} / {:.0} us",
            per(daemon_cpu),
            per(sent.sender_cpu_seconds)
        ),
        "",
    );
    json!({
        "rate": rate,
        "callbacks": total,
        "sending_seconds": sent.sending,
        "by_status": sent.by_status,
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": max,
        "in_flight_max": STORM_IN_FLIGHT,
        "daemon_cpu_seconds": daemon_cpu,
        "sender_cpu_seconds": sent.sender_cpu_seconds,
        "loadavg_before": load.0,
        "loadavg_after": load.1,
    })
}
