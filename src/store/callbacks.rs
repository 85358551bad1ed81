//! The `callback_events` table: each verified record callback once (see migration 0006).

use super::{Dialect, Store, StoreError, WriteTx};
use crate::domain::Timestamp;
use recwatch_rtc::callback::RecordEvent;
use serde::Serialize;

/// A callback event as stored.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct CallbackEventRow {
    pub id: i64,
    pub app_id: String,
    pub job_id: Option<String>,
    pub event_type: String,
    pub room_id: Option<String>,
    pub stream_name: Option<String>,
    pub record_format: Option<String>,
    pub detail_message: Option<String>,
    pub download_url: Option<String>,
    pub record_duration: Option<i64>,
    pub file_size: Option<i64>,
    pub obs_bucket: Option<String>,
    pub obs_object: Option<String>,
    pub file_start_time: Option<String>,
    pub file_end_time: Option<String>,
    pub body_sha256: String,
    pub received_at: Timestamp,
}

/// A file a job recorded, from its `RECORD_FILE_COMPLETE` event: what `recwatch history` and
/// the job's API record show. The download URL is the user's own data and shown whole there;
/// it is never logged.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct RecordedFileRow {
    pub app_id: String,
    pub job_id: String,
    /// When the event arrived.
    pub received_at: Timestamp,
    pub stream_name: Option<String>,
    pub record_format: Option<String>,
    pub download_url: Option<String>,
    /// Seconds.
    pub record_duration: Option<i64>,
    /// Bytes.
    pub file_size: Option<i64>,
    pub obs_bucket: Option<String>,
    pub obs_object: Option<String>,
    /// The file's own start and end, as RTC sent them.
    pub start_time: Option<String>,
    pub end_time: Option<String>,
}

/// Whether [`Callbacks::insert`] wrote a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// The same body from the same app is already stored (RTC sent it again).
    Duplicate,
}

/// A count from the event as a column: beyond i64 it cannot be a duration or a size.
fn column(n: Option<u64>) -> Option<i64> {
    n.and_then(|n| i64::try_from(n).ok())
}

/// One event for [`CallbacksTx::insert_many`]: what [`Callbacks::insert`]
/// takes, for each event of a group.
#[derive(Clone, Copy, Debug)]
pub struct NewEvent<'a> {
    pub app_id: &'a str,
    pub event: &'a RecordEvent,
    pub body_sha256: &'a str,
    pub at: &'a str,
    pub forward: Option<&'a [u8]>,
}

/// The columns an event is stored in, in the order [`insert_rows_sql`] binds them.
const EVENT_COLUMNS: &str = "app_id, job_id, event_type, room_id, stream_name, record_format,
     detail_message, download_url, record_duration, file_size, obs_bucket, obs_object,
     file_start_time, file_end_time, body_sha256, received_at";
const EVENT_COLUMN_COUNT: usize = 16;

/// The most events one statement inserts (16 values each): a group is cut into statements of
/// 64, 32, ... 1 rows, so a handful of statement texts serve every group size and stay in the
/// connection's statement cache, where a text per size would push each other out.
const ROWS_PER_STATEMENT: usize = 64;

/// The insert of `rows` events (`VALUES (...), (...) ...`, conflicts skipped, see
/// [`Dialect::insert_ignoring_conflicts`]). The rows inserted come back with their unique key,
/// in no promised order; a duplicate (of a stored event, or of an earlier row in the same
/// statement) is skipped and not returned.
fn insert_rows_sql(d: Dialect, rows: usize) -> &'static str {
    static TEXTS: std::sync::OnceLock<[Vec<String>; 2]> = std::sync::OnceLock::new();
    let texts = TEXTS.get_or_init(|| [Dialect::Sqlite, Dialect::Postgres].map(statements));
    debug_assert!(rows.is_power_of_two() && rows <= ROWS_PER_STATEMENT);
    &texts[d as usize][rows.trailing_zeros() as usize]
}

