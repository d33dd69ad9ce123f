//! The cost per user-month at 10, 100, 1,000 and 10,000 users (issue 16, points 2b and 5), from
//! the daemon's own cost model (`model::cost::pool_cost`) and spare decision
//! (`plan::spares::decide`): `cargo build --bins --examples && target/debug/examples/cost_table`.
//!
//! **Assumed.** Every user always running (no sleep), each with an 8 GiB workspace and a secret.
//! Spot prices from `aws-profile.md` (t3.small $0.0065, t3.large $0.025 an hour); a 30 GiB root
//! volume; blank workspaces on the spares. Two tiers, each alone: dedicated (t3.small, one user
//! each) and shared (t3.large, 4 slots). Spares: `spare = "auto"`'s steady target at 2 % of the
//! users signing up (or waking) an hour, at least one an hour, and the 70 s lead time the
//! simulated profile gives (`examples/spares_day.rs`); a shared tier's spares are free slots,
//! so it keeps that many slots warm (rounded up to instances). Shards: one load balancer per 90
//! users (`DEFAULT_SHARD_CAPACITY`). The network: public (a public IPv4 address per instance)
//! or private (none; six interface endpoints in two zones, $0.12 an hour, the Terraform
//! module's `network_mode = "private"`).

use spotpool::model::cost::{CostSettings, PriceBook, PricedInstance, SpotPrice, TierUsers};
use spotpool::model::cost::{HOURS_PER_MONTH, pool_cost};
use spotpool::plan::spares::{Demand, SpareBounds, decide};
use std::collections::BTreeMap;

const LEAD_TIME: i64 = 70_000;
const USERS_PER_SHARD: u32 = 90;
const ENDPOINTS_PER_HOUR: f64 = 0.12;

struct Tier {
    name: &'static str,
    instance_type: &'static str,
    price: f64,
    slots: u32,
}

const TIERS: [Tier; 2] = [
    Tier {
        name: "dedicated t3.small",
        instance_type: "t3.small",
        price: 0.0065,
        slots: 1,
    },
    Tier {
        name: "shared t3.large, 4 slots",
        instance_type: "t3.large",
        price: 0.025,
        slots: 4,
    },
];

/// The auto tier's steady spare target (in slots) for `users`.
fn spare_slots(users: u32) -> u32 {
    let rate = (f64::from(users) * 0.02).max(1.0);
    let demand = Demand {
        recent_rate: rate,
        quarter_hour_rate: rate,
        hour_rate: rate,
        lead_time: LEAD_TIME,
    };
    decide(SpareBounds { min: 1, max: 1_000 }, &demand, None, 0).target
}

/// Dollars per user-month, and the share of it that is spares, for `users` on `tier`.
fn per_user_month(tier: &Tier, users: u32, private: bool) -> (f64, f64, u32) {
    let settings = CostSettings {
        public_ipv4: !private,
        network_per_hour: if private { ENDPOINTS_PER_HOUR } else { 0.0 },
        ..CostSettings::default()
    };
    let price = SpotPrice {
        instance_type: tier.instance_type.into(),
        zone: "az".into(),
        dollars_per_hour: tier.price,
        since: 0,
    };
    let book = PriceBook::new(&[price], settings);
    let instance = |assigned: bool| PricedInstance {
        tier: "t",
        instance_type: Some(tier.instance_type),
        zone: Some("az"),
        on_demand: false,
        assigned,
        blank_gib: if assigned { 0 } else { 8 },
    };
    let spares = spare_slots(users).div_ceil(tier.slots);
    let assigned = users.div_ceil(tier.slots);
    let instances: Vec<PricedInstance<'_>> = (0..assigned)
        .map(|_| instance(true))
        .chain((0..spares).map(|_| instance(false)))
        .collect();
    let of_tier = TierUsers {
        users,
        secrets: users,
        workspace_gib: u64::from(users) * 8,
    };
    let shards = users.div_ceil(USERS_PER_SHARD) as usize;
    let cost = pool_cost(
        &book,
        &["t"],
        shards,
        &instances,
        &BTreeMap::from([("t", of_tier)]),
    );
    let tier_cost = &cost.tiers[0].1;
    let month = tier_cost.per_user_month().expect("users");
    let spares_share = tier_cost.spares_per_hour * HOURS_PER_MONTH / f64::from(users);
    (month, spares_share, spares)
}

fn main() {
    println!(
        "| users | tier | spare instances | shards | public network: per user-month (of which spares) | private network: per user-month (of which spares) |"
    );
    println!("|---|---|---|---|---|---|");
    for users in [10u32, 100, 1_000, 10_000] {
        for tier in &TIERS {
            let (public, public_spares, spares) = per_user_month(tier, users, false);
            let (private, private_spares, _) = per_user_month(tier, users, true);
            println!(
                "| {users} | {} | {spares} | {} | ${public:.2} (${public_spares:.2}) | ${private:.2} (${private_spares:.2}) |",
                tier.name,
                users.div_ceil(USERS_PER_SHARD)
            );
        }
    }
}
