//! Tiers from configuration (`[[tier]]` tables), on the fake: each tier launches its own
//! instance types from its own template, probes and starts its own image with its own port and
//! limits, routes through target groups of its port, and shows in `GET /v1/pool`.

use crate::world::{ADMIN_TOKEN, World};
use spotpool::app::App;
use spotpool::cloud::fake::FakeInstance;
use spotpool::config::{Settings, TierSettings};
use spotpool::model::{InstanceStatus, LaunchTemplate};

const LARGE_IMAGE: &str = "ghcr.io/openclaw/openclaw:2026.11";

/// Two tiers: `basic` on the flat settings, `large` with a template, image, port and limits of
/// its own.
fn two_tiers() -> spotpool::config::Config {
    Settings {
        tier: Some(vec![
            TierSettings {
                name: Some("basic".into()),
                instance_types: Some(vec!["t3.small".into()]),
                spare_count: Some(1),
                max_instances: Some(4),
                ..TierSettings::default()
            },
            TierSettings {
                name: Some("large".into()),
                instance_types: Some(vec!["t3.large".into()]),
                spare_count: Some(1),
                max_instances: Some(4),
                launch_template_id: Some("lt-large".into()),
                launch_template_version: Some("7".into()),
                container_image: Some(LARGE_IMAGE.into()),
                container_port: Some(9000),
                container_memory_mb: Some(4096),
                container_cpus: Some(2.0),
                ..TierSettings::default()
            },
        ]),
        ..crate::world::test_settings(0, 0)
    }
    .into_config()
    .expect("valid tiers")
}

fn tier_of(instance: &FakeInstance) -> &str {
    instance.tags[spotpool::cloud::tags::TIER].as_str()
}

/// The script of the last command sent to `instance` whose comment contains `what`.
fn script_to(world: &World, instance: &str, what: &str) -> String {
    world
        .cloud
        .commands()
        .into_iter()
        .rev()
        .find(|c| c.instance.0 == instance && c.comment.contains(what))
        .unwrap_or_else(|| panic!("no {what} sent to {instance}"))
        .script
}