/// The inserts of 1, 2, 4, ... [`ROWS_PER_STATEMENT`] events in `d`.
fn statements(d: Dialect) -> Vec<String> {
    let (insert, on_conflict) = d.insert_ignoring_conflicts();
    (0..=ROWS_PER_STATEMENT.trailing_zeros())
        .map(|shift| {
            let values: Vec<String> = (0..1usize << shift)
                .map(|row| {
                    let first = row * EVENT_COLUMN_COUNT + 1;
                    let marks: Vec<String> = (first..first + EVENT_COLUMN_COUNT)
                        .map(|n| format!("${n}"))
                        .collect();
                    format!("({})", marks.join(", "))
                })
                .collect();
            format!(
                "{insert} callback_events ({EVENT_COLUMNS}) VALUES {}{on_conflict}
                 RETURNING id, app_id, body_sha256",
                values.join(", ")
            )
        })
        .collect()
}

/// The sizes a group of `n` events is written in: [`ROWS_PER_STATEMENT`] while that many
/// are left, then the powers of two of the rest, largest first. Pure.
fn statement_sizes(mut n: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    while n > 0 {
        let size = if n >= ROWS_PER_STATEMENT {
            ROWS_PER_STATEMENT
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        sizes.push(size);
        n -= size;
    }
    sizes
}

/// Binds one event's columns, in [`EVENT_COLUMNS`]'s order.
macro_rules! bind_event {
    ($query:expr, $e:expr) => {{
        let e: &NewEvent = $e;
        let file = e.event.file.as_ref();
        $query
            .bind(e.app_id)
            .bind(e.event.job_id.as_deref())
            .bind(e.event.event_type.as_str())
            .bind(e.event.room_id.as_deref())
            .bind(e.event.stream_name.as_deref())
            .bind(e.event.record_format.as_deref())
            .bind(e.event.detail_message.as_deref())
            .bind(file.and_then(|f| f.download_url.as_deref()))
            .bind(column(file.and_then(|f| f.record_duration)))
            .bind(column(file.and_then(|f| f.file_size)))
            .bind(file.and_then(|f| f.obs_bucket.as_deref()))
            .bind(file.and_then(|f| f.obs_object.as_deref()))
            .bind(file.and_then(|f| f.start_time.as_deref()))
            .bind(file.and_then(|f| f.end_time.as_deref()))
            .bind(e.body_sha256)
            .bind(e.at)
    }};
}

/// Which of `events` a statement inserted, from what it returned (id, app, digest): each
/// returned key is the first event in `events` carrying it; every other is a duplicate.
/// Pure.
fn match_returned(
    events: &[NewEvent<'_>],
    returned: Vec<(i64, String, String)>,
) -> Vec<Option<i64>> {
    let mut ids: std::collections::HashMap<(String, String), i64> = returned
        .into_iter()
        .map(|(id, app, digest)| ((app, digest), id))
        .collect();
    events
        .iter()
        .map(|e| ids.remove(&(e.app_id.to_string(), e.body_sha256.to_string())))
        .collect()
}

/// Stored record-callback events, and the feed of them the poller reads: `store.callbacks()`, a
/// view borrowing the [`Store`].
#[derive(Clone, Copy)]
pub struct Callbacks<'s> {
    pub(super) store: &'s Store,
}

/// Stored record-callback events, and the feed of them the poller reads, inside a write
/// transaction: `tx.callbacks()`.
pub struct CallbacksTx<'t> {
    pub(super) tx: &'t mut WriteTx,
}

