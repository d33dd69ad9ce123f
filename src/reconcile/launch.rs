//! Launches and the tier's launch health: a launch is written down with its EC2 ClientToken
//! before RunInstances, so a lost response is redone with the same token; capacity errors mark
//! an (instance type, subnet) offering unavailable for a while (Karpenter's unavailable-offerings
//! cache); a failing tier backs off, doubling, and halts at the failure limit.

use super::{Reconciler, StepError};
use crate::cloud::{BlankWorkspace, CloudError, CloudErrorKind, CloudResult, LaunchRequest};
use crate::model::{Event, InstanceId, InstanceStatus, Millis};
use crate::plan::{Conditions, Market};
use crate::store::{InstanceRecord, PendingLaunch, StoreError};
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// The reconciler's memory of recent cloud conditions (kept in process: a restart forgets it,
/// which at worst retries an unavailable offering once more).
#[derive(Debug, Default)]
pub(super) struct ConditionState {
    /// (instance type, subnet) -> skipped until.
    unavailable: HashMap<(String, String), Millis>,
    tiers: HashMap<String, TierHealth>,
    /// Shards AWS refused a route: (the users they held then, until when).
    pub(super) route_marks: HashMap<String, (u32, Millis)>,
    /// The region refused a target group: (the users placed then, until when).
    pub(super) region_mark: Option<(u32, Millis)>,
    /// The account's quotas (Service Quotas, hourly): the most users a load balancer may hold
    /// (the lower of its rules and target groups quotas), and target groups in the region.
    pub(super) route_quotas: (Option<u32>, Option<u32>),
}

#[derive(Debug, Default)]
struct TierHealth {
    consecutive_failures: u32,
    blocked_until: Millis,
    halted: bool,
}

impl ConditionState {
    pub(super) fn snapshot(&mut self, now: Millis) -> Conditions {
        self.unavailable.retain(|_, until| *until > now);
        self.route_marks.retain(|_, (_, until)| *until > now);
        self.region_mark = self.region_mark.filter(|(_, until)| *until > now);
        Conditions {
            route_limits: self
                .route_marks
                .iter()
                .map(|(shard, (held, _))| (shard.clone(), *held))
                .collect(),
            region_route_limit: match (self.region_mark.map(|(held, _)| held), self.route_quotas.1)
            {
                (Some(held), Some(quota)) => Some(held.min(quota)),
                (held, quota) => held.or(quota),
            },
            alb_route_limit: self.route_quotas.0,
            unavailable: self.unavailable.keys().cloned().collect(),
            drained: Default::default(),
            closed: Default::default(),
            offering_costs: Default::default(),
            launch_blocked: self
                .tiers
                .iter()
                .filter(|(_, h)| h.halted || h.blocked_until > now)
                .map(|(tier, _)| tier.clone())
                .collect(),
        }
    }
}

/// A launch that keeps failing with retryable errors is redone this many times with its token;
/// then the row is dropped (anything it started is tagged for the pool and adopted).
const MAX_LAUNCH_REDOS: u32 = 10;

