//! The status page's view-model: what `/`, `/jobs/{app_id}/{job_id}` and `/alerts` show, and
//! what `/api/v1/jobs`, `/api/v1/jobs/{app_id}/{job_id}` and `/api/v1/alerts` return, built in
//! one place from [`crate::store`]. The HTML handlers render these values with templates and
//! the JSON handlers serialize the same values, so the page and the API cannot disagree.
//!
//! Everything here reads; nothing writes. The rules of how a phase looks (`label`) and how a
//! timeline is drawn (`timeline`) are pure functions with table tests; the builders around
//! them (`jobs`, `job`, `alerts`) only gather rows.

pub mod alerts;
pub mod counts;
pub mod job;
pub mod jobs;
pub mod label;
pub mod timeline;

pub use alerts::{AlertsPage, AlertsQuery};
pub use job::{JobPage, JobPageQuery};
pub use jobs::{AccountHealth, JobItem, JobsPage, JobsQuery, RawJobsQuery, Summary};
pub use label::Tone;
pub use timeline::{Segment, Timeline};

use crate::config::Config;
use crate::config::JobConfig;
use crate::domain::{JobKey, JobSource};
use crate::store::{Store, StoreError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;

/// What a page is built from: the database, the configuration in force, what the running
/// daemon knows in memory, and the time (an argument, so tests fix it).
pub struct Sources<'a> {
    pub store: &'a Store,
    /// An `Arc`, so a list's scan can move it off the async workers.
    pub config: &'a Arc<Config>,
    /// Where each run-time job of `config` came from ([`crate::runtime_list`]); the config
    /// file's jobs are not in it.
    pub sources: &'a HashMap<JobKey, JobSource>,
    /// The RTC API is failing (the `api_unhealthy` condition is open) for some account.
    pub api_unhealthy: bool,
    /// The accounts whose API is failing, by name.
    pub unhealthy_accounts: Vec<String>,
    /// Every request is held (throttled, or credentials refused).
    pub budget_paused: bool,
    pub now: DateTime<Utc>,
}

impl Sources<'_> {
    /// Where a watched job came from: its run-time entry's source, else the config file.
    pub fn source_of(&self, j: &JobConfig) -> JobSource {
        self.sources
            .get(&JobKey::new(j.app_id(), j.job_id()))
            .cloned()
            .unwrap_or(JobSource::Config)
    }
}

/// Why a page cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// A query parameter is wrong: the message names it and the fix.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("database unreachable: {0}")]
    Store(#[from] StoreError),
    /// The scan of the watch list did not finish (it panicked).
    #[error("the page could not be built: {0}")]
    Internal(String),
}

/// A cursor: the position after which the next page starts, opaque to clients.
pub(crate) fn encode_cursor<T: Serialize>(position: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(position).expect("cursors serialize"))
}

pub(crate) fn decode_cursor<T: DeserializeOwned>(s: &str) -> Option<T> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).ok()?).ok()
}

/// A cursor parameter, or a 400 naming it.
fn cursor_param<T: DeserializeOwned>(name: &str, s: Option<&str>) -> Result<Option<T>, ViewError> {
    match s.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(c) => decode_cursor(c).map(Some).ok_or_else(|| {
            ViewError::BadRequest(format!(
                "{name}: {c:?} is not a cursor from a previous page's next link; start without ?{name}="
            ))
        }),
    }
}

/// A `limit` parameter: absent is `default`, otherwise 1..=`max`.
fn parse_limit(s: Option<&str>, default: usize, max: usize) -> Result<usize, ViewError> {
    match s.filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ViewError::BadRequest(format!(
                    "limit: {s:?} is not a whole number from 1 to {max}; e.g. ?limit={default}"
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_checked() {
        struct Case {
            name: &'static str,
            input: Option<&'static str>,
            ok: Option<usize>,
        }
        let cases = [
            Case {
                name: "absent: the default",
                input: None,
                ok: Some(100),
            },
            Case {
                name: "empty (a form's blank field): the default",
                input: Some(""),
                ok: Some(100),
            },
            Case {
                name: "one",
                input: Some("1"),
                ok: Some(1),
            },
            Case {
                name: "the most",
                input: Some("1000"),
                ok: Some(1000),
            },
            Case {
                name: "zero",
                input: Some("0"),
                ok: None,
            },
            Case {
                name: "above the most",
                input: Some("1001"),
                ok: None,
            },
            Case {
                name: "negative",
                input: Some("-5"),
                ok: None,
            },
            Case {
                name: "not a number",
                input: Some("ten"),
                ok: None,
            },
        ];
        for c in cases {
            match (parse_limit(c.input, 100, 1000), c.ok) {
                (Ok(n), Some(want)) => assert_eq!(n, want, "{}", c.name),
                (Err(e), None) => {
                    let e = e.to_string();
                    assert!(
                        e.starts_with("limit:") && e.contains("1 to 1000"),
                        "{}: {e}",
                        c.name
                    )
                }
                (got, want) => panic!("{}: got {got:?}, want {want:?}", c.name),
            }
        }
    }

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        let key = ("app/with \"odd\" chars".to_string(), "job,1".to_string());
        let c = encode_cursor(&key);
        assert!(
            c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'),
            "URL-safe: {c}"
        );
        assert_eq!(decode_cursor::<(String, String)>(&c), Some(key));
        for junk in ["", "!!", "bm90IGpzb24", "WzFd"] {
            assert_eq!(decode_cursor::<(String, String)>(junk), None, "{junk:?}");
        }
        let e = cursor_param::<(String, String)>("after", Some("zz")).unwrap_err();
        assert!(e.to_string().starts_with("after:"), "{e}");
    }

    /// The alerts' and a job's transitions' cursors hold a time and an id, decoded once here:
    /// a link written when they were pairs of texts decodes and is written back the same,
    /// and a cursor whose time is not one is refused (a 400), never compared as text.
    #[test]
    fn page_cursors_are_typed_and_old_links_still_decode() {
        use crate::domain::Timestamp;
        let at = "2026-11-28T10:00:04.123Z";
        let old = encode_cursor(&(at.to_string(), "rw_0123".to_string()));
        let c: alerts::AlertsCursor = decode_cursor(&old).expect("an old alerts link decodes");
        assert_eq!(c.created_at, Timestamp::parse(at).unwrap());
        assert_eq!(c.id.as_str(), "rw_0123");
        assert_eq!(encode_cursor(&c), old, "written as before");
        let old = encode_cursor(&(at.to_string(), 42_i64));
        let t: job::TransitionsCursor = decode_cursor(&old).expect("an old job link decodes");
        assert_eq!((t.observed_at, t.id), (Timestamp::parse(at).unwrap(), 42));
        assert_eq!(encode_cursor(&t), old, "written as before");

        let no_time = encode_cursor(&("yesterday", "rw_1"));
        let e = cursor_param::<alerts::AlertsCursor>("before", Some(&no_time)).unwrap_err();
        assert!(matches!(e, ViewError::BadRequest(_)), "{e}");
        let no_time = encode_cursor(&("yesterday", 1));
        let e = cursor_param::<job::TransitionsCursor>("before", Some(&no_time)).unwrap_err();
        assert!(matches!(e, ViewError::BadRequest(_)), "{e}");
    }
}
