-- The status page's job page lists one job's alerts, newest first: without this index SQLite
-- would read every alert for each job page.
CREATE INDEX alerts_by_job ON alerts (app_id, job_id, created_at);
