-- The delivery worker sends the notices of one episode (firing, reminders, resolved) in the
-- order they were made, per channel: a notice waits while an earlier one of the same episode
-- is still pending on that channel. This index finds those earlier notices.
CREATE INDEX alerts_by_episode ON alerts (episode_id) WHERE episode_id IS NOT NULL;
