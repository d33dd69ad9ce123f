//! Moving a ready user, with its workspace, to another instance of the workspace's zone.
//!
//! The user's rule and target group stay in place. The spare is tagged for the user (the secret
//! rebound to it) and registered in the target group first, so its health checks are running;
//! then the old instance is deregistered, its container stopped and the workspace detached from
//! it (the route's gap starts here: a single-attach volume cannot be in two places), attached to
//! the spare, and the container started there; once the load balancer reports the spare healthy
//! the old instance is retired and the row switches. Each step is recorded in the row
//! (`moving.target.step`) before the next starts, and each is idempotent, as in a claim (the
//! driver is `steps.rs`'s, shared with claims).
//!
//! A move that fails before the old container stopped is rolled back (the new instance is
//! retired if a command may have run on it, otherwise re-probed) and retried on another spare, up
//! to `claim_attempts`; after that the user is left `ready` on the old instance with the cause.
//! A move that fails after the workspace left the old instance recovers the user instead
//! (re-queued first in line, same route, secret and workspace).

use super::slots::Left;
use super::steps::Machine;
use super::workspace::Progress;
use super::{Reconciler, StepError, StepOutcome, StepResult, fatal, one_tag};
use crate::cloud::tags;
use crate::model::{
    ClaimProgress, ClaimStep, Event, InstanceId, InstanceStatus, Millis, MoveProgress, MoveReason,
    MoveStep, MoveTarget, SentCommand, UserId, UserState,
};
use crate::store::UserRecord;

impl Reconciler {
    /// The move's old instance leaves the user's target group and gives up the workspace (its
    /// container stopped, the volume detached).
    async fn leave_old_instance(
        &self,
        user: &mut UserRecord,
        old: &InstanceId,
        now: Millis,
    ) -> Result<Progress, StepError> {
        // Once the stop was sent the old instance has left the group: a pass that finds the stop
        // or the detach still running does not deregister it again.
        let stopping = user
            .workspace
            .as_ref()
            .is_some_and(|w| w.stop_command.is_some());
        if !stopping {
            let group = self.move_group(user)?;
            self.inner
                .cloud
                .deregister_target(&group, old, self.port_on(user, old))
                .await?;
        }
        self.free_workspace(user, old, now).await
    }

    /// Ready → migrating. `since` is when the cause happened (for the move-duration metric).
    /// Returns whether the move began (false: the user is gone, not ready, or changed).
    pub(super) async fn begin_move(
        &self,
        user_id: &UserId,
        reason: MoveReason,
        since: Millis,
    ) -> Result<bool, StepError> {
        let store = &self.inner.store;
        let Some(mut user) = store.get_user(user_id).await? else {
            return Ok(false);
        };
        if user.state != UserState::Ready {
            return Ok(false);
        }
        let now = self.now();
        user.state = UserState::Migrating;
        user.moving = Some(MoveProgress::new(reason, since));
        user.updated_at = now;
        let began = store.update_user(&mut user).await?;
        if began {
            let shared = self.slots_of(&user.tier) > 1;
            match (&user.instance_id, reason) {
                // A crash loop is the user's container's: its neighbours stay where they are.
                (_, MoveReason::CrashLoop) => {}
                // Any other move off a shared instance empties it: every user there moves, and
                // no claim lands on it meanwhile; the last to leave retires it.
                (Some(instance), _) if shared => {
                    store.request_recycle(instance, now).await?;
                }
                (Some(instance), MoveReason::Recycle) => store.clear_recycle(instance).await?,
                _ => {}
            }
            metrics::counter!("spotpool_moves_started_total", "reason" => reason.as_str())
                .increment(1);
            let instance = user.instance_id.clone();
            self.journal(
                now,
                Event::MoveBegin { reason },
                Some(user_id),
                instance.as_ref(),
            )
            .await?;
        }
        Ok(began)
    }

    /// Gives a migrating user its move target, then starts the move.
    pub(super) async fn assign_move(
        &self,
        user_id: &UserId,
        (instance, slot): (&InstanceId, u32),
    ) -> Result<(), StepError> {
        let now = self.now();
        let store = &self.inner.store;
        let (_, slots) = self.instance_slots(instance).await?;
        let taken = if slots > 1 {
            let taker = crate::store::SlotTaker::Move;
            store
                .take_slot(taker, user_id, (instance, slot, slots), now)
                .await?
        } else {
            store.assign_move(user_id, instance, now).await?
        };
        if taken {
            self.journal(now, Event::MoveAssigned, Some(user_id), Some(instance))
                .await?;
            self.advance_move(user_id).await?;
        }
        Ok(())
    }

