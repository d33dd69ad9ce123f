//! The pure decision core: `plan(users, instances, now, policy) -> Vec<Action>`.
//!
//! Owns: every decision about the pool: what to launch, probe, terminate, who gets which spare,
//! which claims and releases to drive. Must not: do IO, be async, or read the clock (`now` is a
//! parameter), so every decision can be tested as a table or a property.
//!
//! The reconciler calls `plan` once per pass with the store's ledger merged with the pass's
//! DescribeInstances, executes the actions, and calls it again on the next pass. Decisions are
//! therefore level-triggered: an action that did not happen (crash, error) is simply planned again.

mod instances;
mod placement;
mod shards;
pub mod spares;
mod tiers;

pub use crate::model::TerminateReason;
use crate::model::{
    InstanceId, InstanceStatus, Lifecycle, Millis, TierOverride, TierRuntime, UserId, UserState,
};
use instances::plan_pool_instance;
pub use placement::Placement;
pub use spares::{AutoSpares, Demand, SpareBounds};
use std::collections::{BTreeMap, HashMap, HashSet};
use tiers::plan_tier;

/// Pool policy of one tier.
#[derive(Debug, Clone, PartialEq)]
pub struct TierPolicy {
    pub name: String,
    /// Spares to keep `available`, on top of the users waiting in the queue (with `spare_auto`,
    /// the reconciler sets it each pass from the demand: [`spares::decide`]).
    pub spare_count: u32,
    /// `spare = "auto"`: the bounds the spares follow demand within.
    pub spare_auto: Option<SpareBounds>,
    /// Most instances of the tier alive at once, whatever their status.
    pub max_instances: u32,
    /// Users one instance serves at once, each on a slot of its own (1: dedicated).
    pub slots_per_instance: u32,
    /// Instance types to launch, most preferred first.
    pub instance_types: Vec<String>,
    /// Where launches go among the types and zones (`[[tier]] placement`; the order written by
    /// default, so `instance_types` is a preference unless the tier places by cost).
    pub placement: Placement,
    /// Launch on-demand when no spot offering of any type has capacity.
    pub on_demand_fallback: bool,
    /// Move a user off an instance that got a rebalance recommendation, when a spare is ready.
    pub rebalance_moves: bool,
    /// Size of a new user's workspace volume in GiB.
    pub workspace_size_gib: u32,
    /// Put a ready user to sleep after this long without requests; None never does.
    pub idle_sleep_after: Option<Millis>,
    /// What its instances launch from and run (not read by `plan`; carried here so that a
    /// tier is one value everywhere).
    pub runtime: TierRuntime,
}

#[cfg(any(test, feature = "fake"))]
impl TierPolicy {
    /// A tier of the tests: one spare, at most ten t3.small instances, the example runtime.
    pub fn example(name: &str) -> TierPolicy {
        TierPolicy {
            name: name.into(),
            spare_count: 1,
            spare_auto: None,
            max_instances: 10,
            slots_per_instance: 1,
            instance_types: vec!["t3.small".into()],
            placement: Placement::Ordered,
            on_demand_fallback: false,
            rebalance_moves: false,
            workspace_size_gib: 8,
            idle_sleep_after: None,
            runtime: TierRuntime::example(),
        }
    }
}

/// What the cloud has recently told us, kept by the reconciler and passed in so `plan` stays
/// pure (Karpenter's unavailable-offerings cache).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions {
    /// (instance type, subnet) offerings that recently failed with a capacity error.
    pub unavailable: HashSet<(String, String)>,
    /// (tier, instance type, subnet) offerings a drain keeps launches off: unlike a capacity
    /// error, never a reason to fall back to on-demand.
    pub drained: HashSet<(String, String, String)>,
    /// Tiers whose launches are backing off after failures, or halted at the failure limit.
    pub launch_blocked: HashSet<String>,
    /// Instances a drain matches (ARCHITECTURE.md, "Drains"): no claim or move takes a slot of
    /// one (a shared instance is emptied by its drain; a dedicated spare is recycled at once).
    pub closed: HashSet<InstanceId>,
    /// Shards AWS refused a route (TooManyRules, ...): the users they held then, their limit
    /// until the mark expires.
    pub route_limits: BTreeMap<String, u32>,
    /// The region refused a target group (TooManyTargetGroups): the users placed then, the
    /// limit of all shards together until the mark expires; or the account's target groups
    /// quota, whichever is lower.
    pub region_route_limit: Option<u32>,
    /// The account's quotas of rules and of target groups per load balancer (Service Quotas,
    /// read hourly), the lower: no shard takes more users, whatever its capacity.
    pub alb_route_limit: Option<u32>,
    /// Each (instance type, subnet) offering's expected dollars an hour an instance: price plus
    /// interruption rate times a move's cost (`reconcile/placement.rs`); empty without prices.
    pub offering_costs: BTreeMap<(String, String), f64>,
}

