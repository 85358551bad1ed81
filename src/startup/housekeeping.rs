//! Pruning what is older than `storage.retention`: once at start and daily at 03:17 UTC, on
//! the card's scheduler (tokio-cron-scheduler). Each prune is one of `run`'s tracked tasks, so
//! the shutdown waits for it; a prune stops between two of its batches once the stop is set.

use crate::store::Store;
use std::time::Duration;
use tokio::sync::watch;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// When the daily prune runs (UTC; the scheduler wants the seconds field).
const DAILY: &str = "0 17 3 * * *";

/// Starts the start-up prune and the daily one. The start's prune runs beside polling, not
/// before it: on a big database it takes a while, and its short batches let the poller's
/// writes through. The scheduler is returned so the shutdown can stop it starting new runs.
pub(super) async fn start(
    tasks: &TaskTracker,
    store: Store,
    retention: Duration,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<JobScheduler> {
    // The scheduler first: if it cannot be made, nothing has been started.
    let sched = JobScheduler::new().await?;
    let daily = {
        let (tasks, store, stop) = (tasks.clone(), store.clone(), stop.clone());
        Job::new_async(DAILY, move |_, _| {
            let (s, stop) = (store.clone(), stop.clone());
            // Tracked, so a prune the scheduler started is waited for like any other task.
            Box::pin(tasks.track_future(async move { prune(&s, retention, &stop).await }))
        })?
    };
    sched.add(daily).await?;
    sched.start().await?;
    tasks.spawn(async move { prune(&store, retention, &stop).await });
    Ok(sched)
}

async fn prune(store: &Store, retention: Duration, stop: &watch::Receiver<bool>) {
    // A retention longer than the calendar reaches back keeps everything.
    let Some(cutoff) = crate::rules::checked_before(chrono::Utc::now(), retention) else {
        return;
    };
    match store
        .db()
        .prune(cutoff, crate::store::PRUNE_BATCH, stop)
        .await
    {
        Ok(p) if p.rows() == 0 => {}
        Ok(p) => info!(
            alerts = p.alerts,
            deliveries = p.deliveries,
            episodes = p.episodes,
            transitions = p.transitions,
            retired_watched_jobs = p.watched,
            remediations = p.remediations,
            callback_events = p.callback_events,
            forwards = p.forwards,
            batches = p.batches,
            longest_batch_ms = p.longest_batch.as_millis() as u64,
            interrupted = p.stopped,
            "pruned rows older than storage.retention (alerts with a pending delivery are kept)"
        ),
        Err(e) => warn!("retention pruning failed (will retry tomorrow): {e:#}"),
    }
}
