//! `/api/v1/jobs`: the watched jobs with what the database knows of them, a page at a time in
//! (app_id, job_id) order, with an opaque cursor. Pages are built a few at a time, so many
//! clients cost time, not memory.

use super::AppState;
use crate::config::JobConfig;
use crate::status::StatusRow;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use std::collections::BinaryHeap;
use std::sync::Arc;

/// `/api/v1/jobs` page size: the default, and the most one request may ask for.
pub const PAGE_DEFAULT: usize = 100;
pub const PAGE_MAX: usize = 1000;

#[derive(Deserialize)]
pub(super) struct PageQuery {
    limit: Option<String>,
    after: Option<String>,
}

/// One page of `/api/v1/jobs`.
#[derive(Serialize)]
struct JobsPage {
    items: Vec<StatusRow>,
    /// Pass as `?after=` for the next page; null on the last one.
    next_after: Option<String>,
}

/// A job's place in the (app_id, job_id) order the pages follow.
type JobKey = (String, String);

fn encode_cursor(job: &JobConfig) -> String {
    let json = serde_json::to_vec(&(&job.app_id, &job.job_id)).expect("strings serialize");
    URL_SAFE_NO_PAD.encode(json)
}

fn decode_cursor(s: &str) -> Option<JobKey> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).ok()?).ok()
}

fn parse_limit(s: Option<&str>) -> Result<usize, String> {
    match s {
        None => Ok(PAGE_DEFAULT),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=PAGE_MAX).contains(n))
            .ok_or_else(|| {
                format!(
                    "limit: {s:?} is not a whole number from 1 to {PAGE_MAX}; e.g. ?limit={PAGE_DEFAULT}"
                )
            }),
    }
}

/// The `limit` watched jobs that follow `after` in (app_id, job_id) order, and whether more
/// follow them. One pass over the watch list keeping the `limit + 1` smallest keys in a heap:
/// no copy or sort of the whole list per request, so memory follows the page size.
fn page<'a>(
    jobs: &'a [JobConfig],
    after: Option<&JobKey>,
    limit: usize,
) -> (Vec<&'a JobConfig>, bool) {
    let key = |j: &'a JobConfig| (j.app_id.as_str(), j.job_id.as_str());
    let after = after.map(|(a, j)| (a.as_str(), j.as_str()));
    let mut heap: BinaryHeap<((&str, &str), usize)> = BinaryHeap::with_capacity(limit + 2);
    for (i, j) in jobs.iter().enumerate() {
        let k = key(j);
        if after.is_some_and(|a| k <= a) {
            continue;
        }
        if heap.len() <= limit {
            heap.push((k, i));
        } else if heap.peek().is_some_and(|(top, _)| k < *top) {
            heap.pop();
            heap.push((k, i));
        }
    }
    let mut picked: Vec<&JobConfig> = heap
        .into_sorted_vec()
        .into_iter()
        .map(|(_, i)| &jobs[i])
        .collect();
    let more = picked.len() > limit;
    picked.truncate(limit);
    (picked, more)
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

/// Bounds the `/api/v1/jobs` pages being built at once, so many clients cost time, not memory
/// (or every core): each page is a scan of the watch list and up to `PAGE_MAX` rows.
#[derive(Clone)]
pub(super) struct PageBuilders(Arc<tokio::sync::Semaphore>);

impl PageBuilders {
    pub(super) fn new() -> PageBuilders {
        PageBuilders(Arc::new(tokio::sync::Semaphore::new(PAGE_BUILDERS)))
    }
}

/// Pages built at once; others wait their turn.
const PAGE_BUILDERS: usize = 2;

pub(super) async fn jobs(
    State(s): State<AppState>,
    Extension(builders): Extension<PageBuilders>,
    Query(q): Query<PageQuery>,
) -> Response {
    let limit = match parse_limit(q.limit.as_deref()) {
        Ok(n) => n,
        Err(message) => return bad_request(message),
    };
    let after = match q.after.as_deref().map(|c| decode_cursor(c).ok_or(c)) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(c)) => {
            return bad_request(format!(
                "after: {c:?} is not a cursor from a previous page's next_after; start without ?after="
            ));
        }
    };
    let _turn = builders.0.acquire().await.expect("never closed");
    // Only the page's jobs are copied out of the shared config, not the whole watch list. The
    // scan takes milliseconds with 100,000 jobs: off the async workers, which run the poller.
    let config = s.config.borrow().clone();
    let scanned = tokio::task::spawn_blocking(move || {
        let (picked, more) = page(&config.jobs, after.as_ref(), limit);
        (picked.into_iter().cloned().collect::<Vec<_>>(), more)
    })
    .await;
    let Ok((picked, more)) = scanned else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the page could not be built\n",
        )
            .into_response();
    };
    let keys: Vec<(&str, &str)> = picked
        .iter()
        .map(|j| (j.app_id.as_str(), j.job_id.as_str()))
        .collect();
    let rows = match s.store.jobs_by_key(&keys).await {
        Ok(rows) => rows,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("database unreachable: {e:#}\n"),
            )
                .into_response();
        }
    };
    let next_after = if more {
        picked.last().map(encode_cursor)
    } else {
        None
    };
    let items = picked
        .iter()
        .map(|j| {
            StatusRow::new(
                j,
                rows.get(&crate::domain::JobKey::new(&j.app_id, &j.job_id)),
            )
        })
        .collect();
    Json(JobsPage { items, next_after }).into_response()
}

