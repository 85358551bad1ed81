//! Issue 23, item 1: each watched job's key and configuration are one allocation each,
//! shared by every map the dispatcher keeps (its states, `watched`, the schedule) and by the
//! configuration and run-time list they come from, at start and after the list changes.

use super::super::batch::Touches;
use super::{Dispatcher, Key, Poller};
use crate::domain::{JobKey, JobKind, JobSource, RuntimeJob};
use crate::outbox::Outbox;
use crate::runtime_list::RuntimeList;
use crate::store::Store;
use recwatch_rtc::client::RtcClient;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

fn config(jobs: usize) -> crate::config::Config {
    let mut text = String::from(
        "[api]\nproject_id = \"0a1b2c3d4e5f67890a1b2c3d4e5f6789\"\n[api.auth]\naccess_key = \"AK\"\nsecret_key = \"SK\"\n",
    );
    for i in 0..jobs {
        text.push_str(&format!(
            "[[jobs]]\napp_id = \"app\"\njob_id = \"file-{i}\"\n"
        ));
    }
    crate::config::parse_str(&text, Vec::<(String, String)>::new(), None).unwrap()
}

fn list(ids: &[&str]) -> Arc<RuntimeList> {
    Arc::new(RuntimeList::of(ids.iter().map(|id| runtime_job(id))))
}

fn runtime_job(id: &str) -> RuntimeJob {
    RuntimeJob {
        account: None,
        key: JobKey::new("app", id),
        name: None,
        kind: JobKind::Individual,
        notify: None,
        source: JobSource::Api,
        added_at: "2026-12-07T00:00:00.000Z".parse().unwrap(),
    }
}

/// Every key the dispatcher holds for a job is the allocation `watched` holds, and every
/// state's configuration is `watched`'s.
fn assert_shared(d: &Dispatcher, when: &str) {
    let watched = &d.poller.watched;
    let one = |k: &Key, holder: &str| {
        let (shared, _) = watched
            .get_key_value(k)
            .unwrap_or_else(|| panic!("{when}: {k} in {holder} is watched"));
        assert!(JobKey::same(k, shared), "{when}: {k} in {holder}: a copy");
    };
    for (k, s) in &d.states {
        one(k, "states");
        assert!(
            Arc::ptr_eq(&s.job, &watched[k]),
            "{when}: {k}'s configuration"
        );
    }
    // A job that left keeps its entries until they come due (skipped as stale).
    let mut entries = 0;
    for k in d.schedule.keys().filter(|k| d.states.contains_key(*k)) {
        one(k, "the schedule");
        entries += 1;
    }
    assert!(entries >= d.states.len(), "{when}: every job scheduled");
}

/// Every run-time job the dispatcher polls (the file's entry wins a shared key) is polled with
/// the list's own configuration: one representation of a run-time job, not a `JobConfig` made
/// from the list's entry at each merge; and its ids are held once, the list's key being the
/// configuration's own and the one the dispatcher's maps hold.
fn assert_list_shared(d: &Dispatcher, list: &RuntimeList, when: &str) {
    let in_file = |k: &Key| k.job_id.starts_with("file-");
    let mut runtime = 0;
    for (k, listed) in list.jobs.iter().filter(|(k, _)| !in_file(k)) {
        let (polled, state) = d
            .states
            .get_key_value(k)
            .unwrap_or_else(|| panic!("{when}: {k} polled"));
        assert!(
            Arc::ptr_eq(&state.job, &listed.job),
            "{when}: {k}'s configuration is a copy of the list's"
        );
        assert!(
            JobKey::same(&listed.job.key, k) && JobKey::same(polled, k),
            "{when}: {k}'s ids are held more than once"
        );
        runtime += 1;
    }
    assert!(runtime > 0, "{when}: run-time jobs checked");
}

#[tokio::test]
async fn one_allocation_per_key_and_configuration_across_the_maps() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("recwatch.db")).await.unwrap();
    let published = Arc::new(config(3));
    let client = RtcClient::new(&published.api.client_config()).unwrap();
    let mut poller = Poller::new(published.clone(), client, store, Outbox::new());
    let first = list(&["api-0", "api-2", "file-1"]);
    let (tx, rx) = watch::channel(first.clone());
    poller.follow_watchlist(rx);
    let (done_tx, _done_rx) = mpsc::unbounded_channel();
    let mut d = Dispatcher::new(poller, Arc::new(Touches::default()), done_tx);
    d.arm(&[]).await.unwrap();
    assert_eq!(
        d.states.len(),
        5,
        "three from the file, two of the list's own"
    );
    assert_shared(&d, "at start");
    assert_list_shared(&d, &first, "at start");
    for j in &published.jobs {
        let k = super::key(j);
        assert!(
            JobKey::same(&k, &j.key),
            "{k}: a job's key is its configuration's own, not a new one per look-up"
        );
        assert!(
            Arc::ptr_eq(&d.poller.watched[&k], j),
            "{k}: the published configuration's own allocation"
        );
    }

    // The list changes as `Watchlist::add` and `remove` change it (the published map copied,
    // one entry in, one out): a job joins, one leaves. The jobs that stay keep their
    // allocations; the joiner's key is the list's own.
    let before: Vec<Key> = d.states.keys().cloned().collect();
    let mut changed = (*first).clone();
    changed.jobs.remove(&JobKey::new("app", "api-0"));
    let joiner = runtime_job("api-1");
    changed
        .jobs
        .insert(joiner.key.clone(), crate::runtime_list::Listed::new(joiner));
    let next = Arc::new(changed);
    tx.send(next.clone()).unwrap();
    d.watchlist_changed().await;
    assert_eq!(d.states.len(), 5);
    assert_shared(&d, "after a change of the list");
    assert_list_shared(&d, &next, "after a change of the list");
    let stayed = JobKey::new("app", "api-2");
    assert!(
        Arc::ptr_eq(&d.states[&stayed].job, &first.jobs[&stayed].job),
        "a run-time job that stayed kept its configuration's allocation"
    );
    for k in &before {
        if let Some((now, _)) = d.states.get_key_value(k) {
            assert!(JobKey::same(k, now), "{k} kept its key");
        }
    }
    let (listed, _) = next
        .jobs
        .get_key_value(&JobKey::new("app", "api-1"))
        .unwrap();
    let (polled, _) = d.states.get_key_value(listed).unwrap();
    assert!(
        JobKey::same(listed, polled),
        "the joiner's key is the list's"
    );

    // Once the change is applied the poller holds no copy of the published list, so the
    // next commit of discoveries changes it in place (`Arc::make_mut`) instead of copying
    // every entry (issue 23, item 1); the poller reads the list it let go of as published.
    drop(next);
    assert_eq!(
        Arc::strong_count(&tx.borrow()),
        1,
        "the published list is held by the channel alone"
    );
    let origin = d.poller.runtime.origin(&JobKey::new("app", "api-1"));
    assert_eq!(origin.group, crate::config::JobGroup::Runtime);
    let origin = d.poller.runtime.origin(&JobKey::new("app", "file-1"));
    assert_eq!(
        origin.group,
        crate::config::JobGroup::Configured,
        "the file wins"
    );
}
