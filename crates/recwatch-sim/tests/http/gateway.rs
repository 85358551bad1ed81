//! The gateway's checks over raw HTTP: signatures, the AK lockout, tokens, the rate limit.

use crate::harness::*;
use chrono::Utc;
use recwatch_rtc::model::JobSnapshot;
use recwatch_sim::{SimAuth, SimOptions};
use std::time::Duration;

#[tokio::test]
async fn signatures_are_verified() {
    let sim = spawn(aksk_opts()).await;
    let c = client();
    let now = Utc::now();
    assert_eq!(
        signed_get(&c, &sim, "job-0000", SK, now).await.status(),
        200
    );

    let (status, code, message) =
        error_body(signed_get(&c, &sim, "job-0000", "wrong", now).await).await;
    assert_eq!((status, code.as_str()), (401, "APIG.0301"));
    assert!(message.contains("signature"), "{message}");

    let stale = now - chrono::Duration::minutes(20);
    let (status, _, message) = error_body(signed_get(&c, &sim, "job-0000", SK, stale).await).await;
    assert_eq!(status, 401);
    assert!(message.contains("15 minutes"), "{message}");
    assert_eq!(
        signed_get(
            &c,
            &sim,
            "job-0000",
            SK,
            now - chrono::Duration::minutes(10)
        )
        .await
        .status(),
        200
    );

    assert_eq!(
        get(&sim, "job-0000").await.unwrap().status(),
        401,
        "unsigned"
    );

    // A `/` inside an id travels as %2F, is signed as the SDK does and decoded for lookup.
    sim.set_job(
        "demo-app",
        "cam/1",
        JobSnapshot {
            job_id: Some("cam/1".into()),
            ..JobSnapshot::default()
        },
    );
    let response = signed_get(&c, &sim, "cam/1", SK, now).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .json::<JobSnapshot>()
            .await
            .unwrap()
            .job_id
            .as_deref(),
        Some("cam/1")
    );
    assert_eq!(sim.stats().refused_auth, 3);
}

// Paused clock: the lock is still on however long the requests take, and ends exactly
// when the simulator's clock passes it.
#[tokio::test(start_paused = true)]
async fn repeated_failures_lock_the_access_key() {
    let lockout = Duration::from_secs(5 * 60);
    let sim = spawn(SimOptions {
        lockout_after: 2,
        lockout,
        ..aksk_opts()
    })
    .await;
    let c = paused_client();
    let now = Utc::now;
    // Failures must come in a row: a success in between starts the count again.
    for secret in ["bad", "bad", SK, "bad", "bad", SK] {
        let expected = if secret == SK { 200 } else { 401 };
        assert_eq!(
            signed_get(&c, &sim, "job-0000", secret, now())
                .await
                .status(),
            expected,
            "{secret}"
        );
    }
    for _ in 0..3 {
        assert_eq!(
            signed_get(&c, &sim, "job-0000", "bad", now())
                .await
                .status(),
            401
        );
    }
    let (status, code, message) =
        error_body(signed_get(&c, &sim, "job-0000", SK, now()).await).await;
    assert_eq!((status, code.as_str()), (401, "APIG.0301"));
    assert!(message.contains("locked"), "{message}");
    tokio::time::advance(lockout - Duration::from_millis(1)).await;
    assert_eq!(
        signed_get(&c, &sim, "job-0000", SK, now()).await.status(),
        401,
        "locked until the end"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        signed_get(&c, &sim, "job-0000", SK, now()).await.status(),
        200,
        "the lock ended"
    );
}

#[tokio::test]
async fn tokens_are_compared() {
    let sim = spawn(SimOptions {
        auth: SimAuth::Token("tok-1".into()),
        ..static_opts()
    })
    .await;
    let url = format!("{}{}", sim.url(), job_path("demo-app", "job-0000"));
    let with = |token: &'static str| client().get(&url).header("X-Auth-Token", token).send();
    assert_eq!(with("tok-1").await.unwrap().status(), 200);
    assert_eq!(with("tok-2").await.unwrap().status(), 401);
    assert_eq!(get(&sim, "job-0000").await.unwrap().status(), 401);
    assert_eq!(sim.stats().refused_auth, 2);
}

// Paused clock: the 8 requests fall in one second of the simulator's clock however slow
// the machine, and the next second is reached by advancing it.
#[tokio::test(start_paused = true)]
async fn rate_limit_answers_429_beyond_n_per_second() {
    let sim = spawn(SimOptions {
        rate_limit: Some(5),
        ..static_opts()
    })
    .await;
    let c = paused_client();
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..8 {
        let response = get_with(&c, &sim, "job-0000").await.unwrap();
        statuses.push(response.status().as_u16());
        last = Some(response);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let (_, code, message) = error_body(last.unwrap()).await;
    assert_eq!(code, "APIG.0308");
    assert_eq!(
        message,
        "The throttling threshold has been reached: policy user over ratelimit,limit:5,time:1 second"
    );
    let stats = sim.stats();
    assert_eq!((stats.throttled, stats.max_per_sliding_second), (3, 8));
    // Refused requests used up nothing: a second after the five, five more are let through.
    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(get_with(&c, &sim, "job-0000").await.unwrap().status(), 429);
    tokio::time::advance(Duration::from_millis(1)).await;
    for _ in 0..5 {
        assert_eq!(get_with(&c, &sim, "job-0000").await.unwrap().status(), 200);
    }
    assert_eq!(get_with(&c, &sim, "job-0000").await.unwrap().status(), 429);
}