    pub(super) async fn advance_move(&self, user_id: &UserId) -> Result<(), StepError> {
        self.drive(user_id, Machine::Move).await
    }

    /// Performs the recorded move step and saves its result.
    pub(super) async fn move_step(&self, mut user: UserRecord) -> StepOutcome {
        let inner = &self.inner;
        let cloud = &inner.cloud;
        let Some(mut target) = user.moving.as_ref().and_then(|m| m.target.clone()) else {
            return Ok(StepResult::Waiting);
        };
        let instance = target.instance.clone();
        let now = self.now();
        let next = match target.step {
            MoveStep::Assigned => {
                // The secret follows the user: only the new instance may read it from now on
                // (the old container already has its environment).
                self.bind_to_instance(&user, &instance).await?;
                MoveStep::Tagged
            }
            MoveStep::Tagged => {
                // Registered early: its health checks start now and pass as soon as its
                // container answers, while the old instance still serves.
                let group = self.move_group(&user)?;
                let port = self.port_on(&user, &instance);
                cloud.register_target(&group, &instance, port).await?;
                MoveStep::Registered
            }
            MoveStep::Registered => {
                // The route gap starts here: the old instance leaves the group, its container
                // stops and the workspace is detached from it (a single-attach volume cannot be
                // in two places).
                if let Some(old) = user.instance_id.clone() {
                    match self.leave_old_instance(&mut user, &old, now).await? {
                        Progress::Done => {}
                        Progress::Waiting => return Ok(StepResult::Waiting),
                        Progress::RetireFirst => {
                            self.retire_first(&user, &old, now).await?;
                            return Ok(StepResult::Waiting);
                        }
                    }
                }
                MoveStep::WorkspaceFreed
            }
            MoveStep::WorkspaceFreed => {
                match self.attach_workspace(&mut user, &instance, now).await? {
                    Progress::Done => MoveStep::WorkspaceAttached,
                    Progress::Waiting | Progress::RetireFirst => return Ok(StepResult::Waiting),
                }
            }
            MoveStep::WorkspaceAttached => {
                let Some(command) = self
                    .send_move_start(&mut user, &mut target, &instance, now)
                    .await?
                else {
                    return Ok(StepResult::Waiting);
                };
                target.command = Some(command);
                MoveStep::ContainerStarting
            }
            MoveStep::ContainerStarting => {
                if !self
                    .container_started(target.command.as_ref(), &instance, now)
                    .await?
                {
                    return Ok(StepResult::Waiting);
                }
                MoveStep::ContainerStarted
            }
            MoveStep::ContainerStarted => {
                // Ready once the load balancer routes to the new instance; then the old one goes.
                let group = self.move_group(&user)?;
                let target = (group.as_str(), &instance, self.port_on(&user, &instance));
                if !self
                    .target_healthy_in_time(target, user.updated_at, now)
                    .await?
                {
                    return Ok(StepResult::Waiting);
                }
                if let Some(old) = user.instance_id.clone() {
                    if self.slots_of(&user.tier) > 1 {
                        // A shared instance is being emptied (a move off one asks it to
                        // recycle): the last user to leave retires it.
                        let left = Left::Dirty;
                        self.leave_shared(&user.user_id, (&old, user.slot), left, now)
                            .await?;
                    } else {
                        self.retire_instance(&old, now).await?;
                    }
                }
                MoveStep::Retired
            }
            MoveStep::Retired => return self.finish_move(user, target, now).await,
        };
        target.step = next;
        set_target(&mut user, target);
        user.updated_at = now;
        if !inner.store.update_user(&mut user).await? {
            return Ok(StepResult::Waiting);
        }
        let event = Event::MoveStepDone(next);
        self.journal(now, event, Some(&user.user_id), Some(&instance))
            .await?;
        Ok(StepResult::Done)
    }

