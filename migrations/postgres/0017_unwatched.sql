-- Unwatches remembered for discovery (issue 22, item 6): when an operator removed a job from
-- the run-time watch list. A record callback signed before that time (a replay of an old
-- event, or RTC resending one) does not add the job again through discovery; a genuinely new
-- event, signed after it, may. One row per job, the latest unwatch.
CREATE TABLE unwatched (
    app_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    unwatched_at TEXT NOT NULL,
    PRIMARY KEY (app_id, job_id)
);
