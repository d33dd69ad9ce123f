//! The health watch on the fake (ARCHITECTURE.md, "Health watch"), each branch: a container the
//! load balancer reports failing is restarted over SSM once its grace is over, and recovers; one
//! that fails again within the window is a crash loop, and the user moves once to a fresh
//! instance with its workspace; failing there too, it is left `ready` with `health: crash_loop`
//! and the cause, and nothing more is done; the reads keep to the budget, longest unread first.

use crate::world::World;
use spotpool::model::{InstanceId, UserState};

/// Past the grace after a start or a restart.
const PAST_GRACE: i64 = 4 * 60_000;

fn restarts(world: &World, user: &str) -> usize {
    world
        .cloud
        .commands()
        .iter()
        .filter(|c| c.comment.contains("restart the user's container"))
        .filter(|c| c.script.contains(&format!("USER_ID='{user}'")))
        .count()
}

async fn journal(world: &World, kind: &str) -> Vec<String> {
    let entries = world.store.journal_since(0, 100_000).await.unwrap();
    entries
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.message)
        .collect()
}

async fn health_of(world: &World, user: &str) -> (serde_json::Value, serde_json::Value) {
    let (_, doc) = world.get_user(user).await;
    (doc["health"].clone(), doc["health_cause"].clone())
}

