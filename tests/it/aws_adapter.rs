//! `AwsCloud` against moto, through the real SDK path: the same clients, retry config and error
//! classification production uses.

use crate::support::infra::Infra;
use crate::support::moto::Moto;
use spotpool::cloud::aws::{AwsCloud, AwsCloudConfig};
use spotpool::cloud::{
    Cloud, CloudErrorKind, CommandStatus, HealthCheck, LaunchRequest, Lifecycle, RuleAction,
    SnapshotState, Tags, TargetGroupMetric, VolumeRequest, VolumeState, tags,
};
use spotpool::model::{InstanceId, InstanceStatus, RuleMatch};
use std::time::Duration;

/// The on-demand fallback launches from its own template (no market options), and is not spot.
#[tokio::test]
async fn an_on_demand_launch_uses_its_own_template_and_is_not_spot() {
    let world = World::start().await;
    let ec2 = aws_sdk_ec2::Client::new(&world.sdk);
    let created = ec2
        .create_launch_template()
        .launch_template_name("spotpool-test-on-demand")
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Small)
                .security_group_ids(&world.infra.security_group_id)
                .build(),
        )
        .send()
        .await
        .expect("creating the on-demand template");
    let on_demand_id = created
        .launch_template()
        .unwrap()
        .launch_template_id()
        .unwrap();
    let mut request = world.launch_request("small", 1, "on-demand-one");
    request.spot = false;
    request.launch_template = spotpool::model::LaunchTemplate {
        id: on_demand_id.to_string(),
        version: "$Default".to_string(),
    };
    let ids = world
        .cloud
        .launch_instances(&request)
        .await
        .expect("an on-demand launch");
    let spot = world.launch_one().await;

    for (id, lifecycle, template) in [
        (&ids[0], None, on_demand_id),
        (
            &spot,
            Some(&aws_sdk_ec2::types::InstanceLifecycleType::Spot),
            world.infra.launch_template_id.as_str(),
        ),
    ] {
        let described = ec2
            .describe_instances()
            .instance_ids(id.0.clone())
            .send()
            .await
            .unwrap();
        let instance = &described.reservations()[0].instances()[0];
        assert_eq!(instance.instance_lifecycle(), lifecycle, "{id}");
        let tag = |key: &str| {
            (instance.tags().iter())
                .find(|t| t.key() == Some(key))
                .and_then(|t| t.value())
                .map(str::to_string)
        };
        assert_eq!(tag(tags::POOL).as_deref(), Some(POOL), "{id}");
        assert_eq!(
            tag("aws:ec2launchtemplate:id").as_deref(),
            Some(template),
            "{id}"
        );
    }
}

const POOL: &str = "test-pool";

/// A moto with the test infrastructure and an adapter for pool `test-pool`.
struct World {
    // Kept alive for the test's duration; dropping it stops moto.
    _moto: Moto,
    sdk: aws_config::SdkConfig,
    infra: Infra,
    cloud: AwsCloud,
}

impl World {
    async fn start() -> World {
        let moto = Moto::start().await;
        let sdk = moto.sdk_config().await;
        let infra = Infra::create(&sdk).await;
        let cloud = AwsCloud::new(&sdk, config(&infra, POOL));
        World {
            _moto: moto,
            sdk,
            infra,
            cloud,
        }
    }

    fn launch_request(&self, tier: &str, count: u32, token: &str) -> LaunchRequest {
        LaunchRequest {
            tier: tier.to_string(),
            instance_type: "t3.small".to_string(),
            subnet_id: self.infra.subnet_ids[0].clone(),
            count,
            client_token: token.to_string(),
            spot: true,
            launch_template: spotpool::model::LaunchTemplate {
                id: self.infra.launch_template_id.clone(),
                version: "$Default".to_string(),
            },
            blank_workspace: None,
        }
    }

    async fn launch_one(&self) -> InstanceId {
        let ids = self
            .cloud
            .launch_instances(&self.launch_request("small", 1, "launch-one"))
            .await
            .expect("launching one instance");
        assert_eq!(ids.len(), 1);
        ids.into_iter().next().unwrap()
    }

    async fn target_group(&self, name: &str) -> String {
        self.cloud
            .create_target_group(name, 8080, &health_check(), &Tags::new())
            .await
            .expect("creating a target group")
    }
}

/// A health check with none of spotpool's defaults, so the test sees each value passed through.
fn health_check() -> HealthCheck {
    HealthCheck {
        path: "/healthz".into(),
        interval_seconds: 7,
        timeout_seconds: 3,
        healthy_threshold: 3,
        unhealthy_threshold: 4,
        codes: "200,204".into(),
    }
}

fn config(infra: &Infra, pool: &str) -> AwsCloudConfig {
    AwsCloudConfig {
        pool: pool.to_string(),
        vpc_id: infra.vpc_id.clone(),
        security_group_ids: vec![infra.security_group_id.clone()],
        instance_profile_arn: None,
        call_timeout: Duration::from_secs(30),
        attempt_timeout: Duration::from_secs(10),
        max_attempts: 3,
        secret_write_attempts: 5,
    }
}

