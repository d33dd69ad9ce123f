//! Which shard (load balancer) each waiting user is routed through: a user is placed at its
//! first claim, on the shard with the most room, and stays there for life. A shard never takes
//! more users than its capacity, nor more than AWS (its refusals, the account's quotas) lets it
//! hold; when no shard has room, the user waits as `no_route_capacity` and no instance is claimed
//! or launched for it. Room is taken when the user gets its spare (`Placer::place`), so users
//! that get none (a paused or blocked tier, no spare in their zone yet) only hold room for the
//! launch that will serve them, within one pass (`Placer::reserve`).
//!
//! A pre-wired spare's warm route holds a target group and a rule on its shard like a user does,
//! so it takes room too (issue 13, point 6). A user who claims a warm spare on its shard takes
//! over that room rather than adding to it (`Placer::takes_warm`).

use super::{Conditions, Policy, PoolInstance, UserIntent};
use crate::model::{Shard, UserState};
use std::collections::BTreeMap;

/// One pass's placement state: the users each configured shard holds, what AWS lets each hold,
/// and the room tentatively held by users waiting for a launch.
#[derive(Debug)]
pub(super) struct Placer<'a> {
    policy: &'a Policy,
    conditions: &'a Conditions,
    count: BTreeMap<&'a str, u32>,
    total: u32,
}

/// What a waiting user may do about its route this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    /// Its route fits on this shard (its own, or the one with the most room).
    On(String),
    /// No shard has room: it waits as `no_route_capacity`.
    Full,
}

impl<'a> Placer<'a> {
    /// Counts the routes each configured shard holds: every user placed there, except failed
    /// ones (their routes were undone), and every warm route recorded there.
    pub(super) fn new(
        users: &'a [UserIntent],
        instances: &'a [PoolInstance],
        policy: &'a Policy,
        conditions: &'a Conditions,
    ) -> Placer<'a> {
        let mut count: BTreeMap<&str, u32> = BTreeMap::new();
        for user in users {
            if let Some(shard) = user.shard.as_deref()
                && user.state != UserState::Failed
                && policy.shard(shard).is_some()
            {
                *count.entry(shard).or_default() += 1;
            }
        }
        for instance in instances {
            if let Some(warm) = &instance.warm
                && let Some(shard) = policy.shard(&warm.shard)
            {
                *count.entry(shard.name.as_str()).or_default() += 1;
            }
        }
        let total = count.values().sum();
        Placer {
            policy,
            conditions,
            count,
            total,
        }
    }

    /// The most users `shard` may hold: its capacity, the account's per-load-balancer quota and
    /// what AWS last let it hold, the lowest.
    fn limit(&self, shard: &Shard) -> u32 {
        let mut limit = shard.capacity;
        if let Some(quota) = self.conditions.alb_route_limit {
            limit = limit.min(quota);
        }
        if let Some(held) = self.conditions.route_limits.get(&shard.name) {
            limit = limit.min(*held);
        }
        limit
    }

    fn on(&self, shard: &str) -> u32 {
        self.count.get(shard).copied().unwrap_or(0)
    }

    /// Where the queued `user` is routed if it claims now; nothing is taken.
    pub(super) fn route_for(&self, user: &UserIntent) -> Route {
        let region_over = |total: u32| {
            self.conditions
                .region_route_limit
                .is_some_and(|limit| total > limit)
        };
        // A placed user (counted already) stays: it may claim while its shard and the region
        // hold no more than they may, or at any time with a route of its own (a recovery, a
        // wake), which its claim does not add to.
        if let Some(shard) = user.shard.as_deref().and_then(|s| self.policy.shard(s)) {
            let fits = user.has_route
                || (self.on(&shard.name) <= self.limit(shard) && !region_over(self.total));
            return if fits {
                Route::On(shard.name.clone())
            } else {
                Route::Full
            };
        }
        if region_over(self.total + 1) {
            return Route::Full;
        }
        // The shard with the most room; the first configured of equals.
        let mut best: Option<(&Shard, u32)> = None;
        for shard in &self.policy.shards {
            let room = self.limit(shard).saturating_sub(self.on(&shard.name));
            if room > 0 && best.is_none_or(|(_, most)| room > most) {
                best = Some((shard, room));
            }
        }
        match best {
            Some((shard, _)) => Route::On(shard.name.clone()),
            None => Route::Full,
        }
    }

    /// Whether `user` may claim a spare whose complete warm route is on `shard`: the user is
    /// placed there or nowhere yet. The shard's and the region's limits do not matter: the
    /// claim adds no route, it takes over the spare's. (A shard can be over its limit with warm
    /// routes on it, after AWS refused one more or a quota turned out lower than its
    /// capacity; its users must still be served through them, or nobody would ever be.)
    pub(super) fn takes_warm(&self, user: &UserIntent, shard: &str) -> bool {
        self.policy.shard(shard).is_some() && user.shard.as_deref().is_none_or(|own| own == shard)
    }

    /// `user` takes over a warm spare's room on `shard`: a placed user (counted already) frees
    /// the spare's; a new one takes it.
    pub(super) fn take_warm(&mut self, user: &UserIntent, shard: &str) {
        if user.shard.as_deref() == Some(shard)
            && let Some(n) = self.count.get_mut(shard)
        {
            *n = n.saturating_sub(1);
            self.total = self.total.saturating_sub(1);
        }
    }

    /// The shard a newly probed spare's warm route goes on: the one with the most room, now
    /// taken; `None` when no shard (or the region) has room for one more route.
    pub(super) fn place_warm(&mut self) -> Option<String> {
        if self
            .conditions
            .region_route_limit
            .is_some_and(|limit| self.total + 1 > limit)
        {
            return None;
        }
        let mut best: Option<(&str, u32)> = None;
        for shard in &self.policy.shards {
            let room = self.limit(shard).saturating_sub(self.on(&shard.name));
            if room > 0 && best.is_none_or(|(_, most)| room > most) {
                best = Some((shard.name.as_str(), room));
            }
        }
        let (name, _) = best?;
        *self.count.entry(name).or_default() += 1;
        self.total += 1;
        Some(name.to_string())
    }

    /// Takes the room of `user` on `shard` (a new placement; a placed user holds it already).
    pub(super) fn take(&mut self, user: &UserIntent, shard: &str) {
        if user.shard.as_deref() != Some(shard)
            && let Some(configured) = self.policy.shard(shard)
        {
            *self.count.entry(configured.name.as_str()).or_default() += 1;
            self.total += 1;
        }
    }
}
