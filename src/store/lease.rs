//! The leadership lease (`leader_lease`, one row) and the fence on the active instance's
//! writes.
//!
//! The lease expires by the database's clock (`expires_ms`): every statement computes "now"
//! in SQL, so instances whose clocks disagree still agree on who holds it. Each acquisition
//! raises the epoch. A [`Fence`] is what makes a [`Store`] clone the active instance's: every
//! [`Store::begin_write`] through it first checks, on this process's monotonic clock, that the
//! lease's local deadline has not passed, then, inside the write transaction (SQLite's
//! `BEGIN IMMEDIATE` holds the write lock, so no acquisition can slip in before the commit),
//! that the row still shows its epoch and has not expired. Otherwise it is refused with
//! [`StoreError::Fenced`] and the leadership loop is told, so it steps down.

use super::{Conn, Dialect, Store, StoreError, WriteTx};
use crate::domain::Timestamp;
use sqlx::AssertSqlSafe;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The database's clock in milliseconds since 1970, as SQL: SQLite's julian days (its only
/// sub-second clock on every version), PostgreSQL's `clock_timestamp()` (the time now, not the
/// transaction's start).
fn now_ms(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    }
}

/// Who asks for the lease: one value per process start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimant {
    /// Unique per process start (host, pid and a random part), so a restarted process with
    /// the same pid is not mistaken for its predecessor.
    pub holder: String,
    pub host: String,
    pub pid: i64,
}

impl Claimant {
    /// This process.
    pub fn this_process() -> Claimant {
        let host = crate::domain::hostname();
        let pid = i64::from(std::process::id());
        let nonce: u64 = rand::random();
        Claimant {
            holder: format!("{host}:{pid}:{nonce:016x}"),
            host,
            pid,
        }
    }
}

/// The lease as the database holds it now.
#[derive(sqlx::FromRow, Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    /// Empty when no instance ever held it.
    pub holder: String,
    pub host: String,
    pub pid: i64,
    pub epoch: i64,
    /// When its holder took it (its own clock, for people); none before any instance held it
    /// (the row's first text is empty).
    pub acquired_at: Option<Timestamp>,
    /// Milliseconds until it expires by the database's clock; zero or less: expired.
    pub expires_in_ms: i64,
}

impl LeaseRow {
    /// Whether an instance holds it now.
    pub fn is_held(&self) -> bool {
        !self.holder.is_empty() && self.expires_in_ms > 0
    }

    /// "host (pid N)", how people are told which instance this is.
    pub fn who(&self) -> String {
        format!("{} (pid {})", self.host, self.pid)
    }
}

/// What a fenced store checks before each write: the epoch it acts for, and until when its
/// lease is valid on this process's monotonic clock (moved on by each renewal, set in the
/// past when the instance steps down).
#[derive(Clone, Debug)]
pub struct Fence {
    epoch: i64,
    until: watch::Receiver<Instant>,
    /// Told the epoch the database showed when it refused a write: the leadership loop
    /// steps down at once instead of at its next renewal.
    refused: mpsc::UnboundedSender<i64>,
    /// The only possible holder (SQLite's owner lock): only the epoch is checked, not the
    /// expiry (a full disk that kept renewals out must not refuse the writes after it).
    exclusive: bool,
}

impl Fence {
    pub fn new(
        epoch: i64,
        until: watch::Receiver<Instant>,
        refused: mpsc::UnboundedSender<i64>,
    ) -> Fence {
        Fence {
            epoch,
            until,
            refused,
            exclusive: false,
        }
    }