/// `/api/v1/jobs/{app_id}/{job_id}`: one watched job's row and the files it recorded; 404
/// for a job that is not watched.
pub(super) async fn job(
    State(s): State<AppState>,
    Path((app_id, job_id)): Path<(String, String)>,
) -> Response {
    let config = s.config.borrow().clone();
    match crate::status::job_record(&config, &s.store, &app_id, &job_id).await {
        Ok(Some(record)) => Json(record).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            format!("no watched job {app_id}/{job_id}; /api/v1/jobs lists the watched jobs\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unreachable: {e:#}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(app: &str, id: &str) -> JobConfig {
        JobConfig {
            app_id: app.into(),
            job_id: id.into(),
            name: None,
            interval: None,
            notify: None,
        }
    }

    fn ids(page: &[&JobConfig]) -> Vec<String> {
        page.iter()
            .map(|j| format!("{}/{}", j.app_id, j.job_id))
            .collect()
    }

    #[test]
    fn pages_follow_key_order_from_the_cursor() {
        // Config order is not key order; an app id sorts before its job ids.
        let jobs = vec![
            job("b", "1"),
            job("a", "3"),
            job("a", "1"),
            job("c", "0"),
            job("a", "2"),
        ];
        let key = |a: &str, j: &str| (a.to_string(), j.to_string());
        struct Case {
            name: &'static str,
            after: Option<JobKey>,
            limit: usize,
            page: &'static [&'static str],
            more: bool,
        }
        let cases = [
            Case {
                name: "first page",
                after: None,
                limit: 2,
                page: &["a/1", "a/2"],
                more: true,
            },
            Case {
                name: "from a cursor",
                after: Some(key("a", "2")),
                limit: 2,
                page: &["a/3", "b/1"],
                more: true,
            },
            Case {
                name: "exactly the rest: no more",
                after: Some(key("a", "3")),
                limit: 2,
                page: &["b/1", "c/0"],
                more: false,
            },
            Case {
                name: "fewer than the limit left",
                after: Some(key("b", "1")),
                limit: 10,
                page: &["c/0"],
                more: false,
            },
            Case {
                name: "after the last job",
                after: Some(key("c", "0")),
                limit: 2,
                page: &[],
                more: false,
            },
            Case {
                name: "a cursor whose job was removed goes on from its place",
                after: Some(key("a", "25")),
                limit: 1,
                page: &["a/3"],
                more: true,
            },
            Case {
                name: "everything in one page",
                after: None,
                limit: 5,
                page: &["a/1", "a/2", "a/3", "b/1", "c/0"],
                more: false,
            },
        ];
        for c in cases {
            let (page, more) = page(&jobs, c.after.as_ref(), c.limit);
            assert_eq!(ids(&page), c.page, "{}", c.name);
            assert_eq!(more, c.more, "{}", c.name);
        }
        assert_eq!(page(&[], None, 3), (vec![], false), "no jobs");
    }

    #[test]
    fn walking_pages_returns_every_job_once() {
        // Deterministic shuffle: job i at position i * 7919 mod n.
        let n = 1000;
        let jobs: Vec<JobConfig> = (0..n)
            .map(|i| {
                job(
                    &format!("app-{}", (i * 7919) % 7),
                    &format!("job-{:04}", (i * 7919) % n),
                )
            })
            .collect();
        for limit in [1, 3, 100, 999, 1000] {
            let mut seen = Vec::new();
            let mut after: Option<JobKey> = None;
            loop {
                let (page, more) = page(&jobs, after.as_ref(), limit);
                assert!(page.len() <= limit);
                seen.extend(ids(&page));
                if !more {
                    break;
                }
                let cursor = encode_cursor(page.last().unwrap());
                after = Some(decode_cursor(&cursor).unwrap());
            }
            let mut expected = ids(&jobs.iter().collect::<Vec<_>>());
            expected.sort();
            assert_eq!(seen, expected, "limit {limit}");
        }
    }

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        let j = job("app/with \"odd\" chars", "job,1");
        let c = encode_cursor(&j);
        assert!(
            c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'),
            "URL-safe: {c}"
        );
        assert_eq!(
            decode_cursor(&c),
            Some((j.app_id.clone(), j.job_id.clone()))
        );
        for junk in ["", "!!", "bm90IGpzb24", "WzFd"] {
            assert_eq!(decode_cursor(junk), None, "{junk:?}");
        }
    }

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
                ok: Some(PAGE_DEFAULT),
            },
            Case {
                name: "one",
                input: Some("1"),
                ok: Some(1),
            },
            Case {
                name: "the most",
                input: Some("1000"),
                ok: Some(PAGE_MAX),
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
            match (parse_limit(c.input), c.ok) {
                (Ok(n), Some(want)) => assert_eq!(n, want, "{}", c.name),
                (Err(e), None) => assert!(
                    e.starts_with("limit:") && e.contains("1 to 1000"),
                    "{}: {e}",
                    c.name
                ),
                (got, want) => panic!("{}: got {got:?}, want {want:?}", c.name),
            }
        }
    }
}
