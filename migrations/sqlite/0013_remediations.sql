-- Remediation (issue 15): one row per death that recwatch decided to act on (re-create, or
-- say why not). Written in the SAME transaction as the transition that caused it, so a crash
-- can neither lose the intent nor act twice on one death (the unique transition_id).
--   pending  -> posting (committed BEFORE the POST) -> recreated | failed | unknown
--   pending  -> pending (a 429 APIG.0308 or a refused connection: nothing was created; retried)
--   skipped  (dry_run, exhausted, cannot be rebuilt: written as such, never posted)
-- A row found in `posting` at start is a crash between the POST and its answer: the API has no
-- idempotency key, so it is never posted again, it becomes `unknown` and a human is alerted.
-- `lineage` is the first job of a chain of replacements (a job and the jobs that replaced
-- it): max_restarts counts its rows within remediate.window.
-- Times are RFC 3339 UTC text computed by recwatch, like every other table.
CREATE TABLE remediations (
    id              INTEGER PRIMARY KEY,
    app_id          TEXT NOT NULL,
    old_job_id      TEXT NOT NULL,
    lineage         TEXT NOT NULL,
    kind            TEXT NOT NULL DEFAULT 'individual',
    transition_id   BIGINT,
    alert_id        TEXT,
    stop_reason     TEXT,
    state           TEXT NOT NULL,
    reason          TEXT,
    snapshot        TEXT NOT NULL,
    name            TEXT,
    notify          TEXT,
    new_job_id      TEXT,
    error           TEXT,
    request_id      TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    posted_at       TEXT,
    finished_at     TEXT
);
CREATE UNIQUE INDEX remediations_once ON remediations (transition_id);
CREATE INDEX remediations_lineage ON remediations (app_id, lineage, created_at);
CREATE INDEX remediations_due ON remediations (state, next_attempt_at);
CREATE INDEX remediations_new_job ON remediations (app_id, new_job_id);
CREATE INDEX remediations_old_job ON remediations (app_id, old_job_id);
