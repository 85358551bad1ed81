//! The callback receiver's commit queue (issue 23, item 5): each verified event is still
//! stored before its 200, but the events that arrive while a commit is being made share the
//! next one. One writer task takes everything waiting (up to [`MAX_GROUP`]) into one
//! transaction; each request awaits its own answer through a oneshot. The shape is the
//! poller's group writer (`poller::writer`): a group commits whole or not at all, and a group
//! that fails is written again one event at a time, so each request gets its own answer (503
//! for the one whose write failed) — unless the database as a whole refuses (locked by
//! another process, full, read-only), when one at a time would only fail the same way after
//! as many waits.
//!
//! Discovery writes here too (item 4): a new event of a discovering app names a job nobody
//! watches, and its watch-list entry is written in the same commit as the event. The writer
//! is the only one deciding discoveries, one after the other against the list plus what its
//! group already added, so `watchlist.max_jobs` and an app's `max_discovered` hold exactly
//! however many arrive at once; the group's new entries are published to the poller as one
//! change of the list.

use crate::config::Config;
use crate::domain::{JobKey, RuntimeJob};
use crate::runtime_list::{Full, RuntimeList, Watchlist, full_beside};
use crate::store::{Inserted, NewEvent, Store, StoreError, WriteTx};
use chrono::{DateTime, Utc};
use recwatch_rtc::callback::RecordEvent;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// At most this many events share one transaction, so one commit stays short (a few
/// milliseconds on SQLite) and the first in the group does not wait long for the last.
pub const MAX_GROUP: usize = 512;

/// One verified event on its way to the database.
pub struct Pending {
    /// The app whose key verified it.
    pub app_id: String,
    pub event: RecordEvent,
    /// The hex SHA-256 of the raw body: with the app, what makes a resent event a duplicate.
    pub digest: String,
    /// The receive time, as stored.
    pub at: String,
    /// The raw body, when the app has `forward_to`: its forward is written with the event.
    pub forward: Option<axum::body::Bytes>,
    /// The entry to watch, when the event is new (a duplicate discovers nothing).
    pub discover: Option<Candidate>,
}

/// A job the event may reveal: its app discovers and nobody watched the job when the
/// request was read.
pub struct Candidate {
    pub entry: RuntimeJob,
    /// When RTC signed the event, for [`super::may_rediscover`].
    pub sent_at: Option<DateTime<Utc>>,
}

/// What became of one event.
#[derive(Debug)]
pub struct Committed {
    pub inserted: Inserted,
    /// What discovery did, when there was a [`Candidate`] and the event was new.
    pub discovered: Option<Discovered>,
}

/// What discovery did with a [`Candidate`].
#[derive(Debug, Clone, PartialEq)]
pub enum Discovered {
    /// Written to the run-time list and published to the poller.
    Watched(RuntimeJob),
    /// On the list already (added since the request was read, maybe by another process).
    AlreadyWatched,
    /// An operator unwatched the job (at this time) after the event was signed, or the
    /// event's time cannot be trusted (see [`super::may_rediscover`]): stored, not watched
    /// again.
    Unwatched { at: Option<String> },
    /// A bound of the list refuses it: stored, not watched.
    Full(Full),
    /// The watch-list write failed (the event is stored alone): its next event tries again.
    Unavailable(String),
}

/// The handle the receiver's requests commit through (cheap to clone).
#[derive(Clone)]
pub struct CommitQueue {
    units: mpsc::Sender<Unit>,
    /// Transactions committed (also `recwatch_callback_commits_total`): the events over the
    /// commits is how many shared each.
    commits: Arc<AtomicU64>,
    /// Requests queued and not yet answered.
    waiting: Arc<AtomicU64>,
}

struct Unit {
    pending: Pending,
    reply: oneshot::Sender<Result<Committed, String>>,
}

/// What the writer task works with.
#[derive(Clone)]
struct Writer {
    commits: Arc<AtomicU64>,
    store: Store,
    watchlist: Watchlist,
    config: watch::Receiver<Arc<Config>>,
}

