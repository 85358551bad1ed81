//! The watch list as a running recwatch sees it: the config file's `[[jobs]]` (source
//! `config`) and the database's run-time entries (`api`, `cli`, `callback`), merged, the config
//! file winning over a run-time entry with the same key.
//!
//! The database is the truth, not this process's memory: the CLI writes it from another
//! process, and several instances may share it (issue 13). So [`Watchlist::follow`] reads the
//! list's version number (one row, moved by triggers on every change) every
//! [`REFRESH_EVERY`] and re-reads the list only when it moved; each change is published on a
//! `watch` channel the poller's dispatcher follows, so a change made anywhere is polled within
//! about a second. A change made in this process ([`Watchlist::add`], for the API and the
//! callback receiver's discovery) is published at once, without waiting for that read.

use crate::config::{Config, JobConfig};
use crate::domain::{JobKey, JobKind, JobSource, RuntimeJob, Timestamp, check_id};
use crate::store::{Store, StoreError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// How often the database's version of the run-time list is read: a change made by another
/// process reaches the poller within this (plus one read).
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// The longest `name` a run-time entry may have (it goes into alerts and chat messages).
pub const MAX_NAME_CHARS: usize = 200;

/// The run-time list as this process last read it (or changed it).
///
/// Published whole on a `watch` channel while the poller holds the previous one, so a change
/// copies the map: its entries are two reference counts and a source each (see [`Listed`]), so
/// that copy is the map's nodes, not every entry's strings (issue 23, item 1: part 17 saw ~9 KiB
/// a discovered job during a storm, with the whole list cloned per commit).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeList {
    pub jobs: BTreeMap<JobKey, Listed>,
}

impl RuntimeList {
    /// The list of these entries (as the database gives them).
    pub fn of(jobs: impl IntoIterator<Item = RuntimeJob>) -> RuntimeList {
        RuntimeList {
            jobs: jobs
                .into_iter()
                .map(|j| (j.key.clone(), Listed::new(j)))
                .collect(),
        }
    }
}

/// A run-time entry as this process holds it: one representation of a run-time job (issue 23,
/// item 1). `job` is the configuration the poller polls it with, made once when the entry is
/// read or added and shared from then on by the merged configuration, the poller's `watched`,
/// the job's state and the API's view; before, each merge of the list made every run-time job's
/// `JobConfig` anew beside the list's own `RuntimeJob`.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    pub job: Arc<JobConfig>,
    pub source: JobSource,
    /// When it was added.
    pub added_at: Timestamp,
}

impl Listed {
    pub fn new(r: RuntimeJob) -> Listed {
        Listed {
            job: Arc::new(JobConfig {
                account: r.account.map(Into::into),
                kind: r.kind,
                key: r.key,
                name: r.name,
                interval: None,
                notify: r.notify,
            }),
            source: r.source,
            added_at: r.added_at,
        }
    }

    /// Whether this is what `r` says (the database's row of the same key).
    pub fn is(&self, r: &RuntimeJob) -> bool {
        let j = &*self.job;
        j.kind == r.kind
            && j.account.as_deref() == r.account.as_ref()
            && j.name == r.name
            && j.notify == r.notify
            && j.interval.is_none()
            && self.source == r.source
            && self.added_at == r.added_at
    }

    /// The entry as the API and the database have it.
    pub fn to_runtime_job(&self, key: &JobKey) -> RuntimeJob {
        RuntimeJob {
            account: self.job.account.as_deref().cloned(),
            key: key.clone(),
            name: self.job.name.clone(),
            kind: self.job.kind,
            notify: self.job.notify.clone(),
            source: self.source.clone(),
            added_at: self.added_at,
        }
    }
}

/// One watched job and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Watched {
    pub job: Arc<JobConfig>,
    pub source: JobSource,
    /// When a run-time entry was added; `None` for the config file's jobs.
    pub added_at: Option<Timestamp>,
}

