//! Runs a pass's actions concurrently, at most `max_in_flight` at once. A failed action is
//! logged and counted; the next pass plans again from fresh observations.
//!
//! The loop's pass waits for its actions only for a while (its patience): an action still
//! running then (a launch or a warm route waiting for its bucket, a release waiting for EBS, a
//! claim waiting for its container) goes on as a straggler, and the next pass starts on time.
//! Every action holds the objects it works on ([`InFlight`]: a user, an instance or one of its
//! slots, a launch) until it ends; a pass skips any action on an object held, so no object ever
//! has two actions at once, and the ledger's merge of the listing writes only what it observes.
//! A slot is part of its instance: claims of two slots of one shared instance take them at once
//! (`Assign` holds the slot), and an action on the whole instance (a probe, a termination, a
//! notice) waits while they do.

use super::{Reconciler, StepError};
use crate::cloud::CloudErrorKind;
use crate::model::{Event, MoveReason};
use crate::plan::Action;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

tokio::task_local! {
    /// Set in the tasks of a pass with patience (the loop's): their steps may wait a little for
    /// a result (a command's), since they no longer hold the pass up.
    static PATIENT: bool;
}

/// Whether the running action belongs to a pass that does not wait for it to the end: a step
/// may then poll a little instead of leaving the wait to the next pass.
pub(super) fn may_linger() -> bool {
    PATIENT.try_with(|patient| *patient).unwrap_or(false)
}

/// How many claims or moves may poll their start command at once in their own step (each
/// about three GetCommandInvocation a second, from the SSM read bucket the probes also use).
pub(super) const LINGERING: usize = 3;

/// The objects that have an action in flight.
#[derive(Debug, Default)]
pub(super) struct InFlight(std::sync::Mutex<HashSet<String>>);

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // Nothing panics while holding this lock; a poisoned lock still holds valid data.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds every one of `keys`, or none if one of them (or an object it is part of, or a
    /// part of it) is held already.
    pub(super) fn try_hold(self: &Arc<Self>, keys: Vec<String>) -> Option<Held> {
        let mut held = self.lock();
        if keys.iter().any(|key| held.iter().any(|h| overlap(h, key))) {
            return None;
        }
        held.extend(keys.iter().cloned());
        Some(Held {
            in_flight: self.clone(),
            keys,
        })
    }
}

impl InFlight {
    /// Whether an action holds `key` itself now.
    pub(super) fn is_held(&self, key: &str) -> bool {
        self.lock().contains(key)
    }

    /// Whether an action holds `key`, a part of it (a slot of an instance) or what it is part
    /// of now.
    pub(super) fn is_busy(&self, key: &str) -> bool {
        self.lock().iter().any(|h| overlap(h, key))
    }

    /// Whether a launch for `tier` is in flight, recorded or not yet (one still waiting for
    /// its turn has no pending-launch row).
    pub(super) fn launching(&self, tier: &str) -> bool {
        let prefix = offering_prefix(tier);
        self.lock().iter().any(|key| key.starts_with(&prefix))
    }
}

fn offering_prefix(tier: &str) -> String {
    format!("offering:{tier}/")
}

/// Keys an action holds; let go when it ends, however it ends (an aborted task too).
pub(super) struct Held {
    in_flight: Arc<InFlight>,
    keys: Vec<String>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.in_flight.lock();
        for key in &self.keys {
            held.remove(key);
        }
    }
}

pub(super) fn user_key(user: &crate::model::UserId) -> String {
    format!("user:{user}")
}

pub(super) fn instance_key(instance: &crate::model::InstanceId) -> String {
    format!("instance:{instance}")
}

/// A slot of `instance` (a dedicated instance's one slot is 0): part of the instance's key.
pub(super) fn slot_key(instance: &crate::model::InstanceId, slot: u32) -> String {
    format!("{}#{slot}", instance_key(instance))
}

/// Whether two keys name one object, or one names a part of the other (`instance:i-1#2` of
/// `instance:i-1`).
fn overlap(a: &str, b: &str) -> bool {
    let part_of = |part: &str, whole: &str| {
        part.strip_prefix(whole)
            .is_some_and(|rest| rest.starts_with('#'))
    };
    a == b || part_of(a, b) || part_of(b, a)
}

