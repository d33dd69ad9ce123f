//! Journal events: every step the daemon takes, as one typed value. The store keeps each as a
//! journal row (`kind()`, `message()`, the user and the instance); the kinds are stable
//! strings that on-call, the tests and the event stream rely on.

use super::{
    ClaimStep, InstanceId, InstanceStatus, MoveReason, MoveStep, NoticeKind, TeardownKind,
    TerminateReason, string_enum,
};
use std::time::Duration;

/// What an interruption notice made the reconciler do (the `action` of its metric and event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoticeAction {
    /// The user on the instance started a move.
    Move,
    /// A claim in progress on the instance starts over elsewhere.
    Recover,
    /// The move whose target the instance was is rolled back and retried.
    MoveRetried,
    /// The spare is terminated and replaced.
    Replace,
    /// Nothing to do (already handled, or a rebalance without a move).
    Noted,
    /// Not about an instance of this pool: not journalled.
    Ignored,
}

string_enum!(NoticeAction {
    Move => "move",
    Recover => "recover",
    MoveRetried => "move_retried",
    Replace => "replace",
    Noted => "noted",
    Ignored => "ignored",
});

/// One journal event. Which user and instance it concerns is recorded beside it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An instance tagged for the pool that the ledger did not know.
    InstanceAdopted {
        status: InstanceStatus,
    },
    InstanceLaunched {
        instance_type: String,
        subnet_id: String,
    },
    InstanceAvailable,
    /// The readiness probe passed; the spare's warm route is being built (pre-wired spares).
    InstanceProbed,
    /// After `ready`: the user's tag is on the target group and rule its pre-wired spare brought.
    RouteTagged,
    InstanceProbeFailed {
        cause: String,
    },
    InstanceTerminating {
        reason: TerminateReason,
    },
    /// EC2 no longer lists it; the ledger forgets it.
    InstanceGone,
    /// A launch of a less preferred type or on-demand, because the preferred offerings have no
    /// capacity.
    PoolFallback {
        tier: String,
        count: u32,
        instance_type: String,
        on_demand: bool,
        subnet_id: String,
    },
    PoolCapacityUnavailable {
        instance_type: String,
        subnet_id: String,
        skipped_for: Duration,
    },
    PoolLaunchBackoff {
        tier: String,
        failures: u32,
        cause: String,
        backoff: Duration,
    },
    PoolLaunchHalted {
        tier: String,
        failures: u32,
        cause: String,
    },
    /// RunInstances answered that an account quota is used up: the tier launches nothing for
    /// `blocked_for`, and its queued users wait with `quota_exceeded`.
    PoolQuotaExceeded {
        tier: String,
        instance_type: String,
        cause: String,
        blocked_for: Duration,
    },
    /// A drain asked for a user's move off one of its instances.
    DrainMove {
        drain: i64,
    },
    /// A drain stopped moving users after `failed` failed moves.
    DrainPaused {
        drain: i64,
        failed: u32,
    },
    /// Nothing a drain matches is left but the instances of users whose move failed.
    DrainDone {
        drain: i64,
        moved: u32,
        failed: u32,
    },
    /// A tier's image or launch templates changed (`from` → `to`, their fingerprints): its
    /// `outdated` drain `drain` starts, replacing the earlier rollout's drain `replaced`.
    RolloutStarted {
        tier: String,
        drain: i64,
        from: String,
        to: String,
        replaced: Option<i64>,
    },
    /// The configured image was pinned to a digest: every probe and start runs `pinned`.
    ImagePinned {
        image: String,
        pinned: String,
    },
    ClaimAssigned,
    /// A claim step finished; the claim is now at `ClaimStep`.
    ClaimStepDone(ClaimStep),
    ClaimReady {
        seconds: f64,
    },
    /// An attempt was rolled back and the user waits for another instance.
    ClaimRetrying {
        attempt: u32,
        cause: String,
    },
    /// The user's instance was lost and the user is queued first in line.
    ClaimRecovered,
    ClaimFailed {
        attempts: u32,
        cause: String,
    },
    /// An undo gave a clean instance back to the pool for a fresh probe.
    UndoInstanceReturned {
        undo: TeardownKind,
    },
    /// An undo terminated the instance (a container may have run there).
    UndoInstanceTerminated {
        undo: TeardownKind,
    },
    ReleaseDone,
    MoveBegin {
        reason: MoveReason,
    },
    MoveAssigned,
    MoveStepDone(MoveStep),
    MoveDone {
        from: Option<InstanceId>,
        reason: MoveReason,
        seconds: f64,
    },
    MoveRolledBack {
        cause: String,
    },
    MoveAbandoned {
        cause: String,
    },
    Interruption {
        action: NoticeAction,
        notice: NoticeKind,
        event_id: String,
        age_seconds: i64,
    },
    /// On-call's repair deleted an orphan (described: kind, id, name, why).
    OrphanDeleted {
        description: String,
    },
    /// The user's first claim created its workspace volume.
    WorkspaceCreated {
        volume_id: String,
        zone: String,
        size_gib: u32,
    },
    /// The workspace's zone has no capacity: it is being copied to another zone.
    WorkspaceRelocating {
        from: String,
        to: String,
    },
    WorkspaceRelocated {
        to: String,
    },
    /// The user was released: its workspace volume is deleted.
    WorkspaceDeleted {
        volume_id: String,
    },
    /// A sleep was asked for (`idle` when auto-sleep found no requests).
    SleepRequested {
        reason: String,
    },
    /// The user is asleep: no instance; workspace, secret and route kept.
    Asleep,
    /// A wake (or a PUT) queued an asleep user for an instance again.
    WakeRequested,
    /// No shard has room for the user's route: it waits as `no_route_capacity`, no instance
    /// claimed.
    RouteCapacityExhausted,
    /// AWS refused a route on `shard` (or the region's target groups, `shard` none): it takes
    /// no more users than it holds until `held_for` passes or a user leaves.
    RouteRefused {
        shard: Option<String>,
        cause: String,
        held_for: Duration,
    },
    /// `replica` leads from now, with fencing `epoch`, after `previous` (None: the database's
    /// first leader).
    LeadershipAcquired {
        replica: String,
        epoch: i64,
        previous: Option<String>,
    },
    /// `replica` stopped cleanly and handed the lease back.
    LeadershipReleased {
        replica: String,
        epoch: i64,
    },
    /// The health watch restarted the user's container, which failed its health checks.
    HealthRestarted {
        reason: String,
        command_id: String,
    },
    /// The container failed again soon after the watch's restart (or recycle): a crash loop;
    /// `recycle`: the user moves to a fresh instance, else it is left for on-call.
    HealthCrashLoop {
        reason: String,
        recycle: bool,
    },
    /// The container passes its health checks again after the watch acted.
    HealthRecovered {
        was: super::Health,
    },
    /// The user's callback answered 2xx to the POST of its entering `state`.
    WebhookDelivered {
        id: i64,
        state: super::UserState,
        host: String,
        attempts: u32,
    },
    /// A day of failed attempts: the POST is given up.
    WebhookAbandoned {
        id: i64,
        state: super::UserState,
        host: String,
        attempts: u32,
        error: String,
    },
}