impl Reconciler {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn launch(
        &self,
        tier: &str,
        instance_type: &str,
        subnet_id: &str,
        count: u32,
        market: Market,
        now: Millis,
    ) -> Result<(), StepError> {
        let seq = self.inner.launch_seq.fetch_add(1, Ordering::Relaxed);
        // The preferred type is the first a drain does not keep off this subnet: launching the
        // next because of a drain is no fallback.
        let drained = self.drained().offerings;
        let offering = |t: &String| (tier.to_string(), t.clone(), subnet_id.to_string());
        let preferred = (self.tier(tier))
            .and_then(|t| (t.instance_types.into_iter()).find(|t| !drained.contains(&offering(t))))
            .is_some_and(|t| t == instance_type);
        if market == Market::OnDemand || !preferred {
            let kind = if market == Market::OnDemand {
                "on_demand"
            } else {
                "instance_type"
            };
            metrics::counter!("spotpool_launch_fallbacks_total", "tier" => tier.to_string(), "kind" => kind)
                .increment(u64::from(count));
            let event = Event::PoolFallback {
                tier: tier.to_string(),
                count,
                instance_type: instance_type.to_string(),
                on_demand: market == Market::OnDemand,
                subnet_id: subnet_id.to_string(),
            };
            self.journal(now, event, None, None).await?;
        }
        // The launch is written down with its ClientToken before RunInstances, so a lost
        // response is redone with the same token and EC2 answers with the same instances.
        let launch = PendingLaunch {
            client_token: format!("sp-{now}-{seq}"),
            tier: tier.to_string(),
            instance_type: instance_type.to_string(),
            subnet_id: subnet_id.to_string(),
            count,
            spot: market == Market::Spot,
            created_at: now,
            attempts: 0,
            last_error: None,
        };
        // Held while it runs, so that a pass meanwhile does not redo it (`finish_launches`).
        let key = super::execute::launch_key(&launch.client_token);
        let _held = self.inner.in_flight.try_hold(vec![key]);
        self.inner.store.insert_launch(&launch).await?;
        self.run_launch(&launch, now).await
    }

    /// Calls RunInstances for a recorded launch and settles its row: instances into the ledger
    /// and the row deleted, or the row kept (with the error) for a redo on the next pass.
    async fn run_launch(&self, launch: &PendingLaunch, now: Millis) -> Result<(), StepError> {
        let store = &self.inner.store;
        let tier = launch.tier.as_str();
        let launched = self.run_instances(launch).await;
        let (ids, template) = match launched {
            Ok(launched) => launched,
            // A redo whose parameters changed since the first call (a restart with a new
            // template version; a first call after a crash is a redo too, with no attempt
            // counted): the first call's instances, if any, carry the pool's tags and are
            // adopted from a listing; the tier did nothing wrong. A fresh token never gets this.
            Err(error) if error.code == "IdempotentParameterMismatch" => {
                tracing::warn!(%tier, token = %launch.client_token, %error,
                    "a launch redo no longer matches its first call; dropped");
                store.delete_launch(&launch.client_token).await?;
                return Err(error.into());
            }
            Err(error) => {
                metrics::counter!("spotpool_launches_total", "tier" => tier.to_string(), "outcome" => error.kind.as_str())
                    .increment(u64::from(launch.count));
                // Capacity marks the offering; a refusal that retrying will not fix counts against
                // the tier. Throttling and 5xx that outlived the SDK's retries are the API's
                // trouble, not the tier's: the next pass redoes the launch with the same token.
                if error.kind.is_retryable() && launch.attempts + 1 < MAX_LAUNCH_REDOS {
                    store
                        .launch_failed(&launch.client_token, &error.to_string())
                        .await?;
                    return Err(error.into());
                }
                if error.kind == CloudErrorKind::Capacity {
                    self.mark_unavailable(tier, &launch.instance_type, &launch.subnet_id, now)
                        .await?;
                } else if error.kind == CloudErrorKind::Quota {
                    self.quota_exceeded(tier, &launch.instance_type, &error.to_string(), now)
                        .await?;
                } else if !error.kind.is_retryable() {
                    self.tier_failed(tier, &error.to_string(), now).await?;
                }
                // Nothing was started (or, after MAX_LAUNCH_REDOS, anything that was is tagged
                // for the pool and adopted from the next listing).
                store.delete_launch(&launch.client_token).await?;
                return Err(error.into());
            }
        };
        metrics::counter!("spotpool_launches_total", "tier" => tier.to_string(), "outcome" => "ok")
            .increment(ids.len() as u64);
        self.quota_cleared(tier).await?;
        for id in &ids {
            if store.get_instance(id).await?.is_some() {
                // A redo whose instances were already adopted from a listing.
                store.note_launch_template(id, &template).await?;
                continue;
            }
            let zone = self.lock_subnet_zones().get(&launch.subnet_id).cloned();
            store
                .put_instance(&InstanceRecord {
                    instance_type: Some(launch.instance_type.clone()),
                    availability_zone: zone,
                    launch_template: Some(template.clone()),
                    ..InstanceRecord::new(
                        id.clone(),
                        tier.to_string(),
                        InstanceStatus::Initializing,
                        now,
                        now,
                    )
                })
                .await?;
            let event = Event::InstanceLaunched {
                instance_type: launch.instance_type.clone(),
                subnet_id: launch.subnet_id.clone(),
            };
            self.journal(now, event, None, Some(id)).await?;
        }
        store.delete_launch(&launch.client_token).await?;
        Ok(())
    }

