-- Several accounts (issue 25). A run-time entry may name the account that polls it; NULL (every
-- entry from before) means its app's account, or the first one: with `[api]`, `default`.
ALTER TABLE watchlist ADD COLUMN account TEXT;
-- An account-wide condition (api_unhealthy) is kept per account: its episode's job_id is the
-- account's name (app_id stays ''). The one such episode before accounts was `[api]`'s, the
-- account now named `default`.
UPDATE episodes SET job_id = 'default' WHERE app_id = '' AND job_id = '';
