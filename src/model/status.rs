//! Statuses: a pool instance's (`InstanceStatus`, ours), EC2's view of it (`Lifecycle`), and a
//! user's (`UserState`, what the API reports).

use super::string_enum;

/// Where a pool instance is in its life, as the store records it and the `Status` tag mirrors it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    /// Launched; waiting for the readiness probe over SSM.
    Initializing,
    /// Probed and ready to be claimed.
    Available,
    /// Claimed by a user (the `UserId` tag says which).
    Assigned,
    /// Being terminated; forgotten once AWS no longer lists it.
    Terminating,
}

string_enum!(InstanceStatus {
    Initializing => "initializing",
    Available => "available",
    Assigned => "assigned",
    Terminating => "terminating",
});

/// The state of a user's instance, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UserState {
    /// Waiting for a spare; served first come, first served.
    Queued,
    /// A spare is claimed and the claim steps are running.
    Provisioning,
    /// Container running and routed.
    Ready,
    /// Gave up after the attempt limit; `error` says why. A new PUT retries.
    Failed,
    /// Release in progress; the row disappears when everything is gone.
    Deleting,
    /// Ready, and being moved to another instance (its instance is being interrupted or was
    /// recycled): the old instance serves until the new one is registered, then its container
    /// stops so the workspace can move (the route's gap), and the new one serves once healthy.
    /// Route, secret and workspace stay.
    Migrating,
    /// Going to sleep: the container is stopped and the workspace detached; then the route
    /// answers "asleep" and the instance is retired.
    Sleeping,
    /// No instance; the workspace, the secret, the route (answering "asleep") and the desired
    /// state are kept. A wake (or a PUT) queues the user for an instance again.
    Asleep,
}

string_enum!(UserState {
    Queued => "queued",
    Provisioning => "provisioning",
    Ready => "ready",
    Failed => "failed",
    Deleting => "deleting",
    Migrating => "migrating",
    Sleeping => "sleeping",
    Asleep => "asleep",
});

impl UserState {
    /// Whether the user wants an instance (as opposed to being released or given up on).
    pub fn wants_instance(self) -> bool {
        matches!(
            self,
            UserState::Queued | UserState::Provisioning | UserState::Ready | UserState::Migrating
        )
    }
}

/// EC2's view of an instance's life (not to be confused with our pool [`InstanceStatus`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lifecycle {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
}

// EC2's names of the states, as in DescribeInstances and in EventBridge's state-change events.
string_enum!(Lifecycle {
    Pending => "pending",
    Running => "running",
    Stopping => "stopping",
    Stopped => "stopped",
    ShuttingDown => "shutting-down",
    Terminated => "terminated",
});

impl Lifecycle {
    /// Whether the instance is on its way out or gone: it can never serve a user again.
    pub fn is_gone(self) -> bool {
        matches!(
            self,
            Lifecycle::ShuttingDown
                | Lifecycle::Terminated
                | Lifecycle::Stopping
                | Lifecycle::Stopped
        )
    }
}

/// Why an instance is terminated; a bounded label value for metrics and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TerminateReason {
    /// More available spares than the tier wants.
    Surplus,
    /// The readiness probe did not pass in time.
    ProbeTimeout,
    /// Tagged `assigned` but no user holds it.
    Orphan,
    /// Its tier is no longer configured.
    UnknownTier,
    /// Stopped or stopping: a spot instance that cannot serve again.
    Stopped,
    /// Still running after an earlier TerminateInstances.
    Retry,
    /// On-call recycled it.
    Recycled,
    /// EC2 warned that it takes the (spare) instance back.
    Interrupted,
}

string_enum!(TerminateReason {
    Surplus => "surplus",
    ProbeTimeout => "probe_timeout",
    Orphan => "orphan",
    UnknownTier => "unknown_tier",
    Stopped => "stopped",
    Retry => "retry",
    Recycled => "recycled",
    Interrupted => "interrupted",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_strings_round_trip() {
        for s in UserState::ALL {
            assert_eq!(UserState::parse(s.as_str()), Some(s));
        }
        for s in InstanceStatus::ALL {
            assert_eq!(InstanceStatus::parse(s.as_str()), Some(s));
        }
        for s in Lifecycle::ALL {
            assert_eq!(Lifecycle::parse(s.as_str()), Some(s));
        }
        assert_eq!(UserState::parse("gone"), None);
        assert_eq!(
            Lifecycle::parse("shutting_down"),
            None,
            "EC2 spells it with a hyphen"
        );
    }
}