/// The purchase option of a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Market {
    Spot,
    OnDemand,
}

/// Everything `plan` needs besides the state: tiers, subnets and time limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub tiers: Vec<TierPolicy>,
    pub subnet_ids: Vec<String>,
    /// The availability zone of each subnet (DescribeSubnets, once): workspaces live in one
    /// zone, so their users are served by spares of that zone.
    pub subnet_zones: BTreeMap<String, String>,
    /// A new instance that has not passed its probe this long after launch is replaced.
    pub probe_timeout: Millis,
    /// Wait after a failed probe (or an agent not yet online) before probing again.
    pub probe_retry: Millis,
    /// When SSM cannot say whether an instance's agent is online, the wait between probes that
    /// found it offline grows with the instance's age (half of it, at least `probe_retry`) up to
    /// this.
    pub probe_backoff_max: Millis,
    /// How long a launched instance may be missing from DescribeInstances (eventual consistency).
    pub launch_visibility_grace: Millis,
    /// How long an `assigned` instance with no user may live before it is terminated.
    pub orphan_grace: Millis,
    /// Re-send TerminateInstances for a `terminating` instance still running after this long.
    pub terminate_retry: Millis,
    /// Consecutive passes a held instance must be missing from DescribeInstances before its user
    /// is moved: one incomplete listing must not tear down every user.
    pub missed_before_lost: u32,
    /// The load balancers users are routed through, each with its capacity.
    pub shards: Vec<crate::model::Shard>,
}

impl Policy {
    pub fn tier(&self, name: &str) -> Option<&TierPolicy> {
        self.tiers.iter().find(|t| t.name == name)
    }

    /// The configured shard of that name.
    pub fn shard(&self, name: &str) -> Option<&crate::model::Shard> {
        self.shards.iter().find(|s| s.name == name)
    }

    /// The zone of a subnet, if known.
    pub fn zone_of(&self, subnet: &str) -> Option<&str> {
        self.subnet_zones.get(subnet).map(String::as_str)
    }
}

/// One pool instance: the store's ledger row merged with this pass's observation.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolInstance {
    pub id: InstanceId,
    pub tier: String,
    pub status: InstanceStatus,
    /// EC2's state this pass; `None` when DescribeInstances did not list it.
    pub lifecycle: Option<Lifecycle>,
    pub launched_at: Millis,
    /// When `status` last changed.
    pub status_since: Millis,
    /// The readiness probe in flight: (command id, sent at).
    pub probe: Option<(String, Millis)>,
    /// When the last probe failed (or could not be sent).
    pub probe_failed_at: Option<Millis>,
    /// Whether SSM lists its agent `Online` this pass (asked only of the instances a probe may
    /// be sent to); `None` when SSM cannot say (or was not asked).
    pub agent_online: Option<bool>,
    /// Consecutive passes DescribeInstances did not list it.
    pub missed: u32,
    /// When on-call (or a drain, a failed wipe, a move off a shared instance) asked for it to be
    /// recycled: its users move to fresh instances and it goes.
    pub recycle: Option<Millis>,
    /// Its availability zone (observed, or the zone of the subnet it was launched into).
    pub zone: Option<String>,
    /// Its readiness probe passed: a pre-wired spare is being wired (`initializing` still).
    pub probed: bool,
    /// Its warm route (ARCHITECTURE.md, "Pre-wired spares"), `None` when nothing of one is
    /// recorded (the shard is always the first part recorded).
    pub warm: Option<WarmView>,
    /// Its slots a leaving user left to wipe (a shared instance's): nobody's until wiped.
    pub wiping: Vec<u32>,
    /// Whose those are: none of them may take a slot here meanwhile (the wipe, which goes by
    /// user, would remove the new container).
    pub wiping_users: Vec<UserId>,
}