fn instance_of(doc: &serde_json::Value) -> InstanceId {
    InstanceId(doc["instance_id"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn a_failing_container_is_restarted_after_its_grace_and_recovers() {
    let world = World::new(1, 4).await;
    let doc = world.ready_user("alice", "{}").await;
    let instance = instance_of(&doc);
    world.pass().await;
    assert_eq!(health_of(&world, "alice").await.0, "healthy");

    world.cloud.set_unhealthy(&instance, true);
    // Within the grace after the first reading: nothing yet.
    world.pass().await;
    assert_eq!(restarts(&world, "alice"), 0);
    world.advance(PAST_GRACE);
    world.pass().await;
    assert_eq!(restarts(&world, "alice"), 1);
    let (health, cause) = health_of(&world, "alice").await;
    assert_eq!(health, "restarting");
    assert!(cause.as_str().unwrap().contains("[502]"), "{cause}");
    let restarted = journal(&world, "health.restarted").await;
    assert_eq!(restarted.len(), 1);
    // The restart names no secret: the container keeps its environment.
    let command = world
        .cloud
        .commands()
        .into_iter()
        .find(|c| c.comment.contains("restart"))
        .unwrap();
    assert!(command.script.contains("docker restart --time 20"));
    assert!(!command.script.contains("secretsmanager"));
    // Still failing within the restart's grace: no second restart.
    world.pass().await;
    assert_eq!(restarts(&world, "alice"), 1);

    world.cloud.set_unhealthy(&instance, false);
    world.pass().await;
    assert_eq!(
        health_of(&world, "alice").await,
        ("healthy".into(), serde_json::Value::Null)
    );
    assert_eq!(journal(&world, "health.recovered").await.len(), 1);
    assert_eq!(world.user_state("alice").await, Some(UserState::Ready));
    assert_eq!(world.user_row("alice").await.instance_id, Some(instance));
}

#[tokio::test]
async fn a_crash_loop_moves_the_user_once_with_its_workspace_then_is_left_for_on_call() {
    let world = World::new(1, 4).await;
    let doc = world.ready_user("alice", "{}").await;
    let first = instance_of(&doc);
    let volume = doc["workspace"]["volume_id"].clone();
    world.pass().await;
    world.cloud.set_unhealthy(&first, true);
    world.advance(PAST_GRACE);
    world.pass().await;
    assert_eq!(restarts(&world, "alice"), 1);
    // Failing again after the restart's grace, within the window: a crash loop; it moves.
    world.advance(PAST_GRACE);
    world.pass().await;
    assert_eq!(health_of(&world, "alice").await.0, "recycling");
    let row = world.user_row("alice").await;
    assert_eq!(row.state, UserState::Migrating);
    assert_eq!(
        row.moving.as_ref().map(|m| m.reason.as_str()),
        Some("crash_loop")
    );
    let loops = journal(&world, "health.crash_loop").await;
    assert_eq!(loops.len(), 1);
    assert!(loops[0].contains("moving the user"), "{loops:?}");
    world.run_until_quiet(40).await;
    let (_, doc) = world.get_user("alice").await;
    assert_eq!(doc["state"], "ready", "{doc}");
    let second = instance_of(&doc);
    assert_ne!(second, first);
    assert_eq!(
        doc["workspace"]["volume_id"], volume,
        "the workspace moved with it"
    );
    assert_eq!(doc["workspace"]["attached_to"], second.0.as_str());

    // It fails on the fresh instance too: left ready, `crash_loop`, with the cause; no more
    // restarts, no more moves.
    world.cloud.set_unhealthy(&second, true);
    world.pass().await;
    world.advance(PAST_GRACE);
    world.pass().await;
    let (health, cause) = health_of(&world, "alice").await;
    assert_eq!(health, "crash_loop");
    assert!(
        cause.as_str().unwrap().contains("ResponseCodeMismatch"),
        "{cause}"
    );
    let loops = journal(&world, "health.crash_loop").await;
    assert_eq!(loops.len(), 2);
    assert!(loops[1].contains("left ready"), "{loops:?}");
    for _ in 0..3 {
        world.advance(PAST_GRACE);
        world.pass().await;
    }
    assert_eq!(restarts(&world, "alice"), 1);
    assert_eq!(journal(&world, "health.crash_loop").await.len(), 2);
    let row = world.user_row("alice").await;
    assert_eq!(row.state, UserState::Ready);
    assert_eq!(row.instance_id, Some(second));
    world.assert_no_leaks().await;
}

/// At one read a second and a pass a second, the reads never exceed the bucket (20, refilled
/// one a second), and the rotation reaches every user: three failing users are each restarted
/// once, none twice, none left out.
#[tokio::test]
async fn the_reads_keep_to_the_budget_and_reach_every_user() {
    let mut config = crate::world::reconciler_config(3, 6);
    config.health_checks_per_second = 1.0;
    let world = World::with_config(config).await;
    let users = ["ann", "bob", "cat"];
    for user in users {
        let doc = world.ready_user(user, "{}").await;
        world.cloud.set_unhealthy(&instance_of(&doc), true);
    }
    world.cloud.clear_calls();
    let mut passes = 0;
    while users.iter().any(|u| restarts(&world, u) == 0) {
        assert!(passes < 600, "every user restarted within 10 minutes");
        world.pass().await;
        passes += 1;
        // A second a pass: the bucket's 20 plus one a second, at most.
        assert!(world.cloud.count_calls("DescribeTargetHealth") <= 20 + passes);
    }
    for user in users {
        assert_eq!(restarts(&world, user), 1, "{user}");
    }
}

/// On a shared instance a crash loop is one user's container's: that user alone moves (with its
/// workspace); its neighbour stays served where it is, and the instance is not recycled.
#[tokio::test]
async fn a_crash_loop_on_a_shared_instance_moves_that_user_alone() {
    let world = crate::shared_moves::shared_world().await;
    world.ready_user("alice", r#"{"tier":"shared"}"#).await;
    world.ready_user("bob", r#"{"tier":"shared"}"#).await;
    let alice = world.user_row("alice").await;
    let shared = alice.instance_id.clone().unwrap();
    assert_eq!(
        world.user_row("bob").await.instance_id,
        Some(shared.clone())
    );
    let group = alice.routing.target_group_arn.clone().unwrap();
    world.pass().await;
    world.cloud.set_target_unhealthy(&group, &shared, true);
    world.advance(PAST_GRACE);
    world.pass().await;
    assert_eq!((restarts(&world, "alice"), restarts(&world, "bob")), (1, 0));
    world.advance(PAST_GRACE);
    world.pass().await;
    assert_eq!(world.user_state("alice").await, Some(UserState::Migrating));
    assert_eq!(world.user_state("bob").await, Some(UserState::Ready));
    world.run_until_quiet(40).await;
    let (alice, bob) = (world.user_row("alice").await, world.user_row("bob").await);
    assert_eq!(alice.state, UserState::Ready);
    assert_ne!(alice.instance_id, Some(shared.clone()), "alice moved");
    assert_eq!(
        alice.workspace.as_ref().and_then(|w| w.attached_to.clone()),
        alice.instance_id
    );
    assert_eq!(bob.state, UserState::Ready);
    assert_eq!(bob.instance_id, Some(shared.clone()), "bob stayed");
    let record = world.store.get_instance(&shared).await.unwrap().unwrap();
    assert_eq!(
        record.recycle_requested_at, None,
        "the instance is not recycled"
    );
    assert_eq!(
        world.cloud.instance(&shared).unwrap().lifecycle,
        spotpool::cloud::Lifecycle::Running
    );
    world.assert_no_leaks().await;
}
