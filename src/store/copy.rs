//! `recwatch storage copy`: every table's rows from one store into another, SQLite to
//! PostgreSQL or back, idempotently.
//!
//! Each table in [`TABLES`] (parents before the tables that refer to them) is read from the
//! source in key order, a page at a time (keyset: `WHERE (key) > (last key read)`, so a page
//! costs the same at the end of a table as at its start), and written to the target with
//! `ON CONFLICT DO NOTHING` on every unique key: a row already there (a second run, a row the
//! target made itself) is left as it is and counted, never changed. Ids are kept (the alerts'
//! and the watch list's `rowid`, SQLite's implicit one, too: it is the order the outbox made
//! alerts in), so alerts still point at their transitions and episodes, and a forward at its
//! event. On PostgreSQL each identity is then moved past the highest id copied (`setval`),
//! never back, so the next row the target makes gets a new id.
//!
//! Values are read and bound as the column's kind ([`Kind`]), `NULL`s typed too (PostgreSQL
//! refuses an untyped one for a `BIGINT`). [`TABLES`] must name every column of every table:
//! a test reads SQLite's schema and fails for a table or column it does not know, so a new
//! migration cannot be forgotten here.

use super::{Database, Store, StoreError};
use sqlx::Row;

/// How a column is read and bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Int,
    Text,
    Bytes,
}

/// A table as the copy sees it.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    /// The columns it is read in order of (its primary key).
    key: &'static [&'static str],
    /// Every column, the key's among them.
    columns: &'static [(&'static str, Kind)],
    /// The identity column PostgreSQL numbers new rows with, moved past the ids copied.
    identity: Option<&'static str>,
}

use Kind::{Bytes, Int, Text};

