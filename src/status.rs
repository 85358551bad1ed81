//! What `recwatch status` and `/api/v1/jobs` both show: each watched job (from the
//! configuration or the run-time watch list, see [`crate::runtime_list`]) with what the database
//! knows of it and where it came from (`source`). One row type below both, so the command and
//! the endpoint cannot drift apart. A single job's record (`/api/v1/jobs/{app_id}/{job_id}`)
//! adds the files it recorded.

use crate::config::{Config, JobConfig};
use crate::domain::{JobSource, NotATime, Timestamp};
use crate::runtime_list::Entry;
use crate::store::{JobRow, JobStatuses, Store};
use serde::Serialize;

/// A watched job with what the database knows of it: a row of `status --json` and of
/// `/api/v1/jobs`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    /// The name of the account that polls the job ([`Config::account_of`]).
    pub account: String,
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
    pub last_polled_at: Option<Timestamp>,
    pub last_changed_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub polled: bool,
}

impl StatusRow {
    /// `row` is the job's database row, None if it was never polled; `account` the name of
    /// the account that polls the job.
    pub fn new(j: &JobConfig, account: &str, source: &JobSource, r: Option<&JobRow>) -> StatusRow {
        StatusRow {
            account: account.to_owned(),
            app_id: j.app_id().to_owned(),
            job_id: j.job_id().to_owned(),
            name: j.name.clone(),
            kind: j.kind,
            source: source.clone(),
            state: r.and_then(|r| r.state.clone()),
            stop_reason: r.and_then(|r| r.stop_reason.clone()),
            description: r.and_then(|r| r.description.clone()),
            last_polled_at: r.and_then(|r| r.last_polled_at),
            last_changed_at: r.and_then(|r| r.last_changed_at),
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
    let entries = crate::runtime_list::entries(config, &runtime);
    let rows = job_rows(store, None).await?;
    let accounts = AccountOf::new(config);
    let mut next = 0;
    Ok(entries
        .iter()
        .map(|e| Sorted::of(e, &accounts, &rows, &mut next).to_row())
        .collect::<Result<_, _>>()?)
}

/// Each watched job with what the database knows of it, borrowed, in [`status_rows`]'s
/// order, handed to `f` as [`Shown`], which makes each job's [`Sorted`] when it is asked for
/// (`status`'s table goes over them twice: every cell's width before its first line, then
/// the lines): no [`StatusRow`] copied per job, and no list of the rows held (issue 23, item
/// 7: at 100,000 jobs the list of rows, of their cells and of the cells' widths were ~58 MB,
/// ~14,000 pages the kernel had to hand over and zero, a third of the command's time).
/// `rows` are the jobs' rows if they were read ahead ([`JobStatuses::read_ahead`]), else they
/// are read here.
pub async fn with_rows<R>(
    config: &Config,
    store: &Store,
    rows: Option<JobStatuses>,
    f: impl FnOnce(&Shown<'_>) -> R,
) -> anyhow::Result<R> {
    let runtime = runtime_list(store).await?;
    let entries = crate::runtime_list::entries(config, &runtime);
    let rows = job_rows(store, rows).await?;
    Ok(f(&Shown::new(&entries, AccountOf::new(config), &rows)))
}

/// Every watched job with its row, each made when it is asked for ([`Shown::get`]), as many
/// times as the caller needs; each job's row is looked up once.
pub struct Shown<'a> {
    entries: &'a [Entry<'a>],
    accounts: AccountOf<'a>,
    rows: &'a JobStatuses,
    /// Per entry, the place of its row among `rows` ([`JobStatuses::position_next`]), or
    /// `u32::MAX` for none: 4 bytes a job.
    found: Vec<u32>,
}

impl<'a> Shown<'a> {
    fn new(entries: &'a [Entry<'a>], accounts: AccountOf<'a>, rows: &'a JobStatuses) -> Shown<'a> {
        let mut next = 0;
        let found = entries
            .iter()
            .map(|e| {
                let (app_id, job_id) = e.key();
                rows.position_next(app_id, job_id, &mut next)
                    .and_then(|i| u32::try_from(i).ok())
                    .unwrap_or(u32::MAX)
            })
            .collect();
        Shown {
            entries,
            accounts,
            rows,
            found,
        }
    }

    /// How many jobs are watched.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no job is watched.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `i`th watched job with its row, in [`status_rows`]'s order.
    pub fn get(&self, i: usize) -> Option<Sorted<'a>> {
        let e = self.entries.get(i)?;
        Some(Sorted::with(
            e,
            &self.accounts,
            self.rows.at(self.found[i] as usize),
        ))
    }

    /// How many of the jobs are shown with a source other than the file (an entry the file
    /// also has is the file's): the run-time group of the budget.
    pub fn runtime(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| match e {
                Entry::File(_) => false,
                Entry::Runtime(r) => r.source != JobSource::Config,
            })
            .count()
    }
}

