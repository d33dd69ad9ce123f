//! What the pool costs an hour, from what it runs and what AWS charges (docs/costs.md, "The live
//! cost"): pure, so `GET /v1/pool`, the metrics and the benchmarks compute it the same way.
//!
//! An instance costs its compute (the spot price AWS last reported for its type and zone, or
//! the on-demand price of its type when it was launched on demand or no spot price is known),
//! its public IPv4 address (when the subnets give one), its root volume and, a spare's, its
//! blank workspace. A tier's spares are every instance of it no user holds (initializing,
//! available, terminating: what the pool pays beyond its users); its assigned instances, those
//! a user holds. Its users add their workspaces and secrets. The load balancers (the shards)
//! and the network's fixed cost (VPC endpoints) are the pool's, shared by every user.

use std::collections::BTreeMap;

/// Hours in a month, as AWS's price pages count them.
pub const HOURS_PER_MONTH: f64 = 730.0;
/// A public IPv4 address, in use or idle (Amazon VPC pricing, since 1 February 2024).
pub const PUBLIC_IPV4_PER_HOUR: f64 = 0.005;
/// gp3 storage, us-east-1 (Amazon EBS pricing): root volumes and workspaces.
pub const GP3_PER_GIB_MONTH: f64 = 0.08;
/// A Secrets Manager secret (AWS Secrets Manager pricing).
pub const SECRET_PER_MONTH: f64 = 0.40;
/// An Application Load Balancer's hour, before LCUs (Elastic Load Balancing pricing).
pub const ALB_PER_HOUR: f64 = 0.0225;
/// Public IPv4 addresses of an internet-facing load balancer: one per zone, at least two.
pub const ALB_PUBLIC_ADDRESSES: f64 = 2.0;
/// A surplus CPU credit of a T instance launched `unlimited` (Linux): one vCPU-hour above the
/// baseline (Amazon EC2 pricing, "T2/T3/T4g Unlimited Mode Pricing").
pub const SURPLUS_CREDIT_PER_VCPU_HOUR: f64 = 0.05;

/// The spot price AWS last reported for one offering (DescribeSpotPriceHistory, Linux/UNIX).
#[derive(Debug, Clone, PartialEq)]
pub struct SpotPrice {
    pub instance_type: String,
    pub zone: String,
    pub dollars_per_hour: f64,
    /// When AWS set it (its timestamp), in milliseconds since the epoch.
    pub since: super::Millis,
}

/// The rates that are the deployment's rather than the market's (settings).
#[derive(Debug, Clone, PartialEq)]
pub struct CostSettings {
    /// On-demand price per hour of each instance type (`SPOTPOOL_ON_DEMAND_PRICES` over the
    /// built-in us-east-1 list): on-demand launches, and spot ones whose price is not known.
    pub on_demand: BTreeMap<String, f64>,
    /// Instances get a public IPv4 address (`SPOTPOOL_PUBLIC_IPV4`).
    pub public_ipv4: bool,
    /// Every instance's gp3 root volume (`SPOTPOOL_ROOT_VOLUME_GIB`).
    pub root_volume_gib: u32,
    /// The network's own hourly cost, shared by the pool (`SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR`:
    /// the private subnet mode's VPC endpoints, or a NAT gateway).
    pub network_per_hour: f64,
    /// T instances run `unlimited` (`SPOTPOOL_CPU_CREDITS`): surplus credits may be billed.
    pub cpu_credits_unlimited: bool,
    /// What one move costs, for `placement = "cheapest"` (`SPOTPOOL_MOVE_COST_DOLLARS`).
    pub move_dollars: f64,
}

/// What one move costs by default, in dollars: an hour of a spare taken early, the workspace's
/// detach and attach, and the user's minute without the gateway, valued together at a dime (an
/// assumption: no bill shows it).
pub const MOVE_COST: f64 = 0.10;

