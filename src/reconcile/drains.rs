//! Drains (`POST /v1/admin/drain`, ARCHITECTURE.md "Drains"): each pass, before planning, every
//! drain that holds its instances (`active` or `paused`) is driven one step.
//!
//! Owns: which instances a drain matches now (`DrainSelector::matches` over the ledger), the
//! recycle requests it makes (a matching spare at once, a matching instance with users when its
//! users fit in `max_concurrent_moves`, counted per user: a shared instance's every user moves),
//! the settling of the moves it asked for (moved, or failed: the move was abandoned and the user
//! stayed), its pause and its end, the offerings it keeps launches off
//! ([`Conditions::drained`](crate::plan::Conditions)) and the instances it keeps claims off
//! (`Conditions::closed`: a matching shared instance with free slots takes no new user while it
//! waits for its turn). The moves themselves are the recycle path's (`plan_user`: a recycled
//! instance's ready users move, then the instance goes).
//! Must not: move a user twice for one drain, or ask for a move while paused.

use super::Reconciler;
use crate::model::{
    DEFAULT_MAX_CONCURRENT_MOVES, DEFAULT_MAX_FAILURES, Drain, DrainSelector, DrainState, Event,
    InstanceId, InstanceStatus, Millis, TierVersions, UserState,
};
use crate::store::{InstanceRecord, StoreError, UserRecord};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The `created_by` of the drains rolling upgrades start.
pub const ROLLOUT: &str = "rollout";

/// (tier, instance type, subnet) offerings drains keep launches off.
pub(super) type Drained = HashSet<(String, String, String)>;

/// What the drains of the last pass hold: the offerings they keep launches off, and the
/// instances they match (no claim or move takes a slot of one).
#[derive(Debug, Clone, Default)]
pub(super) struct DrainHold {
    pub(super) offerings: Drained,
    pub(super) instances: HashSet<InstanceId>,
}

