//! `recwatch run`: opens the store, arms the poller, the delivery worker and housekeeping,
//! and turns signals into a clean stop.

use crate::config::Config;
use crate::outbox::Outbox;
use crate::poll::{Event, Poller};
use crate::rtc::client::RtcClient;
use crate::store::Store;
use anyhow::Context;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};
use tracing::{error, info, warn};

/// A running daemon's handles, for the demo and tests that run it in-process.
pub struct Running {
    pub events: broadcast::Sender<Event>,
    pub store: Store,
}

/// Runs until `shutdown` turns true. `ready` is called once polling is armed.
pub async fn run(
    config: Config,
    shutdown: watch::Receiver<bool>,
    on_start: impl FnOnce(&Running),
) -> anyhow::Result<()> {
    let store = Store::open(&config.storage.path).await?;
    let client = RtcClient::new(&config.api).context("cannot build the HTTP client")?;
    let (events, _) = broadcast::channel(1024);
    let outbox = Outbox::new().with_events(events.clone());
    outbox.restore(&store).await?;
    let poller = Poller::new(config.clone(), client, store.clone(), outbox.clone());
    // The poller makes its own sender; forward its events to ours so one stream has both.
    let mut poll_events = poller.events();
    let fwd = events.clone();
    tokio::spawn(async move {
        while let Ok(e) = poll_events.recv().await {
            let _ = fwd.send(e);
        }
    });

    let housekeeping = start_housekeeping(store.clone(), config.storage.retention).await?;
    let worker = crate::deliver::Worker::new(store.clone(), &config, outbox.wake_handle())?;
    let worker_task = tokio::spawn(worker.run(shutdown.clone()));

    on_start(&Running {
        events: events.clone(),
        store: store.clone(),
    });
    info!(
        database = %store.path().display(),
        jobs = config.jobs.len(),
        endpoint = %config.api.endpoint,
        auth = %config.api.auth.describe(),
        "recwatch running"
    );
    let result = poller.run(shutdown.clone()).await;
    if let Err(e) = &result {
        error!("poller failed: {e:#}");
    }
    // The worker finishes the delivery it is in, then stops; pending ones wait for next start.
    let _ = worker_task.await;
    if let Some(mut h) = housekeeping {
        let _ = h.shutdown().await;
    }
    store.close().await;
    info!("stopped");
    result
}

/// Prunes old transitions at start and daily at 03:17 local to the scheduler (UTC).
async fn start_housekeeping(
    store: Store,
    retention: std::time::Duration,
) -> anyhow::Result<Option<tokio_cron_scheduler::JobScheduler>> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    prune(&store, retention).await;
    let sched = JobScheduler::new().await?;
    let s = store.clone();
    sched
        .add(Job::new_async("0 17 3 * * *", move |_, _| {
            let s = s.clone();
            Box::pin(async move { prune(&s, retention).await })
        })?)
        .await?;
    sched.start().await?;
    Ok(Some(sched))
}

async fn prune(store: &Store, retention: std::time::Duration) {
    let cutoff =
        chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    match store.prune(cutoff).await {
        Ok(0) => {}
        Ok(n) => info!(rows = n, "pruned transitions older than storage.retention"),
        Err(e) => warn!("retention pruning failed (will retry tomorrow): {e:#}"),
    }
}

/// A watch channel that turns true on SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let tx = Arc::new(tx);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
        }
        let _ = tx.send(true);
        // A second signal while stopping means "now".
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        warn!("second signal: exiting without waiting");
        std::process::exit(130);
    });
    Ok(rx)
}
