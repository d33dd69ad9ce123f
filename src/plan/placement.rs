//! Where a tier's launches go: the offerings of the configured order or of the lowest
//! expected cost, zone by zone, and how a count of launches spreads over them.

use super::{Action, Conditions, Market, Policy, TierPolicy};
use std::collections::BTreeMap;

/// Where a tier's launches go among its instance types and zones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Placement {
    /// The lowest expected cost per slot among the offerings with capacity, spread over the
    /// cheapest two zones (ARCHITECTURE.md, "Cost"); the configured order while costs are
    /// unknown.
    Cheapest,
    /// The instance types in the order written, each spread over the subnets (the default).
    #[default]
    Ordered,
}

impl Placement {
    pub fn parse(raw: &str) -> Option<Placement> {
        match raw {
            "cheapest" => Some(Placement::Cheapest),
            "ordered" => Some(Placement::Ordered),
            _ => None,
        }
    }
}

/// The subnets of `candidates` where no drain keeps the tier's launches of `instance_type` off.
pub(super) fn undrained<'a>(
    tier: &TierPolicy,
    instance_type: &str,
    candidates: &[&'a String],
    conditions: &Conditions,
) -> Vec<&'a String> {
    (candidates.iter())
        .filter(|subnet| {
            let offering = (
                tier.name.clone(),
                instance_type.to_string(),
                (**subnet).clone(),
            );
            !conditions.drained.contains(&offering)
        })
        .copied()
        .collect()
}

/// The spot offerings a cheapest-placed tier launches on: the one of lowest expected cost per
/// slot among those with capacity (undrained, not marked unavailable), then the cheapest in
/// another zone, so that one zone's interruption wave cannot take every spare (ties keep the
/// configured order of types and subnets). None when an offering has no known cost (prices
/// not read yet) or none has capacity: then the configured order decides, and with it the
/// on-demand fallback.
fn cheapest_offerings<'a>(
    tier: &'a TierPolicy,
    candidates: &[&'a String],
    policy: &Policy,
    conditions: &Conditions,
) -> Option<Vec<(&'a String, &'a String)>> {
    let slots = f64::from(tier.slots_per_instance.max(1));
    let mut ranked: Vec<(f64, usize, usize, &String, &String)> = Vec::new();
    for (t, instance_type) in tier.instance_types.iter().enumerate() {
        let open = undrained(tier, instance_type, candidates, conditions);
        for (s, subnet) in open.into_iter().enumerate() {
            let offering = (instance_type.clone(), subnet.clone());
            if conditions.unavailable.contains(&offering) {
                continue;
            }
            let cost = *conditions.offering_costs.get(&offering)?;
            ranked.push((cost / slots, t, s, instance_type, subnet));
        }
    }
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let (_, _, _, first_type, first_subnet) = *ranked.first()?;
    let mut chosen = vec![(first_type, first_subnet)];
    let zone = policy.zone_of(first_subnet);
    if let Some((_, _, _, t, s)) = ranked
        .iter()
        .find(|r| zone.is_some() && policy.zone_of(r.4).is_some_and(|z| Some(z) != zone))
    {
        chosen.push((t, s));
    } else {
        // One zone only (a zone's waiting users): the cheapest type over its subnets there.
        let same_type = ranked.iter().skip(1).filter(|r| r.3 == first_type);
        chosen.extend(same_type.map(|r| (r.3, r.4)));
    }
    Some(chosen)
}

/// Where a tier's launches may go in one zone: the instance type, its subnets there, the
/// market.
pub(super) struct ZoneOffer<'a> {
    /// `None` while the subnets' zones are unknown.
    pub(super) zone: Option<&'a str>,
    instance_type: &'a String,
    subnets: Vec<&'a String>,
    market: Market,
}

/// Where a tier launches among `candidates` (the pool's subnets, or one zone's), zone by zone
/// in order of preference. `cheapest`: the offerings of `cheapest_offerings`. `ordered` (and
/// `cheapest` while a cost is unknown): the first instance type with spot capacity over the
/// subnets where it has some; only when every spot offering is out, on-demand on the first type
/// no drain holds, if the tier allows that. Empty when nothing can launch.
pub(super) fn launch_offers<'a>(
    tier: &'a TierPolicy,
    candidates: &[&'a String],
    policy: &'a Policy,
    conditions: &Conditions,
) -> Vec<ZoneOffer<'a>> {
    let cheapest = (tier.placement == Placement::Cheapest)
        .then(|| cheapest_offerings(tier, candidates, policy, conditions))
        .flatten();
    let picked: Vec<(&String, &String, Market)> = match cheapest {
        Some(offerings) => (offerings.into_iter())
            .map(|(t, s)| (t, s, Market::Spot))
            .collect(),
        None => ordered_offerings(tier, candidates, conditions),
    };
    let mut offers: Vec<ZoneOffer<'a>> = Vec::new();
    for (instance_type, subnet, market) in picked {
        let zone = policy.zone_of(subnet);
        match (offers.iter_mut()).find(|o| o.zone == zone && o.instance_type == instance_type) {
            Some(offer) => offer.subnets.push(subnet),
            None => offers.push(ZoneOffer {
                zone,
                instance_type,
                subnets: vec![subnet],
                market,
            }),
        }
    }
    offers
}