/// What `plan` needs of a spare's warm route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmView {
    pub shard: String,
    /// Target group and rule both exist: a claim on `shard` takes them.
    pub complete: bool,
}

impl PoolInstance {
    fn is_alive(&self) -> bool {
        match self.lifecycle {
            Some(lifecycle) => !lifecycle.is_gone(),
            None => false,
        }
    }
}

/// The parts of a user's desired state that `plan` needs.
#[derive(Debug, Clone, PartialEq)]
pub struct UserIntent {
    pub user: UserId,
    pub tier: String,
    pub state: UserState,
    pub instance: Option<InstanceId>,
    /// Its slot on `instance` (0 on a dedicated instance).
    pub slot: u32,
    /// Position in the queue: first come, first served, kept across retries.
    pub requested_at: Millis,
    /// An undo (rollback or recovery) was started and must be finished before anything else.
    pub tearing_down: bool,
    /// A migrating user's new instance, once assigned.
    pub moving_to: Option<InstanceId>,
    /// Its slot on `moving_to`.
    pub moving_slot: u32,
    /// The zone of the user's workspace volume, once it exists: only a spare of that zone can
    /// serve the user.
    pub zone: Option<String>,
    /// The workspace is being copied to another zone; the user waits until it is there.
    pub relocating: bool,
    /// The shard the user is routed through, once placed.
    pub shard: Option<String>,
    /// The user shows `no_route_capacity` (it was held back for want of a route).
    pub waiting_for_route: bool,
    /// Its route came with a pre-wired spare and does not carry the user's tag yet.
    pub route_untagged: bool,
    /// It holds a route of its own (an asleep user's kept rule): a spare's warm route would be
    /// wasted on it.
    pub has_route: bool,
    /// When it last gave up a move before the point of no return (it stayed where it is).
    pub move_abandoned_at: Option<Millis>,
}

/// One thing the executor should do this pass.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    Launch {
        tier: String,
        instance_type: String,
        subnet_id: String,
        count: u32,
        market: Market,
    },
    SendProbe {
        instance: InstanceId,
    },
    CheckProbe {
        instance: InstanceId,
        command_id: String,
    },
    Terminate {
        instance: InstanceId,
        reason: TerminateReason,
    },
    /// Drop a ledger row for an instance AWS no longer lists.
    Forget {
        instance: InstanceId,
    },
    /// Give a queued user an available instance (the store makes it atomic), routed through
    /// `shard` (its own, or the one placed on with this spare).
    Assign {
        user: UserId,
        instance: InstanceId,
        /// The slot it takes there (0 on a dedicated tier's).
        slot: u32,
        shard: String,
    },
    /// No shard has room for the queued user's route: it waits, no instance is claimed, and it
    /// shows `no_route_capacity`.
    AwaitRoute {
        user: UserId,
    },
    /// A user that showed `no_route_capacity` has room now and waits for a spare like anyone.
    RouteAvailable {
        user: UserId,
    },
    /// Run the next claim steps of a provisioning user.
    AdvanceClaim {
        user: UserId,
    },
    /// Tear down everything of a deleting user.
    Release {
        user: UserId,
    },
    /// The user's instance is gone: undo the attempt's resources and queue the user first in line.
    Recover {
        user: UserId,
    },
    /// Start moving a ready user to another instance (its own was recycled).
    BeginMove {
        user: UserId,
    },
    /// Give a migrating user an available instance as its move target.
    AssignMove {
        user: UserId,
        instance: InstanceId,
        slot: u32,
    },
    /// Wipe what a user left on a slot of a shared instance (or go on doing so); the slot is
    /// free once it succeeded.
    WipeSlot {
        instance: InstanceId,
        slot: u32,
    },
    /// Run the next move steps of a migrating user.
    AdvanceMove {
        user: UserId,
    },
    /// Put a user to sleep (or go on doing so): retire its instance, keep its workspace.
    AdvanceSleep {
        user: UserId,
    },
    /// The user's workspace zone has no capacity: copy the workspace to `to_zone`.
    RelocateWorkspace {
        user: UserId,
        to_zone: String,
    },
    /// Go on copying a user's workspace to another zone.
    AdvanceRelocation {
        user: UserId,
    },
    /// Build a probed spare's warm route on `shard` (target group, registration, warm rule)
    /// and make it `available` once the load balancer reports it healthy; with no shard (none
    /// has room for one more route), make it `available` without one.
    Wire {
        instance: InstanceId,
        shard: Option<String>,
    },
    /// Add the user's tag to the target group and rule its pre-wired spare brought (after
    /// `ready`, off the claim path).
    TagRoute {
        user: UserId,
    },
    /// Delete the warm route of an instance that is no longer a spare (a move took it, a claim
    /// on another shard, or it is retiring or gone).
    Unwire {
        instance: InstanceId,
    },
}

