//! What `recwatch status` and `/api/v1/jobs` both show: each watched job (from the
//! configuration or the run-time watch list, see [`crate::watchlist`]) with what the database
//! knows of it and where it came from (`source`). One row type below both, so the command and
//! the endpoint cannot drift apart. A single job's record (`/api/v1/jobs/{app_id}/{job_id}`)
//! adds the files it recorded.

use crate::config::{Config, JobConfig};
use crate::domain::JobSource;
use crate::store::{JobRow, JobStatus, Store};
use crate::watchlist::Entry;
use serde::Serialize;
use std::collections::HashMap;

/// A watched job with what the database knows of it: a row of `status --json` and of
/// `/api/v1/jobs`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    pub app_id: String,
    pub job_id: String,
    pub name: Option<String>,
    /// `individual` or `mix`.
    pub kind: crate::domain::JobKind,
    /// Where the job came from: `config`, `callback`, `api` or `cli`.
    pub source: JobSource,
    pub state: Option<String>,
    pub stop_reason: Option<String>,
    pub description: Option<String>,
    pub last_polled_at: Option<String>,
    pub last_changed_at: Option<String>,
    pub last_error: Option<String>,
    pub polled: bool,
}

impl StatusRow {
    /// `row` is the job's database row, None if it was never polled.
    pub fn new(j: &JobConfig, source: &JobSource, r: Option<&JobRow>) -> StatusRow {
        StatusRow {
            app_id: j.app_id.clone(),
            job_id: j.job_id.clone(),
            name: j.name.clone(),
            kind: j.kind,
            source: source.clone(),
            state: r.and_then(|r| r.state.clone()),
            stop_reason: r.and_then(|r| r.stop_reason.clone()),
            description: r.and_then(|r| r.description.clone()),
            last_polled_at: r.and_then(|r| r.last_polled_at.clone()),
            last_changed_at: r.and_then(|r| r.last_changed_at.clone()),
            last_error: r.and_then(|r| r.last_error.clone()),
            polled: r.is_some_and(|r| r.last_polled_at.is_some()),
        }
    }
}

/// How many rows `status --json` writes between two flushes: the reader gets the array as
/// it is written, a page at a time, never as one 30 MB value.
pub const STATUS_PAGE: usize = 1000;

/// Each watched job with what the database knows of it: the config file's in its order, then
/// the run-time list's in key order (`status`; `/api/v1/jobs` serves the same rows a page at a
/// time). The run-time list is read from the database, so this works without a daemon.
pub async fn status_rows(config: &Config, store: &Store) -> anyhow::Result<Vec<StatusRow>> {
    let runtime = runtime_list(store).await?;
    let entries = crate::watchlist::entries(config, &runtime);
    let rows = placed_rows(store, &entries).await?;
    Ok(entries
        .iter()
        .zip(&rows)
        .map(|(e, r)| Sorted::of(e, r.as_ref()).to_row())
        .collect())
}

/// Each entry's row (None if it was never polled), in the entries' order: one pass over the
/// table (key order), each row put in its entry's place; a row of a job no longer watched is
/// left out.
async fn placed_rows(
    store: &Store,
    entries: &[Entry<'_>],
) -> anyhow::Result<Vec<Option<JobStatus>>> {
    let place: HashMap<(&str, &str), usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.key(), i))
        .collect();
    let mut rows: Vec<Option<JobStatus>> = Vec::new();
    rows.resize_with(entries.len(), || None);
    store
        .each_job_status(|row| {
            if let Some(&i) = place.get(&(row.app_id.as_str(), row.job_id.as_str())) {
                rows[i] = Some(row);
            }
        })
        .await?;
    Ok(rows)
}

/// The run-time list as the database holds it (no daemon needed).
async fn runtime_list(store: &Store) -> anyhow::Result<crate::watchlist::RuntimeList> {
    Ok(crate::watchlist::RuntimeList::of(
        store.watched_jobs().await?,
    ))
}

