//! Account quotas on the fake cloud (which enforces the spot vCPU quota as EC2 does): a launch a
//! quota refuses holds the tier back with a visible cause instead of failing it, queued users say
//! why they wait, a raised quota lets them through; and the start-up check names tier maxima the
//! quota cannot hold.

use crate::world::{ADMIN_TOKEN, API_TOKEN, World};
use axum::http::StatusCode;
use spotpool::model::UserState;
use spotpool::model::quota::{Quota, SpotFamily};

const STANDARD: Quota = Quota::SpotVcpus(SpotFamily::Standard);

async fn pool(world: &World) -> serde_json::Value {
    let (status, pool) = world.request("GET", "/v1/pool", Some(API_TOKEN), "").await;
    assert_eq!(status, StatusCode::OK, "{pool}");
    pool
}

#[tokio::test]
async fn a_spot_quota_used_up_queues_users_with_the_cause_and_a_raise_lets_them_through() {
    let world = World::new(0, 10).await;
    // Room for two t3.small (2 vCPUs each) and no more.
    world.cloud.set_quota(STANDARD, 4.0);
    for user in ["ann", "bob", "cyd"] {
        let (status, body) = world.put_user(user, r#"{"secrets":{"K":"v"}}"#).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    // Many passes, minutes apart: far more launch attempts than the tier's failure limit (5).
    for _ in 0..30 {
        world.pass().await;
        world.advance(60_000);
    }
    let mut states: Vec<UserState> = Vec::new();
    for user in ["ann", "bob", "cyd"] {
        states.push(world.user_state(user).await.expect("the user exists"));
    }
    let ready = states.iter().filter(|s| **s == UserState::Ready).count();
    assert_eq!(ready, 2, "two users fit the quota: {states:?}");
    let waiting = ["ann", "bob", "cyd"]
        .into_iter()
        .zip(&states)
        .find(|(_, s)| **s == UserState::Queued)
        .map(|(u, _)| u)
        .expect("one user waits");
    assert_eq!(world.cloud.live_instances().len(), 2);

    // The waiting user and the pool say why.
    let (_, doc) = world.get_user(waiting).await;
    assert_eq!(doc["waiting_for"], "quota_exceeded", "{doc}");
    let (_, ready_doc) = world.get_user("ann").await;
    if ready_doc["state"] == "ready" {
        assert!(ready_doc["waiting_for"].is_null(), "{ready_doc}");
    }
    let blocked = &pool(&world).await["tiers"][0]["launch_blocked"];
    assert_eq!(blocked["cause"], "quota_exceeded", "{blocked}");
    let detail = blocked["detail"].as_str().unwrap();
    assert!(detail.contains("MaxSpotInstanceCountExceeded"), "{detail}");
    // A quota is not the tier's failure: it never halts, and every refusal is journalled.
    let journal = world.store.journal_since(0, 10_000).await.unwrap();
    assert!(journal.iter().all(|e| e.kind != "pool.launch_halted"));
    let refusals = journal
        .iter()
        .filter(|e| e.kind == "pool.quota_exceeded")
        .count();
    assert!(refusals >= 2, "retried after capacity_ttl: {refusals}");
    // Held back between tries: not a RunInstances every pass.
    assert!(
        world.cloud.count_calls("RunInstances") < 2 + 30,
        "{}",
        world.cloud.count_calls("RunInstances")
    );

    // The quota is raised: the next try goes through, the cause is gone.
    world.cloud.set_quota(STANDARD, 100.0);
    world.advance(10 * 60_000);
    for _ in 0..15 {
        world.pass().await;
    }
    assert_eq!(world.user_state(waiting).await, Some(UserState::Ready));
    let (_, doc) = world.get_user(waiting).await;
    assert!(doc["waiting_for"].is_null(), "{doc}");
    assert!(pool(&world).await["tiers"][0]["launch_blocked"].is_null());
    assert!(world.store.tier_conditions().await.unwrap().is_empty());
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn tier_maxima_the_spot_quota_cannot_hold_are_named_and_on_calls_resize_counts() {
    let world = World::new(0, 10).await;
    // Unread quotas (a region or emulator without them) judge nothing.
    let report = world.reconciler.check_quotas().await.unwrap();
    assert!(report.shortfalls.is_empty(), "{:?}", report.shortfalls);

    world.cloud.set_quota(STANDARD, 8.0);
    // The gauges the alert rules read (this test's thread records them).
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let guard = metrics::set_default_local_recorder(&recorder);
    let report = world.reconciler.check_quotas().await.unwrap();
    drop(guard);
    let text = metrics.render();
    for line in [
        r#"spotpool_quota_limit{quota="spot_vcpus_standard"} 8"#,
        r#"spotpool_quota_needed{quota="spot_vcpus_standard"} 20"#,
        r#"spotpool_quota_usage{quota="spot_vcpus_standard"} 0"#,
        r#"spotpool_quota_headroom{quota="spot_vcpus_standard"} 8"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from:\n{text}"
        );
    }
    assert_eq!(report.limits.get(&STANDARD), Some(&8.0));
    assert_eq!(report.shortfalls.len(), 1, "{:?}", report.shortfalls);
    let message = &report.shortfalls[0];
    for part in [
        "need 20 spot vCPUs",
        "L-34B43A08",
        "quota in this region is 8",
        "tier default max 10 of t3.small",
        "POOL_MAX_INSTANCES",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }

    // On-call cannot raise the maximum beyond the quota either: refused with the numbers, and
    // nothing stored.
    let (status, body) = world
        .request(
            "PUT",
            "/v1/admin/pool/default",
            Some(ADMIN_TOKEN),
            r#"{"max_instances":5}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
    assert!(body.to_string().contains("need 10 spot vCPUs"), "{body}");
    assert!(world.store.tier_overrides().await.unwrap().is_empty());

    // A change that leaves the maximum as it is asks AWS nothing.
    let reads = world.cloud.count_calls("GetServiceQuota");
    let (status, body) = world
        .request(
            "PUT",
            "/v1/admin/pool/default",
            Some(ADMIN_TOKEN),
            r#"{"spare_count":1}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(world.cloud.count_calls("GetServiceQuota"), reads);

    // On-call lowers the tier's maximum: the effective tiers fit.
    let (status, body) = world
        .request(
            "PUT",
            "/v1/admin/pool/default",
            Some(ADMIN_TOKEN),
            r#"{"max_instances":4}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let report = world.reconciler.check_quotas().await.unwrap();
    assert!(report.shortfalls.is_empty(), "{:?}", report.shortfalls);
}
