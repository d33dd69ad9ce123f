//! The in-memory fake cloud: instances, commands, secrets, target groups and rules, with injected
//! errors and a call log.
//!
//! Owns: a faithful-enough model of the AWS behaviour spotpool relies on (idempotent deletes,
//! PriorityInUse, a target group in use by a rule cannot be deleted, InvocationDoesNotExist right
//! after SendCommand). Must not: sleep or read the clock in plain mode; retry anything but the
//! simulated SDK's attempts in simulated mode.
//!
//! Two modes:
//! - **Plain** ([`FakeCloud::new`]): every call answers at once and every effect is immediate
//!   (an instance runs at launch, a command answers `Pending` for one poll, a terminated instance
//!   is gone after one listing). It never sleeps or reads the clock; tests drive it step by step
//!   and set its time with [`FakeCloud::set_now`].
//! - **Simulated** ([`FakeCloud::simulated`]): a [`Profile`] (`aws-profile.md` as data) played out
//!   on tokio's clock, paused in tests (`fake/sim.rs`). Each logical call goes through the
//!   simulated SDK (attempts with latencies, server-side quota buckets, injected 5xx and
//!   throttles, jittered backoff) before its effect applies, and effects complete after their
//!   own latencies: an instance is `Pending`, then `Running`, then its SSM agent comes online
//!   (SendCommand fails `NotFound` before); a command is picked up and runs for a while
//!   (GetCommandInvocation answers `Pending` until then, and for its first 0.5 s); a terminated
//!   instance is `ShuttingDown`, still listed, until it is `Terminated`; a rule becomes active
//!   after its latency, and a registered target healthy after its target group's health check
//!   settings (interval × healthy threshold), counted from the later of its registration and the
//!   first rule forwarding to the group ([`FakeCloud::routable_at`]).
//!
//! In both modes, as on AWS, a target group that no rule uses is not health-checked: its targets
//! are `unused`, never healthy. [`FakeCloud::now`]
//!   is the clock to give the daemon, [`FakeCloud::sim_stats`] the counters for a report.
//!
//! The effects are timestamps settled lazily whenever the state is locked, so a later
//! simulation (a spot interruption: a warning, then termination 120 s later) adds a timeline
//! entry rather than a background task.

mod sim;

pub use sim::SimStats;

use super::profile::Profile;
use super::{
    Cloud, CloudError, CloudErrorKind, CloudInstance, CloudResult, CommandStatus, HealthCheck,
    LaunchRequest, Lifecycle, PoolResource, RuleInfo, Tags, tags,
};
use crate::model::{InstanceId, InstanceStatus, Millis};
use sim::{Sim, Timeline};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

/// The simulated clock's origin: 2023-11-14T22:13:20Z, the same as the tests' injected clocks.
pub const SIM_EPOCH: Millis = 1_700_000_000_000;

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
    /// Plain mode only.
    pub pending_polls: u32,
    pub outcome: CommandStatus,
    pub sent_at: Millis,
    /// Simulated mode: when the command has run (picked up, then its run time).
    pub done_at: Option<Millis>,
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
    /// The health check it was created with.
    pub health: HealthCheck,
    /// When each target (by instance id) was registered.
    pub registered_at: BTreeMap<String, Millis>,
}

#[derive(Debug, Clone)]
pub struct FakeRule {
    pub arn: String,
    pub listener_arn: String,
    pub priority: u32,
    pub path_pattern: String,
    pub target_group_arn: String,
    pub tags: Tags,
    /// When the rule starts routing.
    pub active_at: Millis,
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
    /// Simulated mode: when each instance's effects complete.
    timelines: HashMap<String, Timeline>,
}

impl State {
    /// Completes every effect due by `now` (simulated mode).
    fn settle(&mut self, now: Millis) {
        self.now = now;
        for (id, timeline) in &self.timelines {
            let Some(instance) = self.instances.get_mut(id) else {
                continue;
            };
            match instance.lifecycle {
                Lifecycle::Pending if now >= timeline.running_at => {
                    instance.lifecycle = Lifecycle::Running;
                }
                Lifecycle::ShuttingDown if timeline.terminated_at.is_some_and(|at| now >= at) => {
                    instance.lifecycle = Lifecycle::Terminated;
                }
                _ => {}
            }
        }
    }
}

