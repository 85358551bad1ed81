//! The group writer: the one task that writes poll outcomes, so outcomes that finish while
//! another commit is being synced share the next transaction. What a group writes, and how a
//! failed group falls back to one transaction per job, is the outbox's
//! ([`Outbox::write_group`]); this owns the queue, the grouping and the task's supervision.

use crate::config::{Config, JobConfig};
use crate::domain::PollRecord;
use crate::outbox::{JobWrite, Outbox, WriteError};
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, error};

/// Group commit for the poller: poll outcomes that finish while another commit is being
/// synced share the next transaction, so a watch list polled faster than the disk can sync
/// is not bound to one fsync per poll. Each job's outcomes and the alerts they cause still
/// commit together or not at all: a group commits whole, or is rolled back and each job is
/// then written in its own transaction.
#[derive(Clone)]
pub struct GroupWriter {
    units: mpsc::Sender<WriteUnit>,
}

/// One job's outcomes on their way to the writer task, and where its answer goes.
struct WriteUnit {
    write: JobWrite,
    reply: oneshot::Sender<Result<(), WriteError>>,
}

/// At most this many jobs share one transaction, so one commit stays short.
const MAX_GROUP: usize = 256;

impl GroupWriter {
    /// Starts the writer task; it ends when the last `GroupWriter` clone is dropped, and the
    /// handle returned with it says when it has (shutdown waits for it).
    ///
    /// A panic while writing is contained to the jobs it hit: a group that panics is written
    /// again job by job, a job whose write panics gets an error (its poll keeps its outcomes
    /// and reports it), and everything else is written. Should the task die anyway, its
    /// supervisor starts it again on the same queue.
    pub fn start(outbox: Outbox, store: Store) -> (GroupWriter, JoinHandle<()>) {
        let (units, rx) = mpsc::channel::<WriteUnit>(MAX_GROUP);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let supervisor = tokio::spawn(async move {
            // Marks the writer dead if this supervisor itself unwinds.
            struct Watch(Arc<crate::store::StoreHealth>);
            impl Drop for Watch {
                fn drop(&mut self) {
                    if std::thread::panicking() {
                        self.0.set_writer_dead();
                    }
                }
            }
            let _watch = Watch(store.health().clone());
            loop {
                let task = tokio::spawn(write_loop(outbox.clone(), store.clone(), rx.clone()));
                match task.await {
                    // Every sender is gone: nothing more to write.
                    Ok(()) => return,
                    Err(e) if e.is_panic() => {
                        let why = crate::vitals::panic_message(e.into_panic().as_ref());
                        error!("the database writer panicked ({why}); restarting it");
                        metrics::counter!("recwatch_task_panics_total", "task" => "writer")
                            .increment(1);
                        store.health().writer_busy(false);
                        // What it committed before the panic may not have been announced: let
                        // the delivery worker look now rather than at its next periodic check.
                        outbox.wake_handle().notify_one();
                    }
                    Err(_) => return,
                }
            }
        });
        (GroupWriter { units }, supervisor)
    }

    /// Writes one job's poll outcomes (oldest first) and their alerts, like
    /// [`Outbox::write_job_polls`], sharing the commit with any other job's that are waiting.
    pub async fn write(
        &self,
        records: Vec<PollRecord>,
        job: JobConfig,
        in_init: Option<std::time::Duration>,
        now: DateTime<Utc>,
        config: Arc<Config>,
    ) -> Result<(), WriteError> {
        let (reply, answer) = oneshot::channel();
        let unit = WriteUnit {
            write: JobWrite {
                records,
                job,
                in_init,
                now,
                config,
            },
            reply,
        };
        self.units
            .send(unit)
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }
}

