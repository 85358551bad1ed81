-- A condition that lasts (stuck_init, job_not_found, api_unhealthy) from when it starts to
-- when it clears. At most one open episode per rule and job: a restart finds it open and
-- does not fire again.
CREATE TABLE episodes (
    id               INTEGER PRIMARY KEY,
    rule             TEXT NOT NULL,
    app_id           TEXT NOT NULL DEFAULT '',   -- '' for api-wide conditions
    job_id           TEXT NOT NULL DEFAULT '',
    reason           TEXT,
    opened_at        TEXT NOT NULL,
    last_notified_at TEXT NOT NULL,
    reminders        INTEGER NOT NULL DEFAULT 0,
    resolved_at      TEXT
);
CREATE UNIQUE INDEX episodes_open ON episodes (rule, app_id, job_id) WHERE resolved_at IS NULL;

-- An alert is created once, in the transaction of the transition or condition that caused
-- it; dedup_key makes a second one impossible. The payload is frozen at creation so every
-- retry sends the same bytes with the same id.
CREATE TABLE alerts (
    id            TEXT PRIMARY KEY,
    dedup_key     TEXT NOT NULL UNIQUE,
    rule          TEXT NOT NULL,
    severity      TEXT NOT NULL,
    status        TEXT NOT NULL,               -- firing | resolved
    app_id        TEXT,
    job_id        TEXT,
    transition_id INTEGER REFERENCES transitions (id) ON DELETE SET NULL,
    episode_id    INTEGER REFERENCES episodes (id) ON DELETE SET NULL,
    summary       TEXT NOT NULL,
    payload       TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX alerts_by_time ON alerts (created_at);

-- One per alert and channel. Nothing counts as sent until the receiver accepted it.
CREATE TABLE deliveries (
    alert_id        TEXT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    channel         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',   -- pending | sent | dead
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    sent_at         TEXT,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (alert_id, channel)
) WITHOUT ROWID;
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
