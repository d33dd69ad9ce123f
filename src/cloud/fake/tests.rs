//! The fake cloud's tests: simulated mode against its profile, on tokio's paused clock, and the
//! plain mode's immediacy.

use super::*;
use crate::cloud::limit::{Bucket, QuotaClass};
use crate::cloud::profile::{FaultRates, Latency, RetryModel};
use crate::cloud::{Cloud, LaunchRequest};
use std::sync::Arc;
use std::time::Duration;

fn launch(count: u32) -> LaunchRequest {
    LaunchRequest {
        tier: "default".into(),
        instance_type: "t3.small".into(),
        subnet_id: "subnet-a".into(),
        count,
        client_token: format!("token-{count}"),
        spot: true,
        launch_template: crate::model::LaunchTemplate::example(),
        blank_workspace: None,
    }
}

async fn lifecycle(cloud: &FakeCloud, id: &InstanceId) -> Option<Lifecycle> {
    cloud
        .describe_pool_instances()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.id == *id)
        .map(|i| i.lifecycle)
}

/// Effects take their time: pending, running, agent online (SendCommand refused and
/// DescribeInstanceInformation not listing it before), a command picked up and run,
/// InvocationDoesNotExist (Pending) right after SendCommand, shutting-down, then gone.
#[tokio::test(start_paused = true)]
async fn simulated_effects_complete_after_their_latencies() {
    let mut profile = Profile::aws();
    profile.effects.pending_to_running = Latency::seconds(25, 25);
    profile.effects.agent_online = Latency::seconds(20, 20);
    profile.effects.command_pickup = Latency::seconds(1, 1);
    profile.effects.container_start = Latency::seconds(2, 2);
    profile.effects.shutting_down = Latency::seconds(30, 30);
    let cloud = FakeCloud::simulated("spotpool", profile, 1);
    let start = tokio::time::Instant::now();
    let ids = cloud.launch_instances(&launch(1)).await.unwrap();
    assert!(
        start.elapsed() > Duration::ZERO,
        "the call took its latency"
    );
    let id = &ids[0];
    assert_eq!(lifecycle(&cloud, id).await, Some(Lifecycle::Pending));
    let launched = cloud.instance(id).unwrap().launched_at;

    tokio::time::sleep_until(start + Duration::from_secs(26)).await;
    assert_eq!(lifecycle(&cloud, id).await, Some(Lifecycle::Running));
    let early = cloud.send_command(id, "start container", "true", 60).await;
    assert_eq!(early.unwrap_err().kind, CloudErrorKind::NotFound);
    let online = cloud.agents_online(std::slice::from_ref(id)).await.unwrap();
    assert_eq!(
        online,
        Some(Default::default()),
        "running, agent not online yet"
    );

    tokio::time::sleep_until(start + Duration::from_secs(47)).await;
    let online = cloud.agents_online(std::slice::from_ref(id)).await.unwrap();
    assert_eq!(online, Some([id.clone()].into()), "the agent is online");
    let command = cloud
        .send_command(id, "start container", "true", 60)
        .await
        .unwrap();
    let sent = cloud.now();
    assert_eq!(
        cloud.command_status(&command, id).await.unwrap(),
        CommandStatus::Pending
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        cloud.command_status(&command, id).await.unwrap(),
        CommandStatus::Success
    );
    assert!(sent - launched >= 45_000, "{}", sent - launched);

    cloud
        .terminate_instances(std::slice::from_ref(id))
        .await
        .unwrap();
    assert_eq!(lifecycle(&cloud, id).await, Some(Lifecycle::ShuttingDown));
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(lifecycle(&cloud, id).await, None);
    let stats = cloud.sim_stats().unwrap();
    assert_eq!(stats.attempts, stats.calls, "no faults, no retries");
}