/// A watched job, borrowed from where it is listed.
#[derive(Clone, Copy, Debug)]
pub enum Entry<'a> {
    File(&'a Arc<JobConfig>),
    Runtime(&'a Listed),
}

impl<'a> Entry<'a> {
    pub fn key(&self) -> (&'a str, &'a str) {
        match self {
            Entry::File(j) => (j.app_id(), j.job_id()),
            Entry::Runtime(r) => (r.job.app_id(), r.job.job_id()),
        }
    }

    /// The job's configuration as the poller polls it: the file's or the list's own
    /// allocation, shared.
    pub fn to_job(&self) -> Arc<JobConfig> {
        match self {
            Entry::File(j) => Arc::clone(j),
            Entry::Runtime(r) => Arc::clone(&r.job),
        }
    }

    pub fn to_watched(&self) -> Watched {
        match self {
            Entry::File(j) => Watched {
                job: Arc::clone(j),
                source: JobSource::Config,
                added_at: None,
            },
            Entry::Runtime(r) => Watched {
                job: Arc::clone(&r.job),
                source: r.source.clone(),
                added_at: Some(r.added_at),
            },
        }
    }
}

/// Every watched job without copying any: the config file's in its order, then the run-time
/// entries the file does not have, in key order.
pub fn entries<'a>(config: &'a Config, runtime: &'a RuntimeList) -> Vec<Entry<'a>> {
    if runtime.jobs.is_empty() {
        // The file's alone: no set of its keys to build (issue 23: 100,000 keys hashed for
        // nothing on every `recwatch status`).
        return config.jobs.iter().map(Entry::File).collect();
    }
    let in_file: HashSet<(&str, &str)> = config
        .jobs
        .iter()
        .map(|j| (j.app_id(), j.job_id()))
        .collect();
    config
        .jobs
        .iter()
        .map(Entry::File)
        .chain(
            runtime
                .jobs
                .values()
                .filter(|r| !in_file.contains(&(r.job.app_id(), r.job.job_id())))
                .map(Entry::Runtime),
        )
        .collect()
}

/// Every watched job (see [`entries`]), copied.
pub fn merged(config: &Config, runtime: &RuntimeList) -> Vec<Watched> {
    entries(config, runtime)
        .iter()
        .map(Entry::to_watched)
        .collect()
}

/// How many run-time entries are watched beside the config file's jobs (an entry the file
/// also has counts once, as the file's): the run-time group of the budget.
pub fn runtime_count(config: &Config, runtime: &RuntimeList) -> usize {
    let shadowed = config
        .jobs
        .iter()
        .filter(|j| runtime.jobs.contains_key(&j.key))
        .count();
    runtime.jobs.len() - shadowed
}

/// `config` with the run-time entries added to its jobs: what the poller polls.
pub fn with_runtime(config: &Config, runtime: &RuntimeList) -> Config {
    let mut c = config.clone();
    // Straight from the entries: collected from `merged`'s vector, the jobs would have kept
    // its larger allocation (a `Watched` each) for the life of the configuration.
    c.jobs = entries(config, runtime).iter().map(Entry::to_job).collect();
    c
}

/// `config` with the run-time entries added to its jobs, and where each run-time job that made
/// it in came from (the config file's jobs are not in the map): what the status page and
/// `/api/v1/jobs` list.
pub fn with_runtime_sources(
    config: &Config,
    runtime: &RuntimeList,
) -> (Config, HashMap<JobKey, JobSource>) {
    let mut sources = HashMap::new();
    let mut c = config.clone();
    let in_file: HashSet<(&str, &str)> = config
        .jobs
        .iter()
        .map(|j| (j.app_id(), j.job_id()))
        .collect();
    // The list's own keys and configurations, shared rather than copied.
    c.jobs = config
        .jobs
        .iter()
        .cloned()
        .chain(
            runtime
                .jobs
                .iter()
                .filter(|(k, _)| !in_file.contains(&(k.app_id.as_str(), k.job_id.as_str())))
                .map(|(k, r)| {
                    sources.insert(k.clone(), r.source.clone());
                    Arc::clone(&r.job)
                }),
        )
        .collect();
    (c, sources)
}

/// The config file's entry for `key`, as its location (`jobs[3] ("lobby")`), if it has one.
pub fn in_config(config: &Config, key: &JobKey) -> Option<String> {
    config
        .jobs
        .iter()
        .position(|j| j.app_id() == key.app_id && j.job_id() == key.job_id)
        .map(|i| match &config.jobs[i].name {
            Some(n) => format!("jobs[{i}] ({n:?})"),
            None => format!("jobs[{i}]"),
        })
}

/// Why a run-time entry cannot be made; each message names the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct Invalid(pub Vec<String>);

/// A run-time entry from outside input (the API's body, the command line, a callback), checked
/// as the config file's jobs are: ids ([`check_id`]), a printable name, channels that exist.
/// Pure: `now` is the time it is added at.
pub fn new_entry(
    config: &Config,
    key: JobKey,
    name: Option<String>,
    notify: Option<Vec<String>>,
    source: JobSource,
    now: Timestamp,
) -> Result<RuntimeJob, Invalid> {
    let mut problems = Vec::new();
    for (field, id) in [("app_id", &key.app_id), ("job_id", &key.job_id)] {
        if let Err(m) = check_id(id) {
            problems.push(format!("{field} {m}"));
        }
    }
    let name = name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
    if let Some(n) = &name {
        if n.chars().any(char::is_control) {
            problems.push(
                "name has a control character; names go into log lines and alerts, so use printable text"
                    .into(),
            );
        } else if n.chars().count() > MAX_NAME_CHARS {
            problems.push(format!(
                "name is {} characters long, over the {MAX_NAME_CHARS} allowed",
                n.chars().count()
            ));
        }
    }
    if let Some(list) = &notify {
        let channels = config.notify.channel_names();
        let unknown: Vec<&str> = list
            .iter()
            .map(String::as_str)
            .filter(|n| !channels.contains(n))
            .collect();
        if !unknown.is_empty() {
            problems.push(format!(
                "notify names channels that do not exist: {unknown:?}; the channels are {channels:?}"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Invalid(problems));
    }
    Ok(RuntimeJob {
        account: None,
        key,
        name,
        // What outside input says of the kind is the caller's to set: most say nothing.
        kind: crate::domain::JobKind::Individual,
        notify,
        source,
        added_at: now,
    })
}

/// A run-time entry's `kind` from outside input (the API's body, `watch --kind`): absent is an
/// individual job, as in the config file; anything but the two kinds is refused, naming the
/// field. Pure.
pub fn parse_kind(kind: Option<&str>) -> Result<JobKind, String> {
    match kind {
        None => Ok(JobKind::default()),
        Some(k) => k.trim().parse().map_err(|m| format!("kind {m}")),
    }
}

/// A run-time entry's `account` from outside input (the API's body, `watch --account`): absent
/// is `None`, the app's account (as for a `[[jobs]]` entry naming none); a configured account's
/// name is kept; any other name is refused, naming the field, the accounts there are and the
/// fix. Pure.
pub fn parse_account(config: &Config, account: Option<&str>) -> Result<Option<String>, String> {
    let Some(name) = account.map(str::trim) else {
        return Ok(None);
    };
    match config.account_named(name) {
        Some(a) => Ok(Some(a.name.to_string())),
        None => Err(format!(
            "account {}",
            crate::config::unknown_account(name, &config.account_refs())
        )),
    }
}

/// What [`Watchlist::add`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Added {
    /// Added to the run-time list (and published to the poller).
    New(RuntimeJob),
    /// Already on the run-time list: this entry, unchanged.
    AlreadyWatched(RuntimeJob),
    /// In the config file, at this location: nothing stored.
    InConfig(String),
    /// Refused: a bound is reached ([`full`]); nothing stored.
    Full(Full),
}

/// A bound of the run-time list that refuses a new entry; `Display` is the reason the API's
/// 507 and the log give.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Full {
    #[error(
        "the run-time watch list holds {max} jobs, its bound (watchlist.max_jobs): nothing more is added, discovery included; remove jobs nobody needs (DELETE /api/v1/jobs/{{app_id}}/{{job_id}} or `recwatch unwatch`) or raise watchlist.max_jobs"
    )]
    WatchList { max: u64 },
    #[error(
        "app {app_id} has discovered {max} jobs, its bound (max_discovered in its [[apps]] entry): discovery stops for it; remove discovered jobs nobody needs or raise max_discovered"
    )]
    Discovered { app_id: String, max: u64 },
}