impl Event {
    /// The stable kind string: `<area>.<what>`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::InstanceAdopted { .. } => "instance.adopted",
            Event::InstanceLaunched { .. } => "instance.launched",
            Event::InstanceAvailable => "instance.available",
            Event::InstanceProbed => "instance.probed",
            Event::RouteTagged => "claim.route_tagged",
            Event::InstanceProbeFailed { .. } => "instance.probe_failed",
            Event::InstanceTerminating { .. } => "instance.terminating",
            Event::InstanceGone => "instance.gone",
            Event::PoolFallback { .. } => "pool.fallback",
            Event::PoolCapacityUnavailable { .. } => "pool.capacity_unavailable",
            Event::PoolLaunchBackoff { .. } => "pool.launch_backoff",
            Event::PoolLaunchHalted { .. } => "pool.launch_halted",
            Event::PoolQuotaExceeded { .. } => "pool.quota_exceeded",
            Event::DrainMove { .. } => "drain.move",
            Event::DrainPaused { .. } => "drain.paused",
            Event::DrainDone { .. } => "drain.done",
            Event::RolloutStarted { .. } => "rollout.started",
            Event::ImagePinned { .. } => "image.pinned",
            Event::ClaimAssigned => "claim.assigned",
            Event::ClaimStepDone(step) => match step {
                ClaimStep::Assigned => "claim.assigned",
                ClaimStep::Tagged => "claim.tagged",
                ClaimStep::RouteReserved => "claim.route_reserved",
                ClaimStep::WorkspaceAttached => "claim.workspace_attached",
                ClaimStep::ContainerStarting => "claim.container_starting",
                ClaimStep::ContainerStarted => "claim.container_started",
                ClaimStep::TargetGroupReady => "claim.target_group_ready",
                ClaimStep::Routed => "claim.routed",
            },
            Event::ClaimReady { .. } => "claim.ready",
            Event::ClaimRetrying { .. } | Event::ClaimRecovered => "claim.requeued",
            Event::ClaimFailed { .. } => "claim.failed",
            Event::UndoInstanceReturned { undo } => match undo {
                TeardownKind::Rollback => "rollback.instance_returned",
                TeardownKind::Recover => "recover.instance_returned",
                TeardownKind::Release => "release.instance_returned",
                TeardownKind::Sleep => "sleep.instance_returned",
                TeardownKind::NoRoute => "no_route.instance_returned",
            },
            Event::UndoInstanceTerminated { undo } => match undo {
                TeardownKind::Rollback => "rollback.instance_terminated",
                TeardownKind::Recover => "recover.instance_terminated",
                TeardownKind::Release => "release.instance_terminated",
                TeardownKind::Sleep => "sleep.instance_terminated",
                TeardownKind::NoRoute => "no_route.instance_terminated",
            },
            Event::ReleaseDone => "release.done",
            Event::MoveBegin { .. } => "move.begin",
            Event::MoveAssigned => "move.assigned",
            Event::MoveStepDone(step) => match step {
                MoveStep::Assigned => "move.assigned",
                MoveStep::Tagged => "move.tagged",
                MoveStep::Registered => "move.registered",
                MoveStep::WorkspaceFreed => "move.workspace_freed",
                MoveStep::WorkspaceAttached => "move.workspace_attached",
                MoveStep::ContainerStarting => "move.container_starting",
                MoveStep::ContainerStarted => "move.container_started",
                MoveStep::Retired => "move.retired",
            },
            Event::MoveDone { .. } => "move.done",
            Event::MoveRolledBack { .. } => "move.rolled_back",
            Event::MoveAbandoned { .. } => "move.abandoned",
            Event::Interruption { action, .. } => match action {
                NoticeAction::Move => "interruption.move",
                NoticeAction::Recover => "interruption.recover",
                NoticeAction::MoveRetried => "interruption.move_retried",
                NoticeAction::Replace => "interruption.replace",
                NoticeAction::Noted => "interruption.noted",
                NoticeAction::Ignored => "interruption.ignored",
            },
            Event::OrphanDeleted { .. } => "repair.orphan_deleted",
            Event::WorkspaceCreated { .. } => "workspace.created",
            Event::WorkspaceRelocating { .. } => "workspace.relocating",
            Event::WorkspaceRelocated { .. } => "workspace.relocated",
            Event::WorkspaceDeleted { .. } => "workspace.deleted",
            Event::SleepRequested { .. } => "sleep.requested",
            Event::Asleep => "sleep.asleep",
            Event::WakeRequested => "sleep.wake_requested",
            Event::RouteCapacityExhausted => "route.no_capacity",
            Event::RouteRefused { .. } => "route.refused",
            Event::LeadershipAcquired { .. } => "leadership.acquired",
            Event::LeadershipReleased { .. } => "leadership.released",
            Event::HealthRestarted { .. } => "health.restarted",
            Event::HealthCrashLoop { .. } => "health.crash_loop",
            Event::HealthRecovered { .. } => "health.recovered",
            Event::WebhookDelivered { .. } => "webhook.delivered",
            Event::WebhookAbandoned { .. } => "webhook.abandoned",
        }
    }

    /// The human-readable line on-call reads beside the kind. Never holds a secret value: no
    /// event carries one.
    pub fn message(&self) -> String {
        match self {
            Event::InstanceAdopted { status } => format!("adopted with status {status}"),
            Event::InstanceLaunched {
                instance_type,
                subnet_id,
            } => format!("{instance_type} in {subnet_id}"),
            Event::InstanceAvailable => "a spare, ready to claim".into(),
            Event::InstanceProbed => "readiness probe passed: wiring its warm route".into(),
            Event::RouteTagged => "the pre-wired target group and rule carry the user's tag".into(),
            Event::InstanceProbeFailed { cause } => cause.clone(),
            Event::InstanceTerminating { reason } => reason.as_str().into(),
            Event::InstanceGone => "no longer listed by EC2".into(),
            Event::PoolFallback {
                tier,
                count,
                instance_type,
                on_demand,
                subnet_id,
            } => {
                let market = if *on_demand { "OnDemand" } else { "Spot" };
                format!(
                    "tier {tier}: launching {count} {instance_type} ({market}) in {subnet_id}: \
                     preferred offerings have no capacity"
                )
            }
            Event::PoolCapacityUnavailable {
                instance_type,
                subnet_id,
                skipped_for,
            } => format!(
                "no spot capacity for {instance_type} in {subnet_id}; skipped for {skipped_for:?}"
            ),
            Event::PoolLaunchBackoff {
                tier,
                failures,
                cause,
                backoff,
            } => format!("tier {tier}: failure {failures} ({cause}); no launches for {backoff:?}"),
            Event::PoolLaunchHalted {
                tier,
                failures,
                cause,
            } => format!(
                "tier {tier} stopped launching after {failures} consecutive failures (last: \
                 {cause}); fix the cause and restart the daemon"
            ),
            Event::PoolQuotaExceeded { tier, cause, .. } => {
                format!("tier {tier}: an account quota refused its launches ({cause})")
            }
            Event::DrainMove { .. }
            | Event::DrainPaused { .. }
            | Event::DrainDone { .. }
            | Event::RolloutStarted { .. } => self.drain_message(),
            Event::ImagePinned { image, pinned } => format!("{image} runs as {pinned}"),
            Event::ClaimAssigned => "spare claimed".into(),
            Event::ClaimStepDone(_) => "claim step done".into(),
            Event::MoveStepDone(_) => "move step done".into(),
            Event::ClaimReady { seconds } => format!("ready in {seconds:.2}s"),
            Event::ClaimRetrying { attempt, cause } => {
                format!("attempt {attempt} rolled back, retrying: {cause}")
            }
            Event::ClaimRecovered => "instance lost; queued first in line".into(),
            Event::ClaimFailed { attempts, cause } => {
                format!("failed after {attempts} attempts: {cause}")
            }
            Event::UndoInstanceReturned { .. } => "returned to the pool for a fresh probe".into(),
            Event::UndoInstanceTerminated { .. } => "terminated".into(),
            Event::ReleaseDone => "everything removed".into(),
            Event::MoveBegin { reason } => format!("moving off this instance ({reason})"),
            Event::MoveAssigned => "spare claimed as the move target".into(),
            Event::MoveDone {
                from,
                reason,
                seconds,
            } => format!(
                "moved from {} ({reason}) in {seconds:.1} s",
                from.as_ref().map(|i| i.0.as_str()).unwrap_or_default()
            ),
            Event::MoveRolledBack { cause } | Event::MoveAbandoned { cause } => cause.clone(),
            Event::Interruption {
                notice,
                event_id,
                age_seconds,
                ..
            } => format!(
                "{} (event {event_id}, {age_seconds} s ago)",
                notice.as_str()
            ),
            Event::OrphanDeleted { description } => description.clone(),
            _ => self.workspace_and_route_message(),
        }
    }

    /// `message` of the workspace, sleep and route events.
    fn workspace_and_route_message(&self) -> String {
        match self {
            Event::WorkspaceCreated {
                volume_id,
                zone,
                size_gib,
            } => format!("{volume_id}: {size_gib} GiB in {zone}"),
            Event::WorkspaceRelocating { from, to } => {
                format!("{from} has no capacity: copying the workspace to {to}")
            }
            Event::WorkspaceRelocated { to } => format!("the workspace is in {to} now"),
            Event::WorkspaceDeleted { volume_id } => format!("{volume_id} deleted"),
            Event::SleepRequested { reason } => format!("going to sleep ({reason})"),
            Event::Asleep => "asleep: instance retired; workspace, secret and route kept".into(),
            Event::WakeRequested => "waking: queued for an instance".into(),
            Event::RouteCapacityExhausted => {
                "waiting for route capacity: every shard is full (no_route_capacity)".into()
            }
            Event::RouteRefused {
                shard,
                cause,
                held_for,
            } => format!(
                "{} refused a route ({cause}); held at its users for {held_for:?}",
                shard
                    .as_deref()
                    .map_or("the region".to_string(), |s| format!("shard {s}"))
            ),
            Event::LeadershipAcquired {
                replica,
                epoch,
                previous,
            } => match previous {
                Some(previous) => {
                    format!("replica {replica} leads (epoch {epoch}), taking over from {previous}")
                }
                None => format!("replica {replica} leads (epoch {epoch}), the first leader"),
            },
            Event::LeadershipReleased { replica, epoch } => {
                format!("replica {replica} handed back the lease of epoch {epoch}")
            }
            Event::HealthRestarted { reason, command_id } => format!(
                "the container failed its health checks ({reason}): restarted (command {command_id})"
            ),
            Event::HealthCrashLoop {
                reason,
                recycle: true,
            } => format!(
                "crash loop: the container failed again soon after a restart ({reason}); \
                 moving the user to a fresh instance with its workspace"
            ),
            Event::HealthCrashLoop {
                reason,
                recycle: false,
            } => format!(
                "crash loop: the container failed again on a fresh instance ({reason}); left \
                 ready with health crash_loop for on-call"
            ),
            Event::HealthRecovered { was } => {
                format!("the container passes its health checks again (was {was})")
            }
            Event::WebhookDelivered {
                id,
                state,
                host,
                attempts,
            } => format!("webhook {id} ({state}) delivered to {host} after {attempts} attempt(s)"),
            Event::WebhookAbandoned {
                id,
                state,
                host,
                attempts,
                error,
            } => format!(
                "webhook {id} ({state}) to {host} given up after {attempts} attempts in a day: {error}"
            ),
            _ => String::new(),
        }
    }
}

