//! Part 11: remediation (issue 15). Jobs die on the simulator (STOPPED `INTERNAL_ERROR`),
//! `[remediate]` re-creates each, and the figure is the time from the death (the
//! simulator's own record of the change) to recwatch's first poll that saw the replacement
//! RUNNING (the `observed_at` of its first RUNNING transition in `recwatch history`).
//!
//! Two modes, each on a fresh simulator and daemon: polling alone, and with the daemon's
//! callback receiver registered at the simulator (the death announced by
//! `CLOUD_RECORD_SERVER_OVER`, the replacement's start by `RECORD_NEW_FILE_START`, each a
//! poll hint). A created job stays INIT for the simulator's `--step` before it goes RUNNING,
//! as a real recording takes a moment to start; the breakdown shows where the time goes.

use super::*;
use std::collections::HashMap;

const REMED_JOBS: usize = 40;
const REMED_DEATHS: usize = 30;
const REMED_RATE: u32 = 10;
/// `poll.interval`: with 40 + 30 jobs at 10 requests/s the round is the interval itself.
const REMED_INTERVAL: &str = "10s";
/// How long a created job stays INIT on the simulator.
const REMED_STEP: &str = "2s";
/// Between two deaths: the creates and the new jobs' first polls do not pile up.
const REMED_SPACING: Duration = Duration::from_secs(1);

