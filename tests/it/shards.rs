//! Shards on the fake cloud (which enforces AWS's load balancer limits, as moto does not): users
//! spread across load balancers and stay on theirs; a full platform queues users as
//! `no_route_capacity` without spending an instance; a load balancer that refuses a route holds
//! its shard and returns the instance to the pool; host routing.

use crate::world::{World, reconciler_config, shards};
use axum::http::StatusCode;
use spotpool::cloud::fake::RouteLimits;
use spotpool::model::{RouteMode, RuleMatch, UserState};
use std::collections::BTreeMap;

const SECRETS: &str = r#"{"secrets":{"K":"v"}}"#;

/// A world with `n` path-routed shards of `capacity` users each.
async fn world_with_shards(n: usize, capacity: u32, spares: u32) -> World {
    let mut config = reconciler_config(spares, 20);
    config.policy.shards = shards(n, capacity);
    World::with_config(config).await
}

async fn put_all(world: &World, users: &[&str]) {
    for user in users {
        let (status, body) = world.put_user(user, SECRETS).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
}

/// How many of the fake's rules each listener carries.
fn rules_per_listener(world: &World) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for rule in world.cloud.rules() {
        *count.entry(rule.listener_arn).or_default() += 1;
    }
    count
}

#[tokio::test]
async fn users_spread_over_the_shards_and_a_full_platform_queues_without_spending_an_instance() {
    let world = world_with_shards(2, 3, 1).await;
    world.run_until_quiet(20).await;
    let six = ["u1", "u2", "u3", "u4", "u5", "u6"];
    put_all(&world, &six).await;
    world.run_until_quiet(60).await;
    let mut on: BTreeMap<String, usize> = BTreeMap::new();
    for user in six {
        let doc = world.ready_user(user, SECRETS).await;
        let shard = doc["shard"].as_str().expect("placed").to_string();
        let route = doc["route"].as_str().unwrap();
        assert_eq!(
            doc["url"],
            format!("https://{shard}.agents.example.com/{route}/"),
            "{doc}"
        );
        *on.entry(shard).or_default() += 1;
    }
    assert_eq!(
        on.values().copied().collect::<Vec<_>>(),
        vec![3, 3],
        "{on:?}"
    );
    // Each user's rule and target group are on its own shard's load balancer.
    let listeners = rules_per_listener(&world);
    assert_eq!(listeners.values().copied().collect::<Vec<_>>(), vec![3, 3]);
    for user in six {
        let row = world.user_row(user).await;
        let shard = world.config.shard(row.shard.as_deref().unwrap()).unwrap();
        assert_eq!(
            row.routing.listener_arn.as_deref(),
            Some(shard.listener_arn.as_str())
        );
    }

    // The seventh waits, visibly, and no instance is claimed for it.
    let live_before = world.cloud.live_instances().len();
    put_all(&world, &["u7"]).await;
    world.run_until_quiet(20).await;
    let (status, doc) = world.get_user("u7").await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["state"], "queued", "{doc}");
    assert_eq!(doc["error"], "no_route_capacity", "{doc}");
    assert_eq!(doc["waiting_for"], "no_route_capacity", "{doc}");
    assert!(
        doc["instance_id"].is_null() && doc["shard"].is_null(),
        "{doc}"
    );
    assert_eq!(
        world.cloud.live_instances().len(),
        live_before,
        "no instance launched or claimed for a user without a route"
    );
    let journal = world.store.journal_since(0, 10_000).await.unwrap();
    let waits: Vec<_> = journal
        .iter()
        .filter(|e| e.kind == "route.no_capacity")
        .collect();
    assert_eq!(waits.len(), 1, "journalled once: {waits:?}");
    assert_eq!(waits[0].user_id.as_deref(), Some("u7"));
    // On-call sees it in the pool document.
    let (status, pool) = world
        .request("GET", "/v1/pool", Some(crate::world::API_TOKEN), "")
        .await;
    assert_eq!(status, StatusCode::OK, "{pool}");
    assert_eq!(pool["waiting_for_route"], 1, "{pool}");
    let shards: Vec<(String, u64, u64)> = pool["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let name = s["name"].as_str().unwrap().to_string();
            (
                name,
                s["users"].as_u64().unwrap(),
                s["capacity"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shards,
        vec![("shard-0".into(), 3, 3), ("shard-1".into(), 3, 3)]
    );

    // A deletion frees a place on u2's shard: the seventh is served there.
    let freed = world.user_row("u2").await.shard.unwrap();
    let (status, _) = world.delete_user("u2").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    world.run_until_quiet(60).await;
    let doc = world.ready_user("u7", SECRETS).await;
    assert_eq!(doc["shard"], freed.as_str(), "{doc}");
    assert!(doc["error"].is_null(), "{doc}");
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_load_balancer_at_its_limit_holds_the_shard_and_burns_no_instance() {
    // One shard that spotpool thinks holds 5, on a load balancer AWS lets hold 2 rules. Without
    // pre-wired spares, so the claim meets the limit (a spare's warm route meets it in
    // `the_regions_target_group_limit_holds_every_new_claim`).
    let mut config = reconciler_config(1, 20);
    config.policy.shards = shards(1, 5);
    config.prewired_spares = false;
    let world = World::with_config(config).await;
    world.cloud.set_route_limits(RouteLimits {
        rules_per_load_balancer: 2,
        ..RouteLimits::default()
    });
    world.run_until_quiet(20).await;
    put_all(&world, &["a1", "a2"]).await;
    world.run_until_quiet(40).await;
    for user in ["a1", "a2"] {
        assert_eq!(world.user_state(user).await, Some(UserState::Ready));
    }
    world.cloud.clear_calls();
    put_all(&world, &["a3"]).await;
    world.run_until_quiet(40).await;

    let row = world.user_row("a3").await;
    assert_eq!(row.state, UserState::Queued);
    assert_eq!(row.error.as_deref(), Some("no_route_capacity"));
    assert_eq!(
        row.attempts, 0,
        "a full load balancer is not a failed attempt"
    );
    assert!(row.instance_id.is_none());
    // The claim met the limit before the container: nothing was started there, and the spare
    // went back to the pool for a fresh probe instead of being terminated.
    assert_eq!(world.cloud.count_calls("CreateRule"), 1);
    let starts = world
        .cloud
        .commands()
        .into_iter()
        .filter(|c| c.comment == "spotpool start container for a3")
        .count();
    assert_eq!(starts, 0, "no start command was sent for a3");
    let journal = world.store.journal_since(0, 10_000).await.unwrap();
    assert!(
        journal
            .iter()
            .any(|e| e.kind == "no_route.instance_returned"),
        "the instance went back to the pool"
    );
    assert!(
        !journal
            .iter()
            .any(|e| e.kind.ends_with(".instance_terminated")),
        "no instance was terminated for a claim"
    );
    let refusal = journal
        .iter()
        .find(|e| e.kind == "route.refused")
        .expect("the refusal is journalled");
    assert!(
        refusal.message.contains("TooManyRules"),
        "{}",
        refusal.message
    );
    // Held: later passes claim nothing more for a3 while the shard is at its refused size.
    world.cloud.clear_calls();
    world.run_until_quiet(10).await;
    assert_eq!(world.cloud.count_calls("CreateRule"), 0);
    assert_eq!(world.user_row("a3").await.state, UserState::Queued);

    // A user leaves: a3 gets its place.
    let (status, _) = world.delete_user("a1").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    world.run_until_quiet(60).await;
    assert_eq!(world.user_state("a3").await, Some(UserState::Ready));
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn the_regions_target_group_limit_holds_every_new_claim() {
    let world = world_with_shards(2, 10, 1).await;
    world.cloud.set_route_limits(RouteLimits {
        target_groups_per_region: 2,
        ..RouteLimits::default()
    });
    world.run_until_quiet(20).await;
    put_all(&world, &["r1", "r2", "r3"]).await;
    world.run_until_quiet(60).await;
    let mut ready = 0;
    let mut waiting = Vec::new();
    for user in ["r1", "r2", "r3"] {
        let row = world.user_row(user).await;
        match row.state {
            UserState::Ready => ready += 1,
            UserState::Queued => waiting.push(row),
            other => panic!("{user} is {other:?}"),
        }
    }
    assert_eq!(ready, 2);
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].error.as_deref(), Some("no_route_capacity"));
    assert_eq!(waiting[0].attempts, 0);
    let journal = world.store.journal_since(0, 10_000).await.unwrap();
    assert!(
        !journal
            .iter()
            .any(|e| e.kind.ends_with(".instance_terminated"))
    );
    let refusal = journal.iter().find(|e| e.kind == "route.refused").unwrap();
    assert!(
        refusal.message.contains("the region"),
        "{}",
        refusal.message
    );
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn a_host_routed_shard_matches_the_users_host_and_serves_it_at_the_root() {
    let mut config = reconciler_config(1, 10);
    let mut shard = shards(1, 10).remove(0);
    shard.routing = RouteMode::Host;
    shard.domain = Some("s0.agents.example.com".into());
    shard.base_url = "https://s0.agents.example.com".into();
    config.policy.shards = vec![shard];
    let world = World::with_config(config).await;
    world.run_until_quiet(20).await;
    put_all(&world, &["hosted"]).await;
    world.run_until_quiet(40).await;
    let doc = world.ready_user("hosted", SECRETS).await;
    let route = doc["route"].as_str().unwrap();
    assert_eq!(
        doc["url"],
        format!("https://{route}.s0.agents.example.com/")
    );
    // The user's rule, beside the spare's warm rule.
    let rules: Vec<_> = world
        .cloud
        .rules()
        .into_iter()
        .filter(|r| !matches!(r.condition, RuleMatch::Warm(_)))
        .collect();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].condition,
        RuleMatch::Host(format!("{route}.s0.agents.example.com"))
    );
    // The gateway is served at the root of its own origin.
    let start = world
        .cloud
        .commands()
        .into_iter()
        .find(|c| c.script.contains("GATEWAY_ORIGIN"))
        .expect("a start command");
    assert!(
        start.script.contains(&format!(
            "GATEWAY_ORIGIN='https://{route}.s0.agents.example.com'"
        )),
        "{}",
        start.script
    );
    assert!(
        start.script.contains("GATEWAY_BASE_PATH=''"),
        "{}",
        start.script
    );

    // Sleep and wake keep the shard and the rule.
    let (status, _) = world
        .request(
            "POST",
            "/v1/users/hosted/sleep",
            Some(crate::world::API_TOKEN),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    world.run_until_quiet(40).await;
    assert_eq!(world.user_state("hosted").await, Some(UserState::Asleep));
    let (status, _) = world
        .request(
            "POST",
            "/v1/users/hosted/wake",
            Some(crate::world::API_TOKEN),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    world.run_until_quiet(40).await;
    let doc = world.ready_user("hosted", SECRETS).await;
    assert_eq!(
        doc["url"],
        format!("https://{route}.s0.agents.example.com/")
    );
    let users_rules = world
        .cloud
        .rules()
        .into_iter()
        .filter(|r| !matches!(r.condition, RuleMatch::Warm(_)))
        .count();
    assert_eq!(users_rules, 1);
    world.assert_no_leaks().await;
}

#[tokio::test]
async fn the_accounts_load_balancer_quotas_bound_every_shard_before_aws_refuses() {
    use spotpool::model::quota::Quota;
    // Capacity 5, but the account's quota allows 2 rules per load balancer: the third user
    // waits without a refused call.
    let world = world_with_shards(1, 5, 1).await;
    world.cloud.set_quota(Quota::RulesPerAlb, 2.0);
    world.cloud.set_quota(Quota::TargetGroupsPerAlb, 100.0);
    world.run_until_quiet(20).await;
    put_all(&world, &["q1", "q2", "q3"]).await;
    world.run_until_quiet(40).await;
    let mut states = Vec::new();
    for user in ["q1", "q2", "q3"] {
        states.push(world.user_row(user).await);
    }
    assert_eq!(states[0].state, UserState::Ready);
    assert_eq!(states[1].state, UserState::Ready);
    assert_eq!(states[2].state, UserState::Queued);
    assert_eq!(states[2].error.as_deref(), Some("no_route_capacity"));
    assert!(states[2].instance_id.is_none());
    let journal = world.store.journal_since(0, 10_000).await.unwrap();
    assert!(
        !journal.iter().any(|e| e.kind == "route.refused"),
        "the quota held the user before AWS had to refuse"
    );
}
