//! Holding notifications back, and letting them go when the hold ends.
//!
//! - At send time (in each lane, [`Gate::holds`]): a delivery whose alert an active silence
//!   or maintenance window covers is not sent; it goes to state `silenced`, held by that
//!   silence's id or window's name. Silences are read from the database at that moment, so
//!   one added by the CLI or the API (another process) holds the very next send.
//! - When a hold ends ([`release`], every second and at each window edge): each held
//!   delivery no longer covered is settled by `hold::rules::after_hold`: what is still true goes
//!   back to the queue at once, with its own alert id; what cleared meanwhile stays
//!   `silenced` with the reason.
//! - [`watch_windows`] wakes at each window's start and end (not by polling): it logs them,
//!   publishes which windows are active, and so triggers the release right at a window's end.

use crate::hold::config::MaintenanceWindow;
use crate::hold::domain::{AfterHold, HeldBy, Silence, Subject};
use crate::store::{HeldRow, Store, StoreError};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// The windows in force, replaced on reload.
pub type Windows = watch::Receiver<Arc<Vec<MaintenanceWindow>>>;

/// Which windows are active, by name, and until when.
pub type ActiveWindows = BTreeMap<String, DateTime<Utc>>;

/// Where a wall-clock time comes from (the lanes' clock; a test's).
pub type WallClock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What every lane asks before a send.
#[derive(Clone)]
pub struct Gate {
    store: Store,
    windows: Windows,
}

impl Gate {
    pub fn new(store: Store, windows: Windows) -> Gate {
        Gate { store, windows }
    }

    /// What holds notifications back at `now`: the silences that have not ended (read now)
    /// and the windows active now.
    pub async fn holds(&self, now: DateTime<Utc>) -> Result<Holds, StoreError> {
        let silences = self.store.silences().list(false, now).await?;
        let windows = self.windows.borrow().clone();
        let windows = windows
            .iter()
            .filter(|w| w.active_until(now).is_some())
            .cloned()
            .collect();
        Ok(Holds {
            silences,
            windows,
            now,
        })
    }
}

/// The silences and windows in force at one moment.
pub struct Holds {
    silences: Vec<Silence>,
    /// Only the active ones.
    windows: Vec<MaintenanceWindow>,
    now: DateTime<Utc>,
}

impl Holds {
    /// The silence (first) or window that holds this alert back, if any.
    pub fn held_by(&self, s: &Subject<'_>) -> Option<HeldBy> {
        self.silences
            .iter()
            .find(|x| x.holds(s, self.now))
            .map(|x| HeldBy::Silence(x.id.clone()))
            .or_else(|| {
                self.windows
                    .iter()
                    .find(|w| w.covers(s))
                    .map(|w| HeldBy::Window(w.name.clone()))
            })
    }
}

