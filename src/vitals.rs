//! Whether the daemon can do its job, and containing what would stop it.
//!
//! A panic in one poll, one write or one delivery must not stop the rest: [`contain`] turns a
//! panicking future into an error for its caller, who reports it and goes on. [`Vitals`]
//! gathers what `/readyz` and the systemd watchdog need: the poll loop's heartbeat, whether
//! the database can be written (from [`crate::store::StoreHealth`]), and whether a task that
//! must always run has died. `/readyz` reports everything that keeps recwatch from doing its
//! job; the watchdog is withheld only for what a restart cures (a stalled loop, a dead task),
//! not for outside faults such as a full disk, which recwatch waits out while it keeps
//! polling (a restart would lose what it holds in memory and free no space).

mod db_probe;

pub use db_probe::{DbProbe, PROBE_WAIT};

use crate::store::StoreHealth;
use futures_util::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The poll loop beats every second; this much silence makes `/readyz` say it is stalled.
pub const STALLED_AFTER_MS: u64 = 5_000;

/// When the poller's dispatcher last went round its loop: it beats, the watchdog and /readyz
/// read. Here rather than in the poller so that what reads it needs no poller.
#[derive(Default)]
pub struct Liveness {
    last_tick_ms: AtomicU64,
}

impl Liveness {
    pub fn beat(&self) {
        self.last_tick_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Milliseconds since the last beat (u64::MAX if never).
    pub fn age_ms(&self) -> u64 {
        match self.last_tick_ms.load(Ordering::Relaxed) {
            0 => u64::MAX,
            t => now_ms().saturating_sub(t),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Runs `fut`; a panic inside it becomes `Err` with the panic's message. Whatever the future
/// held is dropped during the unwind (a transaction is rolled back, a permit returned).
pub async fn contain<T>(fut: impl Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(|p| panic_message(p.as_ref()))
}

/// The message a panic was raised with.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// Logs every panic through `tracing` too, with where it happened, so it lands in the same
/// log (and format) as everything else; the code that contains it logs which job it hit. The
/// previous hook still runs (it prints to stderr, and test harnesses rely on it).
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            tracing::error!(
                location = %location,
                "panic: {}",
                panic_message(info.payload())
            );
            previous(info);
        }));
    });
}

/// What `/readyz` and the watchdog look at.
pub struct Vitals {
    pub liveness: Arc<Liveness>,
    pub store: Arc<StoreHealth>,
    /// Whether the database answers, asked without waiting for it (see [`DbProbe`]).
    pub db: DbProbe,
    /// Tasks that must always run and have stopped (their supervisor gave up or died).
    dead: Mutex<Vec<&'static str>>,
    /// Whether this instance is the active one (see `leader`): a standby runs no poll loop,
    /// so its silence is neither a problem nor a reason to restart.
    leading: AtomicBool,
    /// Why the leadership lease cannot be read or renewed now, if it cannot.
    lease_problem: Mutex<Option<String>>,
    /// The lease's epoch as this instance last saw it (`recwatch_leader_epoch`).
    lease_epoch: AtomicI64,
}

impl Vitals {
    pub fn new(liveness: Arc<Liveness>, store: Arc<StoreHealth>) -> Vitals {
        Vitals {
            liveness,
            store,
            db: DbProbe::default(),
            dead: Mutex::new(Vec::new()),
            leading: AtomicBool::new(true),
            lease_problem: Mutex::new(None),
            lease_epoch: AtomicI64::new(0),
        }
    }

    pub fn set_lease_epoch(&self, epoch: i64) {
        self.lease_epoch.store(epoch, Ordering::Relaxed);
    }

    pub fn lease_epoch(&self) -> i64 {
        self.lease_epoch.load(Ordering::Relaxed)
    }

