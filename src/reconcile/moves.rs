//! Moving a ready user to another instance without taking its route down.
//!
//! The user's rule and target group stay in place. The container starts on a spare (with the
//! same secret, rebound to the new instance), the spare joins the target group, and only then is
//! the old instance deregistered and terminated; the row switches last. Each step is recorded in
//! the row (`move_step`) before the next starts, and each is idempotent, as in a claim.
//!
//! A move that fails is rolled back (the new instance is terminated if a command may have run on
//! it, otherwise re-probed) and retried on another spare, up to `claim_attempts`. After that the
//! user is left `ready` on the old instance with the cause; if that instance is gone, the next
//! pass recovers the user the usual way (re-queued first in line, same route and secret).

use super::{Reconciler, StepError, StepOutcome, StepResult, fatal, one_tag};
use crate::cloud::tags;
use crate::model::{InstanceId, InstanceStatus, Millis, MoveStep, UserId, UserState};
use crate::store::UserRecord;

impl Reconciler {
    /// Ready → migrating. `since` is when the cause happened (for the move-duration metric).
    pub(super) async fn begin_move(
        &self,
        user_id: &UserId,
        reason: &str,
        since: Millis,
    ) -> Result<(), StepError> {
        let store = &self.inner.store;
        let Some(mut user) = store.get_user(user_id).await? else {
            return Ok(());
        };
        if user.state != UserState::Ready {
            return Ok(());
        }
        let now = (self.inner.clock)();
        user.state = UserState::Migrating;
        user.move_reason = Some(reason.to_string());
        user.move_started_at = Some(since);
        user.move_attempts = 0;
        user.updated_at = now;
        if store.update_user(&mut user).await? {
            if let (Some(instance), "recycle") = (&user.instance_id, reason) {
                store.clear_recycle(instance).await?;
            }
            metrics::counter!("spotpool_moves_started_total", "reason" => reason.to_string())
                .increment(1);
            let instance = user.instance_id.clone();
            self.journal(
                now,
                "move.begin",
                Some(user_id),
                instance.as_ref(),
                &format!("moving off this instance ({reason})"),
            )
            .await?;
        }
        Ok(())
    }

    /// Gives a migrating user its move target, then starts the move.
    pub(super) async fn assign_move(
        &self,
        user_id: &UserId,
        instance: &InstanceId,
    ) -> Result<(), StepError> {
        let now = (self.inner.clock)();
        if self.inner.store.assign_move(user_id, instance, now).await? {
            self.journal(
                now,
                "move.assigned",
                Some(user_id),
                Some(instance),
                "spare claimed as the move target",
            )
            .await?;
            self.advance_move(user_id).await?;
        }
        Ok(())
    }