impl CommitQueue {
    /// Starts the writer task; it ends once every `CommitQueue` clone is dropped, after
    /// answering what was queued. A panic while writing is contained like the poller's
    /// writer's: the task is started again on the same queue, and the requests of the group
    /// it held get no answer (their connections see an error, and RTC sends them again).
    pub fn start(
        store: Store,
        watchlist: Watchlist,
        config: watch::Receiver<Arc<Config>>,
    ) -> (CommitQueue, JoinHandle<()>) {
        let (units, rx) = mpsc::channel::<Unit>(MAX_GROUP * 2);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let commits = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            commits: commits.clone(),
            store,
            watchlist,
            config,
        };
        let supervisor = tokio::spawn(async move {
            loop {
                match tokio::spawn(write_loop(writer.clone(), rx.clone())).await {
                    Ok(()) => return,
                    Err(e) if e.is_panic() => {
                        let why = crate::vitals::panic_message(e.into_panic().as_ref());
                        error!("the callback writer panicked ({why}); restarting it");
                        metrics::counter!("recwatch_task_panics_total", "task" => "callback_writer")
                            .increment(1);
                    }
                    Err(_) => return,
                }
            }
        });
        let waiting = Arc::default();
        (
            CommitQueue {
                units,
                commits,
                waiting,
            },
            supervisor,
        )
    }

    /// How many transactions the writer has committed.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// How many requests are queued and wait for their commit.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Stores `pending` in the next commit and returns once that commit is made (or failed:
    /// `Err` says why, safe to log).
    pub async fn commit(&self, pending: Pending) -> Result<Committed, String> {
        let (reply, answer) = oneshot::channel();
        self.units
            .send(Unit { pending, reply })
            .await
            .map_err(|_| "the callback writer has stopped".to_string())?;
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let answer = answer.await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        answer.map_err(|_| "the callback writer stopped before answering".to_string())?
    }
}

/// Takes what is queued (up to [`MAX_GROUP`]) and writes it as one group, until every sender
/// is gone. Holds the queue while it runs; a restarted loop takes it over.
async fn write_loop(writer: Writer, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Unit>>>) {
    let mut rx = rx.lock().await;
    let mut group = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (pendings, replies): (Vec<Pending>, Vec<_>) =
            group.drain(..).map(|u| (u.pending, u.reply)).unzip();
        let results = writer.write(&pendings).await;
        for (reply, result) in replies.into_iter().zip(results) {
            // A request that stopped waiting (its connection closed) needs no answer: what
            // was committed stays, and RTC's resend is a duplicate.
            let _ = reply.send(result);
        }
    }
}

/// What one transaction wrote, before it is published.
struct Written {
    committed: Vec<Committed>,
    /// The entries discovery added, for the poller.
    added: BTreeMap<JobKey, RuntimeJob>,
    /// The list's version before and after this commit's writes, when nobody else wrote
    /// between them (see [`Watchlist::publish_added`]).
    versions: Option<(i64, i64)>,
}

impl Writer {
    /// Writes a group in one transaction; if that fails, each event on its own (see the
    /// module's comment). One answer per event, in order.
    async fn write(&self, group: &[Pending]) -> Vec<Result<Committed, String>> {
        // Discovery decides against the list as published: no other change may come between
        // that read and this group's publication (taken before the write connection, as
        // every change of the list does).
        let _update = match group.iter().any(|p| p.discover.is_some()) {
            true => Some(self.watchlist.updates().await),
            false => None,
        };
        let config = self.config.borrow().clone();
        let all: Vec<&Pending> = group.iter().collect();
        let e = match self.transaction(&config, &all, true).await {
            Ok(written) => return self.publish(written).into_iter().map(Ok).collect(),
            Err(e) => e,
        };
        if group.len() == 1 || e.is_database_wide() {
            let why = e.to_string();
            return group.iter().map(|_| Err(why.clone())).collect();
        }
        warn!(
            events = group.len(),
            "a grouped write of callback events failed, writing each on its own: {e}"
        );
        let mut results = Vec::with_capacity(group.len());
        for p in group {
            results.push(self.alone(&config, p).await);
        }
        results
    }

