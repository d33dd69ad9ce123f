//! Drains on the fake (`POST /v1/admin/drain`): an instance type emptied a move at a time while
//! claims and launches keep off it; a dry run that changes nothing; a drain that pauses after
//! its failed moves, leaving those users where they were; a cancel.

use crate::world::{ADMIN_TOKEN, World, test_settings};
use spotpool::app::App;
use spotpool::config::Settings;
use spotpool::model::{InstanceId, UserState};

/// A world whose one tier launches t3.small, or t3a.small when it may not.
async fn two_types(spares: u32) -> World {
    let config = Settings {
        user_instance_type: Some("t3.small,t3a.small".into()),
        ..test_settings(spares, 12)
    }
    .into_config()
    .unwrap();
    World::with_config(App::reconciler_config(&config)).await
}

fn type_of(world: &World, doc: &serde_json::Value) -> String {
    let id = InstanceId(
        doc["instance_id"]
            .as_str()
            .expect("an instance")
            .to_string(),
    );
    world
        .cloud
        .instance(&id)
        .expect("a known instance")
        .instance_type
}

async fn drain(world: &World, body: serde_json::Value) -> (u16, serde_json::Value) {
    let (status, doc) = world
        .request(
            "POST",
            "/v1/admin/drain",
            Some(ADMIN_TOKEN),
            &body.to_string(),
        )
        .await;
    (status.as_u16(), doc)
}

async fn drains(world: &World) -> Vec<serde_json::Value> {
    let (status, doc) = world
        .request("GET", "/v1/admin/drains", Some(ADMIN_TOKEN), "")
        .await;
    assert_eq!(status, 200, "{doc}");
    doc.as_array().unwrap().clone()
}

