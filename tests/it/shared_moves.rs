//! Claims, moves and drains of shared instances on the fake (ARCHITECTURE.md, "Shared tiers"
//! and "Drains"): two claims of one instance run in the same pass; a claim that rolls back
//! before its start gives the instance back; a drain moves every user of a matching instance,
//! counts each, and keeps claims off it meanwhile; moves given up off an instance being emptied
//! are not asked again, and a drain counts them as failed.

use crate::world::{ADMIN_TOKEN, World};
use spotpool::app::App;
use spotpool::cloud::CloudErrorKind;
use spotpool::config::{Settings, TierSettings};
use spotpool::model::{InstanceId, InstanceStatus, UserState};

/// One tier, `shared`, of four slots on t3.large (t3a.large where a drain keeps it off
/// t3.large), keeping one free slot ready.
pub(crate) async fn shared_world() -> World {
    let config = Settings {
        tier: Some(vec![TierSettings {
            name: Some("shared".into()),
            instance_types: Some(vec!["t3.large".into(), "t3a.large".into()]),
            spare_count: Some(1),
            max_instances: Some(6),
            slots_per_instance: Some(4),
            ..TierSettings::default()
        }]),
        ..crate::world::test_settings(0, 0)
    }
    .into_config()
    .expect("a valid shared tier");
    World::with_config(App::reconciler_config(&config)).await
}

async fn instance_of(world: &World, user: &str) -> InstanceId {
    world.user_row(user).await.instance_id.expect("an instance")
}

fn type_of(world: &World, instance: &InstanceId) -> String {
    world.cloud.instance(instance).expect("known").instance_type
}

async fn admin(
    world: &World,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let (status, doc) = world
        .request(method, path, Some(ADMIN_TOKEN), &body.to_string())
        .await;
    assert!(status.is_success(), "{method} {path}: {status} {doc}");
    doc
}

