//! What `plan` decides per tier: which waiting user gets which spare, how many instances to
//! launch and where, and which surplus spares go.

use super::placement::{ZoneOffer, launch_offers, push_launches, spread_launches, undrained};
use super::shards::{Placer, Route};
use super::{Action, Conditions, Policy, PoolInstance, TerminateReason, TierPolicy, UserIntent};
use crate::model::{InstanceId, InstanceStatus, Lifecycle, Millis, UserState};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// The slots of each instance someone holds, moves to, or left to wipe.
pub(super) type Used<'a> = HashMap<&'a InstanceId, BTreeSet<u32>>;

/// An instance a waiting user may be given a slot of, with its free slots, lowest first.
struct Candidate<'a> {
    instance: &'a PoolInstance,
    free: Vec<u32>,
}

/// Assigns free slots to the tier's queue (oldest request first), then sizes the pool: launches
/// for a deficit, terminations of empty spares for a surplus. A dedicated tier's instance has
/// one slot; a shared tier's (`slots_per_instance` N) serves N users, so its spare target, its
/// deficit and its surplus count slots, and its instances fill before new ones open.
#[allow(clippy::too_many_arguments)]
pub(super) fn plan_tier(
    tier: &TierPolicy,
    mut waiting: Vec<&UserIntent>,
    instances: &[PoolInstance],
    (held, used): (&HashSet<&InstanceId>, &Used<'_>),
    now: Millis,
    policy: &Policy,
    conditions: &Conditions,
    placer: &mut Placer<'_>,
    actions: &mut Vec<Action>,
) {
    let candidates = candidates(tier, instances, (held, used), conditions);
    // Migrating users first (they are being evicted), then the queue; each oldest first.
    waiting.sort_by(|a, b| {
        (a.state != UserState::Migrating, a.requested_at, &a.user).cmp(&(
            b.state != UserState::Migrating,
            b.requested_at,
            &b.user,
        ))
    });
    let (left, unserved_anywhere, unserved_in) =
        assign_spares(&waiting, candidates, placer, actions);
    size_tier(
        tier,
        (&left, unserved_anywhere, &unserved_in),
        instances,
        now,
        policy,
        conditions,
        actions,
    );
}

/// The tier's instances a claim or a move may take a slot of: running, not asked to recycle,
/// with a free slot; `available` ones, and a shared tier's `assigned` ones some user still holds
/// (one none holds is on its way out). Fullest first, then oldest: instances fill up before new
/// ones open, and the oldest spares, proven longest, go first.
fn candidates<'a>(
    tier: &TierPolicy,
    instances: &'a [PoolInstance],
    (held, used): (&HashSet<&InstanceId>, &Used<'_>),
    conditions: &Conditions,
) -> Vec<Candidate<'a>> {
    let slots = tier.slots_per_instance.max(1);
    let mut out: Vec<Candidate<'a>> = (instances.iter())
        .filter(|i| {
            i.tier == tier.name
                && i.is_alive()
                && i.lifecycle == Some(Lifecycle::Running)
                // On-call asked for it to be replaced (`Terminate { Recycled }`), or a drain
                // empties it: no claim.
                && i.recycle.is_none()
                && !conditions.closed.contains(&i.id)
                && match i.status {
                    InstanceStatus::Available => !held.contains(&i.id),
                    InstanceStatus::Assigned => slots > 1 && held.contains(&i.id),
                    _ => false,
                }
        })
        .filter_map(|instance| {
            let taken = used.get(&instance.id);
            let free: Vec<u32> = (0..slots)
                .filter(|s| taken.is_none_or(|t| !t.contains(s)))
                .collect();
            (!free.is_empty()).then_some(Candidate { instance, free })
        })
        .collect();
    out.sort_by(|a, b| {
        let key = |c: &Candidate<'_>| (c.free.len(), c.instance.launched_at, c.instance.id.clone());
        key(a).cmp(&key(b))
    });
    out
}

