//! Rolling upgrades on the fake (ARCHITECTURE.md "Rolling upgrades"): a tier's new image (a
//! `PUT /v1/admin/pool/{tier}`) or launch template version (a reload) replaces its spares and
//! moves its users to up-to-date instances a few at a time, routes unchanged; moves that fail
//! leave their users where they were and pause the rollout; a restart rolls nothing out again.

use crate::world::{ADMIN_TOKEN, World};
use spotpool::model::{InstanceId, UserState};

const NEW_IMAGE: &str = "ghcr.io/openclaw/openclaw:2026.12.1";

/// The rollout drains, newest first.
async fn rollouts(world: &World) -> Vec<serde_json::Value> {
    let (status, doc) = world
        .request("GET", "/v1/admin/drains", Some(ADMIN_TOKEN), "")
        .await;
    assert_eq!(status, 200, "{doc}");
    (doc.as_array().unwrap().iter())
        .filter(|d| d["created_by"] == "rollout")
        .cloned()
        .collect()
}

/// Passes until the newest rollout drain is in `state`; that drain.
async fn until_rollout(world: &World, state: &str) -> serde_json::Value {
    for _ in 0..400 {
        world.pass().await;
        let listed = rollouts(world).await;
        if listed.first().is_some_and(|d| d["state"] == state) {
            return listed[0].clone();
        }
        let users = world.store.list_users().await.unwrap();
        let moving = (users.iter())
            .filter(|u| u.state == UserState::Migrating)
            .count();
        assert!(moving <= 2, "{moving} moves at once, above the bound of 2");
    }
    panic!("no rollout {state}: {:?}", rollouts(world).await);
}

/// Each user's (instance, rule, target group).
async fn placements(world: &World, users: &[&str]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for user in users {
        let row = world.user_row(user).await;
        out.push((
            row.instance_id.expect("an instance").0,
            row.routing.rule_arn.expect("a rule"),
            row.routing.target_group_arn.expect("a target group"),
        ));
    }
    out
}

#[tokio::test]
async fn a_new_image_replaces_the_spares_and_moves_every_user_with_its_route() {
    let world = World::new(1, 10).await;
    world.run_until_quiet(20).await;
    let users = ["alice", "bob", "carol"];
    for user in users {
        world.ready_user(user, "{}").await;
    }
    world.run_until_quiet(20).await;
    assert!(
        rollouts(&world).await.is_empty(),
        "a first sight rolls nothing out"
    );
    let before = placements(&world, &users).await;
    let old_spares = world
        .ledger_ids(spotpool::model::InstanceStatus::Available)
        .await;
    assert!(!old_spares.is_empty());

    let body = serde_json::json!({"container_image": NEW_IMAGE}).to_string();
    let (status, doc) = world
        .request("PUT", "/v1/admin/pool/default", Some(ADMIN_TOKEN), &body)
        .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["container_image"], NEW_IMAGE);
    let done = until_rollout(&world, "done").await;
    assert_eq!(done["moved"], 3, "{done}");
    assert_eq!(done["failed"], 0, "{done}");
    assert_eq!(
        done["selector"],
        serde_json::json!({"tier": "default", "outdated": true})
    );
    world.run_until_quiet(30).await;

    let after = placements(&world, &users).await;
    for (user, (was, now)) in users.iter().zip(before.iter().zip(&after)) {
        assert_ne!(was.0, now.0, "{user} is on a new instance");
        assert_eq!(
            (&was.1, &was.2),
            (&now.1, &now.2),
            "{user}'s route is unchanged"
        );
        let (_, doc) = world.get_user(user).await;
        assert_eq!(doc["state"], "ready", "{doc}");
        let id = InstanceId(now.0.clone());
        let record = world.store.get_instance(&id).await.unwrap().unwrap();
        assert_eq!(record.image.as_deref(), Some(NEW_IMAGE), "{user}");
        let started = (world.cloud.commands().into_iter())
            .filter(|c| c.instance == id && c.script.contains("docker run"))
            .count();
        assert!(started >= 1, "{user}'s container was started on {id}");
        assert!(
            (world.cloud.commands().iter())
                .filter(|c| c.instance == id)
                .all(|c| !c.script.contains(":latest")),
            "nothing on {id} pulls the old image"
        );
    }
    let live: Vec<String> = (world.cloud.live_instances().into_iter())
        .map(|i| i.id.0)
        .collect();
    for (old, _, _) in &before {
        assert!(!live.contains(old), "{old} was retired");
    }
    for spare in &old_spares {
        assert!(!live.contains(spare), "the old spare {spare} was replaced");
    }
    let ledger = world.store.list_instances().await.unwrap();
    assert!(
        ledger
            .iter()
            .all(|r| r.image.as_deref().is_none_or(|i| i == NEW_IMAGE)),
        "{ledger:?}"
    );
    let journal = world.store.journal_since(0, 100_000).await.unwrap();
    let started: Vec<_> = journal
        .iter()
        .filter(|e| e.kind == "rollout.started")
        .collect();
    assert_eq!(started.len(), 1);
    assert!(
        started[0].message.contains(NEW_IMAGE),
        "{}",
        started[0].message
    );

    // A restart with the same settings rolls nothing out again.
    let restarted = world.restart().await;
    restarted.run_until_quiet(20).await;
    assert_eq!(rollouts(&restarted).await.len(), 1);
    restarted.assert_no_leaks().await;
}

