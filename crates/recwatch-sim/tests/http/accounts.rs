//! Several accounts behind one gateway: each its own rate limit, lockout and project, found
//! by the access key a request is signed with; one account's key revoked while the others go
//! on.

use crate::harness::*;
use recwatch_sim::{AccountState, SimAccount, SimAuth, SimOptions};
use std::time::Duration;

const AK_B: &str = "AKREGIONB";
const SK_B: &str = "sk-region-b";

/// `default` (AK/SK, project-1, 10/s) and `region-b` (its own key, project-b, 10/s).
fn two_accounts() -> SimOptions {
    SimOptions {
        auth: SimAuth::AkSk {
            access_key: AK.into(),
            secret_key: SK.into(),
        },
        project_id: Some("project-1".into()),
        rate_limit: Some(10),
        accounts: vec![SimAccount::new("region-b", AK_B, SK_B, "project-b")],
        ..static_opts()
    }
}

const DEFAULT: Key = Key {
    access_key: AK,
    secret_key: SK,
    project: "project-1",
    security_token: None,
};

const REGION_B: Key = Key {
    access_key: AK_B,
    secret_key: SK_B,
    project: "project-b",
    security_token: None,
};

// Paused clock: every request below arrives in one instant of the simulator's clock, however
// slow the machine, so each account's window holds all of its requests.
#[tokio::test(start_paused = true)]
async fn two_accounts_are_limited_apart() {
    let sim = spawn(two_accounts()).await;
    let c = paused_client();
    let mut statuses = (Vec::new(), Vec::new());
    // Interleaved: neither account's requests use up the other's budget.
    for _ in 0..12 {
        let a = get_as(&c, &sim, "job-0000", &DEFAULT, &[]).await;
        statuses.0.push(a.status().as_u16());
        let b = get_as(&c, &sim, "job-0001", &REGION_B, &[]).await;
        statuses.1.push(b.status().as_u16());
    }
    let want: Vec<u16> = [[200; 10].as_slice(), &[429, 429]].concat();
    assert_eq!(statuses.0, want, "default");
    assert_eq!(statuses.1, want, "region-b");
    let (status, code, message) =
        error_body(get_as(&c, &sim, "job-0001", &REGION_B, &[]).await).await;
    assert_eq!((status, code.as_str()), (429, "APIG.0308"));
    assert!(message.contains("limit:10,time:1 second"), "{message}");

    let stats = sim.stats();
    assert_eq!(stats.max_per_sliding_second, 25, "the whole gateway");
    let (a, b) = (&stats.by_account["default"], &stats.by_account["region-b"]);
    assert_eq!(
        (a.requests, a.max_per_sliding_second, a.throttled),
        (12, 12, 2)
    );
    assert_eq!(
        (b.requests, b.max_per_sliding_second, b.throttled),
        (13, 13, 3)
    );
    assert_eq!((a.temporary, b.temporary, a.refused_auth), (0, 0, 0));

    // A second later both budgets are whole again.
    tokio::time::advance(Duration::from_secs(1)).await;
    for key in [&DEFAULT, &REGION_B] {
        assert_eq!(get_as(&c, &sim, "job-0002", key, &[]).await.status(), 200);
    }
}

