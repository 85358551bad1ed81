//! The hint feed: record callbacks reach the poller through the database, so an event any
//! instance's receiver stored (a standby's too) hints the instance that polls.
//!
//! The feed reads `callback_events` by a cursor on their id, every [`POLL_EVERY`] or at once
//! when this process's receiver rings [`Hints::event_stored`] (the in-process fast path, at
//! most one read per [`READ_SPACING`]), and
//! sends each new event that names a job to [`Hints`] once. The cursor is the one place that
//! decides "new", so the fast path and the timer never hint one event twice, and an event
//! read late is never skipped:
//! - on PostgreSQL an id is taken at insert and becomes visible at commit, so a smaller id can
//!   appear after a larger one was read. [`Cursor`] remembers the ids read above the first
//!   gap and looks into the gap again for [`GAP_WAIT`] (a one-row insert commits within
//!   milliseconds; an id that never appears was a rolled-back or conflicting insert);
//! - at start (a restart, a takeover) the events received in the last [`LOOK_BACK`] are
//!   hinted again: those that arrived while no instance polled are not lost, and a hint twice
//!   is harmless (the lane coalesces; polling stays the truth);
//! - SQLite reuses ids once the table is empty (retention pruned every event): when the
//!   highest id falls below the cursor, it starts over.

use super::hints::{HintKind, Hints};
use crate::domain::{JobKey, Timestamp};
use crate::store::{EventHintRow, Store, StoreError};
use recwatch_rtc::callback::EventType;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// The longest an event stored by another instance waits to be read.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// The fast path's reads are at least this far apart. A storm of callbacks commits hundreds
/// of times a second, each commit rang a read (a query, a hop to the database's thread),
/// and the feed was about 5 % of the daemon's CPU (BENCHMARKS.md part 23); the hinted polls
/// wait for the request budget anyway, so a hint 20 ms later loses nothing.
pub const READ_SPACING: Duration = Duration::from_millis(20);

/// How long a gap in the ids is looked into again before it is taken as an id never used.
pub const GAP_WAIT: Duration = Duration::from_secs(10);

/// At start, events received this recently are hinted (again): longer than a takeover.
pub const LOOK_BACK: Duration = Duration::from_secs(60);

/// Events read at once; a full batch is followed by the next at once.
const BATCH: i64 = 1000;

/// At most this many ids are remembered above a gap: under a storm the gap is given up
/// sooner rather than the memory (and the gap's re-read) growing.
const MAX_SEEN: usize = 10_000;

/// The newest events looked at first on start for [`LOOK_BACK`]; more, four times as many
/// each look, while they are all within it (a takeover during a storm of callbacks: issue 23,
/// no hint lost), up to [`START_SCAN_MAX`].
const START_SCAN: i64 = 4096;

/// The most events a start hints again: at the API's pace a minute of them is far fewer.
const START_SCAN_MAX: i64 = 1 << 20;

/// Which event ids the feed has turned into hints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Every id at or below this is done (hinted, or a gap given up on).
    low: i64,
    /// Ids above `low` already hinted: those above the first gap.
    seen: BTreeSet<i64>,
    /// Since when the gap just above `low` has been waited for.
    gap_since: Option<Instant>,
}

impl Cursor {
    pub fn new(low: i64) -> Cursor {
        Cursor {
            low,
            seen: BTreeSet::new(),
            gap_since: None,
        }
    }

    /// The highest id hinted: new events are looked for above it.
    pub fn high(&self) -> i64 {
        self.seen.last().copied().unwrap_or(self.low)
    }

    /// Whether ids below [`Cursor::high`] are still waited for.
    pub fn has_gap(&self) -> bool {
        !self.seen.is_empty()
    }

    /// Whether the event `id` is new (then it is marked hinted).
    pub fn take(&mut self, id: i64) -> bool {
        id > self.low && self.seen.insert(id)
    }

    /// Moves `low` up over the ids hinted without a gap between; a gap waited for since
    /// [`GAP_WAIT`], or with more than [`MAX_SEEN`] ids above it, is given up on.
    pub fn settle(&mut self, now: Instant) {
        loop {
            while self.seen.first() == Some(&(self.low + 1)) {
                self.low += 1;
                self.seen.pop_first();
            }
            let Some(&first) = self.seen.first() else {
                self.gap_since = None;
                return;
            };
            let since = *self.gap_since.get_or_insert(now);
            if now.duration_since(since) < GAP_WAIT && self.seen.len() <= MAX_SEEN {
                return;
            }
            // The next gap, if any, is waited for from now.
            self.low = first - 1;
            self.gap_since = None;
        }
    }
}

/// Where the cursor starts, from the newest events (newest first, with their receive times):
/// just below the oldest received at or after `since`, or at the newest when none was.
pub fn start_low(newest_first: &[(i64, Timestamp)], since: Timestamp) -> i64 {
    let recent = newest_first
        .iter()
        .take_while(|(_, at)| *at >= since)
        .last();
    match recent {
        Some((id, _)) => id - 1,
        None => newest_first.first().map_or(0, |(id, _)| *id),
    }
}

