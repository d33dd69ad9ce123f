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
//!   on tokio's clock, paused in tests (`sim.rs`). Each logical call goes through the
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
//! are `unused`, never healthy. [`FakeCloud::now`] is the clock to give the daemon,
//! [`FakeCloud::sim_stats`] the counters for a report.
//!
//! The effects are timestamps settled lazily whenever the state is locked, so a later
//! simulation (a spot interruption: a warning, then termination 120 s later) adds a timeline
//! entry rather than a background task.
//!
//! Files: this one holds the fake's state and the tests' controls (`fail_next`, `set_now`,
//! `reclaim`, the inspectors); `cloud_impl.rs` the `Cloud` port's operations; `sim.rs` the
//! simulated mode; `queue.rs` the fake of the other port, [`InterruptionQueue`]
//! (`crate::cloud::fake_queue` re-exports it). Test scaffolding: compiled only with the `fake`
//! feature, which every test build turns on, never into the production binary.
//!
//! [`InterruptionQueue`]: super::InterruptionQueue

mod cloud_impl;
mod ebs;
mod elb_limits;
pub mod queue;
mod quotas;
mod rules;
mod sim;
#[cfg(test)]
mod tests;

pub use ebs::{FakeAttachment, FakeSnapshot, FakeVolume};
pub use elb_limits::RouteLimits;
pub use sim::SimStats;

use super::profile::Profile;
use super::{
    CloudError, CloudErrorKind, CloudInstance, CloudResult, CommandStatus, HealthCheck, Lifecycle,
    Tags, tags,
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
    /// The template and version it was launched from.
    pub launch_template: crate::model::LaunchTemplate,
    /// The blank workspace it was launched with.
    pub blank_volume: Option<String>,
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
    /// The port each target (by instance id) was registered with.
    pub target_ports: BTreeMap<String, u16>,
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
    /// What the rule matches: a path pattern or a host header.
    pub condition: crate::model::RuleMatch,
    pub target_group_arn: String,
    /// A fixed response (its status) instead of forwarding (ModifyRule): a sleeping user's.
    pub fixed_response: Option<u16>,
    pub tags: Tags,
    /// When the rule's current conditions and action start routing.
    pub active_at: Millis,
    /// When the rule began forwarding to its current target group: the group's health checks
    /// run from then on. A change of conditions alone (a pre-wired spare's switch) does not
    /// restart them.
    pub checks_since: Millis,
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
    /// The rules that name each target group (an index of `rules`, so a call about one group or
    /// listener costs the same however many the fake holds).
    rules_by_group: HashMap<String, Vec<String>>,
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
    /// Targets (group, instance) the load balancer reports unhealthy in that group only: one
    /// user's container on a shared instance.
    unhealthy_targets: Vec<(String, InstanceId)>,
    /// Plain mode: running instances whose SSM agent is not online (`set_agent_online`).
    agents_offline: Vec<InstanceId>,
    /// DescribeInstanceInformation cannot say (as on moto): `agents_online` answers `None`.
    agents_unknown: bool,
    launch_tokens: Vec<String>,
    calls: Vec<&'static str>,
    now: Millis,
    /// Simulated mode: when each instance's effects complete.
    timelines: HashMap<String, Timeline>,
    /// Workspace volumes and snapshots.
    ebs: ebs::Ebs,
    /// The account's quotas a test set (`set_quota`).
    quotas: BTreeMap<crate::model::quota::Quota, f64>,
    /// ECR images' digests a test set (`set_image_digest`), by `repository:tag`.
    images: BTreeMap<String, String>,
    /// Spot prices by (instance type, zone) a test set (`set_spot_price`), over the profile's.
    spot_prices: BTreeMap<(String, String), f64>,
    /// The load balancer limits CreateTargetGroup, CreateRule and RegisterTargets enforce.
    route_limits: elb_limits::RouteLimits,
}

impl State {
    /// A launch whose ClientToken was seen: EC2 answers with the first call's instances, and
    /// refuses the token if the parameters changed (here: the template). None for a new token.
    fn repeated_launch(
        &self,
        request: &super::LaunchRequest,
    ) -> Option<CloudResult<Vec<InstanceId>>> {
        let ids = self.client_tokens.get(&request.client_token)?;
        let first = ids.first().and_then(|id| self.instances.get(&id.0));
        if first.is_some_and(|i| i.launch_template != request.launch_template) {
            return Some(Err(CloudError::new(
                CloudErrorKind::Conflict,
                "RunInstances",
                "IdempotentParameterMismatch",
                "the client token was used with other parameters",
            )));
        }
        Some(Ok(ids.clone()))
    }