/// How many instances to launch and which empty spares to retire, in slots: the target is the
/// spare count plus the users that may take any zone; what the tier has is the free slots left,
/// plus every slot of the instances on their way up.
fn size_tier(
    tier: &TierPolicy,
    (left, unserved_anywhere, unserved_in): (
        &[Candidate<'_>],
        u64,
        &BTreeMap<&str, Vec<&UserIntent>>,
    ),
    instances: &[PoolInstance],
    now: Millis,
    policy: &Policy,
    conditions: &Conditions,
    actions: &mut Vec<Action>,
) {
    let slots = u64::from(tier.slots_per_instance.max(1));
    let of_tier = || {
        instances
            .iter()
            .filter(move |i| i.tier == tier.name && i.is_alive())
    };
    let initializing: Vec<&PoolInstance> = of_tier()
        .filter(|i| {
            i.status == InstanceStatus::Initializing && now - i.status_since <= policy.probe_timeout
        })
        .collect();
    // Instances counting against the maximum: everything alive that is not on its way out.
    let alive = of_tier()
        .filter(|i| i.status != InstanceStatus::Terminating)
        .count() as u64;
    // Initializing instances launched but not yet listed by DescribeInstances count too.
    let unlisted: Vec<&PoolInstance> = instances
        .iter()
        .filter(|i| {
            i.tier == tier.name
                && i.lifecycle.is_none()
                && i.status == InstanceStatus::Initializing
                && now - i.launched_at <= policy.launch_visibility_grace
        })
        .collect();
    let max = u64::from(tier.max_instances);
    let total = alive + unlisted.len() as u64;
    let mut room = max.saturating_sub(total);
    let blocked = conditions.launch_blocked.contains(&tier.name);

    let coming_for_zones = plan_zones(
        tier,
        unserved_in,
        (&initializing, &unlisted),
        total,
        &mut room,
        policy,
        conditions,
        actions,
    );

    // Everyone else: the spare count, plus users that may take any zone, counted per zone.
    let target = u64::from(tier.spare_count) + unserved_anywhere;
    let zones = ZoneCounts::of(
        left,
        initializing.iter().chain(&unlisted),
        coming_for_zones,
        slots,
    );
    let subnets: Vec<&String> = policy.subnet_ids.iter().collect();
    let offers = launch_offers(tier, &subnets, policy, conditions);
    let shares = zone_shares(tier, &offers, policy, conditions, target);
    let short = target
        .saturating_sub(zones.have_all())
        .div_ceil(slots)
        .min(room);
    if short > 0 && !blocked {
        match &shares {
            Some(shares) => {
                let below = |zone: Option<&str>| zones.below(shares, zone);
                spread_launches(tier, short, total, &offers, below, actions);
            }
            // While a subnet's zone is unknown: round-robin over the subnets.
            None => push_launches(tier, short, total, (&subnets, policy), conditions, actions),
        }
    }
    // Only spares nobody ever used may go: a shared instance with users stays until its last
    // one leaves (then it is retired, not returned).
    // (All of its slots free: one given a slot this pass is no longer empty.)
    let empty: Vec<&PoolInstance> = (left.iter())
        .filter(|c| c.instance.status == InstanceStatus::Available && c.free.len() as u64 == slots)
        .map(|c| c.instance)
        .collect();
    let over_max = total.saturating_sub(max);
    let surplus = (zones.free().saturating_sub(target) / slots)
        .max(over_max)
        .min(empty.len() as u64);
    retire_surplus(
        empty,
        (surplus, over_max),
        &zones,
        shares.as_deref(),
        slots,
        actions,
    );
}

/// Each zone's share of `target` (an equal part, in slots: with fewer spares than zones, no
/// zone is owed one more than another), over the zones of the pool's subnets where a drain
/// leaves the tier some instance type. A zone out of capacity for now keeps its share (its
/// spares serve its returning users; launches go elsewhere meanwhile). None while a subnet's
/// zone is unknown, or when every zone is drained.
fn zone_shares<'a>(
    tier: &TierPolicy,
    offers: &[ZoneOffer<'a>],
    policy: &'a Policy,
    conditions: &Conditions,
    target: u64,
) -> Option<Vec<(&'a str, f64)>> {
    let mut zones: Vec<&'a str> = Vec::new();
    for offer in offers {
        let zone = offer.zone?;
        if !zones.contains(&zone) {
            zones.push(zone);
        }
    }
    for subnet in &policy.subnet_ids {
        let zone = policy.zone_of(subnet)?;
        let open = (tier.instance_types.iter())
            .any(|t| !undrained(tier, t, &[subnet], conditions).is_empty());
        if open && !zones.contains(&zone) {
            zones.push(zone);
        }
    }
    let share = target as f64 / zones.len() as f64;
    (!zones.is_empty()).then(|| zones.into_iter().map(|zone| (zone, share)).collect())
}

/// A tier's free slots per zone (spares of `None`: zone unknown), ready and on their way up,
/// beyond those the zones' waiting users will take.
#[derive(Default)]
struct ZoneCounts<'a> {
    counts: BTreeMap<Option<&'a str>, (u64, u64)>,
}

