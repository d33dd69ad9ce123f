//! On-call's admin API against the fake: repair with an orphan sweep, tier sizing, recycling,
//! and the audit log.

use crate::world::{ADMIN_TOKEN, LISTENER, World};
use axum::http::StatusCode;
use spotpool::cloud::{Cloud, LaunchRequest, Tags, tags};
use spotpool::model::{InstanceId, InstanceStatus, UserState};
use std::collections::BTreeSet;
use std::sync::Arc;

const SECRET_BODY: &str = r#"{"secrets":{"OPENAI_API_KEY":"sk-test-value-123"}}"#;

fn pool_tags(user: &str) -> Tags {
    [(tags::POOL, "spotpool"), (tags::USER_ID, user)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl World {
    async fn admin(&self, method: &str, uri: &str, body: &str) -> (StatusCode, serde_json::Value) {
        self.request(method, uri, Some(ADMIN_TOKEN), body).await
    }
}

/// Resources created behind the daemon's back: four tagged for this pool for a user that does
/// not exist (the orphans), and two without the pool tag (someone else's, never to be touched).
struct Planted {
    orphans: BTreeSet<String>,
    foreign: Vec<String>,
}

async fn plant(world: &World) -> Planted {
    let cloud = &world.cloud;
    let group = cloud
        .create_target_group(
            "sp-ghost0000ghost000",
            8080,
            &crate::world::test_config(0, 0)
                .runtime
                .container
                .health_check,
            &pool_tags("ghost"),
        )
        .await
        .unwrap();
    let rule = cloud
        .create_rule(
            LISTENER,
            4242,
            &spotpool::model::RuleMatch::Path("/ghost0000ghost000/*".into()),
            &group,
            &pool_tags("ghost"),
        )
        .await
        .unwrap();
    let secret = cloud
        .put_secret("openclaw/ghost", "value", &pool_tags("ghost"))
        .await
        .unwrap();
    let instance = cloud
        .launch_instances(&LaunchRequest {
            tier: "default".into(),
            instance_type: "t3.small".into(),
            subnet_id: "subnet-a".into(),
            count: 1,
            client_token: "behind-the-back".into(),
            spot: true,
            launch_template: spotpool::model::LaunchTemplate::example(),
            blank_workspace: None,
        })
        .await
        .unwrap()
        .remove(0);
    let mut assigned = pool_tags("ghost");
    assigned.insert(
        tags::STATUS.into(),
        InstanceStatus::Assigned.as_str().into(),
    );
    cloud.tag_instance(&instance, &assigned).await.unwrap();
    let foreign_group = cloud
        .create_target_group(
            "someone-elses",
            80,
            &crate::world::test_config(0, 0)
                .runtime
                .container
                .health_check,
            &Tags::new(),
        )
        .await
        .unwrap();
    let foreign_secret = cloud
        .put_secret("other/app", "value", &Tags::new())
        .await
        .unwrap();
    Planted {
        orphans: [group, rule, secret, instance.0].into_iter().collect(),
        foreign: vec![foreign_group, foreign_secret],
    }
}

fn ids(report: &serde_json::Value) -> BTreeSet<String> {
    report["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect()
}

fn results(report: &serde_json::Value) -> BTreeSet<String> {
    report["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["result"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn repair_lists_exactly_the_orphans_and_deletes_exactly_them() {
    let world = World::new(1, 10).await;
    world.run_until_quiet(20).await;
    let alice = world.ready_user("alice", SECRET_BODY).await;
    world.ready_user("bob", SECRET_BODY).await;
    let planted = plant(&world).await;
    // Older than the orphan grace (the secret's creation date and the instance's launch time).
    world.advance(world.config.policy.orphan_grace + 1_000);
    let before = (
        world.cloud.target_groups().len(),
        world.cloud.rules().len(),
        world.cloud.secrets().len(),
        world.cloud.live_instances().len(),
    );

    let (status, dry) = world
        .admin("POST", "/v1/admin/repair?dry_run=true", "")
        .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(ids(&dry), planted.orphans, "{dry}");
    assert_eq!(results(&dry), BTreeSet::from(["planned".to_string()]));
    let after_dry = (
        world.cloud.target_groups().len(),
        world.cloud.rules().len(),
        world.cloud.secrets().len(),
        world.cloud.live_instances().len(),
    );
    assert_eq!(before, after_dry, "a dry run changes nothing");

    let (status, real) = world
        .request(
            "POST",
            "/v1/admin/repair?dry_run=false",
            Some(ADMIN_TOKEN),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{real}");
    assert_eq!(ids(&real), planted.orphans, "{real}");
    assert_eq!(results(&real), BTreeSet::from(["deleted".to_string()]));

    // Exactly the orphans are gone; everyone else's resources and both users are intact.
    let groups: Vec<String> = world
        .cloud
        .target_groups()
        .into_iter()
        .map(|t| t.arn)
        .collect();
    let rules: Vec<String> = world.cloud.rules().into_iter().map(|r| r.arn).collect();
    let secrets: Vec<String> = world
        .cloud
        .secrets()
        .into_iter()
        .map(|(_, s)| s.arn)
        .collect();
    for orphan in &planted.orphans {
        assert!(!groups.contains(orphan) && !rules.contains(orphan) && !secrets.contains(orphan));
    }
    let ghost_instance = planted
        .orphans
        .iter()
        .find(|id| id.starts_with("i-"))
        .unwrap();
    assert!(
        world
            .cloud
            .live_instances()
            .iter()
            .all(|i| &i.id.0 != ghost_instance)
    );
    for foreign in &planted.foreign {
        assert!(
            groups.contains(foreign) || secrets.contains(foreign),
            "{foreign}"
        );
    }
    // The spare's warm route is the pool's, not an orphan.
    assert_eq!(
        groups.len(),
        2 + 1 + 1,
        "alice's, bob's, the foreign group and the spare's warm group"
    );
    assert_eq!(
        rules.len(),
        2 + 1,
        "alice's, bob's and the spare's warm rule"
    );
    assert_eq!(secrets.len(), 2 + 1);
    for user in ["alice", "bob"] {
        assert_eq!(world.user_state(user).await, Some(UserState::Ready));
    }
    let alice_instance = InstanceId(alice["instance_id"].as_str().unwrap().to_string());
    assert!(world.cloud.instance(&alice_instance).is_some());

    // A second sweep finds nothing: the repair converged.
    let (_, again) = world
        .admin("POST", "/v1/admin/repair?dry_run=true", "")
        .await;
    assert!(ids(&again).is_empty(), "{again}");
    world.run_until_quiet(20).await;
    // The foreign resources were never the pool's business; with them removed, the pool's
    // own accounting is exact.
    world
        .cloud
        .delete_target_group(&planted.foreign[0])
        .await
        .unwrap();
    world
        .cloud
        .delete_secret(&planted.foreign[1])
        .await
        .unwrap();
    world.assert_no_leaks().await;

    // Every admin call is in the audit log, newest first, with its outcome.
    let (status, audit) = world.admin("GET", "/v1/admin/audit", "").await;
    assert_eq!(status, StatusCode::OK);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["repair.dry_run", "repair", "repair.dry_run"]);
    assert!(audit[1]["detail"].as_str().unwrap().contains("4 orphans"));
}

#[tokio::test]
async fn orphans_younger_than_the_grace_are_left_alone() {
    let world = World::new(0, 10).await;
    let planted = plant(&world).await;
    let (_, dry) = world
        .admin("POST", "/v1/admin/repair?dry_run=true", "")
        .await;
    // Rules and target groups carry no creation time and match no user, so they are orphans at
    // once; the secret and the instance may belong to a request still in flight.
    let young: BTreeSet<String> = planted
        .orphans
        .iter()
        .filter(|id| !id.starts_with("i-") && !id.contains(":secret:"))
        .cloned()
        .collect();
    assert_eq!(ids(&dry), young, "{dry}");
}

#[tokio::test]
async fn a_paused_tier_launches_nothing_and_resizing_and_resuming_refill_it() {
    let world = World::new(1, 10).await;
    let (status, body) = world
        .admin(
            "PUT",
            "/v1/admin/pool/default",
            r#"{"paused":true,"spare_count":3}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["spare_count"], 3);
    assert_eq!(body["paused"], true);
    for _ in 0..5 {
        world.pass().await;
    }
    assert_eq!(world.cloud.count_calls("RunInstances"), 0);
    let (_, pool) = world.admin("GET", "/v1/pool", "").await;
    assert_eq!(pool["tiers"][0]["paused"], true);
    assert_eq!(pool["tiers"][0]["spare_target"], 3);

    let (status, _) = world
        .admin("PUT", "/v1/admin/pool/default", r#"{"paused":false}"#)
        .await;
    assert_eq!(status, StatusCode::OK);
    world.run_until_quiet(30).await;
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 3);

    // A spare count above the maximum is allowed (the maximum wins); an empty body changes
    // nothing and answers the current settings.
    let (status, body) = world
        .admin("PUT", "/v1/admin/pool/default", r#"{"spare_count":11}"#)
        .await;
    assert_eq!(
        (status, body["spare_count"].as_u64()),
        (StatusCode::OK, Some(11))
    );
    world.run_until_quiet(30).await;
    assert_eq!(
        world.cloud.live_instances().len(),
        10,
        "capped by max_instances"
    );
    let (status, body) = world.admin("PUT", "/v1/admin/pool/default", "{}").await;
    assert_eq!(
        (status, body["max_instances"].as_u64()),
        (StatusCode::OK, Some(10))
    );
    for (uri, body, expected, code) in [
        (
            "/v1/admin/pool/default",
            r#"{"max_instances":0}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "/v1/admin/pool/default",
            r#"{"max_instances":10001}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "/v1/admin/pool/default",
            r#"{"spare_count":10001}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "/v1/admin/pool/default",
            r#"{"spare_count":2.5}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "/v1/admin/pool/default",
            r#"{"spares":1}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "/v1/admin/pool/nope",
            r#"{"paused":true}"#,
            StatusCode::NOT_FOUND,
            "unknown_tier",
        ),
    ] {
        let (status, answer) = world.admin("PUT", uri, body).await;
        assert_eq!(status, expected, "{uri} {body}: {answer}");
        assert_eq!(answer["error"]["code"], code);
    }
}

#[tokio::test]
async fn recycling_moves_the_user_keeping_route_and_secret_and_replaces_a_spare() {
    let world = World::new(1, 10).await;
    world.run_until_quiet(20).await;
    let before = world.ready_user("alice", SECRET_BODY).await;
    world.run_until_quiet(20).await;
    let old = before["instance_id"].as_str().unwrap().to_string();
    let row = world.user_row("alice").await;

    let (status, body) = world
        .admin("POST", &format!("/v1/admin/instances/{old}/recycle"), "")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["user_id"], "alice");
    world.run_until_quiet(30).await;

    let (_, after) = world.get_user("alice").await;
    assert_eq!(after["state"], "ready", "{after}");
    assert_ne!(after["instance_id"], before["instance_id"]);
    assert_eq!(after["route"], before["route"]);
    assert_eq!(world.user_row("alice").await.secret_arn, row.secret_arn);
    let old_id = InstanceId(old.clone());
    assert!(world.cloud.live_instances().iter().all(|i| i.id != old_id));

    // A spare is simply replaced.
    let spare = world
        .cloud
        .live_instances()
        .into_iter()
        .find(|i| i.tags.get(tags::STATUS).map(String::as_str) == Some("available"))
        .unwrap();
    let (status, body) = world
        .admin(
            "POST",
            &format!("/v1/admin/instances/{}/recycle", spare.id.0),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["user_id"], serde_json::Value::Null);
    world.run_until_quiet(30).await;
    assert!(
        world
            .cloud
            .live_instances()
            .iter()
            .all(|i| i.id != spare.id)
    );
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 1);
    world.assert_no_leaks().await;

    for (id, expected) in [
        ("i-0000000000000dead", StatusCode::NOT_FOUND),
        (old.as_str(), StatusCode::NOT_FOUND),
        ("not-an-instance", StatusCode::BAD_REQUEST),
    ] {
        let (status, _) = world
            .admin("POST", &format!("/v1/admin/instances/{id}/recycle"), "")
            .await;
        assert_eq!(status, expected, "{id}");
    }
}

/// A recycle moves the user without a gap: on every pass of the move, the user's rule exists
/// and its target group holds a live instance; the old instance is deregistered only after the
/// new one is registered.
#[tokio::test]
async fn a_move_keeps_the_route_served_at_every_pass() {
    let world = World::new(1, 10).await;
    world.run_until_quiet(20).await;
    let before = world.ready_user("alice", SECRET_BODY).await;
    world.run_until_quiet(20).await;
    let old = InstanceId(before["instance_id"].as_str().unwrap().to_string());
    let row = world.user_row("alice").await;
    let group = row.routing.target_group_arn.clone().unwrap();
    let (status, _) = world
        .admin(
            "POST",
            &format!("/v1/admin/instances/{}/recycle", old.0),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    world.cloud.clear_calls();
    let mut saw_migrating = false;
    for _ in 0..30 {
        world.pass().await;
        let (status, doc) = world.get_user("alice").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "a migrating user is still served: {doc}"
        );
        saw_migrating |= doc["state"] == "migrating";
        let rules = world.cloud.rules();
        assert!(
            rules.iter().any(|r| r.target_group_arn == group),
            "the rule is in place at every pass"
        );
        let targets = world
            .cloud
            .target_groups()
            .into_iter()
            .find(|g| g.arn == group)
            .expect("the target group stays")
            .targets;
        let live: Vec<InstanceId> = world
            .cloud
            .live_instances()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert!(
            targets.iter().any(|t| live.contains(t)),
            "the target group always holds a live instance: {targets:?}"
        );
        if doc["state"] == "ready" && doc["instance_id"] != before["instance_id"] {
            break;
        }
    }
    assert!(saw_migrating, "the state showed the move");
    // The new instance joined the target group before the old one left it.
    let calls = world.cloud.calls();
    let registered = calls.iter().position(|c| *c == "RegisterTargets");
    let deregistered = calls.iter().position(|c| *c == "DeregisterTargets");
    assert!(
        registered.is_some() && registered < deregistered,
        "{calls:?}"
    );
    let after = world.user_row("alice").await;
    assert_ne!(after.instance_id.as_ref(), Some(&old));
    assert_eq!(after.route, row.route);
    assert_eq!(after.secret_arn, row.secret_arn);
    assert_eq!(after.routing.target_group_arn, row.routing.target_group_arn);
    assert_eq!(
        after.routing.rule_arn, row.routing.rule_arn,
        "the rule was never replaced"
    );
    // The secret follows the user to the new instance.
    let secret = world
        .cloud
        .secrets()
        .into_iter()
        .find(|(_, s)| Some(&s.arn) == row.secret_arn.as_ref())
        .unwrap()
        .1;
    let new = after.instance_id.clone().unwrap();
    assert!(
        secret.tags[tags::INSTANCE_ARN].ends_with(&new.0),
        "{:?}",
        secret.tags
    );
    world.run_until_quiet(20).await;
    world.assert_no_leaks().await;
}

/// A move whose container fails to start on the new instance comes after the old container
/// stopped and the workspace left it (a single-attach volume cannot be in two places), so the
/// user cannot stay on the old instance: it is recovered (a fresh claim, first in line, same
/// route, secret and workspace). Here every start fails, so the claims end `failed` with the
/// cause, nothing leaks and the workspace is kept.
#[tokio::test]
async fn a_move_that_fails_after_the_workspace_left_recovers_the_user_with_its_workspace() {
    let world = World::new(1, 10).await;
    world.run_until_quiet(20).await;
    let before = world.ready_user("alice", SECRET_BODY).await;
    world.run_until_quiet(20).await;
    let old = before["instance_id"].as_str().unwrap().to_string();
    world.cloud.command_outcome(
        "start the user's container",
        spotpool::cloud::CommandStatus::Failed("spotpool: image missing".into()),
    );
    world
        .admin("POST", &format!("/v1/admin/instances/{old}/recycle"), "")
        .await;
    let volume = before["workspace"]["volume_id"]
        .as_str()
        .unwrap()
        .to_string();
    world.run_until_quiet(80).await;
    let row = world.user_row("alice").await;
    assert_eq!(row.state, UserState::Failed);
    assert_eq!(row.instance_id, None);
    assert_eq!(row.move_target(), None);
    assert!(
        row.error.as_ref().unwrap().contains("image missing"),
        "{row:?}"
    );
    let workspace = row.workspace.expect("the workspace is kept");
    assert_eq!(workspace.volume_id.as_deref(), Some(volume.as_str()));
    assert_eq!(workspace.attached_to, None);
    // The move's end is in the journal, not only the recovery.
    let journal = world.store.journal_since(0, 10_000).await.unwrap();
    assert!(
        journal.iter().any(|e| e.kind == "move.abandoned"
            && e.message
                .contains("after the workspace left the old instance")),
        "{journal:?}"
    );
    assert!(world.deleted_workspaces().is_empty());
    world.assert_no_leaks().await;
}

/// A move finishes (and the old instance is retired) only once the load balancer reports the
/// new one healthy.
#[tokio::test]
async fn a_move_waits_for_the_new_instance_to_be_healthy() {
    let world = World::new(1, 10).await;
    world.run_until_quiet(20).await;
    let before = world.ready_user("alice", SECRET_BODY).await;
    world.run_until_quiet(20).await;
    let old = InstanceId(before["instance_id"].as_str().unwrap().to_string());
    world
        .admin(
            "POST",
            &format!("/v1/admin/instances/{}/recycle", old.0),
            "",
        )
        .await;
    // The move's target is a spare in the workspace's zone (launched there if need be); the
    // load balancer never finds it healthy until told so.
    let mut target = None;
    for _ in 0..20 {
        world.pass().await;
        if let Some(assigned) = world.user_row("alice").await.move_target().cloned() {
            world.cloud.set_unhealthy(&assigned, true);
            target = Some(assigned);
            break;
        }
    }
    let spare = target.expect("a move target was assigned");
    for _ in 0..10 {
        world.pass().await;
    }
    let row = world.user_row("alice").await;
    assert_eq!(row.state, UserState::Migrating);
    assert_eq!(row.move_target(), Some(&spare));
    assert_eq!(world.cloud.count_calls("TerminateInstances"), 0);
    assert!(world.cloud.instance(&old).unwrap().lifecycle == spotpool::cloud::Lifecycle::Running);

    world.cloud.set_unhealthy(&spare, false);
    world.run_until_quiet(20).await;
    let row = world.user_row("alice").await;
    assert_eq!(row.state, UserState::Ready);
    assert_eq!(row.instance_id.as_ref(), Some(&spare));
    world.assert_no_leaks().await;
}

/// A world on the paused clock whose cloud is the fake behind the client-side limiter with
/// `limits` (a bucket made slow on purpose), and the time keeper of the simulations (it stops the
/// paused clock from jumping while SQLite works, or sqlx's own timeouts could fire).
async fn slow_world(
    limits: &str,
    spare_count: u32,
) -> (World, Arc<dyn Cloud>, tokio::task::JoinHandle<()>) {
    let store = spotpool::store::Store::open("sqlite::memory:")
        .await
        .unwrap();
    tokio::time::pause();
    let fake = Arc::new(spotpool::cloud::fake::FakeCloud::default());
    let limits = spotpool::cloud::limit::RateLimits::parse(limits).unwrap();
    let cloud: Arc<dyn Cloud> =
        Arc::new(spotpool::cloud::limit::Limited::new(fake.clone(), &limits));
    let world = World::simulated(
        store,
        fake,
        cloud.clone(),
        crate::world::reconciler_config(spare_count, 10),
    );
    let keeper = tokio::spawn(crate::faults::hold_time_while_the_store_works(
        world.store.clone(),
    ));
    (world, cloud, keeper)
}

/// A repair does not wait forever behind a pass that AWS slows down: after 2 s it answers
/// `409 busy` with `Retry-After`, and the audit log records it.
#[tokio::test]
async fn a_repair_behind_a_slow_pass_answers_busy() {
    // One DescribeInstances per 100 s: the second listing waits for its token.
    let (world, cloud, keeper) = slow_world("ec2-describe=1/0.01", 0).await;
    cloud.describe_pool_instances().await.unwrap();
    let reconciler = world.reconciler.clone();
    let pass = tokio::spawn(async move { reconciler.reconcile_once().await });
    tokio::task::yield_now().await;
    let (status, body) = world
        .admin("POST", "/v1/admin/repair?dry_run=true", "")
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "busy");
    pass.abort();
    let audit = world.store.audit_log(10).await.unwrap();
    assert_eq!(audit[0].outcome, "busy");
    keeper.abort();
}

/// A repair's own pass may be slowed by AWS (here a launch waits 100 s for the RunInstances
/// bucket): the repair answers after a short wait with the actions still running, and they are
/// not cut off: they finish in the background, holding the pass lock until then.
#[tokio::test]
async fn a_repair_whose_actions_are_slow_answers_and_lets_them_finish() {
    // One instance per 100 s: the second launch of the pass waits for its token.
    let (world, _cloud, keeper) = slow_world("ec2-run-instances=1/0.01", 2).await;
    let fake = world.cloud.clone();
    let asked = tokio::time::Instant::now();
    let (status, body) = world
        .admin("POST", "/v1/admin/repair?dry_run=false", "")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(10),
        "the repair answered only after {:?}",
        asked.elapsed()
    );
    assert!(
        body["pass_error"]
            .as_str()
            .is_some_and(|e| e.contains("still running")),
        "{body}"
    );
    let launches = body["pass_actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "launch")
        .count();
    assert!(launches >= 1, "{body}");
    assert!(
        fake.live_instances().len() < 2,
        "the second launch is waiting"
    );

    // The loop's next pass waits for the repair's actions, which complete.
    world.reconciler.reconcile_once().await.unwrap();
    assert_eq!(fake.live_instances().len(), 2);
    keeper.abort();
}