/// Every job's row, found by key: `ahead` if they were read ahead, else one pass over the
/// table through the store (a row of a job no longer watched is never looked up).
async fn job_rows(store: &Store, ahead: Option<JobStatuses>) -> anyhow::Result<JobStatuses> {
    if let Some(rows) = ahead {
        return Ok(rows);
    }
    let mut rows = JobStatuses::default();
    store.jobs().each_status(|row| rows.push(row)).await?;
    rows.index()?;
    Ok(rows)
}

/// The run-time list as the database holds it (no daemon needed).
async fn runtime_list(store: &Store) -> anyhow::Result<crate::runtime_list::RuntimeList> {
    Ok(crate::runtime_list::RuntimeList::of(
        store.watchlist().all().await?,
    ))
}

/// `status --json`'s text: one JSON array of every watched job, in [`status_rows`]'s order,
/// byte for byte what `serde_json::to_string_pretty` gave for the whole array (object keys
/// sorted, as through a `Value`), written to `out` row by row and flushed every `page` rows
/// (issue 23, item 7). The jobs' rows are read in one pass over the table (the columns shown
/// only), unless `rows` has them, and found by key; no `StatusRow` is made.
pub async fn write_json(
    config: &Config,
    store: &Store,
    rows: Option<JobStatuses>,
    page: usize,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let runtime = runtime_list(store).await?;
    let entries = crate::runtime_list::entries(config, &runtime);
    let rows = job_rows(store, rows).await?;
    // Each page is made on one of two threads (see `write_pages`).
    let pages: Vec<&[Entry<'_>]> = entries.chunks(page.max(1)).collect();
    let accounts = AccountOf::new(config);
    write_pages(
        pages.len(),
        |n, text| write_page(n == 0, pages[n], &accounts, &rows, text),
        out,
    )?;
    writeln!(out, "{}", if entries.is_empty() { "[]" } else { "\n]" })?;
    out.flush()?;
    Ok(())
}

/// Pages `0..pages`, each made by `make` into an empty buffer, written to `out` in order with
/// a flush after each: the even ones made on this thread, the odd ones on a second thread at
/// the same time (issue 23, item 7: at 100,000 jobs, finding the rows and writing
/// `status --json`'s elements or `status`'s lines were 125-280 M instructions on one thread
/// after the rows were read, with the other core idle). A page made beside is handed over in
/// its buffer and the buffer handed back to be filled again: a new one per page would be as
/// many fresh pages from the kernel as the whole output (30 MB).
pub(crate) fn write_pages<E: From<std::io::Error> + Send>(
    pages: usize,
    make: impl Fn(usize, &mut Vec<u8>) -> Result<(), E> + Sync,
    out: &mut impl std::io::Write,
) -> Result<(), E> {
    std::thread::scope(|s| {
        // At most one page waits made: the second thread runs a page ahead at most.
        let (made, take) = std::sync::mpsc::sync_channel::<Result<Vec<u8>, E>>(1);
        let (give_back, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        let make = &make;
        if pages > 1 {
            s.spawn(move || {
                for n in (1..pages).step_by(2) {
                    let mut text = spare.try_recv().unwrap_or_default();
                    text.clear();
                    let page = make(n, &mut text).map(|()| text);
                    if made.send(page).is_err() {
                        // This thread stopped reading (it could not write): nothing to do.
                        return;
                    }
                }
            });
        }
        let mut text = Vec::new();
        for n in 0..pages {
            if n % 2 == 0 {
                text.clear();
                make(n, &mut text)?;
                out.write_all(&text)?;
            } else {
                // The second thread ended without the page only by panicking, which the
                // scope's end passes on.
                let Ok(page) = take.recv() else { break };
                let page = page?;
                out.write_all(&page)?;
                let _ = give_back.send(page);
            }
            out.flush()?;
        }
        Ok(())
    })
}

/// A page of `status --json`'s elements (`first`: the array's first page, which opens it)
/// into `text`, after what it holds. Each job's row is looked up after the one found before
/// ([`JobStatuses::find_next`]), from the page's first by key.
fn write_page(
    first: bool,
    page: &[Entry<'_>],
    accounts: &AccountOf<'_>,
    rows: &JobStatuses,
    text: &mut Vec<u8>,
) -> anyhow::Result<()> {
    let mut next = 0;
    for (i, entry) in page.iter().enumerate() {
        text.extend_from_slice(if first && i == 0 { b"[\n" } else { b",\n" });
        write_element(&Sorted::of(entry, accounts, rows, &mut next), text)?;
    }
    Ok(())
}

/// The name of the account that polls a job, borrowed from the configuration: with one
/// account, that account's for every job without a look at the job (100,000 rows); with
/// several, [`Config::account_of`].
#[derive(Clone, Copy)]
pub struct AccountOf<'a> {
    config: &'a Config,
    /// The one account's name, when there is one.
    only: Option<&'a str>,
}

impl<'a> AccountOf<'a> {
    pub fn new(config: &'a Config) -> AccountOf<'a> {
        let only = match config.several_accounts() {
            true => None,
            false => Some(&*config.account_of_app("").name),
        };
        AccountOf { config, only }
    }

    /// The name of the account that polls `job`.
    pub fn of(&self, job: &JobConfig) -> &'a str {
        match self.only {
            Some(name) => name,
            None => &self.config.account_of(job).name,
        }
    }
}

/// A row of `status --json` with its fields in the order of their names, as written
/// (`write_element`): the text of the row through a `serde_json::Value` (whose object keys
/// are sorted, as `status --json` always had), without building that map, or a
/// [`StatusRow`], for each of 100,000 rows. Its fields are [`StatusRow`]'s: a test compares
/// the text with the rows' through a `Value`
/// (`status_json_is_streamed_by_page_and_identical_to_the_whole_array`).
pub struct Sorted<'a> {
    /// The name of the account that polls the job (a name is letters, digits, `-`, `_` and
    /// `.`: written without a look for escapes).
    pub account: &'a str,
    pub app_id: &'a str,
    pub description: Option<&'a str>,
    pub job_id: &'a str,
    pub kind: crate::domain::JobKind,
    pub last_changed_at: Option<&'a str>,
    pub last_error: Option<&'a str>,
    pub last_polled_at: Option<&'a str>,
    pub name: Option<&'a str>,
    pub polled: bool,
    pub source: &'a JobSource,
    pub state: Option<&'a str>,
    pub stop_reason: Option<&'a str>,
    /// Every value from the job's row (`state` ... `last_error`) is printable ASCII without
    /// `"` or `\` (`domain::words::plain`, asked once per row where the rows are read): shown
    /// as it is, in JSON and in the table, with as many characters as bytes.
    pub row_plain: bool,
}

impl<'a> Sorted<'a> {
    /// A watched job and its row among `rows` (none if it was never polled), as
    /// [`StatusRow::new`] shows them. `next` is where to look first, after the row found for
    /// the job before (`JobStatuses::find_next`): the file's jobs and the run-time list are
    /// mostly in the table's key order.
    fn of(
        entry: &Entry<'a>,
        accounts: &AccountOf<'a>,
        rows: &'a JobStatuses,
        next: &mut usize,
    ) -> Sorted<'a> {
        let (app_id, job_id) = entry.key();
        Sorted::with(entry, accounts, rows.find_next(app_id, job_id, next))
    }

    /// A watched job and its row, `found` already.
    fn with(
        entry: &Entry<'a>,
        accounts: &AccountOf<'a>,
        found: Option<crate::store::FoundStatus<'a>>,
    ) -> Sorted<'a> {
        static CONFIG: JobSource = JobSource::Config;
        let (app_id, job_id) = entry.key();
        let row = found.map(|f| f.row);
        let (job, source) = match entry {
            Entry::File(j) => (&***j, &CONFIG),
            Entry::Runtime(r) => (&*r.job, &r.source),
        };
        let (name, kind) = (job.name.as_deref(), job.kind);
        Sorted {
            account: accounts.of(job),
            app_id,
            description: row.and_then(|r| r.description),
            job_id,
            kind,
            last_changed_at: row.and_then(|r| r.last_changed_at),
            last_error: row.and_then(|r| r.last_error),
            last_polled_at: row.and_then(|r| r.last_polled_at),
            name,
            polled: row.is_some_and(|r| r.last_polled_at.is_some()),
            source,
            state: row.and_then(|r| r.state),
            stop_reason: row.and_then(|r| r.stop_reason),
            row_plain: found.is_none_or(|f| f.plain),
        }
    }

    /// The row as a [`StatusRow`] (`status`'s table), copied, its times read.
    fn to_row(&self) -> Result<StatusRow, NotATime> {
        let owned = |v: Option<&str>| v.map(str::to_string);
        let time = |v: Option<&str>| v.map(Timestamp::parse).transpose();
        Ok(StatusRow {
            account: self.account.to_string(),
            app_id: self.app_id.to_string(),
            job_id: self.job_id.to_string(),
            name: owned(self.name),
            kind: self.kind,
            source: self.source.clone(),
            state: owned(self.state),
            stop_reason: owned(self.stop_reason),
            description: owned(self.description),
            last_polled_at: time(self.last_polled_at)?,
            last_changed_at: time(self.last_changed_at)?,
            last_error: owned(self.last_error),
            polled: self.polled,
        })
    }
}