/// The writer's loop: takes what is queued (up to [`MAX_GROUP`] jobs) and writes it as one
/// group. Holds the queue while it runs; a restarted loop takes it over.
async fn write_loop(
    outbox: Outbox,
    store: Store,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<WriteUnit>>>,
) {
    let mut rx = rx.lock().await;
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(u) => group.push(u),
                Err(_) => break,
            }
        }
        let (writes, replies): (Vec<JobWrite>, Vec<_>) =
            group.into_iter().map(|u| (u.write, u.reply)).unzip();
        store.health().writer_busy(true);
        let results = outbox.write_group(&store, &writes).await;
        store.health().writer_busy(false);
        for ((write, reply), result) in writes.iter().zip(replies).zip(results) {
            // The poll may have stopped waiting (see PollTask::writer_wait), so the failure
            // is told here too; the outcome is sent again with the job's next poll. A failure
            // of the database as a whole is logged once by its health, not per job.
            if let Err(e) = &result {
                if !matches!(e, WriteError::Panicked(_)) {
                    debug!(app_id = %write.job.app_id(), job_id = %write.job.job_id(), "cannot write the poll outcome: {e:#}; it is kept for this job's next write");
                }
            }
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Phase, PollOutcome};
    use recwatch_rtc::model::{JobSnapshot, State};

    fn config() -> Arc<Config> {
        let text = r#"
[api]
project_id = "0a1b2c3d4e5f67890a1b2c3d4e5f6789"

[api.auth]
access_key = "AK"
secret_key = "SK"

[[notify.webhook]]
name = "hook"
url = "http://127.0.0.1:9/hook"

[[jobs]]
app_id = "app"
job_id = "job-0"

[[jobs]]
app_id = "app"
job_id = "job-1"

[[jobs]]
app_id = "app"
job_id = "job-2"
"#;
        Arc::new(crate::config::parse_str(text, Vec::<(String, String)>::new(), None).unwrap())
    }

    /// First seen stopped, with no reason: a transition and a stopped_unexpectedly alert.
    fn stopped(job: &JobConfig, at: DateTime<Utc>) -> Vec<PollRecord> {
        let phase = |s: &str| Phase::parse(s, None);
        vec![PollRecord {
            app_id: job.app_id().to_owned(),
            job_id: job.job_id().to_owned(),
            name: None,
            kind: crate::domain::JobKind::Individual,
            polled_at: at,
            outcome: PollOutcome::Ok {
                job: Box::new(JobSnapshot {
                    state: Some(State::parse("STOPPED")),
                    ..Default::default()
                }),
                raw: "{}".into(),
                request_id: None,
                transition: Some((None, phase("STOPPED"))),
            },
        }]
    }

    #[tokio::test]
    async fn every_job_waiting_gets_its_answer_and_a_refused_write_lands_when_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recwatch.db");
        let store = Store::open(&path).await.unwrap();
        let config = config();
        let (writer, _) = GroupWriter::start(Outbox::new(), store.clone());
        let t0 = Utc::now();
        let write_all = |at: DateTime<Utc>| {
            let writes = config.jobs.iter().map(|job| {
                writer.write(
                    stopped(job, at),
                    JobConfig::clone(job),
                    None,
                    at,
                    config.clone(),
                )
            });
            futures_util::future::join_all(writes)
        };

        // Another process holds the write lock: each job is told, and nothing is written.
        let other = Store::open(&path).await.unwrap();
        let held = other.begin_write().await.unwrap();
        let refused = write_all(t0).await;
        drop(held);
        assert_eq!(refused.len(), 3);
        for r in &refused {
            let e = r.as_ref().expect_err("the database is locked");
            assert!(e.to_string().contains("locked"), "{e:#}");
        }
        assert!(
            store
                .transitions()
                .history(None, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.alerts().list(false, 10).await.unwrap().is_empty());

        // The polls kept them; sent again (as with the next poll), they land, once each.
        let written = write_all(t0).await;
        assert!(written.iter().all(Result::is_ok), "{written:?}");
        let again = write_all(t0).await;
        assert!(again.iter().all(Result::is_ok), "{again:?}");
        assert_eq!(
            store
                .transitions()
                .history(None, None, 10)
                .await
                .unwrap()
                .len(),
            3
        );
        let alerts = store.alerts().list(false, 10).await.unwrap();
        assert_eq!(alerts.len(), 3, "one alert per job");
        assert!(
            alerts
                .iter()
                .all(|a| a.rule == crate::domain::Rule::StoppedUnexpectedly)
        );
    }

    /// Three jobs written as one group while another process holds the write lock: the
    /// group's refusal tells each job it met a lock, so the poller's own decision
    /// (`task::after_write`) in its own loop (`retry_locked`) tries each again, and all land
    /// once the lock ends (after the first refusal). When a group's lock reached its jobs as
    /// text, only a job written alone was tried again: these three were kept unwritten.
    #[tokio::test]
    async fn a_group_refused_on_a_lock_is_tried_again_like_a_single_job() {
        use crate::domain::JobKey;
        use crate::store::{Attempt, LOCK_RETRY, retry_locked};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recwatch.db");
        let store = Store::open(&path).await.unwrap();
        let config = config();
        let (writer, _) = GroupWriter::start(Outbox::new(), store.clone());
        let t0 = Utc::now();
        let other = Store::open(&path).await.unwrap();
        let held = std::sync::Mutex::new(Some(other.begin_write().await.unwrap()));
        let locked = std::sync::atomic::AtomicU32::new(0);
        let (writer, config, held, locked) = (&writer, &config, &held, &locked);
        // All three are queued before the writer task runs (one thread): one group.
        let writes = config.jobs.iter().map(|job| {
            let key = JobKey::new(job.app_id(), job.job_id());
            retry_locked(LOCK_RETRY, move |attempt| {
                let write = writer.write(
                    stopped(job, t0),
                    JobConfig::clone(job),
                    None,
                    t0,
                    config.clone(),
                );
                let key = key.clone();
                async move {
                    let after = super::super::task::after_write(&key, attempt, 1, write.await);
                    if matches!(after, Attempt::Locked(_)) {
                        locked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        // The other process commits: the next try finds the database free.
                        held.lock().unwrap().take();
                    }
                    after
                }
            })
        });
        let results = futures_util::future::join_all(writes).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(
            locked.load(std::sync::atomic::Ordering::Relaxed),
            3,
            "each job of the group met the lock once"
        );
        assert_eq!(
            store
                .transitions()
                .history(None, None, 10)
                .await
                .unwrap()
                .len(),
            3
        );
        assert_eq!(store.alerts().list(false, 10).await.unwrap().len(), 3);
    }
}