/// The value of the script's header input `name` (`NAME='value'`).
fn input(script: &str, name: &str) -> String {
    let line = script
        .lines()
        .find(|l| l.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {script}"));
    line[name.len() + 1..].trim_matches('\'').to_string()
}

#[tokio::test]
async fn each_tier_launches_probes_starts_and_routes_with_its_own_settings() {
    let config = two_tiers();
    let world = World::with_config(App::reconciler_config(&config)).await;
    world.run_until_quiet(20).await;

    // Launches: each tier's types from its own template.
    let instances = world.cloud.live_instances();
    let of = |tier: &str| -> Vec<&FakeInstance> {
        instances.iter().filter(|i| tier_of(i) == tier).collect()
    };
    let (basic, large) = (of("basic"), of("large"));
    assert_eq!((basic.len(), large.len()), (1, 1), "{instances:?}");
    assert_eq!(basic[0].instance_type, "t3.small");
    assert_eq!(basic[0].launch_template, LaunchTemplate::example());
    assert_eq!(large[0].instance_type, "t3.large");
    assert_eq!(
        large[0].launch_template,
        LaunchTemplate {
            id: "lt-large".into(),
            version: "7".into()
        }
    );
    // Probes pull each tier's image.
    let probe = script_to(&world, &large[0].id.0, "readiness probe");
    assert!(probe.contains(LARGE_IMAGE), "{probe}");
    let probe = script_to(&world, &basic[0].id.0, "readiness probe");
    assert!(!probe.contains(LARGE_IMAGE), "{probe}");
    assert!(
        probe.contains("ghcr.io/openclaw/openclaw:latest"),
        "{probe}"
    );

    // Each user gets its tier's instance, container and target group.
    world.put_user("ann", r#"{"tier":"large"}"#).await;
    world.put_user("bob", "{}").await;
    world.run_until_quiet(30).await;
    for (user, tier, instance, port) in [
        ("ann", "large", &large[0].id, "9000"),
        ("bob", "basic", &basic[0].id, "18789"),
    ] {
        let (_, doc) = world.get_user(user).await;
        assert_eq!(doc["state"], "ready", "{doc}");
        assert_eq!(
            doc["tier"], tier,
            "a PUT without a tier takes the first: {doc}"
        );
        assert_eq!(doc["instance_id"], instance.0.as_str(), "{doc}");
        let start = script_to(&world, &instance.0, "start");
        assert_eq!(input(&start, "PORT"), port);
        let row = world.user_row(user).await;
        let group_arn = row.routing.target_group_arn.clone().unwrap();
        let group = world
            .cloud
            .target_groups()
            .into_iter()
            .find(|g| g.arn == group_arn);
        assert_eq!(group.unwrap().port.to_string(), port);
    }
    let start = script_to(&world, &large[0].id.0, "start");
    assert!(input(&start, "IMAGE").starts_with(LARGE_IMAGE), "{start}");
    assert_eq!(input(&start, "MEMORY_MB"), "4096");
    assert_eq!(input(&start, "CPUS"), "2.000");

    // A user keeps its tier.
    let (status, body) = world.put_user("ann", r#"{"tier":"basic"}"#).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "tier_mismatch", "{body}");

    // The pool shows both tiers, each with its image and types.
    let (status, pool) = world
        .request("GET", "/v1/pool", Some(ADMIN_TOKEN), "")
        .await;
    assert_eq!(status, 200);
    let tiers = pool["tiers"].as_array().unwrap();
    assert_eq!(tiers.len(), 2, "{pool}");
    assert_eq!(tiers[1]["tier"], "large");
    assert_eq!(tiers[1]["image"]["configured"], LARGE_IMAGE);
    assert_eq!(tiers[1]["instance_types"], serde_json::json!(["t3.large"]));
    assert_eq!(
        tiers[0]["image"]["configured"],
        "ghcr.io/openclaw/openclaw:latest"
    );
    assert_eq!(pool["image"], tiers[0]["image"]);
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_repin_names_a_tier_or_takes_every_tiers_image() {
    let config = two_tiers();
    let world = World::with_config(App::reconciler_config(&config)).await;
    let digest = |n: u8| format!("sha256:{}", format!("{n:x}").repeat(64));
    let basic_image = "ghcr.io/openclaw/openclaw:latest";
    for (image, n) in [(basic_image, 1), (LARGE_IMAGE, 2)] {
        world.store.pin_image(image, &digest(n), 1).await.unwrap();
    }
    let repin = |query: &'static str| {
        let world = &world;
        async move {
            let path = format!("/v1/admin/image/repin{query}");
            world.request("POST", &path, Some(ADMIN_TOKEN), "").await
        }
    };
    let (status, body) = repin("?tier=nope").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "unknown_tier", "{body}");

    let (status, body) = repin("?tier=large").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["images"],
        serde_json::json!([{"image": LARGE_IMAGE, "previous_digest": digest(2)}])
    );
    assert_eq!(world.store.image_pin(LARGE_IMAGE).await.unwrap(), None);
    assert!(world.store.image_pin(basic_image).await.unwrap().is_some());

    let (status, body) = repin("").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["images"],
        serde_json::json!([
            {"image": basic_image, "previous_digest": digest(1)},
            {"image": LARGE_IMAGE, "previous_digest": null},
        ])
    );
    assert_eq!(world.store.image_pin(basic_image).await.unwrap(), None);
}

#[tokio::test]
async fn a_launch_redo_after_a_template_change_is_dropped_without_failing_the_tier() {
    let world = World::new(1, 10).await;
    world.cloud.lose_next_response("RunInstances");
    world.pass().await;
    let first = world.cloud.live_instances();
    assert_eq!(first.len(), 1);
    assert_eq!(world.store.list_launches().await.unwrap().len(), 1);

    // A restart with a new template version and one spare more: the redo's token now comes
    // with other parameters, which EC2 refuses (IdempotentParameterMismatch).
    let config = crate::world::reconciler_config(2, 10);
    config
        .tiers
        .update(|t| t[0].runtime.launch.version = "2".into());
    let restarted = world.reconfigured(config);
    restarted.run_until_quiet(20).await;

    assert!(restarted.store.list_launches().await.unwrap().is_empty());
    let journal = restarted.store.journal_since(0, 10_000).await.unwrap();
    assert!(
        !journal.iter().any(|e| e.kind.starts_with("pool.launch_")),
        "the tier was blamed: {journal:?}"
    );
    // The first call's instance is adopted; the new spare comes from the new version.
    let live = restarted.cloud.live_instances();
    assert_eq!(live.len(), 2, "{live:?}");
    assert!(live.iter().any(|i| i.id == first[0].id));
    let new = live.iter().find(|i| i.id != first[0].id).unwrap();
    assert_eq!(new.launch_template.version, "2");
    assert_eq!(restarted.ledger_count(InstanceStatus::Available).await, 2);
    restarted.assert_no_leaks().await;
}
