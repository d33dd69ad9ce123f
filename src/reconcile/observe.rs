//! A pass's observation and plan: one paged DescribeInstances merged into the store's ledger
//! (adopting instances tagged for the pool that the ledger does not know), the unhandled
//! interruption notices acted on, then `plan` over the users and the ledger. Also the pool and
//! user gauges, and how long users go without a live instance.

use super::{ReconcileError, Reconciler, StepError};
use crate::cloud::{CloudInstance, Lifecycle};
use crate::model::{Event, InstanceId, InstanceStatus, Millis, UserId, UserState};
use crate::plan::{self, Action, Policy, PoolInstance, UserIntent};
use crate::store::{InstanceRecord, StoreError, UserRecord};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// One pass's plan: the actions, whether work is in flight, and how many launch redos AWS
/// throttled on the way.
pub(super) struct Planned {
    pub(super) actions: Vec<Action>,
    pub(super) in_flight: bool,
    pub(super) throttled: usize,
}

/// The instances a probe may go to this pass: SSM is asked about these only.
fn to_probe(
    ledger: &[InstanceRecord],
    lifecycles: &HashMap<&InstanceId, Lifecycle>,
) -> Vec<InstanceId> {
    ledger
        .iter()
        .filter(|r| {
            r.status == InstanceStatus::Initializing
                && r.probe_command_id.is_none()
                && lifecycles.get(&r.instance_id) == Some(&Lifecycle::Running)
        })
        .map(|r| r.instance_id.clone())
        .collect()
}

impl Reconciler {
    /// What a pass does when it is due: the hourly read of the quotas, the journal's pruning.
    async fn chores_if_due(&self, now: Millis) {
        self.check_quotas_if_due(now).await;
        self.prune_journal_if_due(now).await;
    }

    /// Observes the cloud, merges it into the ledger and plans. A dry run redoes no launch (it
    /// only counts the pending ones) and changes nothing in the cloud; it still updates the
    /// ledger from the listing, which is bookkeeping, not action.
    pub(super) async fn observe_and_plan(&self, dry_run: bool) -> Result<Planned, ReconcileError> {
        let inner = &self.inner;
        let observed = inner
            .cloud
            .describe_pool_instances()
            .await
            .map_err(ReconcileError::Observe)?;
        let now = self.now();
        let (launching, throttled) = if dry_run {
            let pending = inner.store.list_launches().await?;
            (pending.into_iter().map(|l| l.tier).collect(), 0)
        } else {
            self.finish_launches(now).await?
        };
        let (mut policy, paused) = self.effective_policy().await?;
        policy.subnet_zones = self.subnet_zones().await;
        let mut ledger = self.sync_ledger(&observed, now).await?;
        let mut acted_on_notices = false;
        if !dry_run {
            self.chores_if_due(now).await;
            match self.handle_notices(&observed, now).await {
                Ok(acted) => acted_on_notices = acted,
                Err(StepError::Store(e)) => return Err(e.into()),
                // A failed cloud call leaves the notice unhandled: the next pass tries again.
                Err(StepError::Cloud(e)) => {
                    acted_on_notices = true;
                    tracing::warn!(error = %e, "handling interruption notices; will retry");
                }
            }
        }
        if acted_on_notices {
            // Notices may have terminated spares: plan from the ledger as it is now.
            ledger = inner.store.instances_snapshot().await?;
        }
        let lifecycles: HashMap<&InstanceId, _> =
            observed.iter().map(|i| (&i.id, i.lifecycle)).collect();
        if !dry_run {
            self.remember_lifecycles(
                observed
                    .iter()
                    .map(|i| (i.id.clone(), i.lifecycle))
                    .collect(),
            );
        }
        let agents = self
            .agents_online(&to_probe(&ledger, &lifecycles), now)
            .await;
        let wipes = inner.store.slot_wipes().await?;
        let instances: Vec<PoolInstance> = ledger
            .iter()
            .map(|r| {
                let lifecycle = lifecycles.get(&r.instance_id).copied();
                pool_instance(r, lifecycle, agents.as_ref(), (&wipes, now))
            })
            .collect();
        let users = inner.store.users_snapshot().await?;
        let at = (now, dry_run);
        let users = self.watch_users(users, at).await?;
        self.size_auto_spares(&mut policy, &users, &ledger, at)
            .await;
        self.price_the_pool(&policy, (&ledger, &users), at).await;
        let intents: Vec<UserIntent> = users.iter().map(intent_of).collect();
        let unserved = export_gauges(&ledger, &users, &policy);
        super::routes::export_shard_gauges(&users, &policy.shards);
        self.track_unserved(&unserved, now);

        let mut conditions = self.conditions().snapshot(now);
        conditions.launch_blocked.extend(paused);
        let hold = self.drained();
        (conditions.drained, conditions.closed) = (hold.offerings, hold.instances);
        conditions.offering_costs = self.offering_costs(&policy);
        let mut actions = plan::plan(&intents, &instances, now, &policy, &conditions);
        let launch_waits = self.drop_launches_under_way(&mut actions, &launching);
        // Work in flight brings the next pass sooner: actions, instances on their way in or out,
        // and instances missing from the last listing (to confirm or clear the miss).
        // (A user waiting for route capacity is not: a release or an expiring mark wakes it.)
        let in_flight = actions
            .iter()
            .any(|a| !matches!(a, Action::AwaitRoute { .. }))
            || acted_on_notices
            || launch_waits
            || !launching.is_empty()
            || ledger.iter().any(|r| {
                r.missed_observations > 0
                    || matches!(
                        r.status,
                        InstanceStatus::Initializing | InstanceStatus::Terminating
                    )
            });
        Ok(Planned {
            actions,
            in_flight,
            throttled,
        })
    }