fn tags_of(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

// --- EC2 -----------------------------------------------------------------------------------

#[tokio::test]
async fn launch_then_describe_returns_every_tagged_instance_across_pages() {
    let world = World::start().await;
    // Moto pages count reservations (one per RunInstances call), so a page size of 1 and four
    // launches make describe follow NextToken three times. RunInstances asks for MinCount=1,
    // MaxCount=count: AWS may launch fewer than asked for, and moto always launches MinCount.
    let cloud = world.cloud.clone().with_page_size(1);
    let mut launched = Vec::new();
    let mut large = Vec::new();
    for (tier, count, token) in [
        ("small", 2, "t-1"),
        ("small", 1, "t-2"),
        ("large", 3, "t-3"),
        ("large", 1, "t-4"),
    ] {
        let ids = cloud
            .launch_instances(&world.launch_request(tier, count, token))
            .await
            .expect("launching");
        assert!(
            (1..=count as usize).contains(&ids.len()),
            "launch {token} gave {ids:?}"
        );
        if tier == "large" {
            large.extend(ids.clone());
        }
        launched.extend(ids);
    }

    let instances = cloud.describe_pool_instances().await.expect("describing");

    let mut seen: Vec<_> = instances.iter().map(|i| i.id.clone()).collect();
    seen.sort();
    launched.sort();
    assert_eq!(seen, launched);
    for instance in &instances {
        assert!(
            instance.arn.starts_with("arn:aws:ec2:us-east-1:")
                && instance
                    .arn
                    .ends_with(&format!(":instance/{}", instance.id)),
            "arn {}",
            instance.arn
        );
        assert_eq!(instance.instance_type, "t3.small");
        assert_eq!(instance.availability_zone, "us-east-1a");
        assert!(
            matches!(instance.lifecycle, Lifecycle::Pending | Lifecycle::Running),
            "lifecycle {:?}",
            instance.lifecycle
        );
        assert_eq!(instance.status, Some(InstanceStatus::Initializing));
        assert_eq!(instance.user_id, None);
        assert!(instance.private_ip.is_some());
        assert!(
            instance.launched_at > 1_600_000_000_000,
            "launched_at {}",
            instance.launched_at
        );
    }
    let mut large_seen: Vec<_> = instances
        .iter()
        .filter(|i| i.tier.as_deref() == Some("large"))
        .map(|i| i.id.clone())
        .collect();
    large_seen.sort();
    large.sort();
    assert_eq!(large_seen, large);
}

#[tokio::test]
async fn launch_tags_instance_and_volume_and_asks_for_spot_with_imdsv2() {
    let world = World::start().await;
    let id = world.launch_one().await;

    let ec2 = aws_sdk_ec2::Client::new(&world.sdk);
    let described = ec2
        .describe_instances()
        .instance_ids(id.0.clone())
        .send()
        .await
        .expect("describing the instance");
    let instance = &described.reservations()[0].instances()[0];
    let tag = |key: &str| {
        instance
            .tags()
            .iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value())
            .map(str::to_string)
    };
    assert_eq!(tag(tags::NAME).as_deref(), Some(tags::NAME_VALUE));
    assert_eq!(tag(tags::POOL).as_deref(), Some(POOL));
    assert_eq!(tag(tags::TIER).as_deref(), Some("small"));
    assert_eq!(tag(tags::STATUS).as_deref(), Some("initializing"));
    assert_eq!(
        instance.instance_lifecycle(),
        Some(&aws_sdk_ec2::types::InstanceLifecycleType::Spot)
    );
    let metadata = instance.metadata_options().expect("metadata options");
    assert_eq!(
        metadata.http_tokens(),
        Some(&aws_sdk_ec2::types::HttpTokensState::Required)
    );
    assert_eq!(metadata.http_put_response_hop_limit(), Some(1));
    let groups: Vec<_> = instance
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id())
        .collect();
    assert_eq!(groups, vec![world.infra.security_group_id.as_str()]);

    let volumes = ec2
        .describe_volumes()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("attachment.instance-id")
                .values(id.0.clone())
                .build(),
        )
        .send()
        .await
        .expect("describing the volumes");
    assert!(
        !volumes.volumes().is_empty(),
        "the instance has a root volume"
    );
    for volume in volumes.volumes() {
        let pool_tag = volume
            .tags()
            .iter()
            .find(|t| t.key() == Some(tags::POOL))
            .and_then(|t| t.value());
        assert_eq!(pool_tag, Some(POOL), "volume {:?}", volume.volume_id());
    }
}

#[tokio::test]
async fn describe_skips_other_pools_and_terminated_instances() {
    let world = World::start().await;
    let mine = world.launch_one().await;
    let gone = world.launch_one().await;
    let other_pool = AwsCloud::new(&world.sdk, config(&world.infra, "other-pool"));
    let theirs = other_pool
        .launch_instances(&world.launch_request("small", 1, "theirs"))
        .await
        .expect("launching in the other pool");
    world
        .cloud
        .terminate_instances(std::slice::from_ref(&gone))
        .await
        .expect("terminating");

    let ids: Vec<_> = world
        .cloud
        .describe_pool_instances()
        .await
        .expect("describing")
        .into_iter()
        .map(|i| i.id)
        .collect();

    assert_eq!(ids, vec![mine]);
    let their_ids: Vec<_> = other_pool
        .describe_pool_instances()
        .await
        .expect("describing the other pool")
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(their_ids, theirs);
}

