//! Which shard (load balancer) each waiting user is routed through: a user is placed at its
//! first claim, on the shard with the most room, and stays there for life. A shard never takes
//! more users than its capacity, nor more than AWS last let it hold; when no shard has room, the
//! user waits as `no_route_capacity` and no instance is claimed for it.

use super::{Conditions, Policy, UserIntent};
use crate::model::{UserId, UserState};
use std::collections::{BTreeMap, HashMap};

/// Where the waiting users go: the shard of each user that may claim now, and the users held
/// back for want of route capacity.
#[derive(Debug, Default)]
pub(super) struct Placement {
    pub shard_of: HashMap<UserId, String>,
    pub held: Vec<UserId>,
}

/// The users each configured shard holds (every user placed there, except failed ones, whose
/// routes were undone), and their total.
pub(super) fn users_per_shard<'a>(
    users: &'a [UserIntent],
    policy: &Policy,
) -> (BTreeMap<&'a str, u32>, u32) {
    let mut count: BTreeMap<&str, u32> = BTreeMap::new();
    for user in users {
        if let Some(shard) = user.shard.as_deref()
            && user.state != UserState::Failed
            && policy.shard(shard).is_some()
        {
            *count.entry(shard).or_default() += 1;
        }
    }
    let total = count.values().sum();
    (count, total)
}

/// Places the queued users of `waiting` (oldest first) and holds back those that have no room.
/// A migrating user keeps its route and needs nothing. A placed user may claim unless AWS
/// refused its shard (or the region) more routes than it now holds.
pub(super) fn place(
    users: &[UserIntent],
    waiting: &[&UserIntent],
    policy: &Policy,
    conditions: &Conditions,
) -> Placement {
    let (mut count, mut total) = users_per_shard(users, policy);
    let limit = |name: &str, capacity: u32| {
        let capacity = conditions
            .alb_route_limit
            .map_or(capacity, |quota| capacity.min(quota));
        conditions
            .route_limits
            .get(name)
            .map_or(capacity, |held| capacity.min(*held))
    };
    let region_full = |total: u32| conditions.region_route_limit.is_some_and(|m| total >= m);
    let mut placement = Placement::default();
    let mut order: Vec<&&UserIntent> = waiting
        .iter()
        .filter(|u| u.state == UserState::Queued)
        .collect();
    order.sort_by(|a, b| (a.requested_at, &a.user).cmp(&(b.requested_at, &b.user)));
    for user in order {
        if let Some(shard) = user.shard.as_deref().and_then(|s| policy.shard(s)) {
            let on = count.get(shard.name.as_str()).copied().unwrap_or(0);
            let refused = conditions
                .route_limits
                .get(&shard.name)
                .is_some_and(|held| on > *held)
                || conditions.region_route_limit.is_some_and(|m| total > m);
            if refused {
                placement.held.push(user.user.clone());
            } else {
                placement
                    .shard_of
                    .insert(user.user.clone(), shard.name.clone());
            }
            continue;
        }
        // The shard with the most room; the first configured of equals.
        let best = policy
            .shards
            .iter()
            .map(|s| {
                let on = count.get(s.name.as_str()).copied().unwrap_or(0);
                (s, limit(&s.name, s.capacity).saturating_sub(on))
            })
            .filter(|(_, room)| *room > 0)
            .fold(
                None,
                |best: Option<(&crate::model::Shard, u32)>, next| match best {
                    Some(b) if b.1 >= next.1 => Some(b),
                    _ => Some(next),
                },
            );
        match best {
            Some((shard, _)) if !region_full(total) => {
                *count.entry(shard.name.as_str()).or_default() += 1;
                total += 1;
                placement
                    .shard_of
                    .insert(user.user.clone(), shard.name.clone());
            }
            _ => placement.held.push(user.user.clone()),
        }
    }
    placement
}