/// Every table with data, parents first (alerts after transitions and episodes, deliveries
/// after alerts, forwards after their events).
pub const TABLES: &[Table] = &[
    Table {
        name: "jobs",
        key: &["app_id", "job_id"],
        columns: &[
            ("app_id", Text),
            ("job_id", Text),
            ("name", Text),
            ("state", Text),
            ("stop_reason", Text),
            ("description", Text),
            ("snapshot", Text),
            ("first_seen_at", Text),
            ("last_polled_at", Text),
            ("last_ok_at", Text),
            ("last_changed_at", Text),
            ("last_error", Text),
            ("last_error_kind", Text),
            ("consecutive_failures", Int),
            ("kind", Text),
        ],
        identity: None,
    },
    Table {
        name: "transitions",
        key: &["id"],
        columns: &[
            ("id", Int),
            ("app_id", Text),
            ("job_id", Text),
            ("name", Text),
            ("from_state", Text),
            ("from_stop_reason", Text),
            ("to_state", Text),
            ("stop_reason", Text),
            ("description", Text),
            ("create_time", Text),
            ("start_time", Text),
            ("stop_time", Text),
            ("update_time", Text),
            ("observed_at", Text),
            ("snapshot", Text),
            ("request_id", Text),
        ],
        identity: Some("id"),
    },
    Table {
        name: "episodes",
        key: &["id"],
        columns: &[
            ("id", Int),
            ("rule", Text),
            ("app_id", Text),
            ("job_id", Text),
            ("reason", Text),
            ("opened_at", Text),
            ("last_notified_at", Text),
            ("reminders", Int),
            ("resolved_at", Text),
        ],
        identity: Some("id"),
    },
    Table {
        name: "alerts",
        key: &["id"],
        columns: &[
            ("id", Text),
            ("rowid", Int),
            ("dedup_key", Text),
            ("rule", Text),
            ("severity", Text),
            ("status", Text),
            ("app_id", Text),
            ("job_id", Text),
            ("transition_id", Int),
            ("episode_id", Int),
            ("summary", Text),
            ("payload", Text),
            ("created_at", Text),
            ("silenced_by", Text),
        ],
        identity: Some("rowid"),
    },
    Table {
        name: "deliveries",
        key: &["alert_id", "channel"],
        columns: &[
            ("alert_id", Text),
            ("channel", Text),
            ("state", Text),
            ("attempts", Int),
            ("next_attempt_at", Text),
            ("last_error", Text),
            ("sent_at", Text),
            ("created_at", Text),
            ("held_by", Text),
        ],
        identity: None,
    },
    Table {
        name: "callback_events",
        key: &["id"],
        columns: &[
            ("id", Int),
            ("app_id", Text),
            ("job_id", Text),
            ("event_type", Text),
            ("room_id", Text),
            ("stream_name", Text),
            ("record_format", Text),
            ("detail_message", Text),
            ("download_url", Text),
            ("record_duration", Int),
            ("file_size", Int),
            ("obs_bucket", Text),
            ("obs_object", Text),
            ("file_start_time", Text),
            ("file_end_time", Text),
            ("body_sha256", Text),
            ("received_at", Text),
        ],
        identity: Some("id"),
    },
    Table {
        name: "forwards",
        key: &["id"],
        columns: &[
            ("id", Int),
            ("event_id", Int),
            ("app_id", Text),
            ("body", Bytes),
            ("state", Text),
            ("attempts", Int),
            ("created_at", Text),
            ("next_attempt_at", Text),
            ("last_attempt_at", Text),
            ("last_error", Text),
            ("sent_at", Text),
        ],
        identity: Some("id"),
    },
    Table {
        name: "watchlist",
        key: &["app_id", "job_id"],
        columns: &[
            ("app_id", Text),
            ("job_id", Text),
            ("rowid", Int),
            ("name", Text),
            ("notify", Text),
            ("source", Text),
            ("added_at", Text),
            ("kind", Text),
            ("account", Text),
        ],
        identity: Some("rowid"),
    },
    Table {
        name: "silences",
        key: &["id"],
        columns: &[
            ("id", Text),
            ("app_id", Text),
            ("job_id", Text),
            ("rule", Text),
            ("starts_at", Text),
            ("ends_at", Text),
            ("comment", Text),
            ("author", Text),
            ("created_at", Text),
        ],
        identity: None,
    },
    Table {
        name: "remediations",
        key: &["id"],
        columns: &[
            ("id", Int),
            ("app_id", Text),
            ("old_job_id", Text),
            ("lineage", Text),
            ("kind", Text),
            ("transition_id", Int),
            ("alert_id", Text),
            ("stop_reason", Text),
            ("state", Text),
            ("reason", Text),
            ("snapshot", Text),
            ("name", Text),
            ("notify", Text),
            ("new_job_id", Text),
            ("error", Text),
            ("request_id", Text),
            ("attempts", Int),
            ("next_attempt_at", Text),
            ("created_at", Text),
            ("posted_at", Text),
            ("finished_at", Text),
        ],
        identity: Some("id"),
    },
    Table {
        name: "group_releases",
        key: &["channel"],
        columns: &[("channel", Text), ("released_at", Text)],
        identity: None,
    },
    Table {
        name: "unwatched",
        key: &["app_id", "job_id"],
        columns: &[("app_id", Text), ("job_id", Text), ("unwatched_at", Text)],
        identity: None,
    },
];

/// Tables left out on purpose, and why (the schema test knows them too).
pub const NOT_COPIED: &[(&str, &str)] = &[
    ("_sqlx_migrations", "each database has its own migrations"),
    (
        "watchlist_version",
        "moved by the target's own triggers as watch-list rows are copied",
    ),
    (
        "leader_lease",
        "each database elects its own active instance; the target's lease starts free",
    ),
];

/// Columns of copied tables left out on purpose (the target's default is written), and why.
pub const LEFT_OUT_COLUMNS: &[(&str, &str, &str)] = &[(
    "deliveries",
    "claimed_epoch",
    "a claim made under the source's lease epoch means nothing to the target's own lease: a copied delivery is unclaimed",
)];

/// Rows read at once from the source, and written in one transaction.
const PAGE: i64 = 500;

/// A value as read, typed even when NULL.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

/// What was done to one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copied {
    pub table: &'static str,
    /// Rows read from the source.
    pub read: u64,
    /// Rows the target did not have and now has.
    pub written: u64,
}

impl Copied {
    /// Rows the target had already (a second run, or rows of its own).
    pub fn already_there(&self) -> u64 {
        self.read - self.written
    }
}