impl<'a> ZoneCounts<'a> {
    /// The free slots `left`, and every slot of the instances `coming` up, less what each
    /// zone's waiting users take of these.
    fn of<'i>(
        left: &'a [Candidate<'a>],
        coming: impl Iterator<Item = &'i &'a PoolInstance>,
        taken: BTreeMap<&'a str, u64>,
        slots: u64,
    ) -> ZoneCounts<'a>
    where
        'a: 'i,
    {
        let mut counts: BTreeMap<Option<&'a str>, (u64, u64)> = BTreeMap::new();
        for c in left {
            counts.entry(c.instance.zone.as_deref()).or_default().0 += c.free.len() as u64;
        }
        for i in coming {
            counts.entry(i.zone.as_deref()).or_default().1 += slots;
        }
        for (zone, taken) in taken {
            let entry = counts.entry(Some(zone)).or_default();
            entry.1 = entry.1.saturating_sub(taken);
        }
        ZoneCounts { counts }
    }

    /// Free slots in `zone`, ready or on their way up.
    fn have(&self, zone: Option<&str>) -> u64 {
        self.counts
            .get(&zone)
            .map_or(0, |(free, coming)| free + coming)
    }

    /// How far `zone` is below its share (negative: above it).
    fn below(&self, shares: &[(&str, f64)], zone: Option<&str>) -> f64 {
        let share = (shares.iter().find(|(z, _)| Some(*z) == zone)).map_or(0.0, |(_, s)| *s);
        share - self.have(zone) as f64
    }

    /// Free slots in every zone, ready or on their way up.
    fn have_all(&self) -> u64 {
        self.counts
            .values()
            .map(|(free, coming)| free + coming)
            .sum()
    }

    /// Free slots ready now, in every zone.
    fn free(&self) -> u64 {
        self.counts.values().map(|(free, _)| free).sum()
    }
}

/// Retires `surplus` of the `empty` spares, newest first, from the zone furthest above its
/// share (a zone with none: drained, or its subnet gone), and only from a zone above its share
/// (so none is left a whole instance below it), unless the tier is over its maximum (`over_max`
/// of them go regardless). Within a zone the oldest have waited longest and are the ones the
/// queue would pick next, so keeping them keeps claims on proven instances. Without shares (a
/// zone unknown), the newest go.
fn retire_surplus(
    mut empty: Vec<&PoolInstance>,
    (surplus, over_max): (u64, u64),
    zones: &ZoneCounts<'_>,
    shares: Option<&[(&str, f64)]>,
    slots: u64,
    actions: &mut Vec<Action>,
) {
    empty.sort_by(|a, b| (b.launched_at, &b.id).cmp(&(a.launched_at, &a.id)));
    // Per zone: free slots above its share.
    let slots = slots as f64;
    let mut above: BTreeMap<Option<&str>, f64> = BTreeMap::new();
    for spare in &empty {
        let zone = spare.zone.as_deref();
        let share = (shares.unwrap_or_default().iter())
            .find(|(z, _)| Some(*z) == zone)
            .map_or(0.0, |(_, share)| *share);
        let free = zones.counts.get(&zone).map_or(0, |c| c.0);
        above.insert(zone, free as f64 - share);
    }
    for n in 0..surplus {
        let forced = n < over_max || shares.is_none();
        // The furthest above its share; on a tie, the zone of the newest spare. A zone at or
        // below its share keeps its spares (a shared tier's surplus may be free slots of
        // instances users hold, in another zone).
        let Some((index, zone)) = (empty.iter().enumerate())
            .map(|(i, spare)| (i, spare.zone.as_deref()))
            .filter(|(_, zone)| forced || above[zone] > 0.0)
            .max_by(|(i, a), (j, b)| {
                let above = |zone| if shares.is_some() { above[zone] } else { 0.0 };
                (above(a).total_cmp(&above(b))).then(j.cmp(i))
            })
        else {
            break;
        };
        let instance = empty.remove(index);
        if let Some(above) = above.get_mut(&zone) {
            *above -= slots;
        }
        actions.push(Action::Terminate {
            instance: instance.id.clone(),
            reason: TerminateReason::Surplus,
        });
    }
}

