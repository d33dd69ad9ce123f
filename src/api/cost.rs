//! The `cost` objects of `GET /v1/pool`: what each tier and the pool cost an hour, in US
//! dollars, as `model::cost` computes them from the ledger, the users and the prices in the
//! store (docs/costs.md, "The live cost").

use super::rfc3339;
use crate::model::Millis;
use crate::model::cost::{
    CostSettings, PoolCost, PriceBook, PriceSource, PricedInstance, TierCost,
};
use crate::plan::TierPolicy;
use crate::store::{InstanceRecord, UserRecord};
use std::collections::BTreeMap;

/// What a tier costs (docs/costs.md, "The live cost"). An instance costs its compute, its
/// public IPv4 address, its root volume and, a spare's, its blank workspace.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TierCostDocument {
    /// Where its instances' compute prices came from: `spot_price_history`
    /// (DescribeSpotPriceHistory), `on_demand_price` (on-demand launches, or no spot price read
    /// yet: `SPOTPOOL_ON_DEMAND_PRICES`), `mixed`, or `none` (no instance).
    pub price_source: PriceSource,
    /// Its instances no user holds (initializing, available, terminating).
    pub spares_per_hour: f64,
    /// Its instances users hold.
    pub assigned_per_hour: f64,
    /// Its users' workspace volumes (gp3).
    pub workspaces_per_hour: f64,
    /// Its users' secrets.
    pub secrets_per_hour: f64,
    /// Its users' share of the load balancers and the network.
    pub shared_per_hour: f64,
    /// All of the above.
    pub total_per_hour: f64,
    /// The total over a month (730 hours) per user who is not `failed`; null without users.
    #[schema(required = true)]
    pub per_user_month: Option<f64>,
    /// Its users who are not `failed`.
    pub users: u32,
    /// The most surplus CPU credits could add an hour if every `unlimited` T instance ran flat
    /// out (not in the total; 0 with standard credits).
    pub cpu_credits_max_per_hour: f64,
    /// Instances whose type has no known price, left out of the figures.
    pub unpriced_instances: u32,
    /// The price of each of its offerings that has instances.
    pub prices: Vec<OfferingPriceDocument>,
}

/// The price an offering's instances were counted at.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct OfferingPriceDocument {
    #[schema(examples("t3.small"))]
    pub instance_type: String,
    #[schema(examples("us-east-1a"))]
    pub availability_zone: String,
    /// `spot_price_history` or `on_demand_price`.
    pub source: PriceSource,
    /// The compute alone.
    pub dollars_per_hour: f64,
    pub instances: u32,
}

/// What the pool itself costs, and the rates counted.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PoolCostDocument {
    /// The shards' load balancers: $0.0225 an hour each and two public IPv4 addresses (LCUs
    /// are not counted: they follow traffic).
    pub load_balancers_per_hour: f64,
    /// `SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR` (VPC endpoints, a NAT gateway).
    pub network_per_hour: f64,
    /// Every tier's total and the above (what the tiers' shares do not cover when a pool has
    /// no users).
    pub total_per_hour: f64,
    /// When the spot prices were last read (RFC 3339); null: never (on-demand prices stand in).
    #[schema(required = true, format = DateTime)]
    pub prices_read_at: Option<String>,
    /// Instances are counted with a public IPv4 address (`SPOTPOOL_PUBLIC_IPV4`).
    pub public_ipv4: bool,
    /// Each instance's root volume (`SPOTPOOL_ROOT_VOLUME_GIB`).
    pub root_volume_gib: u32,
}

/// Dollars to the millionth: what a price list shows.
fn dollars(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

/// The pool's cost as documents: each of `tiers`' in their order, and the pool's.
pub(super) fn documents(
    settings: &CostSettings,
    (prices, read_at): (&[crate::model::cost::SpotPrice], Option<Millis>),
    tiers: &[TierPolicy],
    shards: usize,
    (ledger, users): (&[InstanceRecord], &[UserRecord]),
) -> (Vec<TierCostDocument>, PoolCostDocument) {
    let book = PriceBook::new(prices, settings.clone());
    let cost = crate::reconcile::prices::pool_cost_of(&book, tiers, shards, ledger, users);
    let priced = crate::reconcile::prices::priced_instances(tiers, ledger, users);
    let documents = cost
        .tiers
        .iter()
        .map(|(tier, c)| tier_document(&book, c, tier, &priced))
        .collect();
    (documents, pool_document(settings, &cost, read_at))
}

fn tier_document(
    book: &PriceBook,
    cost: &TierCost,
    tier: &str,
    priced: &[PricedInstance<'_>],
) -> TierCostDocument {
    let mut offerings: BTreeMap<(String, String, PriceSource), (f64, u32)> = BTreeMap::new();
    for instance in priced.iter().filter(|i| i.tier == tier) {
        let Some((price, source)) = book.compute(instance) else {
            continue;
        };
        let key = (
            instance.instance_type.unwrap_or_default().to_string(),
            instance.zone.unwrap_or_default().to_string(),
            source,
        );
        offerings.entry(key).or_insert((price, 0)).1 += 1;
    }
    TierCostDocument {
        price_source: cost.price_source,
        spares_per_hour: dollars(cost.spares_per_hour),
        assigned_per_hour: dollars(cost.assigned_per_hour),
        workspaces_per_hour: dollars(cost.workspaces_per_hour),
        secrets_per_hour: dollars(cost.secrets_per_hour),
        shared_per_hour: dollars(cost.shared_per_hour),
        total_per_hour: dollars(cost.total_per_hour()),
        per_user_month: cost.per_user_month().map(dollars),
        users: cost.users,
        cpu_credits_max_per_hour: dollars(cost.cpu_credits_max_per_hour),
        unpriced_instances: cost.unpriced_instances,
        prices: offerings
            .into_iter()
            .map(
                |((instance_type, availability_zone, source), (price, instances))| {
                    OfferingPriceDocument {
                        instance_type,
                        availability_zone,
                        source,
                        dollars_per_hour: price,
                        instances,
                    }
                },
            )
            .collect(),
    }
}

fn pool_document(
    settings: &CostSettings,
    cost: &PoolCost,
    read_at: Option<Millis>,
) -> PoolCostDocument {
    PoolCostDocument {
        load_balancers_per_hour: dollars(cost.load_balancers_per_hour),
        network_per_hour: dollars(cost.network_per_hour),
        total_per_hour: dollars(cost.total_per_hour()),
        prices_read_at: read_at.map(rfc3339),
        public_ipv4: settings.public_ipv4,
        root_volume_gib: settings.root_volume_gib,
    }
}