/// One element of a JSON array as `serde_json::to_string_pretty` writes it inside the array:
/// the row's object with its keys sorted (as through a `Value`, which `status --json` always
/// had), every line indented by two spaces. Written by hand into `text`, the layout fixed
/// and each value as serde_json writes it ([`json_str`]): at 100,000 rows serde_json's pretty
/// printer and the re-indenting of its lines were ~0.7 G instructions (issue 23, item 7).
fn write_element(row: &Sorted<'_>, text: &mut Vec<u8>) -> anyhow::Result<()> {
    // Room for the element once (the layout's ~250 bytes and each value unescaped), so the
    // appends below do not grow the buffer one by one.
    let len = |v: Option<&str>| v.map_or(4, str::len);
    text.reserve(
        340 + row.account.len()
            + row.app_id.len()
            + row.job_id.len()
            + len(row.description)
            + len(row.last_changed_at)
            + len(row.last_error)
            + len(row.last_polled_at)
            + len(row.name)
            + len(row.state)
            + len(row.stop_reason),
    );
    // The row's values need no escaping when the row is plain; the entry's are looked at.
    let row_value = |text: &mut Vec<u8>, v: Option<&str>| match v {
        Some(v) if row.row_plain => quoted(text, v),
        v => json_opt(text, v),
    };
    text.extend_from_slice(b"  {\n    \"account\": ");
    quoted(text, row.account);
    text.extend_from_slice(b",\n    \"app_id\": ");
    json_str(text, row.app_id);
    text.extend_from_slice(b",\n    \"description\": ");
    row_value(text, row.description);
    text.extend_from_slice(b",\n    \"job_id\": ");
    json_str(text, row.job_id);
    text.extend_from_slice(b",\n    \"kind\": ");
    // Both as their `Serialize` spells them (`JobKind` in lower case, `JobSource` by
    // `as_str`), fixed words that need no escaping, without serde_json's per-value escaping
    // machinery (~25 M instructions at 100,000 rows).
    quoted(text, row.kind.as_str());
    text.extend_from_slice(b",\n    \"last_changed_at\": ");
    row_value(text, row.last_changed_at);
    text.extend_from_slice(b",\n    \"last_error\": ");
    row_value(text, row.last_error);
    text.extend_from_slice(b",\n    \"last_polled_at\": ");
    row_value(text, row.last_polled_at);
    text.extend_from_slice(b",\n    \"name\": ");
    json_opt(text, row.name);
    text.extend_from_slice(b",\n    \"polled\": ");
    text.extend_from_slice(if row.polled { b"true" } else { b"false" });
    text.extend_from_slice(b",\n    \"source\": ");
    quoted(text, row.source.as_str());
    text.extend_from_slice(b",\n    \"state\": ");
    row_value(text, row.state);
    text.extend_from_slice(b",\n    \"stop_reason\": ");
    row_value(text, row.stop_reason);
    text.extend_from_slice(b"\n  }");
    Ok(())
}