    /// The only possible holder's fence (see the field).
    pub fn exclusive(mut self) -> Fence {
        self.exclusive = true;
        self
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Whether the lease is still valid by this process's clock (no database asked).
    pub fn is_valid(&self) -> bool {
        Instant::now() < *self.until.borrow()
    }

    fn refuse(&self, why: String) -> StoreError {
        StoreError::Fenced {
            epoch: self.epoch,
            why,
        }
    }
}

/// The fence's check inside a write transaction that already holds the write lock (SQLite)
/// or, with `FOR SHARE`, the lease row's (PostgreSQL: an acquisition waits for this
/// transaction to end, and this one sees an acquisition committed before it).
pub(super) async fn check(tx: &mut WriteTx, fence: &Fence) -> Result<(), StoreError> {
    if !fence.is_valid() {
        return Err(fence.refuse("its lease's deadline has passed".into()));
    }
    let row = on_tx!(tx, |c, d| sqlx::query_as::<_, (i64, i64)>(AssertSqlSafe(
        format!(
            "SELECT epoch, expires_ms - {} FROM leader_lease WHERE id = 1{}",
            now_ms(d),
            if d == Dialect::Postgres {
                " FOR SHARE"
            } else {
                ""
            }
        )
    ))
    .fetch_optional(&mut *c)
    .await)?;
    let why = match row {
        Some((epoch, left)) if epoch == fence.epoch && (left > 0 || fence.exclusive) => {
            return Ok(());
        }
        Some((epoch, _)) if epoch != fence.epoch => {
            let _ = fence.refused.send(epoch);
            format!("the lease is now at epoch {epoch}: another instance took over")
        }
        Some((epoch, _)) => {
            let _ = fence.refused.send(epoch);
            "its lease has expired by the database's clock".to_string()
        }
        None => "the lease row is missing".to_string(),
    };
    Err(fence.refuse(why))
}

/// The leadership lease (`leader_lease`): `store.lease()`, a view borrowing the [`Store`].
#[derive(Clone, Copy)]
pub struct Lease<'s> {
    pub(super) store: &'s Store,
}

impl Store {
    /// A clone of this store whose writes are fenced by `fence` (the active instance's).
    pub fn fenced(&self, fence: Fence) -> Store {
        Store {
            fence: Some(fence),
            ..self.clone()
        }
    }

    /// The fence on this store's writes, if it is the active instance's.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }
}

impl Lease<'_> {
    /// Takes the lease for `ttl` if it has expired by the database's clock, or whatever its
    /// state with `force` (SQLite, where the owner lock already proves no other `run`);
    /// returns the new epoch, or None when another instance holds it.
    pub async fn acquire(
        self,
        me: &Claimant,
        ttl: std::time::Duration,
        force: bool,
    ) -> Result<Option<i64>, StoreError> {
        let stamp = crate::domain::timestamp(chrono::Utc::now());
        let epoch = on_write!(self.store, |db, d| sqlx::query_scalar::<_, i64>(
            AssertSqlSafe(format!(
                "UPDATE leader_lease SET holder = $1, host = $2, pid = $3, epoch = epoch + 1,
                 acquired_at = $4, expires_ms = {now} + $5
             WHERE id = 1 AND ($6 = 1 OR expires_ms <= {now}) RETURNING epoch",
                now = now_ms(d)
            ))
        )
        .bind(&me.holder)
        .bind(&me.host)
        .bind(me.pid)
        .bind(&stamp)
        .bind(millis(ttl))
        .bind(i64::from(force))
        .fetch_optional(db)
        .await)?;
        Ok(epoch)
    }

    /// Extends the lease `me` holds at `epoch` to `ttl` from the database's now; false when it
    /// is no longer ours (another instance took it, or it expired first: a lease never comes
    /// back to life, a new one is acquired with a new epoch; `exclusive`, the only possible
    /// holder, renews an expired one).
    pub async fn renew(
        self,
        me: &Claimant,
        epoch: i64,
        ttl: std::time::Duration,
        exclusive: bool,
    ) -> Result<bool, StoreError> {
        let renewed = on_write!(self.store, |db, d| sqlx::query_scalar::<_, i64>(
            AssertSqlSafe(format!(
                "UPDATE leader_lease SET expires_ms = {now} + $3
                 WHERE id = 1 AND holder = $1 AND epoch = $2 AND ($4 = 1 OR expires_ms > {now})
                 RETURNING epoch",
                now = now_ms(d)
            ))
        )
        .bind(&me.holder)
        .bind(epoch)
        .bind(millis(ttl))
        .bind(i64::from(exclusive))
        .fetch_optional(db)
        .await)?;
        Ok(renewed.is_some())
    }

    /// Gives the lease up (a clean stop), so a standby takes over at its next try rather than
    /// after the lease's time; false if it was not ours any more.
    pub async fn release(self, me: &Claimant, epoch: i64) -> Result<bool, StoreError> {
        let done = on_write!(self.store, |db, d| {
            sqlx::query(AssertSqlSafe(format!(
            "UPDATE leader_lease SET expires_ms = {} WHERE id = 1 AND holder = $1 AND epoch = $2",
            now_ms(d)
        )))
        .bind(&me.holder)
        .bind(epoch)
        .execute(db)
        .await
        .map(|done| done.rows_affected())
        })?;
        Ok(done > 0)
    }

    /// The lease as it is now (None on a database without the row).
    pub async fn read(self) -> Result<Option<LeaseRow>, StoreError> {
        let mut c = self.store.backend.read_conn().await?;
        read(c.conn()).await
    }
}