/// Each waiting user gets a free slot (the lowest) of the first candidate of its workspace's
/// zone (any zone before it has a workspace); a user whose zone has none waits for a launch
/// there. A migrating user never gets a slot of the instance it leaves. Returns the candidates
/// with their slots left, how many users could take any zone but got none, and the users
/// waiting in each zone.
#[allow(clippy::type_complexity)]
fn assign_spares<'a>(
    waiting: &[&'a UserIntent],
    mut candidates: Vec<Candidate<'a>>,
    placer: &mut Placer<'_>,
    actions: &mut Vec<Action>,
) -> (
    Vec<Candidate<'a>>,
    u64,
    BTreeMap<&'a str, Vec<&'a UserIntent>>,
) {
    let mut unserved_anywhere: u64 = 0;
    let mut unserved_in: BTreeMap<&str, Vec<&UserIntent>> = BTreeMap::new();
    for user in waiting {
        let is_move = user.state == UserState::Migrating;
        // A claim takes a pre-wired spare on a shard it may use first: its route is ready. (A
        // user with a route of its own keeps it: a warm route would be wasted.)
        let warm = (!is_move && !user.has_route)
            .then(|| warm_spare_for(user, &candidates, placer))
            .flatten();
        if let Some((i, shard)) = warm {
            let slot = candidates[i].free.remove(0);
            placer.take_warm(user, &shard);
            if user.waiting_for_route {
                actions.push(Action::RouteAvailable {
                    user: user.user.clone(),
                });
            }
            actions.push(Action::Assign {
                shard,
                user: user.user.clone(),
                instance: candidates[i].instance.id.clone(),
                slot,
            });
            continue;
        }
        // A new claim needs a route first: no room, no spare and no launch for it.
        let shard = match (is_move, placer.route_for(user)) {
            (true, _) => String::new(),
            (false, Route::On(shard)) => shard,
            (false, Route::Full) => {
                actions.push(Action::AwaitRoute {
                    user: user.user.clone(),
                });
                continue;
            }
        };
        if !is_move {
            // Taken for the spare below, or held for the launch that will serve the user.
            placer.take(user, &shard);
            if user.waiting_for_route {
                actions.push(Action::RouteAvailable {
                    user: user.user.clone(),
                });
            }
        }
        // Unwired spares first: a warm route taken here is wasted (deleted by `Unwire`).
        let fits = |c: &Candidate<'_>| {
            !c.free.is_empty()
                && in_zone(user, c.instance)
                && user.instance.as_ref() != Some(&c.instance.id)
                && !c.instance.wiping_users.contains(&user.user)
        };
        let spare = (candidates.iter())
            .position(|c| fits(c) && c.instance.warm.is_none())
            .or_else(|| candidates.iter().position(fits));
        match (spare, user.zone.as_deref()) {
            (Some(i), _) => {
                let slot = candidates[i].free.remove(0);
                let (user_id, instance) = (user.user.clone(), candidates[i].instance.id.clone());
                actions.push(if is_move {
                    Action::AssignMove {
                        user: user_id,
                        instance,
                        slot,
                    }
                } else {
                    Action::Assign {
                        shard: shard.clone(),
                        user: user_id,
                        instance,
                        slot,
                    }
                });
            }
            (None, Some(zone)) => unserved_in.entry(zone).or_default().push(user),
            (None, None) => unserved_anywhere += 1,
        }
    }
    candidates.retain(|c| !c.free.is_empty());
    (candidates, unserved_anywhere, unserved_in)
}

/// Whether `spare` can serve `user`: of its workspace's zone, or any before it has one.
fn in_zone(user: &UserIntent, spare: &PoolInstance) -> bool {
    user.zone
        .as_deref()
        .is_none_or(|zone| spare.zone.as_deref() == Some(zone))
}

