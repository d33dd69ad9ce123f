use super::*;
use proptest::prelude::*;

const NOW: Millis = 1_000_000_000;

fn policy(spare_count: u32, max_instances: u32) -> Policy {
    Policy {
        tiers: vec![TierPolicy {
            name: "default".into(),
            spare_count,
            spare_auto: None,
            max_instances,
            slots_per_instance: 1,
            instance_types: vec!["t3.small".into(), "t3a.small".into()],
            placement: crate::plan::Placement::Cheapest,
            on_demand_fallback: false,
            rebalance_moves: false,
            workspace_size_gib: 8,
            idle_sleep_after: None,
            runtime: crate::model::TierRuntime::example(),
        }],
        subnet_ids: vec!["subnet-a".into(), "subnet-b".into()],
        subnet_zones: BTreeMap::from([
            ("subnet-a".into(), "zone-a".into()),
            ("subnet-b".into(), "zone-b".into()),
        ]),
        probe_timeout: 600_000,
        probe_retry: 5_000,
        probe_backoff_max: 30_000,
        launch_visibility_grace: 60_000,
        orphan_grace: 600_000,
        terminate_retry: 60_000,
        missed_before_lost: 2,
        shards: vec![crate::model::Shard {
            name: "s0".into(),
            listener_arn: "arn:listener".into(),
            routing: crate::model::RouteMode::Path,
            base_url: "https://agents.example.com".into(),
            domain: None,
            capacity: 100,
        }],
    }
}

fn instance(id: &str, status: InstanceStatus) -> PoolInstance {
    PoolInstance {
        id: InstanceId(id.into()),
        tier: "default".into(),
        status,
        lifecycle: Some(Lifecycle::Running),
        launched_at: NOW - 120_000,
        status_since: NOW - 60_000,
        probe: None,
        probe_failed_at: None,
        agent_online: Some(true),
        missed: 0,
        recycle: None,
        zone: Some("zone-a".into()),
        probed: false,
        warm: None,
        wiping: Vec::new(),
        wiping_users: Vec::new(),
    }
}

fn user(id: &str, state: UserState, instance: Option<&str>, requested_at: Millis) -> UserIntent {
    UserIntent {
        user: UserId::parse(id).unwrap(),
        tier: "default".into(),
        state,
        instance: instance.map(|i| InstanceId(i.into())),
        slot: 0,
        requested_at,
        tearing_down: false,
        moving_to: None,
        moving_slot: 0,
        zone: None,
        relocating: false,
        shard: None,
        waiting_for_route: false,
        route_untagged: false,
        has_route: false,
        move_abandoned_at: None,
    }
}

fn launches(actions: &[Action]) -> u32 {
    actions
        .iter()
        .map(|a| match a {
            Action::Launch { count, .. } => *count,
            _ => 0,
        })
        .sum()
}

fn terminated(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Terminate { instance, .. } => Some(instance.0.as_str()),
            _ => None,
        })
        .collect()
}

fn assigned(actions: &[Action]) -> Vec<(&str, &str)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Assign { user, instance, .. } => Some((user.as_str(), instance.0.as_str())),
            _ => None,
        })
        .collect()
}

/// `policy` with two path-routed shards, "s0" and "s1", of `capacity` users each.
fn two_shards(capacity: u32) -> Policy {
    let mut p = policy(0, 20);
    let mut second = p.shards[0].clone();
    second.name = "s1".into();
    second.listener_arn = "arn:listener-1".into();
    p.shards[0].capacity = capacity;
    second.capacity = capacity;
    p.shards.push(second);
    p
}

fn on_shard(mut user: UserIntent, shard: &str) -> UserIntent {
    user.shard = Some(shard.into());
    user
}

fn placed(actions: &[Action]) -> Vec<(&str, &str)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Assign { user, shard, .. } => Some((user.as_str(), shard.as_str())),
            _ => None,
        })
        .collect()
}