    /// A tier with a launch under way (recorded, or still waiting for its turn) launches no
    /// more until it lands: the next listing shows what it brought. True when it dropped one.
    fn drop_launches_under_way(&self, actions: &mut Vec<Action>, launching: &[String]) -> bool {
        let planned = actions.len();
        actions.retain(|a| {
            !matches!(a, Action::Launch { tier, .. }
                if launching.contains(tier) || self.inner.in_flight.launching(tier))
        });
        actions.len() < planned
    }

    /// Adopts instances tagged for this pool that the ledger does not know (after a restart or a
    /// lost launch response) and refreshes what AWS reports about known ones. Only the rows that
    /// change are written, and the ledger is read again only if one was: a pass that finds the
    /// pool as it was decodes no row (`Store::instances_snapshot`).
    async fn sync_ledger(
        &self,
        observed: &[CloudInstance],
        now: Millis,
    ) -> Result<Arc<Vec<InstanceRecord>>, StoreError> {
        let store = &self.inner.store;
        let snapshot = store.instances_snapshot().await?;
        let ledger: HashMap<&InstanceId, &InstanceRecord> =
            snapshot.iter().map(|r| (&r.instance_id, r)).collect();
        let default_tier = (self.tiers().first())
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let mut changed = false;
        for seen in observed {
            let mut record = match ledger.get(&seen.id) {
                Some(known) if as_listed(known, seen) => continue,
                Some(known) => (*known).clone(),
                None => {
                    let status = match seen.status {
                        // A pre-wired spare's route is not in this ledger: it is probed and wired
                        // again (finding its warm rule and group), before anyone claims it.
                        Some(InstanceStatus::Available) if self.inner.config.prewired_spares => {
                            InstanceStatus::Initializing
                        }
                        status => status.unwrap_or(InstanceStatus::Initializing),
                    };
                    tracing::info!(instance = %seen.id, %status, "adopting instance tagged for this pool");
                    store
                        .record(
                            now,
                            &Event::InstanceAdopted { status },
                            None,
                            Some(&seen.id),
                        )
                        .await?;
                    InstanceRecord::new(
                        seen.id.clone(),
                        seen.tier.clone().unwrap_or_else(|| default_tier.clone()),
                        status,
                        seen.launched_at,
                        now,
                    )
                }
            };
            record.missed_observations = 0;
            record.arn = Some(seen.arn.clone());
            record.instance_type = Some(seen.instance_type.clone());
            record.availability_zone = Some(seen.availability_zone.clone());
            record.private_ip = seen.private_ip.clone();
            record.blank_volume_id = seen.blank_volume_id.clone();
            store.observe_instance(&record).await?;
            changed = true;
        }
        // Count the passes each known instance has been missing; plan only calls a held instance
        // lost after several, so one incomplete listing cannot tear down every user.
        let seen: HashSet<&InstanceId> = observed.iter().map(|i| &i.id).collect();
        for known in snapshot.iter() {
            if !seen.contains(&known.instance_id) {
                let mut record = known.clone();
                record.missed_observations += 1;
                store.observe_instance(&record).await?;
                changed = true;
            }
        }
        if changed {
            return store.instances_snapshot().await;
        }
        Ok(snapshot)
    }