/// The kinds of the journal's entries, in order.
async fn journal_kinds(world: &World) -> Vec<String> {
    let journal = world.store.journal_since(0, 100_000).await.unwrap();
    journal.into_iter().map(|e| e.kind).collect()
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

/// ann and bob ready on one shared instance, which it returns.
async fn ann_and_bob_on_one_instance() -> (World, InstanceId) {
    let world = shared_world().await;
    world.run_until_quiet(20).await;
    for user in ["ann", "bob"] {
        world.ready_user(user, "{}").await;
    }
    let old = instance_of(&world, "ann").await;
    assert_eq!(instance_of(&world, "bob").await, old);
    (world, old)
}

/// Starts a drain of t3.large that pauses only after five failed moves.
async fn drain_t3_large(world: &World) {
    let body = serde_json::json!({
        "selector": {"instance_types": ["t3.large"]},
        "dry_run": false,
        "max_failures": 5,
    });
    admin(world, "POST", "/v1/admin/drain", body).await;
}

#[tokio::test]
async fn two_claims_of_one_shared_instance_run_in_the_same_pass() {
    let world = shared_world().await;
    world.run_until_quiet(20).await;
    world.put_user("ann", "{}").await;
    world.put_user("bob", "{}").await;
    world.pass().await;
    let (ann, bob) = (world.user_row("ann").await, world.user_row("bob").await);
    assert!(
        ann.instance_id.is_some() && ann.instance_id == bob.instance_id,
        "both claims took a slot of the one instance in one pass: {:?} {:?}",
        ann.instance_id,
        bob.instance_id
    );
    assert_ne!(ann.slot, bob.slot);
    world.run_until_quiet(30).await;
    for user in ["ann", "bob"] {
        assert_eq!(world.user_state(user).await, Some(UserState::Ready));
    }
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_claim_rolled_back_before_its_start_gives_the_shared_instance_back() {
    let world = shared_world().await;
    world.run_until_quiet(20).await;
    let spare = world.store.list_instances().await.unwrap()[0]
        .instance_id
        .clone();
    // Binding the secret to the instance, the claim's first step, fails once: the claim rolls
    // back before anything started there.
    world
        .cloud
        .fail_next("TagResource", CloudErrorKind::Fatal, 1);
    world.put_user("ann", "{}").await;
    world.run_until_quiet(40).await;
    assert_eq!(world.user_state("ann").await, Some(UserState::Ready));
    let kinds = journal_kinds(&world).await;
    assert!(
        kinds.iter().any(|k| k.starts_with("rollback")),
        "the claim rolled back: {kinds:?}"
    );
    assert_eq!(
        world.cloud.count_calls("TerminateInstances"),
        0,
        "no instance was retired: {kinds:?}"
    );
    assert!(world.cloud.live_instances().iter().any(|i| i.id == spare));
    let record = world.store.get_instance(&spare).await.unwrap().unwrap();
    assert_ne!(record.status, InstanceStatus::Terminating);
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_drain_moves_every_user_of_a_shared_instance_and_keeps_claims_off_it() {
    let world = shared_world().await;
    world.run_until_quiet(20).await;
    // Four users fill the first instance; the fifth opens a second.
    for user in ["ann", "bob", "cat", "dan", "eve"] {
        world.ready_user(user, "{}").await;
    }
    let (full, second) = (
        instance_of(&world, "ann").await,
        instance_of(&world, "eve").await,
    );
    for user in ["bob", "cat", "dan"] {
        assert_eq!(instance_of(&world, user).await, full);
    }
    assert_ne!(full, second);
    for instance in [&full, &second] {
        assert_eq!(type_of(&world, instance), "t3.large");
    }

    // The dry run names every user of both instances.
    let dry = admin(
        &world,
        "POST",
        "/v1/admin/drain",
        serde_json::json!({"selector": {"instance_types": ["t3.large"]}}),
    )
    .await;
    let mut named: Vec<&str> = (dry["remaining"]["users"].as_array().unwrap().iter())
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    named.sort_unstable();
    assert_eq!(named, ["ann", "bob", "cat", "dan", "eve"], "{dry}");

    // One move at a time: the full instance's four users still go together (a move empties a
    // shared instance), alone, and each counts; the second waits its turn, and takes no claim
    // meanwhile although it has free slots.
    let started = admin(
        &world,
        "POST",
        "/v1/admin/drain",
        serde_json::json!({
            "selector": {"instance_types": ["t3.large"]},
            "dry_run": false,
            "max_concurrent_moves": 1,
        }),
    )
    .await;
    let mut done = None;
    for pass in 0..300 {
        world.pass().await;
        if pass == 0 {
            world.put_user("fay", "{}").await;
        }
        let listed = admin(&world, "GET", "/v1/admin/drains", serde_json::json!({})).await;
        if listed[0]["state"] == "done" {
            done = Some(listed[0].clone());
            break;
        }
    }
    let done = done.expect("the drain ends");
    assert_eq!(done["id"], started["id"]);
    assert_eq!(
        (done["moved"].as_u64(), done["failed"].as_u64()),
        (Some(5), Some(0)),
        "the five users of the two instances, not fay: {done}"
    );
    world.run_until_quiet(40).await;
    for user in ["ann", "bob", "cat", "dan", "eve", "fay"] {
        assert_eq!(
            world.user_state(user).await,
            Some(UserState::Ready),
            "{user}"
        );
        let on = instance_of(&world, user).await;
        assert_eq!(type_of(&world, &on), "t3a.large", "{user}");
    }
    let live = world.cloud.live_instances();
    assert!(!live.iter().any(|i| i.id == full || i.id == second));
    assert_eq!(count(&journal_kinds(&world).await, "drain.move"), 5);
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn moves_given_up_off_a_shared_instance_are_not_asked_again_and_a_drain_counts_them() {
    let (world, old) = ann_and_bob_on_one_instance().await;
    // Secrets Manager refuses to bind a secret to another instance from now on: every move
    // fails at its first step, before anything left the old instance, and is given up.
    world
        .cloud
        .fail_always("TagResource", Some(CloudErrorKind::Fatal));
    let answer = admin(
        &world,
        "POST",
        &format!("/v1/admin/instances/{}/recycle", old.0),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(
        answer["user_ids"],
        serde_json::json!(["ann", "bob"]),
        "{answer}"
    );
    assert_eq!(answer["user_id"], "ann");
    world.run_until_quiet(80).await;
    let kinds = journal_kinds(&world).await;
    assert_eq!(count(&kinds, "move.abandoned"), 2, "{kinds:?}");
    let begun = count(&kinds, "move.begin");
    // Quiet means nothing more is asked: the given-up moves do not start again.
    world.run_until_quiet(20).await;
    assert_eq!(count(&journal_kinds(&world).await, "move.begin"), begun);
    for user in ["ann", "bob"] {
        assert_eq!(world.user_state(user).await, Some(UserState::Ready));
        assert_eq!(instance_of(&world, user).await, old, "{user} stayed");
    }

    // A drain of the type finds the instance asked to recycle already, with every user's move
    // given up since: both count as failed moves, and the drain ends.
    drain_t3_large(&world).await;
    world.run_until_quiet(40).await;
    let listed = admin(&world, "GET", "/v1/admin/drains", serde_json::json!({})).await;
    assert_eq!(listed[0]["state"], "done", "{}", listed[0]);
    assert_eq!(listed[0]["failed"], 2, "{}", listed[0]);
    assert_eq!(listed[0]["moved"], 0, "{}", listed[0]);
    assert_eq!(count(&journal_kinds(&world).await, "move.begin"), begun);
    world.cloud.fail_always("TagResource", None);
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_drains_own_moves_given_up_off_a_shared_instance_count_as_failed() {
    let (world, old) = ann_and_bob_on_one_instance().await;
    world
        .cloud
        .fail_always("TagResource", Some(CloudErrorKind::Fatal));
    drain_t3_large(&world).await;
    world.run_until_quiet(80).await;
    let listed = admin(&world, "GET", "/v1/admin/drains", serde_json::json!({})).await;
    assert_eq!(listed[0]["state"], "done", "{}", listed[0]);
    assert_eq!(
        (listed[0]["moved"].as_u64(), listed[0]["failed"].as_u64()),
        (Some(0), Some(2)),
        "{}",
        listed[0]
    );
    let kinds = journal_kinds(&world).await;
    assert_eq!(count(&kinds, "drain.move"), 2, "{kinds:?}");
    assert_eq!(
        count(&kinds, "move.begin"),
        2,
        "each user was asked once: {kinds:?}"
    );
    for user in ["ann", "bob"] {
        assert_eq!(world.user_state(user).await, Some(UserState::Ready));
        assert_eq!(instance_of(&world, user).await, old, "{user} stayed");
    }
    world.cloud.fail_always("TagResource", None);
    world.assert_no_leaks().await;
}