/// Binds each value as its kind (a `NULL` as that kind's).
macro_rules! bind_values {
    ($q:expr, $values:expr) => {{
        let mut q = $q;
        for v in $values {
            q = match v {
                Value::Int(x) => q.bind(*x),
                Value::Text(x) => q.bind(x.clone()),
                Value::Bytes(x) => q.bind(x.clone()),
            };
        }
        q
    }};
}

/// Reads a row's columns as the table says.
macro_rules! read_row {
    ($row:expr, $table:expr) => {{
        let row = $row;
        $table
            .columns
            .iter()
            .enumerate()
            .map(|(i, (_, kind))| {
                Ok(match kind {
                    Kind::Int => Value::Int(row.try_get::<Option<i64>, _>(i)?),
                    Kind::Text => Value::Text(row.try_get::<Option<String>, _>(i)?),
                    Kind::Bytes => Value::Bytes(row.try_get::<Option<Vec<u8>>, _>(i)?),
                })
            })
            .collect::<Result<Vec<Value>, sqlx::Error>>()
    }};
}

impl Table {
    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(c, _)| *c)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The page after `after` (the key of the last row read; none: the first page).
    fn page_sql(&self, after: bool) -> String {
        let key = self.key.join(", ");
        let filter = match (after, self.key.len()) {
            (false, _) => String::new(),
            (true, 1) => format!("WHERE {key} > $1"),
            (true, n) => {
                let params: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
                format!("WHERE ({key}) > ({})", params.join(", "))
            }
        };
        format!(
            "SELECT {} FROM {} {filter} ORDER BY {key} LIMIT {PAGE}",
            self.column_list(),
            self.name
        )
    }

    /// One INSERT of `rows` rows that leaves every row the target has alone.
    fn insert_sql(&self, rows: usize) -> String {
        let n = self.columns.len();
        let tuples: Vec<String> = (0..rows)
            .map(|r| {
                let params: Vec<String> = (1..=n).map(|c| format!("${}", r * n + c)).collect();
                format!("({})", params.join(", "))
            })
            .collect();
        format!(
            "INSERT INTO {} ({}) VALUES {} ON CONFLICT DO NOTHING",
            self.name,
            self.column_list(),
            tuples.join(", ")
        )
    }

    /// The key of `row` (the values of the key's columns).
    fn key_of(&self, row: &[Value]) -> Vec<Value> {
        self.key
            .iter()
            .map(|k| {
                let i = self
                    .columns
                    .iter()
                    .position(|(c, _)| c == k)
                    .expect("a key column is a column");
                row[i].clone()
            })
            .collect()
    }
}

