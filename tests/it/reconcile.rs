//! The reconciler against the fake cloud, through the real API and store.

use crate::world::{LISTENER, World, reconciler_config};
use axum::http::StatusCode;
use spotpool::cloud::{CloudErrorKind, CommandStatus, tags};
use spotpool::model::{InstanceStatus, UserState};

const SECRET_BODY: &str = r#"{"secrets":{"OPENAI_API_KEY":"sk-test-value-123"}}"#;

#[tokio::test]
async fn the_pool_fills_to_the_spare_count() {
    let world = World::new(2, 10).await;
    world.run_until_quiet(20).await;
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 2);
    assert_eq!(world.cloud.live_instances().len(), 2);
    for instance in world.cloud.live_instances() {
        assert_eq!(
            instance.tags.get(tags::STATUS).map(String::as_str),
            Some("available")
        );
        assert_eq!(
            instance.tags.get(tags::POOL).map(String::as_str),
            Some("spotpool")
        );
        assert_eq!(
            instance.tags.get(tags::NAME).map(String::as_str),
            Some("openclaw-user-instance")
        );
    }
    // Launches were spread across both subnets.
    let subnets: std::collections::HashSet<String> = world
        .cloud
        .live_instances()
        .into_iter()
        .map(|i| i.subnet_id)
        .collect();
    assert_eq!(subnets.len(), 2);
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn claims_become_ready_with_tags_route_and_secret_and_the_pool_refills() {
    let world = World::new(2, 10).await;
    world.run_until_quiet(20).await;
    for user in ["alice", "bob", "carol"] {
        let (status, doc) = world.put_user(user, SECRET_BODY).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{doc}");
        assert_eq!(doc["state"], "queued");
    }
    world.run_until_quiet(30).await;

    let mut instances = std::collections::HashSet::new();
    for user in ["alice", "bob", "carol"] {
        let (status, doc) = world.get_user(user).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(doc["state"], "ready", "{doc}");
        let instance_id = doc["instance_id"].as_str().unwrap().to_string();
        assert!(
            instances.insert(instance_id.clone()),
            "two users on {instance_id}"
        );
        let route = doc["route"].as_str().unwrap();
        assert_eq!(doc["url"], format!("https://agents.example.com/{route}/"));

        let instance = world
            .cloud
            .live_instances()
            .into_iter()
            .find(|i| i.id.0 == instance_id)
            .unwrap();
        assert_eq!(
            instance.tags.get(tags::STATUS).map(String::as_str),
            Some("assigned")
        );
        assert_eq!(
            instance.tags.get(tags::USER_ID).map(String::as_str),
            Some(user)
        );

        // The target group the pre-wired spare brought, recorded in the user's row.
        let row = world.user_row(user).await;
        let group_arn = row.routing.target_group_arn.clone().unwrap();
        let group = world
            .cloud
            .target_groups()
            .into_iter()
            .find(|g| g.arn == group_arn)
            .unwrap();
        assert_eq!(group.name, format!("sp-warm-{}", &instance_id[2..]));
        assert_eq!(
            group
                .targets
                .iter()
                .map(|t| t.0.as_str())
                .collect::<Vec<_>>(),
            [instance_id.as_str()]
        );
        assert_eq!(
            group.tags.get(tags::USER_ID).map(String::as_str),
            Some(user)
        );
        let rule = world
            .cloud
            .rules()
            .into_iter()
            .find(|r| r.target_group_arn == group.arn)
            .unwrap();
        assert_eq!(
            rule.condition,
            spotpool::model::RuleMatch::Path(format!("/{route}/*"))
        );
        assert_eq!(rule.listener_arn, LISTENER);

        let (_, secret) = world
            .cloud
            .secrets()
            .into_iter()
            .find(|(name, _)| name == &format!("openclaw/{user}"))
            .unwrap();
        assert_eq!(secret.value, r#"{"OPENAI_API_KEY":"sk-test-value-123"}"#);
        assert!(
            secret
                .tags
                .get(tags::INSTANCE_ARN)
                .unwrap()
                .ends_with(&instance_id)
        );
    }
    // The start command names the secret by ARN and never carries its value.
    for command in world.cloud.commands() {
        assert!(!command.script.contains("sk-test-value-123"));
    }
    assert_eq!(
        world.ledger_count(InstanceStatus::Available).await,
        2,
        "pool refilled"
    );
    assert_eq!(world.ledger_count(InstanceStatus::Assigned).await, 3);
    // Listener priorities are distinct: the users' three rules and the two spares' warm ones.
    let priorities: std::collections::HashSet<u32> =
        world.cloud.rules().iter().map(|r| r.priority).collect();
    assert_eq!(world.cloud.rules().len(), 5);
    assert_eq!(priorities.len(), 5);
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_second_put_returns_the_same_instance_and_does_no_new_work() {
    let world = World::new(1, 10).await;
    let first = world.ready_user("alice", SECRET_BODY).await;

    world.cloud.clear_calls();
    let (status, second) = world.put_user("alice", "{}").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["instance_id"], first["instance_id"]);
    assert_eq!(second["route"], first["route"]);
    world.run_until_quiet(10).await;
    // Only reads: the passes' listing and the health watch's.
    let calls = world.cloud.calls();
    assert!(
        calls
            .iter()
            .all(|c| matches!(*c, "DescribeInstances" | "DescribeTargetHealth")),
        "unexpected calls: {calls:?}"
    );
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn with_no_spare_users_queue_and_are_served_first_come_first_served() {
    // One instance at most: the second and third users must wait their turn.
    let world = World::new(1, 1).await;
    world.run_until_quiet(20).await;
    for user in ["first", "second", "third"] {
        let (status, doc) = world.put_user(user, "{}").await;
        assert_eq!(status, StatusCode::ACCEPTED, "never sold out: {doc}");
        world.advance(10);
    }
    world.run_until_quiet(30).await;
    assert_eq!(world.user_state("first").await, Some(UserState::Ready));
    assert_eq!(world.user_state("second").await, Some(UserState::Queued));
    assert_eq!(world.user_state("third").await, Some(UserState::Queued));

    world.delete_user("first").await;
    world.run_until_quiet(30).await;
    assert_eq!(world.user_state("first").await, None);
    assert_eq!(world.user_state("second").await, Some(UserState::Ready));
    assert_eq!(world.user_state("third").await, Some(UserState::Queued));
    assert!(world.cloud.live_instances().len() <= 1);
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn delete_removes_rule_target_group_instance_and_secret() {
    let world = World::new(1, 10).await;
    let doc = world.ready_user("alice", SECRET_BODY).await;
    let instance = doc["instance_id"].as_str().unwrap().to_string();

    let (status, doc) = world.delete_user("alice").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(doc["state"], "deleting");
    world.run_until_quiet(30).await;

    assert_eq!(world.get_user("alice").await.0, StatusCode::NOT_FOUND);
    assert_eq!(world.delete_user("alice").await.0, StatusCode::NOT_FOUND);
    // What is left on the load balancer is the spare's warm route.
    let spare = world.ledger_ids(InstanceStatus::Available).await;
    assert_eq!(spare.len(), 1);
    let warm = format!("/_warm/{}", spare[0]);
    assert!(
        world
            .cloud
            .rules()
            .iter()
            .all(|r| r.condition.value() == warm),
        "{:?}",
        world.cloud.rules()
    );
    assert_eq!(world.cloud.rules().len(), 1);
    let groups: Vec<String> = world
        .cloud
        .target_groups()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(groups, [format!("sp-warm-{}", &spare[0][2..])]);
    assert!(world.cloud.secrets().is_empty());
    assert!(
        world
            .cloud
            .live_instances()
            .iter()
            .all(|i| i.id.0 != instance)
    );
    world.assert_no_leaks().await;
}

/// A world whose spares are pre-wired, or not (the claim makes the user's route).
async fn world_with_prewiring(spares: u32, max: u32, prewired: bool) -> World {
    let mut config = reconciler_config(spares, max);
    config.prewired_spares = prewired;
    World::with_config(config).await
}

/// The claim steps and the cloud operation each depends on, without pre-wired spares (the
/// claim makes the route) and with them (the claim switches the spare's rule).
const CLAIM_OPERATIONS: &[(bool, &str)] = &[
    (false, "CreateTags"),
    (false, "TagResource"),
    (false, "SendCommand"),
    (false, "GetCommandInvocation"),
    (false, "CreateTargetGroup"),
    (false, "RegisterTargets"),
    (false, "DescribeRules"),
    (false, "CreateRule"),
    (true, "CreateTags"),
    (true, "TagResource"),
    (true, "SendCommand"),
    (true, "GetCommandInvocation"),
    (true, "ModifyRule"),
    (true, "DescribeTargetHealth"),
];

#[tokio::test]
async fn a_failure_at_any_claim_step_rolls_back_and_retries_on_another_instance() {
    for (prewired, operation) in CLAIM_OPERATIONS {
        let world = world_with_prewiring(2, 10, *prewired).await;
        world.run_until_quiet(20).await;
        world.cloud.fail_next(operation, CloudErrorKind::Fatal, 1);
        world.put_user("alice", SECRET_BODY).await;
        world.run_until_quiet(40).await;
        let (_, doc) = world.get_user("alice").await;
        assert_eq!(
            doc["state"], "ready",
            "after one {operation} failure (pre-wired: {prewired}): {doc}"
        );
        let user = world.user_row("alice").await;
        assert_eq!(user.attempts, 1, "{operation} (pre-wired: {prewired})");
        world.assert_no_leaks().await;
    }
}

#[tokio::test]
async fn a_step_that_keeps_failing_ends_failed_with_the_cause_and_no_leaks() {
    // (SendCommand and GetCommandInvocation also serve the readiness probe, so failing them for
    // good stops the pool itself; a failing container has its own test below.)
    let cases = [
        (false, "CreateTargetGroup"),
        (false, "RegisterTargets"),
        (false, "CreateRule"),
        (true, "ModifyRule"),
    ];
    for (prewired, operation) in cases {
        let world = world_with_prewiring(1, 10, prewired).await;
        world.run_until_quiet(20).await;
        world
            .cloud
            .fail_always(operation, Some(CloudErrorKind::Fatal));
        world.put_user("alice", SECRET_BODY).await;
        world.run_until_quiet(60).await;
        let (_, doc) = world.get_user("alice").await;
        assert_eq!(doc["state"], "failed", "{operation}: {doc}");
        let error = doc["error"].as_str().unwrap();
        assert!(error.contains(operation), "{operation}: {error}");
        assert!(!error.contains("sk-test-value-123"));
        world.cloud.fail_always(operation, None);
        world.run_until_quiet(20).await;
        world.assert_no_leaks().await;
        // The secret is kept for a retry; a new PUT tries again and succeeds.
        let (status, _) = world.put_user("alice", "{}").await;
        assert_eq!(status, StatusCode::ACCEPTED);
        world.run_until_quiet(40).await;
        assert_eq!(
            world.user_state("alice").await,
            Some(UserState::Ready),
            "{operation}"
        );
        world.assert_no_leaks().await;
    }
}

#[tokio::test]
async fn a_container_that_fails_to_start_burns_its_instances_and_fails_the_user() {
    let world = World::new(1, 10).await;
    world.run_until_quiet(20).await;
    world.cloud.command_outcome(
        "start the user's container",
        CommandStatus::Failed("health check failed".into()),
    );
    world.put_user("alice", SECRET_BODY).await;
    world.run_until_quiet(80).await;
    let (_, doc) = world.get_user("alice").await;
    assert_eq!(doc["state"], "failed", "{doc}");
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("health check failed")
    );
    // Each of the three attempts ran the container, so each instance was terminated, not reused.
    let terminated_by_rollback = world
        .store
        .journal_since(0, 1000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "rollback.instance_terminated")
        .count();
    assert_eq!(terminated_by_rollback, 3);
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_clean_instance_goes_back_to_the_pool_after_a_rollback() {
    // At most one instance: no replacement spare is launched (whose probe's SendCommand would
    // take the injected failure before the claim's start does).
    let world = World::new(1, 1).await;
    world.run_until_quiet(20).await;
    let spare = world.cloud.live_instances()[0].id.clone();
    world
        .cloud
        .fail_next("SendCommand", CloudErrorKind::Fatal, 1);
    world.put_user("alice", SECRET_BODY).await;
    world.run_until_quiet(40).await;
    let journal = world.store.journal_since(0, 1000).await.unwrap();
    assert!(
        journal
            .iter()
            .any(|e| e.kind == "rollback.instance_returned"
                && e.instance_id.as_deref() == Some(spare.0.as_str())),
        "{:?}",
        journal
            .iter()
            .map(|e| format!("{} {:?} {}", e.kind, e.instance_id, e.message))
            .collect::<Vec<_>>()
    );
    assert_eq!(world.user_state("alice").await, Some(UserState::Ready));
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_restart_mid_claim_over_the_same_store_finishes_without_duplicates() {
    let world = World::on_disk(2, 10).await;
    world.run_until_quiet(20).await;
    world.put_user("alice", SECRET_BODY).await;
    // One pass: assigned, tagged, command sent; then the daemon "crashes".
    world.pass().await;
    let user = world.user_row("alice").await;
    assert_eq!(user.state, UserState::Provisioning);

    let restarted = world.restart().await;
    restarted.run_until_quiet(30).await;
    assert_eq!(restarted.user_state("alice").await, Some(UserState::Ready));
    assert_eq!(
        restarted.cloud.live_instances().len(),
        3,
        "one assigned plus two spares"
    );
    // Two spares at first (one call per subnet) and one replacement: nothing launched twice,
    // nothing terminated.
    assert_eq!(restarted.cloud.count_calls("RunInstances"), 3);
    assert_eq!(restarted.cloud.count_calls("TerminateInstances"), 0);
    restarted.assert_no_leaks().await;
}

#[tokio::test]
async fn a_fresh_store_adopts_the_pool_it_finds_instead_of_duplicating_it() {
    let world = World::new(2, 10).await;
    world.run_until_quiet(20).await;
    let cloud = world.cloud.clone();
    let launches = cloud.count_calls("RunInstances");

    // A new daemon with an empty database over the same account.
    let store = spotpool::store::Store::open("sqlite::memory:")
        .await
        .unwrap();
    let fresh = World::from_parts(store, cloud.clone(), 2, 10);
    fresh.run_until_quiet(20).await;
    assert_eq!(
        cloud.count_calls("RunInstances"),
        launches,
        "adopted, not relaunched"
    );
    assert_eq!(fresh.ledger_count(InstanceStatus::Available).await, 2);
    fresh.assert_no_leaks().await;
}

#[tokio::test]
async fn a_user_whose_instance_vanishes_is_moved_keeping_route_and_secret() {
    let world = World::new(1, 10).await;
    let before = world.ready_user("alice", SECRET_BODY).await;
    let old = spotpool::model::InstanceId(before["instance_id"].as_str().unwrap().into());

    world.cloud.reclaim(&old);
    world.run_until_quiet(40).await;
    let (_, after) = world.get_user("alice").await;
    assert_eq!(after["state"], "ready", "{after}");
    assert_ne!(after["instance_id"], before["instance_id"]);
    assert_eq!(after["route"], before["route"]);
    let secrets = world.cloud.secrets();
    assert_eq!(secrets.len(), 1);
    assert!(
        secrets[0].1.tags[tags::INSTANCE_ARN].ends_with(after["instance_id"].as_str().unwrap())
    );
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_probe_that_keeps_failing_gets_the_instance_replaced_within_the_maximum() {
    let world = World::new(2, 3).await;
    world.cloud.command_outcome(
        "readiness probe",
        CommandStatus::Failed("docker is not running".into()),
    );
    for _ in 0..30 {
        world.pass().await;
        world.advance(30_000);
        assert!(world.cloud.live_instances().len() <= 3, "over the maximum");
    }
    let journal = world.store.journal_since(0, 10_000).await.unwrap();
    assert!(journal.iter().any(|e| e.kind == "instance.probe_failed"));
    let timeouts = journal
        .iter()
        .filter(|e| e.kind == "instance.terminating" && e.message == "probe_timeout")
        .count();
    assert!(timeouts >= 2, "stale instances were replaced: {timeouts}");
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 0);
}

#[tokio::test]
async fn failed_pool_instances_never_leak_under_transient_errors() {
    let world = World::new(2, 10).await;
    for operation in [
        "RunInstances",
        "CreateTags",
        "SendCommand",
        "TerminateInstances",
    ] {
        world
            .cloud
            .fail_next(operation, CloudErrorKind::Transient, 2);
    }
    world.run_until_quiet(40).await;
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 2);
    world.assert_no_leaks().await;
}

// --- regressions from the first review ---------------------------------------------------------

#[tokio::test]
async fn an_instance_that_may_have_received_the_start_command_is_never_reused() {
    let world = World::new(1, 10).await;
    world.run_until_quiet(20).await;
    // The SendCommand response is lost (a timeout): the container may or may not be starting.
    world
        .cloud
        .fail_next("SendCommand", CloudErrorKind::Transient, 1);
    world.put_user("alice", SECRET_BODY).await;
    world.pass().await;
    let row = world.user_row("alice").await;
    let instance = row.instance_id.clone().unwrap();
    assert!(
        row.claim
            .as_ref()
            .and_then(|c| c.command.as_ref())
            .is_some(),
        "marked dirty before sending"
    );
    // The user is deleted before the claim finishes.
    world.delete_user("alice").await;
    world.run_until_quiet(30).await;
    let journal = world.store.journal_since(0, 1000).await.unwrap();
    assert!(
        journal
            .iter()
            .any(|e| e.kind == "release.instance_terminated"
                && e.instance_id.as_deref() == Some(instance.0.as_str()))
    );
    assert!(
        world
            .cloud
            .live_instances()
            .iter()
            .all(|i| i.id != instance)
    );
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_rollback_whose_secret_untag_fails_still_finishes() {
    // (Without pre-wired spares: the claim makes the target group.)
    let world = world_with_prewiring(2, 10, false).await;
    world.run_until_quiet(20).await;
    world
        .cloud
        .fail_always("UntagResource", Some(CloudErrorKind::Fatal));
    world
        .cloud
        .fail_next("CreateTargetGroup", CloudErrorKind::Fatal, 1);
    world.put_user("alice", SECRET_BODY).await;
    world.run_until_quiet(40).await;
    let row = world.user_row("alice").await;
    assert_eq!(row.state, UserState::Ready);
    assert_eq!(row.attempts, 1);
    assert_eq!(row.teardown, None);
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_clean_rollback_retries_on_another_instance_and_reprobes_the_first() {
    let world = World::new(2, 10).await;
    world.run_until_quiet(20).await;
    world
        .cloud
        .fail_next("SendCommand", CloudErrorKind::NotFound, 1);
    world.put_user("alice", SECRET_BODY).await;
    world.run_until_quiet(40).await;
    let journal = world.store.journal_since(0, 1000).await.unwrap();
    let claimed: Vec<&str> = journal
        .iter()
        .filter(|e| e.kind == "claim.assigned")
        .filter_map(|e| e.instance_id.as_deref())
        .collect();
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    assert_ne!(claimed[0], claimed[1], "retried on the same instance");
    // The first instance was probed again before going back to the spares.
    let returned = claimed[0];
    let reprobed = journal
        .iter()
        .filter(|e| e.kind == "instance.available" && e.instance_id.as_deref() == Some(returned))
        .count();
    assert_eq!(reprobed, 2);
    assert_eq!(world.user_state("alice").await, Some(UserState::Ready));
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn one_incomplete_listing_does_not_move_a_user() {
    let world = World::new(1, 10).await;
    let before = world.ready_user("alice", SECRET_BODY).await;
    let instance = spotpool::model::InstanceId(before["instance_id"].as_str().unwrap().into());
    world.cloud.hide_from_next_describe(&instance);
    world.run_until_quiet(10).await;
    let (_, after) = world.get_user("alice").await;
    assert_eq!(after["instance_id"], before["instance_id"]);
    assert_eq!(after["state"], "ready");
    let journal = world.store.journal_since(0, 1000).await.unwrap();
    assert!(!journal.iter().any(|e| e.kind.starts_with("recover.")));
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn rotating_secrets_of_a_user_whose_secret_is_gone_is_a_409_and_creates_nothing() {
    use spotpool::cloud::Cloud;
    let world = World::new(1, 10).await;
    world.ready_user("alice", SECRET_BODY).await;
    // A release deleted the secret between the PUT's read of the row and its write.
    let arn = world.cloud.secrets()[0].1.arn.clone();
    world.cloud.delete_secret(&arn).await.unwrap();
    let (status, body) = world
        .put_user("alice", r#"{"secrets":{"OPENAI_API_KEY":"sk-rotated"}}"#)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "user_deleting");
    assert!(world.cloud.secrets().is_empty(), "no secret re-created");
}

// --- concurrency (issue 4) ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_puts_and_some_deletes_give_each_user_exactly_one_instance() {
    use std::sync::Arc;
    // 500 users need six load balancers' worth of routes.
    let mut config = crate::world::reconciler_config(2, 600);
    config.policy.shards = crate::world::shards(6, 100);
    let world = Arc::new(World::on_disk_with(config).await);
    world.run_until_quiet(20).await;

    // 500 users, each PUT twice, interleaved; every 5th user is also deleted concurrently.
    let mut requests = Vec::new();
    for round in 0..2 {
        for n in 0..500 {
            let putter = world.clone();
            requests.push(tokio::spawn(async move {
                let (status, body) = putter.put_user(&format!("user-{n}"), "{}").await;
                assert!(
                    [200, 202, 409].contains(&status.as_u16()),
                    "PUT user-{n} round {round}: {status} {body}"
                );
            }));
            if round == 1 && n % 5 == 0 {
                let deleter = world.clone();
                requests.push(tokio::spawn(async move {
                    let (status, body) = deleter.delete_user(&format!("user-{n}")).await;
                    assert!(
                        [202, 404].contains(&status.as_u16()),
                        "DELETE user-{n}: {status} {body}"
                    );
                }));
            }
        }
    }
    // The reconciler runs alongside the requests.
    let passes = {
        let world = world.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                world.pass().await;
            }
        })
    };
    for request in requests {
        request.await.unwrap();
    }
    passes.await.unwrap();
    world.run_until_quiet(200).await;

    let users = world.store.list_users().await.unwrap();
    assert!(users.len() >= 400, "{} users remain", users.len());
    let mut instances = std::collections::HashSet::new();
    for user in &users {
        assert_eq!(
            user.state,
            UserState::Ready,
            "{} is {:?}",
            user.user_id,
            user.state
        );
        let instance = user
            .instance_id
            .clone()
            .expect("a ready user has an instance");
        assert!(
            instances.insert(instance.clone()),
            "{instance} serves two users"
        );
    }
    // Deleted users are gone (a DELETE that raced ahead of both PUTs may have been a 404, and
    // then the user legitimately remains).
    world.assert_no_leaks().await;
    assert!(world.cloud.live_instances().len() <= 600);
}

// --- capacity fallback and failure limits (issue 4) ----------------------------------------

#[tokio::test]
async fn a_zone_without_capacity_is_skipped_and_the_pool_fills_from_the_other() {
    let world = World::new(4, 10).await;
    world.cloud.fail_capacity("t3.small", "subnet-a");
    world.run_until_quiet(30).await;
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 4);
    assert!(
        world
            .cloud
            .live_instances()
            .iter()
            .all(|i| i.subnet_id == "subnet-b")
    );
    let journal = world.store.journal_since(0, 1000).await.unwrap();
    let marked = journal
        .iter()
        .filter(|e| e.kind == "pool.capacity_unavailable")
        .count();
    assert_eq!(
        marked, 1,
        "one capacity error, then the offering is skipped"
    );
    assert_eq!(
        world.cloud.count_calls("RunInstances"),
        3,
        "the failed call plus one per retry"
    );
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_tier_whose_launches_keep_failing_backs_off_and_then_stops() {
    let world = World::new(2, 10).await;
    world
        .cloud
        .fail_always("RunInstances", Some(CloudErrorKind::Fatal));
    let mut calls_over_time = Vec::new();
    for _ in 0..40 {
        world.pass().await;
        world.advance(60_000);
        calls_over_time.push(world.cloud.count_calls("RunInstances"));
    }
    let journal = world.store.journal_since(0, 10_000).await.unwrap();
    assert!(journal.iter().any(|e| e.kind == "pool.launch_backoff"));
    let halted: Vec<_> = journal
        .iter()
        .filter(|e| e.kind == "pool.launch_halted")
        .collect();
    assert_eq!(halted.len(), 1, "halted once");
    // After the halt, no further launch is attempted however long we wait.
    let at_halt = calls_over_time[calls_over_time.len() / 2];
    assert_eq!(
        *calls_over_time.last().unwrap(),
        at_halt,
        "{calls_over_time:?}"
    );
    // Each pass launches into both subnets, so the limit (5 in the test config) is reached
    // within a few passes and far fewer than 40 passes' worth of calls were made.
    assert!(at_halt <= 10, "{calls_over_time:?}");
}

#[tokio::test]
async fn a_lost_launch_response_is_redone_with_the_same_token_and_never_over_launches() {
    let world = World::new(2, 10).await;
    world.cloud.lose_next_response("RunInstances");
    // The first pass launches into both subnets; one response is lost after EC2 started the
    // instance. The next passes redo that launch with its ClientToken instead of launching anew.
    world.pass().await;
    assert_eq!(world.cloud.live_instances().len(), 2);
    let pending = world.store.list_launches().await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let token = pending[0].client_token.clone();
    world.run_until_quiet(20).await;
    assert_eq!(
        world.cloud.live_instances().len(),
        2,
        "exactly the spare count was ever started"
    );
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 2);
    assert!(world.store.list_launches().await.unwrap().is_empty());
    assert_eq!(
        world
            .cloud
            .launch_tokens()
            .iter()
            .filter(|t| **t == token)
            .count(),
        2,
        "the redo reused the lost call's token"
    );
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_throttled_pass_backs_off_doubling_and_a_clean_pass_resets_it() {
    use spotpool::reconcile::{Outcome, throttle_backoff};
    let world = World::new(2, 10).await;
    let poll = world.config.poll_interval;
    world
        .cloud
        .fail_always("RunInstances", Some(CloudErrorKind::Throttled));
    assert_eq!(
        world.pass().await,
        Outcome::Requeue(throttle_backoff(poll, 1))
    );
    assert_eq!(
        world.pass().await,
        Outcome::Requeue(throttle_backoff(poll, 2))
    );
    assert!(throttle_backoff(poll, 2) > throttle_backoff(poll, 1));
    assert_eq!(
        throttle_backoff(poll, 30),
        std::time::Duration::from_secs(60)
    );
    world.cloud.fail_always("RunInstances", None);
    assert_eq!(world.pass().await, Outcome::Requeue(poll));
    world.run_until_quiet(20).await;
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 2);
    world.assert_no_leaks().await;
}

// --- a burst of claims (issue 11, point 5) -------------------------------------------------

#[tokio::test]
async fn a_burst_of_claims_takes_distinct_rule_priorities_without_rereading_the_listener() {
    let world = World::new(40, 80).await;
    world.run_until_quiet(50).await;
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 40);
    let users: Vec<String> = (0..40).map(|i| format!("burst-{i}")).collect();
    for user in &users {
        let (status, body) = world.put_user(user, r#"{"secrets":{"K":"v"}}"#).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    world.cloud.clear_calls();
    // Every claim of the burst runs in the same passes; none waits a pass for a priority that
    // another claim of its pass took (before: 27 passes for 50 claims, 7-9 DescribeRules each).
    let mut passes = 0;
    loop {
        world.pass().await;
        passes += 1;
        let mut ready = 0;
        for user in &users {
            ready += usize::from(world.user_state(user).await == Some(UserState::Ready));
        }
        if ready == users.len() {
            break;
        }
        assert!(passes < 4, "{ready} of 40 ready after {passes} passes");
    }
    assert!(
        world.cloud.count_calls("DescribeRules") <= passes,
        "the listener is read once per pass at most: {} reads in {passes} passes",
        world.cloud.count_calls("DescribeRules")
    );
    let mut priorities = std::collections::BTreeSet::new();
    for user in &users {
        let row = world.user_row(user).await;
        assert!(priorities.insert(row.routing.rule_priority.expect("a priority")));
    }
    assert_eq!(priorities.len(), 40);
    world.assert_no_leaks().await;
}

// --- probes that wait for the agent (issue 13) ------------------------------------------------

#[tokio::test]
async fn a_probe_waits_until_ssm_lists_the_agent_online() {
    let world = World::new(1, 10).await;
    world.pass().await; // launches
    let instance = world.cloud.live_instances()[0].id.clone();
    world.cloud.set_agent_online(&instance, false);
    for _ in 0..20 {
        world.pass().await;
        world.advance(4_000);
    }
    assert_eq!(
        world.cloud.count_calls("SendCommand"),
        0,
        "no probe to an offline agent"
    );
    assert!(world.cloud.count_calls("DescribeInstanceInformation") >= 20);
    assert_eq!(world.ledger_count(InstanceStatus::Initializing).await, 1);

    world.cloud.set_agent_online(&instance, true);
    world.run_until_quiet(10).await;
    assert_eq!(
        world.cloud.count_calls("SendCommand"),
        1,
        "one probe, once online"
    );
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 1);
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn when_ssm_cannot_say_probes_back_off_and_ssm_is_asked_again_an_hour_later() {
    let world = World::new(1, 10).await;
    world.cloud.set_agents_unknown(true);
    world.pass().await; // launches
    let instance = world.cloud.live_instances()[0].id.clone();
    world.cloud.set_agent_online(&instance, false);
    // 100 s of passes a second apart: every 5 s (`probe_retry`) would be 20 probes.
    for _ in 0..100 {
        world.pass().await;
    }
    let sends = world.cloud.count_calls("SendCommand");
    assert!((3..=10).contains(&sends), "{sends} probes in 100 s");
    assert_eq!(
        world.cloud.count_calls("DescribeInstanceInformation"),
        1,
        "\"cannot say\" is remembered"
    );
    world.cloud.set_agent_online(&instance, true);
    world.advance(40_000);
    world.run_until_quiet(10).await;
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 1);

    // An hour later SSM is asked again, and its answer used.
    world.cloud.set_agents_unknown(false);
    world.advance(3_600_000);
    world.put_user("alice", SECRET_BODY).await;
    world.run_until_quiet(40).await;
    assert!(world.cloud.count_calls("DescribeInstanceInformation") >= 2);
    world.assert_no_leaks().await;
}