impl Default for CostSettings {
    fn default() -> Self {
        CostSettings {
            on_demand: list_prices(),
            public_ipv4: true,
            root_volume_gib: 30,
            network_per_hour: 0.0,
            cpu_credits_unlimited: false,
            move_dollars: MOVE_COST,
        }
    }
}

/// On-demand Linux prices per hour in us-east-1 (Amazon EC2 On-Demand pricing, read
/// 2026-12-02) of the types the presets and the examples use: the default of
/// `SPOTPOOL_ON_DEMAND_PRICES`, which adds to or replaces them.
pub fn list_prices() -> BTreeMap<String, f64> {
    [
        ("t3.micro", 0.0104),
        ("t3.small", 0.0208),
        ("t3.medium", 0.0416),
        ("t3.large", 0.0832),
        ("t3.xlarge", 0.1664),
        ("t3a.small", 0.0188),
        ("t3a.medium", 0.0376),
        ("t3a.large", 0.0752),
        ("m5.large", 0.096),
        ("m7i.large", 0.1008),
        ("c5.large", 0.085),
    ]
    .into_iter()
    .map(|(t, p)| (t.to_string(), p))
    .collect()
}

/// vCPUs and baseline (the share of each vCPU a T instance may use without spending credits)
/// of the burstable types, from Amazon EC2's "Burstable performance instances" table.
fn burstable(instance_type: &str) -> Option<(f64, f64)> {
    let size = instance_type
        .strip_prefix("t3.")
        .or_else(|| instance_type.strip_prefix("t3a."))?;
    Some(match size {
        "nano" => (2.0, 0.05),
        "micro" => (2.0, 0.10),
        "small" | "medium" => (2.0, 0.20),
        "large" => (2.0, 0.30),
        "xlarge" => (4.0, 0.40),
        "2xlarge" => (8.0, 0.40),
        _ => return None,
    })
}

/// Where an instance's compute price came from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PriceSource {
    /// The spot price AWS reported for its type and zone.
    SpotPriceHistory,
    /// The on-demand price of its type (an on-demand launch, or no spot price known yet).
    OnDemandPrice,
    /// Instances priced both ways.
    Mixed,
    /// No instance to price.
    None,
}

/// The prices read so far, by (type, zone), with the deployment's rates.
#[derive(Debug, Clone, Default)]
pub struct PriceBook {
    spot: BTreeMap<(String, String), f64>,
    pub settings: CostSettings,
}

impl PriceBook {
    pub fn new(spot: &[SpotPrice], settings: CostSettings) -> PriceBook {
        let spot = spot
            .iter()
            .map(|p| {
                let key = (p.instance_type.clone(), p.zone.clone());
                (key, p.dollars_per_hour)
            })
            .collect();
        PriceBook { spot, settings }
    }

    /// Whether any spot price was read.
    pub fn has_spot_prices(&self) -> bool {
        !self.spot.is_empty()
    }

    /// The compute price of one instance and where it came from; None when neither a spot
    /// price nor an on-demand one is known for its type.
    pub fn compute(&self, instance: &PricedInstance<'_>) -> Option<(f64, PriceSource)> {
        let instance_type = instance.instance_type?;
        if !instance.on_demand
            && let Some(zone) = instance.zone
            && let Some(price) = self
                .spot
                .get(&(instance_type.to_string(), zone.to_string()))
        {
            return Some((*price, PriceSource::SpotPriceHistory));
        }
        let price = self.settings.on_demand.get(instance_type)?;
        Some((*price, PriceSource::OnDemandPrice))
    }

    /// What one instance costs an hour besides its compute: its address, its root volume and
    /// the blank workspace it carries.
    fn extras(&self, instance: &PricedInstance<'_>) -> f64 {
        let ipv4 = if self.settings.public_ipv4 {
            PUBLIC_IPV4_PER_HOUR
        } else {
            0.0
        };
        let gib = f64::from(self.settings.root_volume_gib) + f64::from(instance.blank_gib);
        ipv4 + gib * GP3_PER_GIB_MONTH / HOURS_PER_MONTH
    }
}