    /// Set by the leadership loop as this instance takes over or steps down.
    pub fn set_leading(&self, leading: bool) {
        if leading && !self.leading.load(Ordering::Relaxed) {
            // The poll loop starts now: its silence as a standby is not a stall.
            self.liveness.beat();
        }
        self.leading.store(leading, Ordering::Relaxed);
    }

    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    pub fn set_lease_problem(&self, problem: Option<String>) {
        *self.lease_problem.lock().unwrap_or_else(|e| e.into_inner()) = problem;
    }

    pub fn task_died(&self, name: &'static str) {
        tracing::error!(
            task = name,
            "a task recwatch needs has stopped; systemd's watchdog will restart recwatch"
        );
        self.dead
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name);
    }

    fn dead_tasks(&self) -> Vec<&'static str> {
        let mut dead = self.dead.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if self.store.writer_dead() {
            dead.push("database writer");
        }
        dead
    }

    /// Everything that keeps the daemon from doing its job now; empty when it is ready.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let age = self.liveness.age_ms();
        if self.is_leading() && age > STALLED_AFTER_MS {
            out.push(if age == u64::MAX {
                "the poll loop has not started".to_string()
            } else {
                format!("the poll loop is stalled (silent for {} s)", age / 1000)
            });
        }
        for task in self.dead_tasks() {
            out.push(format!("the {task} has stopped"));
        }
        out.extend(
            self.lease_problem
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        );
        out.extend(self.store.problems());
        out
    }

    /// Whether a restart would help: the poll loop is stuck or a task is dead. False for
    /// outside faults (disk full, read-only, a deleted file), which a restart does not cure.
    pub fn restart_would_help(&self, loop_limit_ms: u64) -> bool {
        (self.is_leading() && self.liveness.age_ms() >= loop_limit_ms)
            || !self.dead_tasks().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_error_with_its_message() {
        let ok = contain(async { 7 }).await;
        assert_eq!(ok, Ok(7));
        let n = 3;
        let s = contain(async move {
            if n == 3 {
                panic!("boom {n}");
            }
        })
        .await;
        assert_eq!(s, Err("boom 3".to_string()));
        let s = contain(async { std::panic::panic_any(42u8) }).await;
        assert_eq!(s, Err("(a panic without a message)".to_string()));
    }

    #[test]
    fn readiness_and_the_watchdog_table() {
        let liveness = Arc::new(Liveness::default());
        let store = Arc::new(StoreHealth::default());
        let v = Vitals::new(liveness.clone(), store.clone());
        assert_eq!(v.problems(), vec!["the poll loop has not started"]);
        assert!(v.restart_would_help(15_000));
        liveness.beat();
        assert!(v.problems().is_empty());
        assert!(!v.restart_would_help(15_000));
        // An outside fault: not ready, but no restart.
        store.set_file_problem(Some("the database file x was deleted".into()));
        assert_eq!(v.problems(), vec!["the database file x was deleted"]);
        assert!(!v.restart_would_help(15_000));
        store.set_file_problem(None);
        // A dead task: not ready, and a restart helps.
        v.task_died("delivery worker");
        assert_eq!(v.problems(), vec!["the delivery worker has stopped"]);
        assert!(v.restart_would_help(15_000));
    }

    /// A standby runs no poll loop: its silence is no problem and no reason to restart; a
    /// lease that cannot be renewed is a problem; taking over counts the loop as just started.
    #[test]
    fn a_standby_is_ready_without_a_poll_loop() {
        let liveness = Arc::new(Liveness::default());
        let v = Vitals::new(liveness.clone(), Arc::new(StoreHealth::default()));
        v.set_leading(false);
        assert!(v.problems().is_empty(), "{:?}", v.problems());
        assert!(!v.restart_would_help(15_000));
        v.set_lease_problem(Some(
            "the leadership lease cannot be read or renewed: x".into(),
        ));
        assert_eq!(
            v.problems(),
            vec!["the leadership lease cannot be read or renewed: x"]
        );
        v.set_lease_problem(None);
        v.set_leading(true);
        assert!(v.problems().is_empty(), "taking over is not a stall");
        assert!(v.is_leading());
    }
}