/// The first candidate of the user's zone with a complete warm route on a shard the user may
/// take it on (a dedicated tier's spare: shared tiers are never pre-wired): (its index, the
/// shard).
fn warm_spare_for(
    user: &UserIntent,
    candidates: &[Candidate<'_>],
    placer: &Placer<'_>,
) -> Option<(usize, String)> {
    candidates.iter().enumerate().find_map(|(i, c)| {
        let warm = c.instance.warm.as_ref().filter(|w| w.complete)?;
        (!c.free.is_empty() && in_zone(user, c.instance) && placer.takes_warm(user, &warm.shard))
            .then(|| (i, warm.shard.clone()))
    })
}

/// Users waiting in a zone: instances on their way up in that zone are theirs; beyond those,
/// launch in the zone (taking from `room`), or, when the zone has no capacity at all, copy the
/// workspace away. Only once every subnet's zone is known: an unknown zone is no reason to move
/// data. Returns, per zone, how many slots on their way up there its users will take.
#[allow(clippy::too_many_arguments)]
fn plan_zones<'a>(
    tier: &TierPolicy,
    unserved_in: &BTreeMap<&'a str, Vec<&UserIntent>>,
    (initializing, unlisted): (&[&PoolInstance], &[&PoolInstance]),
    total: u64,
    room: &mut u64,
    policy: &Policy,
    conditions: &Conditions,
    actions: &mut Vec<Action>,
) -> BTreeMap<&'a str, u64> {
    let zones_known = policy
        .subnet_ids
        .iter()
        .all(|s| policy.subnet_zones.contains_key(s));
    if !zones_known {
        return BTreeMap::new();
    }
    let blocked = conditions.launch_blocked.contains(&tier.name);
    let slots = tier.slots_per_instance.max(1) as usize;
    let mut coming_for_zones = BTreeMap::new();
    for (zone, users) in unserved_in {
        // Every slot of an instance on its way up in the zone.
        let coming = slots
            * initializing
                .iter()
                .chain(unlisted)
                .filter(|i| i.zone.as_deref() == Some(*zone))
                .count();
        coming_for_zones.insert(*zone, coming.min(users.len()) as u64);
        let short = users.len().saturating_sub(coming).div_ceil(slots);
        if short == 0 {
            continue;
        }
        let subnets = zone_subnets(policy, zone);
        if !has_capacity(tier, &subnets, conditions) {
            if let Some(to_zone) = zone_with_capacity(tier, zone, policy, conditions) {
                // Only a queued user's workspace is copied: a migrating user's is still mounted
                // on the instance that serves it (a snapshot now would miss what it writes
                // next). Its move waits for capacity; if AWS takes the instance first, the user
                // is recovered, queued, and copied then.
                let queued = users.iter().filter(|u| u.state == UserState::Queued);
                for user in queued.rev().take(users.len().saturating_sub(coming)) {
                    actions.push(Action::RelocateWorkspace {
                        user: user.user.clone(),
                        to_zone: to_zone.clone(),
                    });
                }
            }
            continue;
        }
        let count = (short as u64).min(*room);
        if count > 0 && !blocked {
            push_launches(tier, count, total, (&subnets, policy), conditions, actions);
            *room -= count;
        }
    }
    coming_for_zones
}

/// The pool's subnets in `zone`.
fn zone_subnets<'a>(policy: &'a Policy, zone: &str) -> Vec<&'a String> {
    policy
        .subnet_ids
        .iter()
        .filter(|subnet| policy.zone_of(subnet) == Some(zone))
        .collect()
}

/// Whether the tier can launch in one of `subnets`: some spot offering has capacity there, or
/// the tier falls back to on-demand (on an offering no drain holds).
fn has_capacity(tier: &TierPolicy, subnets: &[&String], conditions: &Conditions) -> bool {
    tier.instance_types.iter().any(|t| {
        let undrained = undrained(tier, t, subnets, conditions);
        !undrained.is_empty()
            && (tier.on_demand_fallback
                || undrained
                    .iter()
                    .any(|s| !conditions.unavailable.contains(&(t.clone(), (*s).clone()))))
    })
}

/// Another zone where the tier can launch (the first in subnet order), for a workspace whose
/// zone has none.
fn zone_with_capacity(
    tier: &TierPolicy,
    from: &str,
    policy: &Policy,
    conditions: &Conditions,
) -> Option<String> {
    policy
        .subnet_ids
        .iter()
        .filter_map(|subnet| policy.zone_of(subnet))
        .filter(|zone| *zone != from)
        .find(|zone| has_capacity(tier, &zone_subnets(policy, zone), conditions))
        .map(str::to_string)
}
