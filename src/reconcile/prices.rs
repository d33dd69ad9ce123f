//! Spot prices and the live cost (ARCHITECTURE.md "Cost"; docs/costs.md "The live cost"): the
//! leader reads the spot prices of its tiers' types in its subnets' zones at most hourly into
//! the store (every replica's `GET /v1/pool` prices from there), and each pass exports what
//! the pool costs an hour as `spotpool_cost_dollars_per_hour{tier,kind}`.

use super::Reconciler;
use crate::model::cost::{PoolCost, PriceBook, PricedInstance, SpotPrice, TierUsers, pool_cost};
use crate::model::{InstanceStatus, Millis, UserState};
use crate::plan::{Policy, TierPolicy};
use crate::store::{InstanceRecord, UserRecord};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// How often the leader reads the spot prices again.
pub const PRICE_REFRESH: Millis = 60 * 60_000;
/// After a failed read, the wait before the next.
const PRICE_RETRY: Millis = 5 * 60_000;

/// The prices as this term last read or loaded them.
#[derive(Debug, Default)]
pub(super) struct PriceMemory {
    prices: Vec<SpotPrice>,
    /// When the store's newest price was read (None: never); loaded at a term's first pass.
    read_at: Option<Millis>,
    loaded: bool,
    /// The offerings asked for at the last read: a new type or zone is read at once.
    asked: BTreeSet<(String, String)>,
    /// After a failure, not before this.
    retry_at: Millis,
}

/// What the pool costs an hour, from the ledger and the users as the store has them: each
/// instance of `tiers` priced by its type and zone (on-demand when launched from its tier's
/// on-demand template), its users' workspaces and secrets, and `shards` load balancers.
pub fn pool_cost_of(
    book: &PriceBook,
    tiers: &[TierPolicy],
    shards: usize,
    ledger: &[InstanceRecord],
    users: &[UserRecord],
) -> PoolCost {
    let priced = priced_instances(tiers, ledger, users);
    let mut of_tiers: BTreeMap<&str, TierUsers> = BTreeMap::new();
    for user in users {
        let entry = of_tiers.entry(user.tier.as_str()).or_default();
        entry.users += u32::from(user.state != UserState::Failed);
        entry.secrets += u32::from(user.secret_arn.is_some());
        if let Some(workspace) = &user.workspace
            && workspace.volume_id.is_some()
        {
            entry.workspace_gib += u64::from(workspace.size_gib);
        }
    }
    let names = tier_names(tiers, ledger, users);
    pool_cost(book, &names, shards, &priced, &of_tiers)
}

/// The instances of `ledger` as the cost sees them: assigned when a user holds them, on-demand
/// when launched from their tier's on-demand template (its id: the version may have moved on
/// since; an adopted instance, whose template is not recorded, counts as spot), a spare's blank
/// workspace at its tier's workspace size. An instance of a tier no longer configured keeps its
/// tier's name (spot, no blank workspace counted).
pub fn priced_instances<'a>(
    tiers: &'a [TierPolicy],
    ledger: &'a [InstanceRecord],
    users: &[UserRecord],
) -> Vec<PricedInstance<'a>> {
    let held: HashSet<&str> = users
        .iter()
        .filter_map(|u| u.instance_id.as_ref().map(|i| i.0.as_str()))
        .collect();
    ledger
        .iter()
        .map(|r| {
            let tier = tiers.iter().find(|t| t.name == r.tier);
            let on_demand = tier.is_some_and(|t| launched_on_demand(t, r));
            let assigned =
                r.status == InstanceStatus::Assigned || held.contains(r.instance_id.0.as_str());
            PricedInstance {
                tier: &r.tier,
                instance_type: r.instance_type.as_deref(),
                zone: r.availability_zone.as_deref(),
                on_demand,
                assigned,
                blank_gib: match tier {
                    Some(tier) if !assigned && r.blank_volume_id.is_some() => {
                        tier.workspace_size_gib
                    }
                    _ => 0,
                },
            }
        })
        .collect()
}

