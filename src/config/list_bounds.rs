//! `[watchlist]`: bounds on the run-time watch list (the API's, the CLI's and discovery's
//! entries), so a flood of ids cannot grow it without end. Past the bound discovery stops and
//! `POST /api/v1/jobs` answers 507 (see [`crate::runtime_list::Watchlist::add`]).

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

#[cfg(test)]
mod tests {
    use crate::config::{defaults, parse_str};

    const AUTH: &str = "[api.auth]\ntoken = \"t\"\n";
    const APP: &str =
        "[[apps]]\napp_id = \"a\"\nauth_key = \"the-app-callback-key-0123456789abcdef\"\n";

    #[test]
    fn bounds_of_the_run_time_list_are_read_table() {
        /// max_jobs and the app's max_discovered, or the key the error names.
        type Want = Result<(u64, u64), &'static str>;
        let cases: [(&str, String, Want); 6] = [
            (
                "defaults",
                APP.to_string(),
                Ok((defaults::WATCHLIST_MAX_JOBS, defaults::APP_MAX_DISCOVERED)),
            ),
            (
                "both set",
                format!("[watchlist]\nmax_jobs = 5000\n\n{APP}max_discovered = 300\n"),
                Ok((5000, 300)),
            ),
            (
                "max_jobs 0 refuses every job",
                format!("[watchlist]\nmax_jobs = 0\n\n{APP}"),
                Err("watchlist.max_jobs"),
            ),
            (
                "max_discovered 0",
                format!("{APP}max_discovered = 0\n"),
                Err("max_discovered"),
            ),
            (
                "not a number",
                format!("[watchlist]\nmax_jobs = \"lots\"\n\n{APP}"),
                Err("watchlist.max_jobs"),
            ),
            (
                "a misspelt key",
                format!("[watchlist]\nmax_job = 5\n\n{APP}"),
                Err("max_job"),
            ),
        ];
        for (name, extra, want) in cases {
            let got = parse_str(&format!("{AUTH}{extra}"), [], None);
            match (got, want) {
                (Ok(c), Ok((jobs, discovered))) => {
                    assert_eq!(c.watchlist.max_jobs, jobs, "{name}");
                    assert_eq!(c.apps[0].max_discovered, discovered, "{name}");
                }
                (Err(e), Err(key)) => {
                    let text = e.to_string();
                    assert!(text.contains(key), "{name}: {text}");
                }
                (got, want) => panic!("{name}: got {:?}, want {want:?}", got.map(|_| ())),
            }
        }
    }
}