/// What a stored event asks of the poller, if it names a job.
fn hint_of(row: &EventHintRow) -> Option<(JobKey, HintKind)> {
    let job_id = row.job_id.as_deref()?;
    let kind = match row.event_type {
        EventType::CloudRecordServerOver => HintKind::Over,
        _ => HintKind::Poll,
    };
    Some((JobKey::new(&row.app_id, job_id), kind))
}

/// Aborts the feed when dropped: it only reads and sends hints, so stopping it anywhere is
/// safe, and it ends with the poller that owns it.
pub struct FeedTask(tokio::task::JoinHandle<()>);

impl Drop for FeedTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the feed for the poller whose intake is `hints`.
pub fn start(store: Store, hints: Arc<Hints>) -> FeedTask {
    FeedTask(tokio::spawn(run(store, hints)))
}

async fn run(store: Store, hints: Arc<Hints>) {
    let mut failing = false;
    let mut cursor = loop {
        match first_cursor(&store).await {
            Ok(c) => break c,
            Err(e) => _ = report(&mut failing, Err(e)),
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    loop {
        let more = step(&store, &hints, &mut cursor).await;
        if report(&mut failing, more) {
            continue;
        }
        let read = Instant::now();
        tokio::select! {
            // Not sooner than READ_SPACING after the last read: in a storm every commit
            // rings, and one read then takes the events of several commits.
            _ = hints.stored_notified() => tokio::time::sleep_until(read + READ_SPACING).await,
            _ = tokio::time::sleep(POLL_EVERY) => {}
        }
    }
}

/// Logs the first failure of a streak and the recovery; returns whether a full batch was
/// read (read on at once).
fn report(failing: &mut bool, result: Result<bool, StoreError>) -> bool {
    match result {
        Ok(more) => {
            if std::mem::take(failing) {
                info!(
                    "callback hints: the database answers again; events stored meanwhile are hinted now"
                );
            }
            more
        }
        Err(e) => {
            if !std::mem::replace(failing, true) {
                warn!(
                    "callback hints: cannot read stored callback events ({e}); retrying every {POLL_EVERY:?}, jobs are still polled on their schedule"
                );
            }
            false
        }
    }
}

async fn first_cursor(store: &Store) -> Result<Cursor, StoreError> {
    let since = chrono::Utc::now() - chrono::Duration::from_std(LOOK_BACK).unwrap_or_default();
    let since = Timestamp::from(since);
    let mut limit = START_SCAN;
    loop {
        let rows = store.callbacks().latest_hints(limit).await?;
        let newest: Vec<(i64, Timestamp)> = rows.iter().map(|r| (r.id, r.received_at)).collect();
        if limit >= START_SCAN_MAX || reaches_back(&newest, limit, since) {
            return Ok(Cursor::new(start_low(&newest, since)));
        }
        limit = limit.saturating_mul(4).min(START_SCAN_MAX);
    }
}

/// Whether the newest events read (at most `limit`, newest first) cover everything received
/// since `since`: fewer came back than asked for, or the oldest of them is older.
fn reaches_back(newest_first: &[(i64, Timestamp)], limit: i64, since: Timestamp) -> bool {
    (newest_first.len() as i64) < limit || newest_first.last().is_some_and(|(_, at)| *at < since)
}

/// Reads what is new and hints it; returns whether a full batch was read.
async fn step(store: &Store, hints: &Hints, cursor: &mut Cursor) -> Result<bool, StoreError> {
    let mut rows = store.callbacks().hints_after(cursor.high(), BATCH).await?;
    let full = rows.len() as i64 == BATCH;
    if rows.is_empty() && store.callbacks().max_event_id().await?.unwrap_or(0) < cursor.high() {
        // Emptied and refilled: every event there now is new.
        *cursor = Cursor::new(0);
        return Ok(true);
    }
    if cursor.has_gap() {
        let (low, high) = (cursor.low, cursor.high());
        rows.extend(
            store
                .callbacks()
                .hints_between(low, high, MAX_SEEN as i64)
                .await?,
        );
    }
    for row in &rows {
        if cursor.take(row.id) {
            if let Some((key, kind)) = hint_of(row) {
                hints.send(key, kind);
            }
        }
    }
    cursor.settle(Instant::now());
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn cursor_table() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // (name, start low, batches of ids read with the time read, want new ids, want low, want high)
        type Case = (
            &'static str,
            i64,
            Vec<(Vec<i64>, Duration)>,
            Vec<i64>,
            i64,
            i64,
        );
        let cases: Vec<Case> = vec![
            (
                "in order: each once, low follows",
                0,
                vec![(vec![1, 2, 3], s(0)), (vec![4], s(1))],
                vec![1, 2, 3, 4],
                4,
                4,
            ),
            (
                "read twice (fast path and timer): hinted once",
                0,
                vec![(vec![1, 2], s(0)), (vec![1, 2, 3], s(0))],
                vec![1, 2, 3],
                3,
                3,
            ),
            (
                "a smaller id committed late: hinted when it appears",
                0,
                vec![(vec![1, 3], s(0)), (vec![2], s(2))],
                vec![1, 3, 2],
                3,
                3,
            ),
            (
                "a gap never filled: given up after GAP_WAIT, later ids still new",
                0,
                vec![(vec![1, 3], s(0)), (vec![], s(11)), (vec![4], s(12))],
                vec![1, 3, 4],
                4,
                4,
            ),
            (
                "a gap still waited for: low stays below it",
                0,
                vec![(vec![1, 3], s(0)), (vec![4], s(9))],
                vec![1, 3, 4],
                1,
                4,
            ),
            (
                "ids at or below the start are old",
                10,
                vec![(vec![9, 10, 11], s(0))],
                vec![11],
                11,
                11,
            ),
            (
                "a second gap waits its own time after the first is given up",
                0,
                vec![
                    (vec![2, 4], s(0)),
                    (vec![], s(10)),
                    (vec![], s(15)),
                    (vec![3], s(16)),
                ],
                vec![2, 4, 3],
                4,
                4,
            ),
        ];
        for (name, low, batches, want_new, want_low, want_high) in cases {
            let mut c = Cursor::new(low);
            let mut new = Vec::new();
            for (ids, at) in batches {
                for id in ids {
                    if c.take(id) {
                        new.push(id);
                    }
                }
                c.settle(t0 + at);
            }
            assert_eq!(new, want_new, "{name}: new ids");
            assert_eq!(c.low, want_low, "{name}: low");
            assert_eq!(c.high(), want_high, "{name}: high");
        }
    }

    #[test]
    fn the_cursor_gives_up_a_gap_with_too_much_above_it() {
        let mut c = Cursor::new(0);
        let now = Instant::now();
        for id in 2..(MAX_SEEN as i64 + 3) {
            c.take(id);
        }
        c.settle(now);
        assert!(!c.has_gap());
        assert_eq!(c.low, MAX_SEEN as i64 + 2);
    }

    #[test]
    fn reaches_back_table() {
        let t = |s: &str| Timestamp::parse(s).unwrap();
        let since = t("2026-01-01T00:01:00.000Z");
        let (old, new) = (t("2026-01-01T00:00:30.000Z"), t("2026-01-01T00:01:30.000Z"));
        // (name, newest first, limit, covers the look-back)
        type Case = (&'static str, Vec<(i64, Timestamp)>, i64, bool);
        let cases: [Case; 4] = [
            (
                "fewer than asked: all there is",
                vec![(3, new), (2, new)],
                4,
                true,
            ),
            (
                "the oldest read is older",
                vec![(3, new), (2, old)],
                2,
                true,
            ),
            (
                "all read are recent: read more (a storm)",
                vec![(3, new), (2, new)],
                2,
                false,
            ),
            ("nothing stored", vec![], 4, true),
        ];
        for (name, rows, limit, want) in cases {
            assert_eq!(reaches_back(&rows, limit, since), want, "{name}");
        }
    }

    #[test]
    fn start_low_table() {
        let t = |s: &str| Timestamp::parse(s).unwrap();
        let since = t("2026-01-01T00:01:00.000Z");
        let (old, new) = (t("2026-01-01T00:00:00.000Z"), t("2026-01-01T00:01:30.000Z"));
        type Case = (&'static str, Vec<(i64, Timestamp)>, i64);
        let cases: [Case; 4] = [
            ("no events: from the start", vec![], 0),
            ("none recent: after the newest", vec![(7, old), (6, old)], 7),
            (
                "recent ones: just below the oldest of them",
                vec![(9, new), (8, new), (7, old)],
                7,
            ),
            (
                "all recent: below the oldest read",
                vec![(9, new), (8, new)],
                7,
            ),
        ];
        for (name, rows, want) in cases {
            assert_eq!(start_low(&rows, since), want, "{name}");
        }
    }

    #[test]
    fn an_event_hints_its_job_and_the_end_asks_for_re_polls() {
        let row = |job: Option<&str>, t: &str| EventHintRow {
            id: 1,
            app_id: "app".into(),
            job_id: job.map(str::to_string),
            event_type: EventType::parse(t),
            received_at: Timestamp::from_millis(0).unwrap(),
        };
        let key = JobKey::new("app", "j");
        let cases = [
            (
                "a file started",
                row(Some("j"), "RECORD_NEW_FILE_START"),
                Some((key.clone(), HintKind::Poll)),
            ),
            (
                "the end",
                row(Some("j"), "CLOUD_RECORD_SERVER_OVER"),
                Some((key.clone(), HintKind::Over)),
            ),
            (
                "an unknown type",
                row(Some("j"), "SOMETHING_NEW"),
                Some((key, HintKind::Poll)),
            ),
            ("no job", row(None, "RECORD_FILE_COMPLETE"), None),
        ];
        for (name, r, want) in cases {
            assert_eq!(hint_of(&r), want, "{name}");
        }
    }
}