/// The lease row read on `c`: behind `Lease::read` and `peek_postgres`.
async fn read(mut c: Conn<'_>) -> Result<Option<LeaseRow>, StoreError> {
    Ok(on_tx!(c, |c, d| sqlx::query_as::<_, LeaseRow>(
        AssertSqlSafe(format!(
            "SELECT holder, host, pid, epoch, NULLIF(acquired_at, '') AS acquired_at,
                expires_ms - {} AS expires_in_ms
         FROM leader_lease WHERE id = 1",
            now_ms(d)
        ))
    )
    .fetch_optional(&mut *c)
    .await)?)
}

/// The lease on the PostgreSQL database at `url`, read over one connection without changing
/// anything (`recwatch check`, which must not migrate); None without the row.
pub async fn peek_postgres(url: &crate::secret::Secret) -> Result<Option<LeaseRow>, StoreError> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url.expose()).await?;
    let row = read(Conn::Postgres(&mut c)).await;
    let _ = c.close().await;
    row
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::On;
    use crate::testing::{T, wait_for};
    use std::time::Duration;

    fn claimant(n: i64) -> Claimant {
        Claimant {
            holder: format!("h{n}"),
            host: format!("host{n}"),
            pid: n,
        }
    }

    fn fence(epoch: i64, valid_for: Duration) -> (Fence, mpsc::UnboundedReceiver<i64>) {
        let (_tx, until) = watch::channel(Instant::now() + valid_for);
        let (refused, rx) = mpsc::unbounded_channel();
        // The sender may go: the receiver keeps its last value.
        (Fence::new(epoch, until, refused), rx)
    }

    /// Two stores on one database (two instances), and what keeps a SQLite file alive.
    async fn pair(on: On) -> (Store, Store, Option<tempfile::TempDir>) {
        match on {
            On::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("l.db");
                let a = Store::open(&path).await.unwrap();
                let b = Store::open(&path).await.unwrap();
                (a, b, Some(dir))
            }
            On::Postgres => {
                let url = crate::secret::Secret::new(super::super::test_pg::fresh_database().await);
                let a = Store::open_postgres(&url).await.unwrap();
                let b = Store::open_postgres(&url).await.unwrap();
                (a, b, None)
            }
        }
    }

    /// One row written in a write transaction (through the fence, on a fenced store).
    async fn write_something(store: &Store, job: &str) -> Result<(), StoreError> {
        let mut tx = store.begin_write().await?;
        on_tx!(tx, |c| {
            sqlx::query(
            "INSERT INTO watchlist (app_id, job_id, source, added_at) VALUES ('app', $1, 'cli', '2026-01-01T00:00:00.000Z')"
        )
        .bind(job)
        .execute(&mut *c)
        .await
        .map(|_| ())
        })?;
        tx.commit().await
    }

    async fn written(store: &Store) -> Vec<String> {
        store
            .watchlist()
            .all()
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.key.job_id.clone())
            .collect()
    }

    /// Two instances on one database: the first takes the lease (epoch 1), the second is
    /// refused while it lasts and takes it once it expires (epoch 2); the first can then
    /// neither renew nor write through its fence, and is told which epoch refused it.
    async fn the_lease_passes_on_expiry_and_fences_the_old_holders_writes(on: On) {
        let (a, b, _keep) = pair(on).await;
        let fresh = a.lease().read().await.unwrap().unwrap();
        assert!(!fresh.is_held(), "{fresh:?}");
        assert_eq!(fresh.epoch, 0);

        let ttl = Duration::from_millis(600);
        let (one, two) = (claimant(1), claimant(2));
        assert_eq!(a.lease().acquire(&one, ttl, false).await.unwrap(), Some(1));
        assert_eq!(b.lease().acquire(&two, ttl, false).await.unwrap(), None);
        let held = b.lease().read().await.unwrap().unwrap();
        assert!(held.is_held());
        assert_eq!((held.who(), held.epoch), ("host1 (pid 1)".into(), 1));
        assert!(a.lease().renew(&one, 1, ttl, false).await.unwrap());
        assert!(
            !b.lease().renew(&two, 1, ttl, false).await.unwrap(),
            "not b's"
        );

        let (f1, mut refused) = fence(1, Duration::from_secs(60));
        let fenced_a = a.fenced(f1);
        write_something(&fenced_a, "while-leading").await.unwrap();

        // Expired by the database's clock: taken by b with the next epoch.
        let taken = wait_for("the lease taken once expired", T, || async {
            b.lease().acquire(&two, ttl, false).await.unwrap()
        })
        .await;
        assert_eq!(taken, 2);
        assert!(
            !a.lease().renew(&one, 1, ttl, false).await.unwrap(),
            "no longer a's"
        );
        let e = write_something(&fenced_a, "after-the-takeover")
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Fenced { epoch: 1, .. }), "{e:?}");
        assert!(e.to_string().contains("epoch 2"), "{e}");
        assert_eq!(refused.try_recv(), Ok(2));
        // Unfenced writes (a callback a standby stores) are not the fence's business.
        write_something(&a, "unfenced").await.unwrap();
        assert_eq!(written(&b).await, ["unfenced", "while-leading"]);

        // Released: the next acquisition needs no wait.
        assert!(
            !a.lease().release(&one, 1).await.unwrap(),
            "not a's to release"
        );
        assert!(b.lease().release(&two, 2).await.unwrap());
        assert_eq!(
            a.lease()
                .acquire(&one, Duration::from_secs(60), false)
                .await
                .unwrap(),
            Some(3)
        );
        // Forced (SQLite's single owner): taken even while held.
        assert_eq!(b.lease().acquire(&two, ttl, true).await.unwrap(), Some(4));
    }

    #[tokio::test]
    async fn the_lease_passes_on_expiry_and_fences_the_old_holders_writes_sqlite() {
        the_lease_passes_on_expiry_and_fences_the_old_holders_writes(On::Sqlite).await
    }

    #[tokio::test]
    async fn the_lease_passes_on_expiry_and_fences_the_old_holders_writes_postgres() {
        the_lease_passes_on_expiry_and_fences_the_old_holders_writes(On::Postgres).await
    }

    /// PostgreSQL: a write of the leader holds the lease row (`FOR SHARE`) until it commits,
    /// so a takeover waits for it and comes after it, never in the middle of it.
    #[tokio::test]
    async fn a_takeover_waits_for_the_leaders_write_in_progress_postgres() {
        let (a, b, _keep) = pair(On::Postgres).await;
        let ttl = Duration::from_millis(300);
        assert_eq!(
            a.lease().acquire(&claimant(1), ttl, false).await.unwrap(),
            Some(1)
        );
        let (f, _r) = fence(1, Duration::from_secs(60));
        let fenced = a.fenced(f);
        let mut tx = fenced.begin_write().await.unwrap();
        on_tx!(tx, |c| sqlx::query(
            "INSERT INTO watchlist (app_id, job_id, source, added_at) VALUES ('app', 'in-flight', 'cli', '2026-01-01T00:00:00.000Z')"
        )
        .execute(&mut *c)
        .await
        .map(|_| ()))
        .unwrap();
        tokio::time::sleep(ttl * 2).await;
        // Expired by the clock, but its write is still open: the acquisition waits for it.
        let two = claimant(2);
        let acquiring = tokio::spawn(async move { b.lease().acquire(&two, ttl, false).await });
        // Waits for the acquisition to be blocked on the lease row's lock, not for a time: it
        // is then certain not to finish before the write commits.
        let pool = a.db().pg_pool().expect("PostgreSQL").clone();
        wait_for("the takeover to wait on a lock", T, || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            (waiting > 0).then_some(())
        })
        .await;
        assert!(
            !acquiring.is_finished(),
            "the takeover waits for the write in progress"
        );
        tx.commit().await.unwrap();
        assert_eq!(acquiring.await.unwrap().unwrap(), Some(2));
        assert_eq!(written(&a).await, ["in-flight"]);
    }

    /// PostgreSQL: a leader paused inside a write (its transaction open, its connection
    /// alive) holds the lease row's lock; the server ends that session after 5 s idle, so the
    /// takeover goes through, and the paused write never commits.
    #[tokio::test]
    async fn a_paused_leaders_open_write_does_not_block_the_takeover_postgres() {
        let (a, b, _keep) = pair(On::Postgres).await;
        let ttl = Duration::from_millis(300);
        assert_eq!(
            a.lease().acquire(&claimant(1), ttl, false).await.unwrap(),
            Some(1)
        );
        let (f, _r) = fence(1, Duration::from_secs(600));
        let mut tx = a.fenced(f).begin_write().await.unwrap();
        on_tx!(tx, |c| sqlx::query(
            "INSERT INTO watchlist (app_id, job_id, source, added_at) VALUES ('app', 'paused', 'cli', '2026-01-01T00:00:00.000Z')"
        )
        .execute(&mut *c)
        .await
        .map(|_| ()))
        .unwrap();
        // "Paused": the transaction stays open and nothing more is sent on it.
        let taken = wait_for("the takeover, not blocked for good", T, || async {
            b.lease().acquire(&claimant(2), ttl, false).await.unwrap()
        })
        .await;
        assert_eq!(taken, 2);
        assert!(tx.commit().await.is_err(), "the paused write never commits");
        assert!(written(&b).await.is_empty());
    }

    /// A fence whose local deadline has passed refuses before asking the database; one whose
    /// lease expired by the database's clock (nobody took it yet) refuses too; SQLite's single
    /// owner (exclusive) is refused neither, and renews an expired lease.
    async fn a_passed_deadline_or_an_expired_lease_refuses_the_write(on: On) {
        let (store, _other, _keep) = pair(on).await;
        let me = claimant(1);
        let epoch = store
            .lease()
            .acquire(&me, Duration::from_secs(60), false)
            .await
            .unwrap()
            .unwrap();
        let (late, _r) = fence(epoch, Duration::ZERO);
        let e = write_something(&store.fenced(late), "late")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("deadline has passed"), "{e}");

        assert!(store.lease().release(&me, epoch).await.unwrap());
        let (ok_locally, mut refused) = fence(epoch, Duration::from_secs(60));
        let e = write_something(&store.fenced(ok_locally), "expired")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        assert_eq!(refused.try_recv(), Ok(epoch));
        assert!(
            !store
                .lease()
                .renew(&me, epoch, Duration::from_secs(60), false)
                .await
                .unwrap()
        );

        let (exclusive, _r) = fence(epoch, Duration::from_secs(60));
        write_something(&store.fenced(exclusive.exclusive()), "exclusive")
            .await
            .unwrap();
        assert!(
            store
                .lease()
                .renew(&me, epoch, Duration::from_secs(60), true)
                .await
                .unwrap()
        );
        assert!(store.lease().read().await.unwrap().unwrap().is_held());
        assert_eq!(written(&store).await, ["exclusive"]);
    }

    #[tokio::test]
    async fn a_passed_deadline_or_an_expired_lease_refuses_the_write_sqlite() {
        a_passed_deadline_or_an_expired_lease_refuses_the_write(On::Sqlite).await
    }

    #[tokio::test]
    async fn a_passed_deadline_or_an_expired_lease_refuses_the_write_postgres() {
        a_passed_deadline_or_an_expired_lease_refuses_the_write(On::Postgres).await
    }
}
