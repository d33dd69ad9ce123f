//! Pre-wired spares (ARCHITECTURE.md, "Pre-wired spares"): a spare whose readiness probe passed
//! gets its own target group (`sp-warm-<instance>`, the instance registered) and a warm rule on
//! its shard's listener that no client can match (`source-ip 192.0.2.1/32` and
//! `/_warm/<instance>`), which makes the load balancer health-check it through the warm
//! responder the user data runs on the container port. It becomes `available` once the target
//! is healthy, so a claim only switches the rule to the user's route (one ModifyRule) and starts
//! the container. Each part is recorded in the ledger as soon as it exists; a claim moves the
//! route into the user's row (`Store::assign`); an instance that stops being a spare (a move
//! took it, a claim on another shard, retirement) has its route deleted (`unwire`).

use super::{Reconciler, StepError, one_tag};
use crate::cloud::{CloudError, CloudErrorKind, tags};
use crate::model::{
    Event, InstanceId, InstanceStatus, Millis, RuleMatch, warm_path, warm_target_group_name,
};
use crate::store::{InstanceRecord, StoreError, WarmRoute};

impl Reconciler {
    /// A spare passed its readiness probe: with pre-wiring it is marked probed and wired now
    /// (it stays `initializing` until its target is healthy); without, it is `available`.
    pub(super) async fn probe_passed(
        &self,
        record: &InstanceRecord,
        now: Millis,
    ) -> Result<(), StepError> {
        if !self.prewired(&record.tier) {
            return self
                .make_available(&record.instance_id, &record.tier, now)
                .await;
        }
        if self
            .inner
            .store
            .mark_probed(&record.instance_id, now)
            .await?
        {
            self.journal(now, Event::InstanceProbed, None, Some(&record.instance_id))
                .await?;
        }
        Ok(())
    }

    /// An `initializing` spare goes `available`: its `Status` tag first (a mirror for on-call;
    /// if the write fails the step runs again), then the ledger.
    pub(super) async fn make_available(
        &self,
        instance: &InstanceId,
        tier: &str,
        now: Millis,
    ) -> Result<(), StepError> {
        self.inner
            .cloud
            .tag_instance(
                instance,
                &one_tag(tags::STATUS, InstanceStatus::Available.as_str()),
            )
            .await?;
        let became = self
            .inner
            .store
            .transition_instance(
                instance,
                InstanceStatus::Initializing,
                InstanceStatus::Available,
                now,
            )
            .await?;
        if became {
            self.tier_healthy(tier);
            self.journal(now, Event::InstanceAvailable, None, Some(instance))
                .await?;
        }
        Ok(())
    }

    /// Builds a probed spare's warm route on `shard`, from the part last recorded, and makes the
    /// spare `available` once the load balancer reports its target healthy. Without a shard
    /// (none has room for one more route) the spare is `available` without a route: its claim
    /// makes the user's target group and rule, as without pre-wiring.
    pub(super) async fn wire(
        &self,
        instance: &InstanceId,
        shard: Option<&str>,
        now: Millis,
    ) -> Result<(), StepError> {
        let Some(record) = self.inner.store.get_instance(instance).await? else {
            return Ok(());
        };
        if record.status != InstanceStatus::Initializing || record.probed_at.is_none() {
            return Ok(());
        }
        let mut warm = record.warm.clone();
        if warm.priority.is_none() {
            let chosen = warm.shard.as_deref().or(shard);
            let Some(listener) = chosen
                .and_then(|s| self.inner.config.shard(s))
                .map(|s| s.listener_arn.clone())
            else {
                tracing::info!(%instance, "no shard has room for a warm route: the spare is available without one");
                return self.make_available(instance, &record.tier, now).await;
            };
            warm.shard = chosen.map(str::to_string);
            warm.listener_arn = Some(listener.clone());
            // A warm rule of this spare may exist already (adopted by a fresh store, or made
            // just before a crash that lost its record): it is taken as it is.
            let adopted = match self.existing_warm_rule(&listener, instance).await? {
                Some((priority, rule)) => {
                    warm.priority = Some(priority);
                    warm.rule_arn = Some(rule.clone());
                    Some(Undo::Rule(rule))
                }
                None => {
                    warm.priority = Some(self.take_priority(&listener).await?);
                    None
                }
            };
            // An adopted rule that cannot be recorded (no longer a spare) goes: nothing else
            // records it.
            if !self.record_warm(instance, &warm, adopted).await? {
                return Ok(());
            }
        }
        let Some(group) = self.warm_target_group(&record, &mut warm).await? else {
            return Ok(());
        };
        if warm.rule_arn.is_none() && !self.warm_rule(&record, &mut warm, &group).await? {
            return Ok(());
        }
        let port = self.runtime(&record.tier).container.port;
        if self
            .inner
            .cloud
            .target_healthy(&group, instance, port)
            .await?
        {
            self.make_available(instance, &record.tier, now).await?;
        }
        Ok(())
    }

