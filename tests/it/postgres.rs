//! The tests' own PostgreSQL (src/store/test_pg.rs, shared with the store's unit tests): a
//! server a test stops and starts again under a store that stays open, as the HA tests need
//! ("the database restarted under a running pair").

use crate::test_pg::PgServer;
use recwatch::domain::{JobSource, RuntimeJob};
use recwatch::secret::Secret;
use recwatch::store::{Store, StoreError};
use std::time::Duration;

fn job(id: &str) -> RuntimeJob {
    RuntimeJob {
        key: recwatch::domain::JobKey::new("app", id),
        name: None,
        kind: Default::default(),
        notify: None,
        source: JobSource::parse("cli"),
        added_at: "2026-01-01T00:00:00.000Z".into(),
    }
}

/// A write while the server is down fails as the database refusing (not a statement's own
/// fault), and once it is back the same store writes again, with nothing lost from before.
#[tokio::test]
async fn a_store_outlives_its_server_being_stopped_and_started_again() {
    let mut server = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    let url = server.fresh_database().await;
    let store = Store::open_postgres(&Secret::new(url)).await.unwrap();
    assert!(store.watch_job(&job("before")).await.unwrap());
    let version = store.watchlist_version().await.unwrap();

    let mut server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    let refused = store.watch_job(&job("while-down")).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::Unwritable(_)),
        "a server gone is the database refusing: {refused:?}"
    );

    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    // The pools reconnect by themselves; the first attempts may still meet dead connections.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match store.watch_job(&job("after")).await {
            Ok(added) => {
                assert!(added);
                break;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert!(e.is_database_wide(), "{e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the store did not write again after the restart: {e:?}"),
        }
    }
    let keys: Vec<String> = store
        .watched_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.key.job_id)
        .collect();
    assert_eq!(keys, ["after", "before"]);
    assert_eq!(store.watchlist_version().await.unwrap(), version + 1);
    drop(server);
}

/// Two processes starting on a new database at once: sqlx's migrator takes an advisory lock,
/// so both open it, the schema is made once, and each sees it whole.
#[tokio::test]
async fn two_stores_migrating_one_new_database_at_once_both_open_it() {
    let url = crate::test_pg::fresh_database().await;
    let url = Secret::new(url);
    let (a, b) = tokio::join!(Store::open_postgres(&url), Store::open_postgres(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.watch_job(&job("x")).await.unwrap());
    assert!(
        !b.watch_job(&job("x")).await.unwrap(),
        "one table, seen by both"
    );
    let version = b.server_version().await.unwrap().unwrap();
    assert!(version.starts_with(char::is_numeric), "{version}");
}