    /// The row switches to the new instance; the user is ready there.
    async fn finish_move(
        &self,
        mut user: UserRecord,
        target: MoveTarget,
        now: Millis,
    ) -> StepOutcome {
        let from = user.instance_id.replace(target.instance.clone());
        user.slot = target.slot;
        let Some(moving) = user.moving.take() else {
            return Ok(StepResult::Waiting);
        };
        user.state = UserState::Ready;
        // The claim now describes the new instance: its start command ran there.
        user.claim = Some(ClaimProgress {
            step: ClaimStep::Routed,
            command: target.command,
        });
        user.error = None;
        user.updated_at = now;
        if !self.inner.store.update_user(&mut user).await? {
            return Ok(StepResult::Waiting);
        }
        // Once the row let go of it, the last to leave retires the shared old instance (users
        // moving off it at once each saw the others until then).
        if let Some(old) = &from
            && self.slots_of(&user.tier) > 1
        {
            self.retire_if_vacated(old, &user.user_id, Left::Dirty, now)
                .await?;
        }
        let seconds = (now - moving.started_at).max(0) as f64 / 1000.0;
        let reason = moving.reason;
        metrics::counter!("spotpool_moves_total", "reason" => reason.as_str(), "outcome" => "ok")
            .increment(1);
        metrics::histogram!("spotpool_move_duration_seconds", "reason" => reason.as_str())
            .record(seconds);
        let event = Event::MoveDone {
            from,
            reason,
            seconds,
        };
        self.journal(now, event, Some(&user.user_id), Some(&target.instance))
            .await?;
        Ok(StepResult::Done)
    }

    /// Undoes a failed move: the new instance goes (or back to the pool if nothing ran on it)
    /// and the user waits for another spare, or stays on its old instance after the limit.
    pub(super) async fn rollback_move(
        &self,
        user_id: &UserId,
        cause: &str,
    ) -> Result<(), StepError> {
        let inner = &self.inner;
        let cloud = &inner.cloud;
        let Some(mut user) = inner.store.get_user(user_id).await? else {
            return Ok(());
        };
        let Some(target) = user.move_target().cloned() else {
            return Ok(());
        };
        // Past the point of no return: the old container stopped and the workspace left it, so
        // the user is served again by a fresh claim (first in line, same route, secret and
        // workspace) rather than on the old instance.
        let step = user
            .moving
            .as_ref()
            .and_then(|m| m.target.as_ref())
            .map(|t| t.step);
        if step >= Some(MoveStep::WorkspaceFreed) {
            tracing::warn!(user = %user_id, cause, "a move failed after the old container stopped; recovering the user");
            if let Some(moving) = &user.moving {
                metrics::counter!("spotpool_moves_total", "reason" => moving.reason.as_str(), "outcome" => "recovered")
                    .increment(1);
            }
            let cause =
                format!("{cause} (after the workspace left the old instance: recovering the user)");
            self.journal(
                self.now(),
                Event::MoveAbandoned { cause },
                Some(user_id),
                Some(&target),
            )
            .await?;
            return self.recover(user_id).await;
        }
        let now = self.now();
        if let Some(group) = &user.routing.target_group_arn {
            cloud
                .deregister_target(group, &target, self.port_on(&user, &target))
                .await?;
        }
        self.retire_move_target(&user, &target, now).await?;
        // Give the secret back to the old instance, best-effort: its container already runs.
        if let (Some(secret), Some(old)) = (&user.secret_arn, &user.instance_id)
            && let Some(arn) = inner.store.get_instance(old).await?.and_then(|r| r.arn)
            && let Err(error) = cloud
                .tag_secret(secret, &one_tag(tags::INSTANCE_ARN, &arn))
                .await
        {
            tracing::warn!(user = %user_id, error = %error, "could not rebind the secret to the old instance");
        }
        let Some(mut moving) = user.moving.take() else {
            return Ok(());
        };
        moving.target = None;
        moving.attempts += 1;
        let reason = moving.reason;
        let gave_up = moving.attempts >= inner.config.claim_attempts;
        user.error = Some(cause.to_string());
        if gave_up {
            // The old instance keeps serving if it can; if it is gone, the next pass recovers
            // the user (re-queued first in line). The request that started the move does not
            // start it again (a shared instance keeps its request while it empties).
            user.state = UserState::Ready;
            user.move_abandoned_at = Some(now);
        } else {
            user.moving = Some(moving);
        }
        user.updated_at = now;
        if !inner.store.update_user(&mut user).await? {
            return Ok(());
        }
        // Once the row let go of it, the last to leave a shared target retires or returns it
        // (two moves to one target, rolled back at once, each saw the other until then).
        if self.slots_of(&user.tier) > 1 {
            (self.retire_if_vacated(&target, user_id, Left::Clean, now)).await?;
        }
        let outcome = if gave_up { "abandoned" } else { "retried" };
        metrics::counter!("spotpool_moves_total", "reason" => reason.as_str(), "outcome" => outcome)
            .increment(1);
        let cause = cause.to_string();
        let event = if gave_up {
            Event::MoveAbandoned { cause }
        } else {
            Event::MoveRolledBack { cause }
        };
        self.journal(now, event, Some(user_id), Some(&target)).await
    }