pub(super) fn launch_key(client_token: &str) -> String {
    format!("launch:{client_token}")
}

/// The objects `action` works on.
fn keys(action: &Action) -> Vec<String> {
    match action {
        Action::Launch {
            tier,
            instance_type,
            subnet_id,
            ..
        } => vec![format!(
            "{}{instance_type}/{subnet_id}",
            offering_prefix(tier)
        )],
        Action::SendProbe { instance }
        | Action::CheckProbe { instance, .. }
        | Action::Terminate { instance, .. }
        | Action::Forget { instance }
        | Action::Wire { instance, .. }
        | Action::Unwire { instance } => vec![instance_key(instance)],
        Action::Assign {
            user,
            instance,
            slot,
            ..
        }
        | Action::AssignMove {
            user,
            instance,
            slot,
        } => vec![user_key(user), slot_key(instance, *slot)],
        Action::WipeSlot { instance, slot } => vec![slot_key(instance, *slot)],
        Action::AwaitRoute { user }
        | Action::RouteAvailable { user }
        | Action::AdvanceClaim { user }
        | Action::Release { user }
        | Action::Recover { user }
        | Action::BeginMove { user }
        | Action::AdvanceMove { user }
        | Action::AdvanceSleep { user }
        | Action::RelocateWorkspace { user, .. }
        | Action::AdvanceRelocation { user }
        | Action::TagRoute { user } => vec![user_key(user)],
    }
}

/// What [`Reconciler::execute`] did.
pub(super) struct Executed {
    /// How many actions AWS throttled (after the SDK's retries), of those that ended in time.
    pub(super) throttled: usize,
    /// Actions skipped because their object had one in flight.
    pub(super) skipped: usize,
    /// The actions still running when the patience ran out.
    pub(super) stragglers: Option<JoinSet<bool>>,
}

impl Reconciler {
    /// Runs the actions concurrently, at most `max_in_flight` at once, and waits for them, or
    /// with `patience` only that long (the rest go on: `Executed::stragglers`). An action on an
    /// object that has one in flight is skipped. Failures are logged and counted; the next pass
    /// plans again from fresh observations.
    pub(super) async fn execute(
        &self,
        actions: Vec<Action>,
        patience: Option<Duration>,
    ) -> Executed {
        let permits = Arc::new(Semaphore::new(self.inner.config.max_in_flight));
        let mut tasks = JoinSet::new();
        let mut skipped = 0;
        for action in actions {
            let Some(held) = self.inner.in_flight.try_hold(keys(&action)) else {
                skipped += 1;
                continue;
            };
            let this = self.clone();
            let permits = permits.clone();
            tasks.spawn(PATIENT.scope(patience.is_some(), async move {
                let _held = held;
                let Ok(_permit) = permits.acquire_owned().await else {
                    return false;
                };
                let kind = action.kind();
                match this.run_action(&action).await {
                    Ok(()) => false,
                    Err(error) => {
                        metrics::counter!("spotpool_action_errors_total", "action" => kind).increment(1);
                        tracing::warn!(?action, error = %error, "action failed; will retry on a later pass");
                        matches!(&error, StepError::Cloud(e) if e.kind == CloudErrorKind::Throttled)
                    }
                }
            }));
        }
        let deadline = tokio::time::sleep(patience.unwrap_or(Duration::MAX));
        tokio::pin!(deadline);
        let mut throttled = 0;
        loop {
            let joined = tokio::select! {
                joined = tasks.join_next() => joined,
                _ = &mut deadline, if patience.is_some() => {
                    return Executed { throttled, skipped, stragglers: Some(tasks) };
                }
            };
            match joined {
                None => break,
                Some(Ok(true)) => throttled += 1,
                Some(Ok(false)) => {}
                Some(Err(error)) => tracing::error!(error = %error, "action task panicked"),
            }
        }
        Executed {
            throttled,
            skipped,
            stragglers: None,
        }
    }

