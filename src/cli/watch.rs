//! `recwatch watch` and `recwatch unwatch`: the run-time watch list changed from the command
//! line. They write the database directly (without owning it: a running daemon keeps its
//! lock, and picks the change up within about a second), so they work whether or not a daemon
//! runs; with none, the next `recwatch run` starts from the list as they left it.

use super::emit;
use crate::config::Config;
use crate::domain::{JobKey, JobSource};
use crate::exit::StartError;
use crate::runtime_list::{
    Added, Removed, edit_the_file, in_config, new_entry, parse_account, parse_kind,
};
use crate::store::{Store, StoreError};

/// A store error as the command reports it: a database busy beyond the busy timeout is 75
/// (try again), anything else 1.
fn store_failed(e: StoreError, what: &str) -> anyhow::Error {
    if e.is_locked() {
        StartError::busy(format!(
            "{what}: the database is busy with another process's write ({e}); nothing was changed, try again"
        ))
        .into()
    } else {
        anyhow::Error::new(e).context(format!("{what}: nothing was changed"))
    }
}

/// What `recwatch watch` says of the job, beside its ids: its options as given.
pub(super) struct Entry {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub notify: Vec<String>,
    pub account: Option<String>,
}

pub(super) async fn watch(config: &Config, key: JobKey, given: Entry) -> anyhow::Result<()> {
    let now = crate::domain::Timestamp::now();
    // No --notify: every channel, as for a [[jobs]] entry without `notify`.
    let notify = (!given.notify.is_empty()).then_some(given.notify);
    let kind = parse_kind(given.kind.as_deref())
        .map_err(|e| StartError::usage(format!("cannot watch {key}: --{e}")))?;
    // An account the file does not name is the command line's mistake (64), as `--notify`
    // naming no channel is.
    let account = parse_account(config, given.account.as_deref())
        .map_err(|e| StartError::usage(format!("cannot watch {key}: --{e}")))?;
    let entry = new_entry(config, key.clone(), given.name, notify, JobSource::Cli, now)
        .map_err(|e| StartError::usage(format!("cannot watch {key}: {e}")))?;
    let entry = crate::domain::RuntimeJob {
        kind,
        account,
        ..entry
    };
    if let Some(location) = in_config(config, &key) {
        out!("{key} is already watched: the config file has it ({location}); nothing changed")?;
        return Ok(());
    }
    let store = Store::open_config(&config.storage).await?;
    let list = crate::runtime_list::Watchlist::load(store.clone())
        .await
        .map_err(|e| store_failed(e, "cannot read the watch list"))?;
    let added = list.add(config, entry).await;
    store.close().await;
    match added.map_err(|e| store_failed(e, "cannot add the job"))? {
        Added::New(e) => {
            let name = e
                .name
                .as_deref()
                .map(|n| format!(" as {n:?}"))
                .unwrap_or_default();
            let notify = match &e.notify {
                Some(n) => format!("channels {n:?}"),
                None => "every channel".into(),
            };
            let kind = match e.kind {
                crate::domain::JobKind::Mix => ", a mix-stream job,",
                crate::domain::JobKind::Individual => "",
            };
            let account = polled_by(config, &e);
            out!(
                "watching {key}{name}{kind}{account} (alerts to {notify}); a running recwatch polls it within 2 s, otherwise the next `recwatch run` does"
            )?;
        }
        Added::AlreadyWatched(e) => {
            out!(
                "{key} is already watched (source {}, added {}{}); nothing changed",
                e.source,
                e.added_at,
                polled_by(config, &e)
            )?;
        }
        Added::InConfig(location) => {
            out!("{key} is already watched: the config file has it ({location}); nothing changed")?;
        }
        Added::Full(full) => {
            // 73, like a database that cannot take the write: the list is full, not the
            // arguments wrong.
            return Err(StartError::cantcreat(format!("cannot watch {key}: {full}")).into());
        }
    }
    Ok(())
}

/// `, polled by account NAME` when several accounts are configured (with one, every job is
/// its): the account the poller gives the entry, its own or its app's.
fn polled_by(config: &Config, e: &crate::domain::RuntimeJob) -> String {
    if !config.several_accounts() {
        return String::new();
    }
    let job = crate::runtime_list::Listed::new(e.clone()).job;
    format!(", polled by account {}", config.account_of(&job).name)
}

pub(super) async fn unwatch(config: &Config, app_id: String, job_id: String) -> anyhow::Result<()> {
    let key = JobKey::new(app_id, job_id);
    for (field, id) in [("app_id", &key.app_id), ("job_id", &key.job_id)] {
        crate::domain::check_id(id)
            .map_err(|m| StartError::usage(format!("cannot unwatch: {field} {m}")))?;
    }
    if let Some(location) = in_config(config, &key) {
        return Err(StartError::usage(edit_the_file(&key, &location, config)).into());
    }
    if config.storage.url.is_none() && !config.storage.path.exists() {
        anyhow::bail!(
            "{key} is not watched (there is no database at {} yet)",
            config.storage.path.display()
        );
    }
    let store = Store::open_config(&config.storage).await?;
    let list = crate::runtime_list::Watchlist::load(store.clone())
        .await
        .map_err(|e| store_failed(e, "cannot read the watch list"))?;
    let removed = list.remove(config, &key).await;
    store.close().await;
    match removed.map_err(|e| store_failed(e, "cannot remove the job"))? {
        Removed::Removed(e) => {
            out!(
                "stopped watching {key} (source {}, added {}); a running recwatch stops polling it within 2 s",
                e.source,
                e.added_at
            )?;
            Ok(())
        }
        Removed::NotWatched => anyhow::bail!("{key} is not watched; nothing changed"),
        Removed::InConfig(location) => {
            Err(StartError::usage(edit_the_file(&key, &location, config)).into())
        }
    }
}
