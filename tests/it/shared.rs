//! Shared-density tiers on the fake (ARCHITECTURE.md, "Shared tiers"): four users of a tier of
//! four slots end ready on one instance, each with a target group of its own registering that
//! instance at its slot's port and a workspace at its slot's device; a fifth opens a second
//! instance; a release wipes its slot, which the next user takes; the last user leaving retires
//! the instance; an interruption moves every user.

use crate::world::World;
use spotpool::app::App;
use spotpool::config::{Settings, TierSettings};
use spotpool::interruption_feed::NoticeKind;
use spotpool::model::{InstanceId, InstanceStatus};

const PORT: u16 = 18789;

/// One tier, `shared`, of four slots on t3.large, keeping one free slot ready.
fn shared_world_config() -> spotpool::reconcile::ReconcilerConfig {
    let config = Settings {
        tier: Some(vec![TierSettings {
            name: Some("shared".into()),
            instance_types: Some(vec!["t3.large".into()]),
            spare_count: Some(1),
            max_instances: Some(4),
            slots_per_instance: Some(4),
            ..TierSettings::default()
        }]),
        ..crate::world::test_settings(0, 0)
    }
    .into_config()
    .expect("a valid shared tier");
    App::reconciler_config(&config)
}

/// Each user's (instance, slot), from the store.
async fn placement(world: &World, user: &str) -> (InstanceId, u32) {
    let row = world.user_row(user).await;
    (row.instance_id.expect("an instance"), row.slot)
}

#[tokio::test]
async fn four_users_share_one_instance_each_on_its_port_and_a_fifth_opens_another() {
    let world = World::with_config(shared_world_config()).await;
    world.run_until_quiet(20).await;
    for user in ["ann", "bob", "cat", "dan"] {
        world.ready_user(user, "{}").await;
    }
    world.run_until_quiet(20).await;
    let mut slots = Vec::new();
    let first = placement(&world, "ann").await.0;
    for user in ["ann", "bob", "cat", "dan"] {
        let (instance, slot) = placement(&world, user).await;
        assert_eq!(instance, first, "{user} is on the shared instance");
        slots.push(slot);
        // Its own target group registers the instance at the slot's port.
        let row = world.user_row(user).await;
        let group = row.routing.target_group_arn.expect("a target group");
        let fake = (world.cloud.target_groups().into_iter())
            .find(|g| g.arn == group)
            .expect("the group exists");
        assert_eq!(fake.targets, vec![first.clone()], "{user}");
        assert_eq!(fake.target_ports[&first.0], PORT + slot as u16, "{user}");
        // Its start published that port on a network of its own.
        let start = (world.cloud.commands().into_iter())
            .rev()
            .find(|c| c.instance == first && c.script.contains(&format!("USER_ID='{user}'")))
            .expect("a start");
        assert!(
            start
                .script
                .contains(&format!("\nHOST_PORT='{}'\n", PORT + slot as u16))
        );
        assert!(start.script.contains("\nSHARED='1'\n"), "{user}");
    }
    slots.sort_unstable();
    assert_eq!(slots, [0, 1, 2, 3]);
    // The pool document names every user of the instance, by slot.
    let (_, pool) = world
        .request("GET", "/v1/pool", Some(crate::world::ADMIN_TOKEN), "")
        .await;
    let doc = (pool["tiers"][0]["instances"].as_array().unwrap().iter())
        .find(|i| i["instance_id"] == first.0.as_str())
        .expect("the instance is listed")
        .clone();
    let on: Vec<(String, u64)> = (doc["users"].as_array().unwrap().iter())
        .map(|h| {
            (
                h["user_id"].as_str().unwrap().to_string(),
                h["slot"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        on.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        [0, 1, 2, 3],
        "{doc}"
    );
    let mut names: Vec<&str> = on.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(doc["user_id"], names[0], "{doc}");
    names.sort_unstable();
    assert_eq!(names, ["ann", "bob", "cat", "dan"]);
    let groups: std::collections::BTreeSet<String> = (world.cloud.target_groups().into_iter())
        .filter(|g| g.targets.contains(&first))
        .map(|g| g.arn)
        .collect();
    assert_eq!(groups.len(), 4, "four distinct target groups");

    // The fifth opens a second instance: the first is full.
    world.ready_user("eve", "{}").await;
    let (second, slot) = placement(&world, "eve").await;
    assert_ne!(second, first);
    assert_eq!(slot, 0);
    let live = world.cloud.live_instances();
    assert!(live.iter().all(|i| i.instance_type == "t3.large"));
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_release_wipes_its_slot_for_the_next_user_and_the_last_to_leave_retires_the_instance() {
    let world = World::with_config(shared_world_config()).await;
    world.run_until_quiet(20).await;
    for user in ["ann", "bob"] {
        world.ready_user(user, "{}").await;
    }
    let (instance, bob_slot) = placement(&world, "bob").await;
    world.delete_user("bob").await;
    world.run_until_quiet(30).await;
    let bob = spotpool::model::UserId::parse("bob").unwrap();
    assert!(world.store.get_user(&bob).await.unwrap().is_none());
    let wipe = (world.cloud.commands().into_iter())
        .find(|c| c.instance == instance && c.comment.contains("wipe the slot of bob"))
        .expect("bob's slot was wiped");
    assert!(wipe.script.contains("\nWIPE='1'\n"));
    assert!(
        world.store.slot_wipes().await.unwrap().is_empty(),
        "wiped, the slot is free"
    );
    // The next user gets bob's slot back on the same instance (ann's keeps it from retiring).
    world.ready_user("cat", "{}").await;
    assert_eq!(placement(&world, "cat").await, (instance.clone(), bob_slot));

    for user in ["ann", "cat"] {
        world.delete_user(user).await;
    }
    world.run_until_quiet(40).await;
    let record = world.store.get_instance(&instance).await.unwrap();
    assert!(
        record
            .as_ref()
            .is_none_or(|r| r.status == InstanceStatus::Terminating),
        "the last user's leaving retired it: {record:?}"
    );
    assert!(
        !world
            .cloud
            .live_instances()
            .iter()
            .any(|i| i.id == instance),
        "terminated"
    );
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn an_interruption_of_a_shared_instance_moves_every_user_with_its_route() {
    let world = World::with_config(shared_world_config()).await;
    world.run_until_quiet(20).await;
    let users = ["ann", "bob", "cat"];
    for user in users {
        world.ready_user(user, "{}").await;
    }
    world.run_until_quiet(20).await;
    let (old, _) = placement(&world, "ann").await;
    let routes: Vec<_> = {
        let mut out = Vec::new();
        for user in users {
            out.push(world.user_row(user).await.routing.rule_arn);
        }
        out
    };
    world
        .notice("ev-1", NoticeKind::SpotInterruptionWarning, &old)
        .await;
    world.run_until_quiet(80).await;
    for (user, rule) in users.iter().zip(&routes) {
        let (_, doc) = world.get_user(user).await;
        assert_eq!(doc["state"], "ready", "{doc}");
        let (now, _) = placement(&world, user).await;
        assert_ne!(now, old, "{user} moved off");
        assert_eq!(
            &world.user_row(user).await.routing.rule_arn,
            rule,
            "{user}'s route kept"
        );
    }
    assert!(
        !world.cloud.live_instances().iter().any(|i| i.id == old),
        "the interrupted instance is gone once empty"
    );
    world.assert_no_leaks().await;
}