/// When each target of a group passes its health checks: AWS checks a group only once a rule
/// forwards to it, so a target is healthy `interval × healthy threshold` after the later of its
/// registration and the first such rule's activation (`timed`), or at that moment (plain mode).
/// Targets of a group no rule uses are missing: they are `unused`, never healthy.
fn group_healthy_from(state: &State, group_arn: &str, timed: bool) -> BTreeMap<String, Millis> {
    let Some(group) = state.target_groups.get(group_arn) else {
        return BTreeMap::new();
    };
    let Some(checks_start) = state
        .rules
        .values()
        .filter(|rule| rule.target_group_arn == group_arn)
        .map(|rule| rule.active_at)
        .min()
    else {
        return BTreeMap::new();
    };
    let wait = if timed {
        group.health.time_to_healthy().as_millis() as Millis
    } else {
        0
    };
    group
        .targets
        .iter()
        .map(|target| {
            let registered = group.registered_at.get(&target.0).copied().unwrap_or(0);
            (target.0.clone(), registered.max(checks_start) + wait)
        })
        .collect()
}

/// The fake. Cheap to build; share it with `Arc` between the reconciler and the test.
#[derive(Debug)]
pub struct FakeCloud {
    pool: String,
    region: String,
    /// How many polls a command answers `Pending` before its outcome (plain mode).
    command_polls: u32,
    state: Mutex<State>,
    /// Simulated mode's profile, draws and counters.
    sim: Option<Sim>,
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
            sim: None,
        }
    }

    /// A fake that plays out `profile` on tokio's clock, drawing from a PRNG seeded with `seed`
    /// (see the module docs). Build it inside the runtime whose clock it should follow; its
    /// clock starts at [`SIM_EPOCH`]. The profile's capacity errors apply from the start.
    pub fn simulated(pool: &str, profile: Profile, seed: u64) -> FakeCloud {
        let mut fake = FakeCloud::new(pool);
        {
            let state = fake.state.get_mut().unwrap_or_else(|e| e.into_inner());
            state.no_capacity = profile.capacity_errors.clone();
            state.now = SIM_EPOCH;
        }
        fake.sim = Some(Sim::new(profile, seed, SIM_EPOCH));
        fake
    }

    /// The fake's clock in epoch milliseconds: simulated time in simulated mode, the time set
    /// with [`FakeCloud::set_now`] otherwise. Give it to the daemon as its clock.
    pub fn now(&self) -> Millis {
        match &self.sim {
            Some(sim) => sim.now(),
            None => self.lock().now,
        }
    }

    /// The profile of a simulated fake.
    pub fn profile(&self) -> Option<&Profile> {
        self.sim.as_ref().map(|sim| &sim.profile)
    }

    /// The seed of a simulated fake.
    pub fn seed(&self) -> Option<u64> {
        self.sim.as_ref().map(|sim| sim.seed)
    }

    /// What a simulated run did so far: attempts, retries, faults, quota rejections, the lowest
    /// level of every server-side bucket.
    pub fn sim_stats(&self) -> Option<SimStats> {
        self.sim.as_ref().map(Sim::stats)
    }

    /// When the rule for `path_pattern` routes to a healthy target: the later of the rule's
    /// activation and its target's first passing health check. None without such a rule.
    pub fn routable_at(&self, path_pattern: &str) -> Option<Millis> {
        let state = self.lock();
        let rule = state
            .rules
            .values()
            .find(|r| r.path_pattern == path_pattern)?;
        let healthy = group_healthy_from(&state, &rule.target_group_arn, self.sim.is_some())
            .into_values()
            .min()?;
        Some(rule.active_at.max(healthy))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking test thread poisons the lock; the state itself is still consistent.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sim) = &self.sim {
            state.settle(sim.now());
        }
        state
    }

    /// `now` plus a draw of `latency` in simulated mode; `now` in plain mode.
    fn effect_at(
        &self,
        now: Millis,
        latency: impl Fn(&Profile) -> super::profile::Latency,
    ) -> Millis {
        match &self.sim {
            Some(sim) => sim.after(now, latency(&sim.profile)),
            None => now,
        }
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

    /// Sets the fake's notion of time (launch times). Ignored in simulated mode, whose time is
    /// tokio's.
    pub fn set_now(&self, now: Millis) {
        if self.sim.is_none() {
            self.lock().now = now;
        }
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

    /// Every instance ever launched, terminated ones included.
    pub fn all_instances(&self) -> Vec<FakeInstance> {
        self.lock().instances.values().cloned().collect()
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

    /// Plays out the call in simulated mode (its attempts, latencies and faults; see
    /// `fake/sim.rs`), then records it and returns an error injected by the test, if any. In plain
    /// mode it returns at once, without yielding.
    async fn enter(
        &self,
        operation: &'static str,
        count: u32,
    ) -> CloudResult<std::sync::MutexGuard<'_, State>> {
        if let Some(sim) = &self.sim {
            sim.call(operation, count).await?;
        }
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
        let mut state = self.enter("DescribeInstances", 1).await?;
        let hidden = std::mem::take(&mut state.hidden_once);
        let mut out = Vec::new();
        for instance in state.instances.values_mut() {
            if hidden.contains(&instance.id) {
                continue;
            }
            // Plain mode: shutting down lasts one describe, then the instance is terminated and
            // unlisted. Simulated mode lists it until its termination completes.
            if instance.lifecycle == Lifecycle::ShuttingDown && self.sim.is_none() {
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
                subnet_id: Some(instance.subnet_id.clone()),
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
        let mut state = self.enter("RunInstances", request.count).await?;
        state.launch_tokens.push(request.client_token.clone());
        if let Some(ids) = state.client_tokens.get(&request.client_token) {
            return Ok(ids.clone());
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
        let mut state = self.enter("CreateTags", 1).await?;
        let found = state
            .instances
            .get_mut(&instance.0)
            .ok_or_else(|| not_found("CreateTags", &instance.0))?;
        found.tags.extend(new_tags.clone());
        Ok(())
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
        let agent_online = state
            .timelines
            .get(&instance.0)
            .is_none_or(|t| now >= t.agent_online_at);
        match state.instances.get(&instance.0) {
            Some(i) if i.lifecycle == Lifecycle::Running && agent_online => {}
            _ => return Err(not_found("SendCommand", &instance.0)),
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
                health: health.clone(),
                registered_at: BTreeMap::new(),
            },
        );
        Ok(arn)
    }

    async fn find_target_group(&self, name: &str) -> CloudResult<Option<String>> {
        let state = self.enter("DescribeTargetGroups", 1).await?;
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
        let mut state = self.enter("RegisterTargets", 1).await?;
        let now = state.now;
        let group = state
            .target_groups
            .get_mut(target_group_arn)
            .ok_or_else(|| not_found("RegisterTargets", target_group_arn))?;
        if !group.targets.contains(instance) {
            group.targets.push(instance.clone());
            group.registered_at.insert(instance.0.clone(), now);
        }
        Ok(())
    }

    async fn target_healthy(
        &self,
        target_group_arn: &str,
        instance: &InstanceId,
        _port: u16,
    ) -> CloudResult<bool> {
        let state = self.enter("DescribeTargetHealth", 1).await?;
        // Registered in a group a rule uses, and past the health checks' interval × threshold
        // (at once in plain mode).
        let registered = group_healthy_from(&state, target_group_arn, self.sim.is_some())
            .get(&instance.0)
            .is_some_and(|at| *at <= state.now);
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
        let mut state = self.enter("DeregisterTargets", 1).await?;
        if let Some(group) = state.target_groups.get_mut(target_group_arn) {
            group.targets.retain(|t| t != instance);
        }
        Ok(())
    }

    async fn delete_target_group(&self, target_group_arn: &str) -> CloudResult<()> {
        let mut state = self.enter("DeleteTargetGroup", 1).await?;
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
        let state = self.enter("DescribeRules", 1).await?;
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
        let mut state = self.enter("CreateRule", 1).await?;
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
        if let Some(sim) = &self.sim {
            let limit = sim.profile.limits.rules_per_listener;
            let rules = state
                .rules
                .values()
                .filter(|r| r.listener_arn == listener_arn)
                .count();
            if rules >= limit {
                return Err(CloudError::new(
                    CloudErrorKind::Fatal,
                    "CreateRule",
                    "TooManyRules",
                    format!("the listener has {rules} rules; the limit is {limit}"),
                ));
            }
        }
        let active_at = self.effect_at(state.now, |p| p.effects.rule_active);
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
                active_at,
            },
        );
        Ok(arn)
    }

    async fn delete_rule(&self, rule_arn: &str) -> CloudResult<()> {
        let mut state = self.enter("DeleteRule", 1).await?;
        state.rules.remove(rule_arn);
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

    fn retry_meter(&self) -> Option<std::sync::Arc<super::limit::RetryMeter>> {
        self.sim.as_ref().map(|sim| sim.retries.clone())
    }
}

#[cfg(test)]
mod tests {
    //! Simulated mode against its profile, on tokio's paused clock.

    use super::*;
    use crate::cloud::limit::{Bucket, QuotaClass};
    use crate::cloud::profile::{FaultRates, Latency, RetryModel};
    use std::sync::Arc;
    use std::time::Duration;

    fn launch(count: u32) -> LaunchRequest {
        LaunchRequest {
            tier: "default".into(),
            instance_type: "t3.small".into(),
            subnet_id: "subnet-a".into(),
            count,
            client_token: format!("token-{count}"),
            spot: true,
        }
    }

    async fn lifecycle(cloud: &FakeCloud, id: &InstanceId) -> Option<Lifecycle> {
        cloud
            .describe_pool_instances()
            .await
            .unwrap()
            .into_iter()
            .find(|i| i.id == *id)
            .map(|i| i.lifecycle)
    }

    /// Effects take their time: pending, running, agent online, a command picked up and run,
    /// InvocationDoesNotExist (Pending) right after SendCommand, shutting-down, then gone.
    #[tokio::test(start_paused = true)]
    async fn simulated_effects_complete_after_their_latencies() {
        let mut profile = Profile::aws();
        profile.effects.pending_to_running = Latency::seconds(25, 25);
        profile.effects.agent_online = Latency::seconds(20, 20);
        profile.effects.command_pickup = Latency::seconds(1, 1);
        profile.effects.container_start = Latency::seconds(2, 2);
        profile.effects.shutting_down = Latency::seconds(30, 30);
        let cloud = FakeCloud::simulated("spotpool", profile, 1);
        let start = tokio::time::Instant::now();
        let ids = cloud.launch_instances(&launch(1)).await.unwrap();
        assert!(
            start.elapsed() > Duration::ZERO,
            "the call took its latency"
        );
        let id = &ids[0];
        assert_eq!(lifecycle(&cloud, id).await, Some(Lifecycle::Pending));
        let launched = cloud.instance(id).unwrap().launched_at;

        tokio::time::sleep_until(start + Duration::from_secs(26)).await;
        assert_eq!(lifecycle(&cloud, id).await, Some(Lifecycle::Running));
        let early = cloud.send_command(id, "start container", "true", 60).await;
        assert_eq!(early.unwrap_err().kind, CloudErrorKind::NotFound);

        tokio::time::sleep_until(start + Duration::from_secs(47)).await;
        let command = cloud
            .send_command(id, "start container", "true", 60)
            .await
            .unwrap();
        let sent = cloud.now();
        assert_eq!(
            cloud.command_status(&command, id).await.unwrap(),
            CommandStatus::Pending
        );
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(
            cloud.command_status(&command, id).await.unwrap(),
            CommandStatus::Success
        );
        assert!(sent - launched >= 45_000, "{}", sent - launched);

        cloud
            .terminate_instances(std::slice::from_ref(id))
            .await
            .unwrap();
        assert_eq!(lifecycle(&cloud, id).await, Some(Lifecycle::ShuttingDown));
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(lifecycle(&cloud, id).await, None);
        let stats = cloud.sim_stats().unwrap();
        assert_eq!(stats.attempts, stats.calls, "no faults, no retries");
    }

    /// A target turns healthy after its own group's interval × healthy threshold, and only once
    /// a rule forwards to the group (before that it is `unused`, as on AWS).
    #[tokio::test(start_paused = true)]
    async fn a_target_turns_healthy_after_its_groups_health_check_settings() {
        let mut profile = Profile::aws();
        profile.effects.pending_to_running = Latency::seconds(1, 1);
        profile.effects.rule_active = Latency::seconds(1, 1);
        let cloud = FakeCloud::simulated("spotpool", profile, 7);
        let id = cloud.launch_instances(&launch(1)).await.unwrap().remove(0);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let health = HealthCheck {
            path: "/healthz".into(),
            interval_seconds: 10,
            timeout_seconds: 5,
            healthy_threshold: 3,
            unhealthy_threshold: 2,
        };
        let group = cloud
            .create_target_group("sp-alice", 8080, &health, &Tags::new())
            .await
            .unwrap();
        cloud.register_target(&group, &id, 8080).await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            !cloud.target_healthy(&group, &id, 8080).await.unwrap(),
            "no rule uses the group, so its target is unused"
        );

        cloud
            .create_rule("listener", 1, "/alice/*", &group, &Tags::new())
            .await
            .unwrap();
        let active_at = cloud.rules()[0].active_at;
        assert_eq!(
            cloud.routable_at("/alice/*"),
            Some(active_at + 30_000),
            "healthy 10 s × 3 after the rule starts forwarding"
        );
        let until_healthy = (active_at + 30_000 - cloud.now()) as u64;
        tokio::time::sleep(Duration::from_millis(until_healthy - 1_000)).await;
        assert!(!cloud.target_healthy(&group, &id, 8080).await.unwrap());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(cloud.target_healthy(&group, &id, 8080).await.unwrap());
    }

    /// Every attempt draws from the account's bucket; an attempt that finds it short is throttled
    /// and counted, and the bucket's minimum records how far short it was.
    #[tokio::test(start_paused = true)]
    async fn an_attempt_finding_its_bucket_short_is_a_quota_rejection() {
        let mut profile = Profile::aws().with_retry(RetryModel::standard(1));
        profile
            .quotas
            .insert(QuotaClass::Ec2Describe, Bucket::new(2, 0.001));
        let cloud = FakeCloud::simulated("spotpool", profile, 1);
        cloud.describe_pool_instances().await.unwrap();
        cloud.describe_pool_instances().await.unwrap();
        let error = cloud.describe_pool_instances().await.unwrap_err();
        assert_eq!(error.kind, CloudErrorKind::Throttled);
        assert_eq!(error.code, "RequestLimitExceeded");
        let stats = cloud.sim_stats().unwrap();
        assert_eq!(stats.quota_rejections[&QuotaClass::Ec2Describe], 1);
        assert!(stats.min_bucket_levels[&QuotaClass::Ec2Describe] < 0.0);
        assert_eq!(stats.min_bucket_levels[&QuotaClass::Ec2Mutate], 50.0);
    }

    /// The simulated SDK retries faults with backoff; a call fails only when every attempt of
    /// its budget failed, and the request-path secret writes have the longer budget.
    #[tokio::test(start_paused = true)]
    async fn faults_are_retried_until_the_budget_runs_out() {
        let always = FaultRates {
            server_error: 0.0,
            throttle: 1.0,
        };
        let mut retry = RetryModel::daemon_defaults();
        retry.operation_timeout = None;
        let profile = Profile::aws().with_faults(always).with_retry(retry);
        let cloud = Arc::new(FakeCloud::simulated("spotpool", profile, 3));
        let error = cloud
            .tag_instance(&InstanceId("i-1".into()), &Tags::new())
            .await
            .unwrap_err();
        assert_eq!(error.kind, CloudErrorKind::Throttled);
        let stats = cloud.sim_stats().unwrap();
        assert_eq!((stats.calls, stats.attempts, stats.retries), (1, 4, 3));
        let error = cloud.update_secret("arn", "{}").await.unwrap_err();
        assert_eq!(error.kind, CloudErrorKind::Throttled);
        let stats = cloud.sim_stats().unwrap();
        assert_eq!((stats.calls, stats.attempts, stats.retries), (2, 12, 10));
        assert_eq!(stats.injected_throttles, 12);
        assert_eq!(stats.failed_calls["throttled"], 2);
        assert!(
            cloud.calls().is_empty(),
            "no attempt got through, so no call took effect"
        );

        // A 5xx half the time: calls succeed after retries, and the same seed replays the same
        // run.
        let flaky = FaultRates {
            server_error: 0.5,
            throttle: 0.0,
        };
        let mut runs = Vec::new();
        for _ in 0..2 {
            let cloud = FakeCloud::simulated("spotpool", Profile::aws().with_faults(flaky), 9);
            let start = tokio::time::Instant::now();
            let mut outcomes = Vec::new();
            for _ in 0..20 {
                outcomes.push(cloud.describe_pool_instances().await.is_ok());
            }
            let stats = cloud.sim_stats().unwrap();
            assert!(stats.retries > 0 && stats.injected_server_errors > 0);
            runs.push((outcomes, stats, start.elapsed()));
        }
        assert_eq!(runs[0], runs[1]);
    }

    /// The plain fake is untouched by the simulation: instances run at once and the clock is
    /// the injected one.
    #[tokio::test]
    async fn the_plain_fake_answers_at_once() {
        let cloud = FakeCloud::default();
        cloud.set_now(42);
        let ids = cloud.launch_instances(&launch(2)).await.unwrap();
        assert_eq!(
            cloud.instance(&ids[0]).unwrap().lifecycle,
            Lifecycle::Running
        );
        assert_eq!(cloud.now(), 42);
        assert!(cloud.sim_stats().is_none());
    }
}
