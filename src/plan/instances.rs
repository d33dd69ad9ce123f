//! What `plan` decides for an instance no user holds: forget it once EC2 no longer lists it,
//! terminate it when it stopped, its tier is gone, on-call recycled it or its probe timed out,
//! and otherwise probe it until it passes: once SSM lists its agent online, or by a back-off
//! when SSM cannot say (`may_probe`); a probed spare is then wired until it is `available`.

use super::{Action, Policy, PoolInstance, TerminateReason};
use crate::model::{InstanceStatus, Lifecycle, Millis};

/// An instance no user holds: forget it once EC2 no longer lists it, terminate it if it stopped,
/// and otherwise let its tier's rules decide.
pub(super) fn plan_pool_instance(
    instance: &PoolInstance,
    now: Millis,
    policy: &Policy,
    actions: &mut Vec<Action>,
) {
    match instance.lifecycle {
        None => {
            // Only a just-launched instance may be missing from DescribeInstances for a while
            // (eventual consistency); anything else that is not listed is gone.
            let young = now - instance.launched_at <= policy.launch_visibility_grace;
            // A row that still records a warm route stays until `Unwire` deleted it.
            if (instance.status != InstanceStatus::Initializing || !young)
                && instance.warm.is_none()
            {
                actions.push(Action::Forget {
                    instance: instance.id.clone(),
                });
            }
        }
        Some(Lifecycle::Stopping | Lifecycle::Stopped) => {
            let recently_asked = instance.status == InstanceStatus::Terminating
                && now - instance.status_since < policy.terminate_retry;
            if !recently_asked {
                actions.push(Action::Terminate {
                    instance: instance.id.clone(),
                    reason: TerminateReason::Stopped,
                });
            }
        }
        Some(lifecycle) if lifecycle.is_gone() => {}
        Some(lifecycle) => plan_live_instance(instance, lifecycle, now, policy, actions),
    }
}

fn plan_live_instance(
    instance: &PoolInstance,
    lifecycle: Lifecycle,
    now: Millis,
    policy: &Policy,
    actions: &mut Vec<Action>,
) {
    let id = || instance.id.clone();
    if policy.tier(&instance.tier).is_none() {
        if instance.status != InstanceStatus::Terminating {
            actions.push(Action::Terminate {
                instance: id(),
                reason: TerminateReason::UnknownTier,
            });
        }
        return;
    }
    if instance.recycle.is_some() && instance.status != InstanceStatus::Terminating {
        actions.push(Action::Terminate {
            instance: id(),
            reason: TerminateReason::Recycled,
        });
        return;
    }
    match instance.status {
        InstanceStatus::Initializing => {
            // Counted from when it became `initializing`: launch, or its return after a clean
            // rollback (which re-probes it before anyone else gets it).
            if now - instance.status_since > policy.probe_timeout {
                actions.push(Action::Terminate {
                    instance: id(),
                    reason: TerminateReason::ProbeTimeout,
                });
            } else if instance.probed {
                // Probed: its warm route is built on its shard, then it waits to be reported
                // healthy. (A spare with no shard yet gets one in `plan`, after the users.)
                if let Some(warm) = &instance.warm {
                    actions.push(Action::Wire {
                        instance: id(),
                        shard: Some(warm.shard.clone()),
                    });
                }
            } else if let Some((command_id, _)) = &instance.probe {
                actions.push(Action::CheckProbe {
                    instance: id(),
                    command_id: command_id.clone(),
                });
            } else if lifecycle == Lifecycle::Running && may_probe(instance, now, policy) {
                actions.push(Action::SendProbe { instance: id() });
            }
        }
        InstanceStatus::Assigned => {
            if now - instance.status_since > policy.orphan_grace {
                actions.push(Action::Terminate {
                    instance: id(),
                    reason: TerminateReason::Orphan,
                });
            }
        }
        InstanceStatus::Terminating => {
            if now - instance.status_since >= policy.terminate_retry {
                actions.push(Action::Terminate {
                    instance: id(),
                    reason: TerminateReason::Retry,
                });
            }
        }
        // Spares are counted per tier in `plan_tier`.
        InstanceStatus::Available => {}
    }
}

/// Whether a running `initializing` instance with no probe in flight gets one now. SSM's word
/// first: only to an agent it lists `Online` (then `probe_retry` after a failure). When SSM
/// cannot say, a back-off instead of every pass: after a probe that failed (an agent not online
/// yet answers NotFound), wait half the instance's age at that failure, at least `probe_retry`
/// and at most `probe_backoff_max` (launched at 0, running at 25 s: probes at 25, 37, 56, 84 s,
/// then every 30 s).
fn may_probe(instance: &PoolInstance, now: Millis, policy: &Policy) -> bool {
    let Some(failed_at) = instance.probe_failed_at else {
        return instance.agent_online != Some(false);
    };
    match instance.agent_online {
        Some(online) => online && now - failed_at >= policy.probe_retry,
        None => {
            let age = (failed_at - instance.launched_at).max(0);
            let wait = (age / 2).clamp(
                policy.probe_retry,
                policy.probe_backoff_max.max(policy.probe_retry),
            );
            now - failed_at >= wait
        }
    }
}