    pub(super) async fn advance_move(&self, user_id: &UserId) -> Result<(), StepError> {
        loop {
            let Some(user) = self.inner.store.get_user(user_id).await? else {
                return Ok(());
            };
            if user.state != UserState::Migrating || user.move_instance_id.is_none() {
                return Ok(());
            }
            let step = user.move_step.unwrap_or(MoveStep::Assigned);
            match self.move_step(user.clone(), step).await {
                Ok(StepResult::Done) => {}
                Ok(StepResult::Waiting) => return Ok(()),
                Err(StepError::Cloud(error)) => {
                    let now = (self.inner.clock)();
                    let deadline = self.inner.config.claim_step_deadline.as_millis() as Millis;
                    if error.kind.is_retryable() && now - user.updated_at <= deadline {
                        return Err(StepError::Cloud(error));
                    }
                    let cause = format!("move step {} failed: {error}", step.as_str());
                    return self.rollback_move(user_id, &cause).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Performs one move step and saves its result.
    async fn move_step(&self, mut user: UserRecord, step: MoveStep) -> StepOutcome {
        let inner = &self.inner;
        let cloud = &inner.cloud;
        let config = &inner.config;
        let Some(target) = user.move_instance_id.clone() else {
            return Ok(StepResult::Waiting);
        };
        let now = (inner.clock)();
        let next = match step {
            MoveStep::Assigned => {
                // The secret follows the user: only the new instance may read it from now on
                // (the old container already has its environment).
                self.bind_to_instance(&user, &target).await?;
                MoveStep::Tagged
            }
            MoveStep::Tagged => {
                let script = self.start_script(&user, &target).await?;
                // Dirty before sending, as in a claim: an undo then terminates the instance.
                if user.move_command_sent_at.is_none() {
                    user.move_command_sent_at = Some(now);
                    user.updated_at = now;
                    if !inner.store.update_user(&mut user).await? {
                        return Ok(StepResult::Waiting);
                    }
                }
                let command_id = cloud
                    .send_command(
                        &target,
                        &format!("spotpool start container for {} (move)", user.user_id),
                        &script,
                        config.container_timeout.as_secs() as u32,
                    )
                    .await?;
                user.move_command_id = Some(command_id);
                user.move_command_sent_at = Some(now);
                MoveStep::ContainerStarting
            }
            MoveStep::ContainerStarting => {
                let command_id = user.move_command_id.clone().unwrap_or_default();
                let sent = user.move_command_sent_at.unwrap_or(now);
                if !self
                    .container_started(&command_id, &target, sent, now)
                    .await?
                {
                    return Ok(StepResult::Waiting);
                }
                MoveStep::ContainerStarted
            }
            MoveStep::ContainerStarted => {
                let Some(group) = user.target_group_arn.clone() else {
                    return Err(fatal(
                        "Move",
                        "NoTargetGroup",
                        "a migrating user has no target group".into(),
                    ));
                };
                cloud
                    .register_target(&group, &target, config.container_port)
                    .await?;
                MoveStep::Registered
            }
            MoveStep::Registered => {
                // The old instance leaves only once the load balancer routes to the new one, so
                // the route never lacks a healthy target (unless the old one is already gone).
                if let Some(group) = &user.target_group_arn
                    && !self
                        .target_healthy_in_time(group, &target, user.updated_at, now)
                        .await?
                {
                    return Ok(StepResult::Waiting);
                }
                if let Some(old) = user.instance_id.clone() {
                    if let Some(group) = &user.target_group_arn {
                        cloud
                            .deregister_target(group, &old, config.container_port)
                            .await?;
                    }
                    cloud
                        .terminate_instances(std::slice::from_ref(&old))
                        .await?;
                    if let Some(mut record) = inner.store.get_instance(&old).await?
                        && record.status != InstanceStatus::Terminating
                    {
                        record.status = InstanceStatus::Terminating;
                        record.status_since = now;
                        inner.store.put_instance(&record).await?;
                    }
                }
                MoveStep::Retired
            }
            MoveStep::Retired => return self.finish_move(user, target, now).await,
        };
        user.move_step = Some(next);
        user.updated_at = now;
        if !inner.store.update_user(&mut user).await? {
            return Ok(StepResult::Waiting);
        }
        self.journal(
            now,
            &format!("move.{}", next.as_str()),
            Some(&user.user_id),
            Some(&target),
            "move step done",
        )
        .await?;
        Ok(StepResult::Done)
    }

    /// The row switches to the new instance; the user is ready there.
    async fn finish_move(
        &self,
        mut user: UserRecord,
        target: InstanceId,
        now: Millis,
    ) -> StepOutcome {
        let old = user.instance_id.replace(target.clone());
        let reason = user.move_reason.take().unwrap_or_default();
        let started = user.move_started_at.take().unwrap_or(now);
        user.state = UserState::Ready;
        user.command_id = user.move_command_id.take();
        user.command_sent_at = user.move_command_sent_at.take();
        user.move_instance_id = None;
        user.move_step = None;
        user.move_attempts = 0;
        user.error = None;
        user.updated_at = now;
        if !self.inner.store.update_user(&mut user).await? {
            return Ok(StepResult::Waiting);
        }
        let seconds = (now - started).max(0) as f64 / 1000.0;
        metrics::counter!("spotpool_moves_total", "reason" => reason.clone(), "outcome" => "ok")
            .increment(1);
        metrics::histogram!("spotpool_move_duration_seconds", "reason" => reason.clone())
            .record(seconds);
        self.journal(
            now,
            "move.done",
            Some(&user.user_id),
            Some(&target),
            &format!(
                "moved from {} ({reason}) in {seconds:.1} s",
                old.map(|o| o.0).unwrap_or_default()
            ),
        )
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
        let Some(target) = user.move_instance_id.clone() else {
            return Ok(());
        };
        let now = (inner.clock)();
        if let Some(group) = &user.target_group_arn {
            cloud
                .deregister_target(group, &target, inner.config.container_port)
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
        user.move_instance_id = None;
        user.move_step = None;
        user.move_command_id = None;
        user.move_command_sent_at = None;
        user.move_attempts += 1;
        user.error = Some(cause.to_string());
        let reason = user.move_reason.clone().unwrap_or_default();
        let gave_up = user.move_attempts >= inner.config.claim_attempts;
        if gave_up {
            // The old instance keeps serving if it can; if it is gone, the next pass recovers
            // the user (re-queued first in line).
            user.state = UserState::Ready;
            user.move_reason = None;
            user.move_started_at = None;
        }
        user.updated_at = now;
        if !inner.store.update_user(&mut user).await? {
            return Ok(());
        }
        metrics::counter!("spotpool_moves_total", "reason" => reason, "outcome" => if gave_up { "abandoned" } else { "retried" })
            .increment(1);
        self.journal(
            now,
            if gave_up {
                "move.abandoned"
            } else {
                "move.rolled_back"
            },
            Some(user_id),
            Some(&target),
            cause,
        )
        .await
    }

    /// Ends a move target's part: terminated if a command may have run on it, else returned
    /// for a fresh probe.
    pub(super) async fn retire_move_target(
        &self,
        user: &UserRecord,
        target: &InstanceId,
        now: Millis,
    ) -> Result<(), StepError> {
        let inner = &self.inner;
        let cloud = &inner.cloud;
        let Some(mut record) = inner.store.get_instance(target).await? else {
            return Ok(());
        };
        if user.move_command_sent_at.is_some() {
            cloud
                .terminate_instances(std::slice::from_ref(target))
                .await?;
            if record.status != InstanceStatus::Terminating {
                record.status = InstanceStatus::Terminating;
                record.status_since = now;
                inner.store.put_instance(&record).await?;
            }
        } else if record.status == InstanceStatus::Assigned {
            cloud.untag_instance(target, &[tags::USER_ID]).await?;
            cloud
                .tag_instance(
                    target,
                    &one_tag(tags::STATUS, InstanceStatus::Initializing.as_str()),
                )
                .await?;
            inner
                .store
                .transition_instance(
                    target,
                    InstanceStatus::Assigned,
                    InstanceStatus::Initializing,
                    now,
                )
                .await?;
        }
        Ok(())
    }
}