#[tokio::test]
async fn tag_and_untag_are_reflected_by_describe() {
    let world = World::start().await;
    let id = world.launch_one().await;

    world
        .cloud
        .tag_instance(
            &id,
            &tags_of(&[(tags::STATUS, "assigned"), (tags::USER_ID, "alice")]),
        )
        .await
        .expect("tagging");
    let instance = world
        .cloud
        .describe_pool_instances()
        .await
        .expect("describing")[0]
        .clone();
    assert_eq!(instance.status, Some(InstanceStatus::Assigned));
    assert_eq!(instance.user_id.as_deref(), Some("alice"));

    world
        .cloud
        .untag_instance(&id, &[tags::USER_ID, "NeverSet"])
        .await
        .expect("untagging");
    world
        .cloud
        .untag_instance(&id, &[])
        .await
        .expect("untagging nothing");
    let instance = world
        .cloud
        .describe_pool_instances()
        .await
        .expect("describing")[0]
        .clone();
    assert_eq!(instance.user_id, None);
    // Untagging nothing must not have deleted every tag.
    assert_eq!(instance.status, Some(InstanceStatus::Assigned));
    assert_eq!(instance.tier.as_deref(), Some("small"));
}

#[tokio::test]
async fn terminating_twice_and_terminating_unknown_ids_succeed() {
    let world = World::start().await;
    let first = world.launch_one().await;
    let second = world.launch_one().await;
    let unknown = InstanceId("i-0123456789abcdef0".to_string());

    world
        .cloud
        .terminate_instances(std::slice::from_ref(&first))
        .await
        .expect("terminating");
    world
        .cloud
        .terminate_instances(std::slice::from_ref(&first))
        .await
        .expect("terminating again");
    world
        .cloud
        .terminate_instances(std::slice::from_ref(&unknown))
        .await
        .expect("terminating an unknown id");
    world
        .cloud
        .terminate_instances(&[])
        .await
        .expect("terminating nothing");
    // One unknown id in a batch must not keep the known ones alive.
    world
        .cloud
        .terminate_instances(&[unknown.clone(), second.clone()])
        .await
        .expect("terminating a batch with an unknown id");

    let remaining = world
        .cloud
        .describe_pool_instances()
        .await
        .expect("describing");
    assert!(remaining.is_empty(), "still alive: {remaining:?}");
}

// --- SSM -----------------------------------------------------------------------------------