/// Marks a due delivery held instead of sending it; says so in the log and the metrics.
pub async fn hold(
    store: &Store,
    alert_id: &str,
    (channel, kind): (&str, &'static str),
    by: &HeldBy,
) -> Result<(), StoreError> {
    let first = store.silences().hold(alert_id, channel, by).await?;
    info!(
        alert_id,
        channel,
        held_by = by.as_str(),
        "notification held back by {by}: not sent while it lasts"
    );
    metrics::counter!("recwatch_deliveries_total", "channel" => channel.to_string(), "kind" => kind, "outcome" => "silenced").increment(1);
    if first {
        metrics::counter!("recwatch_alerts_silenced_total", "by" => by.kind()).increment(1);
    }
    Ok(())
}

/// Settles every held delivery whose hold has ended at `now`; returns how many went back to
/// the queue (the caller wakes the lanes then).
pub async fn release(store: &Store, gate: &Gate, now: DateTime<Utc>) -> Result<u64, StoreError> {
    let held = store.silences().held().await?;
    if held.is_empty() {
        return Ok(0);
    }
    let holds = gate.holds(now).await?;
    let ended: Vec<&HeldRow> = held
        .iter()
        .filter(|r| match r.rule() {
            Some(rule) => holds
                .held_by(&Subject {
                    app_id: r.app_id.as_deref(),
                    job_id: r.job_id.as_deref(),
                    rule,
                })
                .is_none(),
            // A rule this build does not know (never written by it): nothing can hold it.
            None => true,
        })
        .collect();
    if ended.is_empty() {
        return Ok(0);
    }
    let notices: Vec<_> = ended.iter().map(|r| r.notice()).collect();
    let settled: Vec<(&HeldRow, AfterHold)> = ended
        .into_iter()
        .zip(crate::hold::rules::after_hold(&notices))
        .collect();
    let (sent, dropped) = store.silences().settle_held(&settled, now).await?;
    for (r, what) in &settled {
        match what {
            AfterHold::Send => {
                info!(alert_id = %r.alert_id, channel = %r.channel, held_by = %r.held_by, "hold ended and what it held back is still true: sending it now")
            }
            AfterHold::Drop(why) => {
                info!(alert_id = %r.alert_id, channel = %r.channel, held_by = %r.held_by, "hold ended; not sent: {why}")
            }
        }
    }
    metrics::counter!("recwatch_held_deliveries_ended_total", "outcome" => "released")
        .increment(sent);
    metrics::counter!("recwatch_held_deliveries_ended_total", "outcome" => "dropped")
        .increment(dropped);
    Ok(sent)
}

/// Which windows are active at `now` (by name, until when), and when that can next change:
/// the nearest end of an active window or start of another.
pub fn window_edges(
    windows: &[MaintenanceWindow],
    now: DateTime<Utc>,
) -> (ActiveWindows, Option<DateTime<Utc>>) {
    let mut active = ActiveWindows::new();
    let mut next: Option<DateTime<Utc>> = None;
    for w in windows {
        let edge = match w.active_until(now) {
            Some(until) => {
                active.insert(w.name.clone(), until);
                Some(until)
            }
            None => w.next_start(now),
        };
        next = match (next, edge) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    (active, next)
}

/// The longest the window watch sleeps without looking again: the wall clock may jump.
const WINDOW_RECHECK: Duration = Duration::from_secs(60);

/// Publishes which windows are active, waking at each start and end; logs each; sets
/// `recwatch_maintenance_windows_active`. Runs until `stop`.
pub async fn watch_windows(
    mut windows: Windows,
    clock: WallClock,
    active: watch::Sender<ActiveWindows>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let now = clock();
        let ws = windows.borrow_and_update().clone();
        let (current, next) = window_edges(&ws, now);
        active.send_if_modified(|last| {
            for (name, until) in &current {
                if !last.contains_key(name) {
                    info!(window = %name, until = %crate::domain::timestamp(*until), "maintenance window {name:?} began: notifications it covers are held back until it ends");
                }
            }
            for name in last.keys().filter(|n| !current.contains_key(*n)) {
                info!(window = %name, "maintenance window {name:?} ended: what it held back and is still true is sent now");
            }
            let changed = *last != current;
            *last = current.clone();
            changed
        });
        metrics::gauge!("recwatch_maintenance_windows_active").set(current.len() as f64);
        let wait = next
            .and_then(|n| (n - now).to_std().ok())
            .unwrap_or(WINDOW_RECHECK)
            .clamp(Duration::from_millis(10), WINDOW_RECHECK);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = windows.changed() => if changed.is_err() { return },
            changed = stop.changed() => if changed.is_err() { return },
        }
    }
}

