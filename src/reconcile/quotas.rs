//! The account quotas the pool depends on (`model::quota`): read from Service Quotas at start-up
//! (`App::serve` refuses tier maxima the spot vCPU quota cannot hold) and hourly in a pass, and
//! exposed as metrics with the pool's own use, for the alert rules in
//! `deploy/prometheus/alerts.yml`. Also what a launch that a quota refused does: the
//! tier launches nothing for `capacity_ttl`, and its queued users show `quota_exceeded`.

use super::{Reconciler, StepError};
use crate::model::quota::{Quota, SpotFamily, TierSize, spot_shortfalls, spot_vcpus_needed};
use crate::model::{Event, Millis, TierCondition};
use crate::plan::TierPolicy;
use std::collections::BTreeMap;

fn tier_sizes(tiers: &[TierPolicy]) -> Vec<TierSize<'_>> {
    tiers
        .iter()
        .map(|t| TierSize {
            tier: &t.name,
            max_instances: t.max_instances,
            instance_types: &t.instance_types,
        })
        .collect()
}

/// How often a pass reads the quotas again.
pub(super) const QUOTA_CHECK_INTERVAL: Millis = 60 * 60_000;

/// What one read of the quotas found.
#[derive(Debug, Clone, Default)]
pub struct QuotaReport {
    /// Each quota's applied value; a quota the region (or an emulator) does not know is absent.
    pub limits: BTreeMap<Quota, f64>,
    /// What the tiers' maxima need of a spot vCPU quota they do not fit, one message each.
    pub shortfalls: Vec<String>,
}

impl Reconciler {
    /// Reads the quotas the effective tiers depend on and the vCPUs of their instance types,
    /// sets the `spotpool_quota_*` gauges, and names every spot vCPU quota the tiers' maxima do
    /// not fit. An error is a call that failed (the caller logs it and goes on).
    pub async fn check_quotas(&self) -> Result<QuotaReport, String> {
        // The start-up read counts as the first hourly one.
        *self
            .inner
            .last_quota_check
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = self.now();
        let (policy, _) = self
            .effective_policy()
            .await
            .map_err(|e| format!("reading the tiers: {e}"))?;
        let (vcpus, limits) = self.read_quotas(&policy.tiers, false).await?;
        let sizes = tier_sizes(&policy.tiers);
        for (family, need) in spot_vcpus_needed(&sizes, &vcpus) {
            metrics::gauge!("spotpool_quota_needed", "quota" => Quota::SpotVcpus(family).label())
                .set(need as f64);
        }
        for (quota, value) in &limits {
            metrics::gauge!("spotpool_quota_limit", "quota" => quota.label()).set(*value);
        }
        let usage = self
            .export_quota_usage(&vcpus)
            .await
            .map_err(|e| format!("reading the pool's use: {e}"))?;
        // Headroom: what is left of each quota read, after this pool's use.
        for (quota, limit) in &limits {
            let used = usage.get(quota).copied().unwrap_or(0.0);
            metrics::gauge!("spotpool_quota_headroom", "quota" => quota.label()).set(limit - used);
        }
        // The load balancers' quotas bound every shard and all of them together.
        let quota = |q: Quota| limits.get(&q).map(|v| *v as u32);
        let per_alb = match (quota(Quota::RulesPerAlb), quota(Quota::TargetGroupsPerAlb)) {
            (Some(rules), Some(groups)) => Some(rules.min(groups)),
            (rules, groups) => rules.or(groups),
        };
        self.conditions().route_quotas = (per_alb, quota(Quota::TargetGroupsPerRegion));
        let shortfalls = spot_shortfalls(&sizes, &vcpus, &limits);
        Ok(QuotaReport { limits, shortfalls })
    }

    /// The shortfalls a proposed sizing of the tiers (on-call's resize) would have under the
    /// account's spot vCPU quotas. Reads them again; exports nothing.
    pub async fn quota_shortfalls(&self, tiers: &[TierPolicy]) -> Result<Vec<String>, String> {
        let (vcpus, limits) = self.read_quotas(tiers, true).await?;
        Ok(spot_shortfalls(&tier_sizes(tiers), &vcpus, &limits))
    }

    /// The vCPUs of the tiers' instance types and the quotas they depend on (the spot vCPU
    /// ones only, with `spot_only`).
    async fn read_quotas(
        &self,
        tiers: &[TierPolicy],
        spot_only: bool,
    ) -> Result<(BTreeMap<String, u32>, BTreeMap<Quota, f64>), String> {
        let mut types: Vec<String> = tiers
            .iter()
            .flat_map(|t| t.instance_types.iter().cloned())
            .collect();
        types.sort();
        types.dedup();
        let cloud = &self.inner.cloud;
        let vcpus = cloud
            .instance_vcpus(&types)
            .await
            .map_err(|e| e.to_string())?;
        let mut quotas = Quota::needed_by(types.iter().map(String::as_str));
        quotas.retain(|q| !spot_only || matches!(q, Quota::SpotVcpus(_)));
        let limits = cloud
            .quota_values(&quotas)
            .await
            .map_err(|e| e.to_string())?;
        Ok((vcpus, limits))
    }