#[tokio::test]
async fn send_command_then_command_status_reaches_success() {
    let world = World::start().await;
    let id = world.launch_one().await;
    let long_comment = "c".repeat(300);

    let command_id = world
        .cloud
        .send_command(&id, &long_comment, "echo hello", 60)
        .await
        .expect("sending the command");

    let mut status = CommandStatus::Pending;
    for _ in 0..50 {
        status = world
            .cloud
            .command_status(&command_id, &id)
            .await
            .expect("reading the status");
        if status != CommandStatus::Pending {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, CommandStatus::Success);

    let ssm = aws_sdk_ssm::Client::new(&world.sdk);
    let sent = ssm
        .list_commands()
        .command_id(&command_id)
        .send()
        .await
        .expect("listing the command");
    let command = &sent.commands()[0];
    assert_eq!(command.document_name(), Some("AWS-RunShellScript"));
    assert_eq!(command.comment().map(|c| c.len()), Some(100));
    let parameters = command.parameters().expect("parameters");
    assert_eq!(parameters["commands"], vec!["echo hello".to_string()]);
    assert_eq!(parameters["executionTimeout"], vec!["60".to_string()]);
}

#[tokio::test]
async fn command_status_of_an_invocation_not_yet_known_is_pending() {
    let world = World::start().await;
    let id = world.launch_one().await;
    let other = InstanceId("i-0123456789abcdef0".to_string());
    let command_id = world
        .cloud
        .send_command(&id, "probe", "true", 30)
        .await
        .expect("sending the command");

    // The command exists but has no invocation on this instance: InvocationDoesNotExist.
    let status = world
        .cloud
        .command_status(&command_id, &other)
        .await
        .expect("reading the status");

    assert_eq!(status, CommandStatus::Pending);
}

/// moto does not implement DescribeInstanceInformation (it answers a bare HTTP 500): the adapter
/// says "cannot say" instead of failing, so the daemon probes by a back-off (issue 13).
#[tokio::test]
async fn agents_online_on_moto_cannot_say() {
    let world = World::start().await;
    let id = world.launch_one().await;
    let answer = world
        .cloud
        .agents_online(std::slice::from_ref(&id))
        .await
        .expect("asking which agents are online");
    assert_eq!(answer, None);
}

// --- Secrets Manager -----------------------------------------------------------------------

#[tokio::test]
async fn put_secret_creates_then_updates_under_the_same_arn() {
    let world = World::start().await;
    let first_tags = tags_of(&[(tags::USER_ID, "alice"), (tags::POOL, POOL)]);

    let created = world
        .cloud
        .put_secret("openclaw/alice", "first-value", &first_tags)
        .await
        .expect("creating the secret");
    let updated = world
        .cloud
        .put_secret(
            "openclaw/alice",
            "second-value",
            &tags_of(&[(tags::INSTANCE_ARN, "arn:aws:ec2:us-east-1:1:instance/i-1")]),
        )
        .await
        .expect("updating the secret");

    assert_eq!(created, updated);
    let secrets = aws_sdk_secretsmanager::Client::new(&world.sdk);
    let value = secrets
        .get_secret_value()
        .secret_id(&created)
        .send()
        .await
        .expect("reading the secret");
    assert_eq!(value.secret_string(), Some("second-value"));
    let described = secrets
        .describe_secret()
        .secret_id(&created)
        .send()
        .await
        .expect("describing the secret");
    let mut keys: Vec<_> = described.tags().iter().filter_map(|t| t.key()).collect();
    keys.sort();
    assert_eq!(keys, vec![tags::INSTANCE_ARN, tags::USER_ID, tags::POOL]);
}

#[tokio::test]
async fn tag_and_untag_secret_change_its_tags() {
    let world = World::start().await;
    let arn = world
        .cloud
        .put_secret("openclaw/bob", "value", &tags_of(&[(tags::USER_ID, "bob")]))
        .await
        .expect("creating the secret");

    world
        .cloud
        .tag_secret(&arn, &tags_of(&[(tags::INSTANCE_ID, "i-1")]))
        .await
        .expect("tagging");
    world
        .cloud
        .untag_secret(&arn, &[tags::USER_ID])
        .await
        .expect("untagging");

    let described = aws_sdk_secretsmanager::Client::new(&world.sdk)
        .describe_secret()
        .secret_id(&arn)
        .send()
        .await
        .expect("describing the secret");
    let keys: Vec<_> = described.tags().iter().filter_map(|t| t.key()).collect();
    assert_eq!(keys, vec![tags::INSTANCE_ID]);
}

#[tokio::test]
async fn delete_secret_twice_succeeds_and_the_secret_is_gone() {
    let world = World::start().await;
    let arn = world
        .cloud
        .put_secret("openclaw/carol", "value", &Tags::new())
        .await
        .expect("creating the secret");

    world.cloud.delete_secret(&arn).await.expect("deleting");
    world
        .cloud
        .delete_secret(&arn)
        .await
        .expect("deleting again");
    world
        .cloud
        .delete_secret("openclaw/never-created")
        .await
        .expect("deleting a secret that never existed");

    let read = aws_sdk_secretsmanager::Client::new(&world.sdk)
        .get_secret_value()
        .secret_id(&arn)
        .send()
        .await;
    assert!(read.is_err(), "the secret is still readable");
}

// --- ELBv2 ---------------------------------------------------------------------------------

#[tokio::test]
async fn create_target_group_twice_returns_the_same_arn() {
    let world = World::start().await;
    let tags = tags_of(&[(tags::USER_ID, "alice"), (tags::POOL, POOL)]);

    let first = world
        .cloud
        .create_target_group("sp-alice", 8080, &health_check(), &tags)
        .await
        .expect("creating");
    let second = world
        .cloud
        .create_target_group("sp-alice", 8080, &health_check(), &tags)
        .await
        .expect("creating again");

    assert_eq!(first, second);
    let described = aws_sdk_elasticloadbalancingv2::Client::new(&world.sdk)
        .describe_target_groups()
        .target_group_arns(&first)
        .send()
        .await
        .expect("describing");
    let group = &described.target_groups()[0];
    assert_eq!(group.port(), Some(8080));
    assert_eq!(group.vpc_id(), Some(world.infra.vpc_id.as_str()));
    // Every health setting is sent explicitly: AWS's defaults (30 s × 5) would keep a new
    // target out of service for 2.5 minutes.
    assert_eq!(group.health_check_path(), Some("/healthz"));
    assert_eq!(group.matcher().and_then(|m| m.http_code()), Some("200,204"));
    assert_eq!(group.health_check_interval_seconds(), Some(7));
    assert_eq!(group.health_check_timeout_seconds(), Some(3));
    assert_eq!(group.healthy_threshold_count(), Some(3));
    assert_eq!(group.unhealthy_threshold_count(), Some(4));
    assert_eq!(
        group.target_type(),
        Some(&aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Instance)
    );
}

#[tokio::test]
async fn register_target_twice_succeeds() {
    let world = World::start().await;
    let id = world.launch_one().await;
    let group = world.target_group("sp-reg").await;

    world
        .cloud
        .register_target(&group, &id, 8080)
        .await
        .expect("registering");
    world
        .cloud
        .register_target(&group, &id, 8080)
        .await
        .expect("registering again");

    let health = aws_sdk_elasticloadbalancingv2::Client::new(&world.sdk)
        .describe_target_health()
        .target_group_arn(&group)
        .send()
        .await
        .expect("describing target health");
    let targets: Vec<_> = health
        .target_health_descriptions()
        .iter()
        .filter_map(|d| d.target())
        .map(|t| (t.id().unwrap_or_default().to_string(), t.port()))
        .collect();
    assert_eq!(targets, vec![(id.0.clone(), Some(8080))]);
}

#[tokio::test]
async fn register_target_in_a_missing_group_is_not_found_with_context() {
    let world = World::start().await;
    let id = world.launch_one().await;
    let missing = world
        .infra
        .alb_arn
        .replace(":loadbalancer/app/", ":targetgroup/");

    let err = world
        .cloud
        .register_target(&missing, &id, 8080)
        .await
        .expect_err("registering in a missing group");

    assert_eq!(err.kind, CloudErrorKind::NotFound);
    assert_eq!(err.operation, "RegisterTargets");
    assert!(
        err.to_string()
            .contains(&format!("registering instance {id}")),
        "{err}"
    );
}

#[tokio::test]
async fn create_rule_at_a_taken_priority_is_a_conflict() {
    let world = World::start().await;
    let group = world.target_group("sp-conflict").await;
    let listener = &world.infra.listener_arn;
    world
        .cloud
        .create_rule(
            listener,
            10,
            &RuleMatch::Path("/alice/*".into()),
            &group,
            &Tags::new(),
        )
        .await
        .expect("creating the first rule");

    let err = world
        .cloud
        .create_rule(
            listener,
            10,
            &RuleMatch::Path("/bob/*".into()),
            &group,
            &Tags::new(),
        )
        .await
        .expect_err("a second rule at the same priority");

    assert_eq!(err.kind, CloudErrorKind::Conflict);
    assert_eq!(err.code, "PriorityInUse");
}

#[tokio::test]
async fn describe_rules_lists_each_rule_with_its_path_and_target_group() {
    let world = World::start().await;
    // A page size of 1 makes DescribeRules follow NextMarker.
    let cloud = world.cloud.clone().with_page_size(1);
    let listener = &world.infra.listener_arn;
    let alice_group = world.target_group("sp-alice").await;
    let bob_group = world.target_group("sp-bob").await;
    let tags = tags_of(&[(tags::USER_ID, "alice")]);
    let alice_rule = cloud
        .create_rule(
            listener,
            5,
            &RuleMatch::Path("/alice/*".into()),
            &alice_group,
            &tags,
        )
        .await
        .expect("creating alice's rule");
    let bob_rule = cloud
        .create_rule(
            listener,
            6,
            &RuleMatch::Path("/bob/*".into()),
            &bob_group,
            &Tags::new(),
        )
        .await
        .expect("creating bob's rule");

    let rules = cloud.describe_rules(listener).await.expect("describing");

    assert_eq!(rules.len(), 3, "{rules:?}");
    let alice = rules
        .iter()
        .find(|r| r.arn == alice_rule)
        .expect("alice's rule");
    assert_eq!(alice.priority, Some(5));
    assert_eq!(alice.path_patterns, vec!["/alice/*"]);
    assert_eq!(alice.target_group_arns, vec![alice_group]);
    let bob = rules
        .iter()
        .find(|r| r.arn == bob_rule)
        .expect("bob's rule");
    assert_eq!(bob.priority, Some(6));
    assert_eq!(bob.target_group_arns, vec![bob_group]);
    let default = rules
        .iter()
        .find(|r| r.priority.is_none())
        .expect("the default rule");
    assert!(default.path_patterns.is_empty());
    assert!(default.target_group_arns.is_empty());
}

#[tokio::test]
async fn delete_rule_and_delete_target_group_twice_succeed() {
    let world = World::start().await;
    let listener = &world.infra.listener_arn;
    let group = world.target_group("sp-gone").await;
    let rule = world
        .cloud
        .create_rule(
            listener,
            20,
            &RuleMatch::Path("/gone/*".into()),
            &group,
            &Tags::new(),
        )
        .await
        .expect("creating the rule");

    // While the rule forwards to the group, the group cannot go.
    let in_use = world
        .cloud
        .delete_target_group(&group)
        .await
        .expect_err("deleting a group in use");
    assert_eq!(in_use.kind, CloudErrorKind::Conflict);

    world
        .cloud
        .delete_rule(&rule)
        .await
        .expect("deleting the rule");
    world
        .cloud
        .delete_rule(&rule)
        .await
        .expect("deleting the rule again");
    world
        .cloud
        .delete_target_group(&group)
        .await
        .expect("deleting the group");
    world
        .cloud
        .delete_target_group(&group)
        .await
        .expect("deleting the group again");

    let rules = world
        .cloud
        .describe_rules(listener)
        .await
        .expect("describing");
    assert!(rules.iter().all(|r| r.arn != rule), "{rules:?}");
}

/// The orphan sweep's listings return exactly what carries this pool's tag, across pages.
#[tokio::test]
async fn pool_listings_return_only_resources_tagged_for_this_pool() {
    let world = World::start().await;
    let cloud = world.cloud.clone().with_page_size(1);
    let listener = &world.infra.listener_arn;
    let ours = tags_of(&[(tags::POOL, POOL), (tags::USER_ID, "ghost")]);
    let theirs = tags_of(&[(tags::POOL, "another-pool")]);
    let our_group = cloud
        .create_target_group("sp-ours", 8080, &health_check(), &ours)
        .await
        .expect("creating our group");
    let their_group = cloud
        .create_target_group("sp-theirs", 8080, &health_check(), &theirs)
        .await
        .expect("creating their group");
    let untagged_group = world.target_group("sp-untagged").await;
    let our_rule = cloud
        .create_rule(
            listener,
            7,
            &RuleMatch::Path("/ours/*".into()),
            &our_group,
            &ours,
        )
        .await
        .expect("creating our rule");
    cloud
        .create_rule(
            listener,
            8,
            &RuleMatch::Path("/theirs/*".into()),
            &their_group,
            &theirs,
        )
        .await
        .expect("creating their rule");
    cloud
        .create_rule(
            listener,
            9,
            &RuleMatch::Path("/untagged/*".into()),
            &untagged_group,
            &Tags::new(),
        )
        .await
        .expect("creating an untagged rule");
    let our_secret = cloud
        .put_secret("openclaw/ghost", "value", &ours)
        .await
        .expect("creating our secret");
    cloud
        .put_secret("openclaw/theirs", "value", &theirs)
        .await
        .expect("creating their secret");
    // Their pool's name as our tag value on another key must not match either.
    cloud
        .put_secret(
            "openclaw/crossed",
            "value",
            &tags_of(&[(tags::POOL, "another-pool"), (tags::USER_ID, POOL)]),
        )
        .await
        .expect("creating a crossed secret");

    let groups = cloud
        .list_pool_target_groups()
        .await
        .expect("listing groups");
    assert_eq!(
        groups
            .iter()
            .map(|g| (&g.arn, g.name.as_str()))
            .collect::<Vec<_>>(),
        vec![(&our_group, "sp-ours")]
    );
    assert_eq!(
        groups[0].tags.get(tags::USER_ID).map(String::as_str),
        Some("ghost")
    );
    let rules = cloud
        .list_pool_rules(listener)
        .await
        .expect("listing rules");
    assert_eq!(
        rules
            .iter()
            .map(|r| (&r.arn, r.name.as_str()))
            .collect::<Vec<_>>(),
        vec![(&our_rule, "/ours/*")]
    );
    let secrets = cloud.list_pool_secrets().await.expect("listing secrets");
    assert_eq!(
        secrets
            .iter()
            .map(|s| (&s.arn, s.name.as_str()))
            .collect::<Vec<_>>(),
        vec![(&our_secret, "openclaw/ghost")]
    );
    assert!(secrets[0].created_at.is_some(), "{secrets:?}");
}

#[tokio::test]
async fn target_health_follows_registration_and_deregistering_twice_succeeds() {
    let world = World::start().await;
    let id = world.launch_one().await;
    let group = world.target_group("sp-health").await;
    let cloud = &world.cloud;
    assert!(!cloud.target_healthy(&group, &id, 8080).await.unwrap());
    cloud.register_target(&group, &id, 8080).await.unwrap();
    assert!(cloud.target_healthy(&group, &id, 8080).await.unwrap());
    cloud.deregister_target(&group, &id, 8080).await.unwrap();
    cloud
        .deregister_target(&group, &id, 8080)
        .await
        .expect("deregistering twice");
    assert!(!cloud.target_healthy(&group, &id, 8080).await.unwrap());
    cloud
        .deregister_target(&group, &InstanceId("i-0000000000000dead".into()), 8080)
        .await
        .expect("deregistering an unknown instance");
}

// --- EBS, rule actions, CloudWatch (workspaces and auto-sleep) ------------------------------

/// A workspace of `owner` in us-east-1a (the zone of moto's first subnet).
fn workspace_request(owner: &str, token: &str) -> VolumeRequest {
    let mut volume_tags = tags_of(&[(tags::POOL, POOL), (tags::WORKSPACE, owner)]);
    volume_tags.insert(tags::USER_ID.into(), owner.into());
    VolumeRequest {
        availability_zone: "us-east-1a".into(),
        size_gib: 8,
        kms_key_id: None,
        snapshot_id: None,
        client_token: token.into(),
        tags: volume_tags,
    }
}

#[tokio::test]
async fn a_workspace_volume_is_created_tagged_encrypted_attached_detached_and_deleted() {
    let world = World::start().await;
    let cloud = &world.cloud;
    let zones = cloud
        .subnet_zones(&world.infra.subnet_ids)
        .await
        .expect("subnet zones");
    assert_eq!(zones[&world.infra.subnet_ids[0]], "us-east-1a");
    assert_eq!(zones[&world.infra.subnet_ids[1]], "us-east-1b");

    let volume_id = cloud
        .create_volume(&workspace_request("alice", "tok-alice"))
        .await
        .expect("creating the volume");
    let described = aws_sdk_ec2::Client::new(&world.sdk)
        .describe_volumes()
        .volume_ids(&volume_id)
        .send()
        .await
        .unwrap();
    let raw = &described.volumes()[0];
    assert_eq!(raw.encrypted(), Some(true));
    assert_eq!(
        raw.volume_type(),
        Some(&aws_sdk_ec2::types::VolumeType::Gp3)
    );
    let volume = cloud.describe_volume(&volume_id).await.unwrap().unwrap();
    assert_eq!(volume.availability_zone, "us-east-1a");
    assert_eq!(volume.size_gib, 8);
    assert_eq!(volume.state, VolumeState::Available);
    assert_eq!(
        volume.tags.get(tags::WORKSPACE).map(String::as_str),
        Some("alice")
    );
    // Listings: the pool's workspaces, or one owner's.
    cloud
        .create_volume(&workspace_request("bob", "tok-bob"))
        .await
        .unwrap();
    assert_eq!(cloud.list_pool_volumes(None).await.unwrap().len(), 2);
    let alices = cloud.list_pool_volumes(Some("alice")).await.unwrap();
    assert_eq!(alices.len(), 1);
    assert_eq!(alices[0].id, volume_id);

    let instance = world.launch_one().await;
    cloud
        .attach_volume(&volume_id, &instance, "/dev/sdf")
        .await
        .expect("attaching");
    let attached = cloud.describe_volume(&volume_id).await.unwrap().unwrap();
    assert_eq!(attached.state, VolumeState::InUse);
    assert_eq!(
        attached.attachment.as_ref().map(|a| &a.instance),
        Some(&instance)
    );
    // Deleting an attached volume is refused as a conflict.
    assert_eq!(
        cloud.delete_volume(&volume_id).await.unwrap_err().kind,
        CloudErrorKind::Conflict
    );
    cloud
        .detach_volume(&volume_id, &instance, false)
        .await
        .expect("detaching");
    cloud
        .detach_volume(&volume_id, &instance, false)
        .await
        .expect("detaching again is no error");
    let detached = cloud.describe_volume(&volume_id).await.unwrap().unwrap();
    assert_eq!(detached.state, VolumeState::Available);
    assert_eq!(detached.attachment, None);

    // A copy through a snapshot, then everything deleted (twice: still no error). The
    // snapshot is found by its tags (a restart's way back to a lost CreateSnapshot answer);
    // an untagged one and another user's are not listed for alice.
    let snapshot = cloud
        .create_snapshot(
            &volume_id,
            &tags_of(&[
                (tags::POOL, POOL),
                (tags::WORKSPACE, "alice"),
                (tags::RELOCATION, "tok-r"),
            ]),
        )
        .await
        .unwrap();
    let untagged = cloud
        .create_snapshot(&volume_id, &tags_of(&[(tags::POOL, POOL)]))
        .await
        .unwrap();
    let bobs = cloud
        .create_snapshot(
            &volume_id,
            &tags_of(&[(tags::POOL, POOL), (tags::WORKSPACE, "bob")]),
        )
        .await
        .unwrap();
    assert_eq!(
        cloud.snapshot_state(&snapshot).await.unwrap(),
        Some(SnapshotState::Completed)
    );
    let listed = cloud.list_pool_snapshots(Some("alice")).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, snapshot);
    assert_eq!(listed[0].volume_id, volume_id);
    assert_eq!(listed[0].tags.get(tags::RELOCATION).unwrap(), "tok-r");
    assert!(listed[0].created_at > 0);
    let every: Vec<String> = cloud
        .list_pool_snapshots(None)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert!(
        every.contains(&snapshot) && every.contains(&bobs),
        "{every:?}"
    );
    assert!(!every.contains(&untagged), "{every:?}");
    for other in [untagged, bobs] {
        cloud.delete_snapshot(&other).await.unwrap();
    }
    let mut copy = workspace_request("alice", "tok-copy");
    copy.availability_zone = "us-east-1b".into();
    copy.snapshot_id = Some(snapshot.clone());
    let copy = cloud.create_volume(&copy).await.unwrap();
    assert_eq!(
        cloud
            .describe_volume(&copy)
            .await
            .unwrap()
            .unwrap()
            .availability_zone,
        "us-east-1b"
    );
    for _ in 0..2 {
        cloud.delete_snapshot(&snapshot).await.unwrap();
        cloud.delete_volume(&volume_id).await.unwrap();
    }
    assert_eq!(cloud.snapshot_state(&snapshot).await.unwrap(), None);
    assert_eq!(cloud.describe_volume(&volume_id).await.unwrap(), None);
}

