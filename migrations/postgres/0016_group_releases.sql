-- Alert grouping (issue 13): when each grouping lane (a chat or e-mail channel, by name) last
-- released a group. `notify.group_wait` is measured from it; kept here rather than in one
-- process's memory, so a restart or a takeover by another instance continues the window
-- instead of sending what it holds at once.
CREATE TABLE group_releases (
    channel TEXT PRIMARY KEY,
    released_at TEXT NOT NULL
);
