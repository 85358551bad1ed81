//! Where roles switch: what only the active instance runs, started when this instance takes
//! over and stopped when it steps down (see `leader`).
//!
//! Every instance keeps its configuration, its HTTP endpoint, its callback receiver and its
//! database connections. Only the active one runs the *active set*: the poller (so the API
//! budget is the account's, never exceeded by two instances), the delivery worker and its
//! lanes, the forwarder, the remediation worker and housekeeping. Each term builds its set afresh from the database
//! (what another instance did meanwhile is there, not in this one's memory), with a store
//! fenced at the term's epoch: once another instance leads, every write of the old term is
//! refused. The remediation worker is part of the set too (its intents are in the database, so
//! a new term continues them; one found `posting` becomes `unknown`, never sent again).

use super::housekeeping;
use super::supervise;
use crate::config::Config;
use crate::leader::Term;
use crate::outbox::Outbox;
use crate::poller::{Budgets, Event, Hints, Poller};
use crate::runtime_list::Watchlist;
use crate::store::Store;
use crate::vitals::Vitals;
use anyhow::Context;
use recwatch_rtc::client::RtcClient;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, broadcast, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_cron_scheduler::JobScheduler;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

/// What every term's active set is built from: the parts that outlive a term.
pub(super) struct TermParts {
    pub config: watch::Receiver<Arc<Config>>,
    /// Unfenced: each term fences its own clone.
    pub store: Store,
    pub outbox: Outbox,
    /// The daemon's event stream: each term's poll events are passed into it.
    pub events: broadcast::Sender<Event>,
    pub vitals: Arc<Vitals>,
    pub hints: Arc<Hints>,
    /// Each account's request budget (shared by the accounts of one static key).
    pub budgets: Budgets,
    pub watchlist: Watchlist,
    /// Rung by the callback receiver when it stores an event to relay.
    pub forward_wake: Arc<Notify>,
}

/// One term's running work.
struct ActiveSet {
    epoch: i64,
    /// The accounts polled, one poller each: a reload that changes them starts the set again.
    accounts: Vec<Arc<str>>,
    /// Set when the term ends (this instance steps down, or the daemon stops).
    stop: watch::Sender<bool>,
    tasks: TaskTracker,
    poll_task: JoinHandle<anyhow::Result<()>>,
    housekeeping: JobScheduler,
}

impl ActiveSet {
    /// Starts the term's work; `armed` is told once its poll loop is armed.
    async fn start(
        parts: &TermParts,
        term: Term,
        armed: Option<oneshot::Sender<()>>,
    ) -> anyhow::Result<ActiveSet> {
        let store = parts.store.fenced(term.fence);
        let config = parts.config.borrow().clone();
        // What the previous leader left open (an API outage) is the truth now.
        parts.outbox.restore(&store).await?;
        let pollers = pollers(parts, &config, &store)?;
        parts
            .outbox
            .set_accounts(config.account_names().iter().map(|n| n.to_string()));
        let worker =
            crate::deliver::Worker::new(store.clone(), &config, parts.outbox.wake_handle())?;
        let forwarder = crate::deliver::forward::Forwarder::new(
            store.clone(),
            parts.config.clone(),
            parts.forward_wake.clone(),
        )
        .context("cannot build the HTTP client for forward_to")?;
        let tasks = TaskTracker::new();
        let (stop_tx, stop) = watch::channel(false);
        let housekeeping = housekeeping::start(
            &tasks,
            store.clone(),
            config.storage.retention,
            stop.clone(),
        )
        .await?;
        let worker_parts = supervise::WorkerParts {
            store: store.clone(),
            config: parts.config.clone(),
            wake: parts.outbox.wake_handle(),
            vitals: parts.vitals.clone(),
        };
        tasks.spawn(supervise::delivery_worker(
            worker,
            worker_parts,
            stop.clone(),
        ));
        tasks.spawn(forwarder.run(stop.clone()));
        // Remediation POSTs only where polling runs, through the fenced store: a stepped-down
        // instance cannot mark an intent `posting`, so it cannot send a create.
        tasks.spawn(
            crate::remediation::Remediator::new(
                store.clone(),
                parts.outbox.clone(),
                parts.budgets.clone(),
                parts.watchlist.clone(),
                parts.config.clone(),
            )
            .run(stop.clone()),
        );
        let (poll_armed, poll_task) = start_pollers(&tasks, pollers, &parts.events, stop);
        if let Some(armed) = armed {
            tasks.spawn(async move {
                if poll_armed.await.is_ok() {
                    let _ = armed.send(());
                }
            });
        }
        Ok(ActiveSet {
            accounts: config.account_names(),
            epoch: term.epoch,
            stop: stop_tx,
            tasks,
            poll_task,
            housekeeping,
        })
    }

