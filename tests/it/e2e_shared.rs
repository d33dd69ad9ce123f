//! A shared-density tier end to end: moto, the real binary and a TOML file of two tiers
//! (`basic` on t3.small with 2 spares, `shared` on t3.large with `slots_per_instance = 4`). A
//! `basic` user gets a t3.small; four `shared` users end ready on one t3.large, with four distinct
//! target groups each registering that instance on a different port, checked through the ELB and
//! EC2 APIs; a fifth opens a second t3.large.

use crate::e2e_tiers::{TierDaemon, instance_type};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(90);

const TIERS: &str = r#"
[[tier]]
name = "basic"
instance_types = ["t3.small"]
spare_count = 2
max_instances = 4

[[tier]]
name = "shared"
instance_types = ["t3.large"]
spare_count = 1
max_instances = 3
slots_per_instance = 4
"#;

/// Every target group's registered (instance, port) pairs.
async fn registrations(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
) -> BTreeMap<String, Vec<(String, i32)>> {
    let groups = elb.describe_target_groups().send().await.unwrap();
    let mut out = BTreeMap::new();
    for group in groups.target_groups() {
        let arn = group.target_group_arn().unwrap_or_default().to_string();
        let health = elb
            .describe_target_health()
            .target_group_arn(&arn)
            .send()
            .await
            .unwrap();
        let targets = (health.target_health_descriptions().iter())
            .filter_map(|d| d.target())
            .map(|t| {
                (
                    t.id().unwrap_or_default().to_string(),
                    t.port().unwrap_or(0),
                )
            })
            .collect();
        out.insert(arn, targets);
    }
    out
}

#[tokio::test]
async fn e2e_four_users_of_a_shared_tier_end_ready_on_one_instance_each_on_its_own_port() {
    let tiered = TierDaemon::start(TIERS, "shared").await;
    let daemon = &tiered.daemon;
    let ec2 = aws_sdk_ec2::Client::new(&tiered.sdk);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&tiered.sdk);

    let (status, doc) = daemon.put("bas", r#"{"tier":"basic"}"#).await;
    assert_eq!(status, 202, "{doc}");
    let bas = daemon.wait_state("bas", "ready", DEADLINE).await;
    let id = bas["instance_id"].as_str().unwrap();
    assert_eq!(instance_type(&ec2, id).await, "t3.small");

    let shared = ["ann", "bob", "cat", "dan"];
    for user in shared {
        let (status, doc) = daemon.put(user, r#"{"tier":"shared"}"#).await;
        assert_eq!(status, 202, "{doc}");
    }
    let mut instances = BTreeSet::new();
    for user in shared {
        let doc = daemon.wait_state(user, "ready", DEADLINE).await;
        assert_eq!(doc["tier"], "shared", "{doc}");
        instances.insert(doc["instance_id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        instances.len(),
        1,
        "the four share one instance: {instances:?}"
    );
    let host = instances.into_iter().next().unwrap();
    assert_eq!(instance_type(&ec2, &host).await, "t3.large");
    let on_host: Vec<(String, i32)> = (registrations(&elb).await.into_iter())
        .filter_map(|(group, targets)| {
            let (_, port) = targets.into_iter().find(|(id, _)| id == &host)?;
            Some((group, port))
        })
        .collect();
    let groups: BTreeSet<&String> = on_host.iter().map(|(g, _)| g).collect();
    let ports: BTreeSet<i32> = on_host.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        groups.len(),
        4,
        "four target groups register it: {on_host:?}"
    );
    assert_eq!(ports.len(), 4, "each on a port of its own: {on_host:?}");

    // A fifth opens a second instance.
    let (status, doc) = daemon.put("eve", r#"{"tier":"shared"}"#).await;
    assert_eq!(status, 202, "{doc}");
    let eve = daemon.wait_state("eve", "ready", DEADLINE).await;
    let second = eve["instance_id"].as_str().unwrap();
    assert_ne!(second, host);
    assert_eq!(instance_type(&ec2, second).await, "t3.large");
}