#[tokio::test]
async fn a_drain_of_an_instance_type_moves_every_user_off_it_a_move_at_a_time() {
    let world = two_types(2).await;
    world.run_until_quiet(20).await;
    for user in ["alice", "bob", "carol"] {
        world.ready_user(user, "{}").await;
    }
    world.run_until_quiet(20).await;
    for user in ["alice", "bob", "carol"] {
        let (_, doc) = world.get_user(user).await;
        assert_eq!(type_of(&world, &doc), "t3.small");
    }
    let selector = serde_json::json!({"instance_types": ["t3.small"]});

    // A dry run reports and changes nothing.
    let (status, dry) = drain(&world, serde_json::json!({"selector": selector})).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        dry["remaining"]["users"].as_array().unwrap().len(),
        3,
        "{dry}"
    );
    assert_eq!(
        dry["remaining"]["spares"].as_array().unwrap().len(),
        2,
        "{dry}"
    );
    assert!(drains(&world).await.is_empty());
    let ledger = world.store.list_instances().await.unwrap();
    assert!(ledger.iter().all(|r| r.recycle_requested_at.is_none()));
    let live = world.cloud.live_instances().len();
    world.run_until_quiet(20).await;
    assert_eq!(
        world.cloud.count_calls("TerminateInstances"),
        0,
        "a dry run retired something"
    );
    assert_eq!(world.cloud.live_instances().len(), live);

    let (status, started) = drain(
        &world,
        serde_json::json!({"selector": selector, "dry_run": false, "max_concurrent_moves": 1}),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_i64().unwrap();
    let mut done = false;
    for pass in 0..300 {
        world.pass().await;
        if pass == 2 {
            // A claim while the drain lasts lands off the drained type.
            world.put_user("dave", "{}").await;
        }
        let users = world.store.list_users().await.unwrap();
        let migrating = users
            .iter()
            .filter(|u| u.state == UserState::Migrating)
            .count();
        assert!(migrating <= 1, "pass {pass}: {migrating} moves at once");
        let listed = drains(&world).await;
        assert!(
            listed[0]["in_flight"].as_u64().unwrap() <= 1,
            "{}",
            listed[0]
        );
        if listed[0]["state"] == "done" {
            done = true;
            break;
        }
    }
    assert!(done, "{:?}", drains(&world).await);
    world.run_until_quiet(30).await;
    let listed = drains(&world).await;
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["moved"], 3, "{}", listed[0]);
    assert_eq!(listed[0]["failed"], 0);
    for user in ["alice", "bob", "carol", "dave"] {
        let (_, doc) = world.get_user(user).await;
        assert_eq!(doc["state"], "ready", "{doc}");
        assert_eq!(type_of(&world, &doc), "t3a.small", "{user}");
    }
    let small: Vec<_> = (world.cloud.live_instances().into_iter())
        .filter(|i| i.instance_type == "t3.small")
        .collect();
    assert!(small.is_empty(), "{small:?}");
    let journal = world.store.journal_since(0, 100_000).await.unwrap();
    assert_eq!(journal.iter().filter(|e| e.kind == "drain.move").count(), 3);
    assert!(journal.iter().any(|e| e.kind == "drain.done"));
    // Once done, the pool launches the type again.
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_drain_pauses_after_its_failed_moves_and_those_users_stay_where_they_were() {
    let world = two_types(1).await;
    world.run_until_quiet(20).await;
    for user in ["alice", "bob"] {
        world.ready_user(user, "{}").await;
    }
    world.run_until_quiet(20).await;
    let (_, alice_before) = world.get_user("alice").await;
    let (_, bob_before) = world.get_user("bob").await;
    // Secrets Manager refuses to bind a secret to another instance from now on: every move
    // fails at its first step, before anything left the old instance, so it is rolled back,
    // retried, then given up, and the user stays where it was.
    world
        .cloud
        .fail_always("TagResource", Some(spotpool::cloud::CloudErrorKind::Fatal));
    let (status, started) = drain(
        &world,
        serde_json::json!({
            "selector": {"instance_types": ["t3.small"]},
            "dry_run": false,
            "max_concurrent_moves": 2,
            "max_failures": 1,
        }),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    let mut paused = None;
    for _ in 0..300 {
        world.pass().await;
        let listed = drains(&world).await;
        if listed[0]["state"] == "paused" {
            paused = Some(listed[0].clone());
            break;
        }
    }
    let Some(paused) = paused else {
        panic!("the drain never paused:\n{}", journal_text(&world).await);
    };
    assert!(paused["failed"].as_u64().unwrap() >= 1, "{paused}");
    world.run_until_quiet(40).await;
    for (user, before) in [("alice", &alice_before), ("bob", &bob_before)] {
        let (_, now) = world.get_user(user).await;
        assert_eq!(now["state"], "ready", "{now}");
        assert_eq!(now["instance_id"], before["instance_id"], "{user} stayed");
    }
    let journal = world.store.journal_since(0, 100_000).await.unwrap();
    assert!(journal.iter().any(|e| e.kind == "drain.paused"));
    // Paused, nothing more is asked: bob is not moved again.
    let moves = journal.iter().filter(|e| e.kind == "drain.move").count();
    world.run_until_quiet(40).await;
    let journal = world.store.journal_since(0, 100_000).await.unwrap();
    assert_eq!(
        journal.iter().filter(|e| e.kind == "drain.move").count(),
        moves
    );

    let id = paused["id"].as_i64().unwrap();
    let path = format!("/v1/admin/drains/{id}");
    let (status, cancelled) = world.request("DELETE", &path, Some(ADMIN_TOKEN), "").await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    let (status, again) = world.request("DELETE", &path, Some(ADMIN_TOKEN), "").await;
    assert_eq!(status, 404, "{again}");
    let audit = world.store.audit_log(10).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "drain.cancel" && a.outcome == "ok")
    );
    world.assert_no_leaks().await;
}