#[tokio::test]
async fn a_rule_answers_a_fixed_response_then_forwards_again() {
    let world = World::start().await;
    let group = world.target_group("sp-sleepy").await;
    let rule = world
        .cloud
        .create_rule(
            &world.infra.listener_arn,
            7,
            &RuleMatch::Path("/sleepy/*".into()),
            &group,
            &Tags::new(),
        )
        .await
        .unwrap();
    let asleep = RuleAction::FixedResponse {
        status: 503,
        content_type: "application/json".into(),
        body: r#"{"error":{"code":"asleep"}}"#.into(),
    };
    world.cloud.set_rule_action(&rule, &asleep).await.unwrap();
    let described = aws_sdk_elasticloadbalancingv2::Client::new(&world.sdk)
        .describe_rules()
        .rule_arns(&rule)
        .send()
        .await
        .unwrap();
    let action = &described.rules()[0].actions()[0];
    assert_eq!(
        action.fixed_response_config().and_then(|c| c.status_code()),
        Some("503")
    );
    // With the rule no longer forwarding, the target group can go.
    world.cloud.delete_target_group(&group).await.unwrap();
    let group = world.target_group("sp-sleepy").await;
    let forward = RuleAction::Forward {
        target_group_arn: group.clone(),
    };
    world.cloud.set_rule_action(&rule, &forward).await.unwrap();
    let rules = world
        .cloud
        .describe_rules(&world.infra.listener_arn)
        .await
        .unwrap();
    let found = rules.iter().find(|r| r.arn == rule).unwrap();
    assert_eq!(found.target_group_arns, vec![group.clone()]);
}

