//! Spares that follow demand on the fake (ARCHITECTURE.md, "Spares that follow demand"): an auto
//! tier starts at its minimum, grows with a burst of sign-ups as `plan::spares` says from the
//! measured rate and lead time, shows the decision and why in `GET /v1/pool`, and shrinks back to
//! the minimum, retiring spares, once the lull has lasted.

use crate::world::{ADMIN_TOKEN, World};
use spotpool::app::App;
use spotpool::config::{Settings, TierSettings};
use spotpool::model::InstanceStatus;

async fn auto_world() -> World {
    let config = Settings {
        tier: Some(vec![TierSettings {
            name: Some("auto".into()),
            instance_types: Some(vec!["t3.small".into()]),
            spare: Some("auto".into()),
            spare_min: Some(1),
            spare_max: Some(6),
            max_instances: Some(30),
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