    async fn run_action(&self, action: &Action) -> Result<(), StepError> {
        let now = self.now();
        match action {
            Action::Launch {
                tier,
                instance_type,
                subnet_id,
                count,
                market,
            } => {
                self.launch(tier, instance_type, subnet_id, *count, *market, now)
                    .await
            }
            Action::SendProbe { instance } => self.send_probe(instance, now).await,
            Action::CheckProbe {
                instance,
                command_id,
            } => self.check_probe(instance, command_id, now).await,
            Action::Terminate { instance, reason } => self.terminate(instance, *reason, now).await,
            Action::Forget { instance } => {
                if !self.inner.store.delete_instance(instance).await? {
                    // A user took it since the plan's snapshot: its claim or move handles it.
                    return Ok(());
                }
                self.journal(now, Event::InstanceGone, None, Some(instance))
                    .await
            }
            Action::Assign {
                user,
                instance,
                slot,
                shard,
            } => self.assign(user, (instance, *slot), shard, now).await,
            Action::AwaitRoute { user } => self.await_route(user, now).await,
            Action::RouteAvailable { user } => self.route_available(user, now).await,
            Action::AdvanceClaim { user } => self.advance_claim(user).await,
            Action::Release { user } => self.release(user).await,
            Action::Recover { user } => self.recover(user).await,
            Action::BeginMove { user } => self
                .begin_move(user, MoveReason::Recycle, now)
                .await
                .map(|_| ()),
            Action::AssignMove {
                user,
                instance,
                slot,
            } => self.assign_move(user, (instance, *slot)).await,
            Action::WipeSlot { instance, slot } => self.wipe_slot(instance, *slot, now).await,
            Action::AdvanceMove { user } => self.advance_move(user).await,
            Action::AdvanceSleep { user } => self.sleep(user).await,
            Action::RelocateWorkspace { user, to_zone } => {
                self.begin_relocation(user, to_zone).await
            }
            Action::AdvanceRelocation { user } => self.advance_relocation(user).await,
            Action::Wire { instance, shard } => self.wire(instance, shard.as_deref(), now).await,
            Action::Unwire { instance } => self.unwire(instance).await,
            Action::TagRoute { user } => self.tag_prewired_route(user).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Market;

    fn launch(tier: &str) -> Action {
        Action::Launch {
            tier: tier.into(),
            instance_type: "t3.small".into(),
            subnet_id: "subnet-a".into(),
            count: 2,
            market: Market::Spot,
        }
    }

    #[test]
    fn a_launch_waiting_for_its_turn_counts_as_its_tiers_launch_until_it_ends() {
        let in_flight = Arc::new(InFlight::default());
        assert!(!in_flight.launching("basic"));
        let held = in_flight.try_hold(keys(&launch("basic"))).unwrap();
        assert!(in_flight.launching("basic"));
        // Another tier's, even one whose name the first begins with, is not.
        assert!(!in_flight.launching("bas"));
        assert!(in_flight.try_hold(keys(&launch("basic"))).is_none());
        drop(held);
        assert!(!in_flight.launching("basic"));
    }

    #[test]
    fn claims_of_two_slots_run_at_once_and_the_instance_waits_for_both() {
        let in_flight = Arc::new(InFlight::default());
        let instance = crate::model::InstanceId("i-1".into());
        let assign = |user: &str, slot| Action::Assign {
            shard: "a".into(),
            user: crate::model::UserId::parse(user).unwrap(),
            instance: instance.clone(),
            slot,
        };
        let ann = in_flight.try_hold(keys(&assign("ann", 0))).unwrap();
        let bob = in_flight.try_hold(keys(&assign("bob", 1))).unwrap();
        // The same slot, for another user, waits.
        assert!(in_flight.try_hold(keys(&assign("cat", 1))).is_none());
        let terminate = Action::Terminate {
            instance: instance.clone(),
            reason: crate::plan::TerminateReason::Surplus,
        };
        assert!(in_flight.try_hold(keys(&terminate)).is_none());
        assert!(in_flight.is_busy(&instance_key(&instance)));
        assert!(!in_flight.is_held(&instance_key(&instance)));
        // Another instance whose id the first begins with is not part of it.
        let other = crate::model::InstanceId("i-10".into());
        assert!(!in_flight.is_busy(&instance_key(&other)));
        drop((ann, bob));
        let whole = in_flight.try_hold(keys(&terminate)).unwrap();
        assert!(in_flight.try_hold(keys(&assign("cat", 3))).is_none());
        drop(whole);
        assert!(in_flight.try_hold(keys(&assign("cat", 3))).is_some());
    }
}