/// Pure: whether a bound refuses `job` as a new entry of `list`. `watchlist.max_jobs` bounds
/// every run-time entry; an app's `max_discovered` bounds what discovery (source `callback`)
/// adds for it. Neither refuses what the list already has.
pub fn full(config: &Config, list: &RuntimeList, job: &RuntimeJob) -> Option<Full> {
    full_beside(config, list, &BTreeMap::new(), job)
}

/// Pure: [`full`] for a list that also holds `added`, entries written but not yet published
/// (the callback receiver's commit queue decides a whole group of discoveries in one
/// transaction; each counts against the bounds for the next). `added` has none of `list`'s
/// keys.
pub fn full_beside(
    config: &Config,
    list: &RuntimeList,
    added: &BTreeMap<JobKey, RuntimeJob>,
    job: &RuntimeJob,
) -> Option<Full> {
    if list.jobs.contains_key(&job.key) || added.contains_key(&job.key) {
        return None;
    }
    let len = (list.jobs.len() + added.len()) as u64;
    let max = config.watchlist.max_jobs;
    if len >= max {
        return Some(Full::WatchList { max });
    }
    if job.source != JobSource::Callback {
        return None;
    }
    let app_id = &job.key.app_id;
    let max = config
        .apps
        .iter()
        .find(|a| &a.app_id == app_id)
        .map_or(crate::config::defaults::APP_MAX_DISCOVERED, |a| {
            a.max_discovered
        });
    // Counted only when the whole list could be over the bound: a scan of the app's entries
    // (in key order, so only its own) per discovery would cost more than the discovery.
    if len < max {
        return None;
    }
    let from = JobKey::new(app_id.as_str(), "");
    let listed = list
        .jobs
        .range(from.clone()..)
        .take_while(|(k, _)| &k.app_id == app_id)
        .filter(|(_, r)| r.source == JobSource::Callback)
        .count();
    let in_group = added
        .range(from..)
        .take_while(|(k, _)| &k.app_id == app_id)
        .filter(|(_, r)| r.source == JobSource::Callback)
        .count();
    let discovered = (listed + in_group) as u64;
    (discovered >= max).then(|| Full::Discovered {
        app_id: app_id.clone(),
        max,
    })
}

