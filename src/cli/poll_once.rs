//! `recwatch poll-once`: every job polled once, a table of what was found, the alerts this
//! raised delivered (or said to be pending), then exit.

use super::{complain, emit, print_table};
use crate::config::{Config, JobConfig};
use crate::domain::{AlertId, Phase};
use crate::outbox::Outbox;
use crate::store::Store;
use recwatch_rtc::client::RtcClient;

pub(super) async fn poll_once(config: &Config) -> anyhow::Result<()> {
    // Like `run`, it polls with its own rate budget and writes transitions and alerts: beside
    // a running daemon it would poll every job a second time, outside the daemon's budget.
    // With SQLite the owner lock refuses it (75); on PostgreSQL the leadership lease does.
    let (store, _owner) = Store::open_for(&config.storage, "poll-once").await?;
    // The run-time watch list's jobs are polled too.
    let runtime = crate::runtime_list::Watchlist::load(store.clone()).await?;
    let config = &crate::runtime_list::with_runtime(config, &runtime.current());
    let lease = take_lease(config, &store).await?;
    let outbox = Outbox::new().keeping_ids();
    outbox.restore(&store, &config.account_names()).await?;
    // Each account's jobs through its own client and budget (issue 25).
    let mut results = Vec::new();
    for name in config.account_names() {
        let narrowed = config
            .narrowed(&name)
            .expect("an account of the configuration");
        let client = RtcClient::new(&narrowed.api.client_config())?;
        results.extend(crate::poller::poll_once(&narrowed, &client, &store, &outbox).await);
    }
    let polled = results.len();
    let (rows, failed) = results_table(results);
    print_table(&rows)?;
    // Delivered now or said to be pending: never silently left for a later `run`.
    let raised = outbox.made();
    let undelivered =
        crate::deliver::deliver_now(&store, config, &raised, crate::deliver::POLL_ONCE_WAIT).await;
    hand_back(store, &lease).await;
    tell_delivery(&raised, &undelivered)?;
    if failed > 0 {
        anyhow::bail!("{failed} of {polled} polls failed");
    }
    if !raised.is_empty() && !matches!(undelivered, Ok(0)) {
        anyhow::bail!("not every alert raised was delivered");
    }
    Ok(())
}

/// What each poll found, as the table's rows (a header first), and how many polls failed.
fn results_table(
    results: Vec<(JobConfig, Result<Option<Phase>, String>, bool)>,
) -> (Vec<Vec<String>>, usize) {
    let mut rows = vec![vec![
        "NAME".into(),
        "APP_ID".into(),
        "JOB_ID".into(),
        "STATE".into(),
        "STOP_REASON".into(),
        "RESULT".into(),
    ]];
    let mut failed = 0;
    for (job, result, changed) in results {
        let (state, reason, what) = match result {
            Ok(Some(p)) => (
                p.state.to_string(),
                p.stop_reason_str().unwrap_or("-").to_string(),
                if changed {
                    "changed".into()
                } else {
                    "unchanged".into()
                },
            ),
            Ok(None) => ("-".into(), "-".into(), "answer had no state".into()),
            Err(e) => {
                failed += 1;
                ("-".into(), "-".into(), e.to_string())
            }
        };
        rows.push(vec![
            job.name.clone().unwrap_or_else(|| "-".into()),
            job.app_id().to_owned(),
            job.job_id().to_owned(),
            state,
            reason,
            what,
        ]);
    }
    (rows, failed)
}

/// The database left as a stopping `run` leaves it: the lease given back, the WAL
/// checkpointed, the store closed.
async fn hand_back(store: Store, lease: &Option<(crate::store::Claimant, i64)>) {
    if let Some((me, epoch)) = lease {
        // Given back at once, so a `run` started after it leads without waiting out the lease.
        if let Err(e) = store.lease().release(me, *epoch).await {
            complain(&format!(
                "cannot give the leadership lease back ({e}); it expires by itself"
            ));
        }
    }
    // As `run` at its stop: the file alone is the whole database afterwards (issue 22, 14).
    if let Err(e) = store.db().checkpoint().await {
        complain(&format!(
            "the WAL checkpoint failed ({e}); the file needs its -wal beside it until the next start"
        ));
    }
    store.close().await;
}

/// Whether the alerts raised were delivered, said on stdout, or on stderr when not.
fn tell_delivery(raised: &[AlertId], undelivered: &anyhow::Result<i64>) -> anyhow::Result<()> {
    let alerts = match raised.len() {
        1 => "1 alert".to_string(),
        n => format!("{n} alerts"),
    };
    match undelivered {
        _ if raised.is_empty() => {}
        Ok(0) => out!("{alerts} raised and delivered")?,
        Ok(n) => complain(&format!(
            "{alerts} raised; {n} of their deliveries still pending after {}: `recwatch alerts --pending` shows why; `recwatch run` sends them when it next starts",
            humantime::format_duration(crate::deliver::POLL_ONCE_WAIT)
        )),
        Err(e) => complain(&format!("cannot deliver the alerts raised: {e:#}")),
    }
    Ok(())
}

/// On PostgreSQL several `recwatch run` share the database and only the lease's holder polls
/// and delivers (the API budget is the account's): poll-once takes the lease for its own run,
/// or refuses (75) naming the active instance. With SQLite the owner lock already did this.
async fn take_lease(
    config: &Config,
    store: &Store,
) -> anyhow::Result<Option<(crate::store::Claimant, i64)>> {
    if !matches!(
        config.storage.database(),
        crate::config::Database::Postgres(_)
    ) {
        return Ok(None);
    }
    let me = crate::store::Claimant::this_process();
    // Long enough for every poll at the budget's pace and the delivery wait; it is given back
    // at the end, and if this process dies it expires by itself.
    let polls = config.jobs.len() as u64 / u64::from(config.api.rate_limit.max(1)) + 1;
    let ttl = std::time::Duration::from_secs(polls + 60) + crate::deliver::POLL_ONCE_WAIT;
    if let Some(epoch) = store.lease().acquire(&me, ttl, false).await? {
        return Ok(Some((me, epoch)));
    }
    let who = match store.lease().read().await? {
        Some(lease) => lease.who(),
        None => "another instance".to_string(),
    };
    Err(crate::exit::StartError::busy(format!(
        "{who} is the active recwatch instance on this database: poll-once beside it would poll every job a second time, outside the API's budget; read `recwatch status` instead, or stop the running instances first"
    ))
    .into())
}
