//! The fake's side of the [`Cloud`] port: what each call does to the state of [`FakeCloud`]
//! (`mod.rs`), in plain and in simulated mode, and the errors it answers as AWS would.
//!
//! Owns: the per-operation behaviour (idempotent creates and deletes, PriorityInUse, a target
//! group in use cannot be deleted, InvocationDoesNotExist right after SendCommand, the pool's tag
//! filter of every listing). Must not: keep state of its own; every call goes through
//! `FakeCloud::enter` first (the simulated SDK, the call log, injected errors).

use super::{
    FakeCloud, FakeCommand, FakeInstance, FakeRule, FakeSecret, FakeTargetGroup, Timeline,
    elb_limits,
};
use crate::cloud::limit::RetryMeter;
use crate::cloud::{
    Cloud, CloudError, CloudErrorKind, CloudInstance, CloudResult, CloudSnapshot, CloudVolume,
    CommandStatus, HealthCheck, LaunchRequest, Lifecycle, PoolResource, RuleAction, RuleInfo,
    SnapshotState, Tags, TargetGroupMetric, VolumeRequest, tags,
};
use crate::model::quota::Quota;
use crate::model::{InstanceId, InstanceStatus, Millis, RuleMatch};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Instances per DescribeInstances page: the daemon asks for AWS's largest, 1,000
/// (`cloud::aws`'s page size).
const DESCRIBE_INSTANCES_PAGE: usize = 1000;

#[async_trait::async_trait]
impl Cloud for FakeCloud {
    async fn describe_pool_instances(&self) -> CloudResult<Vec<CloudInstance>> {
        let out = {
            let mut state = self.enter("DescribeInstances", 1).await?;
            self.list_pool_instances(&mut state)
        };
        // AWS pages the listing at the daemon's MaxResults (1,000, its largest): every further
        // page is another call (each may fail, as on AWS).
        for _ in 1..out.len().div_ceil(DESCRIBE_INSTANCES_PAGE) {
            drop(self.enter("DescribeInstances", 1).await?);
        }
        Ok(out)
    }

