//! The daemon's long-running helpers besides the poll loop: the delivery worker, restarted if
//! it panics, and the check that the database file is still the one open.

use crate::config::Config;
use crate::store::Store;
use crate::vitals::Vitals;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::error;

/// How often the database file is checked for having been deleted, replaced or made
/// read-only (`/readyz` says so within 10 s).
pub(super) const FILE_CHECK_EVERY: Duration = Duration::from_secs(2);

/// What a restarted delivery worker is built from.
pub(super) struct WorkerParts {
    pub store: Store,
    /// The configuration in force: a restarted worker is built from it as it is then.
    pub config: watch::Receiver<Arc<Config>>,
    pub wake: Arc<tokio::sync::Notify>,
    pub vitals: Arc<Vitals>,
}

/// Runs the delivery worker until `stop`; if it panics, logs it and starts a new one (from
/// the configuration as it is now) after a pause that grows while it keeps panicking. The
/// worker re-reads its channels from `parts.config` on every reload.
pub(super) async fn delivery_worker(
    first: crate::deliver::Worker,
    parts: WorkerParts,
    stop: watch::Receiver<bool>,
) {
    let mut worker = Some(first);
    let mut pause = Duration::from_secs(1);
    loop {
        let w = match worker.take() {
            Some(w) => w,
            None => {
                let config = parts.config.borrow().clone();
                match crate::deliver::Worker::new(parts.store.clone(), &config, parts.wake.clone())
                {
                    Ok(w) => w,
                    Err(e) => {
                        error!("cannot restart the delivery worker: {e:#}");
                        parts.vitals.task_died("delivery worker");
                        return;
                    }
                }
            }
        };
        let started = tokio::time::Instant::now();
        // Its own task, awaited here: a panic ends that task, not this supervisor.
        match tokio::spawn(w.run(stop.clone(), parts.config.clone())).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                let why = crate::vitals::panic_message(e.into_panic().as_ref());
                error!(
                    "the delivery worker panicked ({why}); restarting it in {}",
                    crate::config::format_duration(pause)
                );
                metrics::counter!("recwatch_task_panics_total", "task" => "delivery").increment(1);
            }
            Err(_) => return,
        }
        if started.elapsed() > Duration::from_secs(300) {
            pause = Duration::from_secs(1);
        }
        let mut s = stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = s.wait_for(|s| *s) => return,
        }
        pause = (pause * 2).min(Duration::from_secs(60));
    }
}

/// Checks every [`FILE_CHECK_EVERY`] that the database file is still the one open, and
/// writable; [`crate::store::StoreHealth`] logs a change and `/readyz` reports it.
pub(super) async fn check_file(store: Store, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(FILE_CHECK_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let s = store.clone();
        // Blocking calls (stat, access): off the runtime's threads, in case the file system hangs.
        if let Ok(problem) = tokio::task::spawn_blocking(move || s.db().check_file()).await {
            store.health().set_file_problem(problem);
        }
    }
}
