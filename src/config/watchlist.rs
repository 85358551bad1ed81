//! `[watchlist]`: bounds on the run-time watch list (the API's, the CLI's and discovery's
//! entries), so a flood of ids cannot grow it without end. Past the bound discovery stops and
//! `POST /api/v1/jobs` answers 507 (see [`crate::watchlist::Watchlist::add`]).

use super::ConfigError;
use super::defaults;
use super::raw::Table;

#[derive(Clone, Debug, PartialEq)]
pub struct WatchlistConfig {
    /// `max_jobs`: the most entries the run-time list holds.
    pub max_jobs: u64,
}

impl Default for WatchlistConfig {
    fn default() -> WatchlistConfig {
        WatchlistConfig {
            max_jobs: defaults::WATCHLIST_MAX_JOBS,
        }
    }
}

pub(super) fn read_watchlist(mut t: Table) -> Result<WatchlistConfig, ConfigError> {
    let max_jobs = read_cap(&mut t, "max_jobs", defaults::WATCHLIST_MAX_JOBS)?;
    t.finish()?;
    Ok(WatchlistConfig { max_jobs })
}

/// A cap on a count of jobs: at least 1 (0 would refuse every entry; turn the source off
/// instead), `default` when unset.
pub(super) fn read_cap(t: &mut Table, key: &str, default: u64) -> Result<u64, ConfigError> {
    match t.integer(key)? {
        None => Ok(default),
        Some(0) => Err(t.err(
            key,
            format!("0 would refuse every job; use at least 1 (the default is {default})"),
        )),
        Some(n) => Ok(n),
    }
}
