//! The expected cost of each offering, for `placement = "cheapest"` (ARCHITECTURE.md, "Cost"):
//! an instance's price on the offering (`model::cost`: its spot price in the subnet's zone, or
//! its type's on-demand price) plus the offering's observed interruption rate times the cost of
//! a move. The rate is interruption warnings of the offering's instances over the
//! instance-hours the passes saw of its live instances plus a prior of 24, both decaying with a
//! half-life of a day, so an offering's recent history counts most and one no longer launched
//! on is forgiven. The history is kept in the store (`offering_history`: every ten minutes and
//! after each warning), and a new term goes on from it. Given to `plan` as
//! `Conditions::offering_costs`.

use super::Reconciler;
use crate::model::cost::PricedInstance;
use crate::model::{InstanceStatus, Millis};
use crate::plan::{Placement, Policy};
use crate::store::{InstanceRecord, OfferingHistory};
use std::collections::{BTreeMap, HashMap};

/// The half-life of an offering's history.
const HALF_LIFE: Millis = 24 * 60 * 60_000;
/// Instance-hours every offering is credited with, quiet ones: one warning over a few hours
/// is not a rate of one an hour, and an offering no longer launched on is forgiven as its
/// history decays.
const PRIOR_HOURS: f64 = 24.0;
/// How often the history is written when no warning came: what a new term loses of the
/// instance-hours at most.
const SAVE_EVERY: Millis = 10 * 60_000;

/// Per (instance type, zone): instance-hours seen and interruption warnings, both decayed.
#[derive(Debug, Default)]
pub(super) struct PlacementMemory {
    offerings: HashMap<(String, String), (f64, f64)>,
    at: Option<Millis>,
    /// The stored history was read (a term starts from it).
    loaded: bool,
    /// When it was last written, and whether a warning came since.
    saved_at: Option<Millis>,
    warned: bool,
    /// The cheapest tiers placing by the order written for want of a price, as last logged.
    unpriced: HashMap<String, Vec<String>>,
}

impl PlacementMemory {
    /// Adds the stored history, decayed from when it was written to `now`.
    fn load(&mut self, stored: Vec<OfferingHistory>, now: Millis) {
        for row in stored {
            let decay = decay_over((now - row.at).max(0));
            let entry = (self.offerings)
                .entry((row.instance_type, row.zone))
                .or_default();
            entry.0 += row.instance_hours * decay;
            entry.1 += row.interruptions * decay;
        }
        self.at = self.at.or(Some(now));
        self.loaded = true;
    }

    /// The history to write at `now` (observed at `now` already), when due.
    fn due_rows(&mut self, now: Millis) -> Option<Vec<OfferingHistory>> {
        let due = self.warned || self.saved_at.is_none_or(|at| now - at >= SAVE_EVERY);
        if !due || self.offerings.is_empty() {
            return None;
        }
        self.saved_at = Some(now);
        self.warned = false;
        let rows = (self.offerings.iter()).map(|((instance_type, zone), (hours, warnings))| {
            OfferingHistory {
                instance_type: instance_type.clone(),
                zone: zone.clone(),
                instance_hours: *hours,
                interruptions: *warnings,
                at: now,
            }
        });
        Some(rows.collect())
    }