    /// One event in its own transaction; should its discovery be what fails, the event is
    /// stored without it (RTC is not asked to resend for a watch-list write).
    async fn alone(&self, config: &Config, p: &Pending) -> Result<Committed, String> {
        let first = match self.transaction(config, &[p], true).await {
            Ok(written) => return Ok(self.publish(written).remove(0)),
            Err(e) => e,
        };
        if p.discover.is_none() || first.is_database_wide() {
            return Err(first.to_string());
        }
        let mut written = self
            .transaction(config, &[p], false)
            .await
            .map_err(|e| e.to_string())?;
        let c = &mut written.committed[0];
        if c.inserted == Inserted::New {
            c.discovered = Some(Discovered::Unavailable(first.to_string()));
        }
        Ok(self.publish(written).remove(0))
    }

    /// The transaction itself: every event, each new one's forward and (with `discover`)
    /// its discovery, committed together.
    async fn transaction(
        &self,
        config: &Config,
        group: &[&Pending],
        discover: bool,
    ) -> Result<Written, StoreError> {
        let discovering = discover && group.iter().any(|p| p.discover.is_some());
        let list = self.watchlist.current();
        let mut tx = self.store.begin_write().await?;
        let before = match discovering {
            true => Some(tx.watchlist().version().await?),
            false => None,
        };
        let now = Utc::now();
        let mut written = Written {
            committed: Vec::with_capacity(group.len()),
            added: BTreeMap::new(),
            versions: None,
        };
        let events: Vec<NewEvent> = group
            .iter()
            .map(|p| NewEvent {
                app_id: &p.app_id,
                event: &p.event,
                body_sha256: &p.digest,
                at: &p.at,
                forward: p.forward.as_deref(),
            })
            .collect();
        let inserted = tx.callbacks().insert_many(&events).await?;
        // Discovery after the events, in the group's order: the first to ask gets the room.
        for (p, inserted) in group.iter().zip(inserted) {
            let discovered = match (&p.discover, inserted) {
                (Some(c), Inserted::New) if discover => {
                    Some(discover_in(&mut tx, config, &list, &mut written.added, c, now).await?)
                }
                _ => None,
            };
            written.committed.push(Committed {
                inserted,
                discovered,
            });
        }
        if let Some(before) = before {
            let after = tx.watchlist().version().await?;
            // Each entry written moves the version by one: any other step is someone else's.
            written.versions =
                (after == before + written.added.len() as i64).then_some((before, after));
        }
        tx.commit().await?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("recwatch_callback_commits_total").increment(1);
        tell_commit(group, &written.committed);
        Ok(written)
    }

    /// Tells the watch list what a commit added (and which bounds refused), once per group.
    fn publish(&self, written: Written) -> Vec<Committed> {
        for c in &written.committed {
            match &c.discovered {
                Some(Discovered::Full(full)) => self.watchlist.tell_full(full),
                Some(Discovered::Watched(job)) => self.watchlist.under_bounds(job),
                _ => {}
            }
        }
        self.watchlist
            .publish_added(written.added.into_values().collect(), written.versions);
        written.committed
    }
}

/// The operator's view of a commit: one line at INFO, naming the event when it is alone (the
/// usual case outside storms), else how many there were. A line per callback was about 5 % of
/// the daemon's CPU in a storm (BENCHMARKS.md part 23); each event is at DEBUG in the
/// receiver.
fn tell_commit(group: &[&Pending], committed: &[Committed]) {
    let new = committed
        .iter()
        .filter(|c| c.inserted == Inserted::New)
        .count();
    match group {
        [one] => info!(
            app_id = %one.app_id,
            job_id = one.event.job_id.as_deref().unwrap_or(""),
            event_type = %one.event.event_type,
            result = if new == 1 { "stored" } else { "duplicate" },
            "callback stored"
        ),
        _ => info!(
            events = group.len(),
            new,
            duplicates = group.len() - new,
            "callbacks stored in one commit"
        ),
    }
}