/// What [`Watchlist::remove`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Removed {
    Removed(RuntimeJob),
    /// Not on the run-time list (nor in the config file).
    NotWatched,
    /// In the config file, at this location: only editing the file stops watching it.
    InConfig(String),
}

/// The message for trying to stop watching a config file job through the API or the CLI.
pub fn edit_the_file(key: &JobKey, location: &str, config: &Config) -> String {
    let file = config
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the configuration file".into());
    format!(
        "{key} is watched because the config file has it ({location} in {file}): edit the file to remove it and reload recwatch (SIGHUP or `systemctl reload recwatch`)"
    )
}

/// The run-time list of one process: a handle to share (cheap to clone).
#[derive(Clone)]
pub struct Watchlist {
    store: Store,
    tx: Arc<watch::Sender<Arc<RuntimeList>>>,
    /// The database's version number the published list was read at (or known to be at);
    /// `None` before the first read. Kept beside the list, not in it: a version that moved
    /// while the entries did not would otherwise copy the whole published list to say so.
    version: Arc<std::sync::Mutex<Option<i64>>>,
    /// The bounds the log has told of (once each, not per refusal) since an entry last got
    /// in under them.
    told_full: Arc<std::sync::Mutex<HashSet<Full>>>,
    /// Held by each change of the list from its check to its publication (`add`, `remove`,
    /// `refresh`, the callback receiver's discoveries): without it, a `refresh` that read the
    /// list just before an `add` wrote could publish its older copy over the added entry until
    /// the next read, and two adds could both pass a bound that has room for one.
    updates: Arc<tokio::sync::Mutex<()>>,
}

impl Watchlist {
    /// Reads the list once; a failure stops the start (the database is not usable).
    pub async fn load(store: Store) -> Result<Watchlist, StoreError> {
        let w = Watchlist {
            store,
            tx: Arc::new(watch::channel(Arc::new(RuntimeList::default())).0),
            version: Arc::default(),
            told_full: Arc::default(),
            updates: Arc::default(),
        };
        w.refresh().await?;
        Ok(w)
    }

    /// Every change to the list, as it is published.
    pub fn subscribe(&self) -> watch::Receiver<Arc<RuntimeList>> {
        self.tx.subscribe()
    }

    /// The list as last read or changed.
    pub fn current(&self) -> Arc<RuntimeList> {
        self.tx.borrow().clone()
    }

