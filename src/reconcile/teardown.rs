//! The undo of everything a user's row records: a rollback (a claim step failed for good), a
//! recovery (the user's instance vanished), a release (the user asked to go), or a sleep (the
//! user keeps its workspace, secret and route, but no instance).
//!
//! In reverse order of creation: the listener rule (a sleep points it at a fixed "asleep"
//! response instead), the target group, the workspace (its container stopped and the volume
//! detached; deleted on release only), the secret's binding (or the secret itself, on release),
//! then the instance, which goes back to the pool only if no start command ever reached it. Every
//! call is idempotent, and a rollback or recovery is marked in the row before it starts (a
//! release and a sleep are the user's state), so a crash, an error or a wait for EBS part-way
//! resumes the same undo on the next pass instead of the claim.

use super::workspace::Progress;
use super::{Reconciler, StepError, target_group_name};
use crate::cloud::{RuleAction, tags};
use crate::model::{
    ClaimProgress, Event, InstanceStatus, Millis, Routing, TeardownKind, UserId, UserState,
};
use crate::store::UserRecord;
use std::collections::HashSet;

/// What a teardown was asked to do; a rollback carries its cause.
#[derive(Debug, Clone, PartialEq)]
enum Teardown {
    Rollback {
        cause: String,
    },
    Recover,
    Release,
    Sleep,
    /// The load balancer refused the route before it existed (`cause`): the user waits for
    /// route capacity.
    NoRoute {
        cause: String,
    },
}

/// The response a sleeping user's route gives.
const ASLEEP_STATUS: u16 = 503;
const ASLEEP_BODY: &str =
    r#"{"error":{"code":"asleep","message":"this agent is asleep; wake it to use it"}}"#;

impl Teardown {
    fn kind(&self) -> TeardownKind {
        match self {
            Teardown::Rollback { .. } => TeardownKind::Rollback,
            Teardown::Recover => TeardownKind::Recover,
            Teardown::Release => TeardownKind::Release,
            Teardown::Sleep => TeardownKind::Sleep,
            Teardown::NoRoute { .. } => TeardownKind::NoRoute,
        }
    }
}

impl Reconciler {
    /// A claim step failed for good: undo, then retry on another instance or fail the user.
    pub(super) async fn roll_back_claim(
        &self,
        user: &UserId,
        cause: String,
    ) -> Result<(), StepError> {
        self.teardown_user(user, Teardown::Rollback { cause }).await
    }

    /// The user's load balancer refused its route: undo (the instance goes back to the pool:
    /// nothing ran there), then wait for route capacity (no attempt used).
    pub(super) async fn undo_for_route(
        &self,
        user: &UserId,
        cause: String,
    ) -> Result<(), StepError> {
        self.teardown_user(user, Teardown::NoRoute { cause }).await
    }

    /// The user's instance vanished: undo, then queue the user first in line (no attempt used).
    pub(super) async fn recover(&self, user: &UserId) -> Result<(), StepError> {
        self.teardown_user(user, Teardown::Recover).await
    }

    /// The user asked to go: undo everything including the secret, then delete the row.
    pub(super) async fn release(&self, user: &UserId) -> Result<(), StepError> {
        self.teardown_user(user, Teardown::Release).await
    }

    /// The user is going to sleep: its instance goes, its workspace, secret and rule stay.
    pub(super) async fn sleep(&self, user: &UserId) -> Result<(), StepError> {
        self.teardown_user(user, Teardown::Sleep).await
    }

