-- The run-time watch list (issue 11): jobs watched without being in the config file, added by
-- `POST /api/v1/jobs`, `recwatch watch`, or a record callback of an app with discover = true
-- (`source`: 'api', 'cli', 'callback'; issue 15 adds 'remediation'). A `[[jobs]]` entry with
-- the same key wins over a row here. `notify` is a JSON array of channel names, NULL for every
-- channel. Rows are retired by retention once the job has been STOPPED (or never seen) for
-- longer than storage.retention.
CREATE TABLE watchlist (
    app_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    name TEXT,
    notify TEXT,
    source TEXT NOT NULL,
    added_at TEXT NOT NULL,
    PRIMARY KEY (app_id, job_id)
);
-- One number that changes with every change to the list, whoever makes it (the daemon, the
-- CLI in another process, another instance on the same database): a running daemon reads it
-- every second and re-reads the list only when it moved.
CREATE TABLE watchlist_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO watchlist_version (id, version) VALUES (1, 0);
CREATE TRIGGER watchlist_inserted AFTER INSERT ON watchlist
BEGIN
    UPDATE watchlist_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER watchlist_updated AFTER UPDATE ON watchlist
BEGIN
    UPDATE watchlist_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER watchlist_deleted AFTER DELETE ON watchlist
BEGIN
    UPDATE watchlist_version SET version = version + 1 WHERE id = 1;
END;
