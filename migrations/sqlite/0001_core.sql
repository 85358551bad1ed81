-- Per watched job: what it looked like when last polled.
CREATE TABLE jobs (
    app_id               TEXT NOT NULL,
    job_id               TEXT NOT NULL,
    name                 TEXT,
    state                TEXT,
    stop_reason          TEXT,
    description          TEXT,
    snapshot             TEXT,             -- the last 200 body, as the API sent it
    first_seen_at        TEXT,
    last_polled_at       TEXT,             -- last attempt, successful or not
    last_ok_at           TEXT,
    last_changed_at      TEXT,
    last_error           TEXT,
    last_error_kind      TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (app_id, job_id)
) WITHOUT ROWID;

-- One row per change of (state, stop_reason); written once.
CREATE TABLE transitions (
    id               INTEGER PRIMARY KEY,
    app_id           TEXT NOT NULL,
    job_id           TEXT NOT NULL,
    name             TEXT,
    from_state       TEXT,                 -- NULL for the first observation
    from_stop_reason TEXT,
    to_state         TEXT NOT NULL,
    stop_reason      TEXT,
    description      TEXT,
    create_time      TEXT,
    start_time       TEXT,
    stop_time        TEXT,
    update_time      TEXT,
    observed_at      TEXT NOT NULL,        -- RFC 3339 UTC, fixed width, so text order is time order
    snapshot         TEXT NOT NULL
);
CREATE INDEX transitions_by_job ON transitions (job_id, observed_at);
CREATE INDEX transitions_by_time ON transitions (observed_at);
