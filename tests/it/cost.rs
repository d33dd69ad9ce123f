//! Spot prices and the live cost on the fake (ARCHITECTURE.md, "Cost"): distinct prices per
//! zone, read at most hourly into the store (every replica prices from there), a failed read
//! keeping the last prices, and the configured on-demand price for a type without a spot price.

use crate::world::{ADMIN_TOKEN, World};
use spotpool::app::App;
use spotpool::cloud::CloudErrorKind;
use spotpool::config::{Settings, TierSettings};

const HOUR: i64 = 60 * 60_000;

/// Two tiers: `spot` on t3.small (priced per zone by the test), `odd` on a type with no spot
/// price (the configured on-demand price stands in); no public address, a 10 GiB root volume.
async fn world() -> World {
    let config = Settings {
        tier: Some(vec![
            TierSettings {
                name: Some("spot".into()),
                instance_types: Some(vec!["t3.small".into()]),
                spare_count: Some(2),
                max_instances: Some(4),
                ..TierSettings::default()
            },
            TierSettings {
                name: Some("odd".into()),
                instance_types: Some(vec!["m7i.large".into()]),
                spare_count: Some(1),
                max_instances: Some(2),
                ..TierSettings::default()
            },
        ]),
        spotpool_on_demand_prices: Some("m7i.large=0.5".into()),
        spotpool_public_ipv4: Some(false),
        spotpool_root_volume_gib: Some(10),
        spotpool_blank_workspaces: Some(false),
        ..crate::world::test_settings(0, 0)
    }
    .into_config()
    .expect("valid tiers");
    World::with_config(App::reconciler_config(&config)).await
}

async fn pool(world: &World) -> serde_json::Value {
    let (status, pool) = world
        .request("GET", "/v1/pool", Some(ADMIN_TOKEN), "")
        .await;
    assert_eq!(status, 200, "{pool}");
    pool
}

/// (zone, dollars an hour, instances) of a tier's offerings.
fn offerings(pool: &serde_json::Value, tier: usize) -> Vec<(String, f64, u64)> {
    (pool["tiers"][tier]["cost"]["prices"]
        .as_array()
        .unwrap()
        .iter())
    .map(|p| {
        (
            p["availability_zone"].as_str().unwrap().to_string(),
            p["dollars_per_hour"].as_f64().unwrap(),
            p["instances"].as_u64().unwrap(),
        )
    })
    .collect()
}

const ROOT: f64 = 10.0 * 0.08 / 730.0;