    /// The rules that name `group_arn` (forwarding to it, or did before a fixed response).
    fn rules_naming<'a>(&'a self, group_arn: &str) -> impl Iterator<Item = &'a FakeRule> {
        let arns = self.rules_by_group.get(group_arn).into_iter().flatten();
        arns.filter_map(|arn| self.rules.get(arn))
    }

    /// The rules of one listener (their ARNs start with the listener's).
    fn listener_rules<'a>(&'a self, listener_arn: &str) -> impl Iterator<Item = &'a FakeRule> {
        let prefix = format!("{listener_arn}/rule/");
        self.rules
            .range(prefix.clone()..)
            .take_while(move |(arn, _)| arn.starts_with(&prefix))
            .map(|(_, rule)| rule)
    }

    /// Adds or removes `rule_arn` in the index of the rules naming `group_arn`.
    fn index_rule(&mut self, group_arn: &str, rule_arn: &str, present: bool) {
        let arns = self
            .rules_by_group
            .entry(group_arn.to_string())
            .or_default();
        arns.retain(|arn| arn != rule_arn);
        if present {
            arns.push(rule_arn.to_string());
        }
    }

    /// Whether the test asked that `operation`'s answer be lost this time: the call took effect,
    /// and the caller sees this timeout instead of the answer.
    fn lost_response(&mut self, operation: &'static str) -> Option<CloudError> {
        let at = self.lost_responses.iter().position(|o| *o == operation)?;
        self.lost_responses.remove(at);
        Some(CloudError::new(
            CloudErrorKind::Transient,
            operation,
            "RequestTimeout",
            "the response was lost (injected by the test)",
        ))
    }

    /// Whether `instance` runs with its SSM agent online: in simulated mode from its timeline's
    /// `agent_online_at`, in plain mode once running unless a test said otherwise.
    fn agent_online(&self, instance: &InstanceId) -> bool {
        let running = self
            .instances
            .get(&instance.0)
            .is_some_and(|i| i.lifecycle == Lifecycle::Running);
        let online = match self.timelines.get(&instance.0) {
            Some(timeline) => self.now >= timeline.agent_online_at,
            None => !self.agents_offline.contains(instance),
        };
        running && online
    }

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
        let instances = &self.instances;
        self.ebs
            .settle(now, |id| instances.get(&id.0).map(|i| i.lifecycle));
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
        .rules_naming(group_arn)
        .filter(|rule| rule.target_group_arn == group_arn && rule.fixed_response.is_none())
        .map(|rule| rule.checks_since)
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
            state.route_limits.rules_per_load_balancer = profile.limits.rules_per_listener;
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

    /// When the rule matching `condition` (a path pattern, or a host header) routes to a
    /// healthy target: the later of the rule's activation and its target's first passing health
    /// check. None without such a rule.
    pub fn routable_at(&self, condition: &str) -> Option<Millis> {
        let state = self.lock();
        let rule = state
            .rules
            .values()
            .find(|r| r.condition.value() == condition)?;
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
    /// RunInstances, where a lost response is the classic over-launch, and by CreateVolume and
    /// CreateSnapshot).
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

    /// The load balancer reports `id` unhealthy (or healthy again) in `group_arn` only.
    pub fn set_target_unhealthy(&self, group_arn: &str, id: &InstanceId, unhealthy: bool) {
        let mut state = self.lock();
        state
            .unhealthy_targets
            .retain(|(group, i)| group != group_arn || i != id);
        if unhealthy {
            state
                .unhealthy_targets
                .push((group_arn.to_string(), id.clone()));
        }
    }

    /// Plain mode: whether `id`'s SSM agent is online once it runs (the default) or not yet:
    /// SendCommand then fails `NotFound` and `agents_online` leaves it out.
    pub fn set_agent_online(&self, id: &InstanceId, online: bool) {
        let mut state = self.lock();
        state.agents_offline.retain(|i| i != id);
        if !online {
            state.agents_offline.push(id.clone());
        }
    }

    /// Whether DescribeInstanceInformation cannot say which agents are online (as on moto,
    /// which does not implement it): `agents_online` answers `None`.
    pub fn set_agents_unknown(&self, unknown: bool) {
        self.lock().agents_unknown = unknown;
    }

    /// Terminates an instance behind the daemon's back (a spot reclaim, an operator).
    pub fn reclaim(&self, id: &InstanceId) {
        if let Some(instance) = self.lock().instances.get_mut(&id.0) {
            instance.lifecycle = Lifecycle::Terminated;
        }
    }

    /// Plays out the call in simulated mode (its attempts, latencies and faults; see
    /// `sim.rs`), then records it and returns an error injected by the test, if any. In plain
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

    /// DescribeInstances' answer: the pool's instances that are not terminated (a shutting-down
    /// one is listed once in plain mode), less those a test hid from this listing.
    fn list_pool_instances(&self, state: &mut State) -> Vec<CloudInstance> {
        let hidden = std::mem::take(&mut state.hidden_once);
        let mut out = Vec::new();
        let ebs = &state.ebs;
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
                blank_volume_id: instance
                    .blank_volume
                    .clone()
                    .filter(|v| ebs.attached_to(v, &instance.id)),
            });
        }
        out
    }

    fn is_ours(&self, tags: &Tags) -> bool {
        tags.get(tags::POOL) == Some(&self.pool)
    }

    fn instance_arn(&self, id: &str) -> String {
        format!("arn:aws:ec2:{}:123456789012:instance/{id}", self.region)
    }
}