/// The journal, one line per entry, for a failure's message.
async fn journal_text(world: &World) -> String {
    let journal = world.store.journal_since(0, 100_000).await.unwrap();
    (journal.iter())
        .map(|e| {
            format!(
                "{} {:?} {:?} {}",
                e.kind, e.user_id, e.instance_id, e.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn bad_drains_are_refused_with_the_reason() {
    let world = two_types(0).await;
    for (body, code) in [
        (serde_json::json!({"selector": {}}), "invalid_selector"),
        (
            serde_json::json!({"selector": {"outdated": false}}),
            "invalid_selector",
        ),
        (
            serde_json::json!({"selector": {"outdated": "yes"}}),
            "invalid_selector",
        ),
        (
            serde_json::json!({"selector": {"tier": "nope"}}),
            "invalid_selector",
        ),
        (
            serde_json::json!({"selector": {"color": "red"}}),
            "invalid_selector",
        ),
        (
            serde_json::json!({"selector": {"instance_types": []}}),
            "invalid_selector",
        ),
        (
            serde_json::json!({"selector": {"instance_ids": ["x".repeat(65)]}}),
            "invalid_selector",
        ),
        (
            serde_json::json!({"selector": {"zones": ["a"]}, "max_concurrent_moves": 0}),
            "invalid_body",
        ),
        (
            serde_json::json!({"selector": {"zones": ["a"]}, "speed": 1}),
            "invalid_body",
        ),
    ] {
        let (status, doc) = drain(&world, body.clone()).await;
        assert_eq!(status, 400, "{body} → {doc}");
        assert_eq!(doc["error"]["code"], code, "{body} → {doc}");
    }
    let (status, _) = world
        .request(
            "POST",
            "/v1/admin/drain",
            Some(crate::world::API_TOKEN),
            "{}",
        )
        .await;
    assert_eq!(status, 403, "the service token may not drain");
    let (status, _) = world
        .request("DELETE", "/v1/admin/drains/x", Some(ADMIN_TOKEN), "")
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_drain_whose_moves_fail_below_its_limit_ends_with_the_failures_counted() {
    let world = two_types(1).await;
    world.run_until_quiet(20).await;
    for user in ["alice", "bob"] {
        world.ready_user(user, "{}").await;
    }
    world.run_until_quiet(20).await;
    world
        .cloud
        .fail_always("TagResource", Some(spotpool::cloud::CloudErrorKind::Fatal));
    let body = serde_json::json!({
        "selector": {"instance_types": ["t3.small"]},
        "dry_run": false,
        "max_failures": 5,
    });
    let (status, started) = drain(&world, body).await;
    assert_eq!(status, 202, "{started}");
    let mut ended = None;
    for _ in 0..300 {
        world.pass().await;
        let listed = drains(&world).await;
        if listed[0]["state"] != "active" {
            ended = Some(listed[0].clone());
            break;
        }
    }
    let Some(ended) = ended else {
        panic!("the drain never ended:\n{}", journal_text(&world).await);
    };
    // Both moves failed, below the limit: the drain ends, saying so, and does not hold the
    // users' instances (nor keep launches off the type) for ever.
    assert_eq!(ended["state"], "done", "{ended}");
    assert_eq!(
        (ended["moved"].as_u64(), ended["failed"].as_u64()),
        (Some(0), Some(2))
    );
    let journal = world.store.journal_since(0, 100_000).await.unwrap();
    let done = journal.iter().find(|e| e.kind == "drain.done").unwrap();
    assert!(
        done.message.contains("2 whose move failed"),
        "{}",
        done.message
    );
}

#[tokio::test]
async fn a_move_on_call_asked_for_is_left_to_on_call_and_not_counted() {
    let world = two_types(1).await;
    world.run_until_quiet(20).await;
    for user in ["alice", "bob"] {
        world.ready_user(user, "{}").await;
    }
    world.run_until_quiet(20).await;
    let (_, alice) = world.get_user("alice").await;
    let old = alice["instance_id"].as_str().unwrap().to_string();
    let path = format!("/v1/admin/instances/{old}/recycle");
    let (status, _) = world.request("POST", &path, Some(ADMIN_TOKEN), "").await;
    assert_eq!(status, 202);
    let body = serde_json::json!({
        "selector": {"instance_types": ["t3.small"]},
        "dry_run": false,
        "max_concurrent_moves": 2,
    });
    let (status, _) = drain(&world, body).await;
    assert_eq!(status, 202);
    for _ in 0..300 {
        world.pass().await;
        if drains(&world).await[0]["state"] == "done" {
            break;
        }
    }
    let listed = drains(&world).await;
    assert_eq!(listed[0]["state"], "done", "{}", listed[0]);
    assert_eq!(
        listed[0]["moved"], 1,
        "only bob's move was the drain's: {}",
        listed[0]
    );
    let journal = world.store.journal_since(0, 100_000).await.unwrap();
    let asked: Vec<_> = (journal.iter())
        .filter(|e| e.kind == "drain.move")
        .map(|e| e.user_id.clone())
        .collect();
    assert_eq!(asked, vec![Some("bob".to_string())]);
    for user in ["alice", "bob"] {
        let (_, doc) = world.get_user(user).await;
        assert_eq!(type_of(&world, &doc), "t3a.small", "{user}");
    }
}

/// A workspace cannot follow a move out of its zone: a zone drain puts such a user to sleep and
/// wakes it, and the wake copies the workspace to a zone with capacity (ARCHITECTURE.md,
/// "Drains").
#[tokio::test]
async fn a_zone_drain_serves_its_users_in_another_zone_with_their_workspaces() {
    let world = two_types(2).await;
    world.run_until_quiet(20).await;
    for user in ["alice", "bob", "carol"] {
        world.ready_user(user, "{}").await;
    }
    world.run_until_quiet(20).await;
    let zone_a = world.cloud.zone_of("subnet-a");
    let mut in_a = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let row = world.user_row(user).await;
        if row.workspace.as_ref().map(|w| w.availability_zone.as_str()) == Some(zone_a.as_str()) {
            in_a.push((user, row.workspace.unwrap().volume_id));
        }
    }
    assert!(!in_a.is_empty(), "nobody's workspace is in {zone_a}");
    let drained: Vec<_> = (world.cloud.live_instances().into_iter())
        .filter(|i| i.subnet_id == "subnet-a")
        .map(|i| i.id)
        .collect();
    let body = serde_json::json!({"selector": {"zones": [zone_a]}, "dry_run": false});
    let (status, started) = drain(&world, body).await;
    assert_eq!(status, 202, "{started}");
    let mut done = false;
    for _ in 0..400 {
        world.pass().await;
        // Nothing is launched into the zone while the drain holds.
        let launched_there: Vec<_> = (world.cloud.live_instances().into_iter())
            .filter(|i| i.subnet_id == "subnet-a" && !drained.contains(&i.id))
            .collect();
        assert!(launched_there.is_empty(), "{launched_there:?}");
        if drains(&world).await[0]["state"] == "done" {
            done = true;
            break;
        }
    }
    assert!(
        done,
        "{:?}\n{}",
        drains(&world).await,
        journal_text(&world).await
    );
    world.run_until_quiet(40).await;
    let listed = drains(&world).await;
    assert_eq!(listed[0]["moved"], in_a.len(), "{}", listed[0]);
    for (user, old_volume) in &in_a {
        let (_, doc) = world.get_user(user).await;
        assert_eq!(doc["state"], "ready", "{doc}");
        let row = world.user_row(user).await;
        let workspace = row.workspace.unwrap();
        assert_ne!(workspace.availability_zone, zone_a, "{user}");
        assert_ne!(
            &workspace.volume_id, old_volume,
            "{user}'s workspace was copied"
        );
    }
    // Every instance the zone had is gone. (Once the drain is done, its zone is owed spares
    // again: a spare may be back there.)
    let left: Vec<_> = (world.cloud.live_instances().into_iter())
        .filter(|i| drained.contains(&i.id))
        .collect();
    assert!(!drained.is_empty() && left.is_empty(), "{left:?}");
    world.assert_no_leaks().await;
}
