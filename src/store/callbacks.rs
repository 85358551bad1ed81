//! The `callback_events` table: each verified record callback once (see migration 0006).

use super::{Store, StoreError};
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

impl Store {
    /// Stores a verified event once: `app_id` is the app whose key verified it, `body_sha256`
    /// the hex SHA-256 of the raw body, `at` the receive time as stored.
    pub async fn insert_callback_event(
        &self,
        app_id: &str,
        event: &RecordEvent,
        body_sha256: &str,
        at: &str,
    ) -> Result<Inserted, StoreError> {
        let file = event.file.clone().unwrap_or_default();
        let done = sqlx::query(
            "INSERT OR IGNORE INTO callback_events (app_id, job_id, event_type, room_id,
                 stream_name, record_format, detail_message, download_url, record_duration,
                 file_size, obs_bucket, obs_object, file_start_time, file_end_time,
                 body_sha256, received_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .execute(&self.write)
        .await?;
        Ok(if done.rows_affected() == 1 {
            Inserted::New
        } else {
            Inserted::Duplicate
        })
    }

    /// The events stored for one app, oldest first (`job_id` narrows to one job).
    pub async fn callback_events(
        &self,
        app_id: &str,
        job_id: Option<&str>,
    ) -> Result<Vec<CallbackEventRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM callback_events
             WHERE app_id = ? AND (? IS NULL OR job_id = ?) ORDER BY id",
        )
        .bind(app_id)
        .bind(job_id)
        .bind(job_id)
        .fetch_all(&self.read)
        .await?)
    }

    /// How many events are stored in all.
    pub async fn callback_event_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM callback_events")
            .fetch_one(&self.read)
            .await?)
    }
}
