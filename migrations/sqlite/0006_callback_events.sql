-- Record callbacks (issue 11): each verified event once. RTC may send an event again (with a
-- new signature); the same body from the same app is the same event, so `body_sha256` with
-- the app is unique and a resend is an `INSERT OR IGNORE` that changes nothing.
CREATE TABLE callback_events (
    id INTEGER PRIMARY KEY,
    app_id TEXT NOT NULL,
    job_id TEXT,
    event_type TEXT NOT NULL,
    room_id TEXT,
    stream_name TEXT,
    record_format TEXT,
    detail_message TEXT,
    download_url TEXT,
    record_duration INTEGER,
    file_size INTEGER,
    obs_bucket TEXT,
    obs_object TEXT,
    file_start_time TEXT,
    file_end_time TEXT,
    body_sha256 TEXT NOT NULL,
    received_at TEXT NOT NULL,
    UNIQUE (app_id, body_sha256)
);
CREATE INDEX callback_events_by_job ON callback_events (app_id, job_id, id);