impl Action {
    /// The action's name: a bounded metric label and the `action` of a repair report.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Launch { .. } => "launch",
            Action::SendProbe { .. } => "send_probe",
            Action::CheckProbe { .. } => "check_probe",
            Action::Terminate { .. } => "terminate",
            Action::Forget { .. } => "forget",
            Action::Assign { .. } => "assign",
            Action::AwaitRoute { .. } => "await_route",
            Action::RouteAvailable { .. } => "route_available",
            Action::AdvanceClaim { .. } => "advance_claim",
            Action::Release { .. } => "release",
            Action::Recover { .. } => "recover",
            Action::BeginMove { .. } => "begin_move",
            Action::AssignMove { .. } => "assign_move",
            Action::WipeSlot { .. } => "wipe_slot",
            Action::AdvanceMove { .. } => "advance_move",
            Action::AdvanceSleep { .. } => "advance_sleep",
            Action::RelocateWorkspace { .. } => "relocate_workspace",
            Action::AdvanceRelocation { .. } => "advance_relocation",
            Action::Wire { .. } => "wire",
            Action::TagRoute { .. } => "tag_route",
            Action::Unwire { .. } => "unwire",
        }
    }

    /// The user the action is for, if any.
    pub fn user(&self) -> Option<&UserId> {
        match self {
            Action::Assign { user, .. }
            | Action::AwaitRoute { user }
            | Action::RouteAvailable { user }
            | Action::AdvanceClaim { user }
            | Action::Release { user }
            | Action::Recover { user }
            | Action::BeginMove { user }
            | Action::AssignMove { user, .. }
            | Action::AdvanceMove { user }
            | Action::AdvanceSleep { user }
            | Action::RelocateWorkspace { user, .. }
            | Action::AdvanceRelocation { user }
            | Action::TagRoute { user } => Some(user),
            _ => None,
        }
    }

    /// The instance the action acts on, if any.
    pub fn instance(&self) -> Option<&InstanceId> {
        match self {
            Action::SendProbe { instance }
            | Action::CheckProbe { instance, .. }
            | Action::Terminate { instance, .. }
            | Action::Forget { instance }
            | Action::Wire { instance, .. }
            | Action::Unwire { instance }
            | Action::Assign { instance, .. }
            | Action::AssignMove { instance, .. }
            | Action::WipeSlot { instance, .. } => Some(instance),
            _ => None,
        }
    }

    /// What else a person needs to read the action: the launch's offering, the termination's
    /// reason.
    pub fn detail(&self) -> Option<String> {
        match self {
            Action::Launch {
                tier,
                instance_type,
                subnet_id,
                count,
                market,
            } => Some(format!(
                "{count} {instance_type} ({}) in {subnet_id} for tier {tier}",
                market.as_str()
            )),
            Action::Terminate { reason, .. } => Some(reason.as_str().to_string()),
            Action::RelocateWorkspace { to_zone, .. } => Some(format!("to {to_zone}")),
            Action::Assign { shard, .. } => Some(format!("on shard {shard}")),
            Action::Wire { shard, .. } => Some(match shard {
                Some(shard) => format!("on shard {shard}"),
                None => "no shard has room: available without a warm route".to_string(),
            }),
            _ => None,
        }
    }
}

impl Market {
    pub fn as_str(self) -> &'static str {
        match self {
            Market::Spot => "spot",
            Market::OnDemand => "on_demand",
        }
    }
}