    /// Decays what is known to `now` and adds the instance-hours since the last pass of
    /// `ledger`'s live instances.
    fn observe(&mut self, ledger: &[InstanceRecord], now: Millis) {
        let elapsed = self.at.map_or(0, |at| (now - at).max(0));
        self.at = Some(now);
        let decay = decay_over(elapsed);
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

    /// Zeroes the gauge of tiers no longer placed by cost (or gone).
    fn forget_unpriced_but(&mut self, tiers: &[&String]) {
        self.unpriced.retain(|tier, _| {
            let keep = tiers.contains(&tier);
            if !keep {
                metrics::gauge!("spotpool_placement_unpriced_types", "tier" => tier.clone())
                    .set(0.0);
            }
            keep
        });
    }

    /// Logs a tier's types without a price when they change, and exports their count.
    fn note_unpriced(&mut self, tier: &str, types: Vec<String>) {
        metrics::gauge!("spotpool_placement_unpriced_types", "tier" => tier.to_string())
            .set(types.len() as f64);
        let before = self.unpriced.get(tier).cloned().unwrap_or_default();
        if before == types {
            return;
        }
        if types.is_empty() {
            tracing::info!(
                tier,
                "every instance type is priced: placement by cost resumes"
            );
        } else {
            tracing::warn!(
                tier,
                types = %types.join(","),
                "placement = \"cheapest\" goes by the order written while these instance types \
                 have neither a spot nor an on-demand price (SPOTPOOL_ON_DEMAND_PRICES)"
            );
        }
        self.unpriced.insert(tier.to_string(), types);
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

/// What is left of a history after `elapsed`.
fn decay_over(elapsed: Millis) -> f64 {
    0.5f64.powf(elapsed as f64 / HALF_LIFE as f64)
}

impl Reconciler {
    /// A pass's update of the offerings' history (not in a dry run): the stored one read once a
    /// term, this pass's instance-hours added, and the whole written when due. A store that
    /// fails is logged, and asked again next pass.
    pub(super) async fn keep_offering_history(&self, ledger: &[InstanceRecord], now: Millis) {
        let store = &self.inner.store;
        self.lock_placement().observe(ledger, now);
        if !self.lock_placement().loaded {
            match store.offering_history().await {
                Ok(stored) => self.lock_placement().load(stored, now),
                Err(error) => {
                    tracing::warn!(%error, "could not read the offerings' history; will retry");
                }
            }
        }
        let rows = {
            let mut memory = self.lock_placement();
            memory.loaded.then(|| memory.due_rows(now)).flatten()
        };
        if let Some(rows) = rows
            && let Err(error) = store.put_offering_history(&rows).await
        {
            tracing::warn!(%error, "could not store the offerings' history; will retry");
            let mut memory = self.lock_placement();
            memory.saved_at = None;
        }
    }

    /// An interruption warning of an instance of `instance_type` in `zone`.
    pub(super) fn note_interruption(&self, instance_type: &str, zone: &str) {
        let key = (instance_type.to_string(), zone.to_string());
        let mut memory = self.lock_placement();
        memory.offerings.entry(key).or_default().1 += 1.0;
        memory.warned = true;
    }

    /// Each (type, subnet) offering of `policy`'s tiers that place by cost: its price plus its
    /// interruption rate times a move's cost (`SPOTPOOL_MOVE_COST_DOLLARS`). Empty while no spot price was read (the
    /// configured order decides). A tier with an offering neither a spot nor an on-demand price
    /// covers also goes by the order written (`plan`): that is logged when it begins and ends,
    /// and `spotpool_placement_unpriced_types{tier}` counts the types.
    pub(super) fn offering_costs(&self, policy: &Policy) -> BTreeMap<(String, String), f64> {
        let book = self.price_book();
        let move_cost = self.inner.config.cost.move_dollars;
        let mut memory = self.lock_placement();
        let mut costs = BTreeMap::new();
        if !book.has_spot_prices() {
            return costs;
        }
        // Only the tiers that place by cost read them.
        let by_cost = (policy.tiers.iter()).filter(|t| t.placement == Placement::Cheapest);
        let names: Vec<&String> = by_cost.clone().map(|t| &t.name).collect();
        memory.forget_unpriced_but(&names);
        for tier in by_cost {
            let mut unpriced: Vec<String> = Vec::new();
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
                        if !unpriced.contains(instance_type) {
                            unpriced.push(instance_type.clone());
                        }
                        continue;
                    };
                    let cost = price + memory.rate(instance_type, zone) * move_cost;
                    costs.insert((instance_type.clone(), subnet.clone()), cost);
                }
            }
            memory.note_unpriced(&tier.name, unpriced);
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

    /// A new term adds the stored history decayed from when it was written; the history is
    /// written every ten minutes, and at once after a warning.
    #[test]
    fn the_history_is_stored_when_due_and_a_new_term_goes_on_from_it() {
        let minute = 60_000;
        let mut memory = PlacementMemory::default();
        let ledger = [live("i-1", "t3.small", "a")];
        memory.observe(&ledger, 0);
        memory.observe(&ledger, 60 * minute);
        memory
            .offerings
            .get_mut(&("t3.small".into(), "a".into()))
            .unwrap()
            .1 += 1.0;
        let saved = memory.due_rows(60 * minute).expect("a first write");
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].at, 60 * minute);
        assert!((saved[0].instance_hours - 1.0).abs() < 1e-9, "{saved:?}");
        assert!(memory.due_rows(65 * minute).is_none(), "five minutes later");
        memory.warned = true;
        assert!(memory.due_rows(66 * minute).is_some(), "a warning");
        assert!(memory.due_rows(70 * minute).is_none());
        assert!(memory.due_rows(76 * minute).is_some(), "ten minutes on");

        // A day after it was written, half of it is left for the next term.
        let mut next = PlacementMemory::default();
        next.load(saved, 60 * minute + HALF_LIFE);
        assert!(next.loaded);
        let (hours, interruptions) = next.offerings[&("t3.small".into(), "a".into())];
        assert!((hours - 0.5).abs() < 1e-9 && (interruptions - 0.5).abs() < 1e-9);
        assert!((next.rate("t3.small", "a") - 0.5 / 24.5).abs() < 1e-9);
    }

    /// A cheapest tier with a type no price covers is logged and counted in
    /// `spotpool_placement_unpriced_types{tier}`, back to 0 once priced.
    #[test]
    fn a_tier_with_an_unpriced_type_is_counted_until_it_is_priced() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let mut memory = PlacementMemory::default();
        let gauge = |handle: &metrics_exporter_prometheus::PrometheusHandle| {
            let text = handle.render();
            (text.lines())
                .find(|l| l.starts_with("spotpool_placement_unpriced_types{tier=\"pro\"}"))
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
        };
        metrics::with_local_recorder(&recorder, || {
            memory.note_unpriced("pro", vec!["x9.odd".into()]);
        });
        assert_eq!(gauge(&handle).as_deref(), Some("1"));
        assert_eq!(memory.unpriced["pro"], ["x9.odd"]);
        metrics::with_local_recorder(&recorder, || memory.note_unpriced("pro", Vec::new()));
        assert_eq!(gauge(&handle).as_deref(), Some("0"));
        assert!(memory.unpriced["pro"].is_empty());
        // A tier no longer placed by cost (or gone) is zeroed and forgotten.
        metrics::with_local_recorder(&recorder, || {
            memory.note_unpriced("pro", vec!["x9.odd".into()]);
            memory.forget_unpriced_but(&[]);
        });
        assert_eq!(gauge(&handle).as_deref(), Some("0"));
        assert!(memory.unpriced.is_empty());
    }
}