/// `s` as serde_json writes a string: quoted as it is when nothing in it needs escaping (most
/// values), else escaped by serde_json itself.
fn json_str(text: &mut Vec<u8>, s: &str) {
    if !needs_escape(s.as_bytes()) {
        quoted(text, s);
    } else {
        serde_json::to_writer(&mut *text, s).expect("a string into a Vec cannot fail");
    }
}

/// `s` in quotes, as serde_json writes a string that needs no escaping (the caller knows).
fn quoted(text: &mut Vec<u8>, s: &str) {
    text.push(b'"');
    text.extend_from_slice(s.as_bytes());
    text.push(b'"');
}

/// Whether serde_json escapes any byte of `b`: a control character (below 0x20), `"` or `\`.
/// Eight bytes at a time (issue 23, item 7: a test per byte was most of `status --json`'s
/// ~110 M instructions in `json_str` at 100,000 rows; `domain::words`).
fn needs_escape(b: &[u8]) -> bool {
    use crate::domain::words::{any_word, below, equal};
    if b.len() < 8 {
        return b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
    }
    any_word(b, |w| below(w, 0x20) | equal(w, b'"') | equal(w, b'\\'))
}

/// An optional string as serde_json writes it: the string, or `null`.
fn json_opt(text: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(text, s),
        None => text.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobKey, JobKind, RuntimeJob};
    use crate::store::test_support::record;
    use std::sync::Arc;

    fn file_job(id: &str) -> JobConfig {
        JobConfig {
            account: None,
            key: crate::domain::JobKey::new("app", id),
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
        let rows = store.jobs().all().await.unwrap();
        let runtime = crate::runtime_list::RuntimeList::of(store.watchlist().all().await.unwrap());
        let all: Vec<StatusRow> = crate::runtime_list::merged(config, &runtime)
            .iter()
            .map(|w| {
                let k = JobKey::new(w.job.app_id(), w.job.job_id());
                StatusRow::new(
                    &w.job,
                    &config.account_of(&w.job).name,
                    &w.source,
                    rows.get(&k),
                )
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
                .watchlist()
                .add(&RuntimeJob {
                    account: None,
                    key: JobKey::new("app", &i),
                    // A name serde_json escapes: quotes, a backslash, control characters
                    // (short and long forms); DEL and non-ASCII it leaves as they are.
                    name: (i == "r00005").then(|| "a \"b\" \\ \n\t\u{1}\u{7f} é 雪".to_string()),
                    kind: JobKind::Individual,
                    notify: None,
                    source: crate::domain::JobSource::Api,
                    added_at: "2026-12-07T00:00:00.000Z".parse().unwrap(),
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
        store.jobs().record(&polled).await.unwrap();
        let want = whole_array(&config, &store).await;
        // `status`'s table has the same rows.
        let table = serde_json::to_value(status_rows(&config, &store).await.unwrap()).unwrap();
        let table = format!("{}\n", serde_json::to_string_pretty(&table).unwrap());
        assert_eq!(table, want, "status's rows");

        for page in [7, STATUS_PAGE] {
            let mut out = Counted::default();
            write_json(&config, &store, None, page, &mut out)
                .await
                .unwrap();
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
        write_json(&config, &empty, None, 7, &mut out)
            .await
            .unwrap();
        assert_eq!(String::from_utf8(out.text).unwrap(), "[]\n");
        assert_eq!(whole_array(&config, &empty).await, "[]\n");
    }

    /// `needs_escape` says what serde_json escapes, for every byte at every place of a word
    /// and of the tail after it.
    #[test]
    fn a_string_needs_escaping_exactly_when_serde_json_escapes_it() {
        for b in 0..=255u8 {
            let naive = b < 0x20 || b == b'"' || b == b'\\';
            for len in 1..=17 {
                for at in 0..len {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert_eq!(needs_escape(&s), naive, "byte {b:#x} at {at} of {len}");
                }
            }
        }
        assert!(!needs_escape(b""));
        assert!(!needs_escape("é 雪 \u{7f}".as_bytes()));
    }

    /// Issue 23, item 7: the rows read ahead straight from the file (on `status`'s second
    /// thread) are the store's, found by key; nothing is read ahead (and no file is made)
    /// where there is no database, or where the store would migrate the schema first.
    #[tokio::test]
    async fn rows_read_ahead_are_the_stores() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recwatch.db");
        let store = Store::open(&path).await.unwrap();
        let mut polled: Vec<_> = (0..300)
            .map(|i| record(&format!("j{i:03}"), chrono::Utc::now(), None, "RUNNING"))
            .collect();
        // A description that needs escaping, an empty one and none: an empty value is not
        // NULL (`scan` reads each value's bytes, which SQLite gives as no pointer for both).
        for (i, d) in [(7, Some("a \"quoted\" é")), (8, Some("")), (9, None)] {
            if let crate::domain::PollOutcome::Ok { job, .. } = &mut polled[i].outcome {
                job.description = d.map(str::to_string);
            }
        }
        store.jobs().record(&polled).await.unwrap();
        let storage = |path: &std::path::Path| crate::config::StorageConfig {
            path: path.to_path_buf(),
            ..Default::default()
        };
        let ahead = JobStatuses::read_ahead(&storage(&path)).expect("read ahead");
        let stored = job_rows(&store, None).await.unwrap();
        let shown = |r: Option<crate::store::JobStatus<'_>>| format!("{r:?}");
        for i in (0..300)
            .map(|i| format!("j{i:03}"))
            .chain(["j300".into(), "x".into()])
        {
            let want = stored.find("app", &i);
            assert_eq!(i.len() == 4 && i.as_str() < "j300", want.is_some(), "{i}");
            assert_eq!(shown(ahead.find("app", &i)), shown(want), "{i}");
        }
        assert!(ahead.find("other", "j001").is_none());
        let description = |i: &str| ahead.find("app", i).and_then(|r| r.description);
        assert_eq!(description("j008"), Some(""), "empty");
        assert_eq!(description("j009"), None, "NULL");

        // Found in key order (each row after the one before), in another order, or not at
        // all: the same rows as by key; a row is plain exactly when its values need no
        // escaping.
        let mut ids: Vec<String> = (0..301).map(|i| format!("j{i:03}")).collect();
        for order in ["key", "reversed"] {
            let mut next = 0;
            for i in &ids {
                let found = ahead.find_next("app", i, &mut next);
                assert_eq!(
                    shown(found.map(|f| f.row)),
                    shown(ahead.find("app", i)),
                    "{order}: {i}"
                );
                if let Some(f) = found {
                    assert_eq!(f.plain, i != "j007", "{order}: {i} plain");
                }
            }
            ids.reverse();
        }

        let missing = dir.path().join("none.db");
        assert!(JobStatuses::read_ahead(&storage(&missing)).is_none());
        assert!(!missing.exists(), "read-only: no file made");

        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)")
            .execute(&sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap())
            .await
            .unwrap();
        assert!(
            JobStatuses::read_ahead(&storage(&path)).is_none(),
            "a schema behind this build's is left to the store"
        );
    }
}