    async fn teardown_user(&self, user_id: &UserId, requested: Teardown) -> Result<(), StepError> {
        let inner = &self.inner;
        let Some(mut user) = inner.store.get_user(user_id).await? else {
            return Ok(());
        };
        let now = self.now();
        let mode = match (&requested, user.state, user.teardown) {
            (Teardown::Release, _, _) | (_, UserState::Deleting, _) => Teardown::Release,
            (Teardown::Sleep, UserState::Sleeping, _) => Teardown::Sleep,
            (Teardown::Sleep, _, _) => return Ok(()),
            // An undo already under way keeps its kind (and its recorded cause).
            (_, _, Some(TeardownKind::Rollback)) => Teardown::Rollback {
                cause: user.error.clone().unwrap_or_default(),
            },
            (_, _, Some(TeardownKind::NoRoute)) => Teardown::NoRoute {
                cause: user.error.clone().unwrap_or_default(),
            },
            (_, _, Some(_)) => Teardown::Recover,
            (mode, _, None) => mode.clone(),
        };
        let kind = mode.kind();
        if matches!(
            mode,
            Teardown::Rollback { .. } | Teardown::Recover | Teardown::NoRoute { .. }
        ) && user.teardown.is_none()
        {
            user.teardown = Some(kind);
            if let Teardown::Rollback { cause } | Teardown::NoRoute { cause } = &mode {
                user.error = Some(cause.clone());
            }
            user.updated_at = now;
            if !inner.store.update_user(&mut user).await? {
                return Ok(());
            }
        }
        if mode == Teardown::Sleep {
            // The workspace first: the route answers "asleep" only once the container stopped.
            if !self.free_workspaces(&mut user).await? {
                return Ok(());
            }
            self.route_asleep(&user).await?;
        } else {
            // Once per teardown (and again after a restart): the passes spent waiting for EBS
            // below neither delete the route again (the load balancer's write quota is the
            // scarcest in the account) nor look for an unrecorded group by name (its describe
            // quota is shared with every health check).
            if !self.lock_routes_removed().contains(user_id) {
                self.remove_route(&user).await?;
                if user.routing != Routing::default() {
                    user.routing = Routing::default();
                    user.updated_at = now;
                    if !inner.store.update_user(&mut user).await? {
                        return Ok(());
                    }
                }
                self.lock_routes_removed().insert(user_id.clone());
            }
            if !self.free_workspaces(&mut user).await? {
                return Ok(());
            }
        }
        if mode == Teardown::Release {
            match self.delete_workspace(&mut user, now).await? {
                Progress::Done => {}
                Progress::Waiting | Progress::RetireFirst => return Ok(()),
            }
            if let Some(volume_id) = user.workspace.as_ref().and_then(|w| w.volume_id.clone()) {
                metrics::counter!("spotpool_workspaces_deleted_total").increment(1);
                let event = Event::WorkspaceDeleted { volume_id };
                self.journal(now, event, Some(user_id), None).await?;
            }
        }
        self.unbind_or_delete_secret(&user, kind).await?;
        self.give_up_instances(&user, kind).await?;
        self.lock_routes_removed().remove(user_id);
        let shared = self.shared_instances_of(&user);

        // Last, the row: deleted on release, otherwise asleep, back in the queue, or failed.
        if mode == Teardown::Release {
            if inner.store.delete_user(&user).await? {
                metrics::counter!("spotpool_releases_total").increment(1);
                self.journal(now, Event::ReleaseDone, Some(user_id), None)
                    .await?;
            }
        } else {
            self.settle_row(user, mode, now).await?;
        }
        // Once its row let go of them, the last to leave retires each shared instance (two
        // leaving at once both see the other until then).
        // (A slot left dirty has its wipe recorded: the instance is retired whatever this says.)
        let left = left_by(false, kind);
        for instance in &shared {
            let vacated = (self.retire_if_vacated(instance, user_id, left, now)).await?;
            self.journal_vacated(vacated, kind, user_id, instance, now)
                .await?;
        }
        Ok(())
    }

    /// Journals what a user's leaving did to a shared instance: only when it ended or returned
    /// it (otherwise it serves its other users).
    async fn journal_vacated(
        &self,
        vacated: crate::store::Vacated,
        undo: TeardownKind,
        user: &UserId,
        instance: &crate::model::InstanceId,
        now: Millis,
    ) -> Result<(), StepError> {
        let event = match vacated {
            crate::store::Vacated::Held => return Ok(()),
            crate::store::Vacated::Returned => Event::UndoInstanceReturned { undo },
            crate::store::Vacated::Retired => Event::UndoInstanceTerminated { undo },
        };
        self.journal(now, event, Some(user), Some(instance)).await
    }

    /// The shared instances a user holds or moves to (none on a dedicated tier).
    fn shared_instances_of(&self, user: &UserRecord) -> Vec<crate::model::InstanceId> {
        if self.slots_of(&user.tier) == 1 {
            return Vec::new();
        }
        (user.instance_id.iter().chain(user.move_target()))
            .cloned()
            .collect()
    }

