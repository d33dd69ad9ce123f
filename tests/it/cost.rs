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
        let (world, _) = two_types(4, placement).await;
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

/// A world of one tier on t3.small and t3a.small in two zones (`placement` as given), four
/// offerings priced: t3a.small in zone a cheapest ($0.003), then t3.small in b ($0.004),
/// t3a.small in b ($0.008), t3.small in a ($0.009). With how long an offering is avoided after
/// a spare's warning.
async fn two_types(spare_count: u32, placement: Option<&str>) -> (World, i64) {
    let config = Settings {
        tier: Some(vec![TierSettings {
            name: Some("two".into()),
            instance_types: Some(vec!["t3.small".into(), "t3a.small".into()]),
            spare_count: Some(spare_count),
            max_instances: Some(8),
            placement: placement.map(str::to_string),
            ..TierSettings::default()
        }]),
        ..crate::world::test_settings(0, 0)
    }
    .into_config()
    .expect("a valid tier");
    let avoided = config.capacity_ttl.as_millis() as i64;
    let world = World::with_config(App::reconciler_config(&config)).await;
    let [a, b] = ["subnet-a", "subnet-b"].map(|s| world.cloud.zone_of(s));
    world.cloud.set_spot_price("t3.small", &a, 0.009);
    world.cloud.set_spot_price("t3.small", &b, 0.004);
    world.cloud.set_spot_price("t3a.small", &a, 0.003);
    world.cloud.set_spot_price("t3a.small", &b, 0.008);
    (world, avoided)
}

/// The live spare in `subnet`: (its id, its type).
fn spare_in(world: &World, subnet: &str) -> (spotpool::model::InstanceId, String) {
    let mut spares: Vec<_> = (world.cloud.live_instances().into_iter())
        .filter(|i| i.subnet_id == subnet)
        .collect();
    assert_eq!(spares.len(), 1, "{spares:?}");
    let spare = spares.remove(0);
    (spare.id, spare.instance_type)
}

/// Interruption warnings price an offering: after two, the cheapest offering of zone a (t3a.small
/// at $0.003) costs more than its quiet, dearer t3.small ($0.009), and zone a's spare is
/// launched on t3.small instead. The history is in the store: the next term (a restart) places
/// zone a's next spare on t3.small too, where a term starting from nothing would go back.
/// (A warned spare's replacement avoids its offering for the capacity TTL anyway: the choice
/// by cost is seen on the spare that replaces that one, launched after the TTL.)
#[tokio::test]
async fn an_often_interrupted_offering_loses_to_a_dearer_quiet_one_across_terms() {
    use spotpool::interruption_feed::NoticeKind;
    let (world, avoided) = two_types(2, Some("cheapest")).await;
    world.run_until_quiet(30).await;
    assert_eq!(spare_in(&world, "subnet-b").1, "t3.small");
    let mut last = String::new();
    for n in 1..=2 {
        let (warned, instance_type) = spare_in(&world, "subnet-a");
        assert_eq!(instance_type, "t3a.small", "after {} warnings", n - 1);
        let event = format!("ev-{n}");
        world
            .notice(&event, NoticeKind::SpotInterruptionWarning, &warned)
            .await;
        world.run_until_quiet(30).await;
        // Its replacement, once the offering is no longer avoided, is taken by EC2 unwarned
        // (no interruption counted): the next launch in zone a goes by cost.
        world.advance(avoided + 1_000);
        let (replacement, _) = spare_in(&world, "subnet-a");
        world.cloud.reclaim(&replacement);
        world.run_until_quiet(30).await;
        last = spare_in(&world, "subnet-a").1;
    }
    assert_eq!(last, "t3.small", "two warnings price t3a.small out");
    let (quiet, _) = spare_in(&world, "subnet-a");
    let stored = world.store.offering_history().await.unwrap();
    let zone_a = world.cloud.zone_of("subnet-a");
    let warned = (stored.iter())
        .find(|h| h.instance_type == "t3a.small" && h.zone == zone_a)
        .expect("zone a's t3a.small history");
    assert!(warned.interruptions > 1.99, "{warned:?}");

    // A new term goes on from the stored history.
    let world = world.restart().await;
    world.cloud.reclaim(&quiet);
    world.run_until_quiet(30).await;
    assert_eq!(spare_in(&world, "subnet-a").1, "t3.small");
    world.assert_no_leaks().await;
}
