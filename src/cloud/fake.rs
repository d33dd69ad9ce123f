//! The in-memory fake cloud: instances, commands, secrets, target groups and rules, with injected
//! errors and a call log.
//!
//! Owns: a faithful-enough model of the AWS behaviour spotpool relies on (idempotent deletes,
//! PriorityInUse, a target group in use by a rule cannot be deleted, InvocationDoesNotExist right
//! after SendCommand). Must not: sleep or read the clock; tests drive it step by step.

use super::{
    Cloud, CloudError, CloudErrorKind, CloudInstance, CloudResult, CommandStatus, LaunchRequest,
    Lifecycle, PoolResource, RuleInfo, Tags, tags,
};
use crate::model::{InstanceId, InstanceStatus, Millis};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

#[derive(Debug, Clone)]
pub struct FakeInstance {
    pub id: InstanceId,
    pub lifecycle: Lifecycle,
    pub instance_type: String,
    pub subnet_id: String,
    pub tags: Tags,
    pub launched_at: Millis,
    pub spot: bool,
}

#[derive(Debug, Clone)]
pub struct FakeCommand {
    pub instance: InstanceId,
    pub comment: String,
    pub script: String,
    /// Answers still to give before the final one (the first is InvocationDoesNotExist-like).
    pub pending_polls: u32,
    pub outcome: CommandStatus,
}

#[derive(Debug, Clone)]
pub struct FakeSecret {
    pub arn: String,
    pub value: String,
    pub tags: Tags,
    pub created_at: Millis,
}

#[derive(Debug, Clone)]
pub struct FakeTargetGroup {
    pub arn: String,
    pub name: String,
    pub port: u16,
    pub tags: Tags,
    pub targets: Vec<InstanceId>,
}

#[derive(Debug, Clone)]
pub struct FakeRule {
    pub arn: String,
    pub listener_arn: String,
    pub priority: u32,
    pub path_pattern: String,
    pub target_group_arn: String,
    pub tags: Tags,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    instances: BTreeMap<String, FakeInstance>,
    client_tokens: HashMap<String, Vec<InstanceId>>,
    commands: HashMap<String, FakeCommand>,
    secrets: BTreeMap<String, FakeSecret>,
    target_groups: BTreeMap<String, FakeTargetGroup>,
    rules: BTreeMap<String, FakeRule>,
    /// Errors to return on the next calls of an operation, in order.
    fail_next: HashMap<&'static str, VecDeque<CloudErrorKind>>,
    /// Operations that fail on every call until cleared.
    fail_always: HashMap<&'static str, CloudErrorKind>,
    /// Commands whose script contains the key end with the given outcome.
    command_outcomes: Vec<(String, CommandStatus)>,
    /// (instance type, subnet) offerings whose spot launches fail with a capacity error.
    no_capacity: Vec<(String, String)>,
    /// Instances the next DescribeInstances leaves out (an incomplete, eventually consistent
    /// listing).
    hidden_once: Vec<InstanceId>,
    /// Operations whose next call takes effect but whose response is lost (a timeout).
    lost_responses: Vec<&'static str>,
    /// Instances the load balancer reports unhealthy.
    unhealthy: Vec<InstanceId>,
    launch_tokens: Vec<String>,
    calls: Vec<&'static str>,
    now: Millis,
}

/// The fake. Cheap to build; share it with `Arc` between the reconciler and the test.
#[derive(Debug)]
pub struct FakeCloud {
    pool: String,
    region: String,
    /// How many polls a command answers `Pending` before its outcome.
    command_polls: u32,
    state: Mutex<State>,
}

impl Default for FakeCloud {
    fn default() -> Self {
        FakeCloud::new("spotpool")
    }
}

