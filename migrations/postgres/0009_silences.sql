-- Silences (issue 12): while one matches an alert, its notifications are held back, not sent.
-- A matcher left NULL matches anything; at least one is set (checked before the insert).
-- A silence is pending before starts_at, active until ends_at, expired after; `silence
-- expire` ends it early by moving ends_at to that moment. Rows are kept, for `--all`.
CREATE TABLE silences (
    id         TEXT PRIMARY KEY,
    app_id     TEXT,
    job_id     TEXT,
    rule       TEXT,
    starts_at  TEXT NOT NULL,      -- RFC 3339 UTC, fixed width, so text order is time order
    ends_at    TEXT NOT NULL,
    comment    TEXT NOT NULL,
    author     TEXT,
    created_at TEXT NOT NULL
);
-- The delivery lanes and the release pass ask "which silences have not ended" every second.
CREATE INDEX silences_by_end ON silences (ends_at);
