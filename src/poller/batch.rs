//! Batching of polls that changed nothing: their poll time and snapshot are written once a
//! second in one transaction, so the database does work per change rather than per poll.

use super::Key;
use crate::store::{JobTouch, Store, StoreError};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::debug;

/// A poll that changed nothing: what the job's row should show.
pub(super) struct Touch {
    pub(super) polled_at: chrono::DateTime<Utc>,
    pub(super) raw: String,
    pub(super) description: Option<String>,
}

/// Poll times and snapshots of polls that changed nothing, written once a second in one
/// transaction. Losing a second of them to a crash loses no transition or alert: those are
/// written at once.
#[derive(Default)]
pub struct Touches {
    pending: Mutex<HashMap<Key, Touch>>,
}

impl Touches {
    pub(super) fn touch(&self, k: Key, t: Touch) {
        self.pending.lock().expect("touches lock").insert(k, t);
    }

    /// The job goes through a full write: its batched touch is superseded.
    pub(super) fn forget(&self, k: &Key) {
        self.pending.lock().expect("touches lock").remove(k);
    }

    /// Writes what is pending; on failure it is kept for the next flush (unless newer came).
    pub async fn flush(&self, store: &Store) -> Result<usize, StoreError> {
        let batch: Vec<(Key, Touch)> = self.pending.lock().expect("touches lock").drain().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        match store
            .jobs()
            .touch(batch.iter().map(|(k, t)| JobTouch {
                app_id: &k.app_id,
                job_id: &k.job_id,
                polled_at: t.polled_at,
                raw: &t.raw,
                description: t.description.as_deref(),
            }))
            .await
        {
            Ok(()) => Ok(n),
            Err(e) => {
                let mut pending = self.pending.lock().expect("touches lock");
                for (k, t) in batch {
                    pending.entry(k).or_insert(t);
                }
                Err(e)
            }
        }
    }
}

/// Flushes `touches` once a second until `stop` turns true, then once more.
pub(super) fn start_flusher(
    touches: Arc<Touches>,
    store: Store,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            let last = tokio::select! {
                _ = every.tick() => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            match touches.flush(&store).await {
                Ok(0) => {}
                Ok(_) => store.health().write_ok(),
                Err(e) => {
                    store.health().write_failed(&e);
                    debug!("poll times not written yet (kept for the next try): {e:#}");
                }
            }
            if last {
                return;
            }
        }
    })
}