impl Database<'_> {
    async fn copy_page(
        self,
        table: &Table,
        after: Option<&[Value]>,
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        let sql = table.page_sql(after.is_some());
        let after = after.unwrap_or_default();
        Ok(on_read!(self.store, |db| {
            let q = bind_values!(sqlx::query(sqlx::AssertSqlSafe(sql.clone())), after);
            match q.fetch_all(db).await {
                Ok(rows) => rows.iter().map(|r| read_row!(r, table)).collect(),
                Err(e) => Err(e),
            }
        })?)
    }

    /// Writes `rows` in one transaction; returns how many the target did not have.
    async fn copy_insert(self, table: &Table, rows: &[Vec<Value>]) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let sql = table.insert_sql(rows.len());
        let values = rows.iter().flatten();
        let mut tx = self.store.begin_write().await?;
        let written = on_tx!(tx, |c| bind_values!(
            sqlx::query(sqlx::AssertSqlSafe(sql.clone())),
            values.clone()
        )
        .execute(&mut *c)
        .await
        .map(|done| done.rows_affected()))?;
        tx.commit().await?;
        Ok(written)
    }

    /// On PostgreSQL, moves `table`'s identity past its highest id, never back: the next row
    /// it makes gets an id no copied row has. Nothing to do on SQLite (a new rowid is always
    /// past the highest).
    async fn raise_identity(self, table: &Table) -> Result<(), StoreError> {
        let (false, Some(column)) = (!self.store.db().is_postgres(), table.identity) else {
            return Ok(());
        };
        let sql = format!(
            "SELECT setval(s.seq, GREATEST(
                 (SELECT COALESCE(MAX({column}), 0) FROM {name}),
                 COALESCE(pg_sequence_last_value(s.seq), 0)) + 1, false)
             FROM (SELECT CAST(pg_get_serial_sequence('{name}', '{column}') AS regclass) AS seq) s",
            name = table.name
        );
        on_write!(self.store, |db| sqlx::query(sqlx::AssertSqlSafe(
            sql.clone()
        ))
        .execute(db)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Copies `table` from `self` into `to`; `progress` is told after each page.
    pub async fn copy_table_to(
        self,
        to: &Store,
        table: &'static Table,
        mut progress: impl FnMut(&Copied),
    ) -> Result<Copied, StoreError> {
        let mut done = Copied {
            table: table.name,
            read: 0,
            written: 0,
        };
        let mut after: Option<Vec<Value>> = None;
        loop {
            let rows = self.copy_page(table, after.as_deref()).await?;
            let Some(last) = rows.last() else { break };
            after = Some(table.key_of(last));
            done.read += rows.len() as u64;
            done.written += to.db().copy_insert(table, &rows).await?;
            progress(&done);
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
        to.db().raise_identity(table).await?;
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::test_support::{On, fresh};
    use std::collections::BTreeSet;

    /// Rows in every table of a SQLite store, NULLs, bytes and gaps in the ids included, and
    /// more transitions than a page.
    const FIXTURE: &[&str] = &[
        "INSERT INTO jobs (app_id, job_id, name, state, stop_reason, snapshot, first_seen_at, consecutive_failures)
         VALUES ('app', 'j1', 'cam 1', 'STOPPED', 'INTERNAL_ERROR', '{}', '2026-11-28T09:00:00.000Z', 2),
                ('app', 'j2', NULL, NULL, NULL, NULL, NULL, 0)",
        "WITH RECURSIVE n(i) AS (SELECT 10 UNION ALL SELECT i + 1 FROM n WHERE i < 1210)
         INSERT INTO transitions (id, app_id, job_id, to_state, observed_at, snapshot, request_id)
         SELECT i, 'app', 'j1', 'RUNNING', '2026-11-28T09:00:00.000Z', '{\"n\":' || i || '}', NULL FROM n",
        "INSERT INTO transitions (id, app_id, job_id, from_state, to_state, stop_reason, observed_at, snapshot, request_id)
         VALUES (1, 'app', 'j1', NULL, 'RUNNING', NULL, '2026-11-28T08:00:00.000Z', '{}', 'req-1'),
                (5, 'app', 'j1', 'RUNNING', 'STOPPED', 'INTERNAL_ERROR', '2026-11-28T08:30:00.000Z', '{}', NULL)",
        "INSERT INTO episodes (id, rule, app_id, job_id, opened_at, last_notified_at, reminders, resolved_at)
         VALUES (3, 'job_not_found', 'app', 'j2', '2026-11-28T08:00:00.000Z', '2026-11-28T08:10:00.000Z', 1, NULL),
                (4, 'api_unhealthy', '', '', '2026-11-28T07:00:00.000Z', '2026-11-28T07:00:00.000Z', 0, '2026-11-28T07:05:00.000Z')",
        "INSERT INTO alerts (rowid, id, dedup_key, rule, severity, status, app_id, job_id, transition_id, episode_id, summary, payload, created_at, silenced_by)
         VALUES (7, 'a1', 'd1', 'stopped_unexpectedly', 'critical', 'firing', 'app', 'j1', 5, NULL, 's1', '{}', '2026-11-28T08:30:00.000Z', NULL),
                (9, 'a2', 'd2', 'job_not_found', 'warning', 'firing', 'app', 'j2', NULL, 3, 's2', '{}', '2026-11-28T08:00:00.000Z', 'sil-1'),
                (8, 'a0', 'd0', 'api_unhealthy', 'warning', 'resolved', NULL, NULL, NULL, 4, 's0', '{}', '2026-11-28T07:05:00.000Z', NULL)",
        "INSERT INTO deliveries (alert_id, channel, state, attempts, next_attempt_at, last_error, sent_at, created_at, held_by)
         VALUES ('a1', 'hook', 'sent', 1, '2026-11-28T08:30:00.000Z', NULL, '2026-11-28T08:30:01.000Z', '2026-11-28T08:30:00.000Z', NULL),
                ('a2', 'hook', 'silenced', 0, '2026-11-28T08:00:00.000Z', 'x', NULL, '2026-11-28T08:00:00.000Z', 'sil-1'),
                ('a2', 'chat', 'pending', 3, '2026-11-28T08:00:09.000Z', 'HTTP 500', NULL, '2026-11-28T08:00:00.000Z', NULL)",
        "INSERT INTO callback_events (id, app_id, job_id, event_type, record_duration, file_size, body_sha256, received_at)
         VALUES (2, 'app', 'j1', 'RECORD_FILE_COMPLETE', 60, 1048576, 'sha-2', '2026-11-28T08:00:00.000Z'),
                (4, 'app', NULL, 'OTHER', NULL, NULL, 'sha-4', '2026-11-28T08:00:01.000Z')",
        "INSERT INTO forwards (id, event_id, app_id, body, state, attempts, created_at, next_attempt_at)
         VALUES (6, 2, 'app', X'007BFF0A', 'pending', 0, '2026-11-28T08:00:00.000Z', '2026-11-28T08:00:00.000Z')",
        "INSERT INTO watchlist (rowid, app_id, job_id, name, notify, source, added_at)
         VALUES (3, 'app', 'j2', 'side door', '[\"hook\"]', 'api', '2026-11-28T08:00:00.000Z')",
        "INSERT INTO silences (id, app_id, job_id, rule, starts_at, ends_at, comment, author, created_at)
         VALUES ('sil-1', NULL, 'j2', NULL, '2026-11-28T07:00:00.000Z', '2026-11-28T20:00:00.000Z', 'swap', NULL, '2026-11-28T07:00:00.000Z')",
        "INSERT INTO group_releases (channel, released_at) VALUES ('chat', '2026-11-28T08:00:00.000Z')",
        "INSERT INTO unwatched (app_id, job_id, unwatched_at) VALUES ('app', 'j9', '2026-11-28T08:00:00.000Z')",
    ];

    /// Every row of every table, in key order.
    async fn dump(store: &Store) -> Vec<(&'static str, Vec<Vec<Value>>)> {
        let mut all = Vec::new();
        for t in TABLES {
            let mut rows = Vec::new();
            let mut after: Option<Vec<Value>> = None;
            loop {
                let page = store.db().copy_page(t, after.as_deref()).await.unwrap();
                let Some(last) = page.last() else { break };
                after = Some(t.key_of(last));
                rows.extend(page);
            }
            all.push((t.name, rows));
        }
        all
    }

    async fn copy_all(from: &Store, to: &Store) -> Vec<Copied> {
        let mut done = Vec::new();
        for t in TABLES {
            done.push(from.db().copy_table_to(to, t, |_| {}).await.unwrap());
        }
        done
    }

    /// SQLite to PostgreSQL and back to a new SQLite file, each twice: every row arrives
    /// as it was (ids, rowids, NULLs, bytes), the second run copies nothing, and PostgreSQL's
    /// identities are past the copied ids.
    #[tokio::test]
    async fn sqlite_to_postgres_and_back_keeps_every_row_and_a_second_run_copies_nothing() {
        let (a, _dir_a) = fresh(On::Sqlite).await;
        for sql in FIXTURE {
            sqlx::query(*sql)
                .execute(&a.backend.sqlite().unwrap().write)
                .await
                .unwrap();
        }
        let (p, _) = fresh(On::Postgres).await;
        let (b, _dir_b) = fresh(On::Sqlite).await;
        let source = dump(&a).await;
        assert_eq!(
            source
                .iter()
                .find(|(t, _)| *t == "transitions")
                .unwrap()
                .1
                .len(),
            1203
        );

        let first = copy_all(&a, &p).await;
        for (c, (name, rows)) in first.iter().zip(&source) {
            assert_eq!(
                (c.table, c.read, c.written),
                (*name, rows.len() as u64, rows.len() as u64)
            );
        }
        let again = copy_all(&a, &p).await;
        assert!(
            again
                .iter()
                .all(|c| c.written == 0 && c.already_there() == c.read),
            "{again:?}"
        );
        assert_eq!(dump(&p).await, source, "PostgreSQL holds what SQLite held");

        copy_all(&p, &b).await;
        let back = copy_all(&p, &b).await;
        assert!(back.iter().all(|c| c.written == 0), "{back:?}");
        assert_eq!(dump(&b).await, source, "back in SQLite as it was");

        // New rows on PostgreSQL get ids past the copied ones.
        let Backend::Postgres(pg) = &p.backend else {
            unreachable!()
        };
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO transitions (app_id, job_id, to_state, observed_at, snapshot)
             VALUES ('app', 'j9', 'INIT', '2026-11-28T10:00:00.000Z', '{}') RETURNING id",
        )
        .fetch_one(&pg.write)
        .await
        .unwrap();
        assert_eq!(id, 1211);
        let rowid: i64 = sqlx::query_scalar(
            "INSERT INTO alerts (id, dedup_key, rule, severity, status, summary, payload, created_at)
             VALUES ('a9', 'd9', 'r', 'warning', 'firing', 's', '{}', 'now') RETURNING rowid",
        )
        .fetch_one(&pg.write)
        .await
        .unwrap();
        assert_eq!(rowid, 10);
        // A third run raises nothing back: the identities stay where they are.
        copy_all(&a, &p).await;
        let next: i64 = sqlx::query_scalar(
            "INSERT INTO callback_events (app_id, event_type, body_sha256, received_at)
             VALUES ('app', 'X', 'sha-new', 'now') RETURNING id",
        )
        .fetch_one(&pg.write)
        .await
        .unwrap();
        assert_eq!(next, 5);
    }

    #[test]
    fn statements_table() {
        let t = &TABLES[0];
        assert_eq!(
            t.page_sql(true),
            format!(
                "SELECT {} FROM jobs WHERE (app_id, job_id) > ($1, $2) ORDER BY app_id, job_id LIMIT {PAGE}",
                t.column_list()
            )
        );
        let tr = TABLES.iter().find(|t| t.name == "transitions").unwrap();
        assert!(
            tr.page_sql(false)
                .ends_with("FROM transitions  ORDER BY id LIMIT 500")
        );
        assert!(tr.page_sql(true).contains("WHERE id > $1 ORDER BY id"));
        let g = TABLES.iter().find(|t| t.name == "group_releases").unwrap();
        assert_eq!(
            g.insert_sql(2),
            "INSERT INTO group_releases (channel, released_at) VALUES ($1, $2), ($3, $4) ON CONFLICT DO NOTHING"
        );
    }

    /// Every table of the schema is copied or named in NOT_COPIED, and every column of a
    /// copied table is in its list: a migration that adds either fails here until the copy
    /// knows it. (SQLite's schema; PostgreSQL's has the same tables and columns, `rowid`
    /// being SQLite's implicit one there.)
    #[tokio::test]
    async fn every_table_and_column_of_the_schema_is_copied_or_left_out_on_purpose() {
        let (store, _dir) = fresh(On::Sqlite).await;
        let db = store.backend.sqlite().expect("SQLite").read.clone();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        for name in &tables {
            if NOT_COPIED.iter().any(|(n, _)| n == name) {
                continue;
            }
            let table = TABLES.iter().find(|t| t.name == name).unwrap_or_else(|| {
                panic!("table {name} is neither copied (TABLES) nor left out (NOT_COPIED)")
            });
            let columns: BTreeSet<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT name FROM pragma_table_info('{name}')"
            )))
            .fetch_all(&db)
            .await
            .unwrap()
            .into_iter()
            .collect();
            let known: BTreeSet<String> = table
                .columns
                .iter()
                .map(|(c, _)| c.to_string())
                .filter(|c| c != "rowid")
                .collect();
            let columns: BTreeSet<String> = columns
                .into_iter()
                .filter(|c| !LEFT_OUT_COLUMNS.iter().any(|(t, l, _)| t == name && l == c))
                .collect();
            assert_eq!(known, columns, "the columns of {name}");
        }
        for t in TABLES {
            assert!(
                tables.contains(&t.name.to_string()),
                "{} is not in the schema",
                t.name
            );
        }
    }
}