    /// Stops the term's work at once: no new poll or send; what is in flight finishes (its
    /// writes are fenced) or stays pending for the next leader.
    async fn stop(mut self) {
        let _ = self.stop.send(true);
        let _ = self.housekeeping.shutdown().await;
        self.tasks.close();
        self.tasks.wait().await;
        info!(epoch = self.epoch, "the active instance's work has stopped");
    }
}

/// One poller per account (issue 25), each with the configuration narrowed to its account, its
/// own client, health and lockout guard, its account's budget, and its own hint intake and
/// feed (the first account's intake is the one the callback receiver rings; the others are
/// rung beside it).
fn pollers(parts: &TermParts, config: &Arc<Config>, store: &Store) -> anyhow::Result<Vec<Poller>> {
    let mut pollers = Vec::new();
    for (i, name) in config.account_names().iter().enumerate() {
        let narrowed = config
            .narrowed_shared(name)
            .expect("an account of the configuration");
        let client = RtcClient::new(&narrowed.api.client_config())
            .with_context(|| format!("cannot build the HTTP client of account {name}"))?;
        let budget = parts.budgets.of(&narrowed.api);
        let hints = match i {
            0 => parts.hints.clone(),
            _ => parts.hints.beside(),
        };
        let mut poller = Poller::new(narrowed, client, store.clone(), parts.outbox.clone())
            .sharing(hints, parts.vitals.liveness.clone(), budget);
        poller.follow(parts.config.clone());
        poller.follow_watchlist(parts.watchlist.subscribe());
        pollers.push(poller);
    }
    Ok(pollers)
}

/// Starts every account's poll loop: armed once every one is; the task ends when any loop
/// ends (each only ends when the term stops, or by failing).
fn start_pollers(
    tasks: &TaskTracker,
    pollers: Vec<Poller>,
    events: &broadcast::Sender<Event>,
    stop: watch::Receiver<bool>,
) -> (oneshot::Receiver<()>, JoinHandle<anyhow::Result<()>>) {
    let (all_armed, armed) = oneshot::channel();
    let mut arms = Vec::new();
    let mut loops = Vec::new();
    for poller in pollers {
        let (armed, task) = start_polling(tasks, poller, events, stop.clone());
        arms.push(armed);
        loops.push(task);
    }
    tasks.spawn(async move {
        for armed in arms {
            if armed.await.is_err() {
                return;
            }
        }
        let _ = all_armed.send(());
    });
    let task = tasks.spawn(async move {
        let (first, _, rest) = futures_util::future::select_all(loops).await;
        let first = first.map_err(|e| anyhow::anyhow!(why_ended(Err(e))))?;
        first?;
        // One ended well (the term stopping): the others are stopping too.
        for r in futures_util::future::join_all(rest).await {
            r.map_err(|e| anyhow::anyhow!(why_ended(Err(e))))??;
        }
        Ok(())
    });
    (armed, task)
}

