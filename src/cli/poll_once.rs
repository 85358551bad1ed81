//! `recwatch poll-once`: every job polled once, a table of what was found, the alerts this
//! raised delivered (or said to be pending), then exit.

use super::{complain, emit, print_table};
use crate::config::Config;
use crate::outbox::Outbox;
use crate::store::Store;
use recwatch_rtc::client::RtcClient;

pub(super) async fn poll_once(config: &Config) -> anyhow::Result<()> {
    // Like `run`, it polls with its own rate budget and writes transitions and alerts: beside
    // a running daemon it would poll every job a second time, outside the daemon's budget.
    // (On PostgreSQL there is no owner lock: see `Store::open_for`.)
    let (store, _owner) = Store::open_for(&config.storage, "poll-once").await?;
    let client = RtcClient::new(&config.api.client_config())?;
    let outbox = Outbox::new().keeping_ids();
    outbox.restore(&store).await?;
    // The run-time watch list's jobs are polled too.
    let runtime = crate::watchlist::Watchlist::load(store.clone()).await?;
    let config = &crate::watchlist::with_runtime(config, &runtime.current());
    let results = crate::poller::poll_once(config, &client, &store, &outbox).await;
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
            job.app_id,
            job.job_id,
            state,
            reason,
            what,
        ]);
    }
    print_table(&rows)?;
    // Delivered now or said to be pending: never silently left for a later `run`.
    let raised = outbox.made();
    let undelivered =
        crate::deliver::deliver_now(&store, config, &raised, crate::deliver::POLL_ONCE_WAIT).await;
    store.close().await;
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
        Err(ref e) => complain(&format!("cannot deliver the alerts raised: {e:#}")),
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} polls failed", rows.len() - 1);
    }
    if !raised.is_empty() && !matches!(undelivered, Ok(0)) {
        anyhow::bail!("not every alert raised was delivered");
    }
    Ok(())
}