    /// The database's version number the list in force was read at (see the field).
    pub fn version(&self) -> Option<i64> {
        *self.version.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_version(&self, version: Option<i64>) {
        *self.version.lock().unwrap_or_else(|p| p.into_inner()) = version;
    }

    /// Whether `key` is watched: in the config file or on the run-time list.
    pub fn is_watched(&self, config: &Config, key: &JobKey) -> bool {
        self.tx.borrow().jobs.contains_key(key) || in_config(config, key).is_some()
    }

    /// Reads the database's version of the list and, when it moved, the list; publishes it if
    /// it differs from what this process knows. Returns whether it published.
    pub async fn refresh(&self) -> Result<bool, StoreError> {
        let _update = self.updates.lock().await;
        let version = self.store.watchlist().version().await?;
        if self.version() == Some(version) {
            return Ok(false);
        }
        let rows = self.store.watchlist().all().await?;
        let old = self.current();
        // An entry the list in force has unchanged is kept as it is (its key and
        // configuration are the poller's too), so a re-read changes only what changed.
        let jobs: BTreeMap<JobKey, Listed> = rows
            .into_iter()
            .map(|j| match old.jobs.get_key_value(&j.key) {
                Some((k, l)) if l.is(&j) => (k.clone(), l.clone()),
                _ => (j.key.clone(), Listed::new(j)),
            })
            .collect();
        drop(old);
        self.set_version(Some(version));
        Ok(self.tx.send_if_modified(|list| {
            let changed = list.jobs != jobs;
            if changed {
                *list = Arc::new(RuntimeList { jobs });
            }
            changed
        }))
    }

    /// Adds `job` to the run-time list unless the config file or the list has it already, and
    /// publishes it at once: the poller polls it now, not after the next [`Self::refresh`]. The
    /// API and the callback receiver's discovery add through here.
    pub async fn add(&self, config: &Config, job: RuntimeJob) -> Result<Added, StoreError> {
        let _update = self.updates.lock().await;
        if let Some(location) = in_config(config, &job.key) {
            return Ok(Added::InConfig(location));
        }
        if let Some(full) = full(config, &self.tx.borrow(), &job) {
            self.tell_full(&full);
            return Ok(Added::Full(full));
        }
        self.under_bounds(&job);
        if !self.store.watchlist().add(&job).await? {
            // Someone else's entry (maybe another process's, not read yet): theirs stays.
            return Ok(match self.store.watchlist().get(&job.key).await? {
                Some(existing) => Added::AlreadyWatched(existing),
                // Removed again meanwhile: as good as already handled.
                None => Added::AlreadyWatched(job),
            });
        }
        info!(app_id = %job.key.app_id, job_id = %job.key.job_id, name = job.name.as_deref().unwrap_or(""), source = %job.source, "watching a job added at run time");
        self.tx.send_modify(|list| {
            Arc::make_mut(list)
                .jobs
                .insert(job.key.clone(), Listed::new(job.clone()));
        });
        Ok(Added::New(job))
    }

    /// Publishes entries written in one commit by someone else in this process (the callback
    /// receiver's commit queue, for discovery): one change for the whole group, so the poller
    /// takes a burst of discoveries as one change of its list rather than one per job.
    /// `versions` is the list's version read in that commit before and after its writes: when
    /// this process knew the first, nobody else changed the list meanwhile and the second is
    /// now known too, so [`Self::follow`] does not read the whole list again for our own writes.
    /// Call it holding [`Self::updates`], taken before the commit's transaction began.
    pub fn publish_added(&self, jobs: Vec<RuntimeJob>, versions: Option<(i64, i64)>) {
        if jobs.is_empty() {
            return;
        }
        for job in &jobs {
            info!(app_id = %job.key.app_id, job_id = %job.key.job_id, name = job.name.as_deref().unwrap_or(""), source = %job.source, "watching a job added at run time");
        }
        if let Some((before, after)) = versions
            && self.version() == Some(before)
        {
            self.set_version(Some(after));
        }
        self.tx.send_modify(|list| {
            let l = Arc::make_mut(list);
            for job in jobs {
                l.jobs.insert(job.key.clone(), Listed::new(job));
            }
        });
    }

    /// Holds every other change of the list off until dropped (see the field's comment): the
    /// callback receiver takes it before a transaction that discovers, and publishes before
    /// dropping it.
    pub async fn updates(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.updates.clone().lock_owned().await
    }

    /// A bound refused an entry: the gauge says so, and the log once (until an entry gets in
    /// under it again), however many refusals follow.
    pub fn tell_full(&self, full: &Full) {
        match full {
            Full::WatchList { .. } => metrics::gauge!("recwatch_watchlist_full").set(1.0),
            Full::Discovered { app_id, .. } => {
                metrics::gauge!("recwatch_discovery_full", "app_id" => app_id.clone()).set(1.0)
            }
        }
        let first = self
            .told_full
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(full.clone());
        if first {
            warn!("refusing new run-time jobs: {full}");
        }
    }

    /// An entry got in under the bounds that apply to it: they are no longer reached.
    pub fn under_bounds(&self, job: &RuntimeJob) {
        let mut told = self.told_full.lock().unwrap_or_else(|p| p.into_inner());
        if told.is_empty() {
            return;
        }
        told.retain(|f| match f {
            Full::WatchList { .. } => false,
            Full::Discovered { app_id, .. } => {
                !(job.source == JobSource::Callback && app_id == &job.key.app_id)
            }
        });
        metrics::gauge!("recwatch_watchlist_full").set(0.0);
        if job.source == JobSource::Callback {
            metrics::gauge!("recwatch_discovery_full", "app_id" => job.key.app_id.clone()).set(0.0);
        }
    }

    /// Removes `key` from the run-time list (refused for a job of the config file) and
    /// publishes the change at once.
    pub async fn remove(&self, config: &Config, key: &JobKey) -> Result<Removed, StoreError> {
        let _update = self.updates.lock().await;
        if let Some(location) = in_config(config, key) {
            return Ok(Removed::InConfig(location));
        }
        let Some(existing) = self.store.watchlist().get(key).await? else {
            return Ok(Removed::NotWatched);
        };
        if !self.store.watchlist().remove(key).await? {
            return Ok(Removed::NotWatched);
        }
        info!(app_id = %key.app_id, job_id = %key.job_id, "stopped watching a job added at run time");
        self.tx
            .send_if_modified(|list| Arc::make_mut(list).jobs.remove(key).is_some());
        Ok(Removed::Removed(existing))
    }

    /// Re-reads the list every [`REFRESH_EVERY`] until `shutdown`, so changes made by other
    /// processes reach this one. A failed read is logged (once until reads work again) and
    /// tried again on the next tick; the list in force stays.
    pub async fn follow(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
            match self.refresh().await {
                Ok(_) if failing => {
                    failing = false;
                    info!("the run-time watch list can be read again");
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    failing = true;
                    warn!(
                        "cannot read the run-time watch list: {e}; the list in force stays, and reading is tried again every second"
                    );
                }
                Err(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Auth;
    use crate::secret::Secret;

    /// Issue 23, item 1: an entry's time is held without an allocation of its own, as a
    /// number (`Timestamp`, read from the database's text at the store's edge, issue 24),
    /// and written back as the same text.
    #[test]
    fn when_an_entry_was_added_is_a_number() {
        assert_eq!(std::mem::size_of::<Timestamp>(), 8);
        // An entry: its `Arc<JobConfig>`, its source and this (48 bytes with `AddedAt`).
        assert!(std::mem::size_of::<Listed>() <= 40);
        let text = "2026-12-07T10:11:12.345Z";
        let at = Timestamp::parse(text).unwrap();
        assert_eq!(at.to_string(), text);
    }

    fn config() -> Config {
        let mut c = Config::defaults(Auth::Token {
            token: Secret::new("t"),
        });
        c.jobs = vec![Arc::new(JobConfig {
            account: None,
            kind: crate::domain::JobKind::Individual,
            key: crate::domain::JobKey::new("app", "in-file"),
            name: Some("from the file".into()),
            interval: None,
            notify: None,
        })];
        c
    }

    #[test]
    fn bounds_of_the_run_time_list_table() {
        let mut c = config();
        c.watchlist.max_jobs = 3;
        c.apps = vec![crate::config::AppConfig {
            account: None,
            app_id: "app".into(),
            auth_key: Secret::new("k"),
            name: None,
            notify: None,
            forward_to: None,
            discover: true,
            max_discovered: 2,
        }];
        let list = |entries: &[(&str, JobSource)]| {
            RuntimeList::of(entries.iter().map(|(j, s)| rt(j, s.clone())))
        };
        let max_jobs = Some(Full::WatchList { max: 3 });
        let max_discovered = Some(Full::Discovered {
            app_id: "app".into(),
            max: 2,
        });
        let cb = JobSource::Callback;
        let cases = [
            ("empty", list(&[]), rt("new", cb.clone()), None),
            (
                "under both",
                list(&[("a", cb.clone())]),
                rt("new", cb.clone()),
                None,
            ),
            (
                "the app's discoveries at their bound",
                list(&[("a", cb.clone()), ("b", cb.clone())]),
                rt("new", cb.clone()),
                max_discovered.clone(),
            ),
            (
                "the API is not bound by discoveries",
                list(&[("a", cb.clone()), ("b", cb.clone())]),
                rt("new", JobSource::Api),
                None,
            ),
            (
                "entries of other sources do not count as discovered",
                list(&[("a", JobSource::Api), ("b", cb.clone())]),
                rt("new", cb.clone()),
                None,
            ),
            (
                "the whole list at its bound",
                list(&[
                    ("a", JobSource::Api),
                    ("b", JobSource::Cli),
                    ("c", cb.clone()),
                ]),
                rt("new", JobSource::Api),
                max_jobs.clone(),
            ),
            (
                "the whole list's bound applies to discovery too",
                list(&[
                    ("a", JobSource::Api),
                    ("b", JobSource::Cli),
                    ("c", JobSource::Api),
                ]),
                rt("new", cb.clone()),
                max_jobs,
            ),
            (
                "what the list has is never refused",
                list(&[
                    ("a", JobSource::Api),
                    ("b", JobSource::Cli),
                    ("c", cb.clone()),
                ]),
                rt("c", cb.clone()),
                None,
            ),
        ];
        for (name, list, job, want) in cases {
            assert_eq!(full(&c, &list, &job), want, "{name}");
        }
    }

    fn rt(job: &str, source: JobSource) -> RuntimeJob {
        RuntimeJob {
            account: None,
            kind: crate::domain::JobKind::Individual,
            key: JobKey::new("app", job),
            name: Some(format!("rt {job}")),
            notify: None,
            source,
            added_at: "2026-01-01T00:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn the_config_file_wins_over_a_run_time_entry_with_the_same_key() {
        let mut list = RuntimeList::default();
        for (job, source) in [
            ("z", JobSource::Cli),
            ("in-file", JobSource::Api),
            ("a", JobSource::Callback),
        ] {
            list.jobs
                .insert(JobKey::new("app", job), Listed::new(rt(job, source)));
        }
        let got: Vec<(String, String, Option<String>)> = merged(&config(), &list)
            .into_iter()
            .map(|w| {
                (
                    w.job.job_id().to_owned(),
                    w.source.to_string(),
                    w.job.name.clone(),
                )
            })
            .collect();
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), Some(c.to_string()));
        assert_eq!(
            got,
            [
                s("in-file", "config", "from the file"),
                s("a", "callback", "rt a"),
                s("z", "cli", "rt z"),
            ]
        );
        assert_eq!(with_runtime(&config(), &list).jobs.len(), 3);
    }

    #[test]
    fn kinds_from_outside_input_table() {
        let cases = [
            ("absent is individual", None, Ok(JobKind::Individual)),
            ("individual", Some("individual"), Ok(JobKind::Individual)),
            ("mix", Some("mix"), Ok(JobKind::Mix)),
            ("padded", Some(" mix "), Ok(JobKind::Mix)),
            (
                "misspelt",
                Some("mixed"),
                Err("kind \"mixed\" is not a job kind"),
            ),
            (
                "another case",
                Some("Mix"),
                Err("use \"individual\" or \"mix\""),
            ),
            ("empty", Some(""), Err("is not a job kind")),
        ];
        for (name, kind, want) in cases {
            match (parse_kind(kind), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{name}"),
                (Err(e), Err(says)) => assert!(e.contains(says), "{name}: {e}"),
                (got, want) => panic!("{name}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn accounts_from_outside_input_table() {
        let text = r#"
[[accounts]]
name = "cn-north-4"
endpoint = "https://rtc-api.myhuaweicloud.com"
project_id = "p1"
[accounts.auth]
token = "t"
[[accounts]]
name = "ap-southeast-1"
endpoint = "https://rtc-api.ap-southeast-1.myhuaweicloud.com"
project_id = "p2"
[accounts.auth]
token = "t"
"#;
        let several = crate::config::parse_str(text, Vec::<(String, String)>::new(), None).unwrap();
        let one = config();
        #[allow(clippy::type_complexity)]
        let cases: [(&str, &Config, Option<&str>, Result<Option<&str>, &str>); 6] = [
            ("absent is the app's", &several, None, Ok(None)),
            (
                "a configured one",
                &several,
                Some("ap-southeast-1"),
                Ok(Some("ap-southeast-1")),
            ),
            (
                "padded",
                &several,
                Some(" cn-north-4 "),
                Ok(Some("cn-north-4")),
            ),
            (
                "unknown, naming the ones there are",
                &several,
                Some("eu-west-0"),
                Err(
                    r#"account "eu-west-0" is not a configured account; use one of "cn-north-4", "ap-southeast-1""#,
                ),
            ),
            (
                "[api] is default",
                &one,
                Some("default"),
                Ok(Some("default")),
            ),
            (
                "[api] has no other",
                &one,
                Some("cn-north-4"),
                Err(r#"use one of "default""#),
            ),
        ];
        for (name, c, account, want) in cases {
            match (parse_account(c, account), want) {
                (Ok(got), Ok(want)) => assert_eq!(got.as_deref(), want, "{name}"),
                (Err(e), Err(says)) => assert!(e.contains(says), "{name}: {e}"),
                (got, want) => panic!("{name}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn new_entries_are_checked_table() {
        let mut c = config();
        c.notify.webhooks.push(crate::config::WebhookConfig {
            name: "ops".into(),
            url: "http://127.0.0.1:1/".parse().unwrap(),
            secret: None,
            headers: Vec::new(),
            timeout: Duration::from_secs(1),
        });
        struct Case {
            name: &'static str,
            app: &'static str,
            job: &'static str,
            label: Option<&'static str>,
            notify: Option<&'static [&'static str]>,
            problem: Option<&'static str>,
        }
        let ok = |name, app, job| Case {
            name,
            app,
            job,
            label: None,
            notify: None,
            problem: None,
        };
        let bad = |name, app, job, problem| Case {
            problem: Some(problem),
            ..ok(name, app, job)
        };
        let cases = [
            ok("plain ids", "app", "job-1"),
            Case {
                label: Some("lobby"),
                notify: Some(&["ops"]),
                ..ok("a name and a known channel", "app", "j")
            },
            Case {
                notify: Some(&[]),
                ..ok("no channels at all", "app", "j")
            },
            bad("dot job", "app", ".", "job_id \".\" is not an id"),
            bad("dot dot app", "..", "j", "app_id \"..\" is not an id"),
            bad("a slash", "app", "a/b", "job_id \"a/b\" has a '/'"),
            bad("empty", "", "j", "app_id is empty"),
            bad("control character", "app", "a\u{7}", "control character"),
            Case {
                label: Some("bad\nname"),
                ..bad("a name with a newline", "app", "j", "name has a control")
            },
            Case {
                notify: Some(&["ops", "nope", "gone"]),
                ..bad(
                    "unknown channels are named",
                    "app",
                    "j",
                    "do not exist: [\"nope\", \"gone\"]",
                )
            },
        ];
        for case in cases {
            let got = new_entry(
                &c,
                JobKey::new(case.app, case.job),
                case.label.map(String::from),
                case.notify
                    .map(|n| n.iter().map(|s| s.to_string()).collect()),
                JobSource::Api,
                Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
            );
            match (got, case.problem) {
                (Ok(e), None) => {
                    assert_eq!(e.key.job_id, case.job, "{}", case.name);
                    assert_eq!(e.name.as_deref(), case.label, "{}", case.name);
                }
                (Err(e), Some(p)) => assert!(e.to_string().contains(p), "{}: {e}", case.name),
                (got, want) => panic!("{}: got {got:?}, want {want:?}", case.name),
            }
        }
    }

    /// Issue 23, item 1: a re-read of the list keeps the entries that did not change as they
    /// are (their keys and configurations are the poller's too), and a version that moved with
    /// no change of the entries publishes nothing: recording it copied the whole published
    /// list while the poller held it.
    #[tokio::test]
    async fn a_re_read_keeps_unchanged_entries_and_copies_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recwatch.db");
        let store = Store::open(&path).await.unwrap();
        let w = Watchlist::load(store).await.unwrap();
        let c = config();
        w.add(&c, rt("a", JobSource::Api)).await.unwrap();
        // Held as the poller holds the list in force.
        let held = w.current();
        assert!(
            !w.refresh().await.unwrap(),
            "our own add moved the version: the same entries"
        );
        assert!(
            Arc::ptr_eq(&held, &w.current()),
            "the list in force, not a copy of it for a new version number"
        );

        let other = Store::open(&path).await.unwrap();
        other
            .watchlist()
            .add(&rt("b", JobSource::Cli))
            .await
            .unwrap();
        assert!(w.refresh().await.unwrap());
        let now = w.current();
        assert_eq!(now.jobs.len(), 2);
        let a = JobKey::new("app", "a");
        assert!(
            Arc::ptr_eq(&held.jobs[&a].job, &now.jobs[&a].job),
            "the unchanged entry's configuration is the one the poller has"
        );
        let (held_key, _) = held.jobs.get_key_value(&a).unwrap();
        let (now_key, _) = now.jobs.get_key_value(&a).unwrap();
        assert!(JobKey::same(held_key, now_key), "and so is its key");
    }

    #[tokio::test]
    async fn add_publishes_at_once_and_refresh_sees_other_processes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recwatch.db");
        let store = Store::open(&path).await.unwrap();
        let w = Watchlist::load(store.clone()).await.unwrap();
        let mut rx = w.subscribe();
        rx.mark_unchanged();
        let c = config();

        let added = w.add(&c, rt("a", JobSource::Api)).await.unwrap();
        assert!(matches!(added, Added::New(_)), "{added:?}");
        assert!(rx.has_changed().unwrap(), "published without a refresh");
        assert!(
            rx.borrow_and_update()
                .jobs
                .contains_key(&JobKey::new("app", "a"))
        );
        assert!(w.is_watched(&c, &JobKey::new("app", "a")));
        assert!(w.is_watched(&c, &JobKey::new("app", "in-file")));
        assert!(!w.is_watched(&c, &JobKey::new("app", "other")));

        let again = w.add(&c, rt("a", JobSource::Callback)).await.unwrap();
        assert!(
            matches!(&again, Added::AlreadyWatched(e) if e.source == JobSource::Api),
            "{again:?}"
        );
        let file = w.add(&c, rt("in-file", JobSource::Api)).await.unwrap();
        assert_eq!(file, Added::InConfig("jobs[0] (\"from the file\")".into()));
        assert!(
            !w.refresh().await.unwrap(),
            "the database holds what was published: nothing new"
        );

        // Another process (its own store on the same file) adds and removes.
        let other = Store::open(&path).await.unwrap();
        other
            .watchlist()
            .add(&rt("b", JobSource::Cli))
            .await
            .unwrap();
        other
            .watchlist()
            .remove(&JobKey::new("app", "a"))
            .await
            .unwrap();
        assert!(w.refresh().await.unwrap());
        let keys: Vec<String> = w.current().jobs.keys().map(|k| k.job_id.clone()).collect();
        assert_eq!(keys, ["b"]);

        assert_eq!(
            w.remove(&c, &JobKey::new("app", "in-file")).await.unwrap(),
            Removed::InConfig("jobs[0] (\"from the file\")".into())
        );
        assert_eq!(
            w.remove(&c, &JobKey::new("app", "nope")).await.unwrap(),
            Removed::NotWatched
        );
        assert!(matches!(
            w.remove(&c, &JobKey::new("app", "b")).await.unwrap(),
            Removed::Removed(_)
        ));
        assert!(w.current().jobs.is_empty());
    }
}
