//! The typed progress of a user's instance: how far a claim has got (`ClaimProgress`), a move
//! (`MoveProgress`), an undo (`TeardownKind`), and what the user holds on the load balancer
//! (`Routing`).
//!
//! Each step is persisted before the next starts, so a crash resumes at the recorded step;
//! every step is idempotent, so redoing the last one is harmless. The store keeps each enum in
//! a column through `as_str`/`parse`.

use super::{InstanceId, Millis, string_enum};

/// How far a claim has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClaimStep {
    /// The store assigned an instance; tags not yet written.
    Assigned,
    /// Instance tagged `assigned` and the secret tagged with the instance ARN.
    Tagged,
    /// The user's route is reserved on its shard before anything is spent on the instance: the
    /// target group exists (no target yet) and the listener rule forwards to it. A load
    /// balancer at its limits refuses here, and the instance goes back to the pool unused.
    RouteReserved,
    /// The user's workspace volume exists in the instance's zone and is attached to it.
    WorkspaceAttached,
    /// The start-container command was sent; waiting for it to finish.
    ContainerStarting,
    /// The container runs; from here on the instance is dirty and is never returned to the pool.
    ContainerStarted,
    /// The target group exists with the instance registered, and the rule is still to be made:
    /// only claims started before `RouteReserved` existed pass here.
    TargetGroupReady,
    /// The instance is registered in the target group the rule forwards to; the user is ready
    /// once the load balancer reports it healthy.
    Routed,
}

string_enum!(ClaimStep {
    Assigned => "assigned",
    Tagged => "tagged",
    RouteReserved => "route_reserved",
    WorkspaceAttached => "workspace_attached",
    ContainerStarting => "container_starting",
    ContainerStarted => "container_started",
    TargetGroupReady => "target_group_ready",
    Routed => "routed",
});

/// Where a move stands. Like a claim, each step is recorded before the next starts and every
/// step is idempotent. The user's rule and target group stay in place throughout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MoveStep {
    /// The store assigned the new instance; tags not yet written.
    Assigned,
    /// The new instance is tagged for the user and the secret is bound to it.
    Tagged,
    /// The new instance is registered in the user's target group (health checks start; it gets
    /// traffic once its container answers).
    Registered,
    /// The old instance left the target group, its container stopped and the workspace was
    /// detached from it: from here the route has no healthy target until the new one is.
    WorkspaceFreed,
    /// The workspace is attached to the new instance.
    WorkspaceAttached,
    /// The start-container command was sent to the new instance.
    ContainerStarting,
    /// The container runs on the new instance.
    ContainerStarted,
    /// The new instance is healthy; the old one is being retired and the row switches next.
    Retired,
}

string_enum!(MoveStep {
    Assigned => "assigned",
    Tagged => "tagged",
    Registered => "registered",
    WorkspaceFreed => "workspace_freed",
    WorkspaceAttached => "workspace_attached",
    ContainerStarting => "container_starting",
    ContainerStarted => "container_started",
    Retired => "retired",
});

/// A start-container command on an instance. It is recorded *before* SendCommand with no id
/// (the instance is dirty from then on: a crash or a lost response cannot tell whether a
/// container ran with the user's secret), and gets its id once SendCommand answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCommand {
    pub id: Option<String>,
    pub sent_at: Millis,
}

/// A claim of the user's current instance. It stays after `ready`: its command is the start
/// command that ran on the instance the user holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimProgress {
    pub step: ClaimStep,
    pub command: Option<SentCommand>,
}

impl ClaimProgress {
    /// A claim that has just been given its instance.
    pub fn assigned() -> ClaimProgress {
        ClaimProgress {
            step: ClaimStep::Assigned,
            command: None,
        }
    }

    /// Whether a start command may have reached the instance: then a container may have run
    /// there with the user's secret, and the instance is never handed to anyone else.
    pub fn dirty(&self) -> bool {
        self.step >= ClaimStep::ContainerStarting || self.command.is_some()
    }
}

/// Why a ready user moves to another instance (the `reason` label of the move metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MoveReason {
    /// EC2's two-minute spot interruption warning.
    Interruption,
    /// A rebalance recommendation, when the tier allows early moves.
    Rebalance,
    /// A state change to shutting-down or terminated, without (or before) a warning.
    Terminated,
    /// A state change to stopping or stopped.
    Stopped,
    /// On-call's `POST /v1/admin/instances/{id}/recycle`.
    Recycle,
    /// The health watch: the container failed again right after a restart.
    CrashLoop,
}