    /// The spare's warm target group: the recorded one, or a new one (recorded at once). None
    /// when the instance stopped being a spare meanwhile (the new group is deleted again).
    async fn warm_target_group(
        &self,
        record: &InstanceRecord,
        warm: &mut WarmRoute,
    ) -> Result<Option<String>, StepError> {
        if let Some(arn) = &warm.target_group_arn {
            return Ok(Some(arn.clone()));
        }
        let instance = &record.instance_id;
        let config = &self.inner.config;
        let runtime = self.runtime(&record.tier);
        let container = &runtime.container;
        let mut group_tags = one_tag(tags::POOL, &config.pool);
        group_tags.insert(tags::INSTANCE_ID.into(), instance.0.clone());
        let created = self
            .inner
            .cloud
            .create_target_group(
                &warm_target_group_name(&instance.0),
                container.port,
                &container.health_check,
                &group_tags,
            )
            .await;
        let arn = match created {
            Ok(arn) => arn,
            Err(error) if error.kind == CloudErrorKind::RouteCapacity => {
                self.warm_refused(instance, warm, error).await?;
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        warm.target_group_arn = Some(arn.clone());
        let undo = Undo::TargetGroup(arn.clone());
        Ok(self
            .record_warm(instance, warm, Some(undo))
            .await?
            .then_some(arn))
    }

    /// Registers the spare in `group` and creates its warm rule at the recorded priority.
    /// False when the step must wait for a later pass: the priority was someone else's (a new
    /// one is taken then), the instance stopped being a spare, or AWS refused the rule.
    async fn warm_rule(
        &self,
        record: &InstanceRecord,
        warm: &mut WarmRoute,
        group: &str,
    ) -> Result<bool, StepError> {
        let instance = &record.instance_id;
        let cloud = &self.inner.cloud;
        let port = self.runtime(&record.tier).container.port;
        let (Some(listener), Some(priority)) = (warm.listener_arn.clone(), warm.priority) else {
            return Ok(false);
        };
        match cloud.register_target(group, instance, port).await {
            Ok(()) => {}
            // The recorded group is gone (a deletion a crash interrupted before its record was
            // cleared): forget it, and the next pass makes a new one.
            Err(error) if error.kind == CloudErrorKind::NotFound => {
                warm.target_group_arn = None;
                self.record_warm(instance, warm, None).await?;
                return Ok(false);
            }
            Err(error) => return Err(error.into()),
        }
        let condition = RuleMatch::warm(&instance.0);
        let mut rule_tags = one_tag(tags::POOL, &self.inner.config.pool);
        rule_tags.insert(tags::INSTANCE_ID.into(), instance.0.clone());
        let created = self
            .create_or_adopt_rule(&listener, priority, &condition, group, &rule_tags)
            .await;
        let arn = match created {
            Ok(Some(arn)) => arn,
            // Another's priority: given up, and the next pass takes a new one.
            Ok(None) => {
                warm.priority = None;
                self.record_warm(instance, warm, None).await?;
                return Ok(false);
            }
            Err(StepError::Cloud(error)) if error.kind == CloudErrorKind::RouteCapacity => {
                self.warm_refused(instance, warm, error).await?;
                return Ok(false);
            }
            Err(error) => return Err(error),
        };
        warm.rule_arn = Some(arn.clone());
        self.record_warm(instance, warm, Some(Undo::Rule(arn)))
            .await
    }

    /// AWS refused a part of the warm route (a load balancer's rules or target groups, or the
    /// region's): the shard (or region) holds the routes it has, as for a user's refused route,
    /// and what was made is deleted; the next pass makes the spare `available` without a route
    /// unless room appeared.
    async fn warm_refused(
        &self,
        instance: &InstanceId,
        warm: &WarmRoute,
        error: CloudError,
    ) -> Result<(), StepError> {
        tracing::warn!(%instance, shard = ?warm.shard, error = %error, "AWS refused a spare's warm route");
        self.hold_routes(warm.shard.as_deref(), &error).await?;
        self.delete_warm_route(instance, warm).await?;
        self.inner.store.clear_warm_route(instance).await?;
        let now = self.now();
        let region = error.code == "TooManyTargetGroups";
        let event = Event::RouteRefused {
            shard: if region { None } else { warm.shard.clone() },
            cause: error.to_string(),
            held_for: self.inner.config.capacity_ttl,
        };
        self.journal(now, event, None, Some(instance)).await
    }

    /// Records the warm route; false when the instance is no longer a spare, and then `undo`
    /// (what was just created, which nothing records) is deleted again.
    async fn record_warm(
        &self,
        instance: &InstanceId,
        warm: &WarmRoute,
        undo: Option<Undo>,
    ) -> Result<bool, StepError> {
        let recorded = match self.inner.store.set_warm_route(instance, warm).await {
            Ok(recorded) => recorded,
            // Another process took the same priority first (the unique index decides).
            Err(StoreError::Conflict(why)) => {
                tracing::debug!(%instance, why, "warm priority taken meanwhile");
                false
            }
            Err(error) => return Err(error.into()),
        };
        if !recorded {
            let cloud = &self.inner.cloud;
            match undo {
                Some(Undo::TargetGroup(arn)) => cloud.delete_target_group(&arn).await?,
                Some(Undo::Rule(arn)) => cloud.delete_rule(&arn).await?,
                None => {}
            }
        }
        Ok(recorded)
    }

    /// Deletes the warm route of an instance that is no longer a spare, then forgets it.
    pub(super) async fn unwire(&self, instance: &InstanceId) -> Result<(), StepError> {
        let Some(record) = self.inner.store.get_instance(instance).await? else {
            return Ok(());
        };
        if record.warm.is_empty() {
            return Ok(());
        }
        self.delete_warm_route(instance, &record.warm).await?;
        self.inner.store.clear_warm_route(instance).await?;
        Ok(())
    }

    /// Deletes what a warm route may hold in AWS: the rule first (a target group a rule uses
    /// cannot be deleted), then the group. A part not recorded (a crash between its creation
    /// and the record) is found by its priority and condition, or by its name.
    async fn delete_warm_route(
        &self,
        instance: &InstanceId,
        warm: &WarmRoute,
    ) -> Result<(), StepError> {
        let cloud = &self.inner.cloud;
        match (&warm.rule_arn, &warm.listener_arn, warm.priority) {
            (Some(rule), _, _) => cloud.delete_rule(rule).await?,
            // A rule whose record a crash lost: found by its condition, at whatever priority
            // (the recorded one may have been given up after a PriorityInUse meanwhile).
            (None, Some(listener), _) if warm.target_group_arn.is_some() => {
                let condition = RuleMatch::Warm(warm_path(&instance.0));
                for lost in cloud.describe_rules(listener).await? {
                    if lost.matches(&condition) {
                        cloud.delete_rule(&lost.arn).await?;
                    }
                }
            }
            _ => {}
        }
        let group = match &warm.target_group_arn {
            Some(arn) => Some(arn.clone()),
            None if warm.priority.is_some() => {
                cloud
                    .find_target_group(&warm_target_group_name(&instance.0))
                    .await?
            }
            None => None,
        };
        if let Some(group) = group {
            cloud.delete_target_group(&group).await.or_else(gone)?;
        }
        Ok(())
    }
}

/// What `record_warm` deletes when the instance stopped being a spare before its record.
enum Undo {
    TargetGroup(String),
    Rule(String),
}

/// A target group that no longer exists is deleted already.
fn gone(error: CloudError) -> Result<(), CloudError> {
    if error.kind == CloudErrorKind::NotFound {
        Ok(())
    } else {
        Err(error)
    }
}