    fn lock_routes_removed(&self) -> std::sync::MutexGuard<'_, HashSet<UserId>> {
        // Nothing panics while holding this lock; a poisoned lock still holds valid data.
        self.inner
            .routes_removed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The row after the undo: asleep (keeping its rule), back in the queue, or failed.
    async fn settle_row(
        &self,
        mut user: UserRecord,
        mode: Teardown,
        now: Millis,
    ) -> Result<(), StepError> {
        let inner = &self.inner;
        let user_id = user.user_id.clone();
        let rule_kept = user.routing.clone();
        user.forget_placement();
        user.updated_at = now;
        let event = match mode {
            Teardown::Sleep => {
                // The rule stays (answering "asleep"), the target group does not.
                user.routing = rule_kept;
                user.routing.target_group_arn = None;
                user.state = UserState::Asleep;
                metrics::counter!("spotpool_sleeps_total").increment(1);
                Event::Asleep
            }
            Teardown::Rollback { cause } => {
                user.attempts += 1;
                user.error = Some(cause.clone());
                if user.attempts >= inner.config.claim_attempts {
                    user.state = UserState::Failed;
                    // Never routed: its place on the shard goes to others (a retry is placed
                    // anew). A user with a url out there keeps its shard.
                    if user.workspace.is_none() {
                        user.shard = None;
                    }
                    metrics::counter!("spotpool_claims_total", "outcome" => "failed").increment(1);
                    Event::ClaimFailed {
                        attempts: user.attempts,
                        cause,
                    }
                } else {
                    user.state = UserState::Queued;
                    metrics::counter!("spotpool_claims_total", "outcome" => "retried").increment(1);
                    Event::ClaimRetrying {
                        attempt: user.attempts,
                        cause,
                    }
                }
            }
            Teardown::NoRoute { cause } => {
                // Never routed (a workspace is made only once the route is): placed anew,
                // wherever there is room. Once routed, the user's url is out there: it waits
                // for room on its own shard.
                if user.workspace.is_none() {
                    user.shard = None;
                }
                user.state = UserState::Queued;
                user.error = Some(crate::model::NO_ROUTE_CAPACITY.into());
                metrics::counter!("spotpool_claims_total", "outcome" => "no_route").increment(1);
                Event::RouteRefused {
                    shard: user.shard.clone(),
                    cause,
                    held_for: inner.config.capacity_ttl,
                }
            }
            Teardown::Recover | Teardown::Release => {
                // The user keeps their place in the queue (requested_at is unchanged).
                user.state = UserState::Queued;
                metrics::counter!("spotpool_recoveries_total").increment(1);
                Event::ClaimRecovered
            }
        };
        if inner.store.update_user(&mut user).await? {
            self.journal(now, event, Some(&user_id), None).await?;
        }
        Ok(())
    }

    /// Frees the user's workspace from its instance and from a move's target. False while EBS
    /// is still at it (the teardown goes on next pass). An instance whose container could not be
    /// stopped cleanly is retired first (its shutdown unmounts everything).
    async fn free_workspaces(&self, user: &mut UserRecord) -> Result<bool, StepError> {
        let now = self.now();
        let holders: Vec<_> = user
            .instance_id
            .iter()
            .chain(user.move_target())
            .cloned()
            .collect();
        let mut free = true;
        for holder in holders {
            match self.free_workspace(user, &holder, now).await? {
                Progress::Done => {}
                Progress::Waiting => free = false,
                Progress::RetireFirst => {
                    self.retire_first(user, &holder, now).await?;
                    free = false;
                }
            }
        }
        Ok(free)
    }

    /// A sleeping user's route: the rule answers a fixed "asleep" (the load balancer's target
    /// group quota is not spent on sleepers), and the target group goes.
    async fn route_asleep(&self, user: &UserRecord) -> Result<(), StepError> {
        let cloud = &self.inner.cloud;
        if let Some(rule) = &user.routing.rule_arn {
            let asleep = RuleAction::FixedResponse {
                status: ASLEEP_STATUS,
                content_type: "application/json".into(),
                body: ASLEEP_BODY.into(),
            };
            cloud.set_rule_action(rule, &asleep).await?;
        }
        let group = match &user.routing.target_group_arn {
            Some(arn) => Some(arn.clone()),
            None => {
                cloud
                    .find_target_group(&target_group_name(&user.route))
                    .await?
            }
        };
        if let Some(arn) = group {
            cloud.delete_target_group(&arn).await?;
        }
        Ok(())
    }

