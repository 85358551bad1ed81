-- Leadership (issue 13): several `recwatch run` on one database, one active. The active
-- instance holds this one row's lease and renews it; it expires by the DATABASE's clock
-- (expires_ms, milliseconds since 1970 as the database counts them), so the instances' own
-- clocks never matter. Every acquisition raises the epoch, and every write of the active
-- instance checks it (the fence): an old leader that wakes after losing the lease writes
-- nothing. The row starts expired, at epoch 0, so the first instance takes it at once.
CREATE TABLE leader_lease (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    holder      TEXT NOT NULL,     -- unique per process start (host:pid:random)
    host        TEXT NOT NULL,
    pid         BIGINT NOT NULL,
    epoch       BIGINT NOT NULL,
    acquired_at TEXT NOT NULL,     -- RFC 3339 UTC by the holder's clock, for people only
    expires_ms  BIGINT NOT NULL
);
INSERT INTO leader_lease (id, holder, host, pid, epoch, acquired_at, expires_ms)
VALUES (1, '', '', 0, 0, '', 0);
-- The epoch that last claimed a pending delivery just before sending it (in a fenced
-- transaction): after a failover a delivery claimed by an older epoch may have been sent, and
-- goes again with the same id (at-least-once).
ALTER TABLE deliveries ADD COLUMN claimed_epoch BIGINT;
