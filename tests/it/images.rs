//! The container image pinned by digest (issue 18) on the fake cloud: resolved once per image
//! string, every probe and start after that by digest, a registry outage leaving the tag in use
//! until it resolves, restarts and a second daemon using the recorded pin.

use crate::world::{ADMIN_TOKEN, World, reconciler_config};
use spotpool::cloud::CloudErrorKind;
use spotpool::model::InstanceStatus;

const ECR_IMAGE: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/openclaw:1.0";
const FIRST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const MOVED: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const SECRET_BODY: &str = r#"{"secrets":{"OPENAI_API_KEY":"sk-test-value-123"}}"#;

fn pinned(digest: &str) -> String {
    format!("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/openclaw@{digest}")
}

async fn ecr_world(spares: u32) -> World {
    let config = reconciler_config(spares, 10);
    config
        .tiers
        .update(|t| t[0].runtime.container.image = ECR_IMAGE.into());
    World::with_config(config).await
}

/// The `IMAGE=` line of every command sent so far whose comment contains `what`, oldest first.
fn images_sent(world: &World, what: &str) -> Vec<String> {
    let mut commands = world.cloud.commands();
    commands.sort_by_key(|c| c.sent_at);
    commands
        .iter()
        .filter(|c| c.comment.contains(what))
        .filter_map(|c| {
            c.script
                .lines()
                .find(|l| l.starts_with("IMAGE="))
                .map(str::to_string)
        })
        .collect()
}

fn describe_images(world: &World) -> usize {
    world
        .cloud
        .calls()
        .iter()
        .filter(|c| **c == "DescribeImages")
        .count()
}

#[tokio::test]
async fn an_image_is_pinned_once_and_every_probe_and_start_runs_the_digest() {
    let world = ecr_world(1).await;
    world.cloud.set_image_digest("team/openclaw", "1.0", FIRST);
    world.run_until_quiet(20).await;
    let pin = world.store.image_pin(ECR_IMAGE).await.unwrap().unwrap();
    assert_eq!(pin.digest, FIRST);
    assert_eq!(
        images_sent(&world, "probe"),
        [format!("IMAGE='{}'", pinned(FIRST))]
    );
    let events = world.store.journal_since(0, 1000).await.unwrap();
    let pins: Vec<_> = events.iter().filter(|e| e.kind == "image.pinned").collect();
    assert_eq!(pins.len(), 1);
    assert!(
        pins[0].message.contains(&pinned(FIRST)),
        "{}",
        pins[0].message
    );

    // The tag moves on in the registry: the pool keeps the pinned bytes, never asks again.
    world.cloud.set_image_digest("team/openclaw", "1.0", MOVED);
    let asked = describe_images(&world);
    world.ready_user("alice", SECRET_BODY).await;
    world.run_until_quiet(20).await;
    assert_eq!(describe_images(&world), asked);
    assert_eq!(
        images_sent(&world, "start"),
        [format!("IMAGE='{}'", pinned(FIRST))]
    );
    assert!(
        images_sent(&world, "probe")
            .iter()
            .all(|i| i.contains(FIRST))
    );

    // A restarted daemon over the same store uses the recorded pin.
    let restarted = world.restart().await;
    restarted.run_until_quiet(20).await;
    assert_eq!(describe_images(&world), asked);

    // A new image string is resolved anew.
    let config = reconciler_config(1, 10);
    config
        .tiers
        .update(|t| t[0].runtime.container.image = ECR_IMAGE.replace(":1.0", ":2.0"));
    world.cloud.set_image_digest("team/openclaw", "2.0", MOVED);
    let upgraded = world.reconfigured(config);
    upgraded.pass().await;
    assert_eq!(describe_images(&world), asked + 1);
    let pin = world
        .store
        .image_pin(&ECR_IMAGE.replace(":1.0", ":2.0"))
        .await
        .unwrap();
    assert_eq!(pin.unwrap().digest, MOVED);
}