#[tokio::test]
async fn request_counts_sum_the_target_groups_requests_and_count_no_data_as_zero() {
    let world = World::start().await;
    let busy = world.target_group("sp-busy").await;
    let idle = world.target_group("sp-idle").await;
    let listener = &world.infra.listener_arn;
    let metric = |group: &str| TargetGroupMetric::from_arns(listener, group).unwrap();
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&world.sdk);
    let busy_metric = metric(&busy);
    for value in [3.0, 4.0] {
        use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
        cloudwatch
            .put_metric_data()
            .namespace("AWS/ApplicationELB")
            .metric_data(
                MetricDatum::builder()
                    .metric_name("RequestCount")
                    .dimensions(
                        Dimension::builder()
                            .name("LoadBalancer")
                            .value(&busy_metric.load_balancer)
                            .build(),
                    )
                    .dimensions(
                        Dimension::builder()
                            .name("TargetGroup")
                            .value(&busy_metric.target_group)
                            .build(),
                    )
                    .value(value)
                    .unit(StandardUnit::Count)
                    .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from(
                        std::time::SystemTime::now() - Duration::from_secs(30),
                    ))
                    .build(),
            )
            .send()
            .await
            .expect("putting a data point");
    }
    let counts = world
        .cloud
        .request_counts(&[busy_metric, metric(&idle)], Duration::from_secs(3600))
        .await
        .expect("reading the request counts");
    assert_eq!(counts, vec![7.0, 0.0]);
}