impl Event {
    /// The message of a drain's event.
    fn drain_message(&self) -> String {
        match self {
            Event::DrainMove { drain } => format!("drain {drain}: moving the user off"),
            Event::DrainPaused { drain, failed } => format!(
                "drain {drain} paused after {failed} failed moves; its users stay where they are \
                 (DELETE /v1/admin/drains/{drain} ends it)"
            ),
            Event::DrainDone {
                drain,
                moved,
                failed,
            } => format!(
                "drain {drain} done: {moved} users moved; {failed} whose move failed stay where \
                 they are, and nothing else it matches is left"
            ),
            Event::RolloutStarted {
                tier,
                drain,
                from,
                to,
                replaced,
            } => format!(
                "tier {tier} rolls out {to} (was {from}): drain {drain} moves its outdated users{}",
                replaced.map_or(String::new(), |r| format!(", replacing drain {r}"))
            ),
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_events_keep_the_kinds_the_journal_always_had() {
        for step in ClaimStep::ALL {
            let kind = Event::ClaimStepDone(step).kind();
            assert_eq!(kind, format!("claim.{}", step.as_str()));
        }
        for step in MoveStep::ALL {
            let kind = Event::MoveStepDone(step).kind();
            assert_eq!(kind, format!("move.{}", step.as_str()));
        }
        for action in NoticeAction::ALL {
            let event = Event::Interruption {
                action,
                notice: NoticeKind::SpotInterruptionWarning,
                event_id: "e".into(),
                age_seconds: 0,
            };
            assert_eq!(event.kind(), format!("interruption.{}", action.as_str()));
        }
        for undo in TeardownKind::ALL {
            assert_eq!(
                Event::UndoInstanceTerminated { undo }.kind(),
                format!("{}.instance_terminated", undo.as_str())
            );
            assert_eq!(
                Event::UndoInstanceReturned { undo }.kind(),
                format!("{}.instance_returned", undo.as_str())
            );
        }
    }
}
