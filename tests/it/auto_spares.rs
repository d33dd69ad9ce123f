//! Spares that follow demand on the fake (ARCHITECTURE.md, "Spares that follow demand"): an auto
//! tier starts at its minimum, grows with a burst of sign-ups as `plan::spares` says from the
//! measured rate and lead time, shows the decision and why in `GET /v1/pool`, and shrinks back to
//! the minimum, retiring spares, once the lull has lasted.

use crate::world::{ADMIN_TOKEN, World};
use spotpool::app::App;
use spotpool::config::{Settings, TierSettings};
use spotpool::model::InstanceStatus;

async fn auto_world() -> World {
    auto_world_of(1).await
}

/// An auto tier (1-6 spares) with `slots` users per instance.
async fn auto_world_of(slots: u32) -> World {
    let config = Settings {
        tier: Some(vec![TierSettings {
            name: Some("auto".into()),
            instance_types: Some(vec!["t3.small".into()]),
            spare: Some("auto".into()),
            spare_min: Some(1),
            spare_max: Some(6),
            max_instances: Some(30),
            slots_per_instance: Some(slots),
            ..TierSettings::default()
        }]),
        ..crate::world::test_settings(0, 0)
    }
    .into_config()
    .expect("a valid auto tier");
    World::with_config(App::reconciler_config(&config)).await
}

async fn tier_doc(world: &World) -> serde_json::Value {
    let (status, pool) = world
        .request("GET", "/v1/pool", Some(ADMIN_TOKEN), "")
        .await;
    assert_eq!(status, 200, "{pool}");
    pool["tiers"][0].clone()
}

#[tokio::test]
async fn an_auto_tier_grows_with_a_burst_of_sign_ups_and_shrinks_after_the_lull() {
    let world = auto_world().await;
    world.run_until_quiet(20).await;
    let quiet = tier_doc(&world).await;
    assert_eq!(quiet["spare_target"], 1, "{quiet}");
    assert_eq!(quiet["spare_auto"]["min"], 1);
    assert_eq!(quiet["spare_auto"]["max"], 6);
    assert_eq!(quiet["spare_auto"]["sign_ups_per_hour"], 0.0);
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 1);

    // Eight sign-ups within a quarter hour: 32 an hour. Two minutes on before the next pass,
    // so the last minute's rate (480 an hour) has gone and the quarter hour's decides.
    for n in 0..8 {
        world.put_user(&format!("u{n}"), "{}").await;
    }
    world.advance(2 * 60_000);
    world.run_until_quiet(60).await;
    let busy = tier_doc(&world).await;
    let auto = &busy["spare_auto"];
    assert_eq!(auto["sign_ups_per_hour"], 32.0, "{busy}");
    let lead = auto["lead_time_seconds"].as_f64().unwrap();
    // What the decision says for that rate and lead time, within the bounds.
    let expected = spotpool::plan::spares::decide(
        spotpool::plan::SpareBounds { min: 1, max: 6 },
        &spotpool::plan::Demand {
            recent_rate: 0.0,
            quarter_hour_rate: 32.0,
            hour_rate: 8.0,
            lead_time: (lead * 1000.0) as i64,
        },
        None,
        0,
    );
    assert_eq!(busy["spare_target"], expected.target, "{busy}");
    assert!(expected.target > 1, "{busy}");
    assert!(
        auto["reason"]
            .as_str()
            .unwrap()
            .contains("32.0 sign-ups an hour"),
        "{busy}"
    );
    assert_eq!(
        world.ledger_count(InstanceStatus::Available).await as u64,
        expected.target as u64,
        "the spares follow the target"
    );

    // An hour and a quarter without a sign-up: held for 15 minutes, then back to the minimum,
    // the surplus spares retired.
    world.advance(75 * 60_000);
    world.pass().await;
    let held = tier_doc(&world).await;
    assert_eq!(held["spare_target"], expected.target, "held: {held}");
    assert!(
        held["spare_auto"]["reason"]
            .as_str()
            .unwrap()
            .contains("holding"),
        "{held}"
    );
    world.advance(16 * 60_000);
    world.run_until_quiet(30).await;
    let after = tier_doc(&world).await;
    assert_eq!(after["spare_target"], 1, "{after}");
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 1);
    world.assert_no_leaks().await;
}

/// On-call's `spare_count` pins an auto tier to a fixed count, shown as the pin; `null` unpins
/// it and the decision takes over again.
#[tokio::test]
async fn on_call_pins_an_auto_tier_and_null_unpins_it() {
    let world = auto_world().await;
    world.run_until_quiet(20).await;
    let (status, pinned) = world
        .request(
            "PUT",
            "/v1/admin/pool/auto",
            Some(ADMIN_TOKEN),
            r#"{"spare_count":3}"#,
        )
        .await;
    assert_eq!(status, 200, "{pinned}");
    assert_eq!(pinned["spare_count"], 3, "{pinned}");
    assert!(pinned["spare_auto"].is_null(), "{pinned}");
    world.run_until_quiet(30).await;
    let tier = tier_doc(&world).await;
    assert_eq!(tier["spare_target"], 3, "{tier}");
    assert_eq!(tier["spare_auto"]["pinned"], 3, "{tier}");
    assert_eq!(
        (
            tier["spare_auto"]["min"].clone(),
            tier["spare_auto"]["max"].clone()
        ),
        (1.into(), 6.into())
    );
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 3);

    let (status, unpinned) = world
        .request(
            "PUT",
            "/v1/admin/pool/auto",
            Some(ADMIN_TOKEN),
            r#"{"spare_count":null}"#,
        )
        .await;
    assert_eq!(status, 200, "{unpinned}");
    assert_eq!(
        unpinned["spare_auto"],
        serde_json::json!({"min": 1, "max": 6})
    );
    world.run_until_quiet(30).await;
    let tier = tier_doc(&world).await;
    assert!(tier["spare_auto"]["pinned"].is_null(), "{tier}");
    // No sign-up: the minimum, once the lower target has held its 15 minutes.
    world.advance(16 * 60_000);
    world.run_until_quiet(30).await;
    let tier = tier_doc(&world).await;
    assert_eq!(tier["spare_target"], 1, "{tier}");
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 1);
    world.assert_no_leaks().await;
}