    /// RunInstances for `launch`, from its tier's spot template or on-demand one as configured;
    /// the instances, and the template's key (`<id>:<version>`).
    async fn run_instances(
        &self,
        launch: &PendingLaunch,
    ) -> CloudResult<(Vec<InstanceId>, String)> {
        let tier = launch.tier.as_str();
        let runtime = self.runtime(tier);
        let template = match launch.spot {
            true => Some(runtime.launch.clone()),
            false => runtime.on_demand.clone(),
        };
        match template {
            Some(launch_template) => {
                let key = launch_template.key();
                let request = LaunchRequest {
                    tier: launch.tier.clone(),
                    instance_type: launch.instance_type.clone(),
                    subnet_id: launch.subnet_id.clone(),
                    count: launch.count,
                    client_token: launch.client_token.clone(),
                    spot: launch.spot,
                    launch_template,
                    blank_workspace: (self.inner.config.blank_workspaces
                        && self.slots_of(tier) == 1)
                        .then(|| BlankWorkspace {
                            size_gib: self.workspace_size(tier),
                            kms_key_id: self.inner.config.workspace_kms_key_id.clone(),
                        }),
                };
                let ids = self.inner.cloud.launch_instances(&request).await?;
                Ok((ids, key))
            }
            // The configuration refuses on-demand fallback without a template; a launch row
            // from a daemon configured otherwise meets this.
            None => Err(CloudError::new(
                CloudErrorKind::Fatal,
                "RunInstances",
                "NoOnDemandTemplate",
                format!("tier {tier} has no on-demand launch template"),
            )),
        }
    }

    /// Redoes launches whose outcome was lost. Returns the tiers that still have one pending:
    /// they launch nothing new this pass, so a lost response can never double a launch.
    /// Also returns how many redos AWS throttled.
    pub(super) async fn finish_launches(
        &self,
        now: Millis,
    ) -> Result<(Vec<String>, usize), StoreError> {
        let pending = self.inner.store.list_launches().await?;
        if pending.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let mut throttled = 0;
        for launch in pending {
            let key = super::execute::launch_key(&launch.client_token);
            // Still running (an action of an earlier pass, waiting for its bucket).
            let Some(_held) = self.inner.in_flight.try_hold(vec![key]) else {
                continue;
            };
            // Ended (recorded or given up) between the listing and the hold: nothing to redo.
            let still_pending = self.inner.store.list_launches().await?;
            if !still_pending
                .iter()
                .any(|l| l.client_token == launch.client_token)
            {
                continue;
            }
            tracing::info!(client_token = %launch.client_token, tier = %launch.tier, attempts = launch.attempts, "redoing a launch whose outcome was not recorded");
            match self.run_launch(&launch, now).await {
                Ok(()) => {}
                Err(StepError::Store(e)) => return Err(e),
                Err(StepError::Cloud(error)) => {
                    throttled += usize::from(error.kind == CloudErrorKind::Throttled);
                    tracing::warn!(client_token = %launch.client_token, error = %error, "launch redo failed");
                }
            }
        }
        let still_pending = self
            .inner
            .store
            .list_launches()
            .await?
            .into_iter()
            .map(|l| l.tier)
            .collect();
        Ok((still_pending, throttled))
    }

