-- The status page's header counts jobs by phase (issue 23, item 7): one grouped read of this
-- index (it holds every column the count needs, so no row, with its snapshot, is read) instead
-- of every job's row on each request.
CREATE INDEX jobs_by_phase ON jobs (state, stop_reason, consecutive_failures);