    async fn launch_instances(&self, request: &LaunchRequest) -> CloudResult<Vec<InstanceId>> {
        let mut state = self.enter("RunInstances", request.count).await?;
        state.launch_tokens.push(request.client_token.clone());
        if let Some(answer) = state.repeated_launch(request) {
            return answer;
        }
        let offering = (request.instance_type.clone(), request.subnet_id.clone());
        if request.spot && state.no_capacity.contains(&offering) {
            if let Some(sim) = &self.sim {
                sim.count_capacity_error();
            }
            return Err(CloudError::new(
                CloudErrorKind::Capacity,
                "RunInstances",
                "InsufficientInstanceCapacity",
                format!("no spot capacity for {} in {}", offering.0, offering.1),
            ));
        }
        if let Some(refusal) = super::quotas::spot_quota_refusal(&state, request) {
            return Err(refusal);
        }
        let mut ids = Vec::new();
        for _ in 0..request.count {
            state.next_id += 1;
            let id = InstanceId(format!("i-{:017x}", state.next_id));
            let tags: Tags = [
                (tags::NAME, tags::NAME_VALUE),
                (tags::POOL, self.pool.as_str()),
                (tags::TIER, request.tier.as_str()),
                (tags::STATUS, InstanceStatus::Initializing.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let launched_at = state.now;
            let lifecycle = match &self.sim {
                Some(_) => {
                    let running_at = self.effect_at(launched_at, |p| p.effects.pending_to_running);
                    let agent_online_at = self.effect_at(running_at, |p| p.effects.agent_online);
                    state.timelines.insert(
                        id.0.clone(),
                        Timeline {
                            running_at,
                            agent_online_at,
                            terminated_at: None,
                        },
                    );
                    Lifecycle::Pending
                }
                None => Lifecycle::Running,
            };
            state.instances.insert(
                id.0.clone(),
                FakeInstance {
                    id: id.clone(),
                    lifecycle,
                    instance_type: request.instance_type.clone(),
                    subnet_id: request.subnet_id.clone(),
                    tags,
                    launched_at,
                    spot: request.spot,
                    launch_template: request.launch_template.clone(),
                    blank_volume: None,
                },
            );
            if let Some(blank) = &request.blank_workspace {
                let zone = format!("{}-{}", self.region, request.subnet_id);
                super::ebs::launch_blank(&mut state, &id, zone, blank);
            }
            ids.push(id);
        }
        state
            .client_tokens
            .insert(request.client_token.clone(), ids.clone());
        if let Some(lost) = state.lost_response("RunInstances") {
            return Err(lost);
        }
        Ok(ids)
    }

    async fn tag_instance(&self, instance: &InstanceId, new_tags: &Tags) -> CloudResult<()> {
        let mut state = self.enter("CreateTags", 1).await?;
        let found = state
            .instances
            .get_mut(&instance.0)
            .ok_or_else(|| not_found("CreateTags", &instance.0))?;
        found.tags.extend(new_tags.clone());
        Ok(())
    }

    async fn keep_blank_workspace(
        &self,
        instance: &InstanceId,
        volume_id: &str,
        device: &str,
        tags: &Tags,
    ) -> CloudResult<()> {
        self.fake_keep_blank_workspace(instance, volume_id, device, tags)
            .await
    }

    async fn untag_instance(&self, instance: &InstanceId, keys: &[&str]) -> CloudResult<()> {
        let mut state = self.enter("DeleteTags", 1).await?;
        let found = state
            .instances
            .get_mut(&instance.0)
            .ok_or_else(|| not_found("DeleteTags", &instance.0))?;
        for key in keys {
            found.tags.remove(*key);
        }
        Ok(())
    }

    async fn terminate_instances(&self, instances: &[InstanceId]) -> CloudResult<()> {
        let mut state = self.enter("TerminateInstances", 1).await?;
        let now = state.now;
        for id in instances {
            if let Some(instance) = state.instances.get_mut(&id.0)
                && !instance.lifecycle.is_gone()
            {
                instance.lifecycle = Lifecycle::ShuttingDown;
                if let Some(timeline) = state.timelines.get_mut(&id.0) {
                    timeline.terminated_at = Some(self.effect_at(now, |p| p.effects.shutting_down));
                }
            }
        }
        Ok(())
    }

    async fn send_command(
        &self,
        instance: &InstanceId,
        comment: &str,
        script: &str,
        _timeout_seconds: u32,
    ) -> CloudResult<String> {
        let mut state = self.enter("SendCommand", 1).await?;
        let now = state.now;
        if !state.agent_online(instance) {
            return Err(not_found("SendCommand", &instance.0));
        }
        let outcome = state
            .command_outcomes
            .iter()
            .find(|(key, _)| script.contains(key.as_str()))
            .map(|(_, outcome)| outcome.clone())
            .unwrap_or(CommandStatus::Success);
        let done_at = self.sim.as_ref().map(|sim| {
            let effects = &sim.profile.effects;
            let picked_up = sim.after(now, effects.command_pickup);
            // The readiness probe is a few checks; anything else starts the user's container.
            if comment.contains("readiness probe") {
                sim.after(picked_up, effects.probe_run)
            } else if effects.image_prepulled {
                sim.after(picked_up, effects.container_start)
            } else {
                let pulled = sim.after(picked_up, effects.image_pull);
                sim.after(pulled, effects.container_start)
            }
        });
        state.next_id += 1;
        let id = format!("cmd-{:08}", state.next_id);
        state.commands.insert(
            id.clone(),
            FakeCommand {
                instance: instance.clone(),
                comment: comment.to_string(),
                script: script.to_string(),
                pending_polls: self.command_polls,
                outcome,
                sent_at: now,
                done_at,
            },
        );
        Ok(id)
    }

    async fn command_status(
        &self,
        command_id: &str,
        instance: &InstanceId,
    ) -> CloudResult<CommandStatus> {
        let mut state = self.enter("GetCommandInvocation", 1).await?;
        let command = state
            .commands
            .get_mut(command_id)
            .filter(|c| c.instance == *instance)
            .ok_or_else(|| not_found("GetCommandInvocation", command_id))?;
        if let (Some(done_at), Some(sim)) = (command.done_at, &self.sim) {
            // InvocationDoesNotExist for a moment after SendCommand, then in progress until run.
            let visible_at =
                command.sent_at + sim.profile.effects.invocation_visible.as_millis() as Millis;
            let now = sim.now();
            if now < visible_at || now < done_at {
                return Ok(CommandStatus::Pending);
            }
            return Ok(command.outcome.clone());
        }
        if command.pending_polls > 0 {
            command.pending_polls -= 1;
            return Ok(CommandStatus::Pending);
        }
        Ok(command.outcome.clone())
    }

    async fn agents_online(
        &self,
        instances: &[InstanceId],
    ) -> CloudResult<Option<std::collections::BTreeSet<InstanceId>>> {
        // One call per page of ids, as on AWS; each may fail.
        let pages = instances
            .len()
            .div_ceil(crate::cloud::AGENT_IDS_PER_CALL)
            .max(1);
        for _ in 1..pages {
            drop(self.enter("DescribeInstanceInformation", 1).await?);
        }
        let state = self.enter("DescribeInstanceInformation", 1).await?;
        if state.agents_unknown {
            return Ok(None);
        }
        Ok(Some(
            instances
                .iter()
                .filter(|id| state.agent_online(id))
                .cloned()
                .collect(),
        ))
    }

    async fn put_secret(&self, name: &str, value: &str, new_tags: &Tags) -> CloudResult<String> {
        let mut state = self.enter("PutSecret", 1).await?;
        let region = self.region.clone();
        let created_at = state.now;
        let secret = state
            .secrets
            .entry(name.to_string())
            .or_insert_with(|| FakeSecret {
                arn: format!("arn:aws:secretsmanager:{region}:123456789012:secret:{name}-AbCdEf"),
                value: String::new(),
                tags: Tags::new(),
                created_at,
            });
        secret.value = value.to_string();
        secret.tags.extend(new_tags.clone());
        Ok(secret.arn.clone())
    }

    async fn update_secret(&self, secret_id: &str, value: &str) -> CloudResult<()> {
        let mut state = self.enter("PutSecretValue", 1).await?;
        let secret = state
            .secrets
            .values_mut()
            .find(|s| s.arn == secret_id)
            .ok_or_else(|| not_found("PutSecretValue", secret_id))?;
        secret.value = value.to_string();
        Ok(())
    }

    async fn tag_secret(&self, secret_id: &str, new_tags: &Tags) -> CloudResult<()> {
        let mut state = self.enter("TagResource", 1).await?;
        let secret = state
            .secrets
            .values_mut()
            .find(|s| s.arn == secret_id)
            .ok_or_else(|| not_found("TagResource", secret_id))?;
        secret.tags.extend(new_tags.clone());
        Ok(())
    }

    async fn untag_secret(&self, secret_id: &str, keys: &[&str]) -> CloudResult<()> {
        let mut state = self.enter("UntagResource", 1).await?;
        let secret = state
            .secrets
            .values_mut()
            .find(|s| s.arn == secret_id)
            .ok_or_else(|| not_found("UntagResource", secret_id))?;
        for key in keys {
            secret.tags.remove(*key);
        }
        Ok(())
    }

    async fn delete_secret(&self, secret_id: &str) -> CloudResult<()> {
        let mut state = self.enter("DeleteSecret", 1).await?;
        state
            .secrets
            .retain(|name, s| s.arn != secret_id && name != secret_id);
        Ok(())
    }

    async fn create_target_group(
        &self,
        name: &str,
        port: u16,
        health: &HealthCheck,
        new_tags: &Tags,
    ) -> CloudResult<String> {
        let mut state = self.enter("CreateTargetGroup", 1).await?;
        if name.len() > 32 {
            return Err(CloudError::new(
                CloudErrorKind::Fatal,
                "CreateTargetGroup",
                "ValidationError",
                "target group name longer than 32 characters",
            ));
        }
        let arn = self.target_group_arn(name);
        if state.target_groups.contains_key(&arn) {
            return Ok(arn);
        }
        elb_limits::check_new_target_group(&state)?;
        state.target_groups.insert(
            arn.clone(),
            FakeTargetGroup {
                arn: arn.clone(),
                name: name.to_string(),
                port,
                tags: new_tags.clone(),
                targets: Vec::new(),
                target_ports: BTreeMap::new(),
                health: health.clone(),
                registered_at: BTreeMap::new(),
            },
        );
        Ok(arn)
    }

    async fn find_target_group(&self, name: &str) -> CloudResult<Option<String>> {
        let state = self.enter("DescribeTargetGroups", 1).await?;
        let arn = self.target_group_arn(name);
        Ok(state.target_groups.contains_key(&arn).then_some(arn))
    }

    async fn register_target(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        port: u16,
    ) -> CloudResult<()> {
        let mut state = self.enter("RegisterTargets", 1).await?;
        let now = state.now;
        let group = state
            .target_groups
            .get_mut(target_group_arn)
            .ok_or_else(|| not_found("RegisterTargets", target_group_arn))?;
        if !group.targets.contains(instance) {
            elb_limits::check_new_target(&state, target_group_arn)?;
            let group = state
                .target_groups
                .get_mut(target_group_arn)
                .ok_or_else(|| not_found("RegisterTargets", target_group_arn))?;
            group.targets.push(instance.clone());
            group.registered_at.insert(instance.0.clone(), now);
        }
        if let Some(group) = state.target_groups.get_mut(target_group_arn) {
            group.target_ports.insert(instance.0.clone(), port);
        }
        Ok(())
    }

    async fn target_health(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        _port: u16,
    ) -> CloudResult<crate::cloud::TargetHealth> {
        let state = self.enter("DescribeTargetHealth", 1).await?;
        Ok(super::rules::target_health(
            &state,
            target_group_arn,
            instance,
            self.sim.is_some(),
        ))
    }

    async fn deregister_target(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        _port: u16,
    ) -> CloudResult<()> {
        let mut state = self.enter("DeregisterTargets", 1).await?;
        if let Some(group) = state.target_groups.get_mut(target_group_arn) {
            group.targets.retain(|t| t != instance);
        }
        Ok(())
    }

    async fn delete_target_group(&self, target_group_arn: &str) -> CloudResult<()> {
        let mut state = self.enter("DeleteTargetGroup", 1).await?;
        if state
            .rules_naming(target_group_arn)
            .any(|r| r.target_group_arn == target_group_arn && r.fixed_response.is_none())
        {
            return Err(CloudError::new(
                CloudErrorKind::Conflict,
                "DeleteTargetGroup",
                "ResourceInUse",
                "target group is in use by a listener rule",
            ));
        }
        state.target_groups.remove(target_group_arn);
        Ok(())
    }

    async fn describe_rules(&self, listener_arn: &str) -> CloudResult<Vec<RuleInfo>> {
        let state = self.enter("DescribeRules", 1).await?;
        Ok(state
            .listener_rules(listener_arn)
            .map(|r| RuleInfo {
                arn: r.arn.clone(),
                priority: Some(r.priority),
                path_patterns: match &r.condition {
                    RuleMatch::Path(path) | RuleMatch::Warm(path) => vec![path.clone()],
                    RuleMatch::Host(_) => Vec::new(),
                },
                host_headers: match &r.condition {
                    RuleMatch::Host(host) => vec![host.clone()],
                    RuleMatch::Path(_) | RuleMatch::Warm(_) => Vec::new(),
                },
                source_ips: match &r.condition {
                    RuleMatch::Warm(_) => vec![crate::model::WARM_SOURCE_IP.to_string()],
                    RuleMatch::Path(_) | RuleMatch::Host(_) => Vec::new(),
                },
                target_group_arns: vec![r.target_group_arn.clone()],
            })
            .collect())
    }

    async fn create_rule(
        &self,
        listener_arn: &str,
        priority: u32,
        condition: &RuleMatch,
        target_group_arn: &str,
        new_tags: &Tags,
    ) -> CloudResult<String> {
        let mut state = self.enter("CreateRule", 1).await?;
        if state
            .listener_rules(listener_arn)
            .any(|r| r.priority == priority)
        {
            return Err(CloudError::new(
                CloudErrorKind::Conflict,
                "CreateRule",
                "PriorityInUse",
                format!("priority {priority} is in use"),
            ));
        }
        if !state.target_groups.contains_key(target_group_arn) {
            return Err(not_found("CreateRule", target_group_arn));
        }
        elb_limits::check_new_rule(&state, listener_arn, target_group_arn)?;
        let active_at = self.effect_at(state.now, |p| p.effects.rule_active);
        state.next_id += 1;
        let arn = format!("{listener_arn}/rule/{:08}", state.next_id);
        state.index_rule(target_group_arn, &arn, true);
        state.rules.insert(
            arn.clone(),
            FakeRule {
                arn: arn.clone(),
                listener_arn: listener_arn.to_string(),
                priority,
                condition: condition.clone(),
                target_group_arn: target_group_arn.to_string(),
                fixed_response: None,
                tags: new_tags.clone(),
                active_at,
                checks_since: active_at,
            },
        );
        Ok(arn)
    }

    async fn delete_rule(&self, rule_arn: &str) -> CloudResult<()> {
        let mut state = self.enter("DeleteRule", 1).await?;
        if let Some(rule) = state.rules.remove(rule_arn) {
            state.index_rule(&rule.target_group_arn, rule_arn, false);
        }
        Ok(())
    }

    async fn list_pool_target_groups(&self) -> CloudResult<Vec<PoolResource>> {
        let state = self.enter("DescribeTargetGroups", 1).await?;
        Ok(state
            .target_groups
            .values()
            .filter(|t| self.is_ours(&t.tags))
            .map(|t| PoolResource {
                arn: t.arn.clone(),
                name: t.name.clone(),
                created_at: None,
                tags: t.tags.clone(),
            })
            .collect())
    }

    async fn list_pool_rules(&self, listener_arn: &str) -> CloudResult<Vec<PoolResource>> {
        let state = self.enter("DescribeRules", 1).await?;
        Ok(state
            .listener_rules(listener_arn)
            .filter(|r| self.is_ours(&r.tags))
            .map(|r| PoolResource {
                arn: r.arn.clone(),
                name: r.condition.value().to_string(),
                created_at: None,
                tags: r.tags.clone(),
            })
            .collect())
    }

    async fn list_pool_secrets(&self) -> CloudResult<Vec<PoolResource>> {
        let state = self.enter("ListSecrets", 1).await?;
        Ok(state
            .secrets
            .iter()
            .filter(|(_, s)| self.is_ours(&s.tags))
            .map(|(name, s)| PoolResource {
                arn: s.arn.clone(),
                name: name.clone(),
                created_at: Some(s.created_at),
                tags: s.tags.clone(),
            })
            .collect())
    }

    async fn set_rule_action(&self, rule_arn: &str, action: &RuleAction) -> CloudResult<()> {
        self.modify_rule_action(rule_arn, action).await
    }

    async fn set_rule_match(&self, rule_arn: &str, condition: &RuleMatch) -> CloudResult<()> {
        self.modify_rule_match(rule_arn, condition).await
    }

    async fn tag_elb_resources(&self, arns: &[String], new_tags: &Tags) -> CloudResult<()> {
        self.add_elb_tags(arns, new_tags).await
    }

    async fn create_volume(&self, request: &VolumeRequest) -> CloudResult<String> {
        self.fake_create_volume(request).await
    }

    async fn describe_volume(&self, volume_id: &str) -> CloudResult<Option<CloudVolume>> {
        self.fake_describe_volume(volume_id).await
    }

    async fn list_pool_volumes(&self, owner: Option<&str>) -> CloudResult<Vec<CloudVolume>> {
        self.fake_list_pool_volumes(owner).await
    }

    async fn attach_volume(
        &self,
        volume_id: &str,
        instance: &InstanceId,
        device: &str,
    ) -> CloudResult<()> {
        self.fake_attach_volume(volume_id, instance, device).await
    }

    async fn detach_volume(
        &self,
        volume_id: &str,
        instance: &InstanceId,
        force: bool,
    ) -> CloudResult<()> {
        self.fake_detach_volume(volume_id, instance, force).await
    }

    async fn delete_volume(&self, volume_id: &str) -> CloudResult<()> {
        self.fake_delete_volume(volume_id).await
    }

    async fn create_snapshot(&self, volume_id: &str, tags: &Tags) -> CloudResult<String> {
        self.fake_create_snapshot(volume_id, tags).await
    }

    async fn list_pool_snapshots(&self, owner: Option<&str>) -> CloudResult<Vec<CloudSnapshot>> {
        self.fake_list_pool_snapshots(owner).await
    }

    async fn snapshot_state(&self, snapshot_id: &str) -> CloudResult<Option<SnapshotState>> {
        self.fake_snapshot_state(snapshot_id).await
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> CloudResult<()> {
        self.fake_delete_snapshot(snapshot_id).await
    }

    async fn subnet_zones(&self, subnet_ids: &[String]) -> CloudResult<BTreeMap<String, String>> {
        let _state = self.enter("DescribeSubnets", 1).await?;
        Ok(subnet_ids
            .iter()
            .map(|s| (s.clone(), self.zone_of(s)))
            .collect())
    }

    async fn instance_vcpus(
        &self,
        instance_types: &[String],
    ) -> CloudResult<BTreeMap<String, u32>> {
        self.fake_instance_vcpus(instance_types).await
    }

    async fn spot_prices(
        &self,
        instance_types: &[String],
        zones: &[String],
    ) -> CloudResult<Vec<crate::model::cost::SpotPrice>> {
        self.fake_spot_prices(instance_types, zones).await
    }

    async fn quota_values(&self, quotas: &[Quota]) -> CloudResult<BTreeMap<Quota, f64>> {
        self.fake_quota_values(quotas).await
    }

    async fn image_digest(&self, image: &crate::image::EcrImage) -> CloudResult<String> {
        self.fake_image_digest(image).await
    }

    async fn request_counts(
        &self,
        groups: &[TargetGroupMetric],
        _window: std::time::Duration,
    ) -> CloudResult<Vec<f64>> {
        self.fake_request_counts(groups).await
    }

    fn retry_meter(&self) -> Option<Arc<RetryMeter>> {
        self.sim.as_ref().map(|sim| sim.retries.clone())
    }
}

pub(super) fn not_found(operation: &'static str, what: &str) -> CloudError {
    CloudError::new(
        CloudErrorKind::NotFound,
        operation,
        "NotFound",
        format!("{what} not found"),
    )
}

impl FakeCloud {
    /// The ARN CreateTargetGroup gives the group named `name` (one name, one group).
    fn target_group_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:elasticloadbalancing:{}:123456789012:targetgroup/{name}/0123456789abcdef",
            self.region
        )
    }
}