/// A simulated cloud whose rules take `rule_active` seconds to apply, with one running
/// instance registered in a new group `name` whose health checks are (interval, healthy
/// threshold).
async fn registered_target(
    name: &str,
    rule_active: u64,
    (interval_seconds, healthy_threshold): (u32, u32),
) -> (FakeCloud, InstanceId, String) {
    let mut profile = Profile::aws();
    profile.effects.pending_to_running = Latency::seconds(1, 1);
    profile.effects.rule_active = Latency::seconds(rule_active, rule_active);
    let cloud = FakeCloud::simulated("spotpool", profile, 7);
    let id = cloud.launch_instances(&launch(1)).await.unwrap().remove(0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let health = HealthCheck {
        path: "/healthz".into(),
        interval_seconds,
        timeout_seconds: 5,
        healthy_threshold,
        unhealthy_threshold: 2,
        codes: "200".into(),
    };
    let group = cloud
        .create_target_group(name, 8080, &health, &Tags::new())
        .await
        .unwrap();
    cloud.register_target(&group, &id, 8080).await.unwrap();
    (cloud, id, group)
}

/// A target turns healthy after its own group's interval × healthy threshold, and only once
/// a rule forwards to the group (before that it is `unused`, as on AWS).
#[tokio::test(start_paused = true)]
async fn a_target_turns_healthy_after_its_groups_health_check_settings() {
    let (cloud, id, group) = registered_target("sp-alice", 1, (10, 3)).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        !cloud.target_healthy(&group, &id, 8080).await.unwrap(),
        "no rule uses the group, so its target is unused"
    );

    cloud
        .create_rule(
            "listener",
            1,
            &crate::model::RuleMatch::Path("/alice/*".into()),
            &group,
            &Tags::new(),
        )
        .await
        .unwrap();
    let active_at = cloud.rules()[0].active_at;
    assert_eq!(
        cloud.routable_at("/alice/*"),
        Some(active_at + 30_000),
        "healthy 10 s × 3 after the rule starts forwarding"
    );
    let until_healthy = (active_at + 30_000 - cloud.now()) as u64;
    tokio::time::sleep(Duration::from_millis(until_healthy - 1_000)).await;
    assert!(!cloud.target_healthy(&group, &id, 8080).await.unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cloud.target_healthy(&group, &id, 8080).await.unwrap());
}

/// Switching a rule's conditions (a pre-wired spare's claim) changes where it routes, after the
/// rule's activation delay, but does not restart its group's health checks: the target stays
/// healthy.
#[tokio::test(start_paused = true)]
async fn a_rules_new_conditions_take_effect_later_but_keep_the_targets_health() {
    let (cloud, id, group) = registered_target("sp-warm-1", 2, (5, 2)).await;
    let warm = crate::model::RuleMatch::Path("/_warm/1".into());
    let rule = cloud
        .create_rule("listener", 1, &warm, &group, &Tags::new())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(cloud.target_healthy(&group, &id, 8080).await.unwrap());

    let user = crate::model::RuleMatch::Path("/alice/*".into());
    let before = cloud.now();
    cloud.set_rule_match(&rule, &user).await.unwrap();
    assert!(
        cloud.target_healthy(&group, &id, 8080).await.unwrap(),
        "still healthy right after the switch"
    );
    let active_at = cloud.rules()[0].active_at;
    assert!(
        active_at >= before + 2_000,
        "the switch takes the rule's activation delay"
    );
    assert_eq!(
        cloud.routable_at("/alice/*"),
        Some(active_at),
        "the new conditions route once the rule is active, the target healthy already"
    );
    assert_eq!(cloud.routable_at("/_warm/1"), None);
}

/// Every attempt draws from the account's bucket; an attempt that finds it short is throttled
/// and counted, and the bucket's minimum records how far short it was.
#[tokio::test(start_paused = true)]
async fn an_attempt_finding_its_bucket_short_is_a_quota_rejection() {
    let mut profile = Profile::aws().with_retry(RetryModel::standard(1));
    profile
        .quotas
        .insert(QuotaClass::Ec2Describe, Bucket::new(2, 0.001));
    let cloud = FakeCloud::simulated("spotpool", profile, 1);
    cloud.describe_pool_instances().await.unwrap();
    cloud.describe_pool_instances().await.unwrap();
    let error = cloud.describe_pool_instances().await.unwrap_err();
    assert_eq!(error.kind, CloudErrorKind::Throttled);
    assert_eq!(error.code, "RequestLimitExceeded");
    let stats = cloud.sim_stats().unwrap();
    assert_eq!(stats.quota_rejections[&QuotaClass::Ec2Describe], 1);
    assert!(stats.min_bucket_levels[&QuotaClass::Ec2Describe] < 0.0);
    assert_eq!(stats.min_bucket_levels[&QuotaClass::Ec2Mutate], 50.0);
}