/// Whether `record` was launched from `tier`'s on-demand template: by the template's id, when
/// it differs from the spot template's (one template may serve both: RunInstances sets the
/// market).
fn launched_on_demand(tier: &TierPolicy, record: &InstanceRecord) -> bool {
    let (Some(on_demand), Some(launched)) = (&tier.runtime.on_demand, &record.launch_template)
    else {
        return false;
    };
    let id = launched
        .split_once(':')
        .map_or(launched.as_str(), |(id, _)| id);
    on_demand.id != tier.runtime.launch.id && id == on_demand.id
}

/// Every tier with something to price: the configured ones in order, then any other the
/// ledger or the users still name (a tier removed from the configuration while it serves).
fn tier_names<'a>(
    tiers: &'a [TierPolicy],
    ledger: &'a [InstanceRecord],
    users: &'a [UserRecord],
) -> Vec<&'a str> {
    let mut names: Vec<&str> = tiers.iter().map(|t| t.name.as_str()).collect();
    let others =
        (ledger.iter().map(|r| r.tier.as_str())).chain(users.iter().map(|u| u.tier.as_str()));
    for name in others {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The gauges of `cost`: per tier, `spares`, `assigned`, `workspaces`, `secrets` and
/// `shared` (its users' share of the pool's fixed cost) an hour, and its cost per user-month;
/// the pool's own `load_balancers` and `network` with an empty tier.
fn export_cost(cost: &PoolCost) {
    for (tier, c) in &cost.tiers {
        for (kind, value) in [
            ("spares", c.spares_per_hour),
            ("assigned", c.assigned_per_hour),
            ("workspaces", c.workspaces_per_hour),
            ("secrets", c.secrets_per_hour),
            ("shared", c.shared_per_hour),
        ] {
            metrics::gauge!("spotpool_cost_dollars_per_hour", "tier" => tier.clone(), "kind" => kind)
                .set(value);
        }
        // A tier without users has no cost per user: its series is left out.
        if let Some(month) = c.per_user_month() {
            metrics::gauge!("spotpool_cost_dollars_per_user_month", "tier" => tier.clone())
                .set(month);
        }
    }
    for (kind, value) in [
        ("load_balancers", cost.load_balancers_per_hour),
        ("network", cost.network_per_hour),
    ] {
        metrics::gauge!("spotpool_cost_dollars_per_hour", "tier" => "", "kind" => kind).set(value);
    }
}

impl Reconciler {
    /// The price book this term knows: the prices last read, the configured rates.
    pub fn price_book(&self) -> PriceBook {
        let memory = self.inner.prices.lock().unwrap_or_else(|e| e.into_inner());
        PriceBook::new(&memory.prices, self.inner.config.cost.clone())
    }

    /// A pass's prices and cost (not in a dry run): the spot prices read again when due, then
    /// the cost of the ledger and the users exported.
    pub(super) async fn price_the_pool(
        &self,
        policy: &Policy,
        (ledger, users): (&[InstanceRecord], &[UserRecord]),
        (now, dry_run): (Millis, bool),
    ) {
        if dry_run {
            return;
        }
        self.refresh_prices_if_due(policy, now).await;
        self.keep_offering_history(ledger, now).await;
        let shards = policy.shards.len();
        let book = self.price_book();
        export_cost(&pool_cost_of(&book, &policy.tiers, shards, ledger, users));
    }

    /// Reads the spot prices of `policy`'s tiers' types in its subnets' zones when the last
    /// read is an hour old (whoever led then: the store says when), or a type or zone is new.
    /// A failure is logged and retried in 5 minutes; the prices read before stay.
    async fn refresh_prices_if_due(&self, policy: &Policy, now: Millis) {
        let store = &self.inner.store;
        let loaded = self.lock_prices().loaded;
        if !loaded {
            match store.spot_prices().await {
                Ok((prices, read_at)) => {
                    let mut memory = self.lock_prices();
                    memory.asked = prices
                        .iter()
                        .map(|p| (p.instance_type.clone(), p.zone.clone()))
                        .collect();
                    (memory.prices, memory.read_at, memory.loaded) = (prices, read_at, true);
                }
                Err(error) => {
                    tracing::warn!(%error, "could not load the spot prices; will retry");
                    return;
                }
            }
        }
        let types: BTreeSet<&String> = policy
            .tiers
            .iter()
            .flat_map(|t| t.instance_types.iter())
            .collect();
        let zones: BTreeSet<&String> = policy.subnet_zones.values().collect();
        let wanted: BTreeSet<(String, String)> = types
            .iter()
            .flat_map(|t| zones.iter().map(|z| ((*t).clone(), (*z).clone())))
            .collect();
        {
            let memory = self.lock_prices();
            let stale = memory.read_at.is_none_or(|at| now - at >= PRICE_REFRESH);
            let new_offering = !wanted.is_subset(&memory.asked);
            if wanted.is_empty() || now < memory.retry_at || !(stale || new_offering) {
                return;
            }
        }
        let types: Vec<String> = types.into_iter().cloned().collect();
        let zones: Vec<String> = zones.into_iter().cloned().collect();
        let read = match self.inner.cloud.spot_prices(&types, &zones).await {
            Ok(prices) => store.put_spot_prices(&prices, now).await.map(|()| prices),
            Err(error) => {
                tracing::warn!(%error, "could not read the spot prices; will retry");
                self.lock_prices().retry_at = now + PRICE_RETRY;
                return;
            }
        };
        match read {
            Ok(prices) => {
                let mut memory = self.lock_prices();
                for price in prices {
                    memory.prices.retain(|p| {
                        (&p.instance_type, &p.zone) != (&price.instance_type, &price.zone)
                    });
                    memory.prices.push(price);
                }
                (memory.read_at, memory.asked) = (Some(now), wanted);
            }
            Err(error) => {
                tracing::warn!(%error, "could not store the spot prices; will retry");
                self.lock_prices().retry_at = now + PRICE_RETRY;
            }
        }
    }

    fn lock_prices(&self) -> std::sync::MutexGuard<'_, PriceMemory> {
        self.inner.prices.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{InstanceId, LaunchTemplate, UserId};

    fn record(id: &str, tier: &str, template: Option<&str>) -> InstanceRecord {
        let id = InstanceId(id.into());
        let mut record = InstanceRecord::new(id, tier.into(), InstanceStatus::Available, 1, 1);
        record.instance_type = Some("t3.small".into());
        record.availability_zone = Some("az-a".into());
        record.launch_template = template.map(str::to_string);
        record
    }

    fn tier_with_on_demand(id: &str) -> TierPolicy {
        let mut tier = TierPolicy::example("default");
        tier.runtime.on_demand = Some(LaunchTemplate {
            id: id.into(),
            version: "7".into(),
        });
        tier
    }

    /// On-demand by the template's id, whatever version it was launched from; never when the
    /// tier's two templates are one; an adopted instance (no template recorded) as spot.
    #[test]
    fn an_instance_is_on_demand_when_launched_from_the_on_demand_templates_id() {
        let tiers = [tier_with_on_demand("lt-od")];
        let ledger = [
            record("i-old-version", "default", Some("lt-od:3")),
            record("i-spot", "default", Some("lt-test:$Default")),
            record("i-adopted", "default", None),
        ];
        let priced = priced_instances(&tiers, &ledger, &[]);
        let on_demand: Vec<bool> = priced.iter().map(|p| p.on_demand).collect();
        assert_eq!(on_demand, [true, false, false]);
        let one_template = [tier_with_on_demand("lt-test")];
        let priced = priced_instances(&one_template, &ledger, &[]);
        assert!(priced.iter().all(|p| !p.on_demand));
    }

    /// A tier removed from the configuration still costs what it runs: its instances and its
    /// users come after the configured tiers, in the pool's total.
    #[test]
    fn a_tier_no_longer_configured_is_still_priced() {
        let tiers = [TierPolicy::example("default")];
        let ledger = [record("i-1", "default", None), record("i-2", "gone", None)];
        let user = UserRecord::queued(
            UserId::parse("ann").unwrap(),
            "gone".into(),
            "r1".into(),
            "arn:secret".into(),
            0,
        );
        let book = PriceBook::default();
        let cost = pool_cost_of(&book, &tiers, 0, &ledger, std::slice::from_ref(&user));
        let names: Vec<&str> = cost.tiers.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, ["default", "gone"]);
        let gone = cost.tier("gone").unwrap();
        assert_eq!((gone.users, gone.unpriced_instances), (1, 0));
        assert!(gone.spares_per_hour > 0.0 && gone.secrets_per_hour > 0.0);
    }
}