/// One instance of the ledger, as the cost sees it.
#[derive(Debug, Clone)]
pub struct PricedInstance<'a> {
    pub tier: &'a str,
    pub instance_type: Option<&'a str>,
    pub zone: Option<&'a str>,
    /// Launched from the tier's on-demand template.
    pub on_demand: bool,
    /// A user holds it (or a slot of it).
    pub assigned: bool,
    /// The blank workspace it was launched with, if it still carries it (GiB).
    pub blank_gib: u32,
}

/// A tier's users, as the cost sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TierUsers {
    /// Users who are not `failed`: those the tier serves, running or asleep.
    pub users: u32,
    /// Their secrets.
    pub secrets: u32,
    /// GiB of their workspace volumes, wherever they are.
    pub workspace_gib: u64,
}

/// What one tier costs an hour, in US dollars.
#[derive(Debug, Clone, PartialEq)]
pub struct TierCost {
    pub price_source: PriceSource,
    pub spares_per_hour: f64,
    pub assigned_per_hour: f64,
    pub workspaces_per_hour: f64,
    pub secrets_per_hour: f64,
    /// The tier's share of the load balancers and the network, by its users.
    pub shared_per_hour: f64,
    /// The most the surplus CPU credits of its `unlimited` T instances could add if every one
    /// ran all its vCPUs flat out (not in the totals: it depends on use).
    pub cpu_credits_max_per_hour: f64,
    /// Instances whose type has no known price: left out of the figures.
    pub unpriced_instances: u32,
    pub users: u32,
}

impl TierCost {
    /// Everything the tier costs an hour, its share of the pool's fixed cost included.
    pub fn total_per_hour(&self) -> f64 {
        self.spares_per_hour
            + self.assigned_per_hour
            + self.workspaces_per_hour
            + self.secrets_per_hour
            + self.shared_per_hour
    }

    /// The total over a month, per user; None without users.
    pub fn per_user_month(&self) -> Option<f64> {
        (self.users > 0).then(|| self.total_per_hour() * HOURS_PER_MONTH / f64::from(self.users))
    }
}

/// What the pool costs an hour.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolCost {
    /// Every tier asked for, in their order.
    pub tiers: Vec<(String, TierCost)>,
    /// The shards' load balancers: the hour and their public addresses (LCUs not counted).
    pub load_balancers_per_hour: f64,
    /// The network's fixed cost (`CostSettings::network_per_hour`).
    pub network_per_hour: f64,
}

impl PoolCost {
    pub fn tier(&self, name: &str) -> Option<&TierCost> {
        self.tiers.iter().find(|(t, _)| t == name).map(|(_, c)| c)
    }

    /// Everything, per hour.
    pub fn total_per_hour(&self) -> f64 {
        let tiers: f64 = self.tiers.iter().map(|(_, c)| c.total_per_hour()).sum();
        let shared: f64 = self.tiers.iter().map(|(_, c)| c.shared_per_hour).sum();
        // A pool without users carries the fixed cost alone.
        tiers - shared + self.load_balancers_per_hour + self.network_per_hour
    }
}