    /// The zone of each of the pool's subnets: asked once (DescribeSubnets), then remembered.
    /// Until it is known, `plan` serves users without regard to their workspace's zone only
    /// where that is safe (it never relocates a workspace on unknown zones).
    pub(super) async fn subnet_zones(&self) -> std::collections::BTreeMap<String, String> {
        let known = self.lock_subnet_zones().clone();
        let subnets = &self.inner.config.policy.subnet_ids;
        if !subnets.is_empty() && subnets.iter().all(|s| known.contains_key(s)) {
            return known;
        }
        match self.inner.cloud.subnet_zones(subnets).await {
            Ok(zones) => {
                *self.lock_subnet_zones() = zones.clone();
                zones
            }
            Err(error) => {
                tracing::warn!(error = %error, "could not read the zones of the pool's subnets; will retry");
                known
            }
        }
    }

    pub(super) fn lock_subnet_zones(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, String>> {
        // Nothing panics while holding this lock; a poisoned lock still holds valid data.
        self.inner
            .subnet_zones
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the clock of users who just became unserved; records how long the others that
    /// are served again went without (`spotpool_unserved_seconds`, and an event).
    fn track_unserved(&self, now_unserved: &[UserId], now: Millis) {
        let mut since = self
            .inner
            .unserved
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for user in now_unserved {
            since.entry(user.clone()).or_insert(now);
        }
        since.retain(|user, started| {
            if now_unserved.contains(user) {
                return true;
            }
            let seconds = (now - *started).max(0) as f64 / 1000.0;
            metrics::histogram!("spotpool_unserved_seconds").record(seconds);
            tracing::info!(user = %user, seconds, "user no longer without a live instance");
            false
        });
    }

    /// Hourly, the journal loses the entries older than [`EVENT_RETENTION`] (the event
    /// stream's window; a stream resumed from before it gets `event: reset`). Failures are
    /// logged: the next hour tries again.
    async fn prune_journal_if_due(&self, now: Millis) {
        {
            let mut last =
                (self.inner.last_journal_prune.lock()).unwrap_or_else(|e| e.into_inner());
            if *last != 0 && now - *last < JOURNAL_PRUNE_INTERVAL {
                return;
            }
            *last = now;
        }
        match self.inner.store.prune_journal(now - EVENT_RETENTION).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "journal entries past the retention pruned"),
            Err(error) => tracing::warn!(%error, "could not prune the journal; will retry"),
        }
    }
}

/// How long the journal keeps its entries: the event stream's window.
pub const EVENT_RETENTION: Millis = 7 * 24 * 60 * 60_000;
/// How often the leader prunes it.
const JOURNAL_PRUNE_INTERVAL: Millis = 60 * 60_000;

/// What `plan` needs of a ledger row, with this pass's lifecycle and SSM's word on its agent.
pub(super) fn pool_instance(
    r: &InstanceRecord,
    lifecycle: Option<Lifecycle>,
    agents: Option<&BTreeSet<InstanceId>>,
    (wipes, now): (&[crate::store::SlotWipe], Millis),
) -> PoolInstance {
    PoolInstance {
        id: r.instance_id.clone(),
        tier: r.tier.clone(),
        status: r.status,
        lifecycle,
        launched_at: r.launched_at,
        status_since: r.status_since,
        probe: r
            .probe_command_id
            .clone()
            .map(|c| (c, r.probe_sent_at.unwrap_or(now))),
        probe_failed_at: r.probe_failed_at,
        agent_online: agents.map(|online| online.contains(&r.instance_id)),
        missed: r.missed_observations,
        recycle: r.recycle_requested_at,
        zone: r.availability_zone.clone(),
        probed: r.probed_at.is_some(),
        warm: r.warm.shard.as_ref().map(|shard| crate::plan::WarmView {
            shard: shard.clone(),
            complete: r.warm.is_complete(),
        }),
        wiping: (wipes.iter())
            .filter(|w| w.instance_id == r.instance_id)
            .map(|w| w.slot)
            .collect(),
        wiping_users: (wipes.iter())
            .filter(|w| w.instance_id == r.instance_id)
            .map(|w| w.user_id.clone())
            .collect(),
    }
}

