-- Push (issue 11): the files a job recorded, found fast, and the relay of callbacks to the
-- user's own receiver (`forward_to`).

-- `recwatch history` and the job's API record read a job's files: RECORD_FILE_COMPLETE events
-- by job id, without walking the other events.
CREATE INDEX callback_files_by_job ON callback_events (job_id, id)
    WHERE event_type = 'RECORD_FILE_COMPLETE';

-- One row per verified event to relay, written in the same transaction as the event, so a
-- crash loses nothing and a resent event (the same body, already stored) is not relayed
-- twice. The body is kept byte for byte; the app's key is not stored: the relay is signed
-- at send time with the key in the configuration, and sent to the app's `forward_to` then.
-- `id` is the stable id the receiver can deduplicate on (header X-Recwatch-Forward-Id).
CREATE TABLE forwards (
    id INTEGER PRIMARY KEY,
    event_id INTEGER NOT NULL UNIQUE,
    app_id TEXT NOT NULL,
    body BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    last_attempt_at TEXT,
    last_error TEXT,
    sent_at TEXT
);
CREATE INDEX forwards_due ON forwards (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX forwards_by_state ON forwards (state, id);
