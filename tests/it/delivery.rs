//! The delivery worker in-process, against a real webhook receiver on loopback and a real
//! SQLite file: its clock can be made to jump (`Clock::shift`), and its steps driven one at
//! a time (`Worker::step`).

use crate::harness::{T, wait_for};
use crate::support::receiver::Receiver;
use recwatch::config::Config;
use recwatch::deliver::{Clock, Worker};
use recwatch::outbox::{ApiHealthChange, Outbox};
use recwatch::store::Store;
use sqlx::Row;
use tokio::sync::watch;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    config: Config,
    outbox: Outbox,
}

/// A config with one webhook, `hook`, at `receiver`, and `notify` (e.g. max_age) in [notify].
async fn setup(receiver: &Receiver, notify: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let text = format!(
        r#"
[api]
endpoint = "http://127.0.0.1:9"
[api.auth]
token = "test-token"

[storage]
path = "{}"

[notify]
{notify}

[[notify.webhook]]
name = "hook"
url = "{}"
secret = "{SECRET}"
timeout = "10s"
"#,
        dir.path().join("recwatch.db").display(),
        receiver.url()
    );
    std::fs::write(&path, text).unwrap();
    let config = recwatch::config::load_with_env(&path, std::iter::empty()).unwrap();
    let store = Store::open(&config.storage.path).await.unwrap();
    Setup {
        _dir: dir,
        store,
        config,
        outbox: Outbox::new(),
    }
}

impl Setup {
    /// Opens an api_unhealthy episode: a firing alert, pending on every channel.
    async fn fire(&self) {
        let down = ApiHealthChange::Unhealthy {
            reason: "connection refused".into(),
        };
        self.outbox
            .api_health(&self.store, down, &self.config)
            .await
            .unwrap();
    }

    /// Resolves it: the resolved notice of the same episode.
    async fn resolve(&self) {
        let up = ApiHealthChange::Recovered;
        self.outbox
            .api_health(&self.store, up, &self.config)
            .await
            .unwrap();
    }

    fn worker(&self, clock: &Clock) -> Worker {
        Worker::new(self.store.clone(), &self.config, self.outbox.wake_handle())
            .unwrap()
            .with_clock(clock.clone())
    }

    /// Every delivery as (alert status, state, attempts), oldest alert first.
    async fn deliveries(&self) -> Vec<(String, String, i64)> {
        sqlx::query(
            "SELECT a.status, d.state, d.attempts FROM deliveries d JOIN alerts a ON a.id = d.alert_id
             ORDER BY a.rowid",
        )
        .fetch_all(self.store.db().reader())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    }
}

fn row(status: &str, state: &str, attempts: i64) -> (String, String, i64) {
    (status.into(), state.into(), attempts)
}

/// The statuses of the alerts the receiver accepted, in arrival order.
fn accepted(r: &Receiver) -> Vec<String> {
    r.received()
        .iter()
        .map(|d| d.alert.status.as_str().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_notice_is_not_sent_while_its_firing_is_still_being_retried() {
    let hook = Receiver::start(Some(SECRET)).await;
    let s = setup(&hook, "max_backoff = \"300ms\"").await;
    hook.fail_next(1, 503);
    s.fire().await;
    s.resolve().await;
    let clock = Clock::system();
    let mut worker = s.worker(&clock);

    // The firing is tried and refused; its resolved notice, due as well, is held back.
    assert_eq!(worker.step().await.unwrap(), 1);
    assert_eq!(hook.attempts().len(), 1);
    assert_eq!(
        s.deliveries().await,
        [row("firing", "pending", 1), row("resolved", "pending", 0)]
    );
    // Once the firing's retry is due (the clock moved on a minute), it goes first, alone...
    clock.shift(chrono::Duration::minutes(1));
    assert_eq!(worker.step().await.unwrap(), 1);
    assert_eq!(accepted(&hook), ["firing"]);
    // ...and then the resolved notice.
    assert_eq!(worker.step().await.unwrap(), 1);
    assert_eq!(accepted(&hook), ["firing", "resolved"]);
    assert_eq!(
        s.deliveries().await,
        [row("firing", "sent", 2), row("resolved", "sent", 1)]
    );
    assert_eq!(worker.step().await.unwrap(), 0, "nothing left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_jump_forward_past_max_age_kills_no_delivery() {
    let hook = Receiver::start(Some(SECRET)).await;
    let s = setup(&hook, "max_age = \"24h\"\nmax_backoff = \"1s\"").await;
    hook.fail_next(2, 503);
    s.fire().await;
    let clock = Clock::system();
    let mut worker = s.worker(&clock);

    assert_eq!(worker.step().await.unwrap(), 1);
    assert_eq!(s.deliveries().await, [row("firing", "pending", 1)]);
    // 25 h forward: by the wall clock the delivery is now older than max_age, and its retry
    // is due at once. It fails again, and is retried, not buried.
    clock.shift(chrono::Duration::hours(25));
    assert_eq!(worker.step().await.unwrap(), 1);
    assert_eq!(hook.attempts().len(), 2);
    assert_eq!(s.deliveries().await, [row("firing", "pending", 2)]);
    // Its retry falls due (within its back-off of at most 1 s) and goes through.
    let worker = tokio::sync::Mutex::new(worker);
    wait_for("the retry after the jump to fall due", T, || async {
        (worker.lock().await.step().await.unwrap() > 0).then_some(())
    })
    .await;
    assert_eq!(accepted(&hook), ["firing"]);
    assert_eq!(s.deliveries().await, [row("firing", "sent", 3)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_jump_back_a_day_does_not_stall_a_due_retry() {
    let hook = Receiver::start(Some(SECRET)).await;
    // A long max_backoff: a retry rescheduled only by the cap (now + max_backoff) would wait
    // an hour; it must keep its own back-off (5 s for a first failure).
    let s = setup(&hook, "max_age = \"24h\"\nmax_backoff = \"1h\"").await;
    hook.fail_next(1, 503);
    let clock = Clock::system();
    let worker = s.worker(&clock);
    let (stop, stopped) = watch::channel(false);
    let (_reload, reloads) = watch::channel(std::sync::Arc::new(s.config.clone()));
    let running = tokio::spawn(worker.run(stopped, reloads));

    s.fire().await;
    wait_for(
        "the first attempt to be refused and recorded",
        T,
        || async { (s.deliveries().await == [row("firing", "pending", 1)]).then_some(()) },
    )
    .await;
    // A day back: by the wall clock the retry is now a day away.
    clock.shift(chrono::Duration::days(-1));
    hook.wait_for(1, T).await;
    wait_for("the delivery to be recorded as sent", T, || async {
        (s.deliveries().await == [row("firing", "sent", 2)]).then_some(())
    })
    .await;

    // And a jump forward does not stall or kill anything either: a new alert goes at once.
    clock.shift(chrono::Duration::days(2));
    s.resolve().await;
    hook.wait_for(2, T).await;
    assert_eq!(accepted(&hook), ["firing", "resolved"]);
    stop.send(true).unwrap();
    tokio::time::timeout(T, running)
        .await
        .expect("the worker stops")
        .unwrap();
}