/// Discovery of one job inside the commit that stores its event: against the list as
/// published plus what this group added (`added`, which takes the job if it is watched).
async fn discover_in(
    tx: &mut WriteTx,
    config: &Config,
    list: &RuntimeList,
    added: &mut BTreeMap<JobKey, RuntimeJob>,
    candidate: &Candidate,
    now: DateTime<Utc>,
) -> Result<Discovered, StoreError> {
    let entry = &candidate.entry;
    if list.jobs.contains_key(&entry.key) || added.contains_key(&entry.key) {
        return Ok(Discovered::AlreadyWatched);
    }
    let unwatched_at = tx.watchlist().unwatched_at(&entry.key).await?;
    if !super::may_rediscover(unwatched_at.as_deref(), candidate.sent_at, now) {
        return Ok(Discovered::Unwatched { at: unwatched_at });
    }
    if let Some(full) = full_beside(config, list, added, entry) {
        return Ok(Discovered::Full(full));
    }
    if !tx.watchlist().add(entry).await? {
        // Another process's entry, not read yet: theirs stays, and `follow` brings it.
        return Ok(Discovered::AlreadyWatched);
    }
    added.insert(entry.key.clone(), entry.clone());
    Ok(Discovered::Watched(entry.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppConfig, Auth};
    use crate::domain::JobSource;
    use crate::secret::Secret;
    use crate::store::test_support::both_backends;

    fn config(max_jobs: u64, max_discovered: u64) -> Arc<Config> {
        let mut c = Config::defaults(Auth::Token {
            token: Secret::new("t"),
        });
        c.watchlist.max_jobs = max_jobs;
        c.apps = vec![AppConfig {
            account: None,
            app_id: "app".into(),
            auth_key: Secret::new("0123456789abcdef0123456789abcdef"),
            name: None,
            notify: None,
            forward_to: None,
            discover: true,
            max_discovered,
        }];
        Arc::new(c)
    }

    async fn start_queue(store: &Store, config: Arc<Config>) -> (CommitQueue, Watchlist) {
        let watchlist = Watchlist::load(store.clone()).await.unwrap();
        let (_tx, rx) = watch::channel(config);
        // The sender may go: the writer reads the configuration last published.
        let (queue, _) = CommitQueue::start(store.clone(), watchlist.clone(), rx);
        (queue, watchlist)
    }

    /// An event of `job` (its body `n`), with a forward, and discovering its job if asked.
    fn pending(job: &str, n: usize, discover: bool) -> Pending {
        let body = format!(
            r#"{{"event_type":"RECORD_NEW_FILE_START","app_id":"app","job_id":"{job}","detail_message":"n{n}"}}"#
        );
        let entry = RuntimeJob {
            account: None,
            key: JobKey::new("app", job),
            name: None,
            kind: Default::default(),
            notify: None,
            source: JobSource::Callback,
            added_at: "2026-12-07T12:00:00.000Z".parse().unwrap(),
        };
        Pending {
            app_id: "app".into(),
            event: RecordEvent::parse(body.as_bytes()).unwrap(),
            digest: format!("digest-of-{job}-{n}"),
            at: "2026-12-07T12:00:00.000Z".into(),
            forward: Some(body.into_bytes().into()),
            discover: discover.then_some(Candidate {
                entry,
                sent_at: None,
            }),
        }
    }

    /// Commits every pending event at once, while the store's one write connection is held,
    /// so that they all wait in the queue; then lets the writer go. The answers, in order.
    async fn all_at_once(
        store: &Store,
        queue: &CommitQueue,
        events: Vec<Pending>,
    ) -> Vec<Result<Committed, String>> {
        let n = events.len();
        let held = store.begin_write().await.unwrap();
        let answers: Vec<_> = events
            .into_iter()
            .map(|p| {
                let q = queue.clone();
                tokio::spawn(async move { q.commit(p).await })
            })
            .collect();
        // The writer has taken what came first and waits for the connection; the rest queue.
        crate::testing::wait_for(
            "every commit queued behind the writer",
            crate::testing::T,
            || async { (queue.waiting() >= n as u64).then_some(()) },
        )
        .await;
        held.commit().await.unwrap();
        let mut out = Vec::new();
        for a in answers {
            out.push(a.await.unwrap());
        }
        out
    }

    both_backends! {
        /// 200 events waiting while a commit is made share the next one: two transactions,
        /// not 200 (before issue 23 each event was its own). Each request gets its own
        /// answer, a duplicate (the same body again) is stored once and answered as one, and
        /// each new event's forward is written with it.
        async fn events_waiting_share_one_commit_and_each_gets_its_answer(store: Store) {
            let (queue, _) = start_queue(&store, config(10, 10)).await;
            let mut events: Vec<Pending> = (0..199).map(|n| pending("j", n, false)).collect();
            events.push(pending("j", 7, false));
            let answers = all_at_once(&store, &queue, events).await;
            // What the writer took before the connection was free, then the rest.
            assert!(queue.commits() <= 2, "{} commits", queue.commits());
            let inserted: Vec<Inserted> =
                answers.into_iter().map(|a| a.unwrap().inserted).collect();
            assert!(inserted[..199].iter().all(|i| *i == Inserted::New));
            assert_eq!(inserted[199], Inserted::Duplicate);
            assert_eq!(store.callbacks().count().await.unwrap(), 199);
            let forwards = store.forwards().due("2026-12-07T12:00:01.000Z", 1000).await.unwrap();
            assert_eq!(forwards.len(), 199, "one forward per stored event");
        }
    }

    both_backends! {
        /// An event the database refuses on its own (PostgreSQL takes no NUL character in a
        /// text; SQLite does) fails its group, which is then written one event at a time: that
        /// one is answered with the error (a 503), every other is stored and answered.
        async fn a_failing_event_is_answered_alone_and_its_group_is_stored(store: Store) {
            let (queue, _) = start_queue(&store, config(10, 10)).await;
            let mut events: Vec<Pending> = (0..20).map(|n| pending("j", n, false)).collect();
            // The body says \u0000 (escaped, as JSON must): the message holds a NUL.
            let body = r#"{"event_type":"RECORD_NEW_FILE_START","job_id":"j","detail_message":"a\u0000b"}"#;
            events[10].event = RecordEvent::parse(body.as_bytes()).unwrap();
            let answers = all_at_once(&store, &queue, events).await;
            for (n, a) in answers.iter().enumerate() {
                match (n, a) {
                    (10, Err(e)) if store.db().is_postgres() => assert!(!e.is_empty()),
                    (_, Ok(c)) => assert_eq!(c.inserted, Inserted::New, "event {n}"),
                    (_, Err(e)) => panic!("event {n} refused: {e}"),
                }
            }
            let stored = if store.db().is_postgres() { 19 } else { 20 };
            assert_eq!(store.callbacks().count().await.unwrap(), stored);
        }
    }

    both_backends! {
        /// A burst of discoveries in one commit: each bound holds exactly (`max_discovered`
        /// here, `max_jobs` for the rest), a job named twice is watched once, and the list is
        /// published with the database's version, so the next refresh reads nothing more.
        async fn a_burst_of_discoveries_is_watched_up_to_the_bounds_exactly(store: Store) {
            let (queue, watchlist) = start_queue(&store, config(1_000, 300)).await;
            let mut events: Vec<Pending> =
                (0..400).map(|n| pending(&format!("job-{n}"), n, true)).collect();
            events.push(pending("job-5", 9_999, true));
            let answers = all_at_once(&store, &queue, events).await;
            let mut watched = 0;
            let mut full = 0;
            for a in answers {
                match a.unwrap().discovered {
                    Some(Discovered::Watched(_)) => watched += 1,
                    Some(Discovered::Full(Full::Discovered { max: 300, .. })) => full += 1,
                    Some(Discovered::AlreadyWatched) => {}
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!((watched, full), (300, 100));
            assert_eq!(store.watchlist().all().await.unwrap().len(), 300);
            let list = watchlist.current();
            assert_eq!(list.jobs.len(), 300);
            assert_eq!(
                watchlist.version(),
                Some(store.watchlist().version().await.unwrap())
            );
            assert!(!watchlist.refresh().await.unwrap(), "nothing new to read");

            // max_jobs counts every run-time entry.
            let (queue, _) = start_queue(&store, config(310, 1_000)).await;
            let events: Vec<Pending> =
                (400..450).map(|n| pending(&format!("job-{n}"), n, true)).collect();
            let answers = all_at_once(&store, &queue, events).await;
            let full = answers
                .into_iter()
                .filter(|a| {
                    matches!(
                        a.as_ref().unwrap().discovered,
                        Some(Discovered::Full(Full::WatchList { max: 310 }))
                    )
                })
                .count();
            assert_eq!(full, 40);
            assert_eq!(store.watchlist().all().await.unwrap().len(), 310);
        }
    }
}