#[tokio::test]
async fn a_reloaded_launch_template_version_moves_users_to_instances_launched_from_it() {
    let world = World::new(1, 10).await;
    world.run_until_quiet(20).await;
    for user in ["alice", "bob"] {
        world.ready_user(user, "{}").await;
    }
    world.run_until_quiet(20).await;
    let mut reloaded = world.config.tiers.get().to_vec();
    let old = reloaded[0].runtime.launch.clone();
    reloaded[0].runtime.launch.version = "9".into();
    let changes = world.config.tiers.reload(reloaded).unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");

    let done = until_rollout(&world, "done").await;
    assert_eq!(done["moved"], 2, "{done}");
    world.run_until_quiet(30).await;
    for user in ["alice", "bob"] {
        let row = world.user_row(user).await;
        let id = row.instance_id.expect("an instance");
        let launched = world.cloud.instance(&id).unwrap().launch_template;
        assert_eq!(
            launched.version, "9",
            "{user} runs on an instance of the new version"
        );
        let record = world.store.get_instance(&id).await.unwrap().unwrap();
        assert_eq!(record.launch_template, Some(format!("{}:9", old.id)));
    }
    for instance in world.cloud.live_instances() {
        assert_eq!(instance.launch_template.version, "9", "{}", instance.id.0);
    }
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_rollout_whose_moves_fail_pauses_and_a_newer_change_replaces_it() {
    let world = World::new(1, 10).await;
    world.run_until_quiet(20).await;
    for user in ["alice", "bob", "carol"] {
        world.ready_user(user, "{}").await;
    }
    world.run_until_quiet(20).await;
    let before = placements(&world, &["alice", "bob", "carol"]).await;
    // Secrets Manager refuses to bind a secret to another instance from now on: every move
    // fails before anything left the old instance, and its user stays where it was.
    world
        .cloud
        .fail_always("TagResource", Some(spotpool::cloud::CloudErrorKind::Fatal));
    let body = serde_json::json!({"container_image": NEW_IMAGE}).to_string();
    let (status, _) = world
        .request("PUT", "/v1/admin/pool/default", Some(ADMIN_TOKEN), &body)
        .await;
    assert_eq!(status, 200);
    let paused = until_rollout(&world, "paused").await;
    assert_eq!(paused["failed"], 3, "{paused}");
    world.run_until_quiet(40).await;
    let after = placements(&world, &["alice", "bob", "carol"]).await;
    assert_eq!(
        before, after,
        "users whose move failed stay where they were"
    );
    for user in ["alice", "bob", "carol"] {
        let (_, doc) = world.get_user(user).await;
        assert_eq!(doc["state"], "ready", "{doc}");
    }
    let journal = world.store.journal_since(0, 100_000).await.unwrap();
    assert!(journal.iter().any(|e| e.kind == "drain.paused"));

    // On-call goes back to the configured image: a newer rollout replaces the paused one.
    world.cloud.fail_always("TagResource", None);
    let body = serde_json::json!({"container_image": null}).to_string();
    let (status, doc) = world
        .request("PUT", "/v1/admin/pool/default", Some(ADMIN_TOKEN), &body)
        .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["container_image"], "ghcr.io/openclaw/openclaw:latest");
    let done = until_rollout(&world, "done").await;
    assert_ne!(done["id"], paused["id"]);
    let listed = rollouts(&world).await;
    assert_eq!(listed[1]["id"], paused["id"]);
    assert_eq!(listed[1]["state"], "cancelled", "replaced");
    world.run_until_quiet(30).await;
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn bad_versions_are_refused_and_change_nothing() {
    let world = World::new(0, 10).await;
    for body in [
        serde_json::json!({"container_image": ""}),
        serde_json::json!({"container_image": "gw; rm -rf /"}),
        serde_json::json!({"container_image": 7}),
        serde_json::json!({"launch_template_version": "latest"}),
        serde_json::json!({"launch_template_version": "$Newest"}),
        serde_json::json!({"launch_template_version": "12345678901"}),
    ] {
        let (status, doc) = world
            .request(
                "PUT",
                "/v1/admin/pool/default",
                Some(ADMIN_TOKEN),
                &body.to_string(),
            )
            .await;
        assert_eq!(status, 400, "{body} → {doc}");
        assert_eq!(doc["error"]["code"], "invalid_body", "{body} → {doc}");
    }
    assert!(world.store.tier_overrides().await.unwrap().is_empty());
    let body = serde_json::json!({"launch_template_version": "$Latest"}).to_string();
    let (status, doc) = world
        .request("PUT", "/v1/admin/pool/default", Some(ADMIN_TOKEN), &body)
        .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["launch_template_version"], "$Latest");
}