/// The simulated SDK retries faults with backoff; a call fails only when every attempt of
/// its budget failed, and the request-path secret writes have the longer budget.
#[tokio::test(start_paused = true)]
async fn faults_are_retried_until_the_budget_runs_out() {
    let always = FaultRates {
        server_error: 0.0,
        throttle: 1.0,
    };
    let mut retry = RetryModel::daemon_defaults();
    retry.operation_timeout = None;
    let profile = Profile::aws().with_faults(always).with_retry(retry);
    let cloud = Arc::new(FakeCloud::simulated("spotpool", profile, 3));
    let error = cloud
        .tag_instance(&InstanceId("i-1".into()), &Tags::new())
        .await
        .unwrap_err();
    assert_eq!(error.kind, CloudErrorKind::Throttled);
    let stats = cloud.sim_stats().unwrap();
    assert_eq!((stats.calls, stats.attempts, stats.retries), (1, 4, 3));
    let error = cloud.update_secret("arn", "{}").await.unwrap_err();
    assert_eq!(error.kind, CloudErrorKind::Throttled);
    let stats = cloud.sim_stats().unwrap();
    assert_eq!((stats.calls, stats.attempts, stats.retries), (2, 12, 10));
    assert_eq!(stats.injected_throttles, 12);
    assert_eq!(stats.failed_calls["throttled"], 2);
    assert!(
        cloud.calls().is_empty(),
        "no attempt got through, so no call took effect"
    );

    // A 5xx half the time: calls succeed after retries, and the same seed replays the same
    // run.
    let flaky = FaultRates {
        server_error: 0.5,
        throttle: 0.0,
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let cloud = FakeCloud::simulated("spotpool", Profile::aws().with_faults(flaky), 9);
        let start = tokio::time::Instant::now();
        let mut outcomes = Vec::new();
        for _ in 0..20 {
            outcomes.push(cloud.describe_pool_instances().await.is_ok());
        }
        let stats = cloud.sim_stats().unwrap();
        assert!(stats.retries > 0 && stats.injected_server_errors > 0);
        runs.push((outcomes, stats, start.elapsed()));
    }
    assert_eq!(runs[0], runs[1]);
}

/// The plain fake is untouched by the simulation: instances run at once and the clock is
/// the injected one.
#[tokio::test]
async fn the_plain_fake_answers_at_once() {
    let cloud = FakeCloud::default();
    cloud.set_now(42);
    let ids = cloud.launch_instances(&launch(2)).await.unwrap();
    assert_eq!(
        cloud.instance(&ids[0]).unwrap().lifecycle,
        Lifecycle::Running
    );
    assert_eq!(cloud.now(), 42);
    assert!(cloud.sim_stats().is_none());
}

/// DescribeInstances pages as AWS does at the daemon's MaxResults (1,000): one call per page
/// (issue 11's benchmark counts the pages of a pass).
#[tokio::test]
async fn describe_instances_is_one_call_per_thousand_instances() {
    let cloud = FakeCloud::default();
    cloud.launch_instances(&launch(2_500)).await.unwrap();
    cloud.clear_calls();
    assert_eq!(cloud.describe_pool_instances().await.unwrap().len(), 2_500);
    assert_eq!(cloud.count_calls("DescribeInstances"), 3);
    let small = FakeCloud::default();
    small.describe_pool_instances().await.unwrap();
    assert_eq!(small.count_calls("DescribeInstances"), 1);
}
