//! The `callback_events` table: each verified record callback once (see migration 0006).

use super::{Store, StoreError, WriteTx};
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
    pub received_at: String,
}

/// A file a job recorded, from its `RECORD_FILE_COMPLETE` event: what `recwatch history` and
/// the job's API record show. The download URL is the user's own data and shown whole there;
/// it is never logged.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct RecordedFileRow {
    pub app_id: String,
    pub job_id: String,
    /// When the event arrived.
    pub received_at: String,
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

/// Whether [`Store::insert_callback_event`] wrote a row.
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

impl WriteTx {
    /// [`Store::insert_callback_event`] inside a transaction: the callback receiver's commit
    /// queue writes many events (and the watch-list entries they discover) in one commit.
    pub async fn insert_callback_event_in(
        &mut self,
        app_id: &str,
        event: &RecordEvent,
        body_sha256: &str,
        at: &str,
        forward: Option<&[u8]>,
    ) -> Result<Inserted, StoreError> {
        let file = event.file.clone().unwrap_or_default();
        let id: Option<i64> = on_tx!(self, |c| sqlx::query_scalar::<_, i64>(
            "INSERT INTO callback_events (app_id, job_id, event_type, room_id,
                 stream_name, record_format, detail_message, download_url, record_duration,
                 file_size, obs_bucket, obs_object, file_start_time, file_end_time,
                 body_sha256, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(app_id)
        .bind(&event.job_id)
        .bind(event.event_type.as_str())
        .bind(&event.room_id)
        .bind(&event.stream_name)
        .bind(&event.record_format)
        .bind(&event.detail_message)
        .bind(&file.download_url)
        .bind(column(file.record_duration))
        .bind(column(file.file_size))
        .bind(&file.obs_bucket)
        .bind(&file.obs_object)
        .bind(&file.start_time)
        .bind(&file.end_time)
        .bind(body_sha256)
        .bind(at)
        .fetch_optional(&mut *c)
        .await)?;
        let Some(id) = id else {
            return Ok(Inserted::Duplicate);
        };
        if let Some(body) = forward {
            on_tx!(self, |c| sqlx::query(
                "INSERT INTO forwards (event_id, app_id, body, created_at, next_attempt_at)
                 VALUES ($1, $2, $3, $4, $4)",
            )
            .bind(id)
            .bind(app_id)
            .bind(body)
            .bind(at)
            .execute(&mut *c)
            .await
            .map(|_| ()))?;
        }
        Ok(Inserted::New)
    }
}

impl Store {
    /// Stores a verified event once: `app_id` is the app whose key verified it, `body_sha256`
    /// the hex SHA-256 of the raw body, `at` the receive time as stored. With `forward` (the
    /// raw body, when the app has `forward_to`) a pending forward is written in the same
    /// transaction, so a crash cannot keep the event and lose its relay; a duplicate writes
    /// neither, so a resent event is relayed once.
    pub async fn insert_callback_event(
        &self,
        app_id: &str,
        event: &RecordEvent,
        body_sha256: &str,
        at: &str,
        forward: Option<&[u8]>,
    ) -> Result<Inserted, StoreError> {
        let mut tx = self.begin_write().await?;
        let inserted = tx
            .insert_callback_event_in(app_id, event, body_sha256, at, forward)
            .await?;
        // A duplicate wrote nothing: committing it costs the same as rolling it back.
        tx.commit().await?;
        Ok(inserted)
    }

    /// The events stored for one app, oldest first (`job_id` narrows to one job).
    pub async fn callback_events(
        &self,
        app_id: &str,
        job_id: Option<&str>,
    ) -> Result<Vec<CallbackEventRow>, StoreError> {
        Ok(on_read!(self, |db| sqlx::query_as::<_, CallbackEventRow>(
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
        &self,
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
        Ok(on_read!(self, |db| sqlx::query_as::<_, RecordedFileRow>(
            query
        )
        .bind(job_id)
        .bind(app_id)
        .bind(since)
        .bind(limit)
        .fetch_all(db)
        .await)?)
    }

    /// How many events are stored in all.
    pub async fn callback_event_count(&self) -> Result<i64, StoreError> {
        Ok(on_read!(self, |db| sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM callback_events"
        )
        .fetch_one(db)
        .await)?)
    }
}
