//! Whether the database can be written now, and why not: fed by every write's outcome and by
//! [`Database::check_file`](super::Database::check_file), read by `/readyz`. A failing database is
//! logged when it starts failing, when the cause changes and once a minute while it lasts,
//! not once per poll.

use super::error::{StoreError, describe_write_error};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{error, info, warn};

/// Whether the database can be written, and why not: fed by every write's outcome and by
/// [`Database::check_file`](super::Database::check_file), read by `/readyz`.
#[derive(Default)]
pub struct StoreHealth {
    state: Mutex<HealthState>,
}

#[derive(Default)]
struct HealthState {
    failing: Option<Failing>,
    /// What the last file check found wrong (deleted, replaced, read-only).
    file_problem: Option<String>,
    /// When the writer began the write it is in; `None` while it is idle.
    writer_busy_since: Option<Instant>,
    /// Set when the writer's supervisor itself is gone: nothing restarts it.
    writer_dead: bool,
}

/// A run of failed writes.
struct Failing {
    since: Instant,
    cause: String,
    busy: bool,
    failures: u64,
    logged_at: Instant,
}

/// A failing database is re-logged this often, so the log says it still is without a line per
/// poll.
const REPEAT_LOG: Duration = Duration::from_secs(60);

/// A write taking longer than this means the writer is stuck, not slow (the busy timeout is 5 s).
pub const WRITER_STUCK_AFTER: Duration = Duration::from_secs(30);

impl StoreHealth {
    /// A write committed: the database is writable (again).
    pub fn write_ok(&self) {
        let mut s = self.lock();
        if let Some(f) = s.failing.take() {
            info!(
                failed_writes = f.failures,
                after_secs = f.since.elapsed().as_secs(),
                "the database accepts writes again (it failed with: {}); writing what was kept in memory",
                f.cause
            );
        }
    }

    /// A write failed. Logs the real cause the first time (and when it changes, and once a
    /// minute while it lasts), not once per poll.
    pub fn write_failed(&self, e: &StoreError) {
        if e.is_fenced() {
            // Not the database's fault: the instance stepped down (the leadership loop says so).
            return;
        }
        // Counted each time; logged once per cause and once a minute (below).
        metrics::counter!("recwatch_database_write_failures_total").increment(1);
        let cause = describe_write_error(e);
        let busy = e.is_locked();
        let now = Instant::now();
        let mut s = self.lock();
        match &mut s.failing {
            Some(f) if f.cause == cause => {
                f.failures += 1;
                if now.duration_since(f.logged_at) >= REPEAT_LOG {
                    f.logged_at = now;
                    warn!(
                        failed_writes = f.failures,
                        for_secs = f.since.elapsed().as_secs(),
                        "the database still cannot be written: {cause}"
                    );
                }
            }
            failing => {
                let since = failing.as_ref().map_or(now, |f| f.since);
                let failures = failing.as_ref().map_or(0, |f| f.failures) + 1;
                if busy {
                    warn!(
                        "cannot write to the database: {cause}; polling goes on and outcomes are kept in memory until it can"
                    );
                } else {
                    error!(
                        "cannot write to the database: {cause}; polling goes on, outcomes are kept in memory and written when it can be written again"
                    );
                }
                *failing = Some(Failing {
                    since,
                    cause,
                    busy,
                    failures,
                    logged_at: now,
                });
            }
        }
    }

    /// Whether the last write failed for a reason other than another process's lock.
    pub fn is_failing(&self) -> bool {
        self.lock().failing.as_ref().is_some_and(|f| !f.busy)
    }

    /// Records what [`Database::check_file`](super::Database::check_file) found; logs a change.
    pub fn set_file_problem(&self, problem: Option<String>) {
        let mut s = self.lock();
        if s.file_problem == problem {
            return;
        }
        match &problem {
            Some(p) => error!("{p}"),
            None => info!("the database file is in place and writable again"),
        }
        s.file_problem = problem;
    }

    pub fn writer_busy(&self, busy: bool) {
        self.lock().writer_busy_since = busy.then(Instant::now);
    }

    pub fn set_writer_dead(&self) {
        self.lock().writer_dead = true;
    }

    pub fn writer_dead(&self) -> bool {
        self.lock().writer_dead
    }

    /// Why the database cannot be written now, for `/readyz`; empty when it can.
    pub fn problems(&self) -> Vec<String> {
        let s = self.lock();
        let mut out = Vec::new();
        if let Some(f) = &s.failing {
            out.push(format!(
                "the database cannot be written ({} failed writes in {} s): {}",
                f.failures,
                f.since.elapsed().as_secs(),
                f.cause
            ));
        }
        if let Some(p) = &s.file_problem {
            out.push(p.clone());
        }
        if s.writer_dead {
            out.push("the database writer has stopped".into());
        } else if let Some(t) = s
            .writer_busy_since
            .filter(|t| t.elapsed() > WRITER_STUCK_AFTER)
        {
            out.push(format!(
                "the database writer has been stuck in one write for {} s",
                t.elapsed().as_secs()
            ));
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        // Plain data: usable even if a panic interrupted an update.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure that is neither a lock nor the database refusing: its text is the cause.
    fn disk_on_fire() -> StoreError {
        StoreError::from(sqlx::Error::Protocol("disk on fire".into()))
    }

    #[test]
    fn health_keeps_the_cause_until_a_write_succeeds() {
        let h = StoreHealth::default();
        assert!(h.problems().is_empty());
        h.write_failed(&disk_on_fire());
        h.write_failed(&disk_on_fire());
        let p = h.problems();
        assert_eq!(p.len(), 1);
        assert!(
            p[0].contains("2 failed writes") && p[0].contains("disk on fire"),
            "{p:?}"
        );
        assert!(h.is_failing());
        h.write_ok();
        assert!(h.problems().is_empty());
        assert!(!h.is_failing());
        h.set_writer_dead();
        assert_eq!(h.problems(), vec!["the database writer has stopped"]);
    }
}