/// Starts the poll loop, and passes its events into the daemon's stream until it has ended
/// and they are all passed on.
fn start_polling(
    tasks: &TaskTracker,
    mut poller: Poller,
    events: &broadcast::Sender<Event>,
    stop: watch::Receiver<bool>,
) -> (oneshot::Receiver<()>, JoinHandle<anyhow::Result<()>>) {
    let armed = poller.armed();
    let mut poll_events = poller.events();
    let poll_ended = CancellationToken::new();
    let fwd = events.clone();
    let ended = poll_ended.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                biased;
                e = poll_events.recv() => match e {
                    Ok(e) => { let _ = fwd.send(e); }
                    Err(_) => return,
                },
                _ = ended.cancelled() => break,
            }
        }
        // The loop has ended: what it sent before is still queued.
        while let Ok(e) = poll_events.try_recv() {
            let _ = fwd.send(e);
        }
    });
    let poll_task = tasks.spawn(async move {
        // Cancels on drop, so a poll loop that panics ends the forwarding too.
        let _ended = poll_ended.drop_guard();
        poller.run(stop).await
    });
    (armed, poll_task)
}

/// Follows `terms` until `stop`: starts the active set when this instance takes over, stops
/// it when it steps down. Returns an error if a term's poll loop ends by itself (recwatch
/// cannot do its job; the caller stops the daemon so the service manager restarts it).
pub(super) async fn switch(
    parts: TermParts,
    mut terms: watch::Receiver<Option<Term>>,
    mut stop: watch::Receiver<bool>,
    mut armed: Option<oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    let mut current: Option<ActiveSet> = None;
    let mut configs = parts.config.clone();
    let result = loop {
        if *stop.borrow() {
            break Ok(());
        }
        let term = terms.borrow_and_update().clone();
        let accounts = configs.borrow_and_update().account_names();
        let stale = match (&current, &term) {
            (Some(set), Some(t)) => set.epoch != t.epoch || set.accounts != accounts,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if let Some(set) = &current
            && set.accounts != accounts
        {
            // A poller per account: another set of accounts is another set of pollers. The
            // term's work starts again from the database, as at a takeover.
            info!(
                "the reload changed the accounts ({} -> {}): polling and delivery start again with them",
                set.accounts.join(", "),
                accounts.join(", ")
            );
        }
        if stale && let Some(set) = current.take() {
            set.stop().await;
        }
        let mut retry = false;
        if let (None, Some(t)) = (&current, term) {
            match ActiveSet::start(&parts, t, armed.take()).await {
                Ok(set) => current = Some(set),
                Err(e) => {
                    error!(
                        "cannot start polling and delivering for this term: {e:#}; trying again in 1 s"
                    );
                    retry = true;
                }
            }
        }
        let poll_ended = async {
            match current.as_mut() {
                Some(set) => (&mut set.poll_task).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => {}
            changed = terms.changed() => if changed.is_err() { break Ok(()) },
            // A closed channel disables the branch (the daemon is stopping).
            Ok(()) = configs.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)), if retry => {}
            // A term's poll loop only ends when its term is stopped (above, by this loop):
            // ending by itself, it cannot do its job.
            r = poll_ended => {
                let why = why_ended(r);
                // Already finished: not to be awaited again when the term is stopped.
                if let Some(set) = current.as_mut() {
                    set.poll_task = tokio::spawn(async { Ok(()) });
                }
                break Err(anyhow::anyhow!("{why}"));
            }
        }
    };
    if let Some(set) = current.take() {
        set.stop().await;
    }
    result
}

fn why_ended(r: Result<anyhow::Result<()>, tokio::task::JoinError>) -> String {
    match r {
        Ok(Ok(())) => "it returned".to_string(),
        Ok(Err(e)) => format!("{e:#}"),
        Err(e) if e.is_panic() => format!(
            "it panicked: {}",
            crate::vitals::panic_message(e.into_panic().as_ref())
        ),
        Err(e) => e.to_string(),
    }
}