/// Applies on-call's tier overrides to the configured tiers; returns the paused tiers.
/// Overrides of tiers no longer configured are ignored.
pub fn apply_overrides(tiers: &mut [TierPolicy], overrides: &[TierOverride]) -> Vec<String> {
    let mut paused = Vec::new();
    for o in overrides {
        let Some(tier) = tiers.iter_mut().find(|t| t.name == o.tier) else {
            continue;
        };
        if let Some(spare_count) = o.spare_count {
            // On-call's count pins the tier: it no longer follows demand.
            tier.spare_count = spare_count;
            tier.spare_auto = None;
        }
        if let Some(max_instances) = o.max_instances {
            tier.max_instances = max_instances;
        }
        if let Some(image) = &o.container_image {
            tier.runtime.container.image = image.clone();
        }
        if let Some(version) = &o.launch_template_version {
            // A tier on the daemon-wide templates launches on-demand at the spot template's
            // version (LAUNCH_TEMPLATE_VERSION): it follows. One of its own stays at its own.
            let runtime = &mut tier.runtime;
            if let Some(on_demand) =
                (runtime.on_demand.as_mut()).filter(|t| t.version == runtime.launch.version)
            {
                on_demand.version = version.clone();
            }
            runtime.launch.version = version.clone();
        }
        if o.paused {
            paused.push(o.tier.clone());
        }
    }
    paused
}

/// Decides this pass's actions. Pure: same inputs, same actions.
pub fn plan(
    users: &[UserIntent],
    instances: &[PoolInstance],
    now: Millis,
    policy: &Policy,
    conditions: &Conditions,
) -> Vec<Action> {
    let mut actions = Vec::new();
    // Every instance some user row points at, whatever that user's state: such an instance is
    // never terminated by the pool logic nor handed to anyone else. Its release, rollback or
    // recovery is what frees it.
    let held: HashSet<&InstanceId> = users
        .iter()
        .flat_map(|u| [u.instance.as_ref(), u.moving_to.as_ref()])
        .flatten()
        .collect();
    let used = slots_in_use(users, instances, &mut actions);
    let by_id: HashMap<&InstanceId, &PoolInstance> = instances.iter().map(|i| (&i.id, i)).collect();

    for instance in instances {
        // A held instance belongs to its user's claim, release or recovery; the pool logic never
        // probes, terminates or forgets it.
        if !held.contains(&instance.id) {
            plan_pool_instance(instance, now, policy, &mut actions);
        }
        // A warm route is the pool's while the instance is a spare of a configured shard;
        // otherwise it goes. (One listing without the instance is no reason: only a spare EC2
        // calls gone, or that it missed as often as a lost instance, has lost its route.)
        let gone = match instance.lifecycle {
            Some(lifecycle) => lifecycle.is_gone(),
            None => instance.missed >= policy.missed_before_lost,
        };
        let spare = matches!(
            instance.status,
            InstanceStatus::Initializing | InstanceStatus::Available
        ) && !gone;
        let shard_kept = instance
            .warm
            .as_ref()
            .is_some_and(|w| policy.shard(&w.shard).is_some());
        if instance.warm.is_some() && !(spare && shard_kept) {
            actions.push(Action::Unwire {
                instance: instance.id.clone(),
            });
        }
    }

    let mut queued: BTreeMap<&str, Vec<&UserIntent>> = BTreeMap::new();
    for user in users {
        let view = user.instance.as_ref().and_then(|id| by_id.get(id).copied());
        if plan_user(user, view, policy, &mut actions) {
            queued.entry(user.tier.as_str()).or_default().push(user);
        }
    }

    // Route capacity as spares are handed out: a user no shard has room for claims no instance.
    let mut placer = shards::Placer::new(users, instances, policy, conditions);
    for tier in &policy.tiers {
        let waiting = queued.remove(tier.name.as_str()).unwrap_or_default();
        plan_tier(
            tier,
            waiting,
            instances,
            (&held, &used),
            now,
            policy,
            conditions,
            &mut placer,
            &mut actions,
        );
    }
    // Probed spares with no warm route yet get one on the shard with the most room left once
    // the users are placed.
    for instance in instances {
        let fresh = instance.status == InstanceStatus::Initializing
            && instance.probed
            && instance.warm.is_none()
            && instance.lifecycle == Some(Lifecycle::Running)
            && !held.contains(&instance.id)
            // Pre-wired spares are a dedicated tier's (a shared one's go `available` at once).
            && policy.tier(&instance.tier).is_some_and(|t| t.slots_per_instance == 1)
            && instance.recycle.is_none()
            && now - instance.status_since <= policy.probe_timeout;
        if fresh {
            actions.push(Action::Wire {
                instance: instance.id.clone(),
                shard: placer.place_warm(),
            });
        }
    }
    actions
}