/// The configured order's offerings: the preferred instance type over the subnets whose
/// offering is not marked unavailable; the next type only when every subnet lacks capacity for
/// it, and on-demand only when every spot offering is out, never onto an offering a drain holds.
fn ordered_offerings<'a>(
    tier: &'a TierPolicy,
    candidates: &[&'a String],
    conditions: &Conditions,
) -> Vec<(&'a String, &'a String, Market)> {
    let available = |instance_type: &String| -> Vec<&'a String> {
        (undrained(tier, instance_type, candidates, conditions).into_iter())
            .filter(|subnet| {
                !conditions
                    .unavailable
                    .contains(&(instance_type.clone(), (*subnet).clone()))
            })
            .collect()
    };
    let spot = (tier.instance_types.iter())
        .map(|t| (t, available(t), Market::Spot))
        .find(|(_, subnets, _)| !subnets.is_empty());
    let on_demand = || {
        (tier.instance_types.iter())
            .map(|t| {
                (
                    t,
                    undrained(tier, t, candidates, conditions),
                    Market::OnDemand,
                )
            })
            .find(|(_, subnets, _)| !subnets.is_empty())
    };
    let chosen = spot.or_else(|| tier.on_demand_fallback.then(on_demand).flatten());
    chosen.map_or_else(Vec::new, |(t, subnets, market)| {
        subnets.into_iter().map(|s| (t, s, market)).collect()
    })
}

/// Chooses where `count` launches go among `candidates` (one zone's subnets, for its waiting
/// users): round-robin over the offerings' subnets, starting after the ones in use.
pub(super) fn push_launches(
    tier: &TierPolicy,
    count: u64,
    offset: u64,
    (candidates, policy): (&[&String], &Policy),
    conditions: &Conditions,
    actions: &mut Vec<Action>,
) {
    let offers = launch_offers(tier, candidates, policy, conditions);
    let flat: Vec<(&String, &String, Market)> = (offers.iter())
        .flat_map(|o| {
            o.subnets
                .iter()
                .map(move |s| (o.instance_type, *s, o.market))
        })
        .collect();
    if count == 0 || flat.is_empty() {
        return;
    }
    let mut per_offering: BTreeMap<usize, u32> = BTreeMap::new();
    for n in 0..count {
        *per_offering
            .entry(((offset + n) % flat.len() as u64) as usize)
            .or_default() += 1;
    }
    for (index, count) in per_offering {
        let (instance_type, subnet, market) = flat[index];
        push_launch(tier, instance_type, subnet, count, market, actions);
    }
}

/// Spreads `count` launches over `offers`' zones (one offer a zone), each to the zone furthest
/// `below` its share, ties taken in turn from `offset` (as the launches before went), then
/// round-robin over that zone's subnets.
pub(super) fn spread_launches(
    tier: &TierPolicy,
    count: u64,
    offset: u64,
    offers: &[ZoneOffer<'_>],
    below: impl Fn(Option<&str>) -> f64,
    actions: &mut Vec<Action>,
) {
    let slots = f64::from(tier.slots_per_instance.max(1));
    let mut short: Vec<f64> = offers.iter().map(|o| below(o.zone)).collect();
    let mut in_zone = vec![0u64; offers.len()];
    let mut per_subnet: BTreeMap<(usize, usize), u32> = BTreeMap::new();
    let len = offers.len();
    for n in 0..count {
        // Among equals, the offer whose turn it is: `offset + n` round-robin.
        let turn = |o: usize| (o + len - ((offset + n) % len.max(1) as u64) as usize) % len;
        let Some(o) =
            (0..len).max_by(|a, b| (short[*a].total_cmp(&short[*b])).then(turn(*b).cmp(&turn(*a))))
        else {
            return;
        };
        short[o] -= slots;
        let s = ((offset + in_zone[o]) % offers[o].subnets.len() as u64) as usize;
        in_zone[o] += 1;
        *per_subnet.entry((o, s)).or_default() += 1;
    }
    for ((o, s), count) in per_subnet {
        let offer = &offers[o];
        push_launch(
            tier,
            offer.instance_type,
            offer.subnets[s],
            count,
            offer.market,
            actions,
        );
    }
}

fn push_launch(
    tier: &TierPolicy,
    instance_type: &str,
    subnet: &str,
    count: u32,
    market: Market,
    actions: &mut Vec<Action>,
) {
    actions.push(Action::Launch {
        tier: tier.name.clone(),
        instance_type: instance_type.to_string(),
        subnet_id: subnet.to_string(),
        count,
        market,
    });
}