impl FakeCloud {
    pub fn new(pool: &str) -> FakeCloud {
        FakeCloud {
            pool: pool.to_string(),
            region: "us-east-1".into(),
            command_polls: 1,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking test thread poisons the lock; the state itself is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the next `times` calls of `operation` fail with `kind`.
    pub fn fail_next(&self, operation: &'static str, kind: CloudErrorKind, times: usize) {
        let mut state = self.lock();
        let queue = state.fail_next.entry(operation).or_default();
        queue.extend(std::iter::repeat_n(kind, times));
    }

    /// Makes every call of `operation` fail with `kind` (None clears it).
    pub fn fail_always(&self, operation: &'static str, kind: Option<CloudErrorKind>) {
        let mut state = self.lock();
        match kind {
            Some(kind) => state.fail_always.insert(operation, kind),
            None => state.fail_always.remove(operation),
        };
    }

    /// Commands whose script contains `key` end with `outcome` instead of success.
    pub fn command_outcome(&self, key: &str, outcome: CommandStatus) {
        self.lock()
            .command_outcomes
            .push((key.to_string(), outcome));
    }

    /// Sets the fake's notion of time (launch times).
    pub fn set_now(&self, now: Millis) {
        self.lock().now = now;
    }

    /// Every operation called so far, in order.
    pub fn calls(&self) -> Vec<&'static str> {
        self.lock().calls.clone()
    }

    pub fn count_calls(&self, operation: &str) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| **c == operation)
            .count()
    }

    /// The ClientToken of every RunInstances call that reached the fake, in order.
    pub fn launch_tokens(&self) -> Vec<String> {
        self.lock().launch_tokens.clone()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Instances that are not terminated or shutting down.
    pub fn live_instances(&self) -> Vec<FakeInstance> {
        self.lock()
            .instances
            .values()
            .filter(|i| !i.lifecycle.is_gone())
            .cloned()
            .collect()
    }

    pub fn instance(&self, id: &InstanceId) -> Option<FakeInstance> {
        self.lock().instances.get(&id.0).cloned()
    }

    pub fn secrets(&self) -> Vec<(String, FakeSecret)> {
        self.lock()
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn target_groups(&self) -> Vec<FakeTargetGroup> {
        self.lock().target_groups.values().cloned().collect()
    }

    pub fn rules(&self) -> Vec<FakeRule> {
        self.lock().rules.values().cloned().collect()
    }

    pub fn commands(&self) -> Vec<FakeCommand> {
        self.lock().commands.values().cloned().collect()
    }

    /// Spot launches of `instance_type` in `subnet_id` fail with InsufficientInstanceCapacity.
    pub fn fail_capacity(&self, instance_type: &str, subnet_id: &str) {
        self.lock()
            .no_capacity
            .push((instance_type.to_string(), subnet_id.to_string()));
    }

    /// Leaves `id` out of the next DescribeInstances only.
    pub fn hide_from_next_describe(&self, id: &InstanceId) {
        self.lock().hidden_once.push(id.clone());
    }

    /// The next call of `operation` takes effect, but the caller sees a timeout (supported by
    /// RunInstances, where a lost response is the classic over-launch).
    pub fn lose_next_response(&self, operation: &'static str) {
        self.lock().lost_responses.push(operation);
    }

    /// The load balancer reports `id` unhealthy (or healthy again) in every target group.
    pub fn set_unhealthy(&self, id: &InstanceId, unhealthy: bool) {
        let mut state = self.lock();
        state.unhealthy.retain(|i| i != id);
        if unhealthy {
            state.unhealthy.push(id.clone());
        }
    }

    /// Terminates an instance behind the daemon's back (a spot reclaim, an operator).
    pub fn reclaim(&self, id: &InstanceId) {
        if let Some(instance) = self.lock().instances.get_mut(&id.0) {
            instance.lifecycle = Lifecycle::Terminated;
        }
    }

    /// Records the call and returns an injected error, if any.
    fn enter(&self, operation: &'static str) -> CloudResult<std::sync::MutexGuard<'_, State>> {
        let mut state = self.lock();
        state.calls.push(operation);
        let injected = state
            .fail_next
            .get_mut(operation)
            .and_then(VecDeque::pop_front)
            .or_else(|| state.fail_always.get(operation).copied());
        match injected {
            Some(kind) => Err(CloudError::new(
                kind,
                operation,
                "Injected",
                "injected by the test",
            )),
            None => Ok(state),
        }
    }

    fn is_ours(&self, tags: &Tags) -> bool {
        tags.get(tags::POOL) == Some(&self.pool)
    }

    fn instance_arn(&self, id: &str) -> String {
        format!("arn:aws:ec2:{}:123456789012:instance/{id}", self.region)
    }
}

fn not_found(operation: &'static str, what: &str) -> CloudError {
    CloudError::new(
        CloudErrorKind::NotFound,
        operation,
        "NotFound",
        format!("{what} not found"),
    )
}

#[async_trait::async_trait]
impl Cloud for FakeCloud {
    async fn describe_pool_instances(&self) -> CloudResult<Vec<CloudInstance>> {
        let mut state = self.enter("DescribeInstances")?;
        let hidden = std::mem::take(&mut state.hidden_once);
        let mut out = Vec::new();
        for instance in state.instances.values_mut() {
            if hidden.contains(&instance.id) {
                continue;
            }
            // Shutting down lasts one describe, then the instance is terminated and unlisted.
            if instance.lifecycle == Lifecycle::ShuttingDown {
                instance.lifecycle = Lifecycle::Terminated;
                continue;
            }
            if instance.lifecycle == Lifecycle::Terminated
                || instance.tags.get(tags::POOL) != Some(&self.pool)
            {
                continue;
            }
            out.push(CloudInstance {
                id: instance.id.clone(),
                arn: self.instance_arn(&instance.id.0),
                lifecycle: instance.lifecycle,
                instance_type: instance.instance_type.clone(),
                availability_zone: format!("{}-{}", self.region, instance.subnet_id),
                private_ip: Some("10.0.0.10".into()),
                launched_at: instance.launched_at,
                tier: instance.tags.get(tags::TIER).cloned(),
                status: instance
                    .tags
                    .get(tags::STATUS)
                    .and_then(|s| InstanceStatus::parse(s)),
                user_id: instance.tags.get(tags::USER_ID).cloned(),
            });
        }
        Ok(out)
    }

    async fn launch_instances(&self, request: &LaunchRequest) -> CloudResult<Vec<InstanceId>> {
        let mut state = self.enter("RunInstances")?;
        state.launch_tokens.push(request.client_token.clone());
        if let Some(ids) = state.client_tokens.get(&request.client_token) {
            return Ok(ids.clone());
        }
        let offering = (request.instance_type.clone(), request.subnet_id.clone());
        if request.spot && state.no_capacity.contains(&offering) {
            return Err(CloudError::new(
                CloudErrorKind::Capacity,
                "RunInstances",
                "InsufficientInstanceCapacity",
                format!("no spot capacity for {} in {}", offering.0, offering.1),
            ));
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
            state.instances.insert(
                id.0.clone(),
                FakeInstance {
                    id: id.clone(),
                    lifecycle: Lifecycle::Running,
                    instance_type: request.instance_type.clone(),
                    subnet_id: request.subnet_id.clone(),
                    tags,
                    launched_at,
                    spot: request.spot,
                },
            );
            ids.push(id);
        }
        state
            .client_tokens
            .insert(request.client_token.clone(), ids.clone());
        if let Some(at) = state
            .lost_responses
            .iter()
            .position(|o| *o == "RunInstances")
        {
            state.lost_responses.remove(at);
            return Err(CloudError::new(
                CloudErrorKind::Transient,
                "RunInstances",
                "Timeout",
                "the response was lost (injected)",
            ));
        }
        Ok(ids)
    }

    async fn tag_instance(&self, instance: &InstanceId, new_tags: &Tags) -> CloudResult<()> {
        let mut state = self.enter("CreateTags")?;
        let found = state
            .instances
            .get_mut(&instance.0)
            .ok_or_else(|| not_found("CreateTags", &instance.0))?;
        found.tags.extend(new_tags.clone());
        Ok(())
    }

    async fn untag_instance(&self, instance: &InstanceId, keys: &[&str]) -> CloudResult<()> {
        let mut state = self.enter("DeleteTags")?;
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
        let mut state = self.enter("TerminateInstances")?;
        for id in instances {
            if let Some(instance) = state.instances.get_mut(&id.0)
                && !instance.lifecycle.is_gone()
            {
                instance.lifecycle = Lifecycle::ShuttingDown;
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
        let mut state = self.enter("SendCommand")?;
        match state.instances.get(&instance.0) {
            Some(i) if i.lifecycle == Lifecycle::Running => {}
            _ => return Err(not_found("SendCommand", &instance.0)),
        }
        let outcome = state
            .command_outcomes
            .iter()
            .find(|(key, _)| script.contains(key.as_str()))
            .map(|(_, outcome)| outcome.clone())
            .unwrap_or(CommandStatus::Success);
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
            },
        );
        Ok(id)
    }

    async fn command_status(
        &self,
        command_id: &str,
        instance: &InstanceId,
    ) -> CloudResult<CommandStatus> {
        let mut state = self.enter("GetCommandInvocation")?;
        let command = state
            .commands
            .get_mut(command_id)
            .filter(|c| c.instance == *instance)
            .ok_or_else(|| not_found("GetCommandInvocation", command_id))?;
        if command.pending_polls > 0 {
            command.pending_polls -= 1;
            return Ok(CommandStatus::Pending);
        }
        Ok(command.outcome.clone())
    }

    async fn put_secret(&self, name: &str, value: &str, new_tags: &Tags) -> CloudResult<String> {
        let mut state = self.enter("PutSecret")?;
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
        let mut state = self.enter("PutSecretValue")?;
        let secret = state
            .secrets
            .values_mut()
            .find(|s| s.arn == secret_id)
            .ok_or_else(|| not_found("PutSecretValue", secret_id))?;
        secret.value = value.to_string();
        Ok(())
    }

    async fn tag_secret(&self, secret_id: &str, new_tags: &Tags) -> CloudResult<()> {
        let mut state = self.enter("TagResource")?;
        let secret = state
            .secrets
            .values_mut()
            .find(|s| s.arn == secret_id)
            .ok_or_else(|| not_found("TagResource", secret_id))?;
        secret.tags.extend(new_tags.clone());
        Ok(())
    }

    async fn untag_secret(&self, secret_id: &str, keys: &[&str]) -> CloudResult<()> {
        let mut state = self.enter("UntagResource")?;
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
        let mut state = self.enter("DeleteSecret")?;
        state
            .secrets
            .retain(|name, s| s.arn != secret_id && name != secret_id);
        Ok(())
    }

    async fn create_target_group(
        &self,
        name: &str,
        port: u16,
        new_tags: &Tags,
    ) -> CloudResult<String> {
        let mut state = self.enter("CreateTargetGroup")?;
        if name.len() > 32 {
            return Err(CloudError::new(
                CloudErrorKind::Fatal,
                "CreateTargetGroup",
                "ValidationError",
                "target group name longer than 32 characters",
            ));
        }
        if let Some(existing) = state.target_groups.values().find(|t| t.name == name) {
            return Ok(existing.arn.clone());
        }
        let arn = format!(
            "arn:aws:elasticloadbalancing:{}:123456789012:targetgroup/{name}/0123456789abcdef",
            self.region
        );
        state.target_groups.insert(
            arn.clone(),
            FakeTargetGroup {
                arn: arn.clone(),
                name: name.to_string(),
                port,
                tags: new_tags.clone(),
                targets: Vec::new(),
            },
        );
        Ok(arn)
    }

    async fn find_target_group(&self, name: &str) -> CloudResult<Option<String>> {
        let state = self.enter("DescribeTargetGroups")?;
        Ok(state
            .target_groups
            .values()
            .find(|t| t.name == name)
            .map(|t| t.arn.clone()))
    }

    async fn register_target(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        _port: u16,
    ) -> CloudResult<()> {
        let mut state = self.enter("RegisterTargets")?;
        let group = state
            .target_groups
            .get_mut(target_group_arn)
            .ok_or_else(|| not_found("RegisterTargets", target_group_arn))?;
        if !group.targets.contains(instance) {
            group.targets.push(instance.clone());
        }
        Ok(())
    }

    async fn target_healthy(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        _port: u16,
    ) -> CloudResult<bool> {
        let state = self.enter("DescribeTargetHealth")?;
        let registered = state
            .target_groups
            .get(target_group_arn)
            .is_some_and(|g| g.targets.contains(instance));
        let running = state
            .instances
            .get(&instance.0)
            .is_some_and(|i| i.lifecycle == Lifecycle::Running);
        Ok(registered && running && !state.unhealthy.contains(instance))
    }

    async fn deregister_target(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        _port: u16,
    ) -> CloudResult<()> {
        let mut state = self.enter("DeregisterTargets")?;
        if let Some(group) = state.target_groups.get_mut(target_group_arn) {
            group.targets.retain(|t| t != instance);
        }
        Ok(())
    }

    async fn delete_target_group(&self, target_group_arn: &str) -> CloudResult<()> {
        let mut state = self.enter("DeleteTargetGroup")?;
        if state
            .rules
            .values()
            .any(|r| r.target_group_arn == target_group_arn)
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
        let state = self.enter("DescribeRules")?;
        Ok(state
            .rules
            .values()
            .filter(|r| r.listener_arn == listener_arn)
            .map(|r| RuleInfo {
                arn: r.arn.clone(),
                priority: Some(r.priority),
                path_patterns: vec![r.path_pattern.clone()],
                target_group_arns: vec![r.target_group_arn.clone()],
            })
            .collect())
    }

    async fn create_rule(
        &self,
        listener_arn: &str,
        priority: u32,
        path_pattern: &str,
        target_group_arn: &str,
        new_tags: &Tags,
    ) -> CloudResult<String> {
        let mut state = self.enter("CreateRule")?;
        if state
            .rules
            .values()
            .any(|r| r.listener_arn == listener_arn && r.priority == priority)
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
        state.next_id += 1;
        let arn = format!("{listener_arn}/rule/{:08}", state.next_id);
        state.rules.insert(
            arn.clone(),
            FakeRule {
                arn: arn.clone(),
                listener_arn: listener_arn.to_string(),
                priority,
                path_pattern: path_pattern.to_string(),
                target_group_arn: target_group_arn.to_string(),
                tags: new_tags.clone(),
            },
        );
        Ok(arn)
    }

    async fn delete_rule(&self, rule_arn: &str) -> CloudResult<()> {
        let mut state = self.enter("DeleteRule")?;
        state.rules.remove(rule_arn);
        Ok(())
    }

    async fn list_pool_target_groups(&self) -> CloudResult<Vec<PoolResource>> {
        let state = self.enter("DescribeTargetGroups")?;
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
        let state = self.enter("DescribeRules")?;
        Ok(state
            .rules
            .values()
            .filter(|r| r.listener_arn == listener_arn && self.is_ours(&r.tags))
            .map(|r| PoolResource {
                arn: r.arn.clone(),
                name: r.path_pattern.clone(),
                created_at: None,
                tags: r.tags.clone(),
            })
            .collect())
    }

    async fn list_pool_secrets(&self) -> CloudResult<Vec<PoolResource>> {
        let state = self.enter("ListSecrets")?;
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
}