#[tokio::test]
async fn instance_vcpus_and_quotas_come_from_describe_instance_types_and_service_quotas() {
    let world = World::start().await;
    let types = vec![
        "t3.small".to_string(),
        "m5.xlarge".to_string(),
        "not-a-type.large".to_string(),
    ];
    let vcpus = world.cloud.instance_vcpus(&types).await;
    // moto refuses the whole call for an unknown type, as EC2 does (InvalidInstanceType).
    let error = vcpus.expect_err("an unknown instance type is refused");
    assert_eq!(error.operation, "DescribeInstanceTypes");
    let vcpus = world.cloud.instance_vcpus(&types[..2]).await.unwrap();
    assert_eq!(vcpus.get("t3.small"), Some(&2));
    assert_eq!(vcpus.get("m5.xlarge"), Some(&4));

    // moto's Service Quotas knows only VPC quotas: EC2's and ELB's answer NoSuchResource, which
    // the adapter reads as "not known here" (an unread quota judges nothing), not as a failure.
    use spotpool::model::quota::{Quota, SpotFamily};
    let quotas = [
        Quota::SpotVcpus(SpotFamily::Standard),
        Quota::TargetGroupsPerRegion,
    ];
    let values = world.cloud.quota_values(&quotas).await.unwrap();
    assert!(values.is_empty(), "{values:?}");
}