/// The pool's cost an hour: `tiers` in order, each from its instances and users, the shards'
/// load balancers and the network shared among all users by their number.
pub fn pool_cost(
    book: &PriceBook,
    tiers: &[&str],
    shards: usize,
    instances: &[PricedInstance<'_>],
    users: &BTreeMap<&str, TierUsers>,
) -> PoolCost {
    let load_balancers_per_hour =
        shards as f64 * (ALB_PER_HOUR + ALB_PUBLIC_ADDRESSES * PUBLIC_IPV4_PER_HOUR);
    let network_per_hour = book.settings.network_per_hour;
    let everyone: u32 = tiers
        .iter()
        .map(|t| users.get(t).map_or(0, |u| u.users))
        .sum();
    let shared = load_balancers_per_hour + network_per_hour;
    let tiers = tiers
        .iter()
        .map(|&tier| {
            let of_tier = users.get(tier).copied().unwrap_or_default();
            let mut cost = TierCost {
                price_source: PriceSource::None,
                spares_per_hour: 0.0,
                assigned_per_hour: 0.0,
                workspaces_per_hour: of_tier.workspace_gib as f64 * GP3_PER_GIB_MONTH
                    / HOURS_PER_MONTH,
                secrets_per_hour: f64::from(of_tier.secrets) * SECRET_PER_MONTH / HOURS_PER_MONTH,
                shared_per_hour: if everyone == 0 {
                    0.0
                } else {
                    shared * f64::from(of_tier.users) / f64::from(everyone)
                },
                cpu_credits_max_per_hour: 0.0,
                unpriced_instances: 0,
                users: of_tier.users,
            };
            for instance in instances.iter().filter(|i| i.tier == tier) {
                add_instance(book, &mut cost, instance);
            }
            (tier.to_string(), cost)
        })
        .collect();
    PoolCost {
        tiers,
        load_balancers_per_hour,
        network_per_hour,
    }
}

fn add_instance(book: &PriceBook, cost: &mut TierCost, instance: &PricedInstance<'_>) {
    let Some((compute, source)) = book.compute(instance) else {
        cost.unpriced_instances += 1;
        return;
    };
    cost.price_source = match cost.price_source {
        PriceSource::None => source,
        known if known == source => known,
        _ => PriceSource::Mixed,
    };
    let hourly = compute + book.extras(instance);
    if instance.assigned {
        cost.assigned_per_hour += hourly;
    } else {
        cost.spares_per_hour += hourly;
    }
    if book.settings.cpu_credits_unlimited
        && let Some((vcpus, baseline)) = instance.instance_type.and_then(burstable)
    {
        cost.cpu_credits_max_per_hour += vcpus * (1.0 - baseline) * SURPLUS_CREDIT_PER_VCPU_HOUR;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance<'a>(tier: &'a str, zone: &'a str, assigned: bool) -> PricedInstance<'a> {
        PricedInstance {
            tier,
            instance_type: Some("t3.small"),
            zone: Some(zone),
            on_demand: false,
            assigned,
            blank_gib: 0,
        }
    }

    fn book(settings: CostSettings) -> PriceBook {
        let price = |zone: &str, dollars| SpotPrice {
            instance_type: "t3.small".into(),
            zone: zone.into(),
            dollars_per_hour: dollars,
            since: 0,
        };
        PriceBook::new(&[price("az-a", 0.0065), price("az-b", 0.007)], settings)
    }

    fn bare() -> CostSettings {
        CostSettings {
            public_ipv4: false,
            root_volume_gib: 0,
            ..CostSettings::default()
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn spares_and_assigned_instances_cost_their_zones_spot_prices() {
        let book = book(bare());
        let instances = [
            instance("default", "az-a", true),
            instance("default", "az-b", false),
            instance("default", "az-b", false),
        ];
        let cost = pool_cost(&book, &["default"], 0, &instances, &BTreeMap::new());
        let tier = cost.tier("default").unwrap();
        assert_eq!(tier.price_source, PriceSource::SpotPriceHistory);
        assert!(close(tier.assigned_per_hour, 0.0065));
        assert!(close(tier.spares_per_hour, 0.014));
        assert_eq!(tier.per_user_month(), None);
    }

    #[test]
    fn an_unknown_spot_price_or_an_on_demand_launch_takes_the_on_demand_price() {
        let book = book(bare());
        let mut on_demand = instance("default", "az-a", true);
        on_demand.on_demand = true;
        let instances = [on_demand, instance("default", "az-c", false)];
        let cost = pool_cost(&book, &["default"], 0, &instances, &BTreeMap::new());
        let tier = cost.tier("default").unwrap();
        assert_eq!(tier.price_source, PriceSource::OnDemandPrice);
        assert!(close(tier.assigned_per_hour, 0.0208));
        assert!(close(tier.spares_per_hour, 0.0208));
        let mixed = [instance("default", "az-a", true), on_demand_of("az-c")];
        let cost = pool_cost(&book, &["default"], 0, &mixed, &BTreeMap::new());
        assert_eq!(
            cost.tier("default").unwrap().price_source,
            PriceSource::Mixed
        );
    }

    fn on_demand_of(zone: &str) -> PricedInstance<'_> {
        PricedInstance {
            on_demand: true,
            ..instance("default", zone, false)
        }
    }

    #[test]
    fn a_type_without_any_price_is_counted_apart() {
        let book = book(bare());
        let mut odd = instance("default", "az-a", false);
        odd.instance_type = Some("x9.huge");
        let cost = pool_cost(&book, &["default"], 0, &[odd], &BTreeMap::new());
        let tier = cost.tier("default").unwrap();
        assert_eq!(tier.unpriced_instances, 1);
        assert_eq!(tier.price_source, PriceSource::None);
        assert_eq!(tier.spares_per_hour, 0.0);
    }

    /// docs/costs.md's running user: $11.835 a month on a t3.small at $0.0065 with a 30 GiB
    /// root volume, a public address, an 8 GiB workspace and a secret (no spares, no ALB).
    #[test]
    fn one_running_user_costs_what_the_cost_page_adds_up() {
        let book = book(CostSettings::default());
        let users = BTreeMap::from([(
            "default",
            TierUsers {
                users: 1,
                secrets: 1,
                workspace_gib: 8,
            },
        )]);
        let instances = [instance("default", "az-a", true)];
        let cost = pool_cost(&book, &["default"], 0, &instances, &users);
        let per_user = cost.tier("default").unwrap().per_user_month().unwrap();
        assert!((per_user - 11.835).abs() < 1e-6, "{per_user}");
    }

    #[test]
    fn the_load_balancers_and_the_network_are_shared_by_every_user() {
        let mut settings = bare();
        settings.network_per_hour = 0.12;
        let book = book(settings);
        let users = BTreeMap::from([
            (
                "a",
                TierUsers {
                    users: 3,
                    ..TierUsers::default()
                },
            ),
            (
                "b",
                TierUsers {
                    users: 1,
                    ..TierUsers::default()
                },
            ),
        ]);
        let cost = pool_cost(&book, &["a", "b"], 2, &[], &users);
        assert!(close(cost.load_balancers_per_hour, 2.0 * (0.0225 + 0.01)));
        let fixed = cost.load_balancers_per_hour + 0.12;
        assert!(close(cost.tier("a").unwrap().shared_per_hour, fixed * 0.75));
        assert!(close(cost.tier("b").unwrap().shared_per_hour, fixed * 0.25));
        assert!(close(cost.total_per_hour(), fixed));
        let nobody = pool_cost(&book, &["a"], 2, &[], &BTreeMap::new());
        assert!(close(nobody.total_per_hour(), fixed));
    }

    #[test]
    fn unlimited_credits_bound_a_burstable_instance_by_its_vcpus_above_the_baseline() {
        let mut settings = bare();
        settings.cpu_credits_unlimited = true;
        let book = book(settings);
        let cost = pool_cost(
            &book,
            &["default"],
            0,
            &[instance("default", "az-a", true)],
            &BTreeMap::new(),
        );
        // t3.small: 2 vCPUs at a 20% baseline, 1.6 surplus vCPU-hours at $0.05.
        assert!(close(
            cost.tier("default").unwrap().cpu_credits_max_per_hour,
            0.08
        ));
    }
}
