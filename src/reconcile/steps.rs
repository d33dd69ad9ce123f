//! The driver shared by the two step machines, claims and moves: run the recorded step, save its
//! result, and go on until the machine waits (a command in flight, a health check) or is done.
//!
//! A step that fails with a retryable error (throttling, a 5xx after the SDK's retries) is left
//! for the next pass, until it has been stuck for `claim_step_deadline` counted from the step's
//! start (the row's last write). Any other failure, or one stuck too long, rolls the attempt
//! back: a claim is undone and retried on another instance; a move's target is given up and the
//! move retried elsewhere.

use super::{Reconciler, StepError, StepResult};
use crate::model::{ClaimStep, Millis, UserId, UserState};
use crate::store::UserRecord;

/// One of the two step machines a user row can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Machine {
    Claim,
    Move,
}

impl Machine {
    fn name(self) -> &'static str {
        match self {
            Machine::Claim => "claim",
            Machine::Move => "move",
        }
    }

    /// The step the row is at, if this machine has work on it.
    fn current_step(self, user: &UserRecord) -> Option<&'static str> {
        match self {
            Machine::Claim => (user.state == UserState::Provisioning).then(|| {
                user.claim
                    .as_ref()
                    .map_or(ClaimStep::Assigned, |c| c.step)
                    .as_str()
            }),
            Machine::Move => {
                let target = user.moving.as_ref()?.target.as_ref()?;
                (user.state == UserState::Migrating).then(|| target.step.as_str())
            }
        }
    }
}

impl Reconciler {
    /// Runs `machine`'s steps for the user from the recorded one. Each step's result is saved
    /// before the next starts.
    pub(super) async fn drive(&self, user_id: &UserId, machine: Machine) -> Result<(), StepError> {
        loop {
            let Some(user) = self.inner.store.get_user(user_id).await? else {
                return Ok(());
            };
            let Some(step) = machine.current_step(&user) else {
                return Ok(());
            };
            let step_started = user.updated_at;
            let result = match machine {
                Machine::Claim => self.claim_step(user).await,
                Machine::Move => self.move_step(user).await,
            };
            match result {
                Ok(StepResult::Done) => {}
                Ok(StepResult::Waiting) => return Ok(()),
                // A load balancer at its limits: the user waits for room, the claim has not
                // failed.
                Err(StepError::Cloud(error))
                    if machine == Machine::Claim
                        && error.kind == crate::cloud::CloudErrorKind::RouteCapacity =>
                {
                    return self.route_refused(user_id, error).await;
                }
                Err(StepError::Cloud(error)) => {
                    let deadline = self.inner.config.claim_step_deadline.as_millis() as Millis;
                    if error.kind.is_retryable() && self.now() - step_started <= deadline {
                        return Err(StepError::Cloud(error));
                    }
                    let cause = format!("{} step {step} failed: {error}", machine.name());
                    return match machine {
                        Machine::Claim => self.roll_back_claim(user_id, cause).await,
                        Machine::Move => self.rollback_move(user_id, &cause).await,
                    };
                }
                Err(error) => return Err(error),
            }
        }
    }
}