/// Whether the ledger row already holds what this listing says of the instance.
fn as_listed(record: &InstanceRecord, seen: &CloudInstance) -> bool {
    record.missed_observations == 0
        && record.arn.as_deref() == Some(seen.arn.as_str())
        && record.instance_type.as_deref() == Some(seen.instance_type.as_str())
        && record.availability_zone.as_deref() == Some(seen.availability_zone.as_str())
        && record.private_ip == seen.private_ip
        && record.blank_volume_id == seen.blank_volume_id
}

/// Exports the pool and user gauges; returns the users whose route has no live instance.
fn export_gauges(ledger: &[InstanceRecord], users: &[UserRecord], policy: &Policy) -> Vec<UserId> {
    for tier in &policy.tiers {
        for status in InstanceStatus::ALL {
            let count = ledger
                .iter()
                .filter(|r| r.tier == tier.name && r.status == status)
                .count();
            metrics::gauge!("spotpool_pool_instances", "tier" => tier.name.clone(), "status" => status.as_str())
                .set(count as f64);
        }
    }
    for state in UserState::ALL {
        let count = users.iter().filter(|u| u.state == state).count();
        metrics::gauge!("spotpool_users", "state" => state.as_str()).set(count as f64);
    }
    for (state, count) in UserRecord::count_volumes(users) {
        metrics::gauge!("spotpool_workspace_volumes", "state" => state.as_str())
            .set(count.volumes as f64);
        metrics::gauge!("spotpool_workspace_gib", "state" => state.as_str()).set(count.gib as f64);
    }
    // Users whose route has no live instance behind it right now: ready or migrating, and the
    // instance they are on is missing from the last listing (or gone from the ledger). (A map,
    // not a search of the ledger per user: that made the pass quadratic in the pool's size.)
    let missed: HashMap<&InstanceId, u32> = ledger
        .iter()
        .map(|r| (&r.instance_id, r.missed_observations))
        .collect();
    let unserved: Vec<UserId> = users
        .iter()
        .filter(|u| matches!(u.state, UserState::Ready | UserState::Migrating))
        .filter(|u| {
            u.instance_id
                .as_ref()
                .is_some_and(|id| missed.get(id).is_none_or(|missed| *missed > 0))
        })
        .map(|u| u.user_id.clone())
        .collect();
    metrics::gauge!("spotpool_users_unserved").set(unserved.len() as f64);
    unserved
}

/// What `plan` needs of a user's row.
pub(super) fn intent_of(u: &crate::store::UserRecord) -> UserIntent {
    UserIntent {
        user: u.user_id.clone(),
        tier: u.tier.clone(),
        state: u.state,
        instance: u.instance_id.clone(),
        slot: u.slot,
        requested_at: u.requested_at,
        tearing_down: u.teardown.is_some(),
        moving_to: u.move_target().cloned(),
        moving_slot: (u.moving.as_ref())
            .and_then(|m| m.target.as_ref())
            .map_or(0, |t| t.slot),
        zone: u.workspace.as_ref().map(|w| w.availability_zone.clone()),
        relocating: u.workspace.as_ref().is_some_and(|w| w.relocation.is_some()),
        shard: u.shard.clone(),
        waiting_for_route: u.state == crate::model::UserState::Queued
            && u.error.as_deref() == Some(crate::model::NO_ROUTE_CAPACITY),
        route_untagged: u.routing.prewired == Some(crate::model::Prewired::Switched),
        has_route: u.routing.rule_arn.is_some()
            || u.routing.target_group_arn.is_some()
            || u.routing.listener_arn.is_some(),
        move_abandoned_at: u.move_abandoned_at,
    }
}