/// On a shared tier the target counts free slots: a burst asks for more free slots, which the
/// tier keeps on as few instances as hold them.
#[tokio::test]
async fn an_auto_shared_tier_keeps_free_slots_for_the_demand() {
    let world = auto_world_of(4).await;
    world.run_until_quiet(20).await;
    assert_eq!(tier_doc(&world).await["spare_target"], 1);
    assert_eq!(world.ledger_count(InstanceStatus::Available).await, 1);
    for n in 0..8 {
        world.put_user(&format!("s{n}"), "{}").await;
    }
    world.advance(2 * 60_000);
    world.run_until_quiet(60).await;
    let tier = tier_doc(&world).await;
    let target = tier["spare_target"].as_u64().unwrap();
    assert!(target > 1, "{tier}");
    for n in 0..8 {
        assert_eq!(world.get_user(&format!("s{n}")).await.1["state"], "ready");
    }
    // Free slots: the tier's slots less its users, at least the target, on whole instances.
    let instances = world.ledger_count(InstanceStatus::Available).await
        + world.ledger_count(InstanceStatus::Assigned).await;
    let free = instances as u64 * 4 - 8;
    assert!(
        free >= target,
        "{free} free slots for a target of {target}: {tier}"
    );
    assert!(
        free < target + 4,
        "{free} free slots: at most one instance more than the target needs"
    );
    world.assert_no_leaks().await;
}

/// The decision is kept in the store: a new term (a restart, a failover) goes on from it, a
/// hold under way included, and a replica that does not lead shows it.
#[tokio::test]
async fn a_new_term_goes_on_from_the_stored_decision() {
    let world = auto_world().await;
    world.run_until_quiet(20).await;
    for n in 0..8 {
        world.put_user(&format!("u{n}"), "{}").await;
    }
    world.advance(2 * 60_000);
    world.run_until_quiet(60).await;
    let busy = tier_doc(&world).await["spare_target"].clone();
    assert!(busy.as_u64().unwrap() > 1, "{busy}");
    // The lull begins: the lower target is held.
    world.advance(75 * 60_000);
    world.pass().await;
    let held = tier_doc(&world).await;
    assert_eq!(held["spare_target"], busy, "{held}");
    let stored = world.store.spare_decisions().await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored[0].decision.lower_since.is_some(), "{stored:?}");

    // A replica that does not lead shows the stored decision.
    world.state.reconciler.clear();
    let standby = tier_doc(&world).await;
    assert_eq!(standby["spare_target"], busy, "{standby}");
    assert_eq!(
        standby["spare_auto"]["wanted"], stored[0].decision.wanted,
        "{standby}"
    );

    // A new term over the same store: still held, not decided afresh at the lower demand.
    let restarted = world.restart().await;
    restarted.pass().await;
    let after = tier_doc(&restarted).await;
    assert_eq!(after["spare_target"], busy, "{after}");
    assert!(
        after["spare_auto"]["reason"]
            .as_str()
            .unwrap()
            .contains("holding"),
        "{after}"
    );
    // ... and the hold ends when it would have: 15 minutes from its start.
    restarted.advance(16 * 60_000);
    restarted.run_until_quiet(30).await;
    assert_eq!(tier_doc(&restarted).await["spare_target"], 1);
    restarted.assert_no_leaks().await;
}

/// A move takes a spare as a sign-up does: recycles (an interruption wave, a drain) count in
/// the demand, so an auto tier grows for them though nobody signed up.
#[tokio::test]
async fn moves_count_in_an_auto_tiers_demand() {
    let world = auto_world().await;
    world.run_until_quiet(20).await;
    for n in 0..3 {
        world.ready_user(&format!("m{n}"), "{}").await;
    }
    // The sign-ups are over an hour old: no demand left from them.
    world.advance(2 * 60 * 60_000);
    world.run_until_quiet(30).await;
    world.advance(16 * 60_000);
    world.run_until_quiet(30).await;
    let quiet = tier_doc(&world).await;
    assert_eq!(quiet["spare_target"], 1, "{quiet}");

    for n in 0..3 {
        let instance = world.user_row(&format!("m{n}")).await.instance_id.unwrap();
        let (status, doc) = world
            .request(
                "POST",
                &format!("/v1/admin/instances/{}/recycle", instance.0),
                Some(ADMIN_TOKEN),
                "",
            )
            .await;
        assert_eq!(status, 202, "{doc}");
    }
    world.pass().await;
    world.pass().await;
    let moving = tier_doc(&world).await;
    let auto = &moving["spare_auto"];
    assert!(
        auto["sign_ups_per_hour"].as_f64().unwrap() >= 3.0,
        "the moves count: {moving}"
    );
    assert!(moving["spare_target"].as_u64().unwrap() > 1, "{moving}");
    world.run_until_quiet(60).await;
    for n in 0..3 {
        assert_eq!(world.get_user(&format!("m{n}")).await.1["state"], "ready");
    }
    world.assert_no_leaks().await;
}
