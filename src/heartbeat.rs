//! The dead man's switch (`[heartbeat]`): while recwatch is ready — the same answer as
//! `/readyz` ([`crate::http::readiness_problems`]) — it pings `heartbeat.url` every
//! `heartbeat.interval`; while it is not, it stays silent, so the service behind the URL
//! (Healthchecks.io, Uptime Kuma, Cronitor) pages someone when recwatch dies, hangs, loses
//! its database or its API. A ping that fails is logged and counted, never fatal; the
//! heartbeat is a task of its own, so a slow or dead receiver never delays polling.
//!
//! The URL is the check's key: it is never logged (errors are stripped of it) and prints as
//! `***`.

use crate::config::{Config, HeartbeatConfig, PingMethod};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// While not ready, readiness is asked again this often (or every interval, if shorter), so
/// the first ping after a recovery goes out within seconds rather than an interval later.
pub const RECHECK: Duration = Duration::from_secs(5);

/// A failing ping is logged at warn the first time, then every this many failures in a row
/// (each is counted in `recwatch_heartbeat_pings_total{result="failed"}`).
const WARN_EVERY: u64 = 10;

/// What the loop does at `now`: ping, and when to look again. Pure, so the schedule has a
/// table test; `last_ping` is when the last ping of this ready spell went out (`None` after
/// an unready spell, so the recovery is told at once).
pub fn step(
    ready: bool,
    last_ping: Option<Instant>,
    now: Instant,
    interval: Duration,
) -> (bool, Instant) {
    if !ready {
        return (false, now + interval.min(RECHECK));
    }
    match last_ping {
        Some(t) if now.duration_since(t) < interval => (false, t + interval),
        _ => (true, now + interval),
    }
}