    pub(super) fn conditions(&self) -> std::sync::MutexGuard<'_, ConditionState> {
        // Nothing panics while holding this lock; a poisoned lock still holds valid data.
        self.inner
            .conditions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A capacity error: skip this (type, subnet) offering for `capacity_ttl`; `plan` falls back
    /// to another subnet, then the next type, then on-demand if the tier allows it.
    pub(super) async fn mark_unavailable(
        &self,
        tier: &str,
        instance_type: &str,
        subnet_id: &str,
        now: Millis,
    ) -> Result<(), StepError> {
        let until = now + self.inner.config.capacity_ttl.as_millis() as Millis;
        self.conditions()
            .unavailable
            .insert((instance_type.to_string(), subnet_id.to_string()), until);
        metrics::counter!("spotpool_capacity_errors_total", "tier" => tier.to_string(), "instance_type" => instance_type.to_string())
            .increment(1);
        let event = Event::PoolCapacityUnavailable {
            instance_type: instance_type.to_string(),
            subnet_id: subnet_id.to_string(),
            skipped_for: self.inner.config.capacity_ttl,
        };
        self.journal(now, event, None, None).await
    }

    /// A launch or probe failure of `tier`: back off exponentially, and stop launching at the
    /// failure limit, so a broken template or image cannot spend money in a loop.
    pub(super) async fn tier_failed(
        &self,
        tier: &str,
        why: &str,
        now: Millis,
    ) -> Result<(), StepError> {
        let config = &self.inner.config;
        let (failures, backoff, halted_now) = {
            let mut conditions = self.conditions();
            let health = conditions.tiers.entry(tier.to_string()).or_default();
            health.consecutive_failures += 1;
            let backoff = config.launch_backoff.after(health.consecutive_failures);
            health.blocked_until = now + backoff.as_millis() as Millis;
            let halted_now =
                !health.halted && health.consecutive_failures >= config.launch_failure_limit;
            health.halted |= halted_now;
            (health.consecutive_failures, backoff, halted_now)
        };
        let (tier, cause) = (tier.to_string(), why.to_string());
        let event = if halted_now {
            metrics::gauge!("spotpool_tier_launch_halted", "tier" => tier.clone()).set(1.0);
            Event::PoolLaunchHalted {
                tier,
                failures,
                cause,
            }
        } else {
            Event::PoolLaunchBackoff {
                tier,
                failures,
                cause,
                backoff,
            }
        };
        self.journal(now, event, None, None).await
    }

    /// Holds `tier`'s launches back until `until`, for a cause that is not the tier's failure.
    pub(super) fn block_tier_until(&self, tier: &str, until: Millis) {
        let mut conditions = self.conditions();
        let health = conditions.tiers.entry(tier.to_string()).or_default();
        health.blocked_until = health.blocked_until.max(until);
    }

    /// A launch of `tier` went through: a quota no longer holds it back.
    async fn quota_cleared(&self, tier: &str) -> Result<(), StepError> {
        if self.inner.store.clear_tier_condition(tier).await? {
            tracing::info!(
                tier,
                "a launch went through: the quota no longer holds the tier back"
            );
        }
        Ok(())
    }

    /// The tier runs another image or template now (a rollout): its failures, halt included,
    /// were the old version's.
    pub(super) fn tier_changed(&self, tier: &str) {
        if self
            .conditions()
            .tiers
            .remove(tier)
            .is_some_and(|h| h.halted)
        {
            metrics::gauge!("spotpool_tier_launch_halted", "tier" => tier.to_string()).set(0.0);
            tracing::info!(%tier, "a new version: the tier launches again after its halt");
        }
    }

    /// An instance of `tier` passed its probe: the tier works, forget its failures.
    pub(super) fn tier_healthy(&self, tier: &str) {
        let mut conditions = self.conditions();
        if let Some(health) = conditions.tiers.get_mut(tier)
            && !health.halted
        {
            health.consecutive_failures = 0;
            health.blocked_until = 0;
        }
    }
}
