-- Retention (store::prune) removes old alerts with their deliveries, closed episodes and
-- transitions, in small batches. Deleting a transition sets the alerts that point at it to
-- NULL (ON DELETE SET NULL): without this index SQLite would read every alert for each
-- transition it deletes. (Episodes have alerts_by_episode, from 0004.)
CREATE INDEX alerts_by_transition ON alerts (transition_id) WHERE transition_id IS NOT NULL;
-- Closed episodes by when they closed; open ones are never pruned.
CREATE INDEX episodes_closed ON episodes (resolved_at) WHERE resolved_at IS NOT NULL;
-- /metrics counts jobs by state from this index, not from the rows (each holds a snapshot).
CREATE INDEX jobs_by_state ON jobs (state);