impl Reconciler {
    /// Drives every drain that holds its instances one step, and remembers the offerings they
    /// keep launches off for this pass's plan.
    pub(super) async fn drive_drains(&self, now: Millis) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let drains = store.holding_drains().await?;
        let mut hold = DrainHold::default();
        if !drains.is_empty() {
            // The pass's snapshots: decoded again only when a table changed.
            let ledger = store.instances_snapshot().await?;
            let users = store.users_snapshot().await?;
            let zones = self.lock_subnet_zones().clone();
            // What each tier runs now matters only to an `outdated` drain (image pins are read).
            let versions = if drains.iter().any(|d| d.selector.outdated) {
                super::tier_versions(store, &self.tiers()).await?
            } else {
                HashMap::new()
            };
            // Instances asked to recycle this pass, by any drain: one snapshot serves them all,
            // so a later drain must not ask (and count) the same move again.
            let mut flagged = HashSet::new();
            for drain in drains {
                hold.offerings
                    .extend(self.drained_offerings(&drain, &zones));
                let rows = (ledger.as_slice(), users.as_slice());
                let matched = self
                    .drive_drain(drain, rows, &versions, &mut flagged, now)
                    .await?;
                hold.instances.extend(matched);
            }
        }
        *self.inner.drained.lock().unwrap_or_else(|e| e.into_inner()) = hold;
        Ok(())
    }

    /// Starts a rolling upgrade of each tier whose image or launch templates differ from what
    /// it last rolled out to (a SIGHUP, a `PUT /v1/admin/pool/{tier}`, a restart with new
    /// settings, on whichever replica): one `outdated` drain of the tier, which replaces the
    /// tier's earlier rollout drain if that one still holds. A tier seen for the first time
    /// only records what it runs.
    pub(super) async fn start_rollouts(&self, now: Millis) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let tiers = self.tiers();
        let wanted: Vec<(&str, String)> = (tiers.iter())
            .map(|t| (t.name.as_str(), t.runtime.fingerprint()))
            .collect();
        let known = |rolled: &HashMap<String, String>| {
            (wanted.iter()).all(|(tier, print)| rolled.get(*tier) == Some(print))
        };
        let mut rolled = self.inner.rolled_out.lock().await;
        if known(&rolled) {
            return Ok(());
        }
        *rolled = (store.rollouts().await?.into_iter())
            .map(|r| (r.tier, r.fingerprint))
            .collect();
        for (tier, print) in &wanted {
            let Some(previous) = rolled.get(*tier).cloned() else {
                store.record_rollout(tier, print, None, now).await?;
                rolled.insert(tier.to_string(), print.clone());
                continue;
            };
            if &previous == print {
                continue;
            }
            let selector = DrainSelector {
                tier: Some(tier.to_string()),
                outdated: true,
                ..DrainSelector::default()
            };
            let bounds = (DEFAULT_MAX_CONCURRENT_MOVES, DEFAULT_MAX_FAILURES);
            let drain = Drain::new(selector, bounds, ROLLOUT, now);
            let (drain, replaced) = store.record_rollout(tier, print, Some(&drain), now).await?;
            rolled.insert(tier.to_string(), print.clone());
            // The replaced rollout's moves not begun are withdrawn, as a cancel does: they would
            // run outside any drain's bound, or move users already current after a revert.
            if let Some(replaced) = &replaced {
                store.withdraw_moves(&replaced.requested).await?;
            }
            self.tier_changed(tier);
            let Some(drain) = drain else { continue };
            metrics::counter!("spotpool_rollouts_total", "tier" => tier.to_string()).increment(1);
            let event = Event::RolloutStarted {
                tier: tier.to_string(),
                drain: drain.id,
                from: previous,
                to: print.clone(),
                replaced: replaced.map(|d| d.id),
            };
            self.journal_quietly(now, event).await?;
        }
        Ok(())
    }

    /// The offerings the drains of the last pass keep launches off, and the instances they
    /// keep claims off.
    pub(super) fn drained(&self) -> DrainHold {
        (self.inner.drained.lock())
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn drained_offerings(&self, drain: &Drain, zones: &BTreeMap<String, String>) -> Drained {
        let subnets = &self.inner.config.policy.subnet_ids;
        let mut out = Drained::new();
        for tier in self.tiers().iter() {
            for instance_type in &tier.instance_types {
                for subnet in subnets {
                    let zone = zones.get(subnet).map(String::as_str);
                    if drain
                        .selector
                        .covers_offering(&tier.name, instance_type, zone)
                    {
                        out.insert((tier.name.clone(), instance_type.clone(), subnet.clone()));
                    }
                }
            }
        }
        out
    }

    /// Drives `drain` one step; returns the instances it matches that users hold (kept off
    /// claims).
    async fn drive_drain(
        &self,
        mut drain: Drain,
        (ledger, users): (&[InstanceRecord], &[UserRecord]),
        versions: &HashMap<String, TierVersions>,
        flagged: &mut HashSet<InstanceId>,
        now: Millis,
    ) -> Result<Vec<InstanceId>, StoreError> {
        let store = &self.inner.store;
        let before = drain.clone();
        let matching: Vec<&InstanceRecord> = (ledger.iter())
            .filter(|r| r.status != InstanceStatus::Terminating)
            .filter(|r| {
                drain
                    .selector
                    .matches(&r.drain_candidate(versions.get(&r.tier)), drain.created_at)
            })
            .collect();
        settle_requested(&mut drain, ledger, users);
        // Users a zone drain put to sleep are woken: queued with a workspace in a zone no
        // launch may use, `plan` copies the workspace to another zone and serves them there.
        for (user_id, _) in &drain.requested {
            let asleep = users
                .iter()
                .any(|u| &u.user_id == user_id && u.state == UserState::Asleep);
            if asleep {
                store.wake(user_id, now).await?;
            }
        }
        // An instance a user runs on or is moving to is no spare (plan's `held` too).
        let held: HashSet<&InstanceId> = (users.iter())
            .flat_map(|u| u.instance_id.iter().chain(u.move_target()))
            .collect();
        let mut asked = Vec::new();
        if drain.state == DrainState::Active {
            // Spares at once: nobody runs there.
            for spare in matching
                .iter()
                .filter(|r| !held.contains(&r.instance_id) && r.recycle_requested_at.is_none())
            {
                store.request_recycle(&spare.instance_id, now).await?;
            }
            asked = self
                .request_moves(&mut drain, &matching, users, flagged, now)
                .await?;
            if drain.failed >= drain.max_failures {
                drain.state = DrainState::Paused;
                let event = Event::DrainPaused {
                    drain: drain.id,
                    failed: drain.failed,
                };
                self.journal_quietly(now, event).await?;
            }
        }
        // Done once nothing it matches is left but instances whose every user's move failed
        // (they stay where they are; the drain says how many).
        let left = (matching.iter())
            .filter(|r| {
                let mut on = (users.iter())
                    .filter(|u| u.instance_id.as_ref() == Some(&r.instance_id))
                    .peekable();
                on.peek().is_none() || on.any(|u| !drain.failed_users.contains(&u.user_id))
            })
            .count();
        if drain.state == DrainState::Active && left == 0 && drain.requested.is_empty() {
            drain.state = DrainState::Done;
            let event = Event::DrainDone {
                drain: drain.id,
                moved: drain.moved,
                failed: drain.failed,
            };
            self.journal_quietly(now, event).await?;
        }
        if drain != before {
            drain.updated_at = now;
            if !store.update_drain(&drain).await? {
                // Cancelled meanwhile: the moves this step asked for are withdrawn, as the
                // cancel withdrew the earlier ones.
                for instance in &asked {
                    store.clear_recycle(instance).await?;
                }
            }
        }
        // Claims keep off the instances it matches that users hold (a shared one waiting for
        // its turn); its spares are recycled, or left alone while it is paused.
        Ok((matching.iter())
            .filter(|r| held.contains(&r.instance_id))
            .map(|r| r.instance_id.clone())
            .collect())
    }

    /// Asks for the moves of the ready users on matching instances, oldest instance first,
    /// while the drain's moves under way stay within `max_concurrent_moves`, counted per user
    /// (a shared instance's users all move at once; one with more of them than the bound goes
    /// alone); returns the instances it asked to recycle. An instance someone already asked to
    /// recycle (on-call, another drain) is left to them, unless each of its users gave up that
    /// move: those count as failed moves of this drain.
    async fn request_moves(
        &self,
        drain: &mut Drain,
        matching: &[&InstanceRecord],
        users: &[UserRecord],
        flagged: &mut HashSet<InstanceId>,
        now: Millis,
    ) -> Result<Vec<InstanceId>, StoreError> {
        let mut on: Vec<(&InstanceRecord, Vec<&UserRecord>)> = (matching.iter())
            .filter(|r| !flagged.contains(&r.instance_id))
            .map(|r| {
                let movable: Vec<&UserRecord> = (users.iter())
                    .filter(|u| u.instance_id.as_ref() == Some(&r.instance_id))
                    .filter(|u| u.state == UserState::Ready)
                    .filter(|u| !drain.failed_users.contains(&u.user_id))
                    .filter(|u| !drain.requested.iter().any(|(id, _)| id == &u.user_id))
                    .collect();
                (*r, movable)
            })
            .filter(|(_, movable)| !movable.is_empty())
            .collect();
        on.sort_by(|a, b| {
            (a.0.launched_at, &a.0.instance_id).cmp(&(b.0.launched_at, &b.0.instance_id))
        });
        let mut asked = Vec::new();
        for (instance, movable) in on {
            if let Some(since) = instance.recycle_requested_at {
                // Asked by someone else: theirs, unless every user here gave that move up.
                if movable.iter().all(|u| u.move_abandoned_at >= Some(since)) {
                    for user in movable {
                        count_failed(drain, &user.user_id);
                    }
                }
                continue;
            }
            let bound = drain.max_concurrent_moves as usize;
            let in_flight = drain.requested.len();
            if in_flight > 0 && in_flight + movable.len() > bound {
                break;
            }
            // A workspace cannot leave its zone by a move: a zone drain puts its user to sleep
            // (container stopped, workspace kept) and wakes it, and the wake copies the
            // workspace to a zone with capacity. Every other user moves by a recycle.
            let (stranded, movers): (Vec<&UserRecord>, Vec<&UserRecord>) =
                movable.into_iter().partition(|u| in_drained_zone(drain, u));
            let mut requested = Vec::new();
            for user in stranded {
                if self.inner.store.request_sleep(&user.user_id, now).await? {
                    requested.push(user);
                }
            }
            if !movers.is_empty()
                && (self.inner.store)
                    .request_recycle(&instance.instance_id, now)
                    .await?
            {
                asked.push(instance.instance_id.clone());
                requested.extend(movers);
            }
            flagged.insert(instance.instance_id.clone());
            for user in requested {
                drain
                    .requested
                    .push((user.user_id.clone(), instance.instance_id.clone()));
                metrics::counter!("spotpool_drain_moves_total", "outcome" => "requested")
                    .increment(1);
                let event = Event::DrainMove { drain: drain.id };
                if let Err(super::StepError::Store(e)) = self
                    .journal(now, event, Some(&user.user_id), Some(&instance.instance_id))
                    .await
                {
                    return Err(e);
                }
            }
        }
        Ok(asked)
    }

    async fn journal_quietly(&self, now: Millis, event: Event) -> Result<(), StoreError> {
        match self.journal(now, event, None, None).await {
            Err(super::StepError::Store(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

/// Whether `user`'s workspace is in a zone the drain names: it can only leave by a copy.
fn in_drained_zone(drain: &Drain, user: &UserRecord) -> bool {
    user.workspace
        .as_ref()
        .is_some_and(|w| drain.selector.zones.contains(&w.availability_zone))
}

/// Ends the requested moves that ended (a zone drain's sleep and wake go on while the user is
/// sleeping or asleep): the user left the instance (moved), or stays on it with
/// the recycle request consumed and no move under way (the move was abandoned: failed, and not
/// asked again), or failed for good (a move abandoned past its point of no return is a fresh
/// claim, which failed). A user that went away (deleted, asleep) is simply dropped.
fn settle_requested(drain: &mut Drain, ledger: &[InstanceRecord], users: &[UserRecord]) {
    let requested = std::mem::take(&mut drain.requested);
    for (user_id, from) in requested {
        let Some(user) = users.iter().find(|u| u.user_id == user_id) else {
            continue;
        };
        let on_it = user.instance_id.as_ref() == Some(&from);
        let zone_path = in_drained_zone(drain, user);
        match user.state {
            UserState::Migrating | UserState::Provisioning | UserState::Queued => {
                drain.requested.push((user_id, from));
            }
            // A zone drain's sleep and wake, under way (the wake follows in this step).
            UserState::Sleeping | UserState::Asleep if zone_path => {
                drain.requested.push((user_id, from));
            }
            UserState::Ready if !on_it => {
                drain.moved += 1;
                metrics::counter!("spotpool_drain_moves_total", "outcome" => "moved").increment(1);
            }
            // Still on it: waiting for its move while the request stands and it has not given
            // that move up (a shared instance keeps the request after a user gave up).
            UserState::Ready => {
                let since = (ledger.iter())
                    .find(|r| r.instance_id == from)
                    .and_then(|r| r.recycle_requested_at);
                if since.is_some() && user.move_abandoned_at < since {
                    drain.requested.push((user_id, from));
                } else {
                    count_failed(drain, &user_id);
                }
            }
            // The move ended in a claim that failed for good: a failed move.
            UserState::Failed => count_failed(drain, &user_id),
            _ => {}
        }
    }
}

/// A move of the drain's that failed: counted, and not asked again.
fn count_failed(drain: &mut Drain, user: &crate::model::UserId) {
    drain.failed += 1;
    drain.failed_users.push(user.clone());
    metrics::counter!("spotpool_drain_moves_total", "outcome" => "failed").increment(1);
}