/// Logs a failed release; the next tick tries again.
pub fn release_failed(e: &StoreError) {
    warn!("cannot release held notifications (tried again in a second): {e:#}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Schedule;

    fn window(name: &str, schedule: &str, duration: Duration, tz: &str) -> MaintenanceWindow {
        MaintenanceWindow {
            name: name.into(),
            schedule: Schedule::parse(schedule).unwrap(),
            duration,
            timezone: tz.parse().unwrap(),
            apps: Vec::new(),
            jobs: Vec::new(),
        }
    }

    /// A nightly window in Asia/Shanghai (UTC+8, no DST) and one in Europe/Berlin across the
    /// spring-forward night, on tokio's paused clock: the watch wakes exactly at each start
    /// and end, in UTC where each zone puts them, day after day.
    #[tokio::test(start_paused = true)]
    async fn a_recurring_window_in_a_non_utc_zone_begins_and_ends_on_time() {
        let base: DateTime<Utc> = "2026-03-27T12:00:00Z".parse().unwrap();
        let start = tokio::time::Instant::now();
        let clock: WallClock =
            Arc::new(move || base + chrono::Duration::from_std(start.elapsed()).unwrap());
        let windows = vec![
            window(
                "deploy",
                "0 0 2 * * *",
                Duration::from_secs(3600),
                "Asia/Shanghai",
            ),
            window(
                "backup",
                "0 30 2 * * *",
                Duration::from_secs(1800),
                "Europe/Berlin",
            ),
        ];
        let (_windows_tx, windows_rx) = watch::channel(Arc::new(windows));
        let (active_tx, mut active_rx) = watch::channel(ActiveWindows::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(watch_windows(windows_rx, clock.clone(), active_tx, stop_rx));
        let mut seen = Vec::new();
        while seen.len() < 12 {
            active_rx.changed().await.unwrap();
            let names: Vec<String> = active_rx.borrow_and_update().keys().cloned().collect();
            seen.push((crate::domain::timestamp(clock()), names.join(",")));
        }
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        let want = [
            // 02:00-03:00 in Shanghai is 18:00-19:00 UTC the day before.
            ("2026-03-27T18:00:00.000Z", "deploy"),
            ("2026-03-27T19:00:00.000Z", ""),
            // 02:30 in Berlin is 01:30 UTC in winter (CET).
            ("2026-03-28T01:30:00.000Z", "backup"),
            ("2026-03-28T02:00:00.000Z", ""),
            ("2026-03-28T18:00:00.000Z", "deploy"),
            ("2026-03-28T19:00:00.000Z", ""),
            // 29 March: 02:00 jumps to 03:00 in Berlin, so there is no 02:30; the window
            // opens when croner runs it, at 03:00 CEST = 01:00 UTC.
            ("2026-03-29T01:00:00.000Z", "backup"),
            ("2026-03-29T01:30:00.000Z", ""),
            ("2026-03-29T18:00:00.000Z", "deploy"),
            ("2026-03-29T19:00:00.000Z", ""),
            // Summer time (CEST): 02:30 is 00:30 UTC.
            ("2026-03-30T00:30:00.000Z", "backup"),
            ("2026-03-30T01:00:00.000Z", ""),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(t, n)| (t.to_string(), n.to_string()))
            .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn window_edges_name_the_active_and_the_next_change() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let ws = [
            window("a", "0 0 1 * * *", Duration::from_secs(3600), "UTC"),
            window("b", "0 0 3 * * *", Duration::from_secs(600), "UTC"),
        ];
        let (active, next) = window_edges(&ws, t("2026-01-01T01:15:00Z"));
        assert_eq!(
            active.into_iter().collect::<Vec<_>>(),
            [("a".to_string(), t("2026-01-01T02:00:00Z"))]
        );
        assert_eq!(next, Some(t("2026-01-01T02:00:00Z")), "a's end");
        let (active, next) = window_edges(&ws, t("2026-01-01T02:00:00Z"));
        assert!(active.is_empty());
        assert_eq!(next, Some(t("2026-01-01T03:00:00Z")), "b's start");
        assert_eq!(
            window_edges(&[], t("2026-01-01T02:00:00Z")),
            (ActiveWindows::new(), None)
        );
    }
}