fn rfc3339(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

fn seconds(from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(0) as f64 / 1e6
}

/// A victim as the API shows it, with every field a create takes (the simulator's static
/// jobs carry only what polling reads, so a replacement could not be built from them).
fn full(job_id: &str, stopped: bool) -> recwatch_rtc::model::JobSnapshot {
    use recwatch_rtc::model::{JobSnapshot, RecordParam};
    JobSnapshot {
        job_id: Some(job_id.into()),
        app_id: Some(APP.into()),
        room_id: Some(format!("room-of-{job_id}")),
        user_id: Some(format!("user-of-{job_id}")),
        stream_name: Some(format!("s_{job_id}_room_user")),
        is_record_audio: Some(false),
        video_type: Some("SCREENSTREAM".into()),
        select_stream_type: Some("SD".into()),
        max_idle_time: Some(120),
        record_param: Some(RecordParam {
            record_rule_id: Some(format!("rule-of-{job_id}")),
            ..RecordParam::default()
        }),
        state: Some(if stopped {
            State::Stopped
        } else {
            State::Running
        }),
        stop_reason: stopped.then_some(StopReason::InternalError),
        start_time: Some("2026-11-28T06:00:00.000Z".into()),
        description: Some(
            if stopped {
                "recorder crashed"
            } else {
                "recording"
            }
            .into(),
        ),
        ..Default::default()
    }
}

async fn put_job(sim: &Sim, job: &recwatch_rtc::model::JobSnapshot) -> anyhow::Result<()> {
    let id = job.job_id.as_deref().unwrap_or_default();
    sim.http
        .put(format!("{}/_sim/jobs/{APP}/{id}", sim.url))
        .json(job)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// A CLI command's `--json` output.
fn cli_json(config: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let out = Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .context("running recwatch")?;
    if !out.status.success() {
        bail!(
            "recwatch {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// old job -> new job, for the re-creations done so far.
fn recreated(config: &Path) -> anyhow::Result<HashMap<String, String>> {
    let list = cli_json(config, &["remediations", "--limit", "1000", "--json"])?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] == "recreated")
        .filter_map(|r| {
            Some((
                r["old_job_id"].as_str()?.to_string(),
                r["new_job_id"].as_str()?.to_string(),
            ))
        })
        .collect())
}

/// Each job's first transition to RUNNING, as recwatch observed it.
fn first_running(config: &Path) -> anyhow::Result<HashMap<String, chrono::DateTime<chrono::Utc>>> {
    let rows = cli_json(
        config,
        &["history", "--since", "1h", "--limit", "100000", "--json"],
    )?;
    let mut first: HashMap<String, chrono::DateTime<chrono::Utc>> = HashMap::new();
    for r in rows.as_array().into_iter().flatten() {
        if r["to_state"] != "RUNNING" {
            continue;
        }
        let (Some(job), Some(at)) = (
            r["job_id"].as_str(),
            r["observed_at"].as_str().and_then(rfc3339),
        ) else {
            continue;
        };
        let e = first.entry(job.to_string()).or_insert(at);
        *e = (*e).min(at);
    }
    Ok(first)
}

/// Part 11, one mode.
pub async fn remediation(dir: &Path, callbacks: bool) -> anyhow::Result<Value> {
    let mode = if callbacks { "callbacks" } else { "polling" };
    println!(
        "\n11. remediation, {mode}: {REMED_JOBS} jobs, poll.interval {REMED_INTERVAL}, rate_limit {REMED_RATE}/s, {REMED_DEATHS} deaths, created jobs INIT for {REMED_STEP}"
    );
    let sim = Sim::spawn(&[
        "--static",
        "--jobs",
        &REMED_JOBS.to_string(),
        "--rate-limit",
        &REMED_RATE.to_string(),
        "--step",
        REMED_STEP,
        "--seed",
        "15",
    ])?;
    let victims: Vec<String> = (0..REMED_DEATHS).map(recwatch_sim::job_id).collect();
    for job in &victims {
        put_job(&sim, &full(job, false)).await?;
    }
    let (hook, _arrivals) = receiver().await?;
    let push = if callbacks {
        format!(
            "[callback]\nlisten = \"127.0.0.1:0\"\n[[apps]]\napp_id = \"{APP}\"\nauth_key = \"{}\"\n",
            push::KEY
        )
    } else {
        String::new()
    };
    let config = config_file(
        dir,
        &format!("remed_{mode}"),
        &sim.url,
        REMED_JOBS,
        &format!(
            "[poll]\ninterval = \"{REMED_INTERVAL}\"\n[remediate]\nenabled = true\n{push}[[notify.webhook]]\nname = \"bench\"\nurl = \"{hook}\"\n"
        ),
    );
    api_rate(&config, REMED_RATE)?;
    let daemon = if callbacks {
        push::registered_daemon(&config, &sim).await?.0
    } else {
        spawn_daemon(&config)?
    };

    // Every job seen RUNNING once before the deaths start.
    let warm = Instant::now();
    loop {
        let polled = sim.stats().await?.by_job.get(APP).map_or(0, |j| j.len());
        if polled >= REMED_JOBS {
            break;
        }
        if warm.elapsed() > Duration::from_secs(120) {
            bail!("only {polled} of {REMED_JOBS} jobs polled within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One more round, so each victim's first answer (RUNNING) is written before it dies.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let measured_from = chrono::Utc::now();
    let mut ticker = tokio::time::interval(REMED_SPACING);
    for job in &victims {
        ticker.tick().await;
        put_job(&sim, &full(job, true)).await?;
    }
    // Every replacement seen RUNNING, or three rounds and a margin after the last death.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (links, running) = loop {
        let links = recreated(&config)?;
        let running = first_running(&config)?;
        let done = victims
            .iter()
            .filter(|v| links.get(*v).is_some_and(|n| running.contains_key(n)))
            .count();
        if done == victims.len() || Instant::now() > deadline {
            break (links, running);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let stats = sim.stats().await?;
    let changes = sim.changes().await?;
    let created: Vec<recwatch_sim::CreatedJob> = sim
        .http
        .get(format!("{}/_sim/created", sim.url))
        .send()
        .await?
        .json()
        .await?;
    drop(daemon);

    let died: HashMap<&str, chrono::DateTime<chrono::Utc>> = changes
        .iter()
        .filter(|c| c.state == "STOPPED" && c.at >= measured_from)
        .map(|c| (c.job_id.as_str(), c.at))
        .collect();
    let started: HashMap<&str, chrono::DateTime<chrono::Utc>> = changes
        .iter()
        .filter(|c| c.state == "RUNNING" && c.at >= measured_from)
        .map(|c| (c.job_id.as_str(), c.at))
        .collect();
    let created_at: HashMap<&str, chrono::DateTime<chrono::Utc>> =
        created.iter().map(|c| (c.job_id.as_str(), c.at)).collect();
    // Per death: total, death -> create received, create -> RUNNING at the simulator,
    // RUNNING -> recwatch's poll that saw it.
    let (mut total, mut to_create, mut to_start, mut to_seen) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for v in &victims {
        let Some(new) = links.get(v) else { continue };
        let (Some(d), Some(seen)) = (died.get(v.as_str()), running.get(new)) else {
            continue;
        };
        total.push(seconds(*d, *seen));
        if let (Some(c), Some(s)) = (created_at.get(new.as_str()), started.get(new.as_str())) {
            to_create.push(seconds(*d, *c));
            to_start.push(seconds(*c, *s));
            to_seen.push(seconds(*s, *seen));
        }
    }
    for v in [&mut total, &mut to_create, &mut to_start, &mut to_seen] {
        v.sort_by(f64::total_cmp);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: String = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let summary = |v: &[f64]| {
        json!({
            "p50_seconds": percentile(v, 50.0),
            "p99_seconds": percentile(v, 99.0),
            "max_seconds": v.last().copied().unwrap_or(f64::NAN),
        })
    };
    row(
        "deaths / re-created / replacement seen RUNNING",
        format!("{} / {} / {}", victims.len(), links.len(), total.len()),
        "",
    );
    row(
        "death -> first RUNNING poll of the new job, p50 / p99",
        format!(
            "{:.2} / {:.2} s",
            percentile(&total, 50.0),
            percentile(&total, 99.0)
        ),
        "",
    );
    row(
        "  max",
        format!("{:.2} s", total.last().copied().unwrap_or(f64::NAN)),
        "",
    );
    for (name, v) in [
        ("  death -> create received, p50 / p99", &to_create),
        ("  create -> RUNNING (simulator), p50 / p99", &to_start),
        ("  RUNNING -> recwatch's poll saw it, p50 / p99", &to_seen),
    ] {
        row(
            name,
            format!("{:.2} / {:.2} s", percentile(v, 50.0), percentile(v, 99.0)),
            "",
        );
    }
    row(
        "requests / throttled (429) / most in a sliding second",
        format!(
            "{} / {} / {}",
            stats.requests, stats.throttled, stats.max_per_sliding_second
        ),
        "",
    );
    row("load average (1/5/15 min) after", load.clone(), "");
    Ok(json!({
        "mode": mode,
        "jobs": REMED_JOBS,
        "deaths": victims.len(),
        "recreated": links.len(),
        "seen_running": total.len(),
        "poll_interval": REMED_INTERVAL,
        "rate_limit": REMED_RATE,
        "sim_step": REMED_STEP,
        "death_to_running_poll": summary(&total),
        "death_to_create": summary(&to_create),
        "create_to_running": summary(&to_start),
        "running_to_poll": summary(&to_seen),
        "requests": stats.requests,
        "throttled": stats.throttled,
        "max_per_sliding_second": stats.max_per_sliding_second,
        "callbacks": stats.callbacks,
        "loadavg": load,
    }))
}