/// `status --json`'s text: one JSON array of every watched job, in [`status_rows`]'s order,
/// byte for byte what `serde_json::to_string_pretty` gave for the whole array (object keys
/// sorted, as through a `Value`), written to `out` row by row and flushed every `page` rows
/// (issue 23, item 7). The jobs' rows are read in one pass over the table (key order) into
/// their places in the watch list's order (the columns shown only); no `StatusRow` is made.
pub async fn write_json(
    config: &Config,
    store: &Store,
    page: usize,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let runtime = runtime_list(store).await?;
    let entries = crate::watchlist::entries(config, &runtime);
    let rows = placed_rows(store, &entries).await?;
    let mut text = Vec::new();
    for (i, (entry, row)) in entries.iter().zip(&rows).enumerate() {
        out.write_all(if i == 0 { b"[\n" } else { b",\n" })?;
        write_element(&Sorted::of(entry, row.as_ref()), &mut text, out)?;
        if (i + 1) % page.max(1) == 0 {
            out.flush()?;
        }
    }
    writeln!(out, "{}", if entries.is_empty() { "[]" } else { "\n]" })?;
    out.flush()?;
    Ok(())
}

/// A row of `status --json` with its fields in the order of their names: serialized directly
/// it is the text of the row through a `serde_json::Value` (whose object keys are sorted, as
/// `status --json` always had), without building that map, or a [`StatusRow`], for each of
/// 100,000 rows. Its fields are [`StatusRow`]'s: a test compares the text with the rows'
/// through a `Value` (`status_json_is_streamed_by_page_and_identical_to_the_whole_array`).
#[derive(Serialize)]
struct Sorted<'a> {
    app_id: &'a str,
    description: &'a Option<String>,
    job_id: &'a str,
    kind: crate::domain::JobKind,
    last_changed_at: &'a Option<String>,
    last_error: &'a Option<String>,
    last_polled_at: &'a Option<String>,
    name: &'a Option<String>,
    polled: bool,
    source: &'a JobSource,
    state: &'a Option<String>,
    stop_reason: &'a Option<String>,
}

impl<'a> Sorted<'a> {
    /// A watched job and its row (None if it was never polled), as [`StatusRow::new`] shows them.
    fn of(entry: &Entry<'a>, row: Option<&'a JobStatus>) -> Sorted<'a> {
        static CONFIG: JobSource = JobSource::Config;
        const NONE: &Option<String> = &None;
        let (app_id, job_id) = entry.key();
        let (name, kind, source) = match entry {
            Entry::File(j) => (&j.name, j.kind, &CONFIG),
            Entry::Runtime(r) => (&r.job.name, r.job.kind, &r.source),
        };
        Sorted {
            app_id,
            description: row.map_or(NONE, |r| &r.description),
            job_id,
            kind,
            last_changed_at: row.map_or(NONE, |r| &r.last_changed_at),
            last_error: row.map_or(NONE, |r| &r.last_error),
            last_polled_at: row.map_or(NONE, |r| &r.last_polled_at),
            name,
            polled: row.is_some_and(|r| r.last_polled_at.is_some()),
            source,
            state: row.map_or(NONE, |r| &r.state),
            stop_reason: row.map_or(NONE, |r| &r.stop_reason),
        }
    }

    /// The row as a [`StatusRow`] (`status`'s table), copied.
    fn to_row(&self) -> StatusRow {
        StatusRow {
            app_id: self.app_id.to_string(),
            job_id: self.job_id.to_string(),
            name: self.name.clone(),
            kind: self.kind,
            source: self.source.clone(),
            state: self.state.clone(),
            stop_reason: self.stop_reason.clone(),
            description: self.description.clone(),
            last_polled_at: self.last_polled_at.clone(),
            last_changed_at: self.last_changed_at.clone(),
            last_error: self.last_error.clone(),
            polled: self.polled,
        }
    }
}