#[tokio::test]
async fn a_broken_image_halts_the_tier_and_going_back_lets_it_launch_again() {
    let world = World::new(1, 10).await;
    world.run_until_quiet(20).await;
    let broken = "ghcr.io/openclaw/openclaw:broken";
    // Every probe or start that pulls it fails.
    world.cloud.command_outcome(
        broken,
        spotpool::cloud::CommandStatus::Failed("spotpool: image missing".into()),
    );
    let body = serde_json::json!({"container_image": broken}).to_string();
    let (status, _) = world
        .request("PUT", "/v1/admin/pool/default", Some(ADMIN_TOKEN), &body)
        .await;
    assert_eq!(status, 200);
    let mut halted = false;
    for _ in 0..400 {
        world.pass().await;
        world.advance(60_000);
        let journal = world.store.journal_since(0, 100_000).await.unwrap();
        if journal.iter().any(|e| e.kind == "pool.launch_halted") {
            halted = true;
            break;
        }
    }
    assert!(halted, "the broken image's probes halt the tier");

    // Back to the configured image: a new version, so the halt (the broken one's) is lifted.
    let body = serde_json::json!({"container_image": null}).to_string();
    let (status, _) = world
        .request("PUT", "/v1/admin/pool/default", Some(ADMIN_TOKEN), &body)
        .await;
    assert_eq!(status, 200);
    let launches = world.cloud.count_calls("RunInstances");
    world.run_until_quiet(40).await;
    world.ready_user("alice", "{}").await;
    world.run_until_quiet(40).await;
    assert!(
        world.cloud.count_calls("RunInstances") > launches,
        "the tier launches again"
    );
    assert_eq!(
        world
            .ledger_count(spotpool::model::InstanceStatus::Available)
            .await,
        1,
        "its spare is back"
    );
}
