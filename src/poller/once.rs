//! `recwatch poll-once`: every job polled once, through the same budget, client, poll task
//! and writer as the daemon; nothing is batched and every write is waited for.

use super::budget::Budget;
use super::job::JobState;
use super::key;
use super::task::{PollTask, Report};
use super::writer::GroupWriter;
use crate::config::{Config, JobConfig};
use crate::domain::Phase;
use crate::outbox::Outbox;
use crate::store::Store;
use recwatch_rtc::client::RtcClient;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, broadcast};
use tracing::error;

/// `recwatch poll-once`: every job once, through the same budget, client and store.
pub async fn poll_once(
    config: &Config,
    client: &RtcClient,
    store: &Store,
    outbox: &Outbox,
) -> Vec<(JobConfig, Result<Option<Phase>, String>, bool)> {
    let budget = Arc::new(Budget::new(config.api.rate_limit));
    let rows = store.jobs().all().await.unwrap_or_else(|e| {
        error!("cannot read the jobs' stored rows: {e:#}; each job is polled as a new one");
        Default::default()
    });
    let sem = Arc::new(Semaphore::new(config.api.max_in_flight));
    let shared = Arc::new(config.clone());
    let (writer, _) = GroupWriter::start(outbox.clone(), store.clone());
    let mut tasks = Vec::new();
    let (events, _) = broadcast::channel(16);
    for job in &config.jobs {
        // Stamped sent by the poll itself, right before its request goes.
        let (slot, _) = budget.reserve().await;
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let k = key(job);
        let row = rows.get(&k);
        let state = JobState::from_row(job, row, false).expect("terminal jobs are kept when asked");
        let state = Box::new(state);
        let task = PollTask {
            client: client.clone(),
            writer: writer.clone(),
            config: shared.clone(),
            events: events.clone(),
            // poll-once has nothing better to do than wait its turn.
            writer_wait: Duration::from_secs(30),
            touches: None,
        };
        let before = state.phase.clone();
        let job = job.clone();
        tasks.push(tokio::spawn(async move {
            let report = crate::vitals::contain(task.poll(k, state, Some(slot))).await;
            drop(permit);
            (job, before, report)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        let Ok((job, before, report)) = t.await else {
            continue;
        };
        let done = match report {
            Ok(Report::Done(done)) => *done,
            Ok(Report::Panicked { why, .. }) | Err(why) => {
                error!(app_id = %job.app_id(), job_id = %job.job_id(), "the poll failed (panicked: {why})");
                out.push((
                    JobConfig::clone(&job),
                    Err(format!("internal error (panicked: {why})")),
                    false,
                ));
                continue;
            }
        };
        if !done.state.unwritten.is_empty() {
            error!(app_id = %done.key.app_id, job_id = %done.key.job_id, "could not write this job's outcome");
        }
        let changed = done.state.phase != before;
        out.push((
            JobConfig::clone(&done.state.job),
            match done.result {
                Some(Ok(())) => Ok(done.state.phase.clone()),
                Some(Err(e)) => Err(e.to_string()),
                None => Ok(done.state.phase.clone()),
            },
            changed,
        ));
    }
    out
}