    /// Ends a move target's part: retired if a command may have run on it, else returned for
    /// a fresh probe.
    pub(super) async fn retire_move_target(
        &self,
        user: &UserRecord,
        target: &InstanceId,
        now: Millis,
    ) -> Result<(), StepError> {
        let Some(record) = self.inner.store.get_instance(target).await? else {
            return Ok(());
        };
        let dirty = user
            .moving
            .as_ref()
            .and_then(|m| m.target.as_ref())
            .is_some_and(|t| t.command.is_some());
        if self.slots_of(&user.tier) > 1 {
            let slot = user.slot_on(target);
            let left = if dirty { Left::Dirty } else { Left::Clean };
            self.leave_shared(&user.user_id, (target, slot), left, now)
                .await?;
            return Ok(());
        }
        if dirty {
            self.retire_instance(target, now).await?;
        } else if record.status == InstanceStatus::Assigned {
            self.return_to_pool(target, now).await?;
        }
        Ok(())
    }

    /// Sends the start command to the move's target, after recording it (the target is dirty
    /// from then on, as in a claim). None when the row changed under us.
    async fn send_move_start(
        &self,
        user: &mut UserRecord,
        target: &mut MoveTarget,
        instance: &InstanceId,
        now: Millis,
    ) -> Result<Option<SentCommand>, StepError> {
        let inner = &self.inner;
        let script = self.start_script(user, instance).await?;
        if target.command.is_none() {
            target.command = Some(SentCommand {
                id: None,
                sent_at: now,
            });
            set_target(user, target.clone());
            user.updated_at = now;
            if !inner.store.update_user(user).await? {
                return Ok(None);
            }
        }
        let id = inner
            .cloud
            .send_command(
                instance,
                &format!("spotpool start container for {} (move)", user.user_id),
                &script,
                inner.config.container_timeout.as_secs() as u32,
            )
            .await?;
        Ok(Some(SentCommand {
            id: Some(id),
            sent_at: now,
        }))
    }

    /// The port the user's container is reached at on `instance`, its target's port: its
    /// tier's container port plus its slot there.
    pub(super) fn port_on(&self, user: &UserRecord, instance: &InstanceId) -> u16 {
        super::claim::host_port(
            self.runtime(&user.tier).container.port,
            user.slot_on(instance),
        )
    }

    /// Whether the tier's spares are pre-wired: a dedicated tier's, with `prewired_spares` (a
    /// shared tier's claims make their routes; its spares go `available` once probed).
    pub(super) fn prewired(&self, tier: &str) -> bool {
        self.inner.config.prewired_spares && self.slots_of(tier) == 1
    }

    /// The tier of `instance` (as the ledger says) and its slots per instance.
    pub(super) async fn instance_slots(
        &self,
        instance: &InstanceId,
    ) -> Result<(String, u32), StepError> {
        let tier = (self.inner.store.get_instance(instance).await?)
            .map(|r| r.tier)
            .unwrap_or_default();
        let slots = self.slots_of(&tier);
        Ok((tier, slots))
    }

    /// The slots of each of the tier's instances (1: dedicated).
    pub(super) fn slots_of(&self, tier: &str) -> u32 {
        self.tier(tier).map_or(1, |t| t.slots_per_instance.max(1))
    }

    /// The user's target group, which a move never changes.
    fn move_group(&self, user: &UserRecord) -> Result<String, StepError> {
        user.routing.target_group_arn.clone().ok_or_else(|| {
            fatal(
                "Move",
                "NoTargetGroup",
                "a migrating user has no target group".into(),
            )
        })
    }
}

/// Records `target` as the move's current target.
fn set_target(user: &mut UserRecord, target: MoveTarget) {
    if let Some(moving) = &mut user.moving {
        moving.target = Some(target);
    }
}
