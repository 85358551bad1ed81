-- Mix-stream jobs (issue 15): each job's kind, 'individual' (the default: every job before
-- this migration was one) or 'mix', which picks the path it is polled on. In the jobs table
-- (written with every write of a job's row, read by the status views and remediation) and in
-- the run-time watch list (so an entry added by the API, the CLI or discovery keeps it).
ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'individual';
ALTER TABLE watchlist ADD COLUMN kind TEXT NOT NULL DEFAULT 'individual';