#[tokio::test]
async fn a_registry_outage_leaves_the_tag_in_use_until_the_digest_resolves() {
    let world = ecr_world(1).await;
    world
        .cloud
        .fail_always("DescribeImages", Some(CloudErrorKind::Transient));
    world.run_until_quiet(20).await;
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 1);
    assert_eq!(world.store.image_pin(ECR_IMAGE).await.unwrap(), None);
    assert_eq!(
        images_sent(&world, "probe"),
        [format!("IMAGE='{ECR_IMAGE}'")]
    );
    // Not asked again on every pass: once a minute.
    let failed = describe_images(&world);
    world.pass().await;
    assert_eq!(describe_images(&world), failed);

    world.cloud.fail_always("DescribeImages", None);
    world.cloud.set_image_digest("team/openclaw", "1.0", FIRST);
    world.advance(60_000);
    world.pass().await;
    assert_eq!(describe_images(&world), failed + 1);
    assert_eq!(
        world
            .store
            .image_pin(ECR_IMAGE)
            .await
            .unwrap()
            .unwrap()
            .digest,
        FIRST
    );
    // The spare probed against the tag is probed again, with the pinned image, before anyone
    // gets it; a claim starts the pinned bytes.
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 0);
    world.run_until_quiet(20).await;
    assert_eq!(
        images_sent(&world, "probe"),
        [
            format!("IMAGE='{ECR_IMAGE}'"),
            format!("IMAGE='{}'", pinned(FIRST))
        ]
    );
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 1);
    world.ready_user("alice", SECRET_BODY).await;
    assert_eq!(
        images_sent(&world, "start"),
        [format!("IMAGE='{}'", pinned(FIRST))]
    );
}

#[tokio::test]
async fn a_reference_with_a_digest_is_its_own_pin() {
    let config = reconciler_config(1, 10);
    let reference = format!("ghcr.io/openclaw/openclaw:1.2@{FIRST}");
    config
        .tiers
        .update(|t| t[0].runtime.container.image = reference.clone());
    let world = World::with_config(config).await;
    world.run_until_quiet(20).await;
    assert_eq!(describe_images(&world), 0);
    assert_eq!(
        world
            .store
            .image_pin(&reference)
            .await
            .unwrap()
            .unwrap()
            .digest,
        FIRST
    );
    assert_eq!(
        images_sent(&world, "probe"),
        [format!("IMAGE='ghcr.io/openclaw/openclaw@{FIRST}'")]
    );
}

#[tokio::test]
async fn on_call_re_pins_the_image_and_the_next_pass_resolves_it_again() {
    // The world's image is ghcr.io/openclaw/openclaw:latest, and its daemon has no registry
    // client: only the recorded pin pins it.
    let world = World::new(0, 10).await;
    let image = "ghcr.io/openclaw/openclaw:latest";
    world.store.pin_image(image, FIRST, 1).await.unwrap();
    let (status, pool) = world
        .request("GET", "/v1/pool", Some(ADMIN_TOKEN), "")
        .await;
    assert_eq!(status, 200);
    assert_eq!(pool["image"]["digest"], FIRST);

    let (status, body) = world
        .request("POST", "/v1/admin/image/repin", Some(ADMIN_TOKEN), "")
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["images"],
        serde_json::json!([{"image": image, "previous_digest": FIRST}])
    );
    assert_eq!(world.store.image_pin(image).await.unwrap(), None);
    let audit = world.store.audit_log(10).await.unwrap();
    assert_eq!(audit[0].action, "image.repin");
    // The service token may not re-pin.
    let (status, _) = world
        .request(
            "POST",
            "/v1/admin/image/repin",
            Some(crate::world::API_TOKEN),
            "",
        )
        .await;
    assert_eq!(status, 403);
    // Unresolvable here, so the pool runs the tag, and says so.
    world.pass().await;
    let (_, pool) = world
        .request("GET", "/v1/pool", Some(ADMIN_TOKEN), "")
        .await;
    assert_eq!(pool["image"]["digest"], serde_json::Value::Null);
}