/// The slots of each instance someone holds, moves to, or left to wipe; and a `WipeSlot` for
/// each slot left to wipe on an instance still alive.
fn slots_in_use<'a>(
    users: &'a [UserIntent],
    instances: &'a [PoolInstance],
    actions: &mut Vec<Action>,
) -> tiers::Used<'a> {
    let mut used: tiers::Used<'a> = HashMap::new();
    for user in users {
        if let Some(instance) = &user.instance {
            used.entry(instance).or_default().insert(user.slot);
        }
        if let Some(target) = &user.moving_to {
            used.entry(target).or_default().insert(user.moving_slot);
        }
    }
    for instance in instances {
        for slot in &instance.wiping {
            used.entry(&instance.id).or_default().insert(*slot);
            if instance.is_alive() {
                actions.push(Action::WipeSlot {
                    instance: instance.id.clone(),
                    slot: *slot,
                });
            }
        }
    }
    used
}

/// What a user's row asks for this pass. Returns whether the user waits for a spare (queued,
/// or migrating without a target yet): those are served per tier, first come, first served.
fn plan_user(
    user: &UserIntent,
    view: Option<&PoolInstance>,
    policy: &Policy,
    actions: &mut Vec<Action>,
) -> bool {
    match user.state {
        UserState::Deleting => actions.push(Action::Release {
            user: user.user.clone(),
        }),
        UserState::Provisioning | UserState::Ready | UserState::Migrating if user.tearing_down => {
            actions.push(Action::Recover {
                user: user.user.clone(),
            });
        }
        UserState::Migrating => match &user.moving_to {
            Some(_) => actions.push(Action::AdvanceMove {
                user: user.user.clone(),
            }),
            // Waiting for a spare, first in line (the old instance serves meanwhile, if it
            // still can).
            None => return true,
        },
        UserState::Provisioning | UserState::Ready => {
            match view {
                // On-call recycles the instance: a ready user moves to a fresh one while the
                // old one still serves; a claim in progress simply starts over elsewhere. A user
                // who gave up a move since it was asked stays, as any ready user (a shared
                // instance keeps the request while it empties; a dedicated one's was consumed by
                // the move).
                Some(i)
                    if i.recycle.is_some()
                        && user.state == UserState::Ready
                        && user.move_abandoned_at < i.recycle =>
                {
                    actions.push(Action::BeginMove {
                        user: user.user.clone(),
                    })
                }
                Some(i) if i.recycle.is_some() && user.state == UserState::Provisioning => actions
                    .push(Action::Recover {
                        user: user.user.clone(),
                    }),
                // An instance on its way out (ours or AWS's) can no longer serve the user.
                Some(i) if i.is_alive() && i.status != InstanceStatus::Terminating => {
                    if user.state == UserState::Provisioning {
                        actions.push(Action::AdvanceClaim {
                            user: user.user.clone(),
                        });
                    } else if user.route_untagged {
                        actions.push(Action::TagRoute {
                            user: user.user.clone(),
                        });
                    }
                }
                // Not listed this pass, but not yet often enough to call it lost.
                Some(i)
                    if i.lifecycle.is_none()
                        && i.missed < policy.missed_before_lost
                        && i.status != InstanceStatus::Terminating => {}
                _ => actions.push(Action::Recover {
                    user: user.user.clone(),
                }),
            }
        }
        UserState::Queued if user.relocating => actions.push(Action::AdvanceRelocation {
            user: user.user.clone(),
        }),
        UserState::Queued => return user.instance.is_none(),
        UserState::Sleeping => actions.push(Action::AdvanceSleep {
            user: user.user.clone(),
        }),
        // An asleep user keeps its rule: one it took from a pre-wired spare still gets its tag.
        UserState::Asleep if user.route_untagged => actions.push(Action::TagRoute {
            user: user.user.clone(),
        }),
        UserState::Failed | UserState::Asleep => {}
    }
    false
}

#[cfg(test)]
mod tests;