    /// `spotpool_quota_usage`: what the pool itself uses of each quota (the account may use more
    /// elsewhere): the vCPUs of its live instances per spot family, its target groups and rules
    /// (per listener for the per-ALB quotas: the largest), its listeners.
    async fn export_quota_usage(
        &self,
        vcpus: &BTreeMap<String, u32>,
    ) -> Result<BTreeMap<Quota, f64>, crate::store::StoreError> {
        let mut usage = BTreeMap::new();
        let store = &self.inner.store;
        // Every family of the tiers' types, used or not (0 is a reading too).
        let mut spot: BTreeMap<SpotFamily, f64> = vcpus
            .keys()
            .filter_map(|t| SpotFamily::of(t))
            .map(|family| (family, 0.0))
            .collect();
        for instance in store.list_instances().await? {
            let Some(instance_type) = &instance.instance_type else {
                continue;
            };
            if let (Some(family), Some(count)) =
                (SpotFamily::of(instance_type), vcpus.get(instance_type))
            {
                *spot.entry(family).or_default() += f64::from(*count);
            }
        }
        for (family, used) in spot {
            usage.insert(Quota::SpotVcpus(family), used);
        }
        let users = store.list_users().await?;
        let mut per_listener: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        let mut groups = 0.0;
        for user in &users {
            let routing = &user.routing;
            let Some(listener) = routing.listener_arn.as_deref() else {
                continue;
            };
            let entry = per_listener.entry(listener).or_default();
            if routing.rule_arn.is_some() {
                entry.0 += 1.0;
            }
            if routing.target_group_arn.is_some() {
                entry.1 += 1.0;
                groups += 1.0;
            }
        }
        let largest =
            |pick: fn(&(f64, f64)) -> f64| per_listener.values().map(pick).fold(0.0, f64::max);
        for (quota, used) in [
            (Quota::RulesPerAlb, largest(|c| c.0)),
            (Quota::TargetGroupsPerAlb, largest(|c| c.1)),
            (Quota::TargetGroupsPerRegion, groups),
            (
                Quota::AlbsPerRegion,
                self.inner.config.policy.shards.len() as f64,
            ),
        ] {
            usage.insert(quota, used);
        }
        for (quota, used) in &usage {
            metrics::gauge!("spotpool_quota_usage", "quota" => quota.label()).set(*used);
        }
        Ok(usage)
    }

    /// A pass's hourly read of the quotas; a shortfall (a quota lowered, or tiers resized by
    /// on-call) is logged as an error. Failures are logged: the next check tries again.
    pub(super) async fn check_quotas_if_due(&self, now: Millis) {
        let last = *self
            .inner
            .last_quota_check
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last != 0 && now - last < QUOTA_CHECK_INTERVAL {
            return;
        }
        match self.check_quotas().await {
            Ok(report) => {
                for shortfall in &report.shortfalls {
                    tracing::error!(%shortfall, "a spot vCPU quota cannot hold the tiers' maxima");
                }
            }
            Err(error) => tracing::warn!(%error, "could not read the account's quotas; will retry"),
        }
    }

    /// RunInstances answered that an account quota is used up: `tier` launches nothing for
    /// `capacity_ttl` (not counted as a failure of the tier: nothing is broken but the quota),
    /// the cause is recorded for the API, and journalled.
    pub(super) async fn quota_exceeded(
        &self,
        tier: &str,
        instance_type: &str,
        cause: &str,
        now: Millis,
    ) -> Result<(), StepError> {
        let blocked_for = self.inner.config.capacity_ttl;
        let until = now + blocked_for.as_millis() as Millis;
        self.block_tier_until(tier, until);
        metrics::counter!("spotpool_quota_exceeded_total", "tier" => tier.to_string()).increment(1);
        let condition = TierCondition {
            tier: tier.to_string(),
            cause: TierCondition::QUOTA_EXCEEDED.to_string(),
            detail: cause.to_string(),
            since: now,
            until,
        };
        self.inner.store.put_tier_condition(&condition).await?;
        let event = Event::PoolQuotaExceeded {
            tier: tier.to_string(),
            instance_type: instance_type.to_string(),
            cause: cause.to_string(),
            blocked_for,
        };
        self.journal(now, event, None, None).await
    }
}