/// moto answers DescribeSpotPriceHistory with one flat price for every offering it lists in a
/// zone; the adapter keeps the Linux/UNIX ones of the zones asked, one per offering.
#[tokio::test]
async fn spot_prices_are_the_offerings_latest_in_the_zones_asked() {
    let world = World::start().await;
    let types = vec!["t3.small".to_string(), "t3.large".to_string()];
    let zones = vec!["us-east-1a".to_string()];
    let prices = world.cloud.spot_prices(&types, &zones).await.unwrap();
    let mut offerings: Vec<(&str, &str, f64)> = prices
        .iter()
        .map(|p| {
            (
                p.instance_type.as_str(),
                p.zone.as_str(),
                p.dollars_per_hour,
            )
        })
        .collect();
    offerings.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(
        offerings,
        [
            ("t3.large", "us-east-1a", 0.00001),
            ("t3.small", "us-east-1a", 0.00001)
        ]
    );
    let none = world.cloud.spot_prices(&types, &[]).await.unwrap();
    assert!(none.is_empty(), "{none:?}");
}

#[tokio::test]
async fn an_ecr_tag_resolves_to_the_digest_ecr_recorded() {
    let world = World::start().await;
    let ecr = aws_sdk_ecr::Client::new(&world.sdk);
    ecr.create_repository()
        .repository_name("team/openclaw")
        .send()
        .await
        .unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 7023,
            "digest": "sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7"
        },
        "layers": []
    });
    let put = ecr
        .put_image()
        .repository_name("team/openclaw")
        .image_manifest(manifest.to_string())
        .image_tag("1.0")
        .send()
        .await
        .unwrap();
    let recorded = put
        .image()
        .and_then(|i| i.image_id())
        .and_then(|i| i.image_digest())
        .unwrap()
        .to_string();
    let image = |repository: &str, tag: &str| spotpool::image::EcrImage {
        registry_id: "123456789012".into(),
        region: world.sdk.region().unwrap().to_string(),
        repository: repository.into(),
        tag: tag.into(),
    };
    let digest = world
        .cloud
        .image_digest(&image("team/openclaw", "1.0"))
        .await
        .unwrap();
    assert_eq!(digest, recorded);
    assert!(spotpool::image::is_sha256_digest(&digest), "{digest}");
    for (repository, tag) in [("team/openclaw", "2.0"), ("team/other", "1.0")] {
        let error = world
            .cloud
            .image_digest(&image(repository, tag))
            .await
            .unwrap_err();
        assert_eq!(error.kind, CloudErrorKind::NotFound, "{error}");
        assert_eq!(error.operation, "DescribeImages");
    }
}
