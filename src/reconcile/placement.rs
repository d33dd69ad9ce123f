//! The expected cost of each offering, for `placement = "cheapest"` (ARCHITECTURE.md, "Cost"):
//! an instance's price on the offering (`model::cost`: its spot price in the subnet's zone, or
//! its type's on-demand price) plus the offering's observed interruption rate times the cost of
//! a move. The rate is this term's: interruption warnings of the offering's instances over the
//! instance-hours the passes saw of its live instances plus a prior of 24, both decaying with a
//! half-life of a day, so an offering's recent history counts most and one no longer launched
//! on is forgiven. Given to `plan` as `Conditions::offering_costs`.

use super::Reconciler;
use crate::model::cost::PricedInstance;
use crate::model::{InstanceStatus, Millis};
use crate::plan::{Placement, Policy};
use crate::store::InstanceRecord;
use std::collections::{BTreeMap, HashMap};

/// What one move costs, in dollars: an hour of a spare taken early, the workspace's detach and
/// attach, and the user's minute without the gateway, valued together at a dime (an
/// assumption: no bill shows it).
pub const MOVE_COST: f64 = 0.10;
/// The half-life of an offering's history.
const HALF_LIFE: Millis = 24 * 60 * 60_000;
/// Instance-hours every offering is credited with, quiet ones: one warning over a few hours
/// is not a rate of one an hour, and an offering no longer launched on is forgiven as its
/// history decays.
const PRIOR_HOURS: f64 = 24.0;

/// Per (instance type, zone): instance-hours seen and interruption warnings, both decayed.
#[derive(Debug, Default)]
pub(super) struct PlacementMemory {
    offerings: HashMap<(String, String), (f64, f64)>,
    at: Option<Millis>,
}

impl PlacementMemory {
    /// Decays what is known to `now` and adds the instance-hours since the last pass of
    /// `ledger`'s live instances.
    fn observe(&mut self, ledger: &[InstanceRecord], now: Millis) {
        let elapsed = self.at.map_or(0, |at| (now - at).max(0));
        self.at = Some(now);
        let decay = 0.5f64.powf(elapsed as f64 / HALF_LIFE as f64);
        for (hours, interruptions) in self.offerings.values_mut() {
            *hours *= decay;
            *interruptions *= decay;
        }
        let hours = elapsed as f64 / 3_600_000.0;
        let live = ledger.iter().filter(|r| {
            matches!(
                r.status,
                InstanceStatus::Initializing | InstanceStatus::Available | InstanceStatus::Assigned
            )
        });
        for record in live {
            if let (Some(instance_type), Some(zone)) =
                (&record.instance_type, &record.availability_zone)
            {
                let key = (instance_type.clone(), zone.clone());
                self.offerings.entry(key).or_default().0 += hours;
            }
        }
    }

    /// Interruptions an hour per instance of the offering, over its instance-hours and
    /// [`PRIOR_HOURS`].
    fn rate(&self, instance_type: &str, zone: &str) -> f64 {
        let key = (instance_type.to_string(), zone.to_string());
        self.offerings
            .get(&key)
            .map_or(0.0, |(hours, interruptions)| {
                interruptions / (hours + PRIOR_HOURS)
            })
    }
}

impl Reconciler {
    /// A pass's update of the offerings' history (not in a dry run).
    pub(super) fn observe_offerings(&self, ledger: &[InstanceRecord], now: Millis) {
        self.lock_placement().observe(ledger, now);
    }

    /// An interruption warning of an instance of `instance_type` in `zone`.
    pub(super) fn note_interruption(&self, instance_type: &str, zone: &str) {
        let key = (instance_type.to_string(), zone.to_string());
        self.lock_placement().offerings.entry(key).or_default().1 += 1.0;
    }

    /// Each (type, subnet) offering of `policy`'s tiers that place by cost: its price plus its
    /// interruption rate times a move's cost. Empty while no spot price was read (the configured order decides).
    pub(super) fn offering_costs(&self, policy: &Policy) -> BTreeMap<(String, String), f64> {
        let book = self.price_book();
        let memory = self.lock_placement();
        let mut costs = BTreeMap::new();
        if !book.has_spot_prices() {
            return costs;
        }
        // Only the tiers that place by cost read them.
        let by_cost = (policy.tiers.iter()).filter(|t| t.placement == Placement::Cheapest);
        for tier in by_cost {
            for instance_type in &tier.instance_types {
                for subnet in &policy.subnet_ids {
                    let Some(zone) = policy.zone_of(subnet) else {
                        continue;
                    };
                    let instance = PricedInstance {
                        tier: &tier.name,
                        instance_type: Some(instance_type),
                        zone: Some(zone),
                        on_demand: false,
                        assigned: false,
                        blank_gib: 0,
                    };
                    let Some((price, _)) = book.compute(&instance) else {
                        continue;
                    };
                    let cost = price + memory.rate(instance_type, zone) * MOVE_COST;
                    costs.insert((instance_type.clone(), subnet.clone()), cost);
                }
            }
        }
        costs
    }

    fn lock_placement(&self) -> std::sync::MutexGuard<'_, PlacementMemory> {
        self.inner
            .placement
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InstanceId;

    fn live(id: &str, instance_type: &str, zone: &str) -> InstanceRecord {
        let mut record = InstanceRecord::new(
            InstanceId(id.into()),
            "default".into(),
            InstanceStatus::Available,
            0,
            0,
        );
        record.instance_type = Some(instance_type.into());
        record.availability_zone = Some(zone.into());
        record
    }

    /// Interruptions over instance-hours, decaying by half a day later.
    #[test]
    fn an_offerings_rate_is_its_interruptions_over_its_instance_hours() {
        let hour = 3_600_000;
        let mut memory = PlacementMemory::default();
        let ledger = [live("i-1", "t3.small", "a"), live("i-2", "t3.small", "a")];
        memory.observe(&ledger, 0);
        // Two instances for ten hours: 20 instance-hours, each hour decayed since.
        for n in 1..=10 {
            memory.observe(&ledger, n * hour);
        }
        memory
            .offerings
            .get_mut(&("t3.small".into(), "a".into()))
            .unwrap()
            .1 += 2.0;
        let seen: f64 = (0..10)
            .map(|k| 2.0 * 0.5f64.powf(f64::from(k) / 24.0))
            .sum();
        let rate = memory.rate("t3.small", "a");
        assert!((rate - 2.0 / (seen + PRIOR_HOURS)).abs() < 1e-9, "{rate}");
        assert!(seen > 17.0 && seen < 20.0, "{seen}");
        assert_eq!(memory.rate("t3.small", "b"), 0.0);
        // A day of nothing halves both: the history weighs half, and the prior more.
        memory.observe(&[], 10 * hour + HALF_LIFE);
        let (hours, interruptions) = memory.offerings[&("t3.small".into(), "a".into())];
        assert!((interruptions - 1.0).abs() < 1e-9, "{interruptions}");
        assert!((hours - seen / 2.0).abs() < 1e-9, "{hours}");
    }
}