fn awaiting_route(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::AwaitRoute { user } => Some(user.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn new_users_go_to_the_shard_with_the_most_room_and_wait_when_every_shard_is_full() {
    let policy = two_shards(2);
    let spares: Vec<PoolInstance> = (0..5)
        .map(|i| instance(&format!("i-{i}"), InstanceStatus::Available))
        .collect();
    // s0 holds one user already (ready elsewhere); three new users arrive.
    let users = vec![
        on_shard(user("old", UserState::Ready, None, 1), "s0"),
        user("a", UserState::Queued, None, 2),
        user("b", UserState::Queued, None, 3),
        user("c", UserState::Queued, None, 4),
    ];
    let actions = plan(&users, &spares, NOW, &policy, &Conditions::default());
    // a takes the emptier s1, b then ties and takes the first, c fills s1: 2 and 2.
    assert_eq!(
        placed(&actions),
        vec![("a", "s1"), ("b", "s0"), ("c", "s1")]
    );
    assert!(awaiting_route(&actions).is_empty());

    let mut full = users.clone();
    full.push(user("d", UserState::Queued, None, 5));
    let actions = plan(&full, &spares, NOW, &policy, &Conditions::default());
    assert_eq!(awaiting_route(&actions), vec!["d"]);
    assert!(!placed(&actions).iter().any(|(u, _)| *u == "d"));
    // A user waiting for a route takes no spare and launches nothing.
    assert_eq!(launches(&actions), 0);
}

#[test]
fn room_is_taken_only_by_users_the_pass_serves() {
    let mut policy = two_shards(1);
    policy.shards.truncate(1);
    let spares = vec![instance("i-1", InstanceStatus::Available)];
    // An older user of a tier no longer configured is never served: it takes no room.
    let mut orphan = user("old", UserState::Queued, None, 1);
    orphan.tier = "gone".into();
    let mut held = user("new", UserState::Queued, None, 2);
    held.waiting_for_route = true;
    let actions = plan(
        &[orphan, held],
        &spares,
        NOW,
        &policy,
        &Conditions::default(),
    );
    assert_eq!(placed(&actions), vec![("new", "s0")]);
    assert!(awaiting_route(&actions).is_empty());
    // A requeued failed user placed earlier waits for room on its own shard.
    let full = vec![
        on_shard(user("a", UserState::Ready, None, 1), "s0"),
        on_shard(user("b", UserState::Queued, None, 2), "s0"),
    ];
    let actions = plan(&full, &spares, NOW, &policy, &Conditions::default());
    assert_eq!(awaiting_route(&actions), vec!["b"]);
    // One that showed no_route_capacity and has room now loses the label, spare or not.
    let mut waiting = user("w", UserState::Queued, None, 3);
    waiting.waiting_for_route = true;
    let actions = plan(&[waiting], &[], NOW, &policy, &Conditions::default());
    assert!(actions.contains(&Action::RouteAvailable {
        user: UserId::parse("w").unwrap()
    }));
    assert_eq!(launches(&actions), 1, "a launch serves it");
}

#[test]
fn a_placed_user_keeps_its_shard_and_a_refused_shard_holds_its_users() {
    let policy = two_shards(5);
    let spares = vec![instance("i-1", InstanceStatus::Available)];
    let users = vec![
        on_shard(user("x", UserState::Ready, None, 1), "s1"),
        on_shard(user("y", UserState::Queued, None, 2), "s1"),
    ];
    let actions = plan(&users, &spares, NOW, &policy, &Conditions::default());
    assert_eq!(placed(&actions), vec![("y", "s1")], "placed for life");

    // AWS refused s1 a route when it held one user (x): y waits, new users go to s0.
    let conditions = Conditions {
        route_limits: BTreeMap::from([("s1".to_string(), 1)]),
        ..Conditions::default()
    };
    let mut users = users;
    users.push(user("z", UserState::Queued, None, 3));
    let actions = plan(&users, &spares, NOW, &policy, &conditions);
    assert_eq!(awaiting_route(&actions), vec!["y"]);
    assert_eq!(placed(&actions), vec![("z", "s0")]);

    // The region's target groups: nobody new is placed.
    let conditions = Conditions {
        region_route_limit: Some(2),
        ..Conditions::default()
    };
    let actions = plan(&users, &spares, NOW, &policy, &conditions);
    assert_eq!(awaiting_route(&actions), vec!["z"]);
    assert_eq!(placed(&actions), vec![("y", "s1")]);
}

/// A shared tier of four slots, keeping `spare_count` free slots ready.
fn shared_policy(spare_count: u32, max_instances: u32) -> Policy {
    let mut policy = policy(spare_count, max_instances);
    policy.tiers[0].slots_per_instance = 4;
    policy
}

/// (user, instance, slot) of every assignment.
fn slots_assigned(actions: &[Action]) -> Vec<(&str, &str, u32)> {
    (actions.iter())
        .filter_map(|a| match a {
            Action::Assign {
                user,
                instance,
                slot,
                ..
            } => Some((user.as_str(), instance.0.as_str(), *slot)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_shared_tier_fills_its_fullest_instance_and_retires_only_an_untouched_spare() {
    let policy = shared_policy(1, 10);
    // `a` has two users (slots 0 and 2); `b` (the newest, in zone-b) and `c` are untouched
    // spares.
    let mut b = instance("b", InstanceStatus::Available);
    b.launched_at = NOW - 50_000;
    b.zone = Some("zone-b".into());
    let mut c = instance("c", InstanceStatus::Available);
    c.launched_at = NOW - 100_000;
    let instances = vec![instance("a", InstanceStatus::Assigned), b, c];
    let mut held_0 = user("h0", UserState::Ready, Some("a"), 1);
    held_0.slot = 0;
    let mut held_2 = user("h2", UserState::Ready, Some("a"), 2);
    held_2.slot = 2;
    let users = vec![
        held_0,
        held_2,
        user("u1", UserState::Queued, None, 10),
        user("u2", UserState::Queued, None, 11),
        UserIntent {
            zone: Some("zone-b".into()),
            ..user("u3", UserState::Queued, None, 12)
        },
    ];
    let actions = plan(&users, &instances, NOW, &policy, &Conditions::default());
    assert_eq!(
        slots_assigned(&actions),
        vec![("u1", "a", 1), ("u2", "a", 3), ("u3", "b", 0)],
        "the fullest first, its lowest free slots, then a spare of the user's zone"
    );
    // Free slots left: b's three and c's four = 7 against a target of 1: one whole instance
    // over, and only `c` (untouched) may go, though `b` is newer: it was given a slot.
    assert_eq!(terminated(&actions), vec!["c"]);
    assert_eq!(launches(&actions), 0);

    // Five users waiting and one spare of four slots: the deficit of 2 slots (5 - 4 + 1)
    // launches one instance, not two.
    let spare = vec![instance("s", InstanceStatus::Available)];
    let queue: Vec<UserIntent> = (0..5)
        .map(|n| user(&format!("q{n}"), UserState::Queued, None, n))
        .collect();
    let actions = plan(&queue, &spare, NOW, &policy, &Conditions::default());
    assert_eq!(slots_assigned(&actions).len(), 4);
    assert_eq!(launches(&actions), 1);
}

#[test]
fn a_shared_instance_a_drain_closes_or_being_emptied_takes_no_claim_nor_a_given_up_move_again() {
    let policy = shared_policy(0, 10);
    let mut a = instance("a", InstanceStatus::Assigned);
    a.recycle = Some(NOW - 10_000);
    let b = instance("b", InstanceStatus::Assigned);
    let c = instance("c", InstanceStatus::Available);
    let on = |id: &str, at: &str, slot: u32, gave_up: Option<Millis>| UserIntent {
        slot,
        move_abandoned_at: gave_up,
        ..user(id, UserState::Ready, Some(at), 1)
    };
    // `d`, being emptied too, is gone: its user who gave up a move is served again.
    let mut d = instance("d", InstanceStatus::Assigned);
    d.recycle = Some(NOW - 10_000);
    d.lifecycle = Some(Lifecycle::Terminated);
    let users = vec![
        // On `a`, being emptied: one gave its move up after the request, one before it.
        on("stays", "a", 0, Some(NOW - 5_000)),
        on("moves", "a", 1, Some(NOW - 20_000)),
        on("lost", "d", 0, Some(NOW - 5_000)),
        // `b` has free slots, but a drain matches it.
        on("held", "b", 0, None),
        user("new", UserState::Queued, None, 10),
    ];
    let conditions = Conditions {
        closed: [InstanceId("b".into())].into(),
        ..Conditions::default()
    };
    let actions = plan(&users, &[a, b, c, d], NOW, &policy, &conditions);
    let begun: Vec<&str> = (actions.iter())
        .filter_map(|a| match a {
            Action::BeginMove { user } => Some(user.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(begun, vec!["moves"], "{actions:?}");
    assert!(
        actions.contains(&Action::Recover {
            user: UserId::parse("lost").unwrap()
        }),
        "{actions:?}"
    );
    assert_eq!(
        slots_assigned(&actions),
        vec![("new", "c", 0)],
        "{actions:?}"
    );
}

#[test]
fn an_empty_pool_launches_the_spare_count_spread_over_subnets() {
    let actions = plan(&[], &[], NOW, &policy(2, 10), &Conditions::default());
    assert_eq!(
        actions,
        vec![
            Action::Launch {
                tier: "default".into(),
                instance_type: "t3.small".into(),
                subnet_id: "subnet-a".into(),
                count: 1,
                market: Market::Spot,
            },
            Action::Launch {
                tier: "default".into(),
                instance_type: "t3.small".into(),
                subnet_id: "subnet-b".into(),
                count: 1,
                market: Market::Spot,
            },
        ]
    );
}

/// (instance type, subnet, count, market) of each launch.
fn launches_of(actions: &[Action]) -> impl Iterator<Item = (&str, &str, u32, Market)> {
    actions.iter().filter_map(|a| match a {
        Action::Launch {
            instance_type,
            subnet_id,
            count,
            market,
            ..
        } => Some((instance_type.as_str(), subnet_id.as_str(), *count, *market)),
        _ => None,
    })
}

/// (instance type, subnet, count) of each launch.
fn launch_list(actions: &[Action]) -> Vec<(&str, &str, u32)> {
    launches_of(actions).map(|(t, s, n, _)| (t, s, n)).collect()
}

/// Costs of the four offerings: t3a.small in subnet-a cheapest, then t3.small in subnet-b.
fn costs() -> BTreeMap<(String, String), f64> {
    [
        ("t3.small", "subnet-a", 0.009),
        ("t3.small", "subnet-b", 0.004),
        ("t3a.small", "subnet-a", 0.003),
        ("t3a.small", "subnet-b", 0.008),
    ]
    .into_iter()
    .map(|(t, s, c)| ((t.to_string(), s.to_string()), c))
    .collect()
}

/// Cheapest placement: the offering of lowest cost, then the cheapest of another zone, the
/// launches spread over the two; the order written only without costs or with `ordered`.
#[test]
fn launches_go_to_the_cheapest_offering_and_the_cheapest_of_another_zone() {
    let conditions = Conditions {
        offering_costs: costs(),
        ..Conditions::default()
    };
    let actions = plan(&[], &[], NOW, &policy(4, 10), &conditions);
    assert_eq!(
        launch_list(&actions),
        [("t3a.small", "subnet-a", 2), ("t3.small", "subnet-b", 2)]
    );
    // The cheapest has no capacity: the next, in another zone again.
    let mut out = conditions.clone();
    out.unavailable
        .insert(("t3a.small".into(), "subnet-a".into()));
    let actions = plan(&[], &[], NOW, &policy(2, 10), &out);
    assert_eq!(
        launch_list(&actions),
        [("t3.small", "subnet-b", 1), ("t3.small", "subnet-a", 1)]
    );
    // An offering without a cost (its price not read yet): the order written.
    let mut unknown = conditions.clone();
    unknown
        .offering_costs
        .remove(&("t3.small".to_string(), "subnet-a".to_string()));
    let actions = plan(&[], &[], NOW, &policy(2, 10), &unknown);
    assert_eq!(
        launch_list(&actions),
        [("t3.small", "subnet-a", 1), ("t3.small", "subnet-b", 1)]
    );
    // `ordered` keeps the order written, costs or not.
    let mut ordered = policy(2, 10);
    ordered.tiers[0].placement = crate::plan::Placement::Ordered;
    let actions = plan(&[], &[], NOW, &ordered, &conditions);
    assert_eq!(
        launch_list(&actions),
        [("t3.small", "subnet-a", 1), ("t3.small", "subnet-b", 1)]
    );
}

fn in_zone(id: &str, zone: &str, launched_at: Millis) -> PoolInstance {
    PoolInstance {
        zone: Some(zone.into()),
        launched_at,
        ..instance(id, InstanceStatus::Available)
    }
}

/// Spares are counted per zone: the spare count is split over the tier's zones, a deficit
/// launches where a zone is furthest below its share, and a surplus goes from the zone furthest
/// above its share, never leaving a zone below it. A count met in the wrong zones is left
/// alone (no launch and retire to move a spare): the next launches go where the spares are
/// short.
#[test]
fn spares_are_counted_per_zone() {
    let ordered = |spare_count: u32| {
        let mut policy = policy(spare_count, 10);
        policy.tiers[0].placement = crate::plan::Placement::Ordered;
        policy
    };
    let none = Conditions::default();
    // One short in each zone: one launch in each.
    let pool = [
        in_zone("a1", "zone-a", 1),
        in_zone("b1", "zone-b", 2),
        in_zone("b2", "zone-b", 3),
    ];
    let actions = plan(&[], &pool[..2], NOW, &ordered(4), &none);
    assert_eq!(
        launch_list(&actions),
        [("t3.small", "subnet-a", 1), ("t3.small", "subnet-b", 1)]
    );
    // A claim took a spare of zone-a: the launch goes there.
    let actions = plan(&[], &pool, NOW, &ordered(4), &none);
    assert_eq!(launch_list(&actions), [("t3.small", "subnet-a", 1)]);

    // Every spare in zone-a, the count met: nothing moves.
    let crowded = [in_zone("a1", "zone-a", 1), in_zone("a2", "zone-a", 2)];
    assert!(plan(&[], &crowded, NOW, &ordered(2), &none).is_empty());
    // One too many: zone-a's newest goes, though zone-b's is newer still.
    let settled = [
        crowded[0].clone(),
        crowded[1].clone(),
        in_zone("b1", "zone-b", 3),
    ];
    let actions = plan(&[], &settled, NOW, &ordered(2), &none);
    assert_eq!(terminated(&actions), ["a2"]);
    assert_eq!(launches(&actions), 0);
    // Zone-b out of capacity for now keeps its share: its spare is not the one to go.
    let out = unavailable(&[("t3.small", "subnet-b"), ("t3a.small", "subnet-b")]);
    let actions = plan(&[], &settled, NOW, &ordered(2), &out);
    assert_eq!(terminated(&actions), ["a2"]);
    // Zone-b drained for the tier has no share: its spare goes first.
    let mut drained = Conditions::default();
    for t in ["t3.small", "t3a.small"] {
        (drained.drained).insert(("default".into(), t.into(), "subnet-b".into()));
    }
    let actions = plan(&[], &settled, NOW, &ordered(2), &drained);
    assert_eq!(terminated(&actions), ["b1"]);

    // Two a zone against a count of 3 (a share of 1.5 each, both 0.5 above it): one goes,
    // the newest.
    let four = [
        in_zone("a1", "zone-a", 1),
        in_zone("b1", "zone-b", 2),
        in_zone("a2", "zone-a", 3),
        in_zone("b2", "zone-b", 4),
    ];
    let actions = plan(&[], &four, NOW, &ordered(3), &none);
    assert_eq!(terminated(&actions), ["b2"]);
    // Three zones at 3, 2 and 2 against a count of 4 (1.33 each): one from each zone above
    // its share, the fullest first.
    let seven: Vec<PoolInstance> = [("a", 3), ("b", 2), ("c", 2)]
        .into_iter()
        .flat_map(|(z, n)| {
            (0..n).map(move |k| in_zone(&format!("{z}{k}"), &format!("zone-{z}"), k))
        })
        .collect();
    let mut three_zones = ordered(4);
    three_zones.subnet_ids.push("subnet-c".into());
    (three_zones.subnet_zones).insert("subnet-c".into(), "zone-c".into());
    let actions = plan(&[], &seven, NOW, &three_zones, &none);
    let mut gone = terminated(&actions);
    gone.sort();
    assert_eq!(gone, ["a2", "b1", "c1"]);

    // One spare for two zones: wherever it is, it serves.
    assert!(plan(&[], &[in_zone("b1", "zone-b", 1)], NOW, &ordered(1), &none).is_empty());

    // Three zones, one spare in zone-c: the two launches go to zones a and b, on the cheapest
    // type of each with `cheapest` (t3a.small in a, t3.small in b), the type written first
    // with `ordered`.
    let third = |mut policy: Policy| {
        policy.subnet_ids.push("subnet-c".into());
        (policy.subnet_zones).insert("subnet-c".into(), "zone-c".into());
        policy
    };
    let mut priced = Conditions {
        offering_costs: costs(),
        ..Conditions::default()
    };
    for t in ["t3.small", "t3a.small"] {
        (priced.offering_costs).insert((t.into(), "subnet-c".into()), 0.05);
    }
    let only_c = [in_zone("c1", "zone-c", 1)];
    let actions = plan(&[], &only_c, NOW, &third(policy(3, 10)), &priced);
    assert_eq!(
        launch_list(&actions),
        [("t3a.small", "subnet-a", 1), ("t3.small", "subnet-b", 1)]
    );
    let actions = plan(&[], &only_c, NOW, &third(ordered(3)), &priced);
    assert_eq!(
        launch_list(&actions),
        [("t3.small", "subnet-a", 1), ("t3.small", "subnet-b", 1)]
    );

    // A shared tier (4 slots) with 8 spare slots, 4 a zone: zone-a's 9 free slots are on
    // instances users hold, zone-b's 4 on its one empty spare. One instance's worth over, but
    // zone-b's spare is all it has: nothing goes (nor is anything launched again).
    let mut shared = ordered(8);
    shared.tiers[0].slots_per_instance = 4;
    let mut holders = Vec::new();
    let mut instances = vec![in_zone("b1", "zone-b", 9)];
    for (n, id) in ["a1", "a2", "a3"].into_iter().enumerate() {
        instances.push(PoolInstance {
            status: InstanceStatus::Assigned,
            ..in_zone(id, "zone-a", n as Millis)
        });
        holders.push(user(&format!("h{n}"), UserState::Ready, Some(id), 1));
    }
    assert!(plan(&holders, &instances, NOW, &shared, &none).is_empty());

    // While a subnet's zone is unknown: round-robin over the subnets.
    let mut unknown = ordered(2);
    unknown.subnet_zones.remove("subnet-b");
    let actions = plan(&[], &[], NOW, &unknown, &none);
    assert_eq!(
        launch_list(&actions),
        [("t3.small", "subnet-a", 1), ("t3.small", "subnet-b", 1)]
    );
}

/// Table: (spares available, initializing, queued users, spare target, max) -> (launches, surplus terminations).
#[test]
fn pool_sizing_table() {
    let cases: &[(usize, usize, usize, u32, u32, u32, usize)] = &[
        // avail, init, queued, spare, max, launches, terminations
        (2, 0, 0, 2, 10, 0, 0),
        (0, 2, 0, 2, 10, 0, 0),
        (1, 0, 0, 2, 10, 1, 0),
        (4, 0, 0, 2, 10, 0, 2),
        (0, 0, 3, 2, 10, 5, 0),
        (1, 0, 3, 2, 10, 4, 0),   // 1 assigned, 2 unserved + 2 spares
        (0, 0, 30, 2, 10, 10, 0), // capped by max
        (0, 9, 30, 2, 10, 1, 0),
        (3, 0, 0, 0, 10, 0, 3),
        (5, 0, 0, 2, 3, 0, 3), // over max (config lowered): shed available down to target
    ];
    for (row, &(avail, init, queued, spare, max, want_launch, want_term)) in
        cases.iter().enumerate()
    {
        let mut instances = Vec::new();
        // Spread over the two zones, as the launches were (per-zone counting: its own test).
        let zone = |n: usize| {
            Some(
                if n.is_multiple_of(2) {
                    "zone-a"
                } else {
                    "zone-b"
                }
                .to_string(),
            )
        };
        for n in 0..avail {
            let mut i = instance(&format!("i-a{n}"), InstanceStatus::Available);
            i.zone = zone(n);
            instances.push(i);
        }
        for n in 0..init {
            let mut i = instance(&format!("i-i{n}"), InstanceStatus::Initializing);
            i.probe = Some((format!("cmd-{n}"), NOW - 1_000));
            i.zone = zone(n);
            instances.push(i);
        }
        let users: Vec<UserIntent> = (0..queued)
            .map(|n| user(&format!("u{n}"), UserState::Queued, None, n as Millis))
            .collect();
        let actions = plan(
            &users,
            &instances,
            NOW,
            &policy(spare, max),
            &Conditions::default(),
        );
        assert_eq!(launches(&actions), want_launch, "row {row}: {actions:?}");
        assert_eq!(
            terminated(&actions).len(),
            want_term,
            "row {row}: {actions:?}"
        );
    }
}

#[test]
fn queued_users_are_served_first_come_first_served_on_the_oldest_spares() {
    let mut old = instance("i-old", InstanceStatus::Available);
    old.launched_at = NOW - 500_000;
    let new = instance("i-new", InstanceStatus::Available);
    let users = vec![
        user("late", UserState::Queued, None, 300),
        user("early", UserState::Queued, None, 100),
        user("middle", UserState::Queued, None, 200),
    ];
    let actions = plan(
        &users,
        &[new, old],
        NOW,
        &policy(2, 10),
        &Conditions::default(),
    );
    assert_eq!(
        assigned(&actions),
        vec![("early", "i-old"), ("middle", "i-new")]
    );
}

/// The instance ids `plan` sends a probe to.
fn probed(instances: &[PoolInstance], now: Millis) -> Vec<String> {
    plan(&[], instances, now, &policy(0, 10), &Conditions::default())
        .into_iter()
        .filter_map(|a| match a {
            Action::SendProbe { instance } => Some(instance.0),
            _ => None,
        })
        .collect()
}

#[test]
fn a_probe_waits_for_an_agent_ssm_lists_online() {
    let mut offline = instance("i-offline", InstanceStatus::Initializing);
    offline.agent_online = Some(false);
    let online = instance("i-online", InstanceStatus::Initializing);
    // Online, but its last probe failed a moment ago: `probe_retry` still applies.
    let mut retried = instance("i-retried", InstanceStatus::Initializing);
    retried.probe_failed_at = Some(NOW - 1_000);
    let mut due = instance("i-due", InstanceStatus::Initializing);
    due.probe_failed_at = Some(NOW - 5_000);
    // Offline however long ago its last probe failed.
    let mut offline_long = instance("i-offline-long", InstanceStatus::Initializing);
    offline_long.agent_online = Some(false);
    offline_long.probe_failed_at = Some(NOW - 100_000);
    assert_eq!(
        probed(&[offline, online, retried, due, offline_long], NOW),
        ["i-online", "i-due"]
    );
}

#[test]
fn without_ssm_s_word_probes_back_off_with_the_instance_s_age() {
    let young = |failed_age: Millis, since_failure: Millis| {
        let mut i = instance("i-young", InstanceStatus::Initializing);
        i.agent_online = None;
        i.launched_at = NOW - failed_age - since_failure;
        i.probe_failed_at = Some(NOW - since_failure);
        i
    };
    let mut never_probed = instance("i-new", InstanceStatus::Initializing);
    never_probed.agent_online = None;
    never_probed.launched_at = NOW - 25_000;
    // Never probed: at once (moto's instances answer at once).
    assert_eq!(probed(&[never_probed], NOW), ["i-new"]);
    // Failed at 25 s of age: the next probe 12.5 s later, not 5 s.
    assert!(probed(&[young(25_000, 5_000)], NOW).is_empty());
    assert!(probed(&[young(25_000, 12_000)], NOW).is_empty());
    assert_eq!(probed(&[young(25_000, 12_500)], NOW), ["i-young"]);
    // Very young: at least `probe_retry`.
    assert!(probed(&[young(2_000, 4_999)], NOW).is_empty());
    assert_eq!(probed(&[young(2_000, 5_000)], NOW), ["i-young"]);
    // Old: at most `probe_backoff_max`.
    assert!(probed(&[young(200_000, 29_999)], NOW).is_empty());
    assert_eq!(probed(&[young(200_000, 30_000)], NOW), ["i-young"]);
}

#[test]
fn initializing_instances_are_probed_checked_and_timed_out() {
    let fresh = instance("i-fresh", InstanceStatus::Initializing);
    let mut probing = instance("i-probing", InstanceStatus::Initializing);
    probing.probe = Some(("cmd-1".into(), NOW - 1_000));
    let mut failed_recently = instance("i-failed", InstanceStatus::Initializing);
    failed_recently.probe_failed_at = Some(NOW - 1_000);
    let mut pending = instance("i-pending", InstanceStatus::Initializing);
    pending.lifecycle = Some(Lifecycle::Pending);
    let mut stale = instance("i-stale", InstanceStatus::Initializing);
    stale.launched_at = NOW - 700_000;
    stale.status_since = NOW - 700_000;

    let actions = plan(
        &[],
        &[fresh, probing, failed_recently, pending, stale],
        NOW,
        &policy(0, 10),
        &Conditions::default(),
    );
    assert!(actions.contains(&Action::SendProbe {
        instance: InstanceId("i-fresh".into())
    }));
    assert!(actions.contains(&Action::CheckProbe {
        instance: InstanceId("i-probing".into()),
        command_id: "cmd-1".into()
    }));
    assert!(actions.contains(&Action::Terminate {
        instance: InstanceId("i-stale".into()),
        reason: TerminateReason::ProbeTimeout
    }));
    let touched: Vec<String> = actions.iter().map(|a| format!("{a:?}")).collect();
    assert!(
        !touched.iter().any(|a| a.contains("i-failed")),
        "{touched:?}"
    );
    assert!(
        !touched.iter().any(|a| a.contains("i-pending")),
        "{touched:?}"
    );
}

#[test]
fn users_are_driven_by_state() {
    let instances = vec![
        instance("i-1", InstanceStatus::Assigned),
        instance("i-2", InstanceStatus::Assigned),
        instance("i-3", InstanceStatus::Assigned),
    ];
    let users = vec![
        user("provisioning", UserState::Provisioning, Some("i-1"), 1),
        user("ready", UserState::Ready, Some("i-2"), 2),
        user("deleting", UserState::Deleting, Some("i-3"), 3),
        user("failed", UserState::Failed, None, 4),
        user("lost", UserState::Ready, Some("i-vanished"), 5),
    ];
    let actions = plan(
        &users,
        &instances,
        NOW,
        &policy(0, 10),
        &Conditions::default(),
    );
    assert!(actions.contains(&Action::AdvanceClaim {
        user: UserId::parse("provisioning").unwrap()
    }));
    assert!(actions.contains(&Action::Release {
        user: UserId::parse("deleting").unwrap()
    }));
    assert!(actions.contains(&Action::Recover {
        user: UserId::parse("lost").unwrap()
    }));
    assert!(terminated(&actions).is_empty(), "{actions:?}");
    assert_eq!(actions.len(), 3, "{actions:?}");
}

#[test]
fn a_held_instance_that_stopped_is_recovered_not_terminated_by_the_pool() {
    let mut stopped = instance("i-1", InstanceStatus::Assigned);
    stopped.lifecycle = Some(Lifecycle::Stopped);
    let users = vec![user("alice", UserState::Ready, Some("i-1"), 1)];
    let actions = plan(
        &users,
        &[stopped],
        NOW,
        &policy(0, 10),
        &Conditions::default(),
    );
    assert_eq!(
        actions,
        vec![Action::Recover {
            user: UserId::parse("alice").unwrap()
        }]
    );
}

#[test]
fn orphans_and_vanished_instances_are_cleaned_up_after_their_grace() {
    let mut young_orphan = instance("i-young", InstanceStatus::Assigned);
    young_orphan.status_since = NOW - 1_000;
    let mut old_orphan = instance("i-old", InstanceStatus::Assigned);
    old_orphan.status_since = NOW - 700_000;
    let mut just_launched = instance("i-new", InstanceStatus::Initializing);
    just_launched.lifecycle = None;
    just_launched.launched_at = NOW - 1_000;
    let mut vanished = instance("i-gone", InstanceStatus::Available);
    vanished.lifecycle = None;
    let actions = plan(
        &[],
        &[young_orphan, old_orphan, just_launched, vanished],
        NOW,
        &policy(1, 10),
        &Conditions::default(),
    );
    assert_eq!(terminated(&actions), vec!["i-old"]);
    assert!(actions.contains(&Action::Forget {
        instance: InstanceId("i-gone".into())
    }));
    // The just-launched instance counts as a spare in flight: no extra launch.
    assert_eq!(launches(&actions), 0, "{actions:?}");
}

// --- properties -----------------------------------------------------------------------------

fn arb_status() -> impl Strategy<Value = InstanceStatus> {
    prop_oneof![
        Just(InstanceStatus::Initializing),
        Just(InstanceStatus::Available),
        Just(InstanceStatus::Assigned),
        Just(InstanceStatus::Terminating),
    ]
}

fn arb_lifecycle() -> impl Strategy<Value = Option<Lifecycle>> {
    prop_oneof![
        4 => Just(Some(Lifecycle::Running)),
        1 => Just(Some(Lifecycle::Pending)),
        1 => Just(Some(Lifecycle::ShuttingDown)),
        1 => Just(Some(Lifecycle::Stopped)),
        1 => Just(None),
    ]
}

fn arb_user_state() -> impl Strategy<Value = UserState> {
    prop_oneof![
        Just(UserState::Queued),
        Just(UserState::Provisioning),
        Just(UserState::Ready),
        Just(UserState::Failed),
        Just(UserState::Deleting),
    ]
}

/// A random but self-consistent world: instances, and users of whom some hold distinct instances.
fn arb_world() -> impl Strategy<Value = (Vec<UserIntent>, Vec<PoolInstance>, u32, u32)> {
    let instances = prop::collection::vec(
        (arb_status(), arb_lifecycle(), 0..900_000i64, any::<bool>()),
        0..25,
    );
    let users = prop::collection::vec(
        (
            arb_user_state(),
            any::<prop::sample::Index>(),
            any::<bool>(),
        ),
        0..20,
    );
    (instances, users, 0u32..6, 0u32..30).prop_map(|(instances, users, spare, max_extra)| {
        let instances: Vec<PoolInstance> = instances
            .into_iter()
            .enumerate()
            .map(|(n, (status, lifecycle, age, probing))| PoolInstance {
                id: InstanceId(format!("i-{n}")),
                tier: "default".into(),
                status,
                lifecycle,
                launched_at: NOW - age,
                status_since: NOW - age / 2,
                probe: probing.then(|| (format!("cmd-{n}"), NOW - 1_000)),
                probe_failed_at: None,
                agent_online: (age % 5 != 0).then_some(age % 7 != 0),
                missed: (age % 3) as u32,
                recycle: None,
                zone: Some(if n % 2 == 0 { "zone-a" } else { "zone-b" }.into()),
                probed: false,
                warm: None,
                wiping: Vec::new(),
                wiping_users: Vec::new(),
            })
            .collect();
        let mut free: Vec<InstanceId> = instances.iter().map(|i| i.id.clone()).collect();
        let users = users
            .into_iter()
            .enumerate()
            .map(|(n, (state, pick, holds))| {
                let instance = if matches!(state, UserState::Queued | UserState::Failed)
                    || !holds
                    || free.is_empty()
                {
                    None
                } else {
                    Some(free.remove(pick.index(free.len())))
                };
                UserIntent {
                    user: UserId::parse(&format!("user-{n}")).unwrap(),
                    tier: "default".into(),
                    state,
                    instance,
                    slot: 0,
                    requested_at: n as Millis,
                    tearing_down: false,
                    moving_to: None,
                    moving_slot: 0,
                    zone: None,
                    relocating: false,
                    shard: None,
                    waiting_for_route: false,
                    route_untagged: false,
                    has_route: false,
                    move_abandoned_at: None,
                }
            })
            .collect();
        (users, instances, spare, spare + max_extra)
    })
}

proptest! {
    #[test]
    fn plan_never_launches_past_the_maximum((users, instances, spare, max) in arb_world()) {
        let policy = policy(spare, max);
        let actions = plan(&users, &instances, NOW, &policy, &Conditions::default());
        let counted = instances
            .iter()
            .filter(|i| match i.lifecycle {
                Some(l) => !l.is_gone() && i.status != InstanceStatus::Terminating,
                None => i.status == InstanceStatus::Initializing
                    && NOW - i.launched_at <= policy.launch_visibility_grace,
            })
            .count() as u32;
        let launched = launches(&actions);
        prop_assert!(launched == 0 || counted + launched <= max,
            "counted {counted} + launched {launched} > max {max}");
    }

    #[test]
    fn plan_never_terminates_or_reassigns_an_instance_its_user_wants((users, instances, spare, max) in arb_world()) {
        let actions = plan(&users, &instances, NOW, &policy(spare, max), &Conditions::default());
        let wanted: HashSet<&str> = users
            .iter()
            .filter(|u| u.state.wants_instance())
            .filter_map(|u| u.instance.as_ref().map(|i| i.0.as_str()))
            .collect();
        for id in terminated(&actions) {
            prop_assert!(!wanted.contains(id), "terminated wanted instance {id}");
        }
        for (_, id) in assigned(&actions) {
            prop_assert!(!wanted.contains(id), "reassigned wanted instance {id}");
        }
    }

    #[test]
    fn plan_never_gives_a_user_two_instances((users, instances, spare, max) in arb_world()) {
        let actions = plan(&users, &instances, NOW, &policy(spare, max), &Conditions::default());
        let mut users_seen = HashSet::new();
        let mut instances_seen = HashSet::new();
        let holding: HashSet<&str> = users
            .iter()
            .filter(|u| u.instance.is_some())
            .map(|u| u.user.as_str())
            .collect();
        let held: HashSet<&str> = users
            .iter()
            .filter_map(|u| u.instance.as_ref().map(|i| i.0.as_str()))
            .collect();
        for (user, instance) in assigned(&actions) {
            prop_assert!(users_seen.insert(user), "{user} assigned twice");
            prop_assert!(instances_seen.insert(instance), "{instance} assigned twice");
            prop_assert!(!holding.contains(user), "{user} already holds an instance");
            prop_assert!(!held.contains(instance), "{instance} already held");
            let picked = instances.iter().find(|i| i.id.0 == instance).unwrap();
            prop_assert_eq!(picked.status, InstanceStatus::Available);
        }
    }

    #[test]
    fn a_deficit_launches_and_a_surplus_terminates_only_available_spares(
        (users, instances, spare, max) in arb_world()
    ) {
        let policy = policy(spare, max);
        let actions = plan(&users, &instances, NOW, &policy, &Conditions::default());
        let by_id: HashMap<&str, &PoolInstance> =
            instances.iter().map(|i| (i.id.0.as_str(), i)).collect();
        let surplus: Vec<&str> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Terminate { instance, reason: TerminateReason::Surplus } => Some(instance.0.as_str()),
                _ => None,
            })
            .collect();
        for id in &surplus {
            prop_assert_eq!(by_id[id].status, InstanceStatus::Available);
        }
        prop_assert!(surplus.is_empty() || launches(&actions) == 0, "launch and shed at once");
        // With no instances at all, a positive target always launches (room permitting).
        if instances.is_empty() && spare > 0 {
            prop_assert!(launches(&actions) >= spare.min(max));
        }
    }
}

// --- capacity fallback and failure limits (issue 4) ----------------------------------------

fn launch_targets(actions: &[Action]) -> Vec<(String, String, Market)> {
    (launches_of(actions))
        .map(|(t, s, _, market)| (t.to_string(), s.to_string(), market))
        .collect()
}

fn unavailable(offerings: &[(&str, &str)]) -> Conditions {
    Conditions {
        unavailable: offerings
            .iter()
            .map(|(t, s)| (t.to_string(), s.to_string()))
            .collect(),
        ..Conditions::default()
    }
}

#[test]
fn capacity_errors_fall_back_to_another_zone_then_type_then_on_demand() {
    let spot = |t: &str, s: &str| (t.to_string(), s.to_string(), Market::Spot);
    // One zone out for the preferred type: both launches go to the other zone.
    let actions = plan(
        &[],
        &[],
        NOW,
        &policy(2, 10),
        &unavailable(&[("t3.small", "subnet-a")]),
    );
    assert_eq!(launch_targets(&actions), vec![spot("t3.small", "subnet-b")]);
    assert_eq!(launches(&actions), 2);

    // The preferred type is out everywhere: the next type takes over.
    let out = unavailable(&[("t3.small", "subnet-a"), ("t3.small", "subnet-b")]);
    let actions = plan(&[], &[], NOW, &policy(2, 10), &out);
    assert_eq!(
        launch_targets(&actions),
        vec![spot("t3a.small", "subnet-a"), spot("t3a.small", "subnet-b")]
    );

    // Every spot offering is out: on-demand if the tier allows it, else nothing.
    let all_out = unavailable(&[
        ("t3.small", "subnet-a"),
        ("t3.small", "subnet-b"),
        ("t3a.small", "subnet-a"),
        ("t3a.small", "subnet-b"),
    ]);
    assert!(plan(&[], &[], NOW, &policy(2, 10), &all_out).is_empty());
    let mut allows = policy(2, 10);
    allows.tiers[0].on_demand_fallback = true;
    let actions = plan(&[], &[], NOW, &allows, &all_out);
    assert!(
        launch_targets(&actions)
            .iter()
            .all(|(t, _, m)| t == "t3.small" && *m == Market::OnDemand)
    );
    assert_eq!(launches(&actions), 2);
}

#[test]
fn a_blocked_tier_launches_nothing_but_still_serves_its_queue() {
    let blocked = Conditions {
        launch_blocked: ["default".to_string()].into_iter().collect(),
        ..Conditions::default()
    };
    let spare = instance("i-1", InstanceStatus::Available);
    let users = vec![
        user("alice", UserState::Queued, None, 1),
        user("bob", UserState::Queued, None, 2),
    ];
    let actions = plan(&users, &[spare], NOW, &policy(2, 10), &blocked);
    assert_eq!(launches(&actions), 0);
    assert_eq!(assigned(&actions), vec![("alice", "i-1")]);
}

/// Users waiting in a zone of two subnets: their launches go round-robin over both, on the type
/// the placement picks there (with costs: the zone's cheapest type, t3a.small), never into
/// another zone.
#[test]
fn a_zones_waiting_users_launches_spread_over_its_subnets() {
    let mut three = policy(0, 10);
    three.subnet_ids.insert(1, "subnet-a2".into());
    (three.subnet_zones).insert("subnet-a2".into(), "zone-a".into());
    let waiting: Vec<UserIntent> = (0..4)
        .map(|n| UserIntent {
            zone: Some("zone-a".into()),
            ..user(&format!("u{n}"), UserState::Queued, None, n)
        })
        .collect();
    let mut costs = costs();
    costs.insert(("t3.small".into(), "subnet-a2".into()), 0.009);
    costs.insert(("t3a.small".into(), "subnet-a2".into()), 0.005);
    let priced = Conditions {
        offering_costs: costs,
        ..Conditions::default()
    };
    let actions = plan(&waiting, &[], NOW, &three, &priced);
    assert_eq!(
        launch_list(&actions),
        [("t3a.small", "subnet-a", 2), ("t3a.small", "subnet-a2", 2)]
    );
    three.tiers[0].placement = crate::plan::Placement::Ordered;
    let actions = plan(&waiting, &[], NOW, &three, &priced);
    assert_eq!(
        launch_list(&actions),
        [("t3.small", "subnet-a", 2), ("t3.small", "subnet-a2", 2)]
    );
}

#[test]
fn only_a_queued_users_workspace_is_copied_out_of_a_zone_without_capacity() {
    let zone_a_out = unavailable(&[("t3.small", "subnet-a"), ("t3a.small", "subnet-a")]);
    let in_zone_a = |mut u: UserIntent| {
        u.zone = Some("zone-a".into());
        u
    };
    let queued = in_zone_a(user("alice", UserState::Queued, None, 1));
    // Bob's instance was recycled: his workspace is still mounted there while he waits.
    let migrating = in_zone_a(user("bob", UserState::Migrating, Some("i-old"), 2));
    let mut copying = in_zone_a(user("carol", UserState::Queued, None, 3));
    copying.relocating = true;
    let old = instance("i-old", InstanceStatus::Assigned);
    let actions = plan(
        &[queued, migrating, copying],
        &[old],
        NOW,
        &policy(0, 10),
        &zone_a_out,
    );
    let relocations: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::RelocateWorkspace { user, to_zone } => Some((user.as_str(), to_zone.as_str())),
            _ => None,
        })
        .collect();
    assert!(relocations.contains(&("alice", "zone-b")), "{actions:?}");
    assert!(!relocations.iter().any(|(u, _)| *u == "bob"), "{actions:?}");
    assert!(actions.contains(&Action::AdvanceRelocation {
        user: UserId::parse("carol").unwrap()
    }));
    // No launch in zone-a, which has no capacity.
    assert!(
        launch_targets(&actions)
            .iter()
            .all(|(_, subnet, _)| subnet != "subnet-a"),
        "{actions:?}"
    );
}

/// A spare with a complete warm route on `shard`.
fn warm_on(mut spare: PoolInstance, shard: &str) -> PoolInstance {
    spare.probed = true;
    spare.warm = Some(WarmView {
        shard: shard.into(),
        complete: true,
    });
    spare
}

fn wired(actions: &[Action]) -> Vec<(&str, Option<&str>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Wire { instance, shard } => Some((instance.0.as_str(), shard.as_deref())),
            _ => None,
        })
        .collect()
}

#[test]
fn probed_spares_are_wired_on_the_shard_with_room_left_after_the_users() {
    let policy = two_shards(2);
    let mut fresh = instance("i-new", InstanceStatus::Initializing);
    fresh.probed = true;
    // s0 holds two users (full); s1 one user and one warm spare (full too, warm routes count).
    let spare = warm_on(instance("i-warm", InstanceStatus::Available), "s1");
    let users = vec![
        on_shard(user("a", UserState::Ready, None, 1), "s0"),
        on_shard(user("b", UserState::Ready, None, 2), "s0"),
        on_shard(user("c", UserState::Ready, None, 3), "s1"),
    ];
    let instances = vec![fresh.clone(), spare.clone()];
    let actions = plan(&users, &instances, NOW, &policy, &Conditions::default());
    assert_eq!(wired(&actions), vec![("i-new", None)], "no room: unwired");

    // With room on s1 it goes there; a spare mid-wiring goes on with its own shard.
    let users = &users[..2];
    let mut midway = instance("i-mid", InstanceStatus::Initializing);
    midway.probed = true;
    midway.warm = Some(WarmView {
        shard: "s0".into(),
        complete: false,
    });
    let instances = vec![fresh, midway];
    let actions = plan(users, &instances, NOW, &policy, &Conditions::default());
    let mut got = wired(&actions);
    got.sort();
    assert_eq!(got, vec![("i-mid", Some("s0")), ("i-new", Some("s1"))]);
}

#[test]
fn a_spare_on_call_asked_to_recycle_is_replaced_not_claimed() {
    let mut recycled = instance("i-recycled", InstanceStatus::Available);
    recycled.launched_at = NOW - 500_000;
    recycled.recycle = Some(NOW - 1_000);
    let fresh = instance("i-fresh", InstanceStatus::Available);
    let users = vec![user("new", UserState::Queued, None, 1)];
    let actions = plan(
        &users,
        &[recycled.clone(), fresh],
        NOW,
        &policy(1, 20),
        &Conditions::default(),
    );
    assert_eq!(assigned(&actions), vec![("new", "i-fresh")], "{actions:?}");
    // Alone, it still serves nobody: the user waits for the launch that replaces it.
    let actions = plan(
        &users,
        &[recycled],
        NOW,
        &policy(1, 20),
        &Conditions::default(),
    );
    assert!(assigned(&actions).is_empty(), "{actions:?}");
    assert!(
        actions.iter().any(|a| matches!(a, Action::Launch { .. })),
        "{actions:?}"
    );
}

#[test]
fn a_shard_over_its_limit_with_warm_spares_still_serves_claims_through_them() {
    // Three spares were wired on s0 before AWS refused more (its mark: 2 routes), and the region
    // quota now says 2: every shard is over. A new claim, and one placed on s0, take a warm
    // spare each (taking over a route adds none); a third waits for room.
    let policy = two_shards(5);
    let instances = vec![
        warm_on(instance("i-w1", InstanceStatus::Available), "s0"),
        warm_on(instance("i-w2", InstanceStatus::Available), "s0"),
        warm_on(instance("i-w3", InstanceStatus::Available), "s0"),
    ];
    let conditions = Conditions {
        route_limits: BTreeMap::from([("s0".to_string(), 2), ("s1".to_string(), 0)]),
        region_route_limit: Some(2),
        ..Conditions::default()
    };
    let users = vec![
        user("new", UserState::Queued, None, 1),
        on_shard(user("placed", UserState::Queued, None, 2), "s0"),
        on_shard(user("elsewhere", UserState::Queued, None, 3), "s1"),
    ];
    let actions = plan(&users, &instances, NOW, &policy, &conditions);
    let mut got = assigned(&actions);
    got.sort();
    assert_eq!(
        got,
        vec![("new", "i-w1"), ("placed", "i-w2")],
        "{actions:?}"
    );
    // s1's own mark leaves it no room, and its user has no route of its own yet.
    assert!(
        actions.contains(&Action::AwaitRoute {
            user: UserId::parse("elsewhere").unwrap()
        }),
        "{actions:?}"
    );
    // The shard's limit alone, then the region's alone, stop nobody from taking a warm route.
    for alone in [
        Conditions {
            route_limits: BTreeMap::from([("s0".to_string(), 2)]),
            ..Conditions::default()
        },
        Conditions {
            region_route_limit: Some(2),
            ..Conditions::default()
        },
    ] {
        let actions = plan(&users[..1], &instances, NOW, &policy, &alone);
        assert_eq!(assigned(&actions), vec![("new", "i-w1")], "{actions:?}");
    }
    // A user with a route of its own (a recovery, a wake) on a shard over its limit adds no
    // route either: it is served, by an unwired spare first.
    let mut recovering = on_shard(user("recovering", UserState::Queued, None, 4), "s0");
    recovering.has_route = true;
    let mut with_plain = instances.clone();
    with_plain.push(instance("i-plain", InstanceStatus::Available));
    let actions = plan(&[recovering], &with_plain, NOW, &policy, &conditions);
    assert_eq!(
        assigned(&actions),
        vec![("recovering", "i-plain")],
        "{actions:?}"
    );
}

#[test]
fn a_claim_takes_a_warm_spare_first_and_a_non_spares_warm_route_is_unwired() {
    let policy = two_shards(2);
    // The oldest spare is unwired; the warm one is newer. s0 is full with the warm spare's room
    // and one user: the new user still takes the warm spare (its room becomes the user's).
    let mut old = instance("i-old", InstanceStatus::Available);
    old.launched_at = NOW - 500_000;
    let warm = warm_on(instance("i-warm", InstanceStatus::Available), "s0");
    let mut taken = warm_on(instance("i-moved", InstanceStatus::Assigned), "s1");
    taken.warm.as_mut().unwrap().complete = false;
    let users = vec![
        on_shard(user("ready", UserState::Ready, None, 1), "s0"),
        user("new", UserState::Queued, None, 2),
    ];
    let mut two = two_shards(2);
    two.shards[1].capacity = 0;
    let instances = vec![old, warm, taken];
    let actions = plan(&users, &instances, NOW, &two, &Conditions::default());
    assert_eq!(placed(&actions), vec![("new", "s0")]);
    assert_eq!(assigned(&actions), vec![("new", "i-warm")]);
    assert!(
        actions.contains(&Action::Unwire {
            instance: InstanceId("i-moved".into())
        }),
        "{actions:?}"
    );
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Unwire { instance } if instance.0 != "i-moved"))
    );
    // A user placed on the other shard cannot take it: an unwired spare serves it.
    let users = vec![on_shard(
        user("elsewhere", UserState::Queued, None, 2),
        "s1",
    )];
    let instances = vec![
        warm_on(instance("i-warm", InstanceStatus::Available), "s0"),
        instance("i-plain", InstanceStatus::Available),
    ];
    let actions = plan(&users, &instances, NOW, &policy, &Conditions::default());
    assert_eq!(assigned(&actions), vec![("elsewhere", "i-plain")]);

    // A woken user keeps its own rule: it takes the unwired spare, not the warm one.
    let mut woken = user("woken", UserState::Queued, None, 2);
    woken.has_route = true;
    let actions = plan(&[woken], &instances, NOW, &policy, &Conditions::default());
    assert_eq!(assigned(&actions), vec![("woken", "i-plain")]);

    // A spare one listing missed keeps its warm route; one whose shard left the configuration,
    // or that EC2 calls gone, loses it.
    let mut missed = warm_on(instance("i-missed", InstanceStatus::Available), "s0");
    missed.lifecycle = None;
    missed.missed = 1;
    let mut gone = warm_on(instance("i-gone", InstanceStatus::Available), "s0");
    gone.lifecycle = Some(Lifecycle::Terminated);
    let orphaned = warm_on(instance("i-orphaned", InstanceStatus::Available), "s9");
    let actions = plan(
        &[],
        &[missed, gone, orphaned],
        NOW,
        &policy,
        &Conditions::default(),
    );
    let mut unwired: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Unwire { instance } => Some(instance.0.as_str()),
            _ => None,
        })
        .collect();
    unwired.sort();
    assert_eq!(unwired, vec!["i-gone", "i-orphaned"]);
}