/// One element of a JSON array as `serde_json::to_string_pretty` writes it inside the array:
/// the row's object with its keys sorted (through a `Value`, as `status --json` always had),
/// every line indented by two spaces. `text` is reused from row to row, and the lines go
/// straight to `out` (no string per line, no joined copy: issue 23, item 7).
fn write_element(
    row: &Sorted<'_>,
    text: &mut Vec<u8>,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    text.clear();
    serde_json::to_writer_pretty(&mut *text, row)?;
    // A pretty JSON text has no raw newline inside a string (they are escaped), so each line
    // break is one of the layout's.
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        out.write_all(if i == 0 { b"  " } else { b"\n  " })?;
        out.write_all(line)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobKey, JobKind, RuntimeJob};
    use crate::store::test_support::record;
    use std::sync::Arc;

    fn file_job(id: &str) -> JobConfig {
        JobConfig {
            app_id: "app".into(),
            job_id: id.into(),
            name: Some(format!("file {id}")),
            kind: JobKind::Individual,
            interval: None,
            notify: None,
        }
    }

    /// A writer that counts its flushes: how many times `status --json` handed text on.
    #[derive(Default)]
    struct Counted {
        text: Vec<u8>,
        flushes: usize,
    }

    impl std::io::Write for Counted {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.text.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.flushes += 1;
            Ok(())
        }
    }

    /// What `status --json` printed before it was streamed: every row in one `Value`, pretty.
    async fn whole_array(config: &Config, store: &Store) -> String {
        let rows = store.jobs().await.unwrap();
        let runtime = crate::watchlist::RuntimeList::of(store.watched_jobs().await.unwrap());
        let all: Vec<StatusRow> = crate::watchlist::merged(config, &runtime)
            .iter()
            .map(|w| {
                let k = JobKey::new(&w.job.app_id, &w.job.job_id);
                StatusRow::new(&w.job, &w.source, rows.get(&k))
            })
            .collect();
        let value = serde_json::to_value(&all).unwrap();
        format!("{}\n", serde_json::to_string_pretty(&value).unwrap())
    }

    /// Issue 23, item 7: `status --json` over more jobs than one page (the default page too)
    /// is one valid array with every watched job exactly once, in the order and with the text
    /// it had when it was built whole, and it is handed on a page at a time (a flush per
    /// page), so the whole array is never one value.
    #[tokio::test]
    async fn status_json_is_streamed_by_page_and_identical_to_the_whole_array() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("recwatch.db")).await.unwrap();
        let mut config = Config::defaults(crate::config::Auth::Token {
            token: crate::secret::Secret::new("t"),
        });
        // The file's jobs (one also on the run-time list: listed once, as the file's), then
        // more run-time entries than the default page.
        config.jobs = (0..5)
            .map(|i| Arc::new(file_job(&format!("f{i}"))))
            .collect();
        let runtime = STATUS_PAGE + 37;
        for i in (0..runtime)
            .map(|i| format!("r{i:05}"))
            .chain(["f1".into()])
        {
            store
                .watch_job(&RuntimeJob {
                    key: JobKey::new("app", &i),
                    name: None,
                    kind: JobKind::Individual,
                    notify: None,
                    source: crate::domain::JobSource::Api,
                    added_at: "2026-12-07T00:00:00.000Z".into(),
                })
                .await
                .unwrap();
        }
        // Some jobs polled (rows with a state), the others never; a row of a job no longer
        // watched is not shown.
        let polled: Vec<_> = ["f0", "f1", "r00003", "r01020", "gone"]
            .iter()
            .map(|j| record(j, chrono::Utc::now(), None, "RUNNING"))
            .collect();
        store.record(&polled).await.unwrap();
        let want = whole_array(&config, &store).await;
        // `status`'s table has the same rows.
        let table = serde_json::to_value(status_rows(&config, &store).await.unwrap()).unwrap();
        let table = format!("{}\n", serde_json::to_string_pretty(&table).unwrap());
        assert_eq!(table, want, "status's rows");

        for page in [7, STATUS_PAGE] {
            let mut out = Counted::default();
            write_json(&config, &store, page, &mut out).await.unwrap();
            let text = String::from_utf8(out.text).unwrap();
            let total = 5 + runtime;
            assert_eq!(text, want, "page {page}: the text of the whole array");
            let v: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
            let mut keys: Vec<&str> = v.iter().map(|r| r["job_id"].as_str().unwrap()).collect();
            assert_eq!(keys.len(), total, "page {page}");
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len(), total, "page {page}: every job exactly once");
            assert_eq!(v[1]["state"], "RUNNING");
            assert_eq!(v[1]["source"], "config", "the file's entry wins");
            assert!(
                out.flushes > total / page,
                "page {page}: {} flushes, one per page and the end",
                out.flushes
            );
        }

        // No job: `[]`, as before.
        let empty = Store::open(&dir.path().join("empty.db")).await.unwrap();
        config.jobs.clear();
        let mut out = Counted::default();
        write_json(&config, &empty, 7, &mut out).await.unwrap();
        assert_eq!(String::from_utf8(out.text).unwrap(), "[]\n");
        assert_eq!(whole_array(&config, &empty).await, "[]\n");
    }
}