string_enum!(MoveReason {
    Interruption => "interruption",
    Rebalance => "rebalance",
    Terminated => "terminated",
    Stopped => "stopped",
    Recycle => "recycle",
    CrashLoop => "crash_loop",
});

/// A move in progress (the user is `migrating`): why, since when, how many targets failed, and
/// the current target once one is assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveProgress {
    pub reason: MoveReason,
    /// When the cause happened (an interruption warning's event time, a recycle request), for
    /// the move-duration metric.
    pub started_at: Millis,
    /// Targets abandoned for this cause (each was a fresh instance).
    pub attempts: u32,
    pub target: Option<MoveTarget>,
}

impl MoveProgress {
    pub fn new(reason: MoveReason, started_at: Millis) -> MoveProgress {
        MoveProgress {
            reason,
            started_at,
            attempts: 0,
            target: None,
        }
    }

    /// The target instance, once assigned.
    pub fn target_instance(&self) -> Option<&InstanceId> {
        self.target.as_ref().map(|t| &t.instance)
    }
}

/// The instance a move is bringing the user to, and how far it has got there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveTarget {
    pub instance: InstanceId,
    /// The slot it takes there (0 on a dedicated tier's instance).
    pub slot: u32,
    pub step: MoveStep,
    pub command: Option<SentCommand>,
}

/// An undo of everything a user's row records. A rollback or recovery is marked in the row
/// before it starts, so a crash part-way resumes the undo rather than the claim; a release is
/// never marked (the user's `deleting` state says it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TeardownKind {
    /// A claim step failed for good: undo, then retry on another instance or fail the user.
    Rollback,
    /// The user's instance vanished: undo, then queue the user first in line.
    Recover,
    /// The user asked to go: undo everything including the secret, then delete the row.
    Release,
    /// The user goes to sleep: the instance goes; the workspace, secret and rule stay.
    Sleep,
    /// The user's load balancer (or the region) refused its route: undo, and the user waits
    /// for route capacity, no attempt used.
    NoRoute,
}

string_enum!(TeardownKind {
    Rollback => "rollback",
    Recover => "recover",
    Release => "release",
    Sleep => "sleep",
    NoRoute => "no_route",
});

/// What routes the user's traffic: the listener rule (with its priority) and the target group.
/// Each is recorded as soon as it exists, so an undo finds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    pub listener_arn: Option<String>,
    pub rule_priority: Option<u32>,
    pub rule_arn: Option<String>,
    pub target_group_arn: Option<String>,
    /// The route came with a pre-wired spare (its target group, with the instance registered,
    /// and its warm rule), and how far the claim has taken it; `None` once the user's tags are
    /// on it, and for a route made for the user.
    pub prewired: Option<Prewired>,
    /// When the claim switched the pre-wired rule to the user's route: `ready` waits until the
    /// load balancer has had `rule_settle` to apply it.
    pub switched_at: Option<Millis>,
}

/// A pre-wired spare's route in a claim (ARCHITECTURE.md, "Pre-wired spares").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prewired {
    /// The rule still has its warm conditions: nobody reaches the instance yet.
    Warm,
    /// One ModifyRule switched the rule to the user's route; the user's tags on the rule and the
    /// target group are added after `ready`.
    Switched,
}

string_enum!(Prewired {
    Warm => "warm",
    Switched => "switched",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_and_reason_strings_round_trip() {
        for s in ClaimStep::ALL {
            assert_eq!(ClaimStep::parse(s.as_str()), Some(s));
        }
        for s in MoveStep::ALL {
            assert_eq!(MoveStep::parse(s.as_str()), Some(s));
        }
        for s in MoveReason::ALL {
            assert_eq!(MoveReason::parse(s.as_str()), Some(s));
        }
        for s in TeardownKind::ALL {
            assert_eq!(TeardownKind::parse(s.as_str()), Some(s));
        }
        for s in Prewired::ALL {
            assert_eq!(Prewired::parse(s.as_str()), Some(s));
        }
        assert_eq!(MoveReason::parse("state_change"), None);
    }

    #[test]
    fn a_claim_is_dirty_once_a_command_may_have_been_sent() {
        let mut claim = ClaimProgress::assigned();
        assert!(!claim.dirty());
        claim.step = ClaimStep::Tagged;
        assert!(!claim.dirty());
        claim.command = Some(SentCommand {
            id: None,
            sent_at: 1,
        });
        assert!(claim.dirty(), "marked before SendCommand");
        claim.command = None;
        claim.step = ClaimStep::ContainerStarting;
        assert!(claim.dirty());
    }
}