impl CallbacksTx<'_> {
    /// Stores a group of events, as [`Callbacks::insert`] stores one, in this
    /// transaction and in a few multi-row statements: a statement per event was a round trip
    /// to SQLite's worker thread (or PostgreSQL's server) per event (BENCHMARKS.md part 23).
    /// One answer per event, in order; of two equal events in the group the first is `New`,
    /// the second a `Duplicate`, as if they had come one after the other.
    pub async fn insert_many(
        &mut self,
        events: &[NewEvent<'_>],
    ) -> Result<Vec<Inserted>, StoreError> {
        let mut answers = Vec::with_capacity(events.len());
        let mut rest = events;
        for size in statement_sizes(events.len()) {
            let (chunk, after) = rest.split_at(size);
            rest = after;
            let returned: Vec<(i64, String, String)> = on_tx!(self.tx, |c, d| {
                let sql = sqlx::AssertSqlSafe(insert_rows_sql(d, size));
                let mut q = sqlx::query_as::<_, (i64, String, String)>(sql);
                for e in chunk {
                    q = bind_event!(q, e);
                }
                q.fetch_all(&mut *c).await
            })?;
            for (e, id) in chunk.iter().zip(match_returned(chunk, returned)) {
                let Some(id) = id else {
                    answers.push(Inserted::Duplicate);
                    continue;
                };
                if let Some(body) = e.forward {
                    self.insert_forward(id, e.app_id, body, e.at).await?;
                }
                answers.push(Inserted::New);
            }
        }
        Ok(answers)
    }

    /// The pending forward of a new event, written with it.
    async fn insert_forward(
        &mut self,
        event_id: i64,
        app_id: &str,
        body: &[u8],
        at: &str,
    ) -> Result<(), StoreError> {
        on_tx!(self.tx, |c| sqlx::query(
            "INSERT INTO forwards (event_id, app_id, body, created_at, next_attempt_at)
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(event_id)
        .bind(app_id)
        .bind(body)
        .bind(at)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// [`Callbacks::insert`] inside a transaction.
    pub async fn insert(
        &mut self,
        app_id: &str,
        event: &RecordEvent,
        body_sha256: &str,
        at: &str,
        forward: Option<&[u8]>,
    ) -> Result<Inserted, StoreError> {
        let one = NewEvent {
            app_id,
            event,
            body_sha256,
            at,
            forward,
        };
        Ok(self.insert_many(&[one]).await?.remove(0))
    }
}

impl Callbacks<'_> {
    /// Stores a verified event once: `app_id` is the app whose key verified it, `body_sha256`
    /// the hex SHA-256 of the raw body, `at` the receive time as stored. With `forward` (the
    /// raw body, when the app has `forward_to`) a pending forward is written in the same
    /// transaction, so a crash cannot keep the event and lose its relay; a duplicate writes
    /// neither, so a resent event is relayed once.
    pub async fn insert(
        self,
        app_id: &str,
        event: &RecordEvent,
        body_sha256: &str,
        at: &str,
        forward: Option<&[u8]>,
    ) -> Result<Inserted, StoreError> {
        let mut tx = self.store.begin_write().await?;
        let inserted = tx
            .callbacks()
            .insert(app_id, event, body_sha256, at, forward)
            .await?;
        // A duplicate wrote nothing: committing it costs the same as rolling it back.
        tx.commit().await?;
        Ok(inserted)
    }

    /// The events stored for one app, oldest first (`job_id` narrows to one job).
    pub async fn events(
        self,
        app_id: &str,
        job_id: Option<&str>,
    ) -> Result<Vec<CallbackEventRow>, StoreError> {
        Ok(on_read!(self.store, |db| sqlx::query_as::<
            _,
            CallbackEventRow,
        >(
            "SELECT * FROM callback_events
             WHERE app_id = $1 AND ($2 IS NULL OR job_id = $2) ORDER BY id",
        )
        .bind(app_id)
        .bind(job_id)
        .fetch_all(db)
        .await)?)
    }

    /// The files jobs recorded, newest first: one job's (`job_id`, and `app_id` when given),
    /// or every job's; only those received at or after `since`; at most `limit`.
    pub async fn recorded_files(
        self,
        app_id: Option<&str>,
        job_id: Option<&str>,
        since: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RecordedFileRow>, StoreError> {
        // Two statements, as for transitions: with a job the partial index
        // callback_files_by_job is sought; `$1 IS NULL OR` would make SQLite plan a scan.
        let query = if job_id.is_some() {
            "SELECT app_id, job_id, received_at, stream_name, record_format, download_url,
                    record_duration, file_size, obs_bucket, obs_object,
                    file_start_time AS start_time, file_end_time AS end_time
             FROM callback_events
             WHERE event_type = 'RECORD_FILE_COMPLETE' AND job_id = $1
               AND ($2 IS NULL OR app_id = $2) AND ($3 IS NULL OR received_at >= $3)
             ORDER BY id DESC LIMIT $4"
        } else {
            "SELECT app_id, job_id, received_at, stream_name, record_format, download_url,
                    record_duration, file_size, obs_bucket, obs_object,
                    file_start_time AS start_time, file_end_time AS end_time
             FROM callback_events
             WHERE event_type = 'RECORD_FILE_COMPLETE' AND job_id IS NOT NULL AND $1 IS NULL
               AND ($2 IS NULL OR app_id = $2) AND ($3 IS NULL OR received_at >= $3)
             ORDER BY id DESC LIMIT $4"
        };
        Ok(on_read!(self.store, |db| sqlx::query_as::<
            _,
            RecordedFileRow,
        >(query)
        .bind(job_id)
        .bind(app_id)
        .bind(since)
        .bind(limit)
        .fetch_all(db)
        .await)?)
    }

    /// How many events are stored in all.
    pub async fn count(self) -> Result<i64, StoreError> {
        Ok(on_read!(self.store, |db| sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM callback_events"
        )
        .fetch_one(db)
        .await)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::both_backends;

    #[test]
    fn a_group_is_cut_into_a_few_statement_sizes_table() {
        let cases: [(&str, usize, &[usize]); 6] = [
            ("none", 0, &[]),
            ("one", 1, &[1]),
            ("a power of two", 32, &[32]),
            ("the rest in powers of two", 45, &[32, 8, 4, 1]),
            ("full statements first", 130, &[64, 64, 2]),
            ("a whole group", 512, &[64; 8]),
        ];
        for (name, n, want) in cases {
            let sizes = statement_sizes(n);
            assert_eq!(sizes, want, "{name}");
            assert_eq!(sizes.iter().sum::<usize>(), n, "{name}");
        }
    }

    fn event(n: usize) -> RecordEvent {
        let body = format!(
            r#"{{"event_type":"RECORD_FILE_COMPLETE","job_id":"j{n}","download_url":"https://obs/{n}.mp4","file_size":"{n}"}}"#
        );
        RecordEvent::parse(body.as_bytes()).unwrap()
    }

    both_backends! {
        /// A group of 100 (statements of 64, 32 and 4 rows) in one transaction: each event
        /// answered in order, a body stored before and a body twice in the group (in one
        /// statement and across two) each stored once and answered as a duplicate, every
        /// column where the one-event insert puts it, and a forward for each new event only.
        async fn a_group_is_stored_in_a_few_statements_each_event_once(store: Store) {
            let events: Vec<RecordEvent> = (0..100).map(event).collect();
            let digests: Vec<String> = (0..100).map(|n| format!("sha-{n}")).collect();
            let at = "2026-12-07T15:00:00.000Z";
            store
                .callbacks().insert("app", &events[3], &digests[3], at, None)
                .await
                .unwrap();
            let mut group: Vec<NewEvent> = (0..100)
                .map(|n| NewEvent {
                    app_id: "app",
                    event: &events[n],
                    body_sha256: &digests[n],
                    at,
                    forward: Some(b"body".as_slice()),
                })
                .collect();
            // Event 10 again within the first statement, event 20 again in the last.
            group[40] = group[10];
            group[98] = group[20];
            let mut tx = store.begin_write().await.unwrap();
            let answers = tx.callbacks().insert_many(&group).await.unwrap();
            tx.commit().await.unwrap();
            let duplicates: Vec<usize> = answers
                .iter()
                .enumerate()
                .filter(|(_, a)| **a == Inserted::Duplicate)
                .map(|(n, _)| n)
                .collect();
            assert_eq!(duplicates, [3, 40, 98]);
            assert_eq!(store.callbacks().count().await.unwrap(), 98);
            let rows = store.callbacks().events("app", Some("j57")).await.unwrap();
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].event_type, "RECORD_FILE_COMPLETE");
            assert_eq!(rows[0].download_url.as_deref(), Some("https://obs/57.mp4"));
            assert_eq!(rows[0].file_size, Some(57));
            assert_eq!(rows[0].body_sha256, "sha-57");
            assert_eq!(rows[0].received_at.to_string(), at);
            let forwards = store.forwards().due("2026-12-07T15:00:01.000Z", 1000).await.unwrap();
            assert_eq!(forwards.len(), 97, "one per event stored by the group");
        }
    }
}
