//! Everything that arrives at any instance goes through the database (issue 13): a callback,
//! a run-time job or a silence written into the database by another process (as another
//! instance's receiver, API or CLI would) is acted on by the running daemon. Each write here
//! goes through recwatch's own store functions on a second handle to the same database,
//! never through the daemon under test.

use crate::harness::*;
use crate::push::{Rig, event, metric};
use crate::silences::{received_jobs, wait_silenced};
use crate::support::receiver::Receiver;
use chrono::Utc;
use recwatch::domain::{JobKey, JobSource, RuntimeJob};
use recwatch::hold::domain::{Matchers, NewSilence, SilenceEnd};
use recwatch::store::Store;
use recwatch_rtc::callback::RecordEvent;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Stores `body` as a verified callback event of `demo-app`, as another instance's receiver
/// does after checking its signature.
async fn store_event(store: &Store, body: &str) {
    let event = RecordEvent::parse(body.as_bytes()).expect("a valid event");
    let digest = hex::encode(Sha256::digest(body.as_bytes()));
    let now = recwatch::domain::timestamp(Utc::now());
    store
        .callbacks()
        .insert("demo-app", &event, &digest, &now, None)
        .await
        .expect("stored");
}

/// A callback another instance stored (this daemon's receiver never saw it) gets the job
/// polled at once, although its interval is an hour; the hint is taken once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_another_instance_stored_hints_the_polling_one() {
    let mut rig = Rig::start(2, "1h", 10, "", "").await;
    let (job, other) = (recwatch_sim::job_id(0), recwatch_sim::job_id(1));
    // The first poll of the first job comes at once; the other's is spread into the hour.
    rig.wait_polls(&job, 1).await;
    let store = Store::open(&rig.app.db_path)
        .await
        .expect("a second handle");
    store_event(&store, &event(&job, "RECORD_NEW_FILE_START", "")).await;
    rig.wait_polls(&job, 2).await;
    wait_for("the hinted poll counted", T, || async {
        (metric(
            &rig.metrics().await,
            "recwatch_poll_hints_total{outcome=\"taken\"}",
        ) == 1.0)
            .then_some(())
    })
    .await;
    // The end of a job: polled again until it shows STOPPED, as for the daemon's own callbacks.
    set_state(&rig.sim, &other, "STOPPED", Some("INTERNAL_ERROR"));
    store_event(&store, &event(&other, "CLOUD_RECORD_SERVER_OVER", "")).await;
    wait_for("the job seen STOPPED", T, || async {
        (rig.app.job_row(&other).await?.0.as_deref() == Some("STOPPED")).then_some(())
    })
    .await;
    // One more event through the daemon's own receiver: hinted once more, not again for the
    // events already read.
    assert_eq!(
        rig.post("r-own", &event(&job, "RECORD_FILE_COMPLETE", ""))
            .await,
        200
    );
    rig.wait_polls(&job, 3).await;
    store.close().await;
    rig.app.stop().await;
}

/// A job another instance added to the run-time list is polled by this one within seconds,
/// and one it removed is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_another_instance_added_is_polled() {
    let sim = start_sim(static_sim(2)).await;
    let mut app = TestApp::new(&AppConfig::new(&sim, 1));
    app.start();
    app.wait_running(1).await;
    let store = Store::open(&app.db_path).await.expect("a second handle");
    let key = JobKey::new("demo-app", "job-0001");
    let added = store
        .watchlist()
        .add(&RuntimeJob {
            account: None,
            key: key.clone(),
            name: Some("from the standby".into()),
            kind: recwatch::domain::JobKind::Individual,
            notify: None,
            source: JobSource::Api,
            added_at: recwatch::domain::Timestamp::now(),
        })
        .await
        .expect("written");
    assert!(added);
    wait_for("the added job polled", T, || async {
        (polls_of(&sim, "job-0001") >= 1).then_some(())
    })
    .await;
    wait_for("the added job RUNNING in the database", T, || async {
        (app.job_row("job-0001").await?.0.as_deref() == Some("RUNNING")).then_some(())
    })
    .await;
    store.close().await;
    app.stop().await;
}

/// A silence another instance wrote holds this daemon's next notification of its job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_another_instance_added_holds_the_next_notification() {
    let sim = start_sim(static_sim(2)).await;
    let hook = Receiver::start(Some(SECRET)).await;
    let mut cfg = AppConfig::new(&sim, 2);
    cfg.extra = notify_toml(Some(hook.url().as_str()), None, "");
    let mut app = TestApp::spawn(&cfg, 2).await;
    let store = Store::open(&app.db_path).await.expect("a second handle");
    let now = Utc::now();
    let matchers = Matchers {
        app_id: None,
        job_id: Some("job-0000".into()),
        rule: None,
    };
    let new = NewSilence::new(
        matchers,
        None,
        SilenceEnd::For(Duration::from_secs(3600)),
        "written by the other instance",
        Some("test"),
        now,
    )
    .expect("a valid silence");
    let id = recwatch::hold::domain::silence_id();
    store.silences().add(&id, &new, now).await.expect("written");
    for job in ["job-0000", "job-0001"] {
        set_state(&sim, job, "STOPPED", Some("INTERNAL_ERROR"));
    }
    hook.wait_for(1, T).await;
    let held = wait_silenced(&app, "job-0000", 1).await;
    assert_eq!(held[0].silenced_by.as_deref(), Some(id.as_str()));
    assert_eq!(received_jobs(&hook), ["job-0001"]);
    store.close().await;
    app.stop().await;
}