/// Runs until `stop` turns true. `ready` answers with the reasons recwatch is not ready
/// (empty: ready); `ping` sends one ping. Follows `config`: a reload may set, change or remove
/// the URL and the interval.
pub async fn run<R, RF, P, PF>(
    mut config: watch::Receiver<Arc<Config>>,
    ready: R,
    ping: P,
    mut stop: watch::Receiver<bool>,
) where
    R: Fn() -> RF,
    RF: Future<Output = Vec<String>>,
    P: Fn(HeartbeatConfig) -> PF,
    PF: Future<Output = Result<(), String>>,
{
    let mut last_ping: Option<Instant> = None;
    let mut was_ready: Option<bool> = None;
    let mut failures: u64 = 0;
    loop {
        let hb = config.borrow_and_update().heartbeat.clone();
        let next = if hb.url.is_some() {
            let problems = ready().await;
            let is_ready = problems.is_empty();
            match (was_ready, is_ready) {
                (Some(true), true) => {}
                (_, true) => info!("heartbeat: ready, pinging every {:?}", hb.interval),
                (Some(true), false) => warn!(
                    "heartbeat: not ready, pings stop until it is: {}",
                    problems.join("; ")
                ),
                // Starting (the poll loop has not gone round yet) or still not ready.
                (None, false) => info!(
                    "heartbeat: the first ping waits until recwatch is ready ({})",
                    problems.join("; ")
                ),
                (Some(false), false) => {}
            }
            was_ready = Some(is_ready);
            if !is_ready {
                debug!("heartbeat: not ready, no ping");
                last_ping = None;
            }
            let now = Instant::now();
            let (ping_now, next) = step(is_ready, last_ping, now, hb.interval);
            if ping_now {
                last_ping = Some(now);
                let result = ping(hb.clone()).await;
                failures = report(result, failures);
            }
            Some(next)
        } else {
            None
        };
        tokio::select! {
            _ = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
            changed = config.changed() => {
                if changed.is_err() {
                    return;
                }
                // A new URL, interval or method starts a new schedule; a reload that changed
                // other sections leaves this one alone.
                if config.borrow().heartbeat != hb {
                    last_ping = None;
                    was_ready = None;
                }
            }
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Logs and counts one ping's result; returns the failures in a row since.
fn report(result: Result<(), String>, failures: u64) -> u64 {
    match result {
        Ok(()) => {
            metrics::counter!("recwatch_heartbeat_pings_total", "result" => "ok").increment(1);
            if failures > 0 {
                info!("heartbeat: pings get through again after {failures} failed");
            }
            0
        }
        Err(e) => {
            metrics::counter!("recwatch_heartbeat_pings_total", "result" => "failed").increment(1);
            let failures = failures + 1;
            if failures == 1 || failures.is_multiple_of(WARN_EVERY) {
                warn!(
                    failed_in_a_row = failures,
                    "heartbeat: ping failed (recwatch goes on; the monitoring service will report it missing if this lasts): {e}"
                );
            }
            failures
        }
    }
}

/// The production ping: GET, or POST with a short status, within the configured timeout.
/// Any 2xx is a success. The error text never holds the URL.
pub fn pinger(
    client: reqwest::Client,
) -> impl Fn(HeartbeatConfig) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
{
    move |hb: HeartbeatConfig| {
        let client = client.clone();
        Box::pin(async move {
            let url = hb.url.as_ref().ok_or("no heartbeat.url")?.url().clone();
            let request = match hb.method {
                PingMethod::Get => client.get(url),
                PingMethod::Post => client
                    .post(url)
                    .header("content-type", "text/plain; charset=utf-8")
                    .body(format!("recwatch {} ready", env!("CARGO_PKG_VERSION"))),
            };
            let answer = request
                .timeout(hb.ping_timeout())
                .send()
                .await
                .map_err(|e| describe(e.without_url()))?;
            let status = answer.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("answered HTTP {}", status.as_u16()))
            }
        })
    }
}

/// A request error with its causes, for the log; the URL is already gone from it.
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer within heartbeat.timeout".into();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HeartbeatUrl;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn step_table() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let min = s(60);
        let cases = [
            ("first ping at once", true, None, t0, (true, t0 + min)),
            (
                "not again within the interval",
                true,
                Some(t0),
                t0 + s(30),
                (false, t0 + min),
            ),
            (
                "again once the interval is over",
                true,
                Some(t0),
                t0 + min,
                (true, t0 + min + min),
            ),
            (
                "late tick: the next interval counts from now",
                true,
                Some(t0),
                t0 + s(90),
                (true, t0 + s(150)),
            ),
            (
                "not ready: no ping, look again soon",
                false,
                Some(t0),
                t0 + s(10),
                (false, t0 + s(10) + RECHECK),
            ),
            (
                "not ready, never pinged",
                false,
                None,
                t0,
                (false, t0 + RECHECK),
            ),
        ];
        for (name, ready, last, now, want) in cases {
            assert_eq!(step(ready, last, now, min), want, "{name}");
        }
        // A short interval is also the re-check period.
        assert_eq!(
            step(false, None, t0, Duration::from_secs(2)),
            (false, t0 + s(2))
        );
    }

    fn config(url: bool, interval: Duration) -> Config {
        let mut c = Config::defaults(crate::config::Auth::Token {
            token: crate::secret::Secret::new("t"),
        });
        c.heartbeat.interval = interval;
        c.heartbeat.url =
            url.then(|| HeartbeatUrl::parse("http://127.0.0.1:9/ping/secret").unwrap());
        c
    }

    /// The loop on paused time: pings every interval while ready, none while not, one at
    /// once on recovery; a ping that fails changes nothing about the schedule.
    #[tokio::test(start_paused = true)]
    async fn pings_while_ready_stop_while_not_and_resume_at_once() {
        let interval = Duration::from_secs(60);
        let (_config_tx, config_rx) = watch::channel(Arc::new(config(true, interval)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let ready = Arc::new(AtomicBool::new(true));
        let fail = Arc::new(AtomicBool::new(false));
        let pings = Arc::new(Mutex::new(Vec::<Instant>::new()));
        let start = Instant::now();
        let task = {
            let (ready, fail, pings) = (ready.clone(), fail.clone(), pings.clone());
            tokio::spawn(run(
                config_rx,
                move || {
                    let r = ready.load(Ordering::SeqCst);
                    async move {
                        if r {
                            vec![]
                        } else {
                            vec!["the poll loop is stalled".to_string()]
                        }
                    }
                },
                move |_hb| {
                    pings.lock().unwrap().push(Instant::now());
                    let f = fail.load(Ordering::SeqCst);
                    async move { if f { Err("refused".into()) } else { Ok(()) } }
                },
                stop_rx,
            ))
        };
        let offsets = |pings: &Mutex<Vec<Instant>>| -> Vec<u64> {
            pings
                .lock()
                .unwrap()
                .iter()
                .map(|t| t.duration_since(start).as_secs())
                .collect()
        };
        // Ready: at 0, 60, 120 (and failing pings keep the pace).
        tokio::time::sleep(Duration::from_secs(61)).await;
        fail.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(offsets(&pings), vec![0, 60, 120]);
        // Not ready from 125 s: the ping due at 180 does not go, nor any other.
        tokio::time::sleep(Duration::from_secs(4)).await;
        ready.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert_eq!(offsets(&pings), vec![0, 60, 120]);
        // Ready again at 425 s: a ping within RECHECK, then every interval from it.
        ready.store(true, Ordering::SeqCst);
        fail.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(66)).await;
        let got = offsets(&pings);
        assert_eq!(got.len(), 5, "{got:?}");
        assert!((425..=430).contains(&got[3]), "{got:?}");
        assert_eq!(got[4], got[3] + 60, "{got:?}");
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }

    /// No URL: nothing is pinged and readiness is not even asked; a reload that sets one
    /// starts the pings, and a reload of anything else leaves their schedule alone.
    #[tokio::test(start_paused = true)]
    async fn without_a_url_nothing_happens_until_a_reload_sets_one() {
        let interval = Duration::from_secs(60);
        let (config_tx, config_rx) = watch::channel(Arc::new(config(false, interval)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let asked = Arc::new(Mutex::new(0u32));
        let pings = Arc::new(Mutex::new(0u32));
        let task = {
            let (asked, pings) = (asked.clone(), pings.clone());
            tokio::spawn(run(
                config_rx,
                move || {
                    *asked.lock().unwrap() += 1;
                    async { vec![] }
                },
                move |hb: HeartbeatConfig| {
                    assert!(hb.url.is_some());
                    *pings.lock().unwrap() += 1;
                    async { Ok(()) }
                },
                stop_rx,
            ))
        };
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!((*asked.lock().unwrap(), *pings.lock().unwrap()), (0, 0));
        config_tx.send(Arc::new(config(true, interval))).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(*pings.lock().unwrap(), 1);
        // A reload of another section keeps the schedule: no extra ping, the next on time.
        let mut other = config(true, interval);
        other.poll.interval = Duration::from_secs(5);
        config_tx.send(Arc::new(other)).unwrap();
        tokio::time::sleep(Duration::from_secs(58)).await;
        assert_eq!(*pings.lock().unwrap(), 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(*pings.lock().unwrap(), 2);
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }

    #[test]
    fn the_url_never_prints() {
        let url = HeartbeatUrl::parse("https://hc-ping.com/abc-secret").unwrap();
        assert_eq!(format!("{url:?} {url}"), "*** ***");
        let hb = HeartbeatConfig {
            url: Some(url),
            ..HeartbeatConfig::default()
        };
        assert!(!format!("{hb:?}").contains("abc-secret"));
    }
}