#[tokio::test]
async fn each_account_has_its_own_project_and_lockout() {
    let sim = spawn(SimOptions {
        lockout_after: 1,
        ..two_accounts()
    })
    .await;
    let c = client();
    // Region b's key with the default's project: a right signature, the wrong project.
    let other_project = Key {
        project: "project-1",
        ..REGION_B
    };
    let (status, code, _) =
        error_body(get_as(&c, &sim, "job-0000", &other_project, &[]).await).await;
    assert_eq!((status, code.as_str()), (403, "APIG.0302"));

    let wrong_secret = Key {
        secret_key: "not-b's",
        ..REGION_B
    };
    for _ in 0..2 {
        assert_eq!(
            get_as(&c, &sim, "job-0000", &wrong_secret, &[])
                .await
                .status(),
            401
        );
    }
    let (status, _, message) = error_body(get_as(&c, &sim, "job-0000", &REGION_B, &[]).await).await;
    assert_eq!(status, 401);
    assert!(message.contains("locked"), "{message}");
    assert_eq!(
        get_as(&c, &sim, "job-0000", &DEFAULT, &[]).await.status(),
        200,
        "the default account's key is not locked"
    );

    // A key no account has is refused, and locks nobody however often it is tried.
    let stranger = Key {
        access_key: "AKNOBODY",
        ..DEFAULT
    };
    for _ in 0..3 {
        let (status, code, message) =
            error_body(get_as(&c, &sim, "job-0000", &stranger, &[]).await).await;
        assert_eq!((status, code.as_str()), (401, "APIG.0301"));
        assert!(message.contains("does not exist"), "{message}");
    }
    assert_eq!(
        get_as(&c, &sim, "job-0000", &DEFAULT, &[]).await.status(),
        200
    );

    let stats = sim.stats();
    assert_eq!(stats.by_account["region-b"].refused_auth, 4);
    assert_eq!(stats.by_account["default"].refused_auth, 0);
    assert_eq!(
        stats.refused_auth, 7,
        "the stranger's three are in the totals"
    );
    assert_eq!(stats.by_account.len(), 2, "and in no account's");
}

#[tokio::test]
async fn a_revoked_key_is_refused_while_the_other_account_answers() {
    let sim = spawn(SimOptions {
        lockout_after: 1,
        ..two_accounts()
    })
    .await;
    let c = client();
    let base = sim.url();
    let post = |path: String| c.post(format!("{base}{path}")).send();
    assert_eq!(
        get_as(&c, &sim, "job-0000", &REGION_B, &[]).await.status(),
        200
    );

    let revoked = post("/_sim/accounts/region-b/revoke".into()).await.unwrap();
    assert_eq!(revoked.status(), 204);
    // More refusals than lockout_after: a key that is gone is not locked as well.
    for _ in 0..3 {
        let (status, code, message) =
            error_body(get_as(&c, &sim, "job-0000", &REGION_B, &[]).await).await;
        assert_eq!((status, code.as_str()), (401, "APIG.0301"));
        assert!(
            message.contains("the access key does not exist"),
            "{message}"
        );
        assert_eq!(
            get_as(&c, &sim, "job-0000", &DEFAULT, &[]).await.status(),
            200
        );
    }
    let accounts: Vec<AccountState> = c
        .get(format!("{base}/_sim/accounts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(accounts, sim.accounts(), "the HTTP view is the same");
    let listed: Vec<_> = accounts
        .iter()
        .map(|a| (a.name.as_str(), a.access_key.as_deref(), a.revoked))
        .collect();
    assert_eq!(
        listed,
        [("default", Some(AK), false), ("region-b", Some(AK_B), true)]
    );
    let body = c.get(format!("{base}/_sim/accounts")).send().await.unwrap();
    let text = body.text().await.unwrap();
    assert!(
        !text.contains(SK_B) && !text.contains(SK),
        "no secret: {text}"
    );

    let restored = post("/_sim/accounts/region-b/restore".into())
        .await
        .unwrap();
    assert_eq!(restored.status(), 204);
    assert_eq!(
        get_as(&c, &sim, "job-0000", &REGION_B, &[]).await.status(),
        200
    );

    let missing = post("/_sim/accounts/region-c/revoke".into()).await.unwrap();
    assert_eq!(missing.status(), 404);
    let text = missing.text().await.unwrap();
    assert!(
        text.contains("\"region-c\"") && text.contains("\"default\", \"region-b\""),
        "{text}"
    );
    assert!(!sim.revoke_key("region-c"));
    assert_eq!(sim.stats().by_account["region-b"].refused_auth, 3);
}