#[tokio::test]
async fn prices_per_zone_are_read_hourly_and_a_failed_read_keeps_the_last() {
    let world = world().await;
    let zones = ["subnet-a", "subnet-b"].map(|s| world.cloud.zone_of(s));
    world.cloud.set_spot_price("t3.small", &zones[0], 0.004);
    world.cloud.set_spot_price("t3.small", &zones[1], 0.009);
    world.run_until_quiet(30).await;

    let doc = pool(&world).await;
    let spot = &doc["tiers"][0]["cost"];
    assert_eq!(spot["price_source"], "spot_price_history", "{spot:#}");
    let seen = offerings(&doc, 0);
    assert_eq!(seen.iter().map(|o| o.2).sum::<u64>(), 2, "{seen:?}");
    let expected: f64 = seen.iter().map(|(_, p, n)| (p + ROOT) * *n as f64).sum();
    for (zone, price, _) in &seen {
        let set = if *zone == zones[0] { 0.004 } else { 0.009 };
        assert_eq!(*price, set, "{zone}");
    }
    let spares = spot["spares_per_hour"].as_f64().unwrap();
    assert!(
        (spares - expected).abs() < 2e-6,
        "{spares} against {expected}"
    );
    let read_at = doc["cost"]["prices_read_at"].clone();
    assert!(read_at.is_string(), "{doc:#}");

    // The type without a spot price: the configured on-demand price.
    let odd = &doc["tiers"][1]["cost"];
    assert_eq!(odd["price_source"], "on_demand_price", "{odd:#}");
    assert!((odd["spares_per_hour"].as_f64().unwrap() - (0.5 + ROOT)).abs() < 2e-6);

    // A new price is not read within the hour...
    world.cloud.set_spot_price("t3.small", &zones[0], 0.006);
    world.cloud.set_spot_price("t3.small", &zones[1], 0.006);
    world.advance(HOUR / 2);
    world.pass().await;
    assert_eq!(pool(&world).await["cost"]["prices_read_at"], read_at);
    assert!(
        offerings(&pool(&world).await, 0)
            .iter()
            .all(|o| o.1 != 0.006)
    );

    // ...a failed read after it keeps the last prices...
    world.advance(HOUR / 2);
    world
        .cloud
        .fail_next("DescribeSpotPriceHistory", CloudErrorKind::Transient, 1);
    world.pass().await;
    let doc = pool(&world).await;
    assert_eq!(doc["cost"]["prices_read_at"], read_at);
    assert_eq!(
        doc["tiers"][0]["cost"]["price_source"],
        "spot_price_history"
    );

    // ...and the read 5 minutes later takes the new ones.
    world.advance(5 * 60_000);
    world.pass().await;
    let doc = pool(&world).await;
    assert_ne!(doc["cost"]["prices_read_at"], read_at);
    assert!(offerings(&doc, 0).iter().all(|o| o.1 == 0.006), "{doc:#}");
    let stored = world.store.spot_prices().await.unwrap().0;
    assert!(
        stored.iter().all(|p| p.instance_type == "t3.small"),
        "{stored:?}"
    );
    assert_eq!(stored.len(), 2, "{stored:?}");
}

/// `placement = "cheapest"` on the fake's distinct prices: spares go to the cheapest offering
/// and the cheapest of the other zone; `ordered` keeps the order written. (A capacity error's
/// and a missing price's part: `plan::tests::launches_go_to_the_cheapest_offering_…`.)
#[tokio::test]
async fn spares_go_to_the_cheapest_offerings_in_two_zones() {
    for (placement, expected) in [
        (
            Some("cheapest"),
            vec![("t3.small", "subnet-b"), ("t3a.small", "subnet-a")],
        ),
        (
            None,
            vec![("t3.small", "subnet-a"), ("t3.small", "subnet-b")],
        ),
    ] {
        let config = Settings {
            tier: Some(vec![TierSettings {
                name: Some("two".into()),
                instance_types: Some(vec!["t3.small".into(), "t3a.small".into()]),
                spare_count: Some(4),
                max_instances: Some(8),
                placement: placement.map(str::to_string),
                ..TierSettings::default()
            }]),
            ..crate::world::test_settings(0, 0)
        }
        .into_config()
        .expect("a valid tier");
        let world = World::with_config(App::reconciler_config(&config)).await;
        let [a, b] = ["subnet-a", "subnet-b"].map(|s| world.cloud.zone_of(s));
        world.cloud.set_spot_price("t3.small", &a, 0.009);
        world.cloud.set_spot_price("t3.small", &b, 0.004);
        world.cloud.set_spot_price("t3a.small", &a, 0.003);
        world.cloud.set_spot_price("t3a.small", &b, 0.008);
        world.run_until_quiet(30).await;
        let mut launched: Vec<(String, String)> = (world.cloud.live_instances().into_iter())
            .map(|i| (i.instance_type, i.subnet_id))
            .collect();
        launched.sort();
        launched.dedup();
        let mut expected: Vec<(String, String)> = expected
            .iter()
            .map(|(t, s)| (t.to_string(), s.to_string()))
            .collect();
        expected.sort();
        assert_eq!(launched, expected, "placement {placement:?}");
        assert_eq!(world.cloud.live_instances().len(), 4);
    }
}