    /// The listener rules (the recorded one, plus any rule on the listener for the user's path,
    /// one whose ARN a crash or a timed-out CreateRule never let us record), then the target
    /// group, by ARN or by its deterministic name.
    async fn remove_route(&self, user: &UserRecord) -> Result<(), StepError> {
        let cloud = &self.inner.cloud;
        let wanted = self.rule_match_of(user);
        let mut rules: Vec<String> = user.routing.rule_arn.iter().cloned().collect();
        if let Some(listener) = &user.routing.listener_arn {
            for rule in cloud.describe_rules(listener).await? {
                if rule.matches(&wanted) && !rules.contains(&rule.arn) {
                    rules.push(rule.arn);
                }
            }
        }
        for arn in rules {
            cloud.delete_rule(&arn).await?;
        }
        let group = match &user.routing.target_group_arn {
            Some(arn) => Some(arn.clone()),
            None => {
                cloud
                    .find_target_group(&target_group_name(&user.route))
                    .await?
            }
        };
        if let Some(arn) = group {
            cloud.delete_target_group(&arn).await?;
        }
        Ok(())
    }

    /// The secret: deleted on release; otherwise only unbound from the old instance. The
    /// unbinding is best-effort: the instance is about to be terminated or re-probed, and the
    /// next claim overwrites the tag anyway.
    async fn unbind_or_delete_secret(
        &self,
        user: &UserRecord,
        kind: TeardownKind,
    ) -> Result<(), StepError> {
        let cloud = &self.inner.cloud;
        let Some(secret) = &user.secret_arn else {
            return Ok(());
        };
        if kind == TeardownKind::Release {
            cloud.delete_secret(secret).await?;
        } else if let Err(error) = cloud.untag_secret(secret, &[tags::INSTANCE_ARN]).await {
            tracing::warn!(user = %user.user_id, error = %error, "could not remove the secret's InstanceArn tag");
        }
        Ok(())
    }

    /// The user's instance: if no command was ever sent to it, it goes back for a fresh
    /// readiness probe (so a broken instance is not handed straight to the next user);
    /// otherwise a container may have run with this user's secrets, and it is retired. A move
    /// under way loses its target too.
    async fn give_up_instances(
        &self,
        user: &UserRecord,
        undo: TeardownKind,
    ) -> Result<(), StepError> {
        let now = self.now();
        if self.slots_of(&user.tier) > 1 {
            return self.give_up_slots(user, undo, now).await;
        }
        if let Some(instance) = user.instance_id.clone() {
            let dirty = user.claim.as_ref().is_some_and(ClaimProgress::dirty);
            let record = self.inner.store.get_instance(&instance).await?;
            let reusable = !dirty
                && undo != TeardownKind::Recover
                && record.as_ref().is_some_and(|r| {
                    matches!(
                        r.status,
                        InstanceStatus::Assigned | InstanceStatus::Initializing
                    )
                });
            let event = if reusable {
                self.return_to_pool(&instance, now).await?;
                Event::UndoInstanceReturned { undo }
            } else {
                self.retire_instance(&instance, now).await?;
                Event::UndoInstanceTerminated { undo }
            };
            self.journal(now, event, Some(&user.user_id), Some(&instance))
                .await?;
        }
        if let Some(target) = user.move_target().cloned() {
            self.retire_move_target(user, &target, now).await?;
        }
        Ok(())
    }

    /// A shared tier's user gives up its slot, and a move's target slot: each is wiped first
    /// when a start may have reached it (never for an instance that is lost); the last user to
    /// leave an instance retires it.
    async fn give_up_slots(
        &self,
        user: &UserRecord,
        undo: TeardownKind,
        now: Millis,
    ) -> Result<(), StepError> {
        if let Some(instance) = &user.instance_id {
            // Also on a recovery: the instance may be alive (a move that lost its user there);
            // a wipe of one that is gone is dropped with it.
            let dirty = user.claim.as_ref().is_some_and(ClaimProgress::dirty);
            // Journalled only when it ends or returns the instance: otherwise it serves its
            // other users.
            let slot = (instance, user.slot);
            let left = left_by(dirty, undo);
            let vacated = self.leave_shared(&user.user_id, slot, left, now).await?;
            self.journal_vacated(vacated, undo, &user.user_id, instance, now)
                .await?;
        }
        if let Some(target) = user.moving.as_ref().and_then(|m| m.target.as_ref()) {
            let left = left_by(target.command.is_some(), undo);
            self.leave_shared(&user.user_id, (&target.instance, target.slot), left, now)
                .await?;
        }
        Ok(())
    }
}

/// What an undo leaves on a shared instance's slot: a recovery's instance is lost or dying,
/// never given back (as a dedicated one).
fn left_by(dirty: bool, undo: TeardownKind) -> super::slots::Left {
    use super::slots::Left;
    match (dirty, undo) {
        (true, _) => Left::Dirty,
        (false, TeardownKind::Recover) => Left::Lost,
        (false, _) => Left::Clean,
    }
}
